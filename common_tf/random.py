"""Random draws whose values do not depend on how the global batch is split over replicas.

Keras' `SeedGenerator` state is a mirrored variable under `tf.distribute`: every replica holds the
same state, so `keras.random.normal(shape_of_my_shard, seed=generator)` gives every replica the SAME
noise for different examples (the noise of example i of shard 0 repeats in every shard), and the
draws differ from one device's. Here each replica instead draws the noise of the whole global
batch from that common state, `[n_replicas * B, ...]`, and keeps its own rows: every example gets
exactly the noise one device would give it, so the replica or worker count changes neither the
statistics nor the values. The cost is n times the random-number work of the shard (small beside
the networks). Outside a strategy, or on one replica, these are plain `keras.random` draws.

    eps = common_tf.random.normal(tf.shape(mean), seed=self.seed_generator)  # [B, ...]

The batch axis is axis 0 of `shape`. Replica r of n keeps rows [r B, (r + 1) B) of the global
draw, which matches the contiguous sharding of `tf.distribute` datasets (shard r of a global batch
is its r-th block of B rows).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf


def _replicas():
  ctx = tf.distribute.get_replica_context()
  return (ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group) if ctx is not None else (1, 0)


def global_batch_draw(draw: Callable[[tf.Tensor], tf.Tensor], shape) -> tf.Tensor:
  """`draw(shape)` for one device; under n replicas `draw([n B, ...])[r B:(r + 1) B]`."""
  replicas, replica = _replicas()
  if replicas == 1:
    return draw(shape)
  shape = tf.convert_to_tensor(shape, tf.int32)
  local = shape[0]
  full = draw(tf.concat([[local * replicas], shape[1:]], 0))
  start = tf.cast(replica, tf.int32) * local
  return full[start : start + local]


def normal(shape, *, seed, mean=0.0, stddev=1.0, dtype="float32") -> tf.Tensor:
  """N(mean, stddev^2) of `shape` ([B, ...]), the same per example for any replica count."""
  return global_batch_draw(
    lambda s: keras.random.normal(s, mean=mean, stddev=stddev, dtype=dtype, seed=seed), shape
  )


def uniform(shape, *, seed, minval=0.0, maxval=1.0, dtype="float32") -> tf.Tensor:
  """U[minval, maxval) of `shape` ([B, ...]), the same per example for any replica count."""
  return global_batch_draw(
    lambda s: keras.random.uniform(s, minval=minval, maxval=maxval, dtype=dtype, seed=seed), shape
  )


def randint(shape, *, seed, minval, maxval, dtype="int32") -> tf.Tensor:
  """Integers in [minval, maxval) of `shape` ([B, ...]), the same per example for any replica count."""
  return global_batch_draw(
    lambda s: keras.random.randint(s, minval, maxval, dtype=dtype, seed=seed), shape
  )
