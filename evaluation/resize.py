"""Bilinear resize with TensorFlow 1 semantics (`align_corners=False`, `half_pixel_centers=False`).

The 2015 Inception graph of TTUR resizes its input with the TF1 `ResizeBilinear` kernel, whose
sampling grid is *not* the half-pixel grid of TF2's `tf.image.resize`: output pixel `i` reads the
input at `src = i * (in_size / out_size)` (no +0.5 / -0.5), so the image is shifted by up to half a
pixel compared with TF2/PIL/OpenCV. FID values are sensitive to this, hence this module.

The kernel is written with gathers and lerps in exactly the order of TensorFlow's CPU kernel
(`tensorflow/core/kernels/image/resize_bilinear_op.cc`):

    top    = top_left    + (top_right    - top_left)    * x_lerp
    bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
    out    = top + (bottom - top) * y_lerp

so it agrees with `tf.compat.v1.image.resize_bilinear` to float rounding, and it compiles under
XLA (plain gathers, no resize op) on every backend.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def tf1_interpolation_weights(
  in_size: int, out_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source indices and weights of TF1's legacy bilinear scaler along one axis.

  `scale = in_size / out_size` (float32), `src_i = float32(i) * scale`, `lower = floor(src_i)`,
  `upper = min(ceil(src_i), in_size - 1)`, `lerp = src_i - floor(src_i)` (TF's `LegacyScaler` and
  `compute_interpolation_weights`, computed in float32 as the kernel does).

  Returns:
    (lower [out_size] int32, upper [out_size] int32, lerp [out_size] float32).
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f"resize sizes must be positive, got in_size={in_size}, out_size={out_size}")
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.arange(out_size, dtype=np.float32) * scale  # [out_size]
  floor = np.floor(src)
  lower = np.maximum(floor.astype(np.int64), 0)
  upper = np.minimum(np.ceil(src).astype(np.int64), in_size - 1)
  lerp = (src - floor).astype(np.float32)
  return lower.astype(np.int32), upper.astype(np.int32), lerp


def resize_bilinear_tf1(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
  """Resizes `[B, H, W, C]` images to `size = (out_h, out_w)` like TF1 `ResizeBilinear`.

  Equivalent to `tf.compat.v1.image.resize_bilinear(images, size, align_corners=False,
  half_pixel_centers=False)`. H and W must be static (they are whenever a feature step is traced
  for a concrete batch). Output dtype float32. An identity-size resize returns the input values.
  """
  images = tf.convert_to_tensor(images)
  images = tf.cast(images, tf.float32)  # [B, H, W, C]
  in_h, in_w = images.shape[1], images.shape[2]
  if in_h is None or in_w is None:
    raise ValueError(
      f"resize_bilinear_tf1 needs static image height and width, got shape {images.shape}"
    )
  out_h, out_w = int(size[0]), int(size[1])
  if (in_h, in_w) == (out_h, out_w):
    return images
  y_lo, y_hi, y_lerp = tf1_interpolation_weights(in_h, out_h)
  x_lo, x_hi, x_lerp = tf1_interpolation_weights(in_w, out_w)
  x_lerp = tf.constant(x_lerp)[None, None, :, None]  # [1, 1, out_w, 1]
  y_lerp = tf.constant(y_lerp)[None, :, None, None]  # [1, out_h, 1, 1]

  def horizontal(rows):  # [B, out_h, W, C] -> [B, out_h, out_w, C]
    left = tf.gather(rows, x_lo, axis=2)
    right = tf.gather(rows, x_hi, axis=2)
    return left + (right - left) * x_lerp

  top = horizontal(tf.gather(images, y_lo, axis=1))
  bottom = horizontal(tf.gather(images, y_hi, axis=1))
  return top + (bottom - top) * y_lerp


RESIZE_MODES = ("tf1", "clean", "pytorch-fid")  # protocol names: see `describe_resize`


def describe_resize(mode: str) -> str:
  """The resize mode's name in the protocol record."""
  return {
    "tf1": "tf1-legacy-bilinear",
    "clean": "clean-pil-bicubic-antialias",
    "pytorch-fid": "pytorch-fid-bilinear-half-pixel",
  }[mode]


def half_pixel_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """PyTorch's `F.interpolate(mode="bilinear", align_corners=False)` along one axis (float32):
  `src = max((i + 0.5) * in / out - 0.5, 0)`, `lower = floor(src)`,
  `upper = min(lower + 1, in - 1)`, `lerp = src - lower` (ATen's `area_pixel_compute_source_index`
  and `compute_indices_weights_linear`)."""
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.maximum(
    (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5),
    np.float32(0.0),
  )
  lower = np.floor(src).astype(np.int64)
  lower = np.minimum(lower, in_size - 1)
  upper = np.minimum(lower + 1, in_size - 1)
  lerp = (src - lower).astype(np.float32)
  return lower, upper, lerp


def resize_pytorch_fid(image: np.ndarray, size: int) -> np.ndarray:
  """pytorch-fid's input pipeline (`pytorch_fid.inception.InceptionV3`, resize_input=True,
  normalize_input=True) on one image, in the input scale of our network.

  pytorch-fid reads images as x / 255 in [0, 1] (torchvision `ToTensor`), resizes to 299 with
  `F.interpolate(bilinear, align_corners=False)` (half-pixel centres, no antialias) and feeds
  2 r - 1. Our Inception computes (y - 128) / 128 of its [0, 255]-scale input, so r is passed on
  as y = 256 r, which gives the same network input 2 r - 1. The network's own TF1 resize is then
  the identity.

  image: [H, W, C] uint8, or float in [0, 1] -> float32 [size, size, C].
  """
  image = np.asarray(image)
  r = (
    image.astype(np.float32) / np.float32(255.0)
    if image.dtype == np.uint8
    else (image.astype(np.float32))
  )
  y_lo, y_hi, y_lerp = half_pixel_weights(r.shape[0], size)
  x_lo, x_hi, x_lerp = half_pixel_weights(r.shape[1], size)
  x_lerp, y_lerp = x_lerp[None, :, None], y_lerp[:, None, None]
  rows_lo, rows_hi = r[y_lo], r[y_hi]  # [size, W, C]
  top = rows_lo[:, x_lo] * (1 - x_lerp) + rows_lo[:, x_hi] * x_lerp
  bottom = rows_hi[:, x_lo] * (1 - x_lerp) + rows_hi[:, x_hi] * x_lerp
  resized = top * (1 - y_lerp) + bottom * y_lerp
  return (resized * np.float32(256.0)).astype(np.float32)


def resize_clean(image: np.ndarray, size: int) -> np.ndarray:
  """clean-fid's resize: each channel as a float32 PIL image ('F'), PIL bicubic (antialiased
  when shrinking) to `size` x `size`, clipped to [0, 255] (cleanfid/resize.py, make_resizer("PIL",
  quantize_after=False, "bicubic", (299, 299))).

  image: [H, W, C] uint8 in [0, 255] or float in [0, 1] (scaled by 255) -> float32 [size, size, C].
  """
  from PIL import Image

  image = np.asarray(image)
  values = (
    image.astype(np.float32)
    if image.dtype == np.uint8
    else (image.astype(np.float32) * np.float32(255.0))
  )
  channels = [
    np.asarray(
      Image.fromarray(values[..., c], mode="F").resize((size, size), resample=Image.BICUBIC)
    ).clip(0, 255)
    for c in range(values.shape[-1])
  ]
  return np.stack(channels, axis=-1).astype(np.float32)
