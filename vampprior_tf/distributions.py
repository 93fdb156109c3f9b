"""Log-densities and observation models of the VampPrior paper (Tomczak & Welling 2018).

Every log-density is in nats; functions ending in `_log_prob` return per-element values unless they
say they sum. Gaussians use the full normalising constant -D/2 log(2 pi) in q and p alike (the
official code drops it in both; differences of log-densities, the KL and log w are unchanged).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

LOG_2PI = math.log(2.0 * math.pi)


def log_normal_diag(z, mean, log_var):
  """log N(z; mean, diag(exp(log_var))) = -1/2 sum_d [log 2 pi + log_var_d + (z_d - mean_d)^2 / var_d].

  Sums over the last axis; broadcasting applies to the leading axes.
  """
  return -0.5 * tf.reduce_sum(LOG_2PI + log_var + tf.square(z - mean) * tf.exp(-log_var), axis=-1)


def log_standard_normal(z):
  """log N(z; 0, I) = -1/2 sum_d [log 2 pi + z_d^2], summed over the last axis."""
  return -0.5 * tf.reduce_sum(LOG_2PI + tf.square(z), axis=-1)


def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
  """KL(N(mean_q, var_q) || N(mean_p, var_p)) in closed form, summed over the last axis:

  1/2 sum_d [log var_p - log var_q + (var_q + (mean_q - mean_p)^2) / var_p - 1].
  """
  return 0.5 * tf.reduce_sum(
    log_var_p
    - log_var_q
    + (tf.exp(log_var_q) + tf.square(mean_q - mean_p)) * tf.exp(-log_var_p)
    - 1.0,
    axis=-1,
  )


def mixture_log_prob(z, means, log_vars, log_weights):
  """log p(z) = logsumexp_k [log pi_k + sum_d log N(z_d; mu_kd, var_kd)]  (VampPrior paper eq. 9).

  The Gaussian log-density is summed over the latent dimensions FIRST, then the log-sum-exp runs
  over the K components (never the reverse, which would be a different, wrong density).

  Args:
    z: [B, D] points.
    means, log_vars: [K, D] component parameters.
    log_weights: [K] normalised log mixture weights (log_softmax of the logits).
  Returns:
    [B] log-densities.
  """
  per_component = log_normal_diag(z[:, None, :], means[None], log_vars[None])  # [B, K]
  return tf.reduce_logsumexp(per_component + log_weights[None, :], axis=1)


# Official utils/distributions.py log_Logistic_256: -log(cdf_plus - cdf_minus + 1.e-7).
OFFICIAL_LOGISTIC_EPSILON = 1e-7
LOGISTIC_EDGES = ("official", "normalised")


def _logistic_bin_edges(x, mean, log_scale, num_bins):
  """(k, l, u): bin index of x = k / (num_bins - 1) and the standardised bin edges
  l = (k / num_bins - mean) / s, u = ((k + 1) / num_bins - mean) / s (official bin placement:
  data (k + 0.5) / 256 floored to the bin k / 256)."""
  k = tf.round(x * (num_bins - 1))
  inv_scale = tf.exp(-log_scale)
  return k, (k / num_bins - mean) * inv_scale, ((k + 1.0) / num_bins - mean) * inv_scale


def _log_cdf_difference(lower, upper):
  """log(sigma(u) - sigma(l)) = log sigma(u) + log sigma(-l) + log(1 - exp(l - u)), no cancellation."""
  return (
    -tf.nn.softplus(-upper) - tf.nn.softplus(lower) + tf.math.log(-tf.math.expm1(lower - upper))
  )


def discretized_logistic_log_prob_official(x, mean, log_scale, *, num_bins: int = 256):
  """log P(x) = log(sigma(u) - sigma(l) + 1e-7) for EVERY bin, edge bins included (official
  `log_Logistic_256`): the mass below 0 and above 1 belongs to no bin, so the 256 probabilities
  sum to less than 1. u, l: the bin's standardised edges (`_logistic_bin_edges`). Per element.
  """
  _, lower, upper = _logistic_bin_edges(x, mean, log_scale, num_bins)
  return tf.math.log(tf.exp(_log_cdf_difference(lower, upper)) + OFFICIAL_LOGISTIC_EPSILON)


def discretized_logistic_log_prob_normalised(x, mean, log_scale, *, num_bins: int = 256):
  """log P(x) with the first bin extended to -inf and the last to +inf, so the 256 bins sum to 1:

    P = sigma(u)            for k = 0,
    P = 1 - sigma(l)        for k = num_bins - 1,
    P = sigma(u) - sigma(l) otherwise (PixelCNN++-style edges; not the official form).

  A pixel at 0 or 255 scores up to ~1.8 nats more than under the official form (mean 1/512,
  log-scale -4.5). Per element.
  """
  k, lower, upper = _logistic_bin_edges(x, mean, log_scale, num_bins)
  log_cdf_upper = -tf.nn.softplus(-upper)  # log sigma(u)
  log_sf_lower = -tf.nn.softplus(lower)  # log (1 - sigma(l)) = log sigma(-l)
  return tf.where(
    k <= 0,
    log_cdf_upper,
    tf.where(k >= num_bins - 1, log_sf_lower, _log_cdf_difference(lower, upper)),
  )


def discretized_logistic_log_prob(
  x, mean, log_scale, *, num_bins: int = 256, edges: str = "official"
):
  """log P(x) of a logistic(mean, exp(log_scale)) discretised into `num_bins` bins of [0, 1];
  pixel k (the suite's x = k / (num_bins - 1)) owns [k / num_bins, (k + 1) / num_bins].

  edges='official' (default, for comparisons with the paper): `..._official`;
  edges='normalised': `..._normalised`.
  """
  if edges == "official":
    return discretized_logistic_log_prob_official(x, mean, log_scale, num_bins=num_bins)
  if edges == "normalised":
    return discretized_logistic_log_prob_normalised(x, mean, log_scale, num_bins=num_bins)
  raise ValueError(f"edges must be one of {LOGISTIC_EDGES}, got {edges!r}")


def sample_discretized_logistic(mean, log_scale, *, seed, num_bins: int = 256):
  """Draws y ~ logistic(mean, scale), returns its bin index k as k / (num_bins - 1) (suite's values).

  `seed`: a `keras.random.SeedGenerator` (or a seed accepted by `keras.random`), as for every
  `sample` below.
  """
  u = keras.random.uniform(tf.shape(mean), minval=1e-5, maxval=1.0 - 1e-5, seed=seed)
  y = mean + tf.exp(log_scale) * (tf.math.log(u) - tf.math.log1p(-u))
  k = tf.clip_by_value(tf.floor(y * num_bins), 0.0, num_bins - 1.0)
  return k / (num_bins - 1)


# ----------------------------------------------------------------------------- observation models
# A decoder emits `num_params` raw maps per image channel, stacked on the channel axis; the
# observation model turns them into a distribution over the image. All `log_prob`s sum over
# [H, W, C] and return [B]; the DATA is scored under the DECODER's distribution.


def _sum_image(values):
  return tf.reduce_sum(values, axis=[1, 2, 3])


class Bernoulli:
  """p(x | z) = prod_i Bernoulli(x_i; sigmoid(logit_i)), binary images."""

  num_params = 1

  def log_prob(self, x, params):
    """sum_i [x_i log p_i + (1 - x_i) log(1 - p_i)], p = sigmoid(params): data x scored under p."""
    return _sum_image(tfd.Bernoulli(logits=params, dtype=x.dtype).log_prob(x))

  def mean(self, params):
    return tf.sigmoid(params)

  def sample(self, params, *, seed):
    u = keras.random.uniform(tf.shape(params), seed=seed)
    return tf.cast(u < tf.sigmoid(params), params.dtype)


class DiscretizedLogistic:
  """256-bin discretised logistic per pixel for grey images (official gray/continuous decoder).

  `edges`: 'official' (default; edge bins get no tail mass, + 1e-7 inside the log) or
  'normalised' (edge bins get the tails); see `discretized_logistic_log_prob`.

  Raw parameters -> mean = clip(sigmoid(a), 1/512, 1 - 1/512), log-scale = hardtanh(b, -4.5, 0)
  (official models/*.py: `torch.clamp(x_mean, 1/512, 1-1/512)`, `Hardtanh(-4.5, 0)`).
  """

  num_params = 2
  MEAN_MARGIN = 1.0 / 512.0
  LOG_SCALE_MIN, LOG_SCALE_MAX = -4.5, 0.0

  def __init__(self, *, edges: str = "official"):
    if edges not in LOGISTIC_EDGES:
      raise ValueError(f"edges must be one of {LOGISTIC_EDGES}, got {edges!r}")
    self.edges = edges

  def split(self, params):
    raw_mean, raw_log_scale = tf.split(params, 2, axis=-1)
    mean = tf.clip_by_value(tf.sigmoid(raw_mean), self.MEAN_MARGIN, 1.0 - self.MEAN_MARGIN)
    log_scale = tf.clip_by_value(raw_log_scale, self.LOG_SCALE_MIN, self.LOG_SCALE_MAX)
    return mean, log_scale

  def log_prob(self, x, params):
    mean, log_scale = self.split(params)
    return _sum_image(discretized_logistic_log_prob(x, mean, log_scale, edges=self.edges))

  def mean(self, params):
    return self.split(params)[0]

  def sample(self, params, *, seed):
    mean, log_scale = self.split(params)
    return sample_discretized_logistic(mean, log_scale, seed=seed)


class ContinuousBernoulli:
  """p(x | z) = prod_i CB(x_i; lambda_i) = C(lambda) lambda^x (1 - lambda)^(1 - x), x in [0, 1]
  (Loaiza-Ganem & Cunningham 2019), via tfd.ContinuousBernoulli. Its log-normaliser near
  lambda = 1/2 (Taylor branch) is checked against a float64 integral in the tests."""

  num_params = 1

  def log_prob(self, x, params):
    return _sum_image(tfd.ContinuousBernoulli(logits=params).log_prob(x))

  def mean(self, params):
    return tfd.ContinuousBernoulli(logits=params).mean()

  def sample(self, params, *, seed):
    u = keras.random.uniform(tf.shape(params), minval=1e-6, maxval=1.0 - 1e-6, seed=seed)
    return tfd.ContinuousBernoulli(logits=params).quantile(u)


OBSERVATION_MODELS = {
  "bernoulli": Bernoulli,
  "discretized_logistic": DiscretizedLogistic,
  "continuous_bernoulli": ContinuousBernoulli,
}
