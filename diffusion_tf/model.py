"""The three models of diffusion_tf: DDPM (U-Net + GaussianDiffusion), the RealNVP image flow and
the VAE with a RealNVP prior. Each takes images float32 [B, H, W, C] in [0, 1] (8-bit values) and
maps them to its own range at its boundary; losses come back as small dataclasses, in nats per
example unless stated.
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from common_tf import random as common_random
from diffusion_tf import distributions, flows
from diffusion_tf.diffusion import GaussianDiffusion, VariationalBound
from diffusion_tf.layers import UNet, UNetConfig
from evaluation import likelihood

tfd = tfp.distributions

# DDPM paper Appendix B: EMA decay 0.9999 of the weights, used for sampling and evaluation.
DDPM_EMA_DECAY = 0.9999
# MAF (Papamakarios et al. 2017, Sec. 4.2): logit pre-transform alpha = 1e-6 on MNIST
# (RealNVP uses 0.05 on CIFAR-10).
MNIST_LOGIT_ALPHA = 1e-6


@contextlib.contextmanager
def ema_weights(optimizer: keras.optimizers.Optimizer, variables):
  """Temporarily loads the optimizer's EMA of `variables` (a Keras optimizer built with
  `use_ema=True, ema_momentum=decay`, which updates the averages after every step inside the
  compiled train step and is checkpointed with the optimizer); restores the raw weights on exit.

  Before the first step there is no average yet and the weights are left as they are.
  """
  inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
  if not inner.use_ema:
    raise ValueError("ema_weights needs an optimizer created with use_ema=True")
  variables = list(variables)
  if int(optimizer.iterations.numpy()) == 0:
    yield
    return
  backup = [v.numpy() for v in variables]
  optimizer.finalize_variable_values(variables)
  try:
    yield
  finally:
    for v, value in zip(variables, backup):
      v.assign(value)


# ============================================================================= DDPM


@dataclasses.dataclass(frozen=True)
class DDPMLoss:
  """simple: [B] mean-over-pixels epsilon MSE (DDPM eq. 14); t: [B] the sampled timesteps."""

  simple: tf.Tensor
  t: tf.Tensor


class DDPM(keras.Model):
  """Denoising diffusion probabilistic model with an epsilon-predicting U-Net.

  Images [B, H, W, C] in [0, 1] (8-bit values k / 255) are mapped to k / 127.5 - 1 in [-1, 1], as
  the official code trains (tpu_utils.normalize_data, no noise added), and padded with the
  background value -1 to `padded_size` (MNIST 28 -> 32: four U-Net levels need a size divisible
  by 8). Samples are cropped back to [H, W].

  Args:
    image_shape: [H, W, C] of the data.
    unet: U-Net hyper-parameters.
    diffusion: the schedule and reverse-process variance (`GaussianDiffusion.linear()`: DDPM).
    padded_size: side of the square the U-Net sees (>= H, W).
    jit_sampling: compile the samplers and the bound with XLA.
    seed: seed of the model's training-noise generator (t, epsilon, dequantization).
    dequantize: train on uniformly dequantized (k + u) / 256 instead (not the official protocol;
      the bound is still scored on the 8-bit grid).
    random_flip: flip each training image left-right with probability 1/2 (official
      `tf.image.random_flip_left_right` under `randflip=1`, the default of run_cifar.py,
      run_celebahq.py and run_lsun.py); off by default (digits are not mirror-symmetric).
  """

  def __init__(
    self,
    *,
    image_shape: tuple[int, int, int],
    unet: UNetConfig,
    diffusion: GaussianDiffusion,
    padded_size: int = 32,
    jit_sampling: bool = True,
    seed: int = 0,
    dequantize: bool = False,
    random_flip: bool = False,
    **kwargs,
  ):
    super().__init__(**kwargs)
    h, w, c = image_shape
    self.dequantize = bool(dequantize)
    self.random_flip = bool(random_flip)
    if padded_size < max(h, w):
      raise ValueError(f"padded_size {padded_size} is smaller than the image {image_shape}")
    self.image_shape = tuple(image_shape)
    self.padded_size = padded_size
    self.diffusion = diffusion  # NumPy float64 tables: constants, not variables
    self.unet = UNet(config=unet, image_size=padded_size, out_channels=c, name="unet")
    self.seed_generator = keras.random.SeedGenerator(seed, name="ddpm_noise")
    self._pads = [
      [0, 0],
      [(padded_size - h) // 2, padded_size - h - (padded_size - h) // 2],
      [(padded_size - w) // 2, padded_size - w - (padded_size - w) // 2],
      [0, 0],
    ]
    self.unet(tf.zeros([1, padded_size, padded_size, c]), tf.zeros([1], tf.int32))  # build
    self._ancestral = tf.function(self._ancestral_impl, jit_compile=jit_sampling)
    self._ddim = tf.function(self._ddim_impl, jit_compile=jit_sampling)
    self._bound = tf.function(self._bound_impl, jit_compile=jit_sampling)

  @property
  def padded_shape(self) -> tuple[int, int, int]:
    return (self.padded_size, self.padded_size, self.image_shape[2])

  # --------------------------------------------------------------------------- boundary

  def to_model_space(self, x01):
    """[0, 1] [B, H, W, C] -> [-1, 1] padded with -1: [B, S, S, C]."""
    return tf.pad(2.0 * tf.cast(x01, tf.float32) - 1.0, self._pads, constant_values=-1.0)

  def to_image_space(self, x):
    """[-1, 1] [B, S, S, C] -> the [H, W] crop in [0, 1]."""
    (_, _), (top, _), (left, _), _ = self._pads
    h, w, _ = self.image_shape
    return tf.clip_by_value((x[:, top : top + h, left : left + w, :] + 1.0) / 2.0, 0.0, 1.0)

  def eps(self, x_t, t, training=False):
    """epsilon_theta(x_t, t) in float32 [B, S, S, C]."""
    return tf.cast(self.unet(x_t, t, training=training), tf.float32)

  def call(self, inputs, training=False):
    """inputs = (x_t [B, S, S, C] in model space, t [B]) -> predicted noise."""
    x_t, t = inputs
    return self.eps(x_t, t, training=training)

  # --------------------------------------------------------------------------- training

  def training_data(self, x01):
    """x_0 for training, [B, S, S, C]: k / 127.5 - 1 (official), or (k + u) / 256 mapped to [-1, 1]
    with `dequantize`; each image mirrored left-right with probability 1/2 with `random_flip`
    (before padding, so an asymmetric pad does not move the image)."""
    if self.random_flip:
      # common_tf.random: each example gets one device's draw on any number of replicas.
      flip = common_random.uniform([tf.shape(x01)[0]], seed=self.seed_generator) < 0.5
      x01 = tf.where(flip[:, None, None, None], tf.reverse(x01, axis=[2]), x01)
    if self.dequantize:
      return self.to_model_space(distributions.uniform_dequantize(x01, seed=self.seed_generator))
    return self.to_model_space(tf.round(tf.cast(x01, tf.float32) * 255.0) / 255.0)

  def loss_terms(self, x01, training=True) -> DDPMLoss:
    """L_simple (DDPM eq. 14): t ~ U{0..T-1}, eps ~ N(0, I) from the model's seed generator."""
    x0 = self.training_data(x01)
    batch = tf.shape(x0)[0]
    # common_tf.random: each example gets one device's t and eps on any number of replicas.
    t = common_random.randint(
      [batch],
      seed=self.seed_generator,
      minval=0,
      maxval=self.diffusion.num_timesteps,
      dtype="int32",
    )
    noise = common_random.normal(tf.shape(x0), seed=self.seed_generator)
    simple = self.diffusion.simple_loss(
      lambda x, tt: self.eps(x, tt, training=training), x0, t, noise
    )
    return DDPMLoss(simple=simple, t=t)

  # --------------------------------------------------------------------------- sampling

  def _eps_fn(self, x, t):
    return self.eps(x, t, training=False)

  def _ancestral_impl(self, num_samples: int, seed):
    shape = (num_samples,) + self.padded_shape
    return self.to_image_space(self.diffusion.p_sample_loop(self._eps_fn, shape, seed=seed))

  def _ddim_impl(
    self, num_samples: int, seed, num_steps: int, eta: float, spacing: str, clip_denoised: bool
  ):
    shape = (num_samples,) + self.padded_shape
    return self.to_image_space(
      self.diffusion.ddim_sample_loop(
        self._eps_fn,
        shape,
        seed=seed,
        num_steps=num_steps,
        eta=eta,
        spacing=spacing,
        clip_denoised=clip_denoised,
      )
    )

  def sample(self, num_samples: int, *, seed: int = 0):
    """Ancestral sampling, all T steps in one compiled while loop: [N, H, W, C] in [0, 1]."""
    return self._ancestral(num_samples, tf.constant([seed, 0], tf.int32))

  def sample_ddim(
    self,
    num_samples: int,
    *,
    seed: int = 0,
    num_steps: int = 50,
    eta: float = 0.0,
    spacing: str = "uniform",
    clip_denoised: bool = False,
  ):
    """DDIM over `diffusion.ddim_timesteps(num_steps, spacing=spacing)` (one compiled while loop):
    [N, H, W, C] in [0, 1]. Defaults as the official DDIM code (uniform skip, x0_hat not clipped)."""
    return self._ddim(
      num_samples,
      tf.constant([seed, 0], tf.int32),
      num_steps,
      float(eta),
      spacing,
      bool(clip_denoised),
    )

  # --------------------------------------------------------------------------- likelihood

  def _bound_impl(self, x01, seed, clip_denoised: bool):
    x0 = self.to_model_space(tf.round(tf.cast(x01, tf.float32) * 255.0) / 255.0)
    vb = self.diffusion.variational_bound(self._eps_fn, x0, seed=seed, clip_denoised=clip_denoised)
    return vb.total, vb.prior, vb.diffusion, vb.decoder

  def variational_bound(
    self, x01, *, seed: int = 0, clip_denoised: bool = True
  ) -> VariationalBound:
    """The negative VLB (all T terms) of the padded 8-bit images, nats [B]. Since the padding is
    known, it also bounds -log p(crop | padding) of the H*W*C real pixels. `clip_denoised`: as the
    official `calc_bpd_loop` (True) or the unclipped bound (False)."""
    total, prior, kl, decoder = self._bound(
      x01, tf.constant([seed, 1], tf.int32), bool(clip_denoised)
    )
    return VariationalBound(total=total, prior=prior, diffusion=kl, decoder=decoder)


# ============================================================================= RealNVP image flow


@dataclasses.dataclass(frozen=True)
class FlowDensity:
  """log p(x) of x in [0, 1]^D = log p_flow(logit-space y) + log|dy/dx|, nats [B]."""

  log_prob: tf.Tensor
  log_prob_logit_space: tf.Tensor
  logit_log_det: tf.Tensor


@dataclasses.dataclass(frozen=True)
class FlowLoss:
  """nll: -log p(dequantized x) in nats [B] (density on [0, 1]^D); bits_per_dim: for 8-bit data,
  nll / (D ln 2) + 8 [B]."""

  nll: tf.Tensor
  bits_per_dim: tf.Tensor


class FlowModel(keras.Model):
  """RealNVP density model of images: uniform dequantization, logit pre-transform, coupling flow.

  Args:
    image_shape: [H, W, C].
    num_couplings, hidden_units: the flow (RealNVP seed configuration: 20 couplings, 256 units).
    logit_alpha: alpha of the logit pre-transform (its log-Jacobian is part of log p(x)).
    seed: seed of the dequantization-noise generator.
  """

  def __init__(
    self,
    *,
    image_shape: tuple[int, int, int],
    num_couplings: int = 20,
    hidden_units: int = 256,
    logit_alpha: float = MNIST_LOGIT_ALPHA,
    seed: int = 0,
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.image_shape = tuple(image_shape)
    self.num_dims = int(np.prod(image_shape))
    self.flow = flows.RealNVPFlow(
      event_dim=self.num_dims,
      num_couplings=num_couplings,
      hidden_units=hidden_units,
      masks=flows.checkerboard_masks(*image_shape, num_couplings),
      name="realnvp",
    )
    self.pre_transform = flows.logit_bijector(logit_alpha)
    self.seed_generator = keras.random.SeedGenerator(seed, name="dequantization")

  def log_prob(self, x, training=False) -> FlowDensity:
    """Density of continuous x in [0, 1) [B, H, W, C] (dequantized data)."""
    x = tf.reshape(tf.cast(x, tf.float32), [-1, self.num_dims])
    y = self.pre_transform.inverse(x)
    logit_log_det = self.pre_transform.inverse_log_det_jacobian(x, event_ndims=1)
    log_prob_y = self.flow.log_prob(y, training=training)
    return FlowDensity(
      log_prob=log_prob_y + logit_log_det,
      log_prob_logit_space=log_prob_y,
      logit_log_det=logit_log_det,
    )

  def loss_terms(self, x01, training=True) -> FlowLoss:
    density = self.log_prob(
      distributions.uniform_dequantize(x01, seed=self.seed_generator), training=training
    )
    nll = -density.log_prob
    return FlowLoss(
      nll=nll, bits_per_dim=likelihood.bits_per_dim(nll, self.num_dims, offset_bits=8.0)
    )

  def call(self, x01, training=False):
    return self.loss_terms(x01, training=training).nll

  def sample(self, num_samples: int, *, seed=None):
    """x = sigmoid-side of the flow's samples, [N, H, W, C] clipped to [0, 1]."""
    y = self.flow.sample(num_samples, seed=seed)
    x = self.pre_transform.forward(y)
    return tf.clip_by_value(tf.reshape(x, (num_samples,) + self.image_shape), 0.0, 1.0)


# ============================================================================= VAE with flow prior


@dataclasses.dataclass(frozen=True)
class VAELoss:
  """One-sample ELBO pieces in nats [B]: negative_elbo = reconstruction + kl."""

  negative_elbo: tf.Tensor
  reconstruction: tf.Tensor  # -log p(x | z), continuous Bernoulli
  kl: tf.Tensor  # log q(z | x) - log p_flow(z), single-sample estimate


class FlowPriorVAE(keras.Model):
  """VAE with a Gaussian encoder, a continuous Bernoulli decoder (Loaiza-Ganem & Cunningham 2019,
  for grey data in [0, 1]) and a RealNVP prior p(z) (the shared `flows.RealNVPFlow`).

  Trained on uniformly dequantized 8-bit data, so -log p(x) in bits/dim + 8 bounds the discrete NLL.
  """

  def __init__(
    self,
    *,
    image_shape: tuple[int, int, int],
    latent_dim: int = 32,
    hidden_units: tuple[int, ...] = (512, 256),
    prior_couplings: int = 8,
    prior_hidden_units: int = 256,
    seed: int = 0,
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.image_shape = tuple(image_shape)
    self.num_dims = int(np.prod(image_shape))
    self.latent_dim = latent_dim
    self.encoder = keras.Sequential(
      [keras.Input((self.num_dims,))]
      + [keras.layers.Dense(u, activation="relu") for u in hidden_units]
      + [keras.layers.Dense(2 * latent_dim)],
      name="encoder",
    )
    self.decoder = keras.Sequential(
      [keras.Input((latent_dim,))]
      + [keras.layers.Dense(u, activation="relu") for u in reversed(hidden_units)]
      + [keras.layers.Dense(self.num_dims)],
      name="decoder",
    )
    self.prior = flows.RealNVPFlow(
      event_dim=latent_dim,
      num_couplings=prior_couplings,
      hidden_units=prior_hidden_units,
      name="flow_prior",
    )
    self.seed_generator = keras.random.SeedGenerator(seed, name="vae_noise")

  def encode(self, x, training=False) -> tfd.Distribution:
    """q(z | x) = N(mu(x), diag sigma(x)^2), batch [B], event [L]."""
    h = tf.cast(self.encoder(tf.reshape(x, [-1, self.num_dims]), training=training), tf.float32)
    loc, log_var = tf.split(h, 2, axis=-1)
    return tfd.MultivariateNormalDiag(loc=loc, scale_diag=tf.exp(0.5 * log_var))

  def decode(self, z, training=False) -> tfd.Distribution:
    """p(x | z) = prod_d ContinuousBernoulli(x_d; lambda_d(z)), over flattened pixels [.., D]."""
    flat = tf.reshape(z, [-1, self.latent_dim])
    logits = tf.cast(self.decoder(flat, training=training), tf.float32)
    logits = tf.reshape(logits, tf.concat([tf.shape(z)[:-1], [self.num_dims]], 0))
    return tfd.Independent(tfd.ContinuousBernoulli(logits=logits), reinterpreted_batch_ndims=1)

  def prior_log_prob(self, z, training=False):
    """log p_flow(z) for z [..., L] (any leading shape)."""
    flat = tf.reshape(z, [-1, self.latent_dim])
    return tf.reshape(self.prior.log_prob(flat, training=training), tf.shape(z)[:-1])

  def log_weights(self, x, num_samples: int, training=False):
    """log p(x, z_k) - log q(z_k | x), z_k ~ q(z | x): [K, B] (for evaluation.likelihood)."""
    x = tf.reshape(tf.cast(x, tf.float32), [-1, self.num_dims])
    q = self.encode(x, training=training)
    eps = keras.random.normal(
      tf.concat([[num_samples], tf.shape(q.loc)], 0), seed=self.seed_generator
    )
    z = q.loc + q.scale.diag * eps  # [K, B, L]
    log_px_z = self.decode(z, training=training).log_prob(x)  # [K, B]
    return log_px_z + self.prior_log_prob(z, training=training) - q.log_prob(z)

  def loss_terms(self, x01, training=True) -> VAELoss:
    x = tf.reshape(
      distributions.uniform_dequantize(x01, seed=self.seed_generator), [-1, self.num_dims]
    )
    q = self.encode(x, training=training)
    eps = common_random.normal(tf.shape(q.loc), seed=self.seed_generator)
    z = q.loc + q.scale.diag * eps  # [B, L]
    reconstruction = -self.decode(z, training=training).log_prob(x)
    kl = q.log_prob(z) - self.prior.log_prob(z, training=training)
    return VAELoss(negative_elbo=reconstruction + kl, reconstruction=reconstruction, kl=kl)

  def call(self, x01, training=False):
    return self.loss_terms(x01, training=training).negative_elbo

  def sample(self, num_samples: int, *, seed=None):
    """Decoder means E[x | z], z ~ flow prior: [N, H, W, C] in [0, 1]."""
    z = self.prior.sample(num_samples, seed=seed)
    mean = self.decode(z).distribution.mean()
    return tf.reshape(mean, (num_samples,) + self.image_shape)
