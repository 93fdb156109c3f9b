"""common_tf.random: under 2 replicas every example gets the noise one device gives it."""

import keras
import numpy as np
import tensorflow as tf

from common_tf import random as common_random
from tests.conftest import two_cpu_strategy


def _draw_on_two_replicas(draw):
  strategy = two_cpu_strategy()
  with strategy.scope():
    gen = keras.random.SeedGenerator(3)
  out = tf.function(lambda: strategy.run(lambda: draw(gen)))()
  return np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)])


def test_two_replicas_draw_the_single_device_noise_per_example():
  one = common_random.normal((6, 2), seed=keras.random.SeedGenerator(3)).numpy()
  two = _draw_on_two_replicas(lambda gen: common_random.normal((3, 2), seed=gen))
  np.testing.assert_array_equal(two, one)
  one_t = common_random.randint((6,), seed=keras.random.SeedGenerator(3), minval=0, maxval=1000)
  two_t = _draw_on_two_replicas(
    lambda gen: common_random.randint((3,), seed=gen, minval=0, maxval=1000)
  )
  np.testing.assert_array_equal(two_t, one_t.numpy())


def test_plain_keras_draws_repeat_across_replicas():
  """What common_tf.random fixes: a mirrored seed state gives every shard the same noise."""
  two = _draw_on_two_replicas(lambda gen: keras.random.normal((3, 2), seed=gen))
  np.testing.assert_array_equal(two[:3], two[3:])
