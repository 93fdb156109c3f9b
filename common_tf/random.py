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

Inside `sample_indexed(first, examples)` (the importance-weighted likelihood estimator,
`evaluation.likelihood`), a draw of shape [k B, ...] is read as k importance samples of B examples,
sample-major, and the rows of sample j are drawn from the generator's seed folded with the sample's
index `first + j`. So sample j's noise does not depend on how many samples one network call
takes: K samples drawn in chunks of 10 or of 100 (the generator's state restored before each chunk)
are the same K samples.
"""

from __future__ import annotations

import contextlib
import dataclasses
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


@dataclasses.dataclass(frozen=True)
class _SampleBlock:
  first: tf.Tensor  # int32 index of the block's first importance sample
  examples: tf.Tensor  # int32 B: examples per sample (this replica's)


_BLOCKS: list[_SampleBlock] = []


@contextlib.contextmanager
def sample_indexed(first, examples):
  """Draws (`normal`, `uniform`) of shape [k B, ...] inside are k importance samples of B
  examples (sample-major) numbered from `first`; sample j's rows come from the generator's seed
  folded with `first + j`, so they are the same whatever the k of the call. Under n replicas,
  B is the replica's share and each sample's rows are drawn for the global batch as above."""
  _BLOCKS.append(_SampleBlock(first=tf.cast(first, tf.int32), examples=tf.cast(examples, tf.int32)))
  try:
    yield
  finally:
    _BLOCKS.pop()


def _stateless_seed(seed) -> tf.Tensor:
  """The int32 [2] seed of one draw; a `SeedGenerator` advances once, as in `keras.random`."""
  if isinstance(seed, keras.random.SeedGenerator):
    seed = seed.next()
  elif isinstance(seed, int):
    seed = tf.constant([seed, 0], tf.int64)
  seed = tf.convert_to_tensor(seed)
  if seed.dtype != tf.int32:  # as keras' TensorFlow backend does (stateless ops want int32)
    seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
  return seed


def _by_sample(draw: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], shape, seed, dtype):
  """`draw(shape, seed)` of the innermost `sample_indexed` block, one importance sample at a time."""
  block = _BLOCKS[-1]
  base = _stateless_seed(seed)
  shape = tf.convert_to_tensor(shape, tf.int32)
  per_sample = tf.concat([[block.examples], shape[1:]], 0)

  def one(index):
    sample_seed = tf.random.experimental.stateless_fold_in(base, index)
    return global_batch_draw(lambda s: draw(s, sample_seed), per_sample)

  samples = block.first + tf.range(shape[0] // block.examples)
  return tf.reshape(tf.map_fn(one, samples, fn_output_signature=dtype), shape)


def normal(shape, *, seed, mean=0.0, stddev=1.0, dtype="float32") -> tf.Tensor:
  """N(mean, stddev^2) of `shape` ([B, ...]), the same per example for any replica count."""
  if _BLOCKS:
    return _by_sample(
      lambda s, sd: tf.random.stateless_normal(s, sd, mean=mean, stddev=stddev, dtype=dtype),
      shape,
      seed,
      dtype,
    )
  return global_batch_draw(
    lambda s: keras.random.normal(s, mean=mean, stddev=stddev, dtype=dtype, seed=seed), shape
  )


def uniform(shape, *, seed, minval=0.0, maxval=1.0, dtype="float32") -> tf.Tensor:
  """U[minval, maxval) of `shape` ([B, ...]), the same per example for any replica count."""
  if _BLOCKS:
    return _by_sample(
      lambda s, sd: tf.random.stateless_uniform(s, sd, minval=minval, maxval=maxval, dtype=dtype),
      shape,
      seed,
      dtype,
    )
  return global_batch_draw(
    lambda s: keras.random.uniform(s, minval=minval, maxval=maxval, dtype=dtype, seed=seed), shape
  )


def randint(shape, *, seed, minval, maxval, dtype="int32") -> tf.Tensor:
  """Integers in [minval, maxval) of `shape` ([B, ...]), the same per example for any replica count."""
  return global_batch_draw(
    lambda s: keras.random.randint(s, minval, maxval, dtype=dtype, seed=seed), shape
  )
