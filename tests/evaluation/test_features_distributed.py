"""Feature extraction sharded over two replicas returns one device's features, in order."""

import keras
import numpy as np

from evaluation import features
from tests.conftest import two_cpu_strategy


def test_two_replicas_give_the_single_device_features_in_order():
  strategy = two_cpu_strategy()
  keras.utils.set_random_seed(0)
  with strategy.scope():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(h)
    network = keras.Model(inputs, {"pool": pooled, "logits": keras.layers.Dense(3)(pooled)})
  images = np.random.RandomState(0).randint(0, 256, (13, 8, 8, 1)).astype(np.uint8)  # 13: odd
  one = features.extract(network, images, batch_size=4, progress=False, jit_compile=False)
  two = features.extract(
    network, images, batch_size=3, progress=False, jit_compile=False, strategy=strategy
  )  # batch rounded up to 4
  assert set(two) == {"pool", "logits"} and two["pool"].shape == (13, 4)
  for name in one:
    np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6)
  # Not merely the same multiset of rows: the order is the input order.
  assert not np.allclose(two["pool"][:6], one["pool"][6:12])
