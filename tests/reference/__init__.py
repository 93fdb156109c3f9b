"""The `reference` tier: our code side by side with the field's own packages (pytorch-fid,
torch-fidelity, clean-fid, lpips, diffusers), imported from the registry, never copied.

Nothing here is imported at collection: every pytest-xdist worker collects every file, and
importing torch, torchvision and diffusers there cost each worker about 7 s of a 2-core CI run
whether or not it ran a reference test. The modules say what they need with `requires(...)`
(a look-up, no import) and reach torch through `lazy("torch")`."""

import importlib
import importlib.util
import sys

import pytest

# TensorFlow (imported first by tests/conftest.py) and Triton's LLVM-based extension crash the
# process with a segmentation fault when Triton loads second (triton 3.8 with the TF 2.21 of this
# venv: `import tensorflow; import torchvision` is enough, and so is `import tensorflow, triton`;
# the fault is in loading `triton._C.libtriton`; `import triton, tensorflow` works). PyTorch on CPU
# does not use Triton, so it is hidden: torch then reports "no Triton" and never loads it.
if "triton" not in sys.modules:
  sys.modules["triton"] = None


def requires(*packages: str) -> pytest.MarkDecorator:
  """`pytestmark = requires("torch", ...)`: skip the module's tests unless every package is
  installed (like `pytest.importorskip`, but found without being imported)."""
  missing = [p for p in packages if importlib.util.find_spec(p) is None]
  return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


class lazy:
  """`torch = lazy("torch")`: the module, imported at its first public attribute access (pytest
  probes every module global for private attributes while collecting: those do not import)."""

  def __init__(self, name: str):
    self._name = name

  def __getattr__(self, attr):
    if attr.startswith("_"):
      raise AttributeError(attr)
    return getattr(importlib.import_module(self._name), attr)
