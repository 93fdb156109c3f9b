"""The `reference` tier: our code side by side with the field's own packages (pytorch-fid,
torch-fidelity, clean-fid, lpips, diffusers), imported from the registry, never copied."""

import sys

# TensorFlow (imported first by tests/conftest.py) and Triton's LLVM-based extension crash the
# process with a segmentation fault when Triton loads second (triton 3.8 with the TF of this
# venv; `import tensorflow; import torchvision` is enough). PyTorch on CPU does not use Triton,
# so it is hidden: torch then reports "no Triton" and never loads it.
if "triton" not in sys.modules:
  sys.modules["triton"] = None
