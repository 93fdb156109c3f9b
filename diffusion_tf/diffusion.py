"""Gaussian diffusion (Ho, Jain & Abbeel 2020, "DDPM") and the DDIM sampler (Song et al. 2021).

Follows the official DDPM code (hojonathanho/diffusion, diffusion_utils_2.py) for the maths: the
schedule tables are float64 NumPy arrays computed once, held as constants (never variables, so
neither the optimizer nor the weight EMA can touch them), gathered per timestep as float32.

Notation: x_0 data in [-1, 1]; alpha_t = 1 - beta_t; abar_t = prod_{s<=t} alpha_s;
timesteps t = 0 .. T-1 index the paper's 1 .. T. `eps_fn(x_t, t) -> eps_hat` is the network.

All per-example log-densities are in nats summed over pixels; convert to bits/dim with
`evaluation.likelihood.bits_per_dim`. Data are 8-bit values rescaled to [-1, 1]; the discretized
decoder integrates over 8-bit bins, so bits/dim from the VLB need no +8 offset.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from diffusion_tf import distributions

EpsFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

# DDPM paper Sec. 4: T = 1000, betas linear from 1e-4 to 0.02.
NUM_TIMESTEPS = 1000
LINEAR_BETA_START, LINEAR_BETA_END = 1e-4, 0.02
# Improved DDPM (Nichol & Dhariwal 2021, eq. 17): offset s = 0.008, betas clipped at 0.999.
COSINE_OFFSET, COSINE_MAX_BETA = 0.008, 0.999
# DDIM timestep respacings (see `GaussianDiffusion.ddim_timesteps`); "uniform" is the official one.
DDIM_SPACINGS = ("uniform", "quad", "leading", "trailing", "linspace")
# ermongroup/ddim runners/diffusion.py skip_type "quad": int(linspace(0, sqrt(0.8 T), S)^2).
DDIM_QUAD_FRACTION = 0.8


def linear_beta_schedule(
  num_timesteps: int = NUM_TIMESTEPS,
  *,
  beta_start: float = LINEAR_BETA_START,
  beta_end: float = LINEAR_BETA_END,
) -> np.ndarray:
  """beta_t linear from beta_start to beta_end (DDPM Sec. 4), float64 [T]."""
  return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def cosine_beta_schedule(
  num_timesteps: int = NUM_TIMESTEPS,
  *,
  offset: float = COSINE_OFFSET,
  max_beta: float = COSINE_MAX_BETA,
) -> np.ndarray:
  """abar(t) = cos^2(((t/T + s) / (1 + s)) pi/2), beta_t = min(1 - abar(t+1)/abar(t), max_beta), float64 [T]."""
  steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  alpha_bar = np.cos((steps + offset) / (1.0 + offset) * math.pi / 2.0) ** 2
  return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta)


class Variance(enum.Enum):
  """Fixed reverse-process variances sigma_t^2 of DDPM Sec. 3.2."""

  FIXED_LARGE = "fixed_large"  # sigma_t^2 = beta_t
  FIXED_SMALL = "fixed_small"  # sigma_t^2 = beta~_t, the posterior variance


@dataclasses.dataclass(frozen=True)
class MeanVariance:
  """A diagonal Gaussian over x_{t-1} and the x_0 prediction it came from, all [B, H, W, C]."""

  mean: tf.Tensor
  variance: tf.Tensor
  log_variance: tf.Tensor
  pred_x0: tf.Tensor


@dataclasses.dataclass(frozen=True)
class VariationalBound:
  """Negative VLB terms in nats per example [B]: total = prior + sum_{t>=1} kl + decoder."""

  total: tf.Tensor
  prior: tf.Tensor  # KL(q(x_T | x_0) || N(0, I))
  diffusion: tf.Tensor  # sum over t = 1 .. T-1 of KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
  decoder: tf.Tensor  # -log p(x_0 | x_1), discretized Gaussian


class GaussianDiffusion:
  """Forward process, reverse-process parameterisation, losses and samplers of DDPM / DDIM.

  Args:
    betas: float64 [T] noise schedule, 0 < beta <= 1.
    variance: reverse-process variance (`Variance.FIXED_LARGE` is the DDPM CIFAR-10 setting).
  """

  def __init__(self, *, betas: np.ndarray, variance: Variance = Variance.FIXED_LARGE):
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or not np.all((betas > 0) & (betas <= 1)):
      raise ValueError("betas must be a 1-D array with 0 < beta <= 1")
    self.variance = Variance(variance)
    self.num_timesteps = len(betas)
    self.betas = betas
    alphas = 1.0 - betas
    self.alphas_cumprod = np.cumprod(alphas)
    self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
    self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
    self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
    self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
    self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
    self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
    # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta~_t)   (DDPM eq. 6-7)
    self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
    # beta~_0 = 0: the log is clipped by repeating beta~_1 (official code).
    self.posterior_log_variance_clipped = np.log(
      np.append(self.posterior_variance[1], self.posterior_variance[1:])
    )
    self.posterior_mean_coef1 = (
      betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
    )
    self.posterior_mean_coef2 = (
      (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
    )
    if self.variance is Variance.FIXED_LARGE:
      # Official code: the first log-variance is beta~_1 for a better decoder likelihood.
      self.model_variance = betas
      self.model_log_variance = np.log(np.append(self.posterior_variance[1], betas[1:]))
    else:
      self.model_variance = self.posterior_variance
      self.model_log_variance = self.posterior_log_variance_clipped

  @classmethod
  def linear(cls, num_timesteps: int = NUM_TIMESTEPS, **kwargs) -> GaussianDiffusion:
    return cls(betas=linear_beta_schedule(num_timesteps), **kwargs)

  @classmethod
  def cosine(cls, num_timesteps: int = NUM_TIMESTEPS, **kwargs) -> GaussianDiffusion:
    return cls(betas=cosine_beta_schedule(num_timesteps), **kwargs)

  # --------------------------------------------------------------------------- helpers

  @staticmethod
  def _extract(table: np.ndarray, t, x, dtype=tf.float32):
    """table[t] as `dtype` [B, 1, 1, 1] (broadcasts against x [B, H, W, C])."""
    values = tf.gather(tf.constant(table, dtype), t)  # [B]
    return tf.reshape(values, tf.concat([tf.shape(t), tf.ones([tf.rank(x) - 1], tf.int32)], 0))

  # --------------------------------------------------------------------------- forward process

  def q_mean_variance(self, x0, t):
    """q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I): (mean, variance, log_variance)."""
    mean = self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
    variance = self._extract(1.0 - self.alphas_cumprod, t, x0) * tf.ones_like(x0)
    log_variance = self._extract(self.log_one_minus_alphas_cumprod, t, x0) * tf.ones_like(x0)
    return mean, variance, log_variance

  def q_sample(self, x0, t, noise):
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps   (DDPM eq. 4)."""
    return (
      self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
      + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
    )

  def q_posterior_mean_variance(self, x0, x_t, t):
    """q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I) (DDPM eq. 6-7): (mean, variance, log_variance)."""
    mean = (
      self._extract(self.posterior_mean_coef1, t, x_t) * x0
      + self._extract(self.posterior_mean_coef2, t, x_t) * x_t
    )
    variance = self._extract(self.posterior_variance, t, x_t) * tf.ones_like(x_t)
    log_variance = self._extract(self.posterior_log_variance_clipped, t, x_t) * tf.ones_like(x_t)
    return mean, variance, log_variance

  def predict_x0_from_eps(self, x_t, t, eps):
    """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    return (
      self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
      - self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
    )

  # --------------------------------------------------------------------------- reverse process

  def p_mean_variance(self, eps_fn: EpsFn, x_t, t, *, clip_denoised: bool) -> MeanVariance:
    """p(x_{t-1} | x_t) = N(mu~_t(x_t, x0_hat), sigma_t^2), x0_hat from the predicted epsilon."""
    eps = tf.cast(eps_fn(x_t, t), tf.float32)
    pred_x0 = self.predict_x0_from_eps(x_t, t, eps)
    if clip_denoised:
      pred_x0 = tf.clip_by_value(pred_x0, -1.0, 1.0)
    mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
    variance = self._extract(self.model_variance, t, x_t) * tf.ones_like(x_t)
    log_variance = self._extract(self.model_log_variance, t, x_t) * tf.ones_like(x_t)
    return MeanVariance(mean=mean, variance=variance, log_variance=log_variance, pred_x0=pred_x0)

  # --------------------------------------------------------------------------- losses

  def simple_loss(self, eps_fn: EpsFn, x0, t, noise):
    """L_simple = mean over pixels of ||eps - eps_theta(x_t, t)||^2  (DDPM eq. 14), float32 [B]."""
    x_t = self.q_sample(x0, t, noise)
    eps = tf.cast(eps_fn(x_t, t), tf.float32)
    return tf.reduce_mean(tf.square(noise - eps), axis=tf.range(1, tf.rank(x0)))

  def vlb_term(self, eps_fn: EpsFn, x0, x_t, t, *, clip_denoised: bool = False):
    """L_t in nats [B]: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0, -log p(x_0|x_1) at t = 0."""
    true_mean, _, true_log_variance = self.q_posterior_mean_variance(x0, x_t, t)
    p = self.p_mean_variance(eps_fn, x_t, t, clip_denoised=clip_denoised)
    kl = distributions.sum_over_pixels(
      distributions.normal_kl(true_mean, true_log_variance, p.mean, p.log_variance)
    )
    decoder_nll = -distributions.sum_over_pixels(
      distributions.discretized_gaussian_log_likelihood(
        x0, means=p.mean, log_scales=0.5 * p.log_variance
      )
    )
    return tf.where(tf.equal(t, 0), decoder_nll, kl)

  def prior_kl(self, x0):
    """L_T = KL(q(x_T | x_0) || N(0, I)) in nats [B]."""
    t = tf.fill(tf.shape(x0)[:1], self.num_timesteps - 1)
    mean, _, log_variance = self.q_mean_variance(x0, t)
    return distributions.sum_over_pixels(distributions.normal_kl(mean, log_variance, 0.0, 0.0))

  def variational_bound(
    self, eps_fn: EpsFn, x0, *, seed, clip_denoised: bool = True
  ) -> VariationalBound:
    """-log p(x_0) <= L_T + sum_{t=1}^{T-1} L_t + L_0 (DDPM eq. 5), all T terms, one while loop.

    x0: 8-bit data in [-1, 1] [B, H, W, C]; seed: int32 [2] stateless seed for the x_t draws.
    clip_denoised: clip x0_hat to [-1, 1] inside p(x_{t-1} | x_t), as the official evaluation
    (`calc_bpd_loop(..., clip_denoised=True)` in diffusion_utils_2.py); False is the bound of the
    unclipped model that the training loss (`_vb_terms_bpd(clip_denoised=False)`) optimises.
    """
    x0 = tf.convert_to_tensor(x0, tf.float32)
    batch = tf.shape(x0)[:1]

    def body(i, kl_sum, decoder):
      t = tf.fill(batch, i)
      noise = _normal(tf.shape(x0), seed=_fold_in(seed, i))
      term = self.vlb_term(eps_fn, x0, self.q_sample(x0, t, noise), t, clip_denoised=clip_denoised)
      is_decoder = tf.equal(i, 0)
      return (
        i - 1,
        kl_sum + tf.where(is_decoder, tf.zeros_like(term), term),
        tf.where(is_decoder, term, decoder),
      )

    zeros = tf.zeros(batch, tf.float32)
    _, kl_sum, decoder = tf.while_loop(
      lambda i, *_: i >= 0, body, (tf.constant(self.num_timesteps - 1), zeros, zeros)
    )
    prior = self.prior_kl(x0)
    return VariationalBound(
      total=prior + kl_sum + decoder, prior=prior, diffusion=kl_sum, decoder=decoder
    )

  # --------------------------------------------------------------------------- ancestral sampling

  def p_sample(self, eps_fn: EpsFn, x_t, t, noise, *, clip_denoised: bool = True):
    """x_{t-1} = mu_theta(x_t, t) + sigma_t z (DDPM Algorithm 2), with no noise at t = 0."""
    p = self.p_mean_variance(eps_fn, x_t, t, clip_denoised=clip_denoised)
    nonzero = self._extract(np.append(0.0, np.ones(self.num_timesteps - 1)), t, x_t)
    return p.mean + nonzero * tf.exp(0.5 * p.log_variance) * noise

  def ancestral_step(self, eps_fn: EpsFn, x_t, i, seed, *, clip_denoised: bool = True):
    """Loop step i (t = i for the whole batch); the noise is a fixed function of (seed, i)."""
    noise = _normal(tf.shape(x_t), seed=_fold_in(seed, i))
    return self.p_sample(
      eps_fn, x_t, tf.fill(tf.shape(x_t)[:1], i), noise, clip_denoised=clip_denoised
    )

  def initial_noise(self, shape, seed):
    """x_T ~ N(0, I) for the samplers, from (seed, T)."""
    return _normal(shape, seed=_fold_in(seed, self.num_timesteps))

  def p_sample_loop(self, eps_fn: EpsFn, shape, *, seed, clip_denoised: bool = True):
    """All T ancestral steps as one `tf.while_loop` (wrap in `tf.function(jit_compile=True)`).

    shape: [B, H, W, C]; seed: int32 [2]. Equals `p_sample_loop_stepwise` for the same seed.
    """

    def body(i, x):
      return i - 1, self.ancestral_step(eps_fn, x, i, seed, clip_denoised=clip_denoised)

    _, x0 = tf.while_loop(
      lambda i, _: i >= 0,
      body,
      (tf.constant(self.num_timesteps - 1), self.initial_noise(shape, seed)),
    )
    return x0

  def p_sample_loop_stepwise(self, step_fn, x_T, *, seed):
    """The same chain with one Python call per step `step_fn(x, i, seed)`, from x_T (tests, bench)."""
    x = x_T
    for i in range(self.num_timesteps - 1, -1, -1):
      x = step_fn(x, tf.constant(i), seed)
    return x

  # --------------------------------------------------------------------------- DDIM

  def ddim_timesteps(self, num_steps: int, *, spacing: str = "uniform") -> np.ndarray:
    """Respaced DDIM timesteps tau (ascending int64), by `spacing` (one of `DDIM_SPACINGS`):

    uniform  (official DDIM, ermongroup/ddim `skip_type="uniform"`): range(0, T, T // S). It has
             ceil(T / (T // S)) steps, i.e. more than S when T // S does not divide T
             (T = 1000, S = 30 gives 31 steps 0, 33, ..., 990);
    quad     (official DDIM `skip_type="quad"`, its CIFAR-10 choice): int(linspace(0, sqrt(0.8 T),
             S) ** 2), truncated as the official `int(s)`: S steps from 0 to 0.8 T (800 for
             T = 1000), dense near the data end; small S / T ratios repeat early steps (S = 100:
             0, 0, 0, 0, 1, ...), kept as the official list keeps them (a repeated step is a
             network call whose DDIM update leaves x unchanged);
    leading  (diffusers `timestep_spacing="leading"`, steps_offset 0): k (T // S), k = 0 .. S-1;
             the same as uniform whenever S divides T;
    trailing (diffusers "trailing"): round(T - k T / S) - 1, k = 0 .. S-1;
    linspace (diffusers "linspace"): round(linspace(0, T - 1, S)).
    """
    T = self.num_timesteps
    if not 1 <= num_steps <= T:
      raise ValueError(f"DDIM steps must be in [1, {T}], got {num_steps}")
    if spacing == "uniform":
      steps = np.arange(0, T, T // num_steps)  # official ddim: range(0, T, T // S)
    elif spacing == "quad":
      steps = np.trunc(np.linspace(0, np.sqrt(T * DDIM_QUAD_FRACTION), num_steps) ** 2)
    elif spacing == "leading":
      steps = np.arange(num_steps) * (T // num_steps)
    elif spacing == "trailing":
      steps = np.round(np.arange(T, 0, -T / num_steps)).astype(np.int64) - 1
    elif spacing == "linspace":
      steps = np.round(np.linspace(0, T - 1, num_steps))
    else:
      raise ValueError(f"DDIM spacing must be one of {DDIM_SPACINGS}, got {spacing!r}")
    return np.sort(np.asarray(steps, dtype=np.int64))

  def ddim_mean_std(self, eps_fn: EpsFn, x_t, t, t_prev, *, eta: float, clip_denoised: bool):
    """DDIM (Song et al. 2021, eq. 12) from t to t_prev (-1 = the data end, abar = 1):

        x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z,
        sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).
    Returns (mean, std), [B, H, W, C] and [B, 1, 1, 1].
    """
    # The per-step coefficients are computed in float64 and cast once: 1 - abar_prev - sigma^2
    # cancels badly in float32 near t = 0 (1e-4 - 9.7e-5 at the last step of 50).
    abar = np.append(1.0, self.alphas_cumprod)  # index t + 1
    a_t = self._extract(abar, t + 1, x_t, dtype=tf.float64)
    a_prev = self._extract(abar, t_prev + 1, x_t, dtype=tf.float64)
    f32 = lambda v: tf.cast(v, tf.float32)
    eps = tf.cast(eps_fn(x_t, t), tf.float32)
    pred_x0 = f32(tf.sqrt(1.0 / a_t)) * x_t - f32(tf.sqrt(1.0 / a_t - 1.0)) * eps
    if clip_denoised:
      pred_x0 = tf.clip_by_value(pred_x0, -1.0, 1.0)
      eps = (x_t - f32(tf.sqrt(a_t)) * pred_x0) / f32(tf.sqrt(1.0 - a_t))
    sigma = eta * tf.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
    mean = (
      f32(tf.sqrt(a_prev)) * pred_x0 + f32(tf.sqrt(tf.maximum(1.0 - a_prev - sigma**2, 0.0))) * eps
    )
    return mean, f32(sigma)

  def ddim_sample_loop(
    self,
    eps_fn: EpsFn,
    shape,
    *,
    seed,
    num_steps: int,
    eta: float = 0.0,
    clip_denoised: bool = False,
    spacing: str = "uniform",
    x_T=None,
  ):
    """DDIM over `ddim_timesteps(num_steps, spacing=spacing)` as one `tf.while_loop`; eta = 0 is
    deterministic. `clip_denoised=False` is the official DDIM sampler (ermongroup
    `generalized_steps` does not clip x0_hat); True clips x0_hat to [-1, 1] and recomputes eps_hat
    from it (diffusers `clip_sample=True, use_clipped_model_output=True`). `x_T`: start from this
    [B, H, W, C] instead of `initial_noise(shape, seed)`."""
    steps = self.ddim_timesteps(num_steps, spacing=spacing)
    timesteps = tf.constant(steps, tf.int32)
    previous = tf.constant(np.append(-1, steps[:-1]), tf.int32)

    def body(j, x):
      batch = tf.shape(x)[:1]
      t, t_prev = tf.fill(batch, timesteps[j]), tf.fill(batch, previous[j])
      mean, std = self.ddim_mean_std(eps_fn, x, t, t_prev, eta=eta, clip_denoised=clip_denoised)
      noise = _normal(tf.shape(x), seed=_fold_in(seed, timesteps[j]))
      return j - 1, mean + std * noise

    x_T = self.initial_noise(shape, seed) if x_T is None else tf.convert_to_tensor(x_T, tf.float32)
    _, x0 = tf.while_loop(lambda j, _: j >= 0, body, (tf.constant(len(steps) - 1), x_T))
    return x0


# One explicit algorithm rather than "auto_select". Note: XLA and the TF CPU kernel turn the same
# Philox seed into different normals, so a sampler reproduces exactly only under the same
# compilation setting (XLA loop == loop of XLA steps; graph loop == loop of graph steps).
RNG_ALG = "philox"


def _fold_in(seed, data):
  """A new stateless seed [2] from (seed [2], integer data)."""
  return tf.random.experimental.stateless_fold_in(
    tf.cast(seed, tf.int32), tf.cast(data, tf.int32), alg=RNG_ALG
  )


def _normal(shape, seed):
  """Stateless N(0, I) noise, the same with and without XLA."""
  return tf.random.stateless_normal(shape, seed=seed, alg=RNG_ALG)
