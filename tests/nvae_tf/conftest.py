"""Tiny NVAE configurations shared by the nvae_tf tests."""

import dataclasses
import itertools
import os

import numpy as np
import pytest

from experiments import data
from nvae_tf import NVAEConfig


def tiny_config(**changes) -> NVAEConfig:
  """Two latent scales (4x4 then 8x8) with groups [2, 1], 4 channels, 4 latents per group."""
  values = dict(
    num_channels_enc=4,
    num_channels_dec=4,
    num_groups_per_scale=2,
    num_latent_per_group=4,
    num_cell_per_cond_enc=1,
    num_cell_per_cond_dec=1,
    num_preprocess_cells=1,
    num_postprocess_cells=1,
    decoder_expansion=2,
    postprocess_expansion=2,
    spectral="none",
  )
  values.update(changes)
  return NVAEConfig(**values)


def one_scale_config(**changes) -> NVAEConfig:
  """tiny_config with one latent scale (8x8, groups [2]) and one pre/post block: the smallest NVAE
  that still has every kind of layer (cells, combiners, samplers, SE, SR / SN state), so it builds
  and traces fastest."""
  return dataclasses.replace(
    tiny_config(**changes), num_latent_scales=1, num_preprocess_blocks=1, num_postprocess_blocks=1
  )


def _amat_path(split: str) -> str | None:
  root = data.resolve_data_dir(None)
  path = root and os.path.join(root, "binarized_mnist", f"binarized_mnist_{split}.amat")
  return path if path and os.path.isfile(path) else None


def write_binarized_mnist_head(folder, *, train: int, test: int, valid: int = 0) -> str:
  """A data folder for `data.load_arrays` holding the first `train` / `test` (/ `valid`) lines of
  the binarized MNIST .amat files (parsing the whole 50k-line file takes seconds); returns it."""
  os.makedirs(os.path.join(folder, "binarized_mnist"), exist_ok=True)
  for split, n in (("train", train), ("test", test), ("valid", valid)):
    if not n:
      continue
    out = os.path.join(folder, "binarized_mnist", f"binarized_mnist_{split}.amat")
    source = _amat_path(split)
    if source is None:  # no local copy: through the loader (tfds / download)
      images = data.load_arrays("binarized_mnist", split)[0][:n]
      lines = [" ".join(str(int(v)) for v in image.ravel()) + "\n" for image in images]
    else:
      with open(source) as f:
        lines = list(itertools.islice(f, n))
    with open(out, "w") as f:
      f.writelines(lines)
  return str(folder)


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory) -> str:
  """Data folder with the first 64 training and 64 test images of static binarized MNIST."""
  return write_binarized_mnist_head(tmp_path_factory.mktemp("data"), train=64, test=64)


@pytest.fixture(scope="session")
def digits(small_data_dir) -> np.ndarray:
  """64 statically binarized MNIST test digits [64, 28, 28, 1] in {0, 1}."""
  images, _ = data.load_arrays("binarized_mnist", "test", small_data_dir)
  return images
