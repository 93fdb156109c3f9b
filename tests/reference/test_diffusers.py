"""Our DDPM / DDIM maths against diffusers' `DDPMScheduler` and `DDIMScheduler`.

Same model output (random arrays, no network), same x_t, same noise (handed to diffusers as
`variance_noise`, or drawn from the torch generator we give it and re-drawn here): our predicted x0,
reverse-process variance and one sampler step equal theirs to 1e-6 (absolute, on values of order 1;
diffusers computes its tables in float32, ours in float64 cast to float32). The DDIM timestep lists
equal diffusers' for the spacing that corresponds (see docs/diffusion.md).

diffusers builds abar_t with a float32 cumprod, and 1 - abar_0 = 1e-4 then carries a ~6e-4 relative
rounding error (cancellation), which moves x0_hat at t = 0 by ~2e-6. So that the steps compare
formulas rather than float32 rounding, each scheduler is handed our float64 abar table
(`alphas_cumprod`, the only table its step reads); its own float32 table is compared separately.
"""

import numpy as np
import pytest
import tensorflow as tf

from diffusion_tf import diffusion
from tests.reference import lazy, requires

pytestmark = requires("torch", "diffusers")
torch = lazy("torch")
diffusers = lazy("diffusers")

TOLERANCE = 1e-6
T = 1000
SHAPE = (3, 4, 4, 2)  # NHWC for us; diffusers is layout-agnostic (elementwise maths)
TIMESTEPS = (0, 1, 2, 17, 500, 998, 999)


def _arrays(seed):
  rng = np.random.default_rng(seed)
  x_t = rng.standard_normal(SHAPE).astype(np.float32)
  eps = rng.standard_normal(SHAPE).astype(np.float32)
  noise = rng.standard_normal(SHAPE).astype(np.float32)
  return x_t, eps, noise


def _ours(variance):
  return diffusion.GaussianDiffusion(betas=diffusion.linear_beta_schedule(T), variance=variance)


def _exact(scheduler):
  """The scheduler with our float64 abar table (see the module docstring)."""
  scheduler.alphas_cumprod = torch.from_numpy(np.cumprod(1.0 - diffusion.linear_beta_schedule(T)))
  return scheduler


def test_diffusers_float32_schedule_equals_ours():
  theirs = diffusers.DDPMScheduler(
    num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear"
  ).alphas_cumprod.numpy()
  ours = _ours(diffusion.Variance.FIXED_SMALL).alphas_cumprod
  np.testing.assert_allclose(theirs, ours, rtol=2e-5)  # float32 cumprod over 1000 factors


def assert_close(ours, theirs, what, *, scale=1.0):
  """max |ours - theirs| <= 1e-6 max(1, scale): absolute on values of order 1. `scale`: the size of
  the largest float32 intermediate, for x0_hat = x_t / sqrt(abar_t) - ... near t = T, where
  |x_t| / sqrt(abar_t) ~ 500 has a float32 spacing of 3e-5 in both implementations."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape
  err = np.abs(ours - theirs).max()
  assert err <= TOLERANCE * max(1.0, scale), f"{what}: max |diff| {err:.3g}"


def _x0_scale(x_t, t):
  """max |x_t| / sqrt(abar_t): the float32 scale of the x0_hat computation."""
  return float(np.abs(x_t).max() / np.sqrt(np.cumprod(1.0 - diffusion.linear_beta_schedule(T))[t]))


def _t(t):
  return tf.fill([SHAPE[0]], t)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step_equals_diffusers(variance, clip):
  ours = _ours(diffusion.Variance(variance))
  theirs = _exact(
    diffusers.DDPMScheduler(
      num_train_timesteps=T,
      beta_start=1e-4,
      beta_end=0.02,
      beta_schedule="linear",
      variance_type=variance,
      clip_sample=clip,
      prediction_type="epsilon",
    )
  )
  for i, t in enumerate(TIMESTEPS):
    x_t, eps, _ = _arrays(i)
    generator_seed = 100 + i
    out = theirs.step(
      torch.from_numpy(eps),
      t,
      torch.from_numpy(x_t),
      generator=torch.Generator().manual_seed(generator_seed),
    )
    # The noise diffusers drew (randn_tensor on CPU = torch.randn with that generator).
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(generator_seed)).numpy()
    p = ours.p_mean_variance(
      lambda x, tt, eps=eps: tf.constant(eps), tf.constant(x_t), _t(t), clip_denoised=clip
    )
    assert_close(p.pred_x0, out.pred_original_sample, f"x0_hat at t={t}", scale=_x0_scale(x_t, t))
    sample = ours.p_sample(
      lambda x, tt, eps=eps: tf.constant(eps),
      tf.constant(x_t),
      _t(t),
      tf.constant(noise),
      clip_denoised=clip,
    )
    assert_close(sample, out.prev_sample, f"x_(t-1) at t={t}")
    if t > 0:  # the variance of the step (diffusers adds no noise at t = 0, nor do we)
      np.testing.assert_allclose(
        p.variance.numpy()[:, 0, 0, 0], float(theirs._get_variance(t)), rtol=1e-5
      )


def test_fixed_small_and_large_variances_differ_as_diffusers_says():
  """A guard that the two variance types are not accidentally the same table."""
  small = _exact(diffusers.DDPMScheduler(num_train_timesteps=T, variance_type="fixed_small"))
  large = _exact(diffusers.DDPMScheduler(num_train_timesteps=T, variance_type="fixed_large"))
  t = 1
  ratio = float(large._get_variance(t)) / float(small._get_variance(t))
  ours = (
    _ours(diffusion.Variance.FIXED_LARGE).model_variance[t]
    / _ours(diffusion.Variance.FIXED_SMALL).model_variance[t]
  )
  assert ratio > 2 and ours == pytest.approx(ratio, rel=1e-6)


# ------------------------------------------------------------------------------ DDIM


def _ddim(num_steps, spacing, clip=False):
  scheduler = diffusers.DDIMScheduler(
    num_train_timesteps=T,
    beta_start=1e-4,
    beta_end=0.02,
    beta_schedule="linear",
    clip_sample=clip,
    set_alpha_to_one=True,
    steps_offset=0,
    timestep_spacing=spacing,
    prediction_type="epsilon",
  )
  scheduler.set_timesteps(num_steps)
  return _exact(scheduler)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("num_steps", [50, 30, 7])
def test_ddim_timesteps_equal_diffusers_spacing(spacing, num_steps):
  ours = _ours(diffusion.Variance.FIXED_SMALL).ddim_timesteps(num_steps, spacing=spacing)
  np.testing.assert_array_equal(ours[::-1], _ddim(num_steps, spacing).timesteps.numpy())


def test_official_uniform_spacing_vs_diffusers_leading():
  """ermongroup's range(0, T, T // S) is diffusers' "leading" when S divides T; otherwise it has
  more steps (T = 1000, S = 30: skip 33, 31 steps 0 .. 990; leading stops at 957)."""
  d = _ours(diffusion.Variance.FIXED_SMALL)
  np.testing.assert_array_equal(d.ddim_timesteps(50)[::-1], _ddim(50, "leading").timesteps.numpy())
  uniform = d.ddim_timesteps(30)
  np.testing.assert_array_equal(uniform, np.arange(0, 1000, 33))
  assert len(uniform) == 31
  np.testing.assert_array_equal(uniform[:30][::-1], _ddim(30, "leading").timesteps.numpy())


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_step_equals_diffusers(eta, clip):
  ours = _ours(diffusion.Variance.FIXED_SMALL)
  steps = ours.ddim_timesteps(50)
  theirs = _ddim(50, "leading", clip=clip)
  previous = dict(zip(steps, np.append(-1, steps[:-1])))
  for i, t in enumerate([int(steps[-1]), int(steps[25]), int(steps[1]), int(steps[0])]):
    x_t, eps, noise = _arrays(10 + i)
    out = theirs.step(
      torch.from_numpy(eps),
      t,
      torch.from_numpy(x_t),
      eta=eta,
      use_clipped_model_output=clip,
      variance_noise=torch.from_numpy(noise),
    )
    mean, std = ours.ddim_mean_std(
      lambda x, tt, eps=eps: tf.constant(eps),
      tf.constant(x_t),
      _t(t),
      _t(int(previous[t])),
      eta=eta,
      clip_denoised=clip,
    )
    assert_close(mean + std * noise, out.prev_sample, f"DDIM x_prev at t={t}")
    if eta == 1.0 and t > 0:  # the step is stochastic: the noise must enter
      assert float(np.min(std.numpy())) > 1e-3


def test_ddim_chain_equals_diffusers_loop():
  """50 DDIM steps (eta 0) with the same deterministic toy epsilon network in TF and torch."""
  ours = _ours(diffusion.Variance.FIXED_SMALL)
  theirs = _ddim(50, "leading")
  x_T = np.random.default_rng(7).standard_normal(SHAPE).astype(np.float32)

  def eps_tf(x, t):
    return 0.5 * tf.tanh(x) + 1e-4 * tf.cast(t, tf.float32)[:, None, None, None]

  def eps_torch(x, t):
    return 0.5 * torch.tanh(x) + 1e-4 * float(t)

  got = ours.ddim_sample_loop(
    eps_tf, SHAPE, seed=tf.constant([0, 0]), num_steps=50, eta=0.0, x_T=tf.constant(x_T)
  ).numpy()
  x = torch.from_numpy(x_T)
  for t in theirs.timesteps:
    x = theirs.step(eps_torch(x, int(t)), int(t), x, eta=0.0).prev_sample
  # 50 float32 steps; the toy network lets |x| grow to ~200: relative to the largest value.
  assert np.abs(got - x.numpy()).max() <= 1e-5 * np.abs(x.numpy()).max()


# ------------------------------------------------------------------------------ report


def report() -> list[tuple[str, float]]:
  """(check, max |ours - theirs|) on the test's arrays, for docs/diffusion.md:
  python -m tests.reference.test_diffusers"""
  rows = []
  for variance in ("fixed_small", "fixed_large"):
    ours = _ours(diffusion.Variance(variance))
    theirs = _exact(
      diffusers.DDPMScheduler(num_train_timesteps=T, variance_type=variance, clip_sample=False)
    )
    err = 0.0
    for i, t in enumerate(TIMESTEPS):
      x_t, eps, _ = _arrays(i)
      out = theirs.step(
        torch.from_numpy(eps),
        t,
        torch.from_numpy(x_t),
        generator=torch.Generator().manual_seed(100 + i),
      )
      noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(100 + i)).numpy()
      sample = ours.p_sample(
        lambda x, tt, eps=eps: tf.constant(eps),
        tf.constant(x_t),
        _t(t),
        tf.constant(noise),
        clip_denoised=False,
      )
      err = max(err, float(np.abs(sample.numpy() - out.prev_sample.numpy()).max()))
    rows.append((f"DDPMScheduler {variance}: one step x_(t-1), t in {TIMESTEPS}", err))
  ours = _ours(diffusion.Variance.FIXED_SMALL)
  steps = ours.ddim_timesteps(50)
  previous = dict(zip(steps, np.append(-1, steps[:-1])))
  for eta in (0.0, 1.0):
    theirs, err = _ddim(50, "leading"), 0.0
    for i, t in enumerate(int(s) for s in steps):
      x_t, eps, noise = _arrays(i)
      out = theirs.step(
        torch.from_numpy(eps),
        t,
        torch.from_numpy(x_t),
        eta=eta,
        variance_noise=torch.from_numpy(noise),
      )
      mean, std = ours.ddim_mean_std(
        lambda x, tt, eps=eps: tf.constant(eps),
        tf.constant(x_t),
        _t(t),
        _t(int(previous[t])),
        eta=eta,
        clip_denoised=False,
      )
      err = max(err, float(np.abs((mean + std * noise).numpy() - out.prev_sample.numpy()).max()))
    rows.append((f"DDIMScheduler eta={eta:g}: one step at each of the 50 timesteps", err))
  same = all(
    np.array_equal(ours.ddim_timesteps(s, spacing=sp)[::-1], _ddim(s, sp).timesteps.numpy())
    for sp in ("leading", "trailing", "linspace")
    for s in (50, 30, 7)
  )
  rows.append(
    (
      "DDIM timestep lists (leading, trailing, linspace; S = 50, 30, 7): identical",
      0.0 if same else float("nan"),
    )
  )
  return rows


if __name__ == "__main__":
  print("| check | max abs difference |\n| --- | --- |")
  for name, value in report():
    print(f"| {name} | {value:.2g} |")
