"""Sample grids and arrays."""

import numpy as np
import pytest
from PIL import Image

from experiments import images


def test_grid_layout_and_png(tmp_path):
  x = np.zeros((5, 2, 3, 1), np.float32)
  for i in range(5):
    x[i] = i / 4
  grid = images.save_grid(str(tmp_path / "g.png"), x, columns=3)
  assert grid.shape == (4, 9, 1) and grid.dtype == np.uint8
  assert grid[0, 0, 0] == 0 and grid[0, 3, 0] == 64 and grid[2, 3, 0] == 255  # row-major
  assert grid[2, 6, 0] == 0  # the empty sixth cell
  png = np.asarray(Image.open(tmp_path / "g.png"))
  np.testing.assert_array_equal(png, grid[..., 0])
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    images.image_grid(np.zeros((2, 3, 3)))


def test_samples_npz_round_trip(tmp_path):
  x = np.random.RandomState(0).rand(3, 4, 4, 1).astype(np.float32)
  images.save_samples(str(tmp_path / "s.npz"), x)
  stored = np.load(tmp_path / "s.npz")["images"]
  assert stored.dtype == np.uint8 and stored.shape == x.shape
  np.testing.assert_allclose(stored / 255.0, x, atol=0.5 / 255 + 1e-7)
