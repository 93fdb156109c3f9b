"""common_tf.layers.Dropout: the mask one device gives each example, on any replica count."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from common_tf import layers as common_layers
from tests.conftest import two_cpu_strategy

RATE = 0.25


def _ones_through_dropout_on_two_replicas(make_layer, batch=8, width=32):
  strategy = two_cpu_strategy()
  with strategy.scope():
    layer = make_layer()
  data = strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensors(tf.ones((batch, width)))
  )
  out = tf.function(lambda x: strategy.run(lambda s: layer(s, training=True), args=(x,)))(
    next(iter(data))
  )
  return np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)])


def test_mask_values_scale_and_single_device_equality():
  x = tf.ones((8, 32))
  one = common_layers.Dropout(RATE, seed=5)(x, training=True).numpy()
  # The mask is u >= rate for u ~ U[0, 1) drawn from the layer's generator, kept values 1 / (1 - rate).
  u = keras.random.uniform((8, 32), seed=keras.random.SeedGenerator(5)).numpy()
  np.testing.assert_array_equal(
    one, np.where(u >= RATE, 1.0 / (1.0 - RATE), 0.0).astype(np.float32)
  )
  assert 0.15 < (one == 0).mean() < 0.35
  # Two replicas, each with half of the batch: every example gets the one-device mask.
  two = _ones_through_dropout_on_two_replicas(lambda: common_layers.Dropout(RATE, seed=5))
  np.testing.assert_array_equal(two, one)
  # Inference and rate 0 are the identity; a rate outside [0, 1) is refused.
  np.testing.assert_array_equal(common_layers.Dropout(RATE, seed=5)(x).numpy(), x.numpy())
  np.testing.assert_array_equal(common_layers.Dropout(0.0)(x, training=True).numpy(), x.numpy())
  with pytest.raises(ValueError, match="dropout rate"):
    common_layers.Dropout(1.0)


def test_keras_dropout_repeats_its_mask_across_replicas():
  """What the layer fixes: keras.layers.Dropout's mirrored generator masks every shard alike."""
  two = _ones_through_dropout_on_two_replicas(lambda: keras.layers.Dropout(RATE, seed=5))
  np.testing.assert_array_equal(two[:4], two[4:])
