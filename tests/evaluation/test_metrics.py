"""FID, KID and Inception Score against closed forms and direct computations."""

import numpy as np
import pytest
from scipy import linalg

from evaluation import fid, inception_score, kid


def _random_spd(rng, d, rank=None):
  a = rng.normal(size=(d, rank or d))
  return a @ a.T / d + (0 if rank else 1e-3) * np.eye(d)


def test_feature_statistics_use_n_minus_1():
  x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
  mu, sigma = fid.feature_statistics(x.astype(np.float32))
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, x.mean(0))
  np.testing.assert_allclose(sigma, (x - x.mean(0)).T @ (x - x.mean(0)) / 2)


def test_fid_of_identical_sets_is_zero():
  feats = np.random.default_rng(0).normal(size=(200, 16))
  mu, sigma = fid.feature_statistics(feats)
  assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_fid_with_identity_covariances_is_squared_mean_shift():
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  value = fid.frechet_distance(mu1, np.eye(8), mu2, np.eye(8))
  np.testing.assert_allclose(value, np.sum((mu1 - mu2) ** 2), rtol=1e-12)


def test_trace_sqrt_matches_scipy_sqrtm():
  rng = np.random.default_rng(2)
  for _ in range(3):
    s1, s2 = _random_spd(rng, 20), _random_spd(rng, 20)
    expected = np.trace(linalg.sqrtm(s1 @ s2)).real
    np.testing.assert_allclose(fid.trace_sqrt_product(s1, s2), expected, rtol=1e-8)
  # Full FID with the TTUR formula written out with scipy.
  mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
  ttur = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
  np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), ttur, rtol=1e-8)


def test_near_singular_covariances_stay_finite():
  rng = np.random.default_rng(3)
  a = rng.normal(size=(10, 64))  # 10 samples in 64 dims: rank-deficient covariance
  b = rng.normal(size=(10, 64)) + 0.5
  mu1, s1 = fid.feature_statistics(a)
  mu2, s2 = fid.feature_statistics(b)
  value = fid.frechet_distance(mu1, s1, mu2, s2)
  assert np.isfinite(value) and isinstance(value, float) and value > 0


def test_fid_bad_inputs():
  with pytest.raises(ValueError, match="at least 2"):
    fid.feature_statistics(np.zeros((1, 4)))
  with pytest.raises(ValueError, match="mismatched"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match="NaN"):
    fid.frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


def _kid_direct(x, y):
  """O(m^2) loops over pairs, straight from the definition."""
  m, d = x.shape
  k = lambda a, b: (a @ b / d + 1.0) ** 3
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_kid_equals_direct_pairwise_sum():
  rng = np.random.default_rng(4)
  real, fake = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.3
  # One subset of the full (clipped) size is a permutation of both sets: the exact statistic.
  mean, std = kid.kernel_inception_distance(real, fake, num_subsets=1, subset_size=1000)
  np.testing.assert_allclose(mean, _kid_direct(real, fake), rtol=1e-10)
  assert std == 0.0


def test_kid_subsets_are_clipped_and_seeded():
  rng = np.random.default_rng(5)
  real, fake = rng.normal(size=(30, 4)), rng.normal(size=(50, 4))
  a = kid.kernel_inception_distance(real, fake, num_subsets=5, subset_size=1000, seed=3)
  b = kid.kernel_inception_distance(real, fake, num_subsets=5, subset_size=30, seed=3)
  assert a == b  # subset_size 1000 was clipped to 30
  # Unbiased: same distribution gives values scattered around 0, shifted gives clearly > 0.
  same = kid.kernel_inception_distance(
    rng.normal(size=(400, 4)), rng.normal(size=(400, 4)), num_subsets=20, subset_size=100
  )
  shifted = kid.kernel_inception_distance(
    rng.normal(size=(400, 4)), rng.normal(size=(400, 4)) + 1, num_subsets=20, subset_size=100
  )
  assert abs(same[0]) < 3 * same[1]
  assert shifted[0] > 3 * shifted[1] and shifted[0] > 10 * abs(same[0])
  with pytest.raises(ValueError):
    kid.kernel_inception_distance(real, fake[:, :3])


def test_inception_score_closed_forms():
  # Uniform predictions: p(y|x) = p(y), KL = 0, IS = 1.
  mean, std = inception_score.inception_score(np.zeros((20, 1008)), splits=2)
  np.testing.assert_allclose([mean, std], [1.0, 0.0], atol=1e-12)
  # Confident, balanced predictions over C classes: IS = C.
  logits = np.full((64, 1008), -1e4)
  logits[np.arange(64), np.arange(64) % 8] = 0.0  # each split of 16 holds every class twice
  mean, std = inception_score.inception_score(logits, splits=4)
  np.testing.assert_allclose([mean, std], [8.0, 0.0], rtol=1e-9, atol=1e-9)


def test_inception_score_splits_are_taken_in_order():
  logits = np.full((20, 10), -1e4)
  logits[np.arange(20), np.repeat([0, 1], 10)] = 0.0  # first half class 0, second half class 1
  # In order, each split holds one class only: IS = 1 per split. Shuffled it would be 2.
  mean, _ = inception_score.inception_score(logits, splits=2)
  np.testing.assert_allclose(mean, 1.0, atol=1e-9)
  mean_one_split, _ = inception_score.inception_score(logits, splits=1)
  np.testing.assert_allclose(mean_one_split, 2.0, rtol=1e-9)
  with pytest.raises(ValueError, match="splits"):
    inception_score.inception_score(logits[:3], splits=10)
