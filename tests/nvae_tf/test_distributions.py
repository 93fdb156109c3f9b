"""Soft-clamped Normal, residual posterior, analytic KL vs Monte Carlo, Bernoulli log-likelihood."""

import numpy as np
import tensorflow as tf

from nvae_tf import distributions as dists


def test_soft_clamp_bounds_and_identity_near_zero():
  x = tf.constant([-1e3, -5.0, -0.01, 0.0, 0.01, 5.0, 1e3])
  y = dists.soft_clamp(x).numpy()
  assert np.all(np.abs(y) < 5.0 + 1e-6)
  np.testing.assert_allclose(y[2:5], [-0.01, 0.0, 0.01], atol=1e-6)
  np.testing.assert_allclose(y, 5 * np.tanh(x.numpy() / 5), rtol=1e-6)


def test_normal_parameterisation_and_temperature():
  mu, log_sigma = tf.constant([0.3, 20.0]), tf.constant([-0.7, -40.0])
  d = dists.normal(mu, log_sigma, temperature=0.5)
  expected_sigma = (np.exp(5 * np.tanh(log_sigma.numpy() / 5)) + 1e-2) * 0.5
  np.testing.assert_allclose(d.scale.numpy(), expected_sigma, rtol=1e-6)
  np.testing.assert_allclose(d.loc.numpy(), 5 * np.tanh(mu.numpy() / 5), rtol=1e-6)
  assert d.scale.numpy()[1] >= 0.5 * 1e-2  # the floor survives extreme log-sigmas


def test_residual_posterior_adds_offsets_before_the_clamp():
  mu_p, ls_p = tf.constant([1.0, -2.0]), tf.constant([0.5, -1.0])
  dmu, dls = tf.constant([0.25, 4.0]), tf.constant([-0.5, 7.0])
  q = dists.residual_normal(mu_p, ls_p, dmu, dls)
  ref = dists.normal(mu_p + dmu, ls_p + dls)
  np.testing.assert_allclose(q.loc.numpy(), ref.loc.numpy())
  np.testing.assert_allclose(q.scale.numpy(), ref.scale.numpy())
  # Zero offsets give q == p, hence KL 0.
  same = dists.residual_normal(mu_p, ls_p, tf.zeros(2), tf.zeros(2))
  np.testing.assert_allclose(
    dists.analytic_kl(same, dists.normal(mu_p, ls_p)).numpy(), 0.0, atol=1e-6
  )


def test_analytic_kl_matches_closed_form_and_monte_carlo():
  rng = np.random.RandomState(0)
  mu_q, ls_q, mu_p, ls_p = (tf.constant(rng.randn(5).astype(np.float32)) for _ in range(4))
  q, p = dists.normal(mu_q, ls_q), dists.normal(mu_p, ls_p)
  kl = dists.analytic_kl(q, p).numpy()
  sq, sp, mq, mp = q.scale.numpy(), p.scale.numpy(), q.loc.numpy(), p.loc.numpy()
  closed = 0.5 * ((mq - mp) / sp) ** 2 + 0.5 * (sq / sp) ** 2 - 0.5 - np.log(sq / sp)
  np.testing.assert_allclose(kl, closed, rtol=1e-5, atol=1e-6)
  noise = tf.random.stateless_normal((200_000, 5), seed=(1, 2))
  z = dists.sample(q, noise)
  log_ratio = (q.log_prob(z) - p.log_prob(z)).numpy()
  mc, se = log_ratio.mean(0), log_ratio.std(0) / np.sqrt(len(log_ratio))
  assert np.all(np.abs(mc - kl) < 4 * se + 1e-3), (mc, kl, se)


def test_top_prior_is_the_official_floored_standard_normal():
  p = dists.standard_prior((3,))
  np.testing.assert_allclose(p.scale.numpy(), 1.01, rtol=1e-6)  # exp(0) + 1e-2
  np.testing.assert_allclose(
    dists.standard_prior((3,), temperature=0.5).scale.numpy(), 0.505, rtol=1e-6
  )


def test_bernoulli_log_prob():
  logits = tf.constant([-2.0, 0.0, 3.0])
  x = tf.constant([0.0, 1.0, 1.0])
  p = 1 / (1 + np.exp(-logits.numpy()))
  expected = x.numpy() * np.log(p) + (1 - x.numpy()) * np.log(1 - p)
  np.testing.assert_allclose(dists.bernoulli_log_prob(logits, x).numpy(), expected, rtol=1e-5)
