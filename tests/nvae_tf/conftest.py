"""Tiny NVAE configurations shared by the nvae_tf tests."""

import numpy as np
import pytest

from experiments import data
from nvae_tf import NVAEConfig


def tiny_config(**changes) -> NVAEConfig:
  """Two latent scales (4x4 then 8x8) with groups [2, 1], 4 channels, 4 latents per group."""
  values = dict(num_channels_enc=4, num_channels_dec=4, num_groups_per_scale=2,
                num_latent_per_group=4, num_cell_per_cond_enc=1, num_cell_per_cond_dec=1,
                num_preprocess_cells=1, num_postprocess_cells=1, decoder_expansion=2,
                postprocess_expansion=2, spectral="none")
  values.update(changes)
  return NVAEConfig(**values)


@pytest.fixture(scope="session")
def digits() -> np.ndarray:
  """64 statically binarized MNIST test digits [64, 28, 28, 1] in {0, 1}."""
  images, _ = data.load_arrays("binarized_mnist", "test")
  return images[:64]
