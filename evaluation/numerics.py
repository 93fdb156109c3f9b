"""Exact float32 for metrics: TensorFloat-32 off while features and distances are computed.

On Ampere and newer GPUs TensorFlow runs float32 matmuls and convolutions in TF32 (10-bit
mantissa) by default, about 1e-3 relative error: enough to move a nearest-neighbour radius in
precision/recall or the last digits of an FID. Training may keep TF32 (`--allow_tf32`); metric code
runs under `exact_float32()` unless the caller opts in. No effect on CPUs.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf


@contextlib.contextmanager
def exact_float32(enabled: bool = True):
  """Turns TF32 off inside the block (when `enabled`) and restores the previous setting."""
  previous = tf.config.experimental.tensor_float_32_execution_enabled()
  if enabled:
    tf.config.experimental.enable_tensor_float_32_execution(False)
  try:
    yield
  finally:
    tf.config.experimental.enable_tensor_float_32_execution(previous)
