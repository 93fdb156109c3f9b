"""`extract`: stream images through a feature network in one XLA-compiled step.

    feats = extract(network, images, batch_size=50)      # {"pool_3": [N, 2048], "logits": ...}

`images` may be a numpy array (uint8 [N, H, W, C] in [0, 255] or float in [0, 1]), a folder /
.npy / .npz path, an `evaluation.image_io.ImageFolder`, or a `tf.data.Dataset` of images or of
batches (tuples/dicts: the first element / "image" is used). Every batch is converted to float32
[0, 255] (float images are scaled, never quantised), padded to `batch_size` so the compiled step
sees one shape per image size, and the padding rows are dropped again: results do not depend on
`batch_size` (up to float rounding, checked to 1e-5 relative in tests).

Mixed precision: build the network with `dtype_policy="mixed_bfloat16"` (see
`evaluation.networks`); the step casts every output to float32.
"""

from __future__ import annotations

import os
import weakref
from typing import Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from evaluation import image_io
from evaluation import numerics

_STEPS: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()


def feature_step(network: keras.Model, *, jit_compile: bool = True,
                 strategy: tf.distribute.Strategy | None = None):
  """The compiled `images [B, H, W, C] float32 in [0, 255] -> {name: [B, D] float32}` step.

  Under a strategy with several replicas (or workers) each replica takes its contiguous slice of
  the batch (B a multiple of the replica count) and the features are gathered in batch order.
  """
  steps = _STEPS.setdefault(network, {})
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  key = (jit_compile, id(strategy) if replicas > 1 else None)
  if key not in steps:
    @tf.function(jit_compile=jit_compile)
    def step(images):
      outputs = network(images, training=False)
      return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), outputs)

    if replicas > 1:
      local_step = step

      def replica_step(images):
        i = tf.distribute.get_replica_context().replica_id_in_sync_group
        size = tf.shape(images)[0] // replicas
        return local_step(images[i * size:(i + 1) * size])

      @tf.function
      def step(images):  # pylint: disable=function-redefined
        outputs = strategy.run(replica_step, args=(images,))
        return tf.nest.map_structure(lambda t: strategy.gather(t, axis=0), outputs)
    steps[key] = step
  return steps[key]


def _dataset_arrays(dataset: tf.data.Dataset) -> Iterator[np.ndarray]:
  for element in dataset.as_numpy_iterator():
    if isinstance(element, dict):
      element = element["image"]
    elif isinstance(element, (tuple, list)):
      element = element[0]
    element = np.asarray(element)
    if element.ndim == 3 and element.shape[-1] in (1, 3):
      element = element[None]  # one image [H, W, C]
    yield image_io.check_image_array(element, what="dataset element")


def _source_arrays(images, batch_size: int) -> tuple[Iterator[np.ndarray], int | None]:
  """Chunks of images (any leading size) and the total count when known."""
  if isinstance(images, (str, os.PathLike)):
    images = image_io.open_images(images)
  if isinstance(images, image_io.ImageFolder):
    return images.batches(batch_size), len(images)
  if isinstance(images, tf.data.Dataset):
    return _dataset_arrays(images), None
  array = image_io.check_image_array(images)
  return (array[i:i + batch_size] for i in range(0, len(array), batch_size)), len(array)


def _rebatch(chunks: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
  """Regroups chunks into batches of `batch_size` (the last may be smaller), keeping order."""
  pending: list[np.ndarray] = []
  count = 0
  for chunk in chunks:
    while len(chunk):
      take = chunk[:batch_size - count]
      chunk = chunk[len(take):]
      pending.append(take)
      count += len(take)
      if count == batch_size:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]
        pending, count = [], 0
  if count:
    yield np.concatenate(pending)


def extract(network: keras.Model, images, *, batch_size: int = 50, progress: bool = True,
            jit_compile: bool = True, strategy: tf.distribute.Strategy | None = None,
            allow_tf32: bool = False) -> dict[str, np.ndarray]:
  """Features of every image, in input order.

  Args:
    network: a feature network from `evaluation.networks` (float [B, H, W, C] in [0, 255] -> dict
      of [B, D]); any Keras model with that contract works.
    images: see the module docstring.
    batch_size: images per compiled step (memory bound); does not change the results.
    progress: print a progress bar.
    jit_compile: compile the step with XLA (default); False runs the plain TF graph.
    strategy: a `tf.distribute` strategy to shard every batch over its replicas/workers (the
      batch is rounded up to a multiple of the replica count); one device's features come back.
    allow_tf32: let Ampere+ GPUs use TF32 (default: exact float32; no effect on CPUs).

  Returns:
    {output name: float32 [N, D]}.

  Raises:
    evaluation.image_io.ImageInputError: bad images (shape, dtype, range, unreadable files).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  batch_size = -(-batch_size // replicas) * replicas
  with numerics.exact_float32(not allow_tf32):
    return _extract(network, images, batch_size=batch_size, progress=progress,
                    step=feature_step(network, jit_compile=jit_compile, strategy=strategy))


def _extract(network, images, *, batch_size, progress, step) -> dict[str, np.ndarray]:
  del network
  chunks, total = _source_arrays(images, batch_size)
  bar = keras.utils.Progbar(total, unit_name="image") if progress else None
  outputs: dict[str, list[np.ndarray]] = {}
  seen = 0
  shape = None
  for batch in _rebatch(chunks, batch_size):
    if shape is not None and batch.shape[1:] != shape:
      raise image_io.ImageInputError(f"mixed image shapes: {shape} and {batch.shape[1:]}")
    shape = batch.shape[1:]
    rows = len(batch)
    batch = image_io.to_float255(batch)
    if rows < batch_size:  # pad to the compiled shape; padded rows are dropped below
      batch = np.concatenate([batch, np.zeros((batch_size - rows,) + batch.shape[1:], np.float32)])
    result = step(tf.constant(batch))
    if not isinstance(result, dict):
      result = {"features": result}
    for name, value in result.items():
      outputs.setdefault(name, []).append(value.numpy()[:rows])
    seen += rows
    if bar is not None:
      bar.update(seen)
  if not outputs:
    raise image_io.ImageInputError("no images to extract features from")
  return {name: np.concatenate(values) for name, values in outputs.items()}
