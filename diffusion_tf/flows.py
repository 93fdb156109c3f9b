"""The one RealNVP affine-coupling flow of the suite (Dinh, Sohl-Dickstein & Bengio, ICLR 2017).

Used by the image flow (`diffusion_tf.model.FlowModel`), the VAE with a flow prior
(`diffusion_tf.model.FlowPriorVAE`) and `vampprior_tf`'s flow prior.

One affine coupling with a binary mask b (1 = kept and conditioned on, 0 = transformed), written
in the generative direction z -> x (RealNVP eq. 9):

    x = b * z + (1 - b) * (z * exp(s(b * z)) + t(b * z)),   log|det dx/dz| = sum_(1-b) s(b * z)

with scale and translation nets of one hidden layer each and bounded log-scales
s = c * tanh(s_raw) (c a learned per-dimension factor initialised to 1; RealNVP official code,
tensorflow/models research/real_nvp: `scale * tanh(...)`). Each coupling is TFP's `tfb.RealNVP`
between two `tfb.Permute`s that move the mask-1 coordinates to the front, so any 0/1 mask
(alternating parity, checkerboard) is a plain TFP bijector; the couplings form one `tfb.Chain`.
The Keras layer owns the nets, so their variables are tracked, trained and checkpointed by Keras.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

LOG_2PI = math.log(2.0 * math.pi)


def checkerboard_masks(height: int, width: int, channels: int, num_couplings: int) -> np.ndarray:
  """RealNVP spatial checkerboard masks, flattened in [H, W, C] order: [num_couplings, H*W*C].

  mask_k[i, j, c] = (i + j + k) mod 2: the checkerboard flips every coupling so each pixel is
  transformed every other layer (RealNVP Sec. 3.4, Fig. 3 left).
  """
  if min(height, width, channels, num_couplings) < 1 or height * width < 2:
    raise ValueError(
      f"checkerboard masks need H*W >= 2 and positive sizes, got "
      f"{(height, width, channels, num_couplings)}"
    )
  i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  masks = [
    np.repeat(((i + j + k) % 2)[:, :, None], channels, axis=2).reshape(-1)
    for k in range(num_couplings)
  ]
  return np.stack(masks).astype(np.float32)


def alternating_masks(event_dim: int, num_couplings: int) -> np.ndarray:
  """Default masks [num_couplings, event_dim]: mask_k[d] = (d + k) mod 2 (index parity flips)."""
  if event_dim < 2:
    raise ValueError(f"a coupling flow needs event_dim >= 2, got {event_dim}")
  d = np.arange(event_dim)
  return np.stack([(d + k) % 2 for k in range(num_couplings)]).astype(np.float32)


class _ShiftAndLogScale(keras.layers.Layer):
  """Translation and bounded log-scale nets of one coupling: [B, k] -> ([B, D-k], [B, D-k]).

  Output layers start at zero, so every coupling starts as the identity (a common flow
  initialisation, e.g. Glow's zero-initialised last convolution).
  """

  def __init__(self, *, num_out: int, hidden_units: int, **kwargs):
    super().__init__(**kwargs)
    policy = self.dtype_policy
    self.num_out = num_out
    self.hidden_units = hidden_units
    self.shift_hidden = keras.layers.Dense(
      hidden_units, activation="relu", dtype=policy, name="shift_hidden"
    )
    self.shift_out = keras.layers.Dense(
      num_out, kernel_initializer="zeros", dtype=policy, name="shift_out"
    )
    self.scale_hidden = keras.layers.Dense(
      hidden_units, activation="relu", dtype=policy, name="scale_hidden"
    )
    self.scale_out = keras.layers.Dense(
      num_out, kernel_initializer="zeros", dtype=policy, name="scale_out"
    )

  def build(self, input_shape):
    for dense, shape in (
      (self.shift_hidden, input_shape),
      (self.scale_hidden, input_shape),
      (self.shift_out, (None, self.hidden_units)),
      (self.scale_out, (None, self.hidden_units)),
    ):
      dense.build(shape)
    # RealNVP official code: log-scale = scale * tanh(raw), `scale` learned, initialised to 1.
    self.log_scale_bound = self.add_weight(
      shape=(self.num_out,), initializer="ones", name="log_scale_bound"
    )

  def call(self, x0, training=False):
    shift = self.shift_out(self.shift_hidden(x0, training=training), training=training)
    raw = self.scale_out(self.scale_hidden(x0, training=training), training=training)
    log_scale = self.log_scale_bound * tf.tanh(raw)
    return shift, log_scale


class RealNVPFlow(keras.layers.Layer):
  """RealNVP affine coupling flow over vectors [B, event_dim] with a standard Normal base.

  Args:
    event_dim: D, the dimension of one example.
    num_couplings: number of affine coupling layers.
    hidden_units: width of the one hidden layer of each scale and each translation net.
    masks: [num_couplings, event_dim] of 0/1 (1 = kept, conditioned on; 0 = transformed). Default:
      `alternating_masks` (index parity, flipped every layer). For images use `checkerboard_masks`.
    **kwargs: Keras layer arguments. The flow computes in float32 unless `dtype` is given
      (log-determinants summed over hundreds of dimensions need float32 under mixed precision).

  `call(x)` returns `log_prob(x)`. Direction convention: `forward` maps base -> data, `inverse`
  maps data -> base; the data-side coupling (mask 0) is applied first by `inverse`.
  """

  def __init__(
    self,
    *,
    event_dim: int,
    num_couplings: int,
    hidden_units: int,
    masks: np.ndarray | None = None,
    **kwargs,
  ):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    if num_couplings < 1 or hidden_units < 1:
      raise ValueError(
        f"num_couplings and hidden_units must be >= 1, got {num_couplings}, {hidden_units}"
      )
    masks = alternating_masks(event_dim, num_couplings) if masks is None else np.asarray(masks)
    if masks.shape != (num_couplings, event_dim):
      raise ValueError(
        f"masks must have shape [num_couplings, event_dim] = "
        f"{[num_couplings, event_dim]}, got {list(masks.shape)}"
      )
    if not np.all((masks == 0) | (masks == 1)):
      raise ValueError("masks must hold only 0 and 1")
    kept = masks.sum(axis=1)
    if np.any(kept == 0) or np.any(kept == event_dim):
      raise ValueError("every mask needs at least one 1 (kept) and one 0 (transformed) entry")
    self.event_dim = event_dim
    self.num_couplings = num_couplings
    self.hidden_units = hidden_units
    self.masks = masks.astype(np.float32)  # NumPy constant, not a variable
    nets, couplings = [], []
    with keras.name_scope(self.name):
      for k, mask in enumerate(self.masks):
        net, coupling = self._coupling(k, mask, hidden_units)
        nets.append(net)
        couplings.append(coupling)
    self.nets = nets
    # Chain applies its last element first in `forward`: inverse (data -> base) runs coupling 0
    # first, forward (base -> data) runs coupling K-1 first.
    self._bijector = tfb.Chain(couplings, name="realnvp_flow")
    self.seed_generator = keras.random.SeedGenerator(0, name="flow_sampling")
    self.built = True

  def _coupling(self, k: int, mask: np.ndarray, hidden_units: int):
    """Coupling k: (its nets, Permute (kept first) -> tfb.RealNVP -> Permute back)."""
    kept_idx, moved_idx = np.flatnonzero(mask == 1), np.flatnonzero(mask == 0)
    perm = np.concatenate([kept_idx, moved_idx]).astype(np.int32)
    net = _ShiftAndLogScale(
      num_out=len(moved_idx),
      hidden_units=hidden_units,
      dtype=self.dtype_policy,
      name=f"coupling_{k}",
    )
    net.build((None, len(kept_idx)))
    coupling = tfb.RealNVP(
      num_masked=len(kept_idx), shift_and_log_scale_fn=self._net_fn(net), name=f"real_nvp_{k}"
    )
    # Permute(perm) gathers x[..., perm]: kept coordinates first, as tfb.RealNVP expects.
    return net, tfb.Chain(
      [tfb.Permute(np.argsort(perm).astype(np.int32)), coupling, tfb.Permute(perm)],
      name=f"coupling_{k}",
    )

  @staticmethod
  def _net_fn(net):
    def fn(x0, output_units, **unused_condition_kwargs):
      del output_units  # fixed by the net's construction
      return net(x0)

    return fn

  @property
  def bijector(self) -> tfb.Bijector:
    """The flow as a TFP bijector (forward = base -> data), e.g. for `tfd.TransformedDistribution`."""
    return self._bijector

  def _check(self, x, name):
    x = tf.cast(x, self.compute_dtype)
    if x.shape.rank != 2 or (x.shape[-1] is not None and x.shape[-1] != self.event_dim):
      raise ValueError(f"{name} must have shape [B, {self.event_dim}], got {x.shape}")
    return x

  def forward(self, z, training=False):
    """Base -> data: x = f(z) [B, D]."""
    del training  # no dropout / batch statistics in the couplings
    return self._bijector.forward(self._check(z, "z"))

  def inverse(self, x, training=False):
    """Data -> base: (z [B, D], log|det dz/dx| [B])."""
    del training
    x = self._check(x, "x")
    z = self._bijector.inverse(x)
    log_det = self._bijector.inverse_log_det_jacobian(x, event_ndims=1)
    return z, log_det

  def log_prob(self, x, training=False):
    """log p(x) = log N(f^-1(x); 0, I) + log|det d f^-1(x)/dx|  [B] (nats)."""
    z, log_det = self.inverse(x, training=training)
    return standard_normal_log_prob(z) + log_det

  def sample(self, num_samples: int, *, seed=None):
    """x = f(z), z ~ N(0, I): [num_samples, D]. `seed` None uses the layer's SeedGenerator."""
    z = keras.random.normal(
      (num_samples, self.event_dim),
      dtype=self.compute_dtype,
      seed=self.seed_generator if seed is None else seed,
    )
    return self.forward(z)

  def call(self, x, training=False):
    return self.log_prob(x, training=training)

  def get_config(self):
    config = super().get_config()
    config.update(
      event_dim=self.event_dim,
      num_couplings=self.num_couplings,
      hidden_units=self.hidden_units,
      masks=self.masks.tolist(),
    )
    return config


def standard_normal_log_prob(z):
  """log N(z; 0, I) summed over the last axis: -0.5 * sum(z^2 + log 2 pi)  [B]."""
  return -0.5 * tf.reduce_sum(tf.square(z) + LOG_2PI, axis=-1)


def logit_bijector(alpha: float) -> tfb.Bijector:
  """The RealNVP logit pre-transform as a bijector from logit space to [0, 1] (forward):

      x = (sigmoid(y) - alpha) / (1 - 2 alpha),   i.e.  y = logit(alpha + (1 - 2 alpha) x),

  so `inverse_log_det_jacobian(x)` = sum log((1 - 2 alpha) / (p (1 - p))), p = alpha + (1-2 alpha) x
  (RealNVP Sec. 4.1, alpha = 0.05; MAF uses 1e-6 on MNIST).
  """
  if not 0.0 <= alpha < 0.5:
    raise ValueError(f"logit alpha must be in [0, 0.5), got {alpha}")
  return tfb.Chain(
    [tfb.Scale(1.0 / (1.0 - 2.0 * alpha)), tfb.Shift(-alpha), tfb.Sigmoid()],
    name="logit_pre_transform",
  )
