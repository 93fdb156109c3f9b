"""The DDPM optimizer as in the official code (hojonathanho/diffusion, diffusion_tf/utils.py and
tpu_utils/tpu_utils.py): Adam with epsilon 1e-8, a linear learning-rate warm-up, gradient clipping at
global norm 1 (done by the training harness) and an EMA of the weights (decay 0.9999).
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Official utils.make_optimizer: tf.train.AdamOptimizer(learning_rate=lr, epsilon=1e-8)
# (Keras' default epsilon is 1e-7).
ADAM_EPSILON = 1e-8


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
  """lr(step) = lr_max * min(step / warmup_steps, 1), step = updates done before this one.

  Official `get_warmed_up_lr`: max_lr * min(global_step / warmup, 1) with the global step read
  before it is incremented, so the first update has learning rate 0; warmup_steps = 0: lr_max.
  """

  def __init__(self, learning_rate: float, warmup_steps: int):
    if warmup_steps < 0:
      raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    self.learning_rate = float(learning_rate)
    self.warmup_steps = int(warmup_steps)

  def __call__(self, step):
    if self.warmup_steps == 0:
      return tf.constant(self.learning_rate, tf.float32)
    frac = tf.minimum(tf.cast(step, tf.float32) / float(self.warmup_steps), 1.0)
    return self.learning_rate * frac

  def get_config(self):
    return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}


def ddpm_adam(
  *, learning_rate: float, warmup_steps: int, ema_decay: float | None = None
) -> keras.optimizers.Adam:
  """Adam(lr warmed up linearly, epsilon 1e-8), with a weight EMA of `ema_decay` if given."""
  kwargs = {} if ema_decay is None else {"use_ema": True, "ema_momentum": ema_decay}
  return keras.optimizers.Adam(
    LinearWarmup(learning_rate, warmup_steps), epsilon=ADAM_EPSILON, **kwargs
  )
