"""Layers whose randomness does not depend on how the global batch is split over replicas."""

from __future__ import annotations

import keras
import tensorflow as tf

from common_tf import random


class Dropout(keras.layers.Layer):
  """Inverted dropout, y = x * m / (1 - rate) with m ~ Bernoulli(1 - rate) per element.

  Unlike `keras.layers.Dropout` under `tf.distribute` (whose mirrored `SeedGenerator` gives every
  replica the same mask for different examples), the mask is drawn for the global batch with
  `common_tf.random.uniform` and each replica keeps its rows: example i gets the mask one device
  gives it, for any replica or worker count. The generator state is a layer variable, so it is
  checkpointed and a resumed run draws the masks an uninterrupted one would.
  """

  def __init__(self, rate: float, *, seed: int | None = None, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    self.rate = float(rate)
    if self.rate > 0:  # as keras.layers.Dropout: no generator state when there is nothing to draw
      self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, x, training=False):
    if not training or self.rate == 0:
      return x
    u = random.uniform(tf.shape(x), seed=self.seed_generator)  # [B, ...] float32
    keep = tf.cast(u >= self.rate, x.dtype)
    return x * keep * tf.cast(1.0 / (1.0 - self.rate), x.dtype)

  def get_config(self):
    return {**super().get_config(), "rate": self.rate}
