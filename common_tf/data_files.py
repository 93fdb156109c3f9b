"""The suite's local data folder and the IDX files in it; standard library and NumPy only.

Both the training data loader (`experiments.data`) and the named references of the metrics
(`evaluation.references`, e.g. `--reference tfds:mnist/test`) read data sets from here, so they find
the same files in the same places and read them with the same checks, without importing each other
(evaluation never imports experiments).

Layout: each set in a sub-folder named after it, or directly inside the folder, e.g.
`$GENMODELS_DATA_DIR/fashion_mnist/t10k-images-idx3-ubyte.gz`; a gzipped file may also be there
unzipped (without `.gz`).
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

DATA_DIR_ENV = "GENMODELS_DATA_DIR"

IDX_IMAGES_MAGIC = 2051  # LeCun's IDX format: 0x00000803 (uint8, 3 dims)
IDX_LABELS_MAGIC = 2049  # 0x00000801 (uint8, 1 dim)


class IDXError(ValueError):
  """An IDX file could not be read or is not what was expected; the message names the file."""


def find_file(name: str, filename: str, data_dir: str | os.PathLike) -> str | None:
  """Path of `filename` of data set `name` in `data_dir`/`name`/ or `data_dir`/ (a `.gz` file may
  also be there unzipped), else None."""
  data_dir = os.fspath(data_dir)
  for folder in (os.path.join(data_dir, name), data_dir):
    for candidate in (filename, filename[:-3] if filename.endswith(".gz") else None):
      if candidate and os.path.isfile(os.path.join(folder, candidate)):
        return os.path.join(folder, candidate)
  return None


def read_idx(path: str | os.PathLike, *, expect_magic: int) -> np.ndarray:
  """Reads a (optionally gzipped) IDX file of uint8 values; checks magic number and size.

  Returns uint8 of the file's shape, e.g. [N, 28, 28] for images, [N] for labels; raises IDXError.
  """
  path = os.fspath(path)
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise IDXError(f"cannot read IDX file {path}: {e}") from e
  if len(raw) < 4:
    raise IDXError(f"corrupt IDX file {path}: only {len(raw)} bytes")
  magic = struct.unpack(">I", raw[:4])[0]
  if magic != expect_magic:
    raise IDXError(
      f"corrupt IDX file {path}: magic number {magic:#010x}, expected {expect_magic:#010x}"
    )
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise IDXError(
      f"corrupt IDX file {path}: only {len(raw)} bytes, the header of a "
      f"{ndim}-dimensional array needs {header}"
    )
  dims = struct.unpack(f">{ndim}I", raw[4:header])
  count = int(np.prod(dims))
  if len(raw) - header != count:
    raise IDXError(
      f"corrupt IDX file {path}: header says {dims} ({count} bytes), file holds {len(raw) - header}"
    )
  return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)
