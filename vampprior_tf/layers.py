"""Building blocks of the official VampPrior networks (jmtomczak/vae_vampprior, utils/nn.py)."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf


def he_normal():
  """N(0, 2 / fan_in), untruncated: the official `he_init` of every nn.Linear (utils/nn.py)."""
  return keras.initializers.VarianceScaling(
    scale=2.0, mode="fan_in", distribution="untruncated_normal"
  )


def torch_default_uniform(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default init of nn.Conv2d weights AND biases
  (`reset_parameters`: kaiming_uniform_(a=sqrt(5)) gives this bound for the weight, and the bias
  bound is 1/sqrt(fan_in)); the official code keeps it for every convolution (its `he_init` only
  touches nn.Linear). fan_in = in_channels * k * k."""
  bound = 1.0 / math.sqrt(fan_in)
  return keras.initializers.RandomUniform(-bound, bound)


def hardtanh(x, min_value: float, max_value: float):
  """Hardtanh(x) = min(max(x, min_value), max_value) (torch.nn.Hardtanh)."""
  return tf.clip_by_value(x, min_value, max_value)


class GatedDense(keras.layers.Layer):
  """out = h * g with h = W_h x + b_h and g = sigmoid(W_g x + b_g) (Dauphin et al. 2017 gating)."""

  def __init__(self, units: int, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.h = keras.layers.Dense(units, kernel_initializer=he_normal())
    self.g = keras.layers.Dense(units, kernel_initializer=he_normal())

  def call(self, x):
    return self.h(x) * tf.sigmoid(self.g(x))


class GatedConv2d(keras.layers.Layer):
  """out = h * g with h = conv_h(pad(x)), g = sigmoid(conv_g(pad(x))).

  Padding as the official `GatedConv2d(in, out, k, stride, padding)` (PyTorch): `padding` zeros on
  EVERY side (default k // 2, what all official models pass), then a 'valid' convolution. For
  stride 2 on an even size this differs from Keras 'same', which pads only the bottom/right and
  so shifts every output by one input pixel. Weights and biases start as PyTorch's default
  (`torch_default_uniform`).
  """

  def __init__(
    self, filters: int, kernel_size: int, strides: int = 1, *, padding: int | None = None, **kwargs
  ):
    super().__init__(**kwargs)
    self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
    self.padding = kernel_size // 2 if padding is None else padding

  def build(self, input_shape):
    init = torch_default_uniform(int(input_shape[-1]) * self.kernel_size**2)
    self.h, self.g = (
      keras.layers.Conv2D(
        self.filters,
        self.kernel_size,
        self.strides,
        padding="valid",
        kernel_initializer=init,
        bias_initializer=init,
      )
      for _ in range(2)
    )

  def call(self, x):  # [B, H, W, C] -> [B, (H + 2p - k) // s + 1, (W + 2p - k) // s + 1, filters]
    p = self.padding
    x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
    return self.h(x) * tf.sigmoid(self.g(x))


def causal_mask(
  kernel_size: int, in_channels: int, out_channels: int, mask_type: str
) -> np.ndarray:
  """PixelCNN mask [k, k, in, out] (van den Oord et al. 2016): rows below the centre and, in the
  centre row, the pixels right of the centre are zero; type 'A' also zeroes the centre itself.
  As official `MaskedConv2d`, the mask does not depend on the channels."""
  if mask_type not in ("A", "B"):
    raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
  mask = np.ones((kernel_size, kernel_size, in_channels, out_channels), np.float32)
  centre = kernel_size // 2
  mask[centre, centre + (mask_type == "B") :] = 0.0
  mask[centre + 1 :] = 0.0
  return mask


class MaskedConv2D(keras.layers.Layer):
  """A 'same'-padded stride-1 convolution whose kernel is multiplied by `causal_mask` at each call."""

  def __init__(
    self, filters: int, kernel_size: int, *, mask_type: str, use_bias: bool = False, **kwargs
  ):
    super().__init__(**kwargs)
    if mask_type not in ("A", "B"):
      raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    self.filters, self.kernel_size, self.mask_type, self.use_bias = (
      filters,
      kernel_size,
      mask_type,
      use_bias,
    )

  def build(self, input_shape):
    in_channels = int(input_shape[-1])
    init = torch_default_uniform(in_channels * self.kernel_size**2)  # official: nn.Conv2d default
    self.kernel = self.add_weight(
      name="kernel",
      shape=(self.kernel_size, self.kernel_size, in_channels, self.filters),
      initializer=init,
    )
    self.bias = (
      self.add_weight(name="bias", shape=(self.filters,), initializer=init)
      if self.use_bias
      else None
    )
    self.mask = tf.constant(
      causal_mask(self.kernel_size, in_channels, self.filters, self.mask_type)
    )

  def call(self, x):  # [B, H, W, C_in] -> [B, H, W, filters]
    y = tf.nn.conv2d(x, self.kernel * self.mask, strides=1, padding="SAME")
    return y + self.bias if self.bias is not None else y
