"""Distributions of NVAE: soft-clamped Normals (prior and residual posterior) and the Bernoulli decoder.

All densities are TFP distributions evaluated in float32; sampling noise comes from the caller
(the model's `keras.random.SeedGenerator`) so that runs are reproducible and resumable.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

SOFT_CLAMP_LIMIT = 5.0  # NVAE official (distributions.py): soft_clamp5(x) = 5 tanh(x / 5)
SIGMA_FLOOR = 1e-2  # NVAE official: sigma = exp(log_sigma) + 1e-2


def soft_clamp(x, limit: float = SOFT_CLAMP_LIMIT):
  """Differentiable clamp to (-limit, limit): limit * tanh(x / limit)."""
  return limit * tf.tanh(x / limit)


def normal(mu, log_sigma, *, temperature: float = 1.0) -> tfd.Normal:
  """NVAE's Normal: loc = 5 tanh(mu / 5), scale = (exp(5 tanh(log_sigma / 5)) + 1e-2) * temperature.

  The temperature scales sigma only (NVAE official `Normal(mu, log_sigma, temp)`).
  """
  mu = tf.cast(mu, tf.float32)
  log_sigma = tf.cast(log_sigma, tf.float32)
  sigma = tf.exp(soft_clamp(log_sigma)) + SIGMA_FLOOR
  return tfd.Normal(loc=soft_clamp(mu), scale=sigma * temperature)


def residual_normal(prior_mu, prior_log_sigma, delta_mu, delta_log_sigma) -> tfd.Normal:
  """Residual posterior (NVAE eq. 2): q = N(mu_p + dmu, exp(log_sigma_p + dlog_sigma)).

  The encoder predicts offsets that are added to the prior's raw (pre-clamp) parameters; the soft
  clamps then act on the sums, exactly as the official `Normal(mu_p + mu_q, log_sig_p + log_sig_q)`.
  """
  return normal(prior_mu + delta_mu, prior_log_sigma + delta_log_sigma)


def standard_prior(shape, *, temperature: float = 1.0) -> tfd.Normal:
  """The top group's fixed prior, NVAE official `Normal(0, 0)`: N(0, (1 + 1e-2)^2) after the floor."""
  zeros = tf.zeros(shape, tf.float32)
  return normal(zeros, zeros, temperature=temperature)


def sample(dist: tfd.Normal, noise):
  """Reparameterised draw z = mu + sigma * eps with caller-provided eps ~ N(0, 1)."""
  return dist.loc + dist.scale * tf.cast(noise, tf.float32)


def analytic_kl(q: tfd.Normal, p: tfd.Normal):
  """KL(q || p) per element: 0.5 ((mu_q - mu_p)/s_p)^2 + 0.5 (s_q/s_p)^2 - 0.5 - log(s_q/s_p)."""
  return tfd.kl_divergence(q, p)


def bernoulli_log_prob(logits, x):
  """log Bernoulli(x | sigmoid(logits)) per element, x in {0, 1} (= -sigmoid cross-entropy)."""
  return -tf.nn.sigmoid_cross_entropy_with_logits(
    labels=tf.cast(x, tf.float32), logits=tf.cast(logits, tf.float32)
  )
