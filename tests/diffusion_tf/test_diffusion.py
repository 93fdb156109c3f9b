"""GaussianDiffusion maths against closed forms (no network: analytic epsilon functions)."""

import functools
import math

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

from diffusion_tf import diffusion, distributions
from evaluation.likelihood import bits_per_dim
from tests.diffusion_tf import numpy_ddpm

SEED = tf.constant([3, 4], tf.int32)


@functools.cache
def _cached_draws(shape, seed, indices, jit):
  return numpy_ddpm.draws(shape, list(seed), indices, jit=jit)


def _draws(shape, seed, indices, *, jit):
  """numpy_ddpm.draws, computed once per (shape, seed, indices, jit) for the module: the noise of
  a seed does not depend on the variance or clipping a parametrised case tests (one compile)."""
  key = tuple(int(v) for v in np.asarray(seed))
  return _cached_draws(tuple(int(v) for v in shape), key, tuple(int(i) for i in indices), jit)


def _small(variance=diffusion.Variance.FIXED_LARGE, num_timesteps=12):
  return diffusion.GaussianDiffusion(betas=np.linspace(1e-3, 0.3, num_timesteps), variance=variance)


def _x0(shape=(3, 4, 4, 1), seed=0):
  """8-bit-valued data in [-1, 1]."""
  k = np.random.default_rng(seed).integers(0, 256, shape)
  return tf.constant(k / 127.5 - 1.0, tf.float32)


def test_schedules():
  betas = diffusion.linear_beta_schedule()
  assert betas.dtype == np.float64 and betas.shape == (1000,)
  assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
  cos = diffusion.cosine_beta_schedule(100)
  abar = np.cumprod(1 - cos)
  f = lambda t: np.cos((t / 100 + 0.008) / 1.008 * np.pi / 2) ** 2
  # Before the 0.999 clip binds (last step only), abar_t = f(t) / f(0) exactly.
  assert cos[-1] == 0.999 and np.all(cos[:-1] < 0.999)
  np.testing.assert_allclose(abar[:-1], f(np.arange(1, 100)) / f(0), rtol=1e-6)
  with pytest.raises(ValueError):
    diffusion.GaussianDiffusion(betas=np.array([0.1, 1.5]))


def test_q_sample_matches_closed_form_mean_and_variance():
  d = _small()
  x0 = _x0((1, 2, 2, 1))
  t = tf.constant([7])
  n = 20000
  noise = tf.random.stateless_normal((n, 2, 2, 1), seed=SEED)
  xt = d.q_sample(tf.repeat(x0, n, axis=0), tf.fill([n], 7), noise).numpy()
  abar = np.prod(1 - d.betas[:8])
  np.testing.assert_allclose(xt.mean(0), np.sqrt(abar) * x0.numpy()[0], atol=0.03)
  np.testing.assert_allclose(xt.var(0), 1 - abar, rtol=0.05)
  mean, var, log_var = d.q_mean_variance(x0, t)
  np.testing.assert_allclose(mean.numpy(), np.sqrt(abar) * x0.numpy(), rtol=1e-5)
  np.testing.assert_allclose(var.numpy(), 1 - abar, rtol=1e-5)
  np.testing.assert_allclose(log_var.numpy(), np.log(1 - abar), rtol=1e-5)


def test_posterior_matches_gaussian_algebra():
  """q(x_{t-1}|x_t,x_0) ∝ N(x_{t-1}; sqrt(abar_{t-1}) x_0, 1-abar_{t-1}) N(x_t; sqrt(alpha_t) x_{t-1}, beta_t)."""
  d = _small()
  x0, xt = _x0(seed=1), tf.random.stateless_normal((3, 4, 4, 1), seed=SEED)
  t = np.array([1, 5, 11])
  mean, var, _ = d.q_posterior_mean_variance(x0, xt, tf.constant(t))
  abar = np.cumprod(1 - d.betas)
  a_prev, alpha, beta = abar[t - 1], 1 - d.betas[t], d.betas[t]
  precision = 1 / (1 - a_prev) + alpha / beta
  expected_var = 1 / precision
  b = lambda v: v[:, None, None, None]
  expected_mean = b(expected_var) * (
    b(np.sqrt(a_prev) / (1 - a_prev)) * x0.numpy() + b(np.sqrt(alpha) / beta) * xt.numpy()
  )
  np.testing.assert_allclose(var.numpy(), np.broadcast_to(b(expected_var), var.shape), rtol=1e-5)
  np.testing.assert_allclose(mean.numpy(), expected_mean, rtol=1e-4, atol=1e-6)


def test_normal_kl_and_discretized_gaussian_against_references():
  m1, l1, m2, l2 = 0.3, -1.2, -0.5, 0.4
  expected = tfp.distributions.kl_divergence(
    tfp.distributions.Normal(m1, math.exp(0.5 * l1)),
    tfp.distributions.Normal(m2, math.exp(0.5 * l2)),
  )
  assert float(distributions.normal_kl(m1, l1, m2, l2)) == pytest.approx(float(expected), rel=1e-5)
  x = tf.constant([-1.0, -0.2 + 1 / 255, 1.0])
  mu, s = 0.1, 0.6
  got = distributions.discretized_gaussian_log_likelihood(
    x, means=mu, log_scales=math.log(s)
  ).numpy()
  cdf = lambda v: scipy.stats.norm.cdf(v, mu, s)
  exact = np.log(
    [cdf(-1 + 1 / 255), cdf(x[1] + 1 / 255) - cdf(x[1] - 1 / 255), 1 - cdf(1 - 1 / 255)]
  )
  np.testing.assert_allclose(got, exact, rtol=5e-3)  # the tanh CDF approximation


def test_bits_per_dim_of_a_known_gaussian():
  """Data = one point x*; the exact epsilon of q makes every KL term 0 under fixed-small
  variances, so the bound is prior KL + the decoder's discretized N(x*, beta~_1) mass: closed form."""
  d = _small(diffusion.Variance.FIXED_SMALL)
  x_star = _x0((1, 3, 3, 1), seed=2)
  sqrt_abar = np.sqrt(np.cumprod(1 - d.betas))
  sqrt_1m = np.sqrt(1 - np.cumprod(1 - d.betas))

  def exact_eps(x_t, t):
    a = tf.gather(tf.constant(sqrt_abar, tf.float32), t)[:, None, None, None]
    s = tf.gather(tf.constant(sqrt_1m, tf.float32), t)[:, None, None, None]
    return (x_t - a * x_star) / s

  x0 = tf.repeat(x_star, 2, axis=0)
  vlb = d.variational_bound(exact_eps, x0, seed=SEED)
  np.testing.assert_allclose(vlb.diffusion.numpy(), 0.0, atol=5e-3)
  abar_last = np.prod(1 - d.betas)
  prior = 9 * 0.5 * (-1 - np.log(1 - abar_last) + (1 - abar_last)) + 0.5 * abar_last * np.sum(
    x_star.numpy() ** 2
  )
  np.testing.assert_allclose(vlb.prior.numpy(), prior, rtol=1e-4)
  std = math.sqrt(d.posterior_variance[1])
  x = x_star.numpy().ravel()
  upper = np.where(x > 0.999, np.inf, x + 1 / 255)
  lower = np.where(x < -0.999, -np.inf, x - 1 / 255)
  decoder = -np.sum(
    np.log(scipy.stats.norm.cdf(upper, x, std) - scipy.stats.norm.cdf(lower, x, std))
  )
  np.testing.assert_allclose(vlb.decoder.numpy(), decoder, rtol=2e-3)
  expected_bpd = bits_per_dim(prior + decoder, 9)
  np.testing.assert_allclose(bits_per_dim(vlb.total.numpy(), 9), expected_bpd, rtol=2e-3)


@pytest.mark.parametrize("clip", [True, False])
def test_vlb_of_a_wrong_model_equals_numpy_official_bound(clip):
  """Every term of the bound against the NumPy float64 calc_bpd_loop, on the same x_t draws."""
  d = _small()
  x0 = _x0()
  eps_np = lambda x, t: 0.3 * np.tanh(x) - 0.02 * t
  eps_tf = lambda x, t: 0.3 * tf.tanh(x) - 0.02 * tf.cast(t, tf.float32)[:, None, None, None]
  vlb = d.variational_bound(eps_tf, x0, seed=SEED, clip_denoised=clip)  # eager: CPU-kernel noise
  noises = _draws(x0.shape, SEED, range(d.num_timesteps), jit=False)
  total, prior, kl, decoder = numpy_ddpm.vlb(
    numpy_ddpm.Schedule(d.betas),
    eps_np,
    x0.numpy().astype(np.float64),
    noises,
    variance="fixed_large",
    clip=clip,
  )
  np.testing.assert_allclose(vlb.prior.numpy(), prior, rtol=1e-5)
  np.testing.assert_allclose(vlb.diffusion.numpy(), kl, rtol=1e-4)
  np.testing.assert_allclose(vlb.decoder.numpy(), decoder, rtol=1e-4)
  np.testing.assert_allclose(vlb.total.numpy(), total, rtol=1e-4)


def test_official_bound_clips_x0_by_default():
  d = _small()
  eps_tf = lambda x, t: 0.3 * tf.tanh(x) - 0.02 * tf.cast(t, tf.float32)[:, None, None, None]
  default = d.variational_bound(eps_tf, _x0(), seed=SEED).total.numpy()
  clipped = d.variational_bound(eps_tf, _x0(), seed=SEED, clip_denoised=True).total.numpy()
  unclipped = d.variational_bound(eps_tf, _x0(), seed=SEED, clip_denoised=False).total.numpy()
  np.testing.assert_array_equal(default, clipped)
  assert np.all(np.abs(clipped - unclipped) > 1.0)  # this model's x0_hat leaves [-1, 1]


def _oracle(d, x0):
  """The true epsilon of any x_t built from x0: (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
  a = np.sqrt(d.alphas_cumprod)
  s = np.sqrt(1.0 - d.alphas_cumprod)

  def eps(x_t, t):
    return (x_t - tf.gather(tf.constant(a, tf.float32), t)[:, None, None, None] * x0) / tf.gather(
      tf.constant(s, tf.float32), t
    )[:, None, None, None]

  return eps


@pytest.mark.parametrize("variance", list(diffusion.Variance))
def test_true_epsilon_samplers_return_the_data_point(variance):
  """Given the true noise, x0_hat = x0 at every step: the ancestral sampler's last step (noise-free,
  coefficients 1 and 0) and DDIM's last step (abar_prev = 1, sigma = 0) return x0, and DDIM eta = 0
  started from x_T = q_sample(x0, T-1, eps) stays on that path."""
  d = _small(variance)
  x0 = _x0(seed=4)
  oracle = _oracle(d, x0)
  shape = tuple(x0.shape)
  ancestral = d.p_sample_loop(oracle, shape, seed=SEED).numpy()
  np.testing.assert_allclose(ancestral, x0.numpy(), atol=2e-5)
  for eta in (0.0, 1.0):
    for num_steps in (12, 5):
      out = d.ddim_sample_loop(oracle, shape, seed=SEED, num_steps=num_steps, eta=eta).numpy()
      np.testing.assert_allclose(out, x0.numpy(), atol=2e-5, err_msg=f"eta={eta}")
  noise = tf.random.stateless_normal(shape, seed=[9, 9])
  x_T = d.q_sample(x0, tf.fill([shape[0]], d.num_timesteps - 1), noise)
  path = tf.function(lambda: d.ddim_sample_loop(oracle, shape, seed=SEED, num_steps=12, x_T=x_T))()
  np.testing.assert_allclose(path.numpy(), x0.numpy(), atol=2e-5)
  # One step with the true epsilon: the posterior mean of q(x_{t-1} | x_t, x0), Gaussian algebra.
  t = np.array([1, 6, 11])
  x_t = d.q_sample(x0, tf.constant(t), noise)
  p = d.p_mean_variance(oracle, x_t, tf.constant(t), clip_denoised=False)
  sched = numpy_ddpm.Schedule(d.betas)
  for i, ti in enumerate(t):
    mean, _ = sched.posterior(
      x0.numpy()[i].astype(np.float64), x_t.numpy()[i].astype(np.float64), ti
    )
    np.testing.assert_allclose(p.mean.numpy()[i], mean, rtol=1e-4, atol=1e-5)


def test_fixed_large_and_small_variance_values():
  betas = np.linspace(1e-3, 0.3, 12)
  abar = np.cumprod(1 - betas)
  abar_prev = np.concatenate([[1.0], abar[:-1]])
  posterior = betas * (1 - abar_prev) / (1 - abar)
  t = tf.constant([0, 1, 5, 11])
  x = tf.zeros([4, 2, 2, 1])
  eps0 = lambda x_, t_: tf.zeros_like(x_)
  large = _small(diffusion.Variance.FIXED_LARGE).p_mean_variance(eps0, x, t, clip_denoised=False)
  small = _small(diffusion.Variance.FIXED_SMALL).p_mean_variance(eps0, x, t, clip_denoised=False)
  # Official: fixedlarge = (betas, log(append(posterior_variance[1], betas[1:]))).
  np.testing.assert_allclose(large.variance.numpy()[:, 0, 0, 0], betas[[0, 1, 5, 11]], rtol=1e-6)
  np.testing.assert_allclose(
    large.log_variance.numpy()[:, 0, 0, 0],
    np.log([posterior[1], betas[1], betas[5], betas[11]]),
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    small.variance.numpy()[:, 0, 0, 0], posterior[[0, 1, 5, 11]], rtol=1e-6, atol=1e-12
  )
  np.testing.assert_allclose(
    small.log_variance.numpy()[:, 0, 0, 0], np.log(posterior[[1, 1, 5, 11]]), rtol=1e-6
  )


def _toy_eps(x, t):
  return 0.5 * tf.tanh(x) + 0.01 * tf.cast(t, tf.float32)[:, None, None, None]


def _toy_eps_np(x, t):
  return 0.5 * np.tanh(x) + 0.01 * t


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("variance", list(diffusion.Variance))
def test_compiled_ancestral_sampler_equals_numpy(jit, variance):
  """The compiled while loop against the independent NumPy sampler on the same noise (XLA draws
  other normals than the CPU kernel from one seed, so the noise is drawn the same way)."""
  d = _small(variance)
  shape = (2, 4, 4, 1)
  sampler = tf.function(lambda seed: d.p_sample_loop(_toy_eps, shape, seed=seed), jit_compile=jit)
  got = sampler(SEED).numpy()
  noises = _draws(shape, SEED, range(d.num_timesteps + 1), jit=jit)
  x_T = noises[d.num_timesteps]
  expected = numpy_ddpm.ancestral(
    numpy_ddpm.Schedule(d.betas), _toy_eps_np, x_T, noises, variance=variance.value, clip=True
  )
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  other = sampler(tf.constant([5, 6])).numpy()  # the same compiled loop, another seed
  assert np.abs(other - got).max() > 0.1


@pytest.mark.parametrize("clip", [False, True])
def test_compiled_ddim_sampler_equals_numpy(clip):
  d = _small()
  shape = (2, 4, 4, 1)
  steps = d.ddim_timesteps(5)  # 12 // 5 = 2: 0, 2, ..., 10 (six steps, official uniform skip)
  np.testing.assert_array_equal(steps, [0, 2, 4, 6, 8, 10])
  got = tf.function(
    lambda: d.ddim_sample_loop(
      _toy_eps, shape, seed=SEED, num_steps=5, eta=0.5, clip_denoised=clip
    ),
    jit_compile=True,
  )().numpy()
  noises = _draws(shape, SEED, list(steps) + [d.num_timesteps], jit=True)
  x_T = noises[d.num_timesteps]
  expected = numpy_ddpm.ddim(
    numpy_ddpm.Schedule(d.betas), _toy_eps_np, x_T, steps, noises, eta=0.5, clip=clip
  )
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_ddim_eta_one_over_all_steps_matches_ancestral_fixed_small():
  d = _small(diffusion.Variance.FIXED_SMALL)
  x_t = tf.random.stateless_normal((12, 4, 4, 1), seed=SEED)
  t = tf.range(12)
  mean, std = d.ddim_mean_std(_toy_eps, x_t, t, t - 1, eta=1.0, clip_denoised=False)
  p = d.p_mean_variance(_toy_eps, x_t, t, clip_denoised=False)
  np.testing.assert_allclose(mean.numpy(), p.mean.numpy(), atol=1e-4)
  # t = 0 is the noiseless last step of both samplers; t >= 1: sigma^2 = beta~_t.
  np.testing.assert_allclose(std.numpy()[1:, 0, 0, 0] ** 2, d.posterior_variance[1:], rtol=1e-4)
  assert std.numpy()[0, 0, 0, 0] == 0.0
  # eta = 0: the deterministic DDIM step (no noise at any t).
  _, std0 = d.ddim_mean_std(_toy_eps, x_t, t, t - 1, eta=0.0, clip_denoised=False)
  np.testing.assert_array_equal(std0.numpy(), 0.0)


def test_ddim_timesteps_respacing():
  d = diffusion.GaussianDiffusion.linear()
  np.testing.assert_array_equal(d.ddim_timesteps(50), np.arange(50) * 20)
  # Official DDIM: range(0, T, T // S), 31 steps for S = 30 (diffusers "leading" stops at 30).
  np.testing.assert_array_equal(d.ddim_timesteps(30), np.arange(31) * 33)
  np.testing.assert_array_equal(d.ddim_timesteps(30, spacing="leading"), np.arange(30) * 33)
  np.testing.assert_array_equal(d.ddim_timesteps(4, spacing="trailing"), [249, 499, 749, 999])
  np.testing.assert_array_equal(d.ddim_timesteps(4, spacing="linspace"), [0, 333, 666, 999])
  np.testing.assert_array_equal(d.ddim_timesteps(1000), np.arange(1000))
  with pytest.raises(ValueError):
    d.ddim_timesteps(0)
  with pytest.raises(ValueError, match="spacing"):
    d.ddim_timesteps(10, spacing="quadratic")


def official_quad(num_timesteps, num_steps):
  """ermongroup/ddim runners/diffusion.py, skip_type == "quad" (in NumPy, as written there)."""
  seq = np.linspace(0, np.sqrt(num_timesteps * 0.8), num_steps) ** 2
  return [int(s) for s in list(seq)]


def test_ddim_quad_spacing_is_the_official_formula():
  d = diffusion.GaussianDiffusion.linear()
  for num_steps in (1, 7, 10, 20, 50, 100, 333, 1000):
    np.testing.assert_array_equal(
      d.ddim_timesteps(num_steps, spacing="quad"),
      official_quad(1000, num_steps),
      err_msg=str(num_steps),
    )
  np.testing.assert_array_equal(
    d.ddim_timesteps(10, spacing="quad"), [0, 9, 39, 88, 158, 246, 355, 483, 632, 800]
  )
  assert list(d.ddim_timesteps(100, spacing="quad")[:6]) == [0, 0, 0, 0, 1, 2]  # repeats kept


def test_compiled_ddim_sampler_follows_the_quad_steps_with_repeats():
  d = _small()
  shape = (2, 4, 4, 1)
  steps = d.ddim_timesteps(5, spacing="quad")
  np.testing.assert_array_equal(steps, official_quad(12, 5))
  np.testing.assert_array_equal(steps, [0, 0, 2, 5, 9])
  got = tf.function(
    lambda: d.ddim_sample_loop(_toy_eps, shape, seed=SEED, num_steps=5, eta=0.5, spacing="quad"),
    jit_compile=True,
  )().numpy()
  noises = _draws(shape, SEED, list(steps) + [d.num_timesteps], jit=True)
  expected = numpy_ddpm.ddim(
    numpy_ddpm.Schedule(d.betas), _toy_eps_np, noises[d.num_timesteps], steps, noises, eta=0.5
  )
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_simple_loss_is_zero_for_the_true_noise_and_positive_otherwise():
  d = _small()
  x0, noise = _x0(), tf.random.stateless_normal((3, 4, 4, 1), seed=SEED)
  t = tf.constant([0, 4, 11])
  x_t = d.q_sample(x0, t, noise)
  oracle = lambda x, tt: (
    (x - d._extract(d.sqrt_alphas_cumprod, tt, x) * x0)
    / d._extract(d.sqrt_one_minus_alphas_cumprod, tt, x)
  )
  np.testing.assert_allclose(d.simple_loss(oracle, x0, t, noise).numpy(), 0.0, atol=1e-4)
  loss = d.simple_loss(lambda x, tt: tf.zeros_like(x), x0, t, noise).numpy()
  np.testing.assert_allclose(loss, np.mean(noise.numpy() ** 2, axis=(1, 2, 3)), rtol=1e-5)
  del x_t
