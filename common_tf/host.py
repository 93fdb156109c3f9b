"""The machine that ran a piece of work, for the results pages of long runs that span sessions.

Timings differ about 4x between the AVX-512 and the AVX2 hosts this suite runs on, and one run can
train and be evaluated on several of them (resumed from a carried checkpoint). The training loop
(`experiments.harness`, its status.json) and the resumable likelihood evaluation
(`evaluation.likelihood`, its resume file) record every host they ran on with these helpers.
"""

from __future__ import annotations

import os
from typing import Iterable


def cpu_model() -> str:
  """The CPU's model name, its widest vector extension and the cores this process sees, e.g.
  "AMD EPYC, AVX2, 2 cores"."""
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read()
  except OSError:
    import platform  # pylint: disable=g-import-not-at-top
    return platform.processor() or "unknown"
  name = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")),
              "unknown")
  flags = set(next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), []))
  vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
  return f"{name}, {vector}, {os.cpu_count()} cores"


def merge_in_order(*groups: Iterable[str | None]) -> list[str]:
  """The items of `groups` (hosts, commits) in order of first appearance, each once; None and ""
  are dropped."""
  merged: list[str] = []
  for group in groups:
    merged += [h for h in group if h and h not in merged]
  return merged
