"""Small stand-in feature networks for the scripts' FID / precision-recall plumbing (no Inception
or VGG-16 weights offline; never used for reported numbers). Imports no test configuration, so
that the worker processes of the distributed tests can use them."""

import keras
import tensorflow as tf


class StandIn(keras.Model):
  """A small feature network ({output: [B, 6]}) that records the replica count of each trace."""

  def __init__(self, output: str):
    super().__init__()
    self.output_name = output
    self.conv = keras.layers.Conv2D(6, 3)
    self.pool = keras.layers.GlobalAveragePooling2D()
    self.replicas = []  # num_replicas_in_sync of the context of every trace

  def call(self, images, training=False):
    context = tf.distribute.get_replica_context()  # None when built in a strategy's scope
    self.replicas.append(context.num_replicas_in_sync if context is not None else None)
    return {self.output_name: self.pool(self.conv(images / 255.0))}


def stand_in(output: str) -> StandIn:
  keras.utils.set_random_seed(0)
  network = StandIn(output)
  network(tf.zeros((1, 28, 28, 1)))
  network.replicas.clear()
  return network
