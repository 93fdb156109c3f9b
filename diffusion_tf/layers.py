"""Building blocks of the diffusion_tf models: the DDPM U-Net and its blocks, and MLPs."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
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


def group_norm(x, gamma, beta, *, groups: int, epsilon: float):
  """GroupNorm (Wu & He 2018, eq. 1-3) of x [B, H, W, C] over groups of C / groups channels, with
  per-channel gamma, beta [C], and its closed-form backward pass.

  Forward: y = gamma (x - mu) r + beta, r = 1 / sqrt(sigma^2 + epsilon), mu and sigma^2 the mean and
  (biased) variance of each example's group over H, W and its channels, applied as
  y = x s + (beta - mu s), s = gamma r. Backward, with N = H W C / groups and xhat = (x - mu) r:
    dbeta = sum dy, dgamma = sum dy xhat (over B, H, W),
    dx = r (gamma dy - mean_g(gamma dy) - xhat mean_g(gamma dy xhat)),
  where mean_g(.) = (1 / N) sum over the group; both means come from the per-(example, channel)
  sums S1 = sum_hw dy and S2 = sum_hw dy x, so dx = s dy + a x + c with a, c per (example, group).
  """

  @tf.custom_gradient
  def forward(x, gamma, beta):
    c = x.shape[-1]
    shape = tf.shape(x)
    cg = c // groups
    xr = tf.reshape(x, [shape[0], -1, groups, cg])  # [B, HW, G, C/G]
    mean = tf.reduce_mean(xr, axis=[1, 3], keepdims=True)  # [B, 1, G, 1]
    variance = tf.reduce_mean(tf.math.squared_difference(xr, mean), axis=[1, 3], keepdims=True)
    inv = tf.math.rsqrt(variance + epsilon)
    g = tf.reshape(gamma, [groups, cg])
    scale = inv * g  # [B, 1, G, C/G]
    y = tf.reshape(xr * scale + (tf.reshape(beta, [groups, cg]) - mean * scale), shape)

    def backward(dy):
      dyr = tf.reshape(dy, [shape[0], -1, groups, cg])
      s1 = tf.reduce_sum(dyr, axis=1, keepdims=True)  # [B, 1, G, C/G]
      s1_xhat = (tf.reduce_sum(dyr * xr, axis=1, keepdims=True) - mean * s1) * inv  # sum dy xhat
      n = tf.cast(tf.shape(xr)[1] * cg, x.dtype)
      mean_dxhat = tf.reduce_sum(g * s1, axis=3, keepdims=True) / n  # [B, 1, G, 1]
      mean_dxhat_xhat = tf.reduce_sum(g * s1_xhat, axis=3, keepdims=True) / n
      a = -inv * inv * mean_dxhat_xhat
      offset = inv * (inv * mean_dxhat_xhat * mean - mean_dxhat)
      dx = tf.reshape(dyr * scale + (xr * a + offset), shape)
      return (
        dx,
        tf.reshape(tf.reduce_sum(s1_xhat, axis=0), [c]),
        tf.reshape(tf.reduce_sum(s1, axis=0), [c]),
      )

    return y, backward

  return forward(x, gamma, beta)


class GroupNorm(keras.layers.GroupNormalization):
  """keras.layers.GroupNormalization (the same variables) on [B, H, W, C] with `group_norm`'s
  closed-form backward pass (fewer whole-tensor operations than automatic differentiation of the
  Keras layer); other ranks or axes take the Keras layer's own call."""

  def call(self, inputs):
    if inputs.shape.rank != 4 or self.axis not in (-1, 3) or not (self.scale and self.center):
      return super().call(inputs)
    x = tf.cast(inputs, tf.float32)
    y = group_norm(
      x,
      tf.cast(self.gamma, tf.float32),
      tf.cast(self.beta, tf.float32),
      groups=self.groups,
      epsilon=self.epsilon,
    )
    return tf.cast(y, self.compute_dtype)


def _group_norm(groups: int, name: str):
  # Normalisation statistics in float32 under mixed precision.
  return GroupNorm(groups=groups, epsilon=GROUP_NORM_EPSILON, dtype="float32", name=name)


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


# Source tap (p, q) of phase (a, b) that each tap (u, v) of a 3x3 kernel lands on once the input is
# repeated 2x2: output pixel (2i + a, 2j + b) reads upsampled rows 2i + a + u - 1, i.e. source rows
# i - 1 + (a + u + 1) // 2, so tap u joins 2x2 tap p = (a + u + 1) // 2 - a of phase a (as for
# columns). Flattened: [phase (a, b), p, q] x [u, v], a 0/1 matrix.
def _phase_matrix():
  m = np.zeros([2, 2, 2, 2, 3, 3], np.float32)
  for a in (0, 1):
    for b in (0, 1):
      for u in range(3):
        for v in range(3):
          m[a, b, (a + u + 1) // 2 - a, (b + v + 1) // 2 - b, u, v] = 1.0
  return m.reshape(16, 9)


_UPSAMPLE_PHASES = _phase_matrix()
# Below this many input pixels per image the four 2x2 convolutions cost more than the plain 3x3
# on the repeated input (one core, batch 8, 256 channels: 16x16 input 180 ms vs 272 ms forward +
# backward, 8x8 65 vs 66 ms, 4x4 33 vs 17 ms).
UPSAMPLE_PHASES_MIN_PIXELS = 256


def upsample_conv(x, kernel, bias):
  """conv3x3_same(repeat2x2(x)) + bias as four 2x2 convolutions on x, one per output phase.

  Output pixel (2i + a, 2j + b) of a 3x3 convolution of the nearest-neighbour upsampled input only
  reads source pixels (i - 1 + a .. i + a, j - 1 + b .. j + b), with the 3x3 taps summed into 2x2
  (e.g. phase a = 0 has rows [w_0, w_1 + w_2]); the zero padding of the upsampled image is the
  zero padding of the source. 16 instead of 36 multiply-adds per source pixel and channel pair.
  x [B, H, W, C], kernel [3, 3, C, C'], bias [C'] -> [B, 2H, 2W, C'].
  """
  h, w, c = x.shape[1], x.shape[2], x.shape[3]
  out_channels = kernel.shape[-1]
  phases = tf.matmul(
    tf.constant(_UPSAMPLE_PHASES, kernel.dtype), tf.reshape(kernel, [9, c * out_channels])
  )
  phases = tf.reshape(phases, [4, 2, 2, c, out_channels])
  padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
  outs = [
    tf.nn.conv2d(padded[:, a : a + h + 1, b : b + w + 1], phases[2 * a + b], 1, "VALID")
    for a in (0, 1)
    for b in (0, 1)
  ]
  # Channel block 2a + b of pixel (i, j) goes to (2i + a, 2j + b).
  return tf.nn.depth_to_space(tf.concat(outs, axis=-1), 2) + bias


class Upsample(keras.layers.Layer):
  """Nearest-neighbour x2, then a 3x3 convolution (as `upsample_conv` for inputs of at least
  `UPSAMPLE_PHASES_MIN_PIXELS` pixels: the same function in fewer operations)."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.conv = None

  def build(self, input_shape):
    self.conv = keras.layers.Conv2D(input_shape[-1], 3, padding="same", name="conv")
    self.conv.build((None, None, None, input_shape[-1]))  # its variables, also when unused

  def call(self, x, temb=None, training=False):
    del temb
    if x.shape[1] is not None and x.shape[2] is not None:
      if x.shape[1] * x.shape[2] >= UPSAMPLE_PHASES_MIN_PIXELS:
        x = tf.cast(x, self.compute_dtype)
        kernel = tf.cast(self.conv.kernel, self.compute_dtype)
        return upsample_conv(x, kernel, tf.cast(self.conv.bias, self.compute_dtype))
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
