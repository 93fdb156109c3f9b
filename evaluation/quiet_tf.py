"""Importing TensorFlow without its C++ start-up lines on stderr; standard library only.

A module of its own so that any module of the package (the commands in `cli`, the converter in
`lpips`, the scripts of `experiments`) can use it without importing the command plumbing.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow and probes devices with stderr (fd 2) muted: TF >= 2.20 prints C++
  start-up lines (oneDNN, CUDA probing) that TF_CPP_MIN_LOG_LEVEL does not silence and that would
  bury our one-line errors."""
  if "tensorflow" in sys.modules:
    return
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    import tensorflow

    tensorflow.config.list_physical_devices()  # device probing logs (cuInit ...) happen here
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
