"""Perceptual path length (Karras et al. 2019, StyleGAN), for any latent-variable generator.

    ppl = perceptual_path_length(model_sample_fn, latent_sampler=prior_sample, num_samples=10000,
                                 distance=vgg16_feature_distance(vgg16_network()))

Per sample: z0, z1 from `latent_sampler`, t ~ U(0, 1); the images at t and t + epsilon on the
interpolation path give d = distance(G(z(t)), G(z(t + eps))) / eps^2; the result is the mean of
the d's between their 1st (lower) and 99th (higher) percentiles (StyleGAN
`metrics/perceptual_path_length.py`). Images are used as float, never quantised to 8 bits first.

Distances (callables `(images_a, images_b) -> [B]` squared perceptual distances, images float
[B, H, W, C] in [0, 1]):
  * `vgg16_feature_distance(network)`: |phi(a) - phi(b)|^2 summed over the feature axis, phi =
    VGG-16 fc2 (the simplification used in the seed report);
  * `lpips_distance(network)`: LPIPS-VGG v0.1 (`evaluation.lpips.lpips_vgg_network()`), StyleGAN's
    distance. LPIPS is itself a weighted sum of squared (unit-normalised) feature differences, so
    it is used as is and divided by eps^2, never squared again -- exactly as StyleGAN does
    (`distance_measure.get_output_for(img_e0, img_e1) * (1 / self.epsilon**2)`);
  * any other callable with that contract.
Both built-in distances run in one `tf.function(jit_compile=True)` per image shape.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PERCENTILE_LOW, PERCENTILE_HIGH = 1, 99  # StyleGAN: keep lo <= d <= hi
# NVlabs/stylegan metrics/perceptual_path_length.py and run_metrics.py (ppl_zfull, ppl_wend, ...):
# epsilon 1e-4, space 'z' (slerp) or 'w' (lerp), sampling 'full' (t ~ U(0, 1)) or 'end' (t = 0),
# 100k path segments, minibatch 16 per GPU.
STYLEGAN_EPSILON = 1e-4
STYLEGAN_NUM_SAMPLES = 100_000
STYLEGAN_BATCH_SIZE = 16
SPACE_INTERPOLATION = {"z": "slerp", "w": "lerp"}  # StyleGAN: slerp in Z, lerp in W
SAMPLINGS = ("full", "end")


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """z(t) = a + t (b - a); a, b [B, D], t [B]."""
  return a + t[:, None] * (b - a)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation of directions with linearly interpolated norms.

  u(t) = cos(t theta) a_hat + sin(t theta) c_hat, theta = arccos(a_hat . b_hat),
  c_hat = normalise(b_hat - (a_hat . b_hat) a_hat)  (StyleGAN's slerp), scaled by
  (1 - t)|a| + t|b| so Gaussian latents keep their typical norm. For generators that normalise
  their latent (StyleGAN) this is exactly StyleGAN's slerp.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  norm_a = np.linalg.norm(a, axis=1, keepdims=True)
  norm_b = np.linalg.norm(b, axis=1, keepdims=True)
  a_hat, b_hat = a / norm_a, b / norm_b
  cos = np.clip(np.sum(a_hat * b_hat, axis=1, keepdims=True), -1.0, 1.0)
  c = b_hat - cos * a_hat
  c_hat = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
  angle = t[:, None] * np.arccos(cos)
  direction = a_hat * np.cos(angle) + c_hat * np.sin(angle)
  return direction * ((1.0 - t[:, None]) * norm_a + t[:, None] * norm_b)


INTERPOLATIONS = {"slerp": slerp, "lerp": lerp}


def vgg16_feature_distance(network, *, feature: str = "fc2") -> Callable:
  """Squared Euclidean distance of VGG-16 fc2 features, summed over the feature axis, per sample.

  `network` is `evaluation.networks.vgg16_network()` (images float [0, 255] in, dict out).
  """
  import tensorflow as tf

  @tf.function(jit_compile=True)
  def distance(images_a, images_b):
    both = tf.concat([images_a, images_b], axis=0) * 255.0  # float, not quantised
    features = tf.cast(network(both, training=False)[feature], tf.float32)
    fa, fb = tf.split(features, 2, axis=0)
    return tf.reduce_sum(tf.square(fa - fb), axis=1)  # [B]

  return _numpy_distance(distance)


def lpips_distance(network) -> Callable:
  """LPIPS-VGG distance per sample, d = LPIPS(a, b) (already a squared-difference sum; not squared).

  `network` is `evaluation.lpips.lpips_vgg_network()` ((images_a, images_b) float [B, H, W, C] in
  [0, 1] -> [B]). No resizing: apply `crop` / resize policy before, as for any distance.
  """
  import tensorflow as tf

  @tf.function(jit_compile=True)
  def distance(images_a, images_b):
    return tf.cast(network((images_a, images_b), training=False), tf.float32)  # [B]

  return _numpy_distance(distance)


def _numpy_distance(compiled: Callable) -> Callable:
  """Wraps a compiled `(a, b) -> [B]` TF distance as a numpy float32-in, numpy-out callable."""
  import tensorflow as tf

  return lambda a, b: np.asarray(
    compiled(tf.convert_to_tensor(a, tf.float32), tf.convert_to_tensor(b, tf.float32))
  )


def path_positions(rng: np.random.Generator, batch: int, sampling: str) -> np.ndarray:
  """t per path segment: t ~ U(0, 1) for sampling 'full', t = 0 for 'end' (StyleGAN:
  `lerp_t = uniform([B], 0.0, 1.0 if sampling == 'full' else 0.0)`). Draws from `rng` either way."""
  return rng.uniform(0.0, 1.0 if sampling == "full" else 0.0, size=batch)


def crop_face(images: np.ndarray) -> np.ndarray:
  """StyleGAN's FFHQ face crop: rows [3c, 7c), columns [2c, 6c) with c = H // 8; [B, H, W, C]."""
  c = images.shape[1] // 8
  return images[:, c * 3 : c * 7, c * 2 : c * 6, :]


def path_length_samples(
  generate: Callable,
  *,
  latent_sampler: Callable,
  num_samples: int,
  distance: Callable,
  epsilon: float = 1e-4,
  interpolation: str = "slerp",
  crop: bool = False,
  batch_size: int = 32,
  seed: int = 0,
  sampling: str = "full",
) -> np.ndarray:
  """The unfiltered per-sample values d_i = distance(G(z(t_i)), G(z(t_i + eps))) / eps^2 [N].

  Args:
    generate: latents [B, D] -> images float [B, H, W, C] in [0, 1].
    latent_sampler: n -> latents [n, D] from the prior (called twice per batch: z0, z1).
    num_samples: number of path segments.
    distance: (images_a, images_b) -> [B] squared perceptual distances.
    epsilon: step along the path (StyleGAN: 1e-4).
    interpolation: "slerp" (StyleGAN's choice in Z) or "lerp" (in W, or for Gaussian latents).
    crop: apply StyleGAN's face crop before the distance.
    batch_size: path segments per generator call (2 x batch_size images).
    seed: seed of t ~ U(0, 1).
    sampling: "full" (t ~ U(0, 1), StyleGAN's ppl_*full) or "end" (t = 0, ppl_*end).
  """
  if interpolation not in INTERPOLATIONS:
    raise ValueError(
      f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}"
    )
  if sampling not in SAMPLINGS:
    raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
  if num_samples < 1 or epsilon <= 0:
    raise ValueError(f"need num_samples >= 1 and epsilon > 0, got {num_samples}, {epsilon}")
  interpolate = INTERPOLATIONS[interpolation]
  rng = np.random.default_rng(seed)
  values = []
  for start in range(0, num_samples, batch_size):
    b = min(batch_size, num_samples - start)
    z0, z1 = np.asarray(latent_sampler(b)), np.asarray(latent_sampler(b))
    t = path_positions(rng, b, sampling)
    latents = np.concatenate([interpolate(z0, z1, t), interpolate(z0, z1, t + epsilon)])
    images = np.asarray(generate(latents.astype(np.float32)), np.float32)  # [2B, H, W, C]
    if crop:
      images = crop_face(images)
    d = np.asarray(distance(images[:b], images[b:]), np.float64)  # [B]
    values.append(d / epsilon**2)
  return np.concatenate(values)


def filtered_mean(values: np.ndarray) -> float:
  """Mean of the values between the 1st ('lower') and 99th ('higher') percentiles, inclusive."""
  values = np.asarray(values, np.float64)
  low = np.percentile(values, PERCENTILE_LOW, method="lower")
  high = np.percentile(values, PERCENTILE_HIGH, method="higher")
  return float(values[(values >= low) & (values <= high)].mean())


def perceptual_path_length(
  generate: Callable,
  *,
  latent_sampler: Callable,
  num_samples: int,
  distance: Callable,
  epsilon: float = 1e-4,
  interpolation: str = "slerp",
  crop: bool = False,
  batch_size: int = 32,
  seed: int = 0,
  sampling: str = "full",
) -> float:
  """PPL = filtered_mean(path_length_samples(...)); arguments as `path_length_samples`."""
  return filtered_mean(
    path_length_samples(
      generate,
      latent_sampler=latent_sampler,
      num_samples=num_samples,
      distance=distance,
      epsilon=epsilon,
      interpolation=interpolation,
      crop=crop,
      batch_size=batch_size,
      seed=seed,
      sampling=sampling,
    )
  )
