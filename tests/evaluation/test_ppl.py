"""Perceptual path length against closed forms for a linear generator."""

import numpy as np
import pytest

from evaluation import ppl

LATENT, H, W = 6, 4, 5


def _linear_generator(rng):
  a = rng.normal(size=(LATENT, H * W)).astype(np.float32) * 0.1

  def generate(z):  # images = z A + 0.5, [B, H, W, 1]
    return (np.asarray(z, np.float32) @ a + 0.5).reshape(-1, H, W, 1)

  return generate, a.astype(np.float64)


def _recording_sampler(rng, record):
  def sample(n):
    z = rng.normal(size=(n, LATENT))
    record.append(z)
    return z

  return sample


def _squared_pixel_distance(x, y):
  return ((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2).reshape(len(x), -1).sum(1)


def _linear_path_values(rng_seed, **kwargs):
  """(d values, drawn latents [z0, z1, ...], A) of the linear generator, squared pixel distance."""
  rng = np.random.default_rng(rng_seed)
  generate, a = _linear_generator(rng)
  drawn = []
  values = ppl.path_length_samples(
    generate,
    latent_sampler=_recording_sampler(rng, drawn),
    distance=_squared_pixel_distance,
    **kwargs,
  )
  return values, drawn, a


def test_lerp_path_length_of_a_linear_generator_is_closed_form():
  values, drawn, a = _linear_path_values(
    0, num_samples=300, interpolation="lerp", batch_size=64, epsilon=1e-2
  )
  # G(z(t + eps)) - G(z(t)) = eps (z1 - z0) A exactly, so d / eps^2 = |(z1 - z0) A|^2 per sample.
  z0 = np.concatenate(drawn[0::2])
  z1 = np.concatenate(drawn[1::2])
  want = (((z1 - z0) @ a) ** 2).sum(1)
  np.testing.assert_allclose(values, want, rtol=2e-3)
  # Filtering: mean of values within the [1st lower, 99th higher] percentiles.
  low, high = np.percentile(values, 1, method="lower"), np.percentile(values, 99, method="higher")
  kept = values[(values >= low) & (values <= high)]
  assert len(kept) == len(values) - 4  # 2 smallest and 2 largest of 300 dropped
  assert ppl.filtered_mean(values) == pytest.approx(kept.mean())


def test_slerp_path_length_is_the_squared_path_speed():
  values, drawn, a = _linear_path_values(
    1, num_samples=8, interpolation="slerp", epsilon=1e-3, seed=7
  )
  z0, z1 = drawn
  t = np.random.default_rng(7).uniform(0.0, 1.0, size=8)[:, None]
  # Closed form of the path's velocity: z(t) = r(t) u(t), r = (1 - t)|z0| + t|z1|,
  # u = cos(t theta) a + sin(t theta) c (a, c orthonormal, theta the angle between z0 and z1):
  # dz/dt = (|z1| - |z0|) u + r theta (-sin(t theta) a + cos(t theta) c).
  n0, n1 = np.linalg.norm(z0, axis=1, keepdims=True), np.linalg.norm(z1, axis=1, keepdims=True)
  unit_a, unit_b = z0 / n0, z1 / n1
  theta = np.arccos(np.sum(unit_a * unit_b, axis=1, keepdims=True))
  c = unit_b - np.cos(theta) * unit_a
  c /= np.linalg.norm(c, axis=1, keepdims=True)
  u = np.cos(t * theta) * unit_a + np.sin(t * theta) * c
  velocity = (n1 - n0) * u + ((1 - t) * n0 + t * n1) * theta * (
    -np.sin(t * theta) * unit_a + np.cos(t * theta) * c
  )
  np.testing.assert_allclose(values, ((velocity @ a) ** 2).sum(1), rtol=2e-2)

  # On the unit sphere it is StyleGAN's slerp (metrics/perceptual_path_length.py), written out.
  def stylegan_slerp(a, b, t):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    d = np.sum(a * b, axis=-1, keepdims=True)
    p = t * np.arccos(d)
    c = b - d * a
    c = c / np.linalg.norm(c, axis=-1, keepdims=True)
    d = a * np.cos(p) + c * np.sin(p)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)

  np.testing.assert_allclose(
    ppl.slerp(unit_a, unit_b, t[:, 0]), stylegan_slerp(unit_a, unit_b, t), rtol=1e-10, atol=1e-12
  )
  t = t[:, 0]
  # Endpoints and norms of the interpolation.
  np.testing.assert_allclose(ppl.slerp(z0, z1, np.zeros(8)), z0, atol=1e-12)
  np.testing.assert_allclose(ppl.slerp(z0, z1, np.ones(8)), z1, atol=1e-12)


def test_images_are_not_quantised_before_the_distance():
  # A generator whose outputs move by far less than 1/255 over eps: quantising to 8 bits first
  # would give exactly 0.
  def generate(z):
    return np.broadcast_to((0.5 + 1e-3 * np.asarray(z)[:, :1])[:, :, None, None], (len(z), 1, 4, 1))

  value = ppl.perceptual_path_length(
    generate,
    latent_sampler=lambda n: np.ones((n, 2)),
    num_samples=4,
    distance=_squared_pixel_distance,
    interpolation="lerp",
  )
  assert value == 0.0  # z0 == z1: no movement
  rng = np.random.default_rng(0)
  value = ppl.perceptual_path_length(
    generate,
    latent_sampler=lambda n: rng.normal(size=(n, 2)),
    num_samples=4,
    distance=_squared_pixel_distance,
    interpolation="lerp",
  )
  assert value > 0.0


def test_crop_and_bad_arguments():
  images = np.arange(2 * 16 * 16).reshape(2, 16, 16, 1)
  np.testing.assert_array_equal(ppl.crop_face(images), images[:, 6:14, 4:12])
  with pytest.raises(ValueError, match="interpolation"):
    ppl.perceptual_path_length(
      lambda z: z,
      latent_sampler=np.ones,
      num_samples=2,
      distance=_squared_pixel_distance,
      interpolation="cubic",
    )


def test_sampling_end_puts_every_segment_at_the_path_start():
  """StyleGAN's ppl_*end: t = 0 (`uniform(0, 0)`), so each segment is z0 -> z(eps)."""
  values, drawn, a = _linear_path_values(
    2, num_samples=5, interpolation="slerp", epsilon=1e-2, sampling="end"
  )
  z0, z1 = drawn
  step = ppl.slerp(z0, z1, np.full(5, 1e-2)) - z0  # G is linear: G(z(eps)) - G(z0) = step A
  np.testing.assert_allclose(values, ((step @ a) ** 2).sum(1) / 1e-4, rtol=1e-4)
  assert ppl.SPACE_INTERPOLATION == {"z": "slerp", "w": "lerp"}
  with pytest.raises(ValueError, match="sampling"):
    ppl.path_length_samples(
      lambda z: z,
      latent_sampler=np.ones,
      num_samples=2,
      distance=_squared_pixel_distance,
      sampling="middle",
    )
