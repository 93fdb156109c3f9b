"""Log-densities and observation models against closed forms, brute force and float64 integrals."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, special

from vampprior_tf import distributions


def test_log_normal_diag_matches_scipy_and_standard_normal():
  rng = np.random.RandomState(0)
  z, mean, log_var = rng.randn(3, 5, 4).astype(np.float32)
  expected = np.sum(
    -0.5 * (math.log(2 * math.pi) + log_var + (z - mean) ** 2 / np.exp(log_var)), -1
  )
  np.testing.assert_allclose(distributions.log_normal_diag(z, mean, log_var), expected, rtol=1e-5)
  np.testing.assert_allclose(
    distributions.log_standard_normal(z), distributions.log_normal_diag(z, 0 * z, 0 * z), rtol=1e-6
  )


def test_gaussian_kl_closed_form_equals_monte_carlo():
  rng = np.random.RandomState(1)
  mq, lq, mp, lp = (rng.randn(3).astype(np.float64) * 0.5 for _ in range(4))
  z = mq + np.exp(0.5 * lq) * rng.randn(200000, 3)
  mc = np.mean(distributions.log_normal_diag(z, mq, lq) - distributions.log_normal_diag(z, mp, lp))
  assert abs(float(distributions.gaussian_kl(mq, lq, mp, lp)) - mc) < 0.02


def brute_force_mixture(z, means, log_vars, log_weights):
  """Sum over dimensions first, then log-sum-exp over components, in float64 NumPy."""
  z, means, log_vars = (np.asarray(a, np.float64) for a in (z, means, log_vars))
  per_dim = -0.5 * (
    np.log(2 * np.pi) + log_vars[None] + (z[:, None] - means[None]) ** 2 / np.exp(log_vars[None])
  )  # [B, K, D]
  return special.logsumexp(per_dim.sum(-1) + log_weights[None], axis=1)  # [B]


def test_mixture_log_prob_equals_brute_force_and_not_the_swapped_order():
  rng = np.random.RandomState(2)
  z = rng.randn(7, 3).astype(np.float32)
  means, log_vars = rng.randn(2, 5, 3).astype(np.float32)
  log_weights = special.log_softmax(rng.randn(5)).astype(np.float32)
  got = distributions.mixture_log_prob(z, means, log_vars, log_weights).numpy()
  np.testing.assert_allclose(got, brute_force_mixture(z, means, log_vars, log_weights), rtol=1e-5)
  # The wrong order (logsumexp over K per dimension, then sum over D) is a different number.
  per_dim = -0.5 * (
    np.log(2 * np.pi) + log_vars[None] + (z[:, None] - means[None]) ** 2 / np.exp(log_vars[None])
  )
  wrong = special.logsumexp(per_dim + log_weights[None, :, None], axis=1).sum(-1)
  assert np.max(np.abs(got - wrong)) > 0.2


def official_log_logistic_256(x, mean, log_scale):
  """The official log_Logistic_256 (utils/distributions.py) in float64 NumPy, on OUR pixel values
  x = k / 255: official data are (k + 0.5) / 256, floored to the bin k / 256."""
  x_official = (np.round(np.asarray(x, np.float64) * 255) + 0.5) / 256
  scale = np.exp(np.float64(log_scale))
  z = (np.floor(x_official / (1 / 256)) * (1 / 256) - mean) / scale
  return np.log(special.expit(z + (1 / 256) / scale) - special.expit(z) + 1e-7)


def test_normalised_discretized_logistic_sums_to_one_over_256_bins():
  rng = np.random.RandomState(3)
  n = 6
  mean = rng.uniform(1 / 512, 1 - 1 / 512, size=(n, 1)).astype(np.float32)
  log_scale = rng.uniform(-4.5, 0.0, size=(n, 1)).astype(np.float32)
  mean[0], log_scale[0] = 1 / 512, -4.5  # extreme: all mass in the first bin
  mean[1], log_scale[1] = 1 - 1 / 512, -4.5  # and the last
  x = np.tile(np.arange(256, dtype=np.float32) / 255, (n, 1))  # every pixel value
  log_p = distributions.discretized_logistic_log_prob(
    x, mean, log_scale, edges="normalised"
  ).numpy()
  assert np.all(np.isfinite(log_p)) and np.all(log_p <= 0)
  np.testing.assert_allclose(np.exp(log_p.astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
  "mean,log_scale", [(1 / 512, -4.5), (0.3, -2.0), (1 - 1 / 512, -4.5), (0.5, 0.0)]
)
def test_official_discretized_logistic_equals_log_logistic_256_at_every_pixel(mean, log_scale):
  x = np.arange(256, dtype=np.float32) / 255
  got = distributions.discretized_logistic_log_prob(x, np.float32(mean), np.float32(log_scale))
  np.testing.assert_allclose(
    got, official_log_logistic_256(x, mean, log_scale), rtol=1e-4, atol=1e-5
  )


def test_edge_bins_differ_between_forms_by_the_tail_mass():
  """Pixel 0 at mean 1/512, log-scale -4.5: the normalised form adds P(y < 0) to bin 0:
  log sigma(u) - log(sigma(u) - sigma(l) + 1e-7) = 1.8249 nats (value computed by hand:
  l = -(1/512) e^4.5, u = (1/512) e^4.5). Interior pixels are the same in both forms."""
  mean, log_scale = np.float32(1 / 512), np.float32(-4.5)
  x = np.array([0.0, 1 / 255, 1.0], np.float32)
  official = distributions.discretized_logistic_log_prob(x, mean, log_scale).numpy()
  normalised = distributions.discretized_logistic_log_prob(
    x, mean, log_scale, edges="normalised"
  ).numpy()
  np.testing.assert_allclose(normalised[0] - official[0], 1.8249432, atol=2e-4)
  np.testing.assert_allclose(official[0], -2.4340419, atol=2e-4)
  np.testing.assert_allclose(normalised[1], official[1], rtol=1e-5)  # interior: 1e-7 negligible
  # Pixel 255 is 640 scales away: the official floor log(1e-7), the normalised tail far below.
  np.testing.assert_allclose(official[2], np.log(1e-7), rtol=1e-5)
  # The observation model defaults to the official form; 'normalised' is the option.
  params = tf.constant(np.array([[[[-60.0, -4.5]]]], np.float32))  # sigmoid -> clipped 1/512
  zero = tf.zeros((1, 1, 1, 1))
  np.testing.assert_allclose(
    distributions.DiscretizedLogistic().log_prob(zero, params), [-2.4340419], atol=2e-4
  )
  np.testing.assert_allclose(
    distributions.DiscretizedLogistic(edges="normalised").log_prob(zero, params),
    [-0.6090987],
    atol=2e-4,
  )
  with pytest.raises(ValueError, match="edges"):
    distributions.DiscretizedLogistic(edges="tails")


def test_discretized_logistic_interior_bin_is_a_cdf_difference():
  mean, log_scale = np.float32(0.3), np.float32(-2.0)
  k = np.arange(1, 255)
  s = np.exp(np.float64(log_scale))
  expected = np.log(special.expit(((k + 1) / 256 - 0.3) / s) - special.expit((k / 256 - 0.3) / s))
  for edges in distributions.LOGISTIC_EDGES:
    got = distributions.discretized_logistic_log_prob(
      (k / 255).astype(np.float32), mean, log_scale, edges=edges
    )
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


def test_bernoulli_scores_the_data_under_the_decoder_probabilities():
  """log p(x|z) = sum x log p + (1 - x) log(1 - p) with x the DATA and p = sigmoid(decoder)."""
  rng = np.random.RandomState(4)
  x = (rng.rand(3, 4, 4, 1) > 0.5).astype(np.float32)
  p = rng.uniform(0.05, 0.95, size=x.shape).astype(np.float32)
  logits = np.log(p / (1 - p))
  expected = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2, 3))
  got = distributions.Bernoulli().log_prob(tf.constant(x), tf.constant(logits)).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Swapped arguments (the probabilities scored under Bernoulli(x)) would give -inf or a
  # different number; a one-pixel check makes the direction explicit: x = 1, p = 0.9.
  one = distributions.Bernoulli().log_prob(
    tf.ones((1, 1, 1, 1)), tf.fill((1, 1, 1, 1), math.log(9.0))
  )
  np.testing.assert_allclose(one.numpy(), [math.log(0.9)], rtol=1e-6)


def continuous_bernoulli_log_normalizer_float64(logit):
  """log C(lambda) = -log int_0^1 lambda^x (1 - lambda)^(1 - x) dx by quadrature, float64."""
  lam = special.expit(logit)
  z, _ = integrate.quad(
    lambda x: lam**x * (1 - lam) ** (1 - x), 0.0, 1.0, epsabs=1e-13, epsrel=1e-13
  )
  return -np.log(z)


@pytest.mark.parametrize(
  "logit",
  [
    -5.0,
    -1.0,
    -0.02,
    -3e-3,
    -1e-3,
    -1e-5,
    0.0,
    1e-5,
    1e-3,
    2e-3,
    3.9e-3,
    4.1e-3,
    0.01,
    0.3,
    2.0,
    8.0,
  ],
)
def test_continuous_bernoulli_normalizer_vs_float64_integral(logit):
  """Near lambda = 1/2 TFP uses a Taylor expansion; some versions had a wrong coefficient."""
  lam = special.expit(np.float64(logit))
  xs = np.array([0.0, 0.25, 0.5, 1.0])
  expected = (
    xs * np.log(lam)
    + (1 - xs) * np.log1p(-lam)
    + continuous_bernoulli_log_normalizer_float64(logit)
  )
  params = tf.fill((4, 1, 1, 1), np.float32(logit))
  got = [
    distributions.ContinuousBernoulli()
    .log_prob(tf.fill((1, 1, 1, 1), np.float32(x)), params[:1])
    .numpy()[0]
    for x in xs
  ]
  np.testing.assert_allclose(got, expected, atol=2e-6)


def test_continuous_bernoulli_is_normalised_and_samples_in_range():
  logits = tf.constant([[[[-2.0]]], [[[0.0]]], [[[3.0]]]])
  xs = np.linspace(0, 1, 2001, dtype=np.float32)
  for logit in logits.numpy().ravel():
    log_p = (
      distributions.ContinuousBernoulli()
      .log_prob(tf.constant(xs.reshape(-1, 1, 1, 1)), tf.fill((len(xs), 1, 1, 1), logit))
      .numpy()
    )
    np.testing.assert_allclose(np.trapezoid(np.exp(log_p.astype(np.float64)), xs), 1.0, atol=1e-5)
  samples = (
    distributions.ContinuousBernoulli()
    .sample(tf.tile(logits, [1, 50, 50, 1]), seed=keras.random.SeedGenerator(0))
    .numpy()
  )
  assert samples.min() >= 0 and samples.max() <= 1
  means = distributions.ContinuousBernoulli().mean(logits).numpy().ravel()
  np.testing.assert_allclose(samples.mean(axis=(1, 2, 3)), means, atol=0.02)
