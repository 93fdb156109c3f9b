"""Reference images by name: `--reference tfds:mnist/test` (features computed once, then cached).

    tfds:<name>/<split>     e.g. tfds:mnist/test, tfds:fashion_mnist/train, tfds:cifar10/test

Where the images come from, first hit wins:
  1. a loader registered from Python: `register("mnist", fn)` with fn(split) -> images
     (uint8 [N, H, W, C] or float [0, 1]); the suite's `experiments` can register its loaders
     this way (evaluation never imports experiments);
  2. the standard IDX files of MNIST / Fashion-MNIST in $GENMODELS_DATA_DIR/<name>/ (the layout
     the suite's data loader reads; `t10k-*` is the test split);
  3. tensorflow_datasets: an already prepared copy (in $TFDS_DATA_DIR or ~/tensorflow_datasets),
     else a download when allowed (--download).
Offline with nothing local: one clear error naming the three options.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pathlib
import struct
from typing import Callable

import numpy as np

from evaluation import image_io

PREFIX = "tfds:"
DATA_DIR_ENV = "GENMODELS_DATA_DIR"
IDX_IMAGES_MAGIC = 2051  # LeCun's IDX format: 0x00000803 (uint8, 3 dims)
_IDX_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}
_IDX_SETS = ("mnist", "fashion_mnist")
_LOADERS: dict[str, Callable[[str], np.ndarray]] = {}


def register(name: str, loader: Callable[[str], np.ndarray]) -> None:
  """Makes `tfds:<name>/<split>` load `loader(split)` (images as the metrics accept them)."""
  _LOADERS[name] = loader


def parse(spec: str) -> tuple[str, str]:
  """'tfds:mnist/test' -> ('mnist', 'test'); ImageInputError if malformed."""
  body = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
  name, _, split = body.partition("/")
  if not name or not split or "/" in split:
    raise image_io.ImageInputError(f"reference name {spec!r} must look like tfds:<name>/<split>, "
                                   "e.g. tfds:mnist/test")
  return name, split


def read_idx_images(path: pathlib.Path) -> np.ndarray:
  """uint8 [N, H, W, 1] from a (gzipped) IDX image file, magic number and size checked."""
  opener = gzip.open if path.suffix == ".gz" else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise image_io.ImageInputError(f"cannot read IDX file {path}: {e}") from e
  if len(raw) < 16 or struct.unpack(">I", raw[:4])[0] != IDX_IMAGES_MAGIC:
    raise image_io.ImageInputError(f"{path} is not an IDX image file")
  count, height, width = struct.unpack(">3I", raw[4:16])
  if len(raw) - 16 != count * height * width:
    raise image_io.ImageInputError(f"corrupt IDX file {path}: header says {count}x{height}x"
                                   f"{width}, file holds {len(raw) - 16} bytes")
  return np.frombuffer(raw, np.uint8, offset=16).reshape(count, height, width, 1)


def _local_idx_path(name: str, split: str) -> pathlib.Path | None:
  root = os.environ.get(DATA_DIR_ENV)
  if not root or name not in _IDX_SETS or split not in _IDX_FILES:
    return None
  for folder in (pathlib.Path(root) / name, pathlib.Path(root)):
    path = folder / _IDX_FILES[split]
    if path.is_file():
      return path
  return None


def _tfds_builder(name: str, split: str, *, download: bool):
  """(tfds module, builder, prepared); ImageInputError if unusable (checked before any work)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  except ImportError as e:
    raise image_io.ImageInputError(f"{PREFIX}{name}/{split}: tensorflow_datasets is not "
                                   "installed") from e
  try:
    builder = tfds.builder(name)
  except Exception as e:  # pylint: disable=broad-except  # tfds raises DatasetNotFoundError etc.
    raise image_io.ImageInputError(f"{PREFIX}{name}/{split}: unknown tfds data set ({e})") from e
  prepared = pathlib.Path(builder.data_dir, "dataset_info.json").exists()
  if not prepared and not download:
    raise image_io.ImageInputError(
        f"{PREFIX}{name}/{split} is not available offline: no local copy (set ${DATA_DIR_ENV} to "
        "the suite's data folder, or register a loader), and tensorflow_datasets has not "
        f"prepared it under {builder.data_dir} (run once with --download where there is a "
        "network)")
  return tfds, builder, prepared


def _tfds(name: str, split: str, *, download: bool) -> np.ndarray:
  tfds, builder, prepared = _tfds_builder(name, split, download=download)
  try:
    if not prepared:
      builder.download_and_prepare()
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  except ModuleNotFoundError as e:  # tfds imports its download helpers lazily
    raise image_io.ImageInputError(
        f"{PREFIX}{name}/{split}: tensorflow_datasets cannot prepare the data set: the Python "
        f"package {e.name} is missing (pip install {e.name}; setup.py requires it); or set "
        f"${DATA_DIR_ENV} to a folder with the data set's files") from e
  except Exception as e:  # pylint: disable=broad-except  # network / split errors of many kinds
    raise image_io.ImageInputError(f"{PREFIX}{name}/{split}: {' '.join(str(e).split())[:300]}") from e
  if not isinstance(data, dict) or "image" not in data:
    raise image_io.ImageInputError(f"{PREFIX}{name}/{split} has no 'image' feature")
  return data["image"]


@dataclasses.dataclass
class NamedReference:
  """A `tfds:<name>/<split>` reference, loaded on first use."""
  spec: str

  def __post_init__(self):
    self.name, self.split = parse(self.spec)

  def check(self, *, download: bool = True) -> None:
    """Raises ImageInputError now if `load` could not work (before any features are computed)."""
    if self.name not in _LOADERS and _local_idx_path(self.name, self.split) is None:
      _tfds_builder(self.name, self.split, download=download)

  def load(self, *, download: bool = True) -> np.ndarray:
    if self.name in _LOADERS:
      images = _LOADERS[self.name](self.split)
    else:
      path = _local_idx_path(self.name, self.split)
      if path is not None:
        images = read_idx_images(path)
      else:
        images = _tfds(self.name, self.split, download=download)
    return image_io.check_image_array(np.asarray(images), what=self.spec)
