"""The machine a piece of work runs on: what it is (for the results pages of long runs that span
sessions) and one setting of TensorFlow's host memory that the scripts and tests use on it.

Timings differ about 4x between the AVX-512 and the AVX2 hosts this suite runs on, and one run can
train and be evaluated on several of them (resumed from a carried checkpoint). The training loop
(`experiments.harness`, its status.json) and the resumable likelihood evaluation
(`evaluation.likelihood`, its resume file) record every host they ran on with these helpers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def cpu_model() -> str:
  """The CPU's model name, its widest vector extension and the cores this process sees, e.g.
  "AMD EPYC, AVX2, 2 cores"."""
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read()
  except OSError:
    import platform

    return platform.processor() or "unknown"
  name = next(
    (l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "unknown"
  )
  flags = set(
    next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
  )
  vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
  return f"{name}, {vector}, {os.cpu_count()} cores"


def merge_in_order(*groups: Iterable[str | None]) -> list[str]:
  """The items of `groups` (hosts, commits) in order of first appearance, each once; None and ""
  are dropped."""
  merged: list[str] = []
  for group in groups:
    merged += [h for h in group if h and h not in merged]
  return merged


def prefer_bfc_cpu_allocator() -> None:
  """Sets TF_CPU_ALLOCATOR_USE_BFC=true unless the environment already sets it.

  TensorFlow's default host allocator is malloc, and glibc returns every block over 32 MiB (its
  largest mmap threshold) to the kernel when the tensor is freed, so the next tensor of that size
  page-faults its memory in again, 4 KiB at a time. NVAE's test-NLL calls (K x B samples through the
  network) allocate hundreds of such tensors: on a 2-core AVX2 host more than half of that
  process's CPU time was kernel time (~350,000 minor faults per second). The BFC allocator
  (tensorflow/core/common_runtime/process_state.cc reads this variable, default false) keeps
  freed blocks for reuse; the numbers do not change (`bench/bench_cpu_allocator.py` measures both).
  Takes effect if it runs before TensorFlow's first op (the allocator is made then; importing
  TensorFlow is fine): `experiments` and `evaluation` call it when imported, and tests/conftest.py.
  """
  os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def mute_tensorflow_start_up() -> None:
  """Makes the first `import tensorflow` of this process run with stderr (fd 2) muted.

  TensorFlow >= 2.20 writes C++ start-up lines while it is imported (oneDNN, CUDA probing, CPU
  features; each block twice, from two copies of absl) that TF_CPP_MIN_LOG_LEVEL does not silence:
  a script's one-line `error:` would come after a dozen of them. `evaluation.cli` imports TensorFlow
  muted after parsing its flags; the experiment scripts import it at module level, so instead this
  hooks the import itself (a `sys.meta_path` finder whose loader mutes fd 2 around TensorFlow's
  module code and its device probing, then restores it) and scripts that never import TensorFlow
  do not pay for it. If the import raises, what TensorFlow wrote is shown before the error; a
  process that TensorFlow aborts while importing (e.g. a CPU without AVX) dies with it unseen. No-op
  when TensorFlow is already imported.
  """
  import sys

  if "tensorflow" in sys.modules or any(
    isinstance(f, _MutedTensorFlowFinder) for f in sys.meta_path
  ):
    return
  sys.meta_path.insert(0, _MutedTensorFlowFinder())


class _MutedTensorFlowFinder:
  """`sys.meta_path` finder for the top-level `tensorflow` package only (see
  `mute_tensorflow_start_up`); it removes itself at its first use."""

  def find_spec(self, name, path=None, target=None):
    if name != "tensorflow":
      return None
    import importlib.util
    import sys

    sys.meta_path.remove(self)
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.loader is not None:
      spec.loader = _MutedLoader(spec.loader)
    return spec


class _MutedLoader:
  """Runs the wrapped loader with fd 2 on /dev/null, then probes the devices (CUDA start-up logs)."""

  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:  # what TensorFlow wrote, shown if the import fails
      os.dup2(held.fileno(), 2)
      try:
        self._loader.exec_module(module)
        module.config.list_physical_devices()  # device probing logs (cuInit ...) happen here
      except BaseException:
        sys.stderr.flush()
        os.dup2(saved, 2)
        held.seek(0)
        sys.stderr.write(held.read().decode(errors="replace"))
        raise
      finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)

  def __getattr__(self, name):  # get_resource_reader, is_package, ... of the wrapped loader
    return getattr(self._loader, name)


def peak_rss_gib() -> float:
  """This process's peak resident memory so far, GiB (Linux `ru_maxrss`, KiB): what a results row
  records of the memory its command needed (training and evaluation in one process)."""
  import resource  # POSIX only

  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
