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
