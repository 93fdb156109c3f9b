"""Reading the official PyTorch weights files (.pth state dicts); imports PyTorch only when called.

Shared by the VGG-16 of torch-fidelity (`vgg.read_torchvision_weights`) and the LPIPS converter
(`lpips`), which both convert official files once into NumPy arrays.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np


class TorchStateDictError(ValueError):
  """The file is not a PyTorch state dict."""


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """A PyTorch .pth state dict as {name: numpy array}; imports torch only here."""
  try:
    import torch
  except ImportError as e:
    raise RuntimeError(
      "the LPIPS converter reads the official .pth files with PyTorch, which is "
      "not installed here; run it where `import torch` works (pip install torch "
      "--index-url https://download.pytorch.org/whl/cpu) and copy the .npz back"
    ) from e
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist")
  state = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(state, Mapping):
    raise TorchStateDictError(f"{path} does not hold a state dict (got {type(state).__name__})")
  return {
    key: (value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value))
    for key, value in state.items()
  }
