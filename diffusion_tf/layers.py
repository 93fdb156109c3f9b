"""Building blocks of the diffusion_tf models: the DDPM U-Net and its blocks, and MLPs."""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from common_tf import layers as common_layers

# ----------------------------------------------------------------------------- DDPM U-Net
# Architecture facts from the official DDPM code (hojonathanho/diffusion, models/unet.py): swish,
# GroupNorm, timestep embedding of width 4*ch added in every residual block, zero-initialised
# last convolutions, self-attention at the listed resolutions and in the middle, skip concatenation.

# Official DDPM: timestep embedding frequencies exp(-log(10000) i / (half - 1)) (Transformer, Vaswani et al.).
MAX_PERIOD = 10_000.0
GROUP_NORM_EPSILON = 1e-6  # official: tf.contrib group_norm default


def timestep_embedding(t, dim: int):
  """Sinusoidal embedding [B, dim] of integer timesteps t [B]: [sin(t w_i), cos(t w_i)],
  w_i = exp(-log(10000) i / (dim/2 - 1)), i = 0 .. dim/2 - 1."""
  if dim % 2 or dim < 4:
    raise ValueError(f"timestep embedding width must be even and >= 4, got {dim}")
  half = dim // 2
  freqs = tf.exp(-math.log(MAX_PERIOD) * tf.range(half, dtype=tf.float32) / (half - 1))
  args = tf.cast(t, tf.float32)[:, None] * freqs[None, :]
  return tf.concat([tf.sin(args), tf.cos(args)], axis=1)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """U-Net hyper-parameters (defaults: DDPM CIFAR-10, official code / paper Appendix B)."""

  channels: int = 128
  channel_mult: tuple[int, ...] = (1, 2, 2, 2)  # four levels on 32x32: 32, 16, 8, 4
  num_res_blocks: int = 2
  attention_resolutions: tuple[int, ...] = (16,)
  dropout: float = 0.1
  num_groups: int = 32


def _group_norm(groups: int, name: str):
  # Normalisation statistics in float32 under mixed precision.
  return keras.layers.GroupNormalization(
    groups=groups, epsilon=GROUP_NORM_EPSILON, dtype="float32", name=name
  )


class ResBlock(keras.layers.Layer):
  """h = conv(swish(GN(x))) + dense(swish(temb)); h = conv0(dropout(swish(GN(h)))); x' = skip(x) + h."""

  def __init__(self, *, out_channels: int, dropout: float, num_groups: int, **kwargs):
    super().__init__(**kwargs)
    self.out_channels = out_channels
    self.norm1 = _group_norm(num_groups, "norm1")
    self.conv1 = keras.layers.Conv2D(out_channels, 3, padding="same", name="conv1")
    self.temb_proj = keras.layers.Dense(out_channels, name="temb_proj")
    self.norm2 = _group_norm(num_groups, "norm2")
    self.dropout = common_layers.Dropout(dropout)  # the same mask per example on any replica count
    self.conv2 = keras.layers.Conv2D(
      out_channels, 3, padding="same", kernel_initializer="zeros", name="conv2"
    )
    self.skip = None

  def build(self, input_shape):
    if input_shape[-1] != self.out_channels:
      self.skip = keras.layers.Dense(self.out_channels, name="nin_shortcut")  # 1x1 "nin"

  def call(self, x, temb, training=False):
    h = self.conv1(tf.nn.silu(self.norm1(x, training=training)), training=training)
    h = h + self.temb_proj(tf.nn.silu(temb), training=training)[:, None, None, :]
    h = self.dropout(tf.nn.silu(self.norm2(h, training=training)), training=training)
    h = self.conv2(tf.cast(h, self.compute_dtype), training=training)
    return (x if self.skip is None else self.skip(x, training=training)) + h


class AttentionBlock(keras.layers.Layer):
  """Self-attention over all H*W positions: x + proj(softmax(q k^T / sqrt(C)) v), softmax in float32."""

  def __init__(self, *, num_groups: int, **kwargs):
    super().__init__(**kwargs)
    self.num_groups = num_groups
    self.norm = _group_norm(num_groups, "norm")

  def build(self, input_shape):
    c = input_shape[-1]
    self.q = keras.layers.Dense(c, name="q")
    self.k = keras.layers.Dense(c, name="k")
    self.v = keras.layers.Dense(c, name="v")
    self.proj_out = keras.layers.Dense(c, kernel_initializer="zeros", name="proj_out")

  def call(self, x, training=False):
    shape = tf.shape(x)
    c = x.shape[-1]
    h = tf.cast(self.norm(x, training=training), self.compute_dtype)
    h = tf.reshape(h, [shape[0], shape[1] * shape[2], c])  # [B, HW, C]
    q, k, v = (
      self.q(h, training=training),
      self.k(h, training=training),
      self.v(h, training=training),
    )
    logits = tf.matmul(q, k, transpose_b=True) * (c**-0.5)  # [B, HW, HW]
    weights = tf.cast(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), self.compute_dtype)
    out = self.proj_out(tf.matmul(weights, v), training=training)  # [B, HW, C]
    return x + tf.reshape(out, shape)


class ResAttnBlock(keras.layers.Layer):
  """A residual block, followed by self-attention when `attention` is set."""

  def __init__(
    self, *, out_channels: int, attention: bool, dropout: float, num_groups: int, **kwargs
  ):
    super().__init__(**kwargs)
    self.res = ResBlock(
      out_channels=out_channels, dropout=dropout, num_groups=num_groups, name="res"
    )
    self.attn = AttentionBlock(num_groups=num_groups, name="attn") if attention else None

  def call(self, x, temb, training=False):
    h = self.res(x, temb, training=training)
    return h if self.attn is None else self.attn(h, training=training)


class Downsample(keras.layers.Layer):
  """3x3 convolution with stride 2 (official `resamp_with_conv=True`)."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.conv = None

  def build(self, input_shape):
    self.conv = keras.layers.Conv2D(input_shape[-1], 3, strides=2, padding="same", name="conv")

  def call(self, x, temb=None, training=False):
    del temb
    return self.conv(x, training=training)


class Upsample(keras.layers.Layer):
  """Nearest-neighbour x2, then a 3x3 convolution."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.conv = None

  def build(self, input_shape):
    self.conv = keras.layers.Conv2D(input_shape[-1], 3, padding="same", name="conv")

  def call(self, x, temb=None, training=False):
    del temb
    return self.conv(keras.ops.repeat(keras.ops.repeat(x, 2, axis=1), 2, axis=2), training=training)


class UNet(keras.layers.Layer):
  """epsilon_theta(x_t, t): [B, S, S, C] (S = image_size, divisible by 2^(levels-1)) -> [B, S, S, C]."""

  def __init__(self, *, config: UNetConfig, image_size: int, out_channels: int, **kwargs):
    super().__init__(**kwargs)
    c = config
    levels = len(c.channel_mult)
    if image_size % 2 ** (levels - 1):
      raise ValueError(
        f"image size {image_size} is not divisible by 2^{levels - 1} "
        f"({levels} U-Net levels); pad the images"
      )
    self.config = config
    ch = c.channels
    block = lambda out, res, name: ResAttnBlock(
      out_channels=out,
      attention=res in c.attention_resolutions,
      dropout=c.dropout,
      num_groups=c.num_groups,
      name=name,
    )
    self.temb_dense0 = keras.layers.Dense(4 * ch, name="temb_dense0")
    self.temb_dense1 = keras.layers.Dense(4 * ch, name="temb_dense1")
    self.conv_in = keras.layers.Conv2D(ch, 3, padding="same", name="conv_in")
    down, up = [], []
    res = image_size
    for level, mult in enumerate(c.channel_mult):
      for b in range(c.num_res_blocks):
        down.append(block(ch * mult, res, f"down_{level}_block_{b}"))
      if level != levels - 1:
        down.append(Downsample(name=f"down_{level}_downsample"))
        res //= 2
    self.mid1 = ResAttnBlock(
      out_channels=ch * c.channel_mult[-1],
      attention=True,
      dropout=c.dropout,
      num_groups=c.num_groups,
      name="mid_1",
    )
    self.mid2 = ResAttnBlock(
      out_channels=ch * c.channel_mult[-1],
      attention=False,
      dropout=c.dropout,
      num_groups=c.num_groups,
      name="mid_2",
    )
    for level in reversed(range(levels)):
      for b in range(c.num_res_blocks + 1):  # one more: also consumes the level's input skip
        up.append(block(ch * c.channel_mult[level], res, f"up_{level}_block_{b}"))
      if level != 0:
        up.append(Upsample(name=f"up_{level}_upsample"))
        res *= 2
    self.down_blocks = down
    self.up_blocks = up
    self.norm_out = _group_norm(c.num_groups, "norm_out")
    self.conv_out = keras.layers.Conv2D(
      out_channels, 3, padding="same", kernel_initializer="zeros", name="conv_out"
    )

  def call(self, x, t, training=False):
    ch = self.config.channels
    temb = self.temb_dense0(timestep_embedding(t, ch), training=training)  # [B, 4ch]
    temb = self.temb_dense1(tf.nn.silu(temb), training=training)
    hs = [self.conv_in(x, training=training)]  # skips
    for layer in self.down_blocks:
      hs.append(layer(hs[-1], temb, training=training))
    h = self.mid2(self.mid1(hs[-1], temb, training=training), temb, training=training)
    for layer in self.up_blocks:
      if isinstance(layer, ResAttnBlock):
        h = tf.concat([h, tf.cast(hs.pop(), h.dtype)], axis=-1)
      h = layer(h, temb, training=training)
    assert not hs, "every skip connection must be consumed"
    h = tf.nn.silu(self.norm_out(h, training=training))
    return self.conv_out(tf.cast(h, self.compute_dtype), training=training)
