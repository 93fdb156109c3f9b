"""NVAE building blocks (NVlabs/NVAE `neural_operations.py`, `neural_ar_operations.py`, `model.py`).

Every layer creates its weights in `__init__` from explicit channel counts (as the official PyTorch
modules do), so a freshly constructed model is fully built and its spectral power-iteration vectors
can be warm-started at once. `training` is passed explicitly to every sub-layer call: batch norm
and spectral normalisation behave differently in training.

Layout is NHWC; kernels are Keras-layout [kh, kw, C_in, C_out] (depthwise [kh, kw, C, 1]).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from nvae_tf import spectral

BN_MOMENTUM = 0.95  # NVAE official: PyTorch BatchNorm momentum 0.05 == Keras momentum 0.95
BN_EPSILON = 1e-5  # NVAE official: BN_EPS = 1e-5
WN_INIT_EPS = 1e-2  # NVAE official Conv2D: log_weight_norm = log(||w|| + 1e-2)
WN_EPS = 1e-5  # NVAE official normalize_weight: n * w / (||w|| + 1e-5)
RESIDUAL_SCALE = 0.1  # NVAE official Cell.forward: skip + 0.1 * cell(s)
SE_MIN_HIDDEN = 4  # NVAE official SE: max(C_out // 16, 4) hidden units
SE_REDUCTION = 16


def _torch_uniform(fan_in: int) -> keras.initializers.Initializer:
  """PyTorch's default conv/linear init (kaiming_uniform, a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return keras.initializers.RandomUniform(-bound, bound)


def batch_norm(channels: int) -> keras.layers.BatchNormalization:
  """A built BatchNormalization with the official momentum/epsilon (SyncBN across replicas)."""
  bn = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=True)
  bn.build((None, None, None, channels))
  return bn


def upsample_nearest(x):
  """x2 nearest-neighbour upsampling: [B, H, W, C] -> [B, 2H, 2W, C]."""
  return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


def _align_corners_matrix(size: int) -> np.ndarray:
  """[2 size, size] linear-interpolation weights of F.interpolate(x2, bilinear, align_corners=True)."""
  out = 2 * size
  weights = np.zeros((out, size), np.float32)
  for i in range(out):
    src = i * (size - 1) / (out - 1) if out > 1 else 0.0
    lo = int(math.floor(src))
    hi = min(lo + 1, size - 1)
    frac = src - lo
    weights[i, lo] += 1.0 - frac
    weights[i, hi] += frac
  return weights


def upsample_bilinear(x):
  """x2 bilinear upsampling with align_corners=True (the official skip of up cells); static H, W."""
  _, h, w, _ = x.shape
  rows = tf.constant(_align_corners_matrix(h), x.dtype)  # [2H, H]
  cols = tf.constant(_align_corners_matrix(w), x.dtype)  # [2W, W]
  x = tf.einsum("ih,bhwc->biwc", rows, x)
  return tf.einsum("jw,biwc->bijc", cols, x)


class Conv2D(keras.layers.Layer):
  """Convolution with NVAE's weight normalisation and optional mask / spectral normalisation.

  Weight normalisation (official `Conv2D`): w_hat = exp(log_n) * w / (||w|| + 1e-5) per output
  channel, log_n initialised to log(||w|| + 1e-2). A `mask` (autoregressive convs) multiplies w
  first. With `spectral_norm`, the kernel is divided by its top singular value, estimated by a
  persistent power iteration that advances in training calls only. PyTorch-style symmetric
  padding (k - 1) // 2, so stride-2 outputs align with the official code.
  """

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    depthwise: bool = False,
    use_bias: bool = True,
    weight_norm: bool = True,
    spectral_norm: bool = False,
    mask: np.ndarray | None = None,
    weight_norm_scale: float = 1.0,
    name=None,
  ):
    super().__init__(name=name)
    if depthwise and in_channels != out_channels:
      raise ValueError(
        f"a depthwise conv needs in == out channels, got {in_channels}, {out_channels}"
      )
    self.in_channels, self.out_channels = in_channels, out_channels
    self.kernel_size, self.stride, self.depthwise = kernel_size, stride, depthwise
    shape = (
      (kernel_size, kernel_size, in_channels, 1)
      if depthwise
      else (kernel_size, kernel_size, in_channels, out_channels)
    )
    fan_in = kernel_size * kernel_size * (1 if depthwise else in_channels)
    self.kernel = self.add_weight(
      shape=shape, initializer=_torch_uniform(fan_in), name="kernel", autocast=False
    )
    self.bias = (
      self.add_weight(
        shape=(out_channels,), initializer=_torch_uniform(fan_in), name="bias", autocast=False
      )
      if use_bias
      else None
    )
    self.mask = None if mask is None else tf.constant(mask, tf.float32)
    if mask is not None and tuple(mask.shape) != shape:
      raise ValueError(f"mask shape {mask.shape} != kernel shape {shape}")
    self.log_weight_norm = None
    if weight_norm:
      init = tf.math.log(self._channel_norm(self._masked_kernel()) + WN_INIT_EPS)
      init = init + math.log(weight_norm_scale)  # official AR ELUConv: += log(weight_init_coeff)
      self.log_weight_norm = self.add_weight(
        shape=(out_channels,),
        initializer=lambda shape, dtype=None: init,
        name="log_weight_norm",
        autocast=False,
      )
    self.spectral_state = None
    if spectral_norm:
      self.spectral_state = spectral.PowerIterationState(self.matrix()[None], name="spectral_state")
    self.built = True

  def _masked_kernel(self):
    kernel = tf.convert_to_tensor(self.kernel)
    return kernel if self.mask is None else kernel * self.mask

  def _channel_norm(self, kernel):
    """||w|| per output channel: [C_out]."""
    axes = (0, 1, 3) if self.depthwise else (0, 1, 2)
    return tf.sqrt(tf.reduce_sum(tf.square(kernel), axis=axes))

  def weight(self):
    """The weight-normalised (masked) kernel, float32, before spectral normalisation."""
    kernel = self._masked_kernel()
    if self.log_weight_norm is None:
      return kernel
    scale = tf.exp(self.log_weight_norm) / (self._channel_norm(kernel) + WN_EPS)  # [C_out]
    if self.depthwise:
      scale = scale[:, None]
    return kernel * scale

  def matrix(self):
    """The weight as the (C_out, kh*kw*C_in) matrix whose top singular value SR/SN use."""
    return spectral.kernel_matrix(self.weight(), depthwise=self.depthwise)

  # Depthwise convolutions at stride 1 pad inside the kernel instead of with a separate Pad op
  # (the same outputs and gradients: bit for bit on an AVX-512 Xeon; tests/nvae_tf/test_layers.py).
  # Regular convolutions keep the Pad op: padding inside changes their input gradient's rounding.
  pad_inside: bool = True

  def effective_kernel(self, training=False):
    """The kernel the convolution applies, float32: weight-normalised, masked and, with spectral
    normalisation, divided by sigma (in training after this call's power iteration)."""
    kernel = self.weight()
    if self.spectral_state is not None:
      w = spectral.kernel_matrix(kernel, depthwise=self.depthwise)[None]
      sigma = self.spectral_state.update(w) if training else self.spectral_state.sigma(w)
      kernel = kernel / sigma[0]
    return kernel

  def call(self, x, training=False):
    kernel = tf.cast(self.effective_kernel(training), x.dtype)
    pad = (self.kernel_size - 1) // 2
    if self.depthwise and self.stride == 1 and self.pad_inside:
      padding = "SAME"  # = symmetric (k - 1) / 2 at stride 1, padded inside the kernel
    else:
      padding = "VALID"
      if pad:
        x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    if self.depthwise:
      y = tf.nn.depthwise_conv2d(
        x, kernel, strides=[1, self.stride, self.stride, 1], padding=padding
      )
    else:
      y = tf.nn.conv2d(x, kernel, strides=self.stride, padding=padding)
    if self.bias is not None:
      y = y + tf.cast(self.bias, y.dtype)
    return y


class ELUConv(keras.layers.Layer):
  """ELU -> Conv2D (weight-normalised, with bias): the official samplers and image head."""

  def __init__(self, in_channels, out_channels, kernel_size, *, spectral_norm=False, name=None):
    super().__init__(name=name)
    self.conv = Conv2D(in_channels, out_channels, kernel_size, spectral_norm=spectral_norm)
    self.built = True

  def call(self, x, training=False):
    return self.conv(tf.nn.elu(x), training=training)


class BNSwishConv(keras.layers.Layer):
  """BN -> Swish -> Conv3x3 (official `BNSwishConv`, the op of `res_bnswish`)."""

  def __init__(self, in_channels, out_channels, *, stride=1, spectral_norm=False, name=None):
    super().__init__(name=name)
    self.bn = batch_norm(in_channels)
    self.conv = Conv2D(in_channels, out_channels, 3, stride=stride, spectral_norm=spectral_norm)
    self.built = True

  def call(self, x, training=False):
    return self.conv(tf.nn.silu(self.bn(x, training=training)), training=training)


class FactorizedReduce(keras.layers.Layer):
  """Skip of down cells: Swish, then four stride-2 1x1 convs on the four pixel phases, concatenated."""

  def __init__(self, in_channels, out_channels, *, spectral_norm=False, name=None):
    super().__init__(name=name)
    if out_channels % 2:
      raise ValueError(
        f"FactorizedReduce needs an even number of output channels, got {out_channels}"
      )
    quarter = out_channels // 4
    sizes = [quarter, quarter, quarter, out_channels - 3 * quarter]
    self.convs = [Conv2D(in_channels, c, 1, stride=2, spectral_norm=spectral_norm) for c in sizes]
    self.built = True

  def call(self, x, training=False):
    x = tf.nn.silu(x)
    phases = [x, x[:, 1:, 1:, :], x[:, :, 1:, :], x[:, 1:, :, :]]
    return tf.concat([conv(p, training=training) for conv, p in zip(self.convs, phases)], axis=-1)


class UpsampleSkip(keras.layers.Layer):
  """Skip of up cells: bilinear x2 (align_corners) -> 1x1 conv halving the channels (no bias)."""

  def __init__(self, in_channels, *, spectral_norm=False, name=None):
    super().__init__(name=name)
    self.conv = Conv2D(
      in_channels, in_channels // 2, 1, use_bias=False, spectral_norm=spectral_norm
    )
    self.built = True

  def call(self, x, training=False):
    if not training:
      # The 1x1 convolution (no bias) and the upsampling are linear maps on different axes, so
      # they commute: at inference the convolution runs on a quarter of the pixels and the
      # upsampling on half of the channels (the same function up to float32 rounding).
      return upsample_bilinear(self.conv(x, training=training))
    return self.conv(upsample_bilinear(x), training=training)


class SqueezeExcite(keras.layers.Layer):
  """x * sigmoid(W2 relu(W1 mean_hw(x))), max(C/16, 4) hidden units."""

  def __init__(self, channels, name=None):
    super().__init__(name=name)
    hidden = max(channels // SE_REDUCTION, SE_MIN_HIDDEN)
    self.fc1 = keras.layers.Dense(
      hidden,
      activation="relu",
      kernel_initializer=_torch_uniform(channels),
      bias_initializer=_torch_uniform(channels),
    )
    self.fc2 = keras.layers.Dense(
      channels,
      activation="sigmoid",
      kernel_initializer=_torch_uniform(hidden),
      bias_initializer=_torch_uniform(hidden),
    )
    self.fc1.build((None, channels))
    self.fc2.build((None, hidden))
    self.built = True

  def call(self, x, training=False):
    gate = self.fc2(self.fc1(tf.reduce_mean(x, axis=[1, 2])))  # [B, C]
    return x * tf.cast(gate, x.dtype)[:, None, None, :]


class InvertedResidual(keras.layers.Layer):
  """[nearest x2] -> BN -> 1x1 expand -> BN -> Swish -> depthwise k x k -> BN -> Swish -> 1x1 -> BN.

  Official `InvertedResidual` (`mconv_e6k5g0` / `mconv_e3k5g0`): the inner convs have neither weight
  normalisation nor bias.
  """

  def __init__(
    self,
    in_channels,
    out_channels,
    *,
    expansion: int,
    kernel_size: int = 5,
    upsample: bool = False,
    spectral_norm=False,
    name=None,
  ):
    super().__init__(name=name)
    hidden = int(round(in_channels * expansion))
    self.upsample = upsample
    opts = dict(use_bias=False, weight_norm=False, spectral_norm=spectral_norm)
    self.bn_in = batch_norm(in_channels)
    self.expand = Conv2D(in_channels, hidden, 1, **opts)
    self.bn_expand = batch_norm(hidden)
    self.depthwise = Conv2D(hidden, hidden, kernel_size, depthwise=True, **opts)
    self.bn_depthwise = batch_norm(hidden)
    self.project = Conv2D(hidden, out_channels, 1, **opts)
    self.bn_out = batch_norm(out_channels)
    self.built = True

  # Inference runs the folded form (`call_folded`); False runs the layer by layer form in both.
  fold_batch_norm: bool = True

  def call(self, x, training=False):
    if not training and self.fold_batch_norm:
      return self.call_folded(x)
    if self.upsample:
      x = upsample_nearest(x)
    x = self.bn_in(x, training=training)
    x = tf.nn.silu(self.bn_expand(self.expand(x, training=training), training=training))
    x = tf.nn.silu(self.bn_depthwise(self.depthwise(x, training=training), training=training))
    return self.bn_out(self.project(x, training=training), training=training)

  def call_folded(self, x):
    """Inference (BN with its moving statistics, an affine map a * x + c per channel) with every
    BN folded into the convolution beside it: three convolutions with bias, two Swish.

      expand(a_in * x + c_in) = (a_in W_e) x + c_in W_e              (1x1: no padding to cross)
      a * conv(x; W) + c = conv(x; a W) + c                          (BN after a convolution)

    The same function as the layer by layer form up to float32 rounding; the cpu preset's test
    NLL runs 1.61x faster with it (docs/nvae.md, bench/bench_log_weights.py). The depthwise
    convolution pads inside the kernel (SAME = symmetric (k - 1) / 2 at stride 1), not with a Pad.
    """
    if self.upsample:
      x = upsample_nearest(x)
    a_in, c_in = bn_affine(self.bn_in)
    a_e, c_e = bn_affine(self.bn_expand)
    a_d, c_d = bn_affine(self.bn_depthwise)
    a_o, c_o = bn_affine(self.bn_out)
    w_e = self.expand.effective_kernel()[0, 0]  # [C_in, H]
    w_e_folded = a_in[:, None] * w_e * a_e  # [C_in, H]
    b_e = tf.linalg.matvec(w_e, c_in, transpose_a=True) * a_e + c_e  # [H]
    w_d = self.depthwise.effective_kernel() * a_d[:, None]  # [k, k, H, 1]
    w_p = self.project.effective_kernel()[0, 0] * a_o  # [H, C_out]
    cast = lambda t: tf.cast(t, x.dtype)
    x = _swish(tf.nn.bias_add(tf.nn.conv2d(x, cast(w_e_folded[None, None]), 1, "VALID"), cast(b_e)))
    x = tf.nn.depthwise_conv2d(x, cast(w_d), strides=[1, 1, 1, 1], padding="SAME")
    x = _swish(tf.nn.bias_add(x, cast(c_d)))
    return tf.nn.bias_add(tf.nn.conv2d(x, cast(w_p[None, None]), 1, "VALID"), cast(c_o))


def _swish(x):
  """x * sigmoid(x), written out (`tf.nn.silu` wraps it in a custom gradient, which keeps
  TensorFlow's graph optimiser from fusing it into the convolution before it)."""
  return x * tf.sigmoid(x)


def bn_affine(bn: keras.layers.BatchNormalization):
  """Inference batch norm as y = a * x + c per channel, float32 ([C], [C]):
  a = gamma / sqrt(moving_variance + eps), c = beta - moving_mean * a."""
  a = tf.convert_to_tensor(bn.gamma) * tf.math.rsqrt(
    tf.convert_to_tensor(bn.moving_variance) + bn.epsilon
  )
  return a, tf.convert_to_tensor(bn.beta) - tf.convert_to_tensor(bn.moving_mean) * a


class Cell(keras.layers.Layer):
  """Residual cell: skip(x) + 0.1 * SE(ops(x)) (official `Cell.forward`)."""

  def __init__(self, ops, *, skip=None, se_channels: int | None = None, name=None):
    super().__init__(name=name)
    self.ops = list(ops)
    self.skip = skip
    self.se = SqueezeExcite(se_channels) if se_channels else None
    self.built = True

  def call(self, x, training=False):
    skip = x if self.skip is None else self.skip(x, training=training)
    for op in self.ops:
      x = op(x, training=training)
    if self.se is not None:
      x = self.se(x)
    return skip + RESIDUAL_SCALE * x


def residual_cell(
  in_channels: int,
  *,
  downsample: bool = False,
  use_se: bool = True,
  spectral_norm: bool = False,
  skip_spectral_norm: bool | None = None,
) -> Cell:
  """Encoder / preprocess cell (`res_bnswish` x 2); a down cell doubles channels and halves H, W.

  `spectral_norm` applies to the convs of the cell's ops, `skip_spectral_norm` (default: the same)
  to the factorized-reduce skip.
  """
  skip_sn = spectral_norm if skip_spectral_norm is None else skip_spectral_norm
  out = 2 * in_channels if downsample else in_channels
  ops = [
    BNSwishConv(in_channels, out, stride=2 if downsample else 1, spectral_norm=spectral_norm),
    BNSwishConv(out, out, spectral_norm=spectral_norm),
  ]
  skip = FactorizedReduce(in_channels, out, spectral_norm=skip_sn) if downsample else None
  return Cell(ops, skip=skip, se_channels=out if use_se else None)


def inverted_residual_cell(
  in_channels: int,
  *,
  expansion: int,
  upsample: bool = False,
  use_se: bool = True,
  spectral_norm: bool = False,
  skip_spectral_norm: bool | None = None,
) -> Cell:
  """Decoder / postprocess cell (`mconv_e{expansion}k5g0`); an up cell halves channels, doubles H, W.

  `spectral_norm` applies to the convs of the cell's op, `skip_spectral_norm` (default: the same)
  to the upsampling skip's 1x1 conv.
  """
  skip_sn = spectral_norm if skip_spectral_norm is None else skip_spectral_norm
  out = in_channels // 2 if upsample else in_channels
  ops = [
    InvertedResidual(
      in_channels, out, expansion=expansion, upsample=upsample, spectral_norm=spectral_norm
    )
  ]
  skip = UpsampleSkip(in_channels, spectral_norm=skip_sn) if upsample else None
  return Cell(ops, skip=skip, se_channels=out if use_se else None)


class EncoderCombiner(keras.layers.Layer):
  """x_enc + Conv1x1(s_dec): the encoder feature for a group's posterior (official `EncCombinerCell`)."""

  def __init__(self, enc_channels, dec_channels, *, spectral_norm=False, name=None):
    super().__init__(name=name)
    self.conv = Conv2D(dec_channels, enc_channels, 1, spectral_norm=spectral_norm)
    self.built = True

  def call(self, x_enc, s_dec, training=False):
    return x_enc + self.conv(s_dec, training=training)


class DecoderCombiner(keras.layers.Layer):
  """Conv1x1(concat(s, z)): injects a group's latent into the decoder (official `DecCombinerCell`)."""

  def __init__(self, channels, latent_channels, *, spectral_norm=False, name=None):
    super().__init__(name=name)
    self.conv = Conv2D(channels + latent_channels, channels, 1, spectral_norm=spectral_norm)
    self.built = True

  def call(self, s, z, training=False):
    return self.conv(tf.concat([s, tf.cast(z, s.dtype)], axis=-1), training=training)


# ----------------------------------------------------------------------------- IAF cells


def autoregressive_mask(
  kernel_size: int,
  in_channels: int,
  out_channels: int,
  *,
  depthwise: bool = False,
  zero_diagonal: bool,
  mirror: bool,
) -> np.ndarray:
  """Mask of an autoregressive conv in Keras layout [k, k, C_in, C_out] (depthwise [k, k, C, 1]).

  Order: raster order over pixels (rows, then columns), then channels within a pixel. Taps strictly
  before the centre (rows above; same row, left) see every channel; at the centre, output channel
  block i sees input channel blocks < i (`zero_diagonal`) or <= i. A depthwise conv sees its own
  channel at the centre unless `zero_diagonal`. `mirror` reverses the spatial order.
  (Official `create_conv_mask` / `channel_mask`.)
  """
  k, m = kernel_size, (kernel_size - 1) // 2
  if depthwise and in_channels != out_channels:
    raise ValueError("a depthwise mask needs in == out channels")
  shape = (k, k, in_channels, 1) if depthwise else (k, k, in_channels, out_channels)
  mask = np.zeros(shape, np.float32)
  mask[:m, :, :, :] = 1.0  # rows above the centre
  mask[m, :m, :, :] = 1.0  # same row, left of the centre
  centre = np.ones(shape[2:], np.float32)
  if depthwise:
    centre[:] = 0.0 if zero_diagonal else 1.0
  elif out_channels >= in_channels:
    ratio = out_channels // in_channels
    for i in range(in_channels):
      outs = slice(i * ratio, (i + 1) * ratio)
      centre[i + 1 :, outs] = 0.0
      if zero_diagonal:
        centre[i, outs] = 0.0
  else:
    ratio = in_channels // out_channels
    for i in range(out_channels):
      centre[(i + 1) * ratio :, i] = 0.0
      if zero_diagonal:
        centre[i * ratio : (i + 1) * ratio, i] = 0.0
  mask[m, m] = centre
  if mirror:
    mask = np.ascontiguousarray(mask[::-1, ::-1])
  return mask


IAF_EXPANSION = 6  # NVAE official CellAR: ARInvertedResidual(ex=6)
IAF_KERNEL_SIZE = 5  # official ARInvertedResidual default k=5
IAF_MU_INIT_SCALE = 0.1  # official: "0.1 helps bring mu closer to 0 initially"


class AutoregressiveShift(keras.layers.Layer):
  """One IAF cell (official `CellAR`): z' = z - mu(z), mu autoregressive, so log|det dz'/dz| = 0.

  mu = MaskedConv1x1(ELU(ELU(MaskedDepthwise5x5(ELU(MaskedConv3x3(z)))))); the first conv has a
  zero diagonal, so mu at (pixel p, channel i) depends only on z before it in the order of
  `autoregressive_mask`. As in the official code the encoder context is not used.
  """

  def __init__(self, latent_channels: int, *, mirror: bool, spectral_norm=False, name=None):
    super().__init__(name=name)
    hidden = latent_channels * IAF_EXPANSION
    opts = dict(use_bias=False, spectral_norm=spectral_norm)
    self.conv_in = Conv2D(
      latent_channels,
      hidden,
      3,
      mask=autoregressive_mask(3, latent_channels, hidden, zero_diagonal=True, mirror=mirror),
      **opts,
    )
    self.conv_dw = Conv2D(
      hidden,
      hidden,
      IAF_KERNEL_SIZE,
      depthwise=True,
      mask=autoregressive_mask(
        IAF_KERNEL_SIZE, hidden, hidden, depthwise=True, zero_diagonal=False, mirror=mirror
      ),
      **opts,
    )
    self.conv_mu = Conv2D(
      hidden,
      latent_channels,
      1,
      spectral_norm=spectral_norm,
      weight_norm_scale=IAF_MU_INIT_SCALE,
      mask=autoregressive_mask(1, hidden, latent_channels, zero_diagonal=False, mirror=mirror),
    )
    self.built = True

  def call(self, z, training=False):
    h = tf.nn.elu(self.conv_in(z, training=training))
    h = tf.nn.elu(self.conv_dw(h, training=training))
    mu = self.conv_mu(tf.nn.elu(h), training=training)
    return z - mu, tf.zeros_like(z)


class PairedAutoregressiveFlow(keras.layers.Layer):
  """Two IAF cells, the second in mirrored order (official `PairedCellAR`). Returns (z', log_det)."""

  def __init__(self, latent_channels: int, *, spectral_norm=False, name=None):
    super().__init__(name=name)
    self.forward_cell = AutoregressiveShift(
      latent_channels, mirror=False, spectral_norm=spectral_norm
    )
    self.mirrored_cell = AutoregressiveShift(
      latent_channels, mirror=True, spectral_norm=spectral_norm
    )
    self.built = True

  def call(self, z, training=False):
    z, log_det1 = self.forward_cell(z, training=training)
    z, log_det2 = self.mirrored_cell(z, training=training)
    return z, log_det1 + log_det2
