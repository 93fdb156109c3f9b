"""`extract`: stream images through a feature network in one XLA-compiled step.

    feats = extract(network, images, batch_size=50)      # {"pool_3": [N, 2048], "logits": ...}

`images` may be a numpy array (uint8 [N, H, W, C] in [0, 255] or float in [0, 1]), a folder /
.zip / .npy / .npz path, an `evaluation.image_io.ImageFolder`, a `tf.data.Dataset` of images or of
batches (tuples/dicts: the first element / "image" is used), or a generator function
`generate_fn(n) -> images [n, H, W, C]` with `num_samples` (models scored without writing PNGs).

Throughput: folder images are decoded by `workers` threads, and the whole input side (decode,
resize, batching) runs in a background thread `prefetch` batches ahead of the compiled step.

Resize modes (`resize=`): "tf1" (default; TTUR's TF1 legacy bilinear, inside the network),
"pytorch-fid" (pytorch-fid's half-pixel bilinear and x / 255 * 2 - 1, on the host) or
"clean" (clean-fid's PIL bicubic antialias to the network's input size, on the host, per image;
the network's own resize is then the identity). Every batch is converted to float32
[0, 255] (float images are scaled, never quantised), padded to `batch_size` so the compiled step
sees one shape per image size, and the padding rows are dropped again: results do not depend on
`batch_size` (up to float rounding, checked to 1e-5 relative in tests).

Your own network (CLIP-like features, ...): `register_extractor(name, build_fn, input_size=...,
dims=...)` (`evaluation.extractors`), then `features="name"` in `evaluation.api` or `--features
name` on the FID / KID / precision-recall commands.

Mixed precision: build the network with `dtype_policy="mixed_bfloat16"` (see
`evaluation.networks`); the step casts every output to float32.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from evaluation import image_io, numerics, protocol
from evaluation import resize as resize_lib
from evaluation.extractors import register_extractor  # noqa: F401  (the public name; see there)

# Input size of each feature network (its model name), the target of the "clean" resize.
NETWORK_INPUT_SIZES = {"inception_2015": 299, "vgg16_fc2": 224}  # TTUR graph; Keras/torchvision VGG

_STEPS: weakref.WeakKeyDictionary[keras.Model, dict] = weakref.WeakKeyDictionary()


def feature_step(
  network: keras.Model, *, jit_compile: bool = True, strategy: tf.distribute.Strategy | None = None
):
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
        return local_step(images[i * size : (i + 1) * size])

      @tf.function
      def step(images):
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


def _generated_arrays(
  generate_fn: Callable, num_samples: int, batch_size: int
) -> Iterator[np.ndarray]:
  """generate_fn(n) for n = batch_size, ..., the remainder; each result checked."""
  done = 0
  while done < num_samples:
    n = min(batch_size, num_samples - done)
    images = generate_fn(n)
    if isinstance(images, tf.Tensor):
      images = images.numpy()
    images = image_io.check_image_array(np.asarray(images), what="generate_fn output")
    if len(images) != n:
      raise image_io.ImageInputError(f"generate_fn({n}) returned {len(images)} images")
    done += n
    yield images


def _source_arrays(
  images,
  batch_size: int,
  *,
  num_samples: int | None = None,
  workers: int = 1,
  transform: Callable | None = None,
) -> tuple[Iterator[np.ndarray], int | None]:
  """Chunks of images (any leading size) and the total count when known."""
  if isinstance(images, (str, os.PathLike)):
    images = image_io.open_images(images)
  if isinstance(images, image_io.ImageFolder):
    return images.batches(batch_size, workers=workers, transform=transform), len(images)
  if isinstance(images, tf.data.Dataset):
    chunks, total = _dataset_arrays(images), None
  elif callable(images):
    if num_samples is None or num_samples < 1:
      raise ValueError(f"a generator function needs num_samples >= 1, got {num_samples}")
    chunks, total = _generated_arrays(images, num_samples, batch_size), num_samples
  else:
    array = image_io.check_image_array(images)
    chunks = (array[i : i + batch_size] for i in range(0, len(array), batch_size))
    total = len(array)
  if transform is not None:
    chunks = (np.stack([transform(image) for image in chunk]) for chunk in chunks)
  return chunks, total


def _background(iterator: Iterator, prefetch: int) -> Iterator:
  """Runs `iterator` in a daemon thread, `prefetch` items ahead; re-raises its errors here."""
  if prefetch < 1:
    yield from iterator
    return
  items: queue.Queue = queue.Queue(maxsize=prefetch)
  stop = threading.Event()
  done = object()

  def produce():
    try:
      for item in iterator:
        while not stop.is_set():
          try:
            items.put((item, None), timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
      items.put((done, None))
    except BaseException as e:  # handed to the consumer
      items.put((None, e))

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      item, error = items.get()
      if error is not None:
        raise error
      if item is done:
        return
      yield item
  finally:
    stop.set()


def clean_resizer(
  network: keras.Model, mode: str = "clean", *, size: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
  """Per-image host-side "clean" (or "pytorch-fid") resize to the network's input size (`size`,
  else looked up by the network's name)."""
  size = size or NETWORK_INPUT_SIZES.get(network.name)
  if size is None:
    raise ValueError(
      f"the {mode} resize needs the input size of network {network.name!r}; "
      f"known: {sorted(NETWORK_INPUT_SIZES)}"
    )
  if mode == "pytorch-fid":
    if size != 299:
      raise ValueError("the pytorch-fid resize is for the Inception network (299 x 299 input)")
    return lambda image: resize_lib.resize_pytorch_fid(image, size)
  return lambda image: resize_lib.resize_clean(image, size)


def _rebatch(chunks: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
  """Regroups chunks into batches of `batch_size` (the last may be smaller), keeping order."""
  pending: list[np.ndarray] = []
  count = 0
  for chunk in chunks:
    while len(chunk):
      take = chunk[: batch_size - count]
      chunk = chunk[len(take) :]
      pending.append(take)
      count += len(take)
      if count == batch_size:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]
        pending, count = [], 0
  if count:
    yield np.concatenate(pending)


def extract(
  network: keras.Model,
  images,
  *,
  batch_size: int = 50,
  progress: bool = True,
  jit_compile: bool = True,
  strategy: tf.distribute.Strategy | None = None,
  allow_tf32: bool = False,
  num_samples: int | None = None,
  resize: str = "tf1",
  workers: int = image_io.DEFAULT_WORKERS,
  prefetch: int = 2,
  info: dict | None = None,
  input_size: int | None = None,
) -> dict[str, np.ndarray]:
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
    num_samples: number of images to draw when `images` is a generator function.
    resize: "tf1" (TTUR, default), "clean" (clean-fid's PIL bicubic antialias) or "pytorch-fid"
      (pytorch-fid's half-pixel bilinear and x / 255 * 2 - 1 scaling; Inception only), see above.
    workers: image-decoding threads for folders / archives (and the clean resize).
    prefetch: batches prepared ahead of the compiled step by a background thread (0: inline).
    info: if given, filled with {"count", "height", "width", "channels", "input_dtype"} of the
      images seen (for the protocol record).
    input_size: the network's square input side for the "clean" resize (default: known for the
      built-in networks by their name).

  Returns:
    {output name: float32 [N, D]}.

  Raises:
    evaluation.image_io.ImageInputError: bad images (shape, dtype, range, unreadable files).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if resize not in resize_lib.RESIZE_MODES:
    raise ValueError(f"resize must be one of {resize_lib.RESIZE_MODES}, got {resize!r}")
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  batch_size = -(-batch_size // replicas) * replicas
  info = {} if info is None else info
  transform = (
    clean_resizer(network, resize, size=input_size) if resize in ("clean", "pytorch-fid") else None
  )
  if transform is not None:  # the original size is recorded, not the resized one
    transform = _recording(transform, info)
  chunks, total = _source_arrays(
    images, batch_size, num_samples=num_samples, workers=workers, transform=transform
  )
  if total is not None and 0 < total < batch_size:  # fewer images than a batch: no padding work
    batch_size = -(-total // replicas) * replicas
  with numerics.exact_float32(not allow_tf32):
    return _extract(
      _background(_rebatch(chunks, batch_size), prefetch),
      total,
      batch_size=batch_size,
      progress=progress,
      info=info,
      prescaled=transform is not None,
      step=feature_step(network, jit_compile=jit_compile, strategy=strategy),
    )


def _recording(transform: Callable, info: dict) -> Callable:
  def wrapped(image):
    info.setdefault("original_shape", tuple(image.shape))
    info.setdefault("input_dtype", str(image.dtype))
    return transform(image)

  return wrapped


def _extract(
  batches, total, *, batch_size, progress, step, info, prescaled: bool
) -> dict[str, np.ndarray]:
  bar = keras.utils.Progbar(total, unit_name="image") if progress else None
  outputs: dict[str, list[np.ndarray]] = {}
  seen = 0
  shape = None
  for batch in batches:
    if shape is not None and batch.shape[1:] != shape:
      raise image_io.ImageInputError(f"mixed image shapes: {shape} and {batch.shape[1:]}")
    shape = batch.shape[1:]
    info.setdefault("input_dtype", str(batch.dtype))
    rows = len(batch)
    if not prescaled:  # the clean resize already returns float32 [0, 255]
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
  height, width, channels = info.pop("original_shape", shape)
  info.update(count=seen, height=int(height), width=int(width), channels=int(channels))
  return {name: np.concatenate(values) for name, values in outputs.items()}


def extract_with_record(
  network: keras.Model,
  images,
  *,
  label: str,
  feature: str,
  resize: str = "tf1",
  precision: str = "float32",
  **kwargs,
) -> tuple[np.ndarray, dict]:
  """(`extract(network, images, ...)[feature]`, its protocol record): for scripts that store a
  metric value with `experiments.results.metric(value, record)`. `label` names the network as the
  metric commands do ("inception-2015", "vgg16-keras", "vgg16-torch-fidelity")."""
  info: dict = {}
  out = extract(network, images, resize=resize, info=info, **kwargs)[feature]
  record = protocol.record(
    network=label,
    weights_sha=protocol.weights_sha256(network),
    feature=feature,
    resize=resize_lib.describe_resize(resize),
    precision=precision,
    info=info,
  )
  return out, record


def extract_samples_and_reference(
  network: keras.Model, samples, reference, *, label: str, feature: str, **kwargs
) -> tuple[np.ndarray, np.ndarray, dict]:
  """(sample features, reference features, the samples' protocol record), the two records checked
  to agree (`protocol.check_compatible`); what a script needs for one FID / KID / PR value."""
  fake, record = extract_with_record(network, samples, label=label, feature=feature, **kwargs)
  real, real_record = extract_with_record(
    network, reference, label=label, feature=feature, **kwargs
  )
  protocol.check_compatible(record, real_record)
  return fake, real, record
