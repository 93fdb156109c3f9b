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


def _handle(variable):
  """The resource handle of a Keras or tf.Variable (in a strategy update: this device's copy)."""
  return (variable.value if isinstance(variable, keras.Variable) else variable).handle


class FusedAdam(keras.optimizers.Adam):
  """keras.optimizers.Adam with each dense update as one fused kernel (`ResourceApplyAdam`) and the
  weight EMA as one `ResourceApplyGradientDescent` per variable, instead of about ten whole-tensor
  operations each. The same variables (checkpoints are interchangeable) and the same update:

    m_t = m + (g - m)(1 - b1),  v_t = v + (g^2 - v)(1 - b2),
    w_t = w - lr sqrt(1 - b2^t) / (1 - b1^t) m_t / (sqrt(v_t) + eps)   (Kingma & Ba, Sec. 2),
    average_t = average - (1 - d)(average - w_t)   (= d average + (1 - d) w_t; d = 0 at step 1).

  The kernel forms 1 - b1 and 1 - b2 in float32, as TF1's AdamOptimizer (the official DDPM
  optimizer) did; Keras rounds the float64 difference (1 - float32(0.999) is 4.7e-5 relatively away
  from float32(0.001)). Sparse gradients and AMSGrad take Keras' own update.
  """

  def update_step(self, gradient, variable, learning_rate):
    if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    index = self._get_variable_index(variable)
    step = tf.cast(self.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
      var=_handle(variable),
      m=_handle(self._momentums[index]),
      v=_handle(self._velocities[index]),
      beta1_power=tf.pow(beta_1, step),
      beta2_power=tf.pow(beta_2, step),
      lr=tf.cast(learning_rate, dtype),
      beta1=beta_1,
      beta2=beta_2,
      epsilon=tf.cast(self.epsilon, dtype),
      grad=tf.cast(gradient, dtype),
    )

  def _update_model_variables_moving_average(self, trainable_variables):
    if not self.use_ema:
      return
    for var, average in zip(trainable_variables, self._model_variables_moving_average):
      if average is None:
        continue
      not_first_step = tf.cast(tf.not_equal(self.iterations, 0), var.dtype)
      weight = 1.0 - not_first_step * tf.cast(self.ema_momentum, var.dtype)
      tf.raw_ops.ResourceApplyGradientDescent(
        var=_handle(average), alpha=weight, delta=tf.convert_to_tensor(average) - var
      )


def ddpm_adam(
  *, learning_rate: float, warmup_steps: int, ema_decay: float | None = None
) -> keras.optimizers.Adam:
  """Adam(lr warmed up linearly, epsilon 1e-8), with a weight EMA of `ema_decay` if given (as
  `FusedAdam`)."""
  kwargs = {} if ema_decay is None else {"use_ema": True, "ema_momentum": ema_decay}
  return FusedAdam(LinearWarmup(learning_rate, warmup_steps), epsilon=ADAM_EPSILON, **kwargs)
