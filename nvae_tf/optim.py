"""Optimiser of NVAE: Adamax with PyTorch's coupled L2 weight decay, lr warm-up then cosine.

NVlabs/NVAE train.py: Adamax(lr=1e-2, weight_decay=3e-4, eps=1e-3); the lr rises linearly over the
first `warmup_epochs` (per step), then CosineAnnealingLR(T_max = epochs - warmup - 1, eta_min=1e-4)
stepped once per epoch.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

LEARNING_RATE = 1e-2  # NVAE official --learning_rate
LEARNING_RATE_MIN = 1e-4  # NVAE official --learning_rate_min
WEIGHT_DECAY = 3e-4  # NVAE official --weight_decay (coupled L2, PyTorch semantics)
EPSILON = 1e-3  # NVAE official Adamax eps
WARMUP_EPOCHS = 5  # NVAE official --warmup_epochs


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
  """lr(step): lr0 * step / W for step < W = warmup_epochs * steps_per_epoch; afterwards, with
  e = step // steps_per_epoch and k = e - warmup_epochs (0 <= k <= T = epochs - warmup - 1),
  lr_min + (lr0 - lr_min) (1 + cos(pi k / T)) / 2, constant within an epoch.
  """

  def __init__(
    self,
    *,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: int = WARMUP_EPOCHS,
    learning_rate: float = LEARNING_RATE,
    learning_rate_min: float = LEARNING_RATE_MIN,
  ):
    if steps_per_epoch < 1 or epochs < 1:
      raise ValueError(f"need steps_per_epoch, epochs >= 1, got {steps_per_epoch}, {epochs}")
    self.steps_per_epoch = steps_per_epoch
    self.epochs = epochs
    self.warmup_epochs = min(warmup_epochs, epochs)
    self.learning_rate = learning_rate
    self.learning_rate_min = learning_rate_min

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup_steps = float(self.warmup_epochs * self.steps_per_epoch)
    cosine_epochs = max(self.epochs - self.warmup_epochs - 1, 1)
    k = tf.clip_by_value(
      tf.floor(step / self.steps_per_epoch) - self.warmup_epochs, 0.0, float(cosine_epochs)
    )
    cosine = self.learning_rate_min + (self.learning_rate - self.learning_rate_min) * 0.5 * (
      1.0 + tf.cos(math.pi * k / cosine_epochs)
    )
    if warmup_steps == 0:
      return cosine
    return tf.where(step < warmup_steps, self.learning_rate * step / warmup_steps, cosine)

  def get_config(self):
    return dict(
      steps_per_epoch=self.steps_per_epoch,
      epochs=self.epochs,
      warmup_epochs=self.warmup_epochs,
      learning_rate=self.learning_rate,
      learning_rate_min=self.learning_rate_min,
    )


class CoupledAdamax(keras.optimizers.Optimizer):
  """PyTorch's Adamax with coupled L2 decay (what the official run uses), per step t:

      g <- g + wd * theta;  m <- b1 m + (1 - b1) g;  u <- max(b2 u, |g| + eps)
      theta <- theta - lr / (1 - b1^t) * m / u

  Differs from `keras.optimizers.Adamax` in the decay (coupled, through m and u, not AdamW-style)
  and in where eps enters (inside the max).
  """

  def __init__(
    self,
    learning_rate=LEARNING_RATE,
    *,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = EPSILON,
    l2_weight_decay: float = WEIGHT_DECAY,
    name="coupled_adamax",
    **kwargs,
  ):
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
    self.l2_weight_decay = l2_weight_decay

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    self._m, self._u = [], []
    for var in variables:
      self._m.append(self.add_variable_from_reference(var, "m"))
      self._u.append(self.add_variable_from_reference(var, "u"))

  def update_step(self, gradient, variable, learning_rate):
    lr = tf.cast(learning_rate, variable.dtype)
    g = tf.cast(gradient, variable.dtype) + self.l2_weight_decay * variable
    t = tf.cast(self.iterations + 1, variable.dtype)
    m = self._m[self._get_variable_index(variable)]
    u = self._u[self._get_variable_index(variable)]
    self.assign(m, self.beta_1 * m + (1.0 - self.beta_1) * g)
    self.assign(u, tf.maximum(self.beta_2 * u, tf.abs(g) + self.epsilon))
    self.assign_sub(variable, lr / (1.0 - tf.pow(self.beta_1, t)) * m / u)

  def get_config(self):
    config = super().get_config()
    config.update(
      beta_1=self.beta_1,
      beta_2=self.beta_2,
      epsilon=self.epsilon,
      l2_weight_decay=self.l2_weight_decay,
    )
    return config
