"""Image sources for the metrics: folders of PNG/JPEG and .npy/.npz arrays, checked up front.

Accepted inputs:
  * a folder of .png/.jpg/.jpeg files (grey or RGB; palette/RGBA are converted to RGB; a folder
    mixing grey and RGB files is read as RGB), all of one size, read in sorted name order;
    16-bit grey PNGs (PIL modes "I;16*" / "I") are read at full depth and scaled to [0, 1] by
    1/65535 (a folder holding one is read as float [0, 1], 8-bit files by 1/255), never clipped;
  * a .npy file, or a .npz file with one array (or an array named "images"): uint8 [N, H, W, C]
    or float [N, H, W, C] in [0, 1], C in {1, 3}; [N, H, W] is read as grey.
Every problem (missing or empty folder, unreadable/corrupt file, mixed sizes, wrong shape/dtype/
range) raises `ImageInputError` with a one-line message naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Iterator

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_GREY_MODES = ("1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# 16-bit grey PNGs open as "I;16" (or "I" in older Pillow): full depth, scaled by 1/65535.
_DEEP_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_DEEP_MAX = 65535.0  # PNG 16-bit sample maximum


class ImageInputError(ValueError):
  """Unusable image input (one-line message)."""


def check_image_array(images: np.ndarray, *, what: str = "images") -> np.ndarray:
  """Validates an image array and returns it as [N, H, W, C] (C in {1, 3}).

  uint8 arrays are taken as [0, 255]; float arrays must lie in [0, 1] (the suite's convention).
  """
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]  # [N, H, W] grey
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ImageInputError(f"{what}: expected an array [N, H, W, C] with C in {{1, 3}}, got shape "
                          f"{images.shape}")
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise ImageInputError(f"{what}: expected uint8 or float images, got dtype {images.dtype}")
  if images.size:
    low, high = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(low) and np.isfinite(high)):
      raise ImageInputError(f"{what}: images contain NaN or inf")
    if low < 0.0 or high > 1.0:
      raise ImageInputError(f"{what}: float images must lie in [0, 1], found [{low:.4g}, {high:.4g}]")
  return images


def to_float255(batch: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] or float [0, 1] -> float32 [0, 255]; float images are not quantised."""
  if batch.dtype == np.uint8:
    return batch.astype(np.float32)
  return batch.astype(np.float32) * np.float32(255.0)


@dataclasses.dataclass
class ImageFolder:
  """A checked folder of images; `batches` decodes lazily so memory stays bounded."""
  path: pathlib.Path
  files: list[pathlib.Path]
  height: int
  width: int
  channels: int
  deep: bool = False  # some file is 16-bit: every image is read as float32 in [0, 1]

  def __len__(self) -> int:
    return len(self.files)

  def _read(self, file: pathlib.Path) -> np.ndarray:
    try:
      with Image.open(file) as image:
        if image.mode in _DEEP_MODES:
          array = read_deep_grey(image)  # float32 [H, W] in [0, 1]
          if self.channels == 3:
            array = np.repeat(array[..., None], 3, axis=-1)
        else:
          image = image.convert("L" if self.channels == 1 else "RGB")
          array = np.asarray(image, dtype=np.uint8)
          if self.deep:
            array = array.astype(np.float32) / np.float32(255.0)
    except (OSError, ValueError, SyntaxError) as e:
      raise ImageInputError(f"cannot decode image {file}: {e}") from e
    if array.shape[:2] != (self.height, self.width):
      raise ImageInputError(f"image {file} is {array.shape[1]}x{array.shape[0]}, the folder's "
                            f"first image is {self.width}x{self.height}")
    return array.reshape(self.height, self.width, self.channels)

  def batches(self, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(self.files), batch_size):
      # uint8, or float32 in [0, 1] when the folder holds 16-bit files
      yield np.stack([self._read(f) for f in self.files[start:start + batch_size]])


def read_deep_grey(image: Image.Image) -> np.ndarray:
  """A 16-bit grey PIL image -> float32 [H, W] in [0, 1] (value / 65535), full depth.

  Raises ValueError for values outside [0, 65535] (e.g. a 32-bit "I" image that is not a PNG).
  """
  array = np.asarray(image).astype(np.float64)
  if array.size and (array.min() < 0 or array.max() > _DEEP_MAX):
    raise ValueError(f"{image.mode} image values span [{array.min():.0f}, {array.max():.0f}], "
                     "outside 16-bit [0, 65535]")
  return (array / _DEEP_MAX).astype(np.float32)


def open_image_folder(path: str | os.PathLike) -> ImageFolder:
  """Lists and checks a folder: exists, holds images, all one size, every header readable."""
  folder = pathlib.Path(path)
  if not folder.exists():
    raise ImageInputError(f"image folder {folder} does not exist")
  if not folder.is_dir():
    raise ImageInputError(f"{folder} is not a folder")
  files = sorted(f for f in folder.iterdir()
                 if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
  if not files:
    raise ImageInputError(f"image folder {folder} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
  size, channels, deep = None, 1, False
  for file in files:
    try:
      with Image.open(file) as image:
        image.verify()  # checks the file structure without decoding all pixels
        file_size, mode = image.size, image.mode
    except (OSError, ValueError, SyntaxError) as e:
      raise ImageInputError(f"cannot read image {file}: {e}") from e
    if size is None:
      size = file_size
    elif file_size != size:
      raise ImageInputError(f"mixed image sizes in {folder}: {files[0].name} is "
                            f"{size[0]}x{size[1]}, {file.name} is {file_size[0]}x{file_size[1]}")
    if mode not in _GREY_MODES:
      channels = 3
    deep = deep or mode in _DEEP_MODES
  return ImageFolder(folder, files, height=size[1], width=size[0], channels=channels, deep=deep)


def load_image_array(path: str | os.PathLike) -> np.ndarray:
  """Images stored in a .npy file or a one-array (or "images") .npz file, checked."""
  path = pathlib.Path(path)
  if not path.exists():
    raise ImageInputError(f"{path} does not exist")
  try:
    if path.suffix == ".npy":
      images = np.load(path, mmap_mode="r", allow_pickle=False)
    else:
      with np.load(path, allow_pickle=False) as data:
        if "images" in data.files:
          images = data["images"]
        elif len(data.files) == 1:
          images = data[data.files[0]]
        else:
          raise ImageInputError(f"{path}: expected one array or an array named 'images', found "
                                f"{data.files}")
  except (OSError, ValueError) as e:
    if isinstance(e, ImageInputError):
      raise
    raise ImageInputError(f"cannot read {path}: {e}") from e
  return check_image_array(images, what=str(path))


def open_images(path: str | os.PathLike) -> ImageFolder | np.ndarray:
  """A folder (lazy) or an .npy/.npz image array (checked)."""
  path = pathlib.Path(path)
  if path.suffix in (".npy", ".npz"):
    return load_image_array(path)
  return open_image_folder(path)

