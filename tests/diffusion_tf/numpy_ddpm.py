"""An independent NumPy float64 DDPM / DDIM, written from the papers and the official code's
equations (not from diffusion_tf), for the value tests of tests/diffusion_tf.

Only the noise is shared with diffusion_tf: `draws` reproduces its stateless Philox normals (the
samplers' documented contract: step i uses N(0, I) from fold_in(seed, i), x_T from fold_in(seed, T)),
so both implementations can be run on the same noise.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


class Schedule:
  """Float64 tables of DDPM eq. 4, 6, 7 for betas [T]."""

  def __init__(self, betas):
    self.betas = np.asarray(betas, np.float64)
    self.T = len(self.betas)
    self.abar = np.cumprod(1.0 - self.betas)
    self.abar_prev = np.concatenate([[1.0], self.abar[:-1]])

  def posterior(self, x0, x_t, t):
    """q(x_{t-1} | x_t, x_0) from Gaussian algebra (precision-weighted): (mean, variance)."""
    a_prev, alpha, beta = self.abar_prev[t], 1.0 - self.betas[t], self.betas[t]
    if t == 0:  # x_{-1} := x_0 (deterministic)
      return x0, 0.0
    var = 1.0 / (1.0 / (1.0 - a_prev) + alpha / beta)
    mean = var * (math.sqrt(a_prev) / (1.0 - a_prev) * x0 + math.sqrt(alpha) / beta * x_t)
    return mean, var

  def x0_from_eps(self, x_t, t, eps):
    return (x_t - math.sqrt(1.0 - self.abar[t]) * eps) / math.sqrt(self.abar[t])

  def model_log_variance(self, t, variance):
    """Official fixed variances: fixedsmall log(beta~_t) with beta~_0 := beta~_1; fixedlarge
    log(beta_t) with the first entry log(beta~_1) (diffusion_utils_2.p_mean_variance)."""
    post = self.betas * (1.0 - self.abar_prev) / (1.0 - self.abar)
    if variance == "fixed_small":
      return math.log(post[max(t, 1)])
    return math.log(post[1]) if t == 0 else math.log(self.betas[t])


def draws(shape, seed, indices, *, jit: bool):
  """{i: the N(0, I) array diffusion_tf draws for loop index i of `seed`} for i in `indices`
  (XLA or CPU kernel), from one compiled function."""
  indices = [int(i) for i in indices]

  def fn(seed_):  # an argument, not a constant: a constant graph would be folded on the CPU
    return [
      tf.random.stateless_normal(
        shape, seed=tf.random.experimental.stateless_fold_in(seed_, i, alg="philox"), alg="philox"
      )
      for i in indices
    ]

  out = tf.function(fn, jit_compile=jit)(tf.constant(seed, tf.int32))
  return {i: o.numpy().astype(np.float64) for i, o in zip(indices, out)}


def ancestral(schedule, eps_fn, x_T, noises, *, variance, clip=True):
  """DDPM Algorithm 2 with x0 clipping as the official p_sample: noises[t] for t = T-1 .. 1."""
  x = x_T
  for t in range(schedule.T - 1, -1, -1):
    x0 = schedule.x0_from_eps(x, t, eps_fn(x, t))
    if clip:
      x0 = np.clip(x0, -1.0, 1.0)
    mean, _ = schedule.posterior(x0, x, t)
    x = mean + (t > 0) * math.exp(0.5 * schedule.model_log_variance(t, variance)) * noises[t]
  return x


def ddim(schedule, eps_fn, x_T, timesteps, noises, *, eta, clip=False):
  """ermongroup generalized_steps: tau ascending, noises[t] for each t in tau."""
  x = x_T
  prev = np.concatenate([[-1], timesteps[:-1]])
  for t, s in zip(timesteps[::-1], prev[::-1]):
    a_t = schedule.abar[t]
    a_s = 1.0 if s < 0 else schedule.abar[s]
    eps = eps_fn(x, t)
    x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    if clip:
      x0 = np.clip(x0, -1.0, 1.0)
      eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
    c1 = eta * math.sqrt((1 - a_t / a_s) * (1 - a_s) / (1 - a_t))
    c2 = math.sqrt(max(1 - a_s - c1**2, 0.0))
    x = math.sqrt(a_s) * x0 + c1 * noises[t] + c2 * eps
  return x


def _phi(x):
  """The official tanh approximation of the standard normal CDF (utils.approx_standard_normal_cdf)."""
  return 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
  """Official utils.discretized_gaussian_log_likelihood: 8-bit bins of half-width 1/255."""
  inv = math.exp(-log_scale)
  cdf_plus = _phi(inv * (x - mean + 1 / 255))
  cdf_min = _phi(inv * (x - mean - 1 / 255))
  return np.where(
    x < -0.999,
    np.log(np.maximum(cdf_plus, 1e-12)),
    np.where(
      x > 0.999,
      np.log(np.maximum(1 - cdf_min, 1e-12)),
      np.log(np.maximum(cdf_plus - cdf_min, 1e-12)),
    ),
  )


def gaussian_kl(m1, logv1, m2, logv2):
  return 0.5 * (-1.0 + logv2 - logv1 + np.exp(logv1 - logv2) + (m1 - m2) ** 2 * np.exp(-logv2))


def vlb(schedule, eps_fn, x0, noises, *, variance, clip=True):
  """Official calc_bpd_loop in nats per example: (total, prior, sum of KL terms, decoder).
  noises[t]: the eps of x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
  axes = tuple(range(1, x0.ndim))
  post = schedule.betas * (1.0 - schedule.abar_prev) / (1.0 - schedule.abar)
  kl_sum = np.zeros(x0.shape[0])
  decoder = None
  for t in range(schedule.T):
    x_t = math.sqrt(schedule.abar[t]) * x0 + math.sqrt(1 - schedule.abar[t]) * noises[t]
    pred = schedule.x0_from_eps(x_t, t, eps_fn(x_t, t))
    if clip:
      pred = np.clip(pred, -1.0, 1.0)
    model_mean, _ = schedule.posterior(pred, x_t, t)
    logv = schedule.model_log_variance(t, variance)
    if t == 0:
      decoder = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * logv).sum(axes)
    else:
      true_mean, _ = schedule.posterior(x0, x_t, t)
      kl_sum += gaussian_kl(true_mean, math.log(post[t]), model_mean, logv).sum(axes)
  a_T = schedule.abar[-1]
  prior = gaussian_kl(math.sqrt(a_T) * x0, math.log(1 - a_T), 0.0, 0.0).sum(axes)
  return prior + kl_sum + decoder, prior, kl_sum, decoder
