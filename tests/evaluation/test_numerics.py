"""TF32 is off inside `exact_float32` and the previous setting comes back."""

import tensorflow as tf

from evaluation import numerics


def test_exact_float32_turns_tf32_off_and_restores_it():
  tf.config.experimental.enable_tensor_float_32_execution(True)
  with numerics.exact_float32():
    assert not tf.config.experimental.tensor_float_32_execution_enabled()
  assert tf.config.experimental.tensor_float_32_execution_enabled()
  with numerics.exact_float32(enabled=False):  # the user opted in to TF32
    assert tf.config.experimental.tensor_float_32_execution_enabled()


def test_precision_recall_distances_run_with_tf32_off(monkeypatch):
  import numpy as np

  from evaluation import precision_recall

  seen = []
  blocks = precision_recall._blocks()
  original = blocks.kth_neighbour

  def spy(*args):
    seen.append(tf.config.experimental.tensor_float_32_execution_enabled())
    return original(*args)

  monkeypatch.setattr(blocks, "kth_neighbour", spy)
  tf.config.experimental.enable_tensor_float_32_execution(True)
  features = np.random.RandomState(0).randn(12, 4).astype(np.float32)
  precision_recall.precision_recall(features, features + 0.1, k=3)
  assert seen and not any(seen)
  assert tf.config.experimental.tensor_float_32_execution_enabled()  # restored afterwards
