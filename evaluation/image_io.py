"""Image sources for the metrics: folders / .zip archives of images and .npy/.npz arrays, checked
up front.

Accepted inputs:
  * a folder (searched recursively) or a .zip archive of .png/.jpg/.jpeg/.webp/.bmp/.tif/.tiff
    files (grey or RGB; palette/RGBA are converted to RGB; a set mixing grey and RGB files is read
    as RGB), all of one size, read in sorted relative-path order;
    16-bit grey PNGs (PIL modes "I;16*" / "I") are read at full depth and scaled to [0, 1] by
    1/65535 (a folder holding one is read as float [0, 1], 8-bit files by 1/255), never clipped;
  * a .npy file, or a .npz file with one array (or an array named "images"): uint8 [N, H, W, C]
    or float [N, H, W, C] in [0, 1], C in {1, 3}; [N, H, W] is read as grey.
Every problem (missing or empty folder, unreadable/corrupt file, mixed sizes, wrong shape/dtype/
range) raises `ImageInputError` with a one-line message naming the file.

Decoding runs on a thread pool (`ImageFolder.batches(..., workers=N)`; PIL releases the GIL while
decoding), `prefetch` batches ahead of the consumer, in input order.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import os
import pathlib
import threading
import zipfile
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_WORKERS = min(8, os.cpu_count() or 1)
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
    raise ImageInputError(
      f"{what}: expected an array [N, H, W, C] with C in {{1, 3}}, got shape {images.shape}"
    )
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise ImageInputError(f"{what}: expected uint8 or float images, got dtype {images.dtype}")
  if images.size:
    low, high = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(low) and np.isfinite(high)):
      raise ImageInputError(f"{what}: images contain NaN or inf")
    if low < 0.0 or high > 1.0:
      raise ImageInputError(
        f"{what}: float images must lie in [0, 1], found [{low:.4g}, {high:.4g}]"
      )
  return images


def to_float255(batch: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] or float [0, 1] -> float32 [0, 255]; float images are not quantised."""
  if batch.dtype == np.uint8:
    return batch.astype(np.float32)
  return batch.astype(np.float32) * np.float32(255.0)


@dataclasses.dataclass(eq=False)
class ImageFolder:
  """A checked folder (or .zip archive) of images; `batches` decodes lazily so memory stays
  bounded. `files` are paths, or member names when `archive` is set."""

  path: pathlib.Path
  files: list
  height: int
  width: int
  channels: int
  deep: bool = False  # some file is 16-bit: every image is read as float32 in [0, 1]
  archive: pathlib.Path | None = None
  _local: threading.local = dataclasses.field(default_factory=threading.local, repr=False)

  def __len__(self) -> int:
    return len(self.files)

  def _open(self, file):
    """A binary file object (one ZipFile handle per thread: zipfile is not thread safe)."""
    if self.archive is None:
      return open(file, "rb")
    handle = getattr(self._local, "zip", None)
    if handle is None:
      handle = self._local.zip = zipfile.ZipFile(self.archive)
    return io.BytesIO(handle.read(file))

  def _read(self, file) -> np.ndarray:
    where = file if self.archive is None else f"{self.archive}:{file}"
    try:
      with self._open(file) as stream, Image.open(stream) as image:
        if image.mode in _DEEP_MODES:
          array = read_deep_grey(image)  # float32 [H, W] in [0, 1]
          if self.channels == 3:
            array = np.repeat(array[..., None], 3, axis=-1)
        else:
          image = image.convert("L" if self.channels == 1 else "RGB")
          array = np.asarray(image, dtype=np.uint8)
          if self.deep:
            array = array.astype(np.float32) / np.float32(255.0)
    except (OSError, ValueError, SyntaxError, zipfile.BadZipFile) as e:
      raise ImageInputError(f"cannot decode image {where}: {e}") from e
    if array.shape[:2] != (self.height, self.width):
      raise ImageInputError(
        f"image {where} is {array.shape[1]}x{array.shape[0]}, the folder's "
        f"first image is {self.width}x{self.height}"
      )
    return array.reshape(self.height, self.width, self.channels)

  def batches(
    self,
    batch_size: int,
    *,
    workers: int = DEFAULT_WORKERS,
    prefetch: int = 2,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
  ) -> Iterator[np.ndarray]:
    """Batches in file order: uint8 [B, H, W, C], or float32 in [0, 1] when the folder holds
    16-bit files (or whatever `transform`, applied per image in the workers, returns).

    `workers` threads decode; at most `prefetch` batches beyond the one being consumed are
    decoded ahead, so memory stays bounded.
    """
    read = self._read if transform is None else (lambda f: transform(self._read(f)))
    starts = range(0, len(self.files), batch_size)
    if workers <= 1:
      for start in starts:
        yield np.stack([read(f) for f in self.files[start : start + batch_size]])
      return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      pending: collections.deque = collections.deque()
      queued = iter(starts)
      try:
        for start in queued:
          pending.append([pool.submit(read, f) for f in self.files[start : start + batch_size]])
          if len(pending) > prefetch:
            yield np.stack([future.result() for future in pending.popleft()])
        while pending:
          yield np.stack([future.result() for future in pending.popleft()])
      finally:
        for futures in pending:
          for future in futures:
            future.cancel()


def read_deep_grey(image: Image.Image) -> np.ndarray:
  """A 16-bit grey PIL image -> float32 [H, W] in [0, 1] (value / 65535), full depth.

  Raises ValueError for values outside [0, 65535] (e.g. a 32-bit "I" image that is not a PNG).
  """
  array = np.asarray(image).astype(np.float64)
  if array.size and (array.min() < 0 or array.max() > _DEEP_MAX):
    raise ValueError(
      f"{image.mode} image values span [{array.min():.0f}, {array.max():.0f}], "
      "outside 16-bit [0, 65535]"
    )
  return (array / _DEEP_MAX).astype(np.float32)


def _is_image_name(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _check_headers(folder: ImageFolder, *, workers: int = DEFAULT_WORKERS) -> ImageFolder:
  """Reads every header (in parallel): one size for all, channels and 16-bit depth noted."""

  def header(file):
    where = file if folder.archive is None else f"{folder.archive}:{file}"
    try:
      with folder._open(file) as stream, Image.open(stream) as image:
        image.verify()  # checks the file structure without decoding all pixels
        return image.size, image.mode
    except (OSError, ValueError, SyntaxError, zipfile.BadZipFile) as e:
      raise ImageInputError(f"cannot read image {where}: {e}") from e

  if workers > 1 and len(folder.files) > 1:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      headers = list(pool.map(header, folder.files))
  else:
    headers = [header(f) for f in folder.files]
  size, channels, deep = headers[0][0], 1, False
  for file, (file_size, mode) in zip(folder.files, headers):
    if file_size != size:
      first = pathlib.PurePath(str(folder.files[0])).name
      raise ImageInputError(
        f"mixed image sizes in {folder.path}: {first} is "
        f"{size[0]}x{size[1]}, {pathlib.PurePath(str(file)).name} is "
        f"{file_size[0]}x{file_size[1]}"
      )
    if mode not in _GREY_MODES:
      channels = 3
    deep = deep or mode in _DEEP_MODES
  folder.width, folder.height, folder.channels, folder.deep = size[0], size[1], channels, deep
  return folder


def open_image_folder(path: str | os.PathLike, *, workers: int = DEFAULT_WORKERS) -> ImageFolder:
  """Lists (recursively) and checks a folder: exists, holds images, all one size, every header
  readable."""
  folder = pathlib.Path(path)
  if not folder.exists():
    raise ImageInputError(f"image folder {folder} does not exist")
  if not folder.is_dir():
    raise ImageInputError(f"{folder} is not a folder")
  files = sorted(
    (f for f in folder.rglob("*") if f.is_file() and _is_image_name(f.name)),
    key=lambda f: f.relative_to(folder).as_posix(),
  )
  if not files:
    raise ImageInputError(f"image folder {folder} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
  return _check_headers(ImageFolder(folder, files, height=0, width=0, channels=1), workers=workers)


def open_image_zip(path: str | os.PathLike, *, workers: int = DEFAULT_WORKERS) -> ImageFolder:
  """Lists and checks the images of a .zip archive (any folder depth), as `open_image_folder`."""
  archive = pathlib.Path(path)
  if not archive.is_file():
    raise ImageInputError(f"{archive} does not exist")
  try:
    with zipfile.ZipFile(archive) as handle:
      names = sorted(
        info.filename
        for info in handle.infolist()
        if not info.is_dir()
        and _is_image_name(info.filename)
        and not pathlib.PurePosixPath(info.filename).name.startswith("._")
      )
  except (OSError, zipfile.BadZipFile) as e:
    raise ImageInputError(f"cannot read archive {archive}: {e}") from e
  if not names:
    raise ImageInputError(f"archive {archive} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
  return _check_headers(
    ImageFolder(archive, names, height=0, width=0, channels=1, archive=archive), workers=workers
  )


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
          raise ImageInputError(
            f"{path}: expected one array or an array named 'images', found {data.files}"
          )
  except (OSError, ValueError) as e:
    if isinstance(e, ImageInputError):
      raise
    raise ImageInputError(
      f"{path} is not a valid image or feature array ({_npy_reason(path, e)})"
    ) from e
  return check_image_array(images, what=str(path))


def _npy_reason(path: pathlib.Path, error: Exception) -> str:
  """Why NumPy refused `path`: a file that is no .npy/.npz at all (NumPy then guesses "pickled
  data"), or a real array of Python objects."""
  with open(path, "rb") as f:
    head = f.read(6)
  if head == b"\x93NUMPY" or head.startswith(b"PK"):
    if "pickle" in str(error) or "Python objects" in str(error):
      return "it holds Python objects; uint8 or float images [N, H, W, C] are needed"
    return " ".join(str(error).split())
  kind = ".npy" if path.suffix == ".npy" else ".npz"
  return f"no {kind} header: the file is not a NumPy {kind} file"


def open_images(path: str | os.PathLike) -> ImageFolder | np.ndarray:
  """A folder or .zip archive (lazy), or an .npy/.npz image array (checked)."""
  path = pathlib.Path(path)
  if path.suffix in (".npy", ".npz"):
    return load_image_array(path)
  if path.suffix.lower() == ".zip" or (path.is_file() and zipfile.is_zipfile(path)):
    return open_image_zip(path)
  return open_image_folder(path)
