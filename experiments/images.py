"""Saving samples: uint8 PNG grids and `.npz` arrays (the suite's convention for saved samples)."""

from __future__ import annotations

import os

import numpy as np


def image_grid(images, columns: int = 8) -> np.ndarray:
  """[N, H, W, C] float in [0, 1] -> uint8 grid [rows * H, columns * W, C], row-major."""
  images = np.asarray(images, np.float32)
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
  n, h, w, c = images.shape
  columns = max(1, min(columns, n))
  rows = -(-n // columns)
  grid = np.zeros((rows * h, columns * w, c), np.float32)
  for i in range(n):
    r, col = divmod(i, columns)
    grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = images[i]
  return (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_grid(path: str, images, columns: int = 8) -> np.ndarray:
  """Writes `image_grid(images)` as a PNG (grey or RGB); returns the uint8 grid."""
  from PIL import Image

  grid = image_grid(images, columns)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
  return grid


def save_samples(path: str, images) -> None:
  """Writes samples as uint8 [N, H, W, C] under key `images` in a `.npz` (evaluation CLIs read it)."""
  images = np.asarray(images, np.float32)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  np.savez_compressed(path, images=(np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
