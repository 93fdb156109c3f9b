"""Reference images by name: `--reference tfds:mnist/test` (features computed once, then cached).

    tfds:<name>/<split>     e.g. tfds:mnist/test, tfds:fashion_mnist/train, tfds:cifar10/test

Where the images come from, first hit wins:
  1. the standard IDX files of MNIST / Fashion-MNIST in $GENMODELS_DATA_DIR/<name>/ (or directly
     in it): the suite's data folder, found and read by `common_tf.data_files` exactly as the
     training data loader `experiments.data` does (`t10k-*` is the test split);
  2. tensorflow_datasets: an already prepared copy (in $TFDS_DATA_DIR or ~/tensorflow_datasets),
     else a download when allowed (--download).
Offline with neither: one clear error naming both options. Other images (binarized MNIST, Frey
Faces, a subset) are given as files: a .npy / .npz / folder of images.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from common_tf import data_files
from evaluation import image_io

PREFIX = "tfds:"
DATA_DIR_ENV = data_files.DATA_DIR_ENV
_IDX_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}
_IDX_SETS = ("mnist", "fashion_mnist")


def parse(spec: str) -> tuple[str, str]:
  """'tfds:mnist/test' -> ('mnist', 'test'); ImageInputError if malformed."""
  body = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
  name, _, split = body.partition("/")
  if not name or not split or "/" in split:
    raise image_io.ImageInputError(
      f"reference name {spec!r} must look like tfds:<name>/<split>, e.g. tfds:mnist/test"
    )
  return name, split


def read_idx_images(path: pathlib.Path) -> np.ndarray:
  """uint8 [N, H, W, 1] from a (gzipped) IDX image file, magic number and size checked."""
  try:
    images = data_files.read_idx(path, expect_magic=data_files.IDX_IMAGES_MAGIC)
  except data_files.IDXError as e:
    raise image_io.ImageInputError(str(e)) from e
  return images[..., None]


def _local_idx_path(name: str, split: str) -> pathlib.Path | None:
  root = os.environ.get(DATA_DIR_ENV)
  if not root or name not in _IDX_SETS or split not in _IDX_FILES:
    return None
  path = data_files.find_file(name, _IDX_FILES[split], root)
  return pathlib.Path(path) if path is not None else None


def _tfds_builder(name: str, split: str, *, download: bool):
  """(tfds module, builder, prepared); ImageInputError if unusable (checked before any work)."""
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise image_io.ImageInputError(
      f"{PREFIX}{name}/{split}: tensorflow_datasets is not installed"
    ) from e
  try:
    builder = tfds.builder(name)
  except Exception as e:  # tfds raises DatasetNotFoundError etc.
    raise image_io.ImageInputError(f"{PREFIX}{name}/{split}: unknown tfds data set ({e})") from e
  prepared = pathlib.Path(builder.data_dir, "dataset_info.json").exists()
  if not prepared and not download:
    raise image_io.ImageInputError(
      f"{PREFIX}{name}/{split} is not available offline: no local copy (set ${DATA_DIR_ENV} to "
      f"the suite's data folder), and tensorflow_datasets has not prepared it under "
      f"{builder.data_dir} (run once with --download where there is a network)"
    )
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
      f"${DATA_DIR_ENV} to a folder with the data set's files"
    ) from e
  except Exception as e:  # network / split errors of many kinds
    raise image_io.ImageInputError(
      f"{PREFIX}{name}/{split}: {' '.join(str(e).split())[:300]}"
    ) from e
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
    if _local_idx_path(self.name, self.split) is None:
      _tfds_builder(self.name, self.split, download=download)

  def load(self, *, download: bool = True) -> np.ndarray:
    path = _local_idx_path(self.name, self.split)
    if path is not None:
      images = read_idx_images(path)
    else:
      images = _tfds(self.name, self.split, download=download)
    return image_io.check_image_array(np.asarray(images), what=self.spec)
