"""Data sets of the suite as unbatched `tf.data` pipelines of float32 images in [0, 1].

`load(name, split)` reads the standard distribution files from a local directory
(`data_dir` argument, else the `GENMODELS_DATA_DIR` environment variable), and only when
neither is given falls back to tfds / a download, which need a network.

Layout of a data directory (each set in a sub-folder named after it, or directly inside):

    mnist/           train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
                     t10k-images-idx3-ubyte.gz  t10k-labels-idx1-ubyte.gz
    fashion_mnist/   the same four IDX files (Fashion-MNIST)
    binarized_mnist/ binarized_mnist_{train,valid,test}.amat   (Larochelle & Murray 2011)
    frey_faces/      frey_rawface.mat                          (variable `ff`, uint8 [560, 1965])
"""

from __future__ import annotations

import dataclasses
import os
import urllib.request

import numpy as np
import tensorflow as tf

from common_tf import data_files

# The folder's variable, where a set's files are looked for and the IDX reader are shared with the
# metrics' named references (evaluation.references): common_tf/data_files.py.
DATA_DIR_ENV = data_files.DATA_DIR_ENV

# Frey Faces: S. Roweis' page; 1965 faces of 28x20 pixels.
FREY_FACES_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
FREY_SHAPE = (28, 20)
FREY_NUM_TRAIN, FREY_NUM_VALID, FREY_NUM_TEST = 1565, 200, 200
FREY_SPLIT_SEED = 2018  # fixed permutation seed of our train/valid/test split

IDX_IMAGES_MAGIC = data_files.IDX_IMAGES_MAGIC
IDX_LABELS_MAGIC = data_files.IDX_LABELS_MAGIC


class DataError(RuntimeError):
  """A data set could not be found or read; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class _Spec:
  shape: tuple[int, int, int]
  splits: tuple[str, ...]
  files: dict[str, tuple[str, ...]]  # split -> file names (images[, labels])
  tfds_name: str | None


_IDX_FILES = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_SPECS = {
  "mnist": _Spec((28, 28, 1), ("train", "test"), _IDX_FILES, "mnist"),
  "fashion_mnist": _Spec((28, 28, 1), ("train", "test"), _IDX_FILES, "fashion_mnist"),
  "binarized_mnist": _Spec(
    (28, 28, 1),
    ("train", "valid", "test"),
    {s: (f"binarized_mnist_{s}.amat",) for s in ("train", "valid", "test")},
    "binarized_mnist",
  ),
  "frey_faces": _Spec(
    (28, 20, 1),
    ("train", "valid", "test"),
    {s: ("frey_rawface.mat",) for s in ("train", "valid", "test")},
    None,
  ),
}
NAMES = tuple(_SPECS)


def image_shape(name: str) -> tuple[int, int, int]:
  """[H, W, C] of the images of data set `name`."""
  return _spec(name).shape


def _spec(name: str) -> _Spec:
  if name not in _SPECS:
    raise DataError(f"unknown data set {name!r}; known: {', '.join(NAMES)}")
  return _SPECS[name]


# ----------------------------------------------------------------------------- readers


def read_idx(path: str, *, expect_magic: int) -> np.ndarray:
  """Reads a (optionally gzipped) IDX file of uint8 values; checks magic number and size."""
  try:
    return data_files.read_idx(path, expect_magic=expect_magic)
  except data_files.IDXError as e:
    raise DataError(str(e)) from e


def read_amat(path: str) -> np.ndarray:
  """Reads a binarized-MNIST `.amat` file: one image per line, 784 space-separated 0/1 values.

  Vectorised over the file's bytes when every value is one character (the standard files: 70k
  lines in well under a second); any other layout goes through the line-by-line reader, which
  names the first bad line.
  """
  with open(path, "rb") as f:
    raw = np.frombuffer(f.read(), np.uint8)
  lines = raw[raw != ord("\r")]
  value = (lines != ord(" ")) & (lines != ord("\t")) & (lines != ord("\n"))
  single_chars = not np.any(value[1:] & value[:-1])
  chars = lines[value]
  if single_chars and chars.size and chars.size % 784 == 0:
    ends = np.flatnonzero(lines == ord("\n"))
    per_line = np.diff(np.concatenate([[0], np.cumsum(value)[ends], [chars.size]]))
    if np.all((per_line == 784) | (per_line == 0)):
      if not np.all((chars == ord("0")) | (chars == ord("1"))):
        raise DataError(f"corrupt .amat file {path}: values other than 0 and 1")
      return (chars == ord("1")).astype(np.float32).reshape(-1, 28, 28, 1)
  return _read_amat_lines(path)


def _read_amat_lines(path: str) -> np.ndarray:
  """The line-by-line `.amat` reader: any whitespace-separated numbers, exact error messages."""
  rows = []
  with open(path) as f:
    for line_no, line in enumerate(f, 1):
      values = line.split()
      if not values:
        continue
      if len(values) != 784:
        raise DataError(
          f"corrupt .amat file {path}: line {line_no} has {len(values)} values, expected 784"
        )
      rows.append(values)
  if not rows:
    raise DataError(f"empty .amat file {path}")
  data = np.asarray(rows, dtype=np.float32)
  if not np.all((data == 0) | (data == 1)):
    raise DataError(f"corrupt .amat file {path}: values other than 0 and 1")
  return data.reshape(-1, 28, 28, 1)


def read_frey_mat(path: str) -> np.ndarray:
  """Reads `frey_rawface.mat` (variable `ff`, uint8 [560, 1965], one face per column) -> uint8 [N, 28, 20, 1]."""
  import scipy.io

  try:
    ff = scipy.io.loadmat(path)["ff"]
  except Exception as e:  # scipy raises many kinds for a bad file
    raise DataError(f"cannot read Frey Faces file {path}: {e}") from e
  if ff.ndim != 2 or ff.shape[0] != FREY_SHAPE[0] * FREY_SHAPE[1]:
    raise DataError(f"corrupt Frey Faces file {path}: `ff` has shape {ff.shape}, expected (560, N)")
  return np.ascontiguousarray(ff.T).reshape(-1, *FREY_SHAPE, 1).astype(np.uint8)


# ----------------------------------------------------------------------------- locating files


def resolve_data_dir(data_dir: str | None) -> str | None:
  """The `data_dir` argument, else $GENMODELS_DATA_DIR, else None (use tfds / download)."""
  return data_dir or os.environ.get(DATA_DIR_ENV) or None


def _missing_error(name: str, split: str, files, data_dir: str | None, cause=None) -> DataError:
  where = (
    f"looked in {os.path.join(data_dir, name)} and {data_dir}"
    if data_dir
    else f"no data directory given and ${DATA_DIR_ENV} is not set"
  )
  msg = (
    f"data set {name!r} split {split!r} not found: expected {', '.join(files)}; {where}. "
    f"Put the standard files in <dir>/{name}/ and pass --data_dir=<dir> or set {DATA_DIR_ENV}"
  )
  if cause is not None:
    msg += f" (the network fallback failed too: {type(cause).__name__}: {str(cause)[:200]})"
  return DataError(msg)


# ----------------------------------------------------------------------------- arrays


def load_arrays(name: str, split: str, data_dir: str | None = None):
  """(images uint8-valued float32 in [0, 1] [N, H, W, C], labels int64 [N] or None)."""
  spec = _spec(name)
  if split not in spec.splits:
    raise DataError(f"data set {name!r} has splits {spec.splits}, not {split!r}")
  files = spec.files[split]
  root = resolve_data_dir(data_dir)
  if root is not None:
    if not os.path.isdir(root):
      raise DataError(f"data directory {root} does not exist (from --data_dir or ${DATA_DIR_ENV})")
    paths = [data_files.find_file(name, f, root) for f in files]
    if paths[0] is None:
      raise _missing_error(name, split, files, root)
    return _read_local(name, split, paths)
  try:
    return _read_remote(name, split)
  except Exception as e:  # no network, tfds missing, ...
    raise _missing_error(name, split, files, None, cause=e) from e


def _read_local(name, split, paths):
  if name in ("mnist", "fashion_mnist"):
    images = read_idx(paths[0], expect_magic=IDX_IMAGES_MAGIC)[..., None]
    labels = None
    if paths[1] is not None:
      labels = read_idx(paths[1], expect_magic=IDX_LABELS_MAGIC).astype(np.int64)
      if len(labels) != len(images):
        raise DataError(f"{paths[1]} has {len(labels)} labels for {len(images)} images")
    return images.astype(np.float32) / 255.0, labels
  if name == "binarized_mnist":
    return read_amat(paths[0]), None
  if name == "frey_faces":
    return _frey_split(read_frey_mat(paths[0]), split), None
  raise AssertionError(name)


def _frey_split(faces: np.ndarray, split: str) -> np.ndarray:
  """Fixed-seed split of the 1965 faces into 1565 / 200 / 200, as float32 in [0, 1]."""
  order = np.random.RandomState(FREY_SPLIT_SEED).permutation(len(faces))
  n_train, n_valid = FREY_NUM_TRAIN, FREY_NUM_VALID
  if len(faces) != n_train + n_valid + FREY_NUM_TEST:
    # A smaller file (e.g. a test fixture): keep the same proportions.
    n_valid = n_test = max(1, round(len(faces) * FREY_NUM_VALID / 1965))
    n_train = len(faces) - n_valid - n_test
  index = {
    "train": order[:n_train],
    "valid": order[n_train : n_train + n_valid],
    "test": order[n_train + n_valid :],
  }[split]
  return faces[np.sort(index)].astype(np.float32) / 255.0


def _read_remote(name, split):
  """tfds for MNIST-like sets, a download for Frey Faces; needs a network."""
  if name == "frey_faces":
    cache = os.path.join(os.path.expanduser("~"), ".cache", "genmodels", "frey_rawface.mat")
    if not os.path.exists(cache):
      os.makedirs(os.path.dirname(cache), exist_ok=True)
      urllib.request.urlretrieve(FREY_FACES_URL, cache + ".part")
      os.replace(cache + ".part", cache)
    return _frey_split(read_frey_mat(cache), split), None
  import tensorflow_datasets as tfds

  tfds_split = {"valid": "validation"}.get(split, split)
  arrays = tfds.as_numpy(tfds.load(_spec(name).tfds_name, split=tfds_split, batch_size=-1))
  images = arrays["image"].astype(np.float32)
  labels = arrays.get("label")
  images = images / 255.0 if images.max() > 1 else images
  return images, (labels.astype(np.int64) if labels is not None else None)


# ----------------------------------------------------------------------------- tf.data


def load(
  name: str, split: str, data_dir: str | None = None, with_labels: bool = False
) -> tf.data.Dataset:
  """Unbatched dataset of float32 images [H, W, C] in [0, 1] (or `(image, label)` pairs).

  Args:
    name: one of `NAMES` (mnist, fashion_mnist, binarized_mnist, frey_faces).
    split: 'train' / 'test' (and 'valid' for binarized_mnist and frey_faces).
    data_dir: folder with the standard files; default $GENMODELS_DATA_DIR, else tfds / download.
    with_labels: yield `(image, label)`; only for sets that have labels.
  """
  images, labels = load_arrays(name, split, data_dir)
  if with_labels:
    if labels is None:
      raise DataError(f"data set {name!r} split {split!r} has no labels here")
    return tf.data.Dataset.from_tensor_slices((images, labels))
  return tf.data.Dataset.from_tensor_slices(images)


def dynamic_binarization(dataset: tf.data.Dataset, *, seed: int) -> tf.data.Dataset:
  """x_bin ~ Bernoulli(x): a fresh draw each time an image is drawn, reproducible from `seed`.

  Each element gets its own stateless seed from a `tf.data.Dataset.random(seed)` stream, so the
  same (seed, position) gives the same draw (exact resume) and a new seed per epoch gives new draws.
  Works on images or `(image, label)` pairs.
  """

  def binarize(element_seed, element):
    image = element[0] if isinstance(element, tuple) else element
    seed_pair = tf.stack([element_seed, tf.constant(0, tf.int64)])
    u = tf.random.stateless_uniform(tf.shape(image), seed=seed_pair)
    binary = tf.cast(u < image, tf.float32)
    return (binary,) + tuple(element[1:]) if isinstance(element, tuple) else binary

  seeds = tf.data.Dataset.random(seed=seed)
  return tf.data.Dataset.zip((seeds, dataset)).map(
    lambda s, e: binarize(s, e), num_parallel_calls=tf.data.AUTOTUNE
  )


def binarize_once(images: np.ndarray, *, seed: int) -> np.ndarray:
  """x_bin = 1[u < x], u ~ U(0, 1) from NumPy RandomState(seed): one fixed binarization of grey
  images (evaluation sets), float32 0/1, the same for the same seed."""
  return (np.random.RandomState(seed).uniform(size=images.shape) < images).astype(np.float32)


def subset(images: np.ndarray, n: int | None, *, seed: int) -> np.ndarray:
  """A fixed random subset of `n` examples, kept in file order; all of them when `n` is None, 0 or
  at least their number.

  Never the first `n`: the static binarized MNIST test file (Larochelle & Murray) is sorted by
  class (its 980 zeros first, then the ones...; `test_binarized_mnist_test_file_is_sorted_by_class`),
  so its first 500 images are all zeros, whose NLL is about twice the ones'.
  """
  if not n or n >= len(images):
    return images
  return images[np.sort(np.random.RandomState(seed).permutation(len(images))[:n])]


def num_examples(dataset: tf.data.Dataset) -> int:
  n = int(dataset.cardinality())
  if n < 0:
    n = sum(1 for _ in dataset)
  return n
