"""The reference tier's PyTorch runs on one thread."""

import importlib.util

import pytest


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
  """PyTorch's OpenMP threads busy-wait for each other when they outnumber the free cores (as
  under pytest-xdist's two workers on two cores): one thread runs the reference forward passes
  several times faster there (an Inception pass of 2 images: 9-14 s -> 1.1 s on a loaded 2-core
  host). The kernels and tolerances are unchanged. Nothing happens where PyTorch is absent."""
  if importlib.util.find_spec("torch") is None:
    yield
    return
  import torch

  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)
