"""Improved precision/recall and realism score against a brute-force NumPy implementation."""

import numpy as np
import pytest

from evaluation import precision_recall as pr


def _brute_force(real, fake, k):
  """Full distance matrices in float64, self excluded by deleting the diagonal."""

  def sq(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

  def radii(x):
    d = sq(x, x)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]

  r_real, r_fake = radii(real), radii(fake)
  d = sq(fake, real)  # [M, N]
  precision = (d <= r_real[None, :]).any(axis=1).mean()
  recall = (d <= r_fake[:, None]).any(axis=0).mean()
  return precision, recall, r_real, d


@pytest.fixture(scope="module")
def gaussians():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(300, 16)).astype(np.float32)
  fake = (rng.normal(size=(250, 16)) * 1.3 + 0.4).astype(np.float32)
  return real, fake


def test_matches_brute_force_and_radii_are_self_excluded(gaussians):
  real, fake = gaussians
  precision, recall = pr.precision_recall(real, fake, k=3)
  want_p, want_r, want_radii, _ = _brute_force(real.astype(np.float64), fake.astype(np.float64), 3)
  assert precision == pytest.approx(want_p, abs=1 / len(fake))  # float32 vs float64 borderline
  assert recall == pytest.approx(want_r, abs=1 / len(real))
  radii = pr.manifold_radii(real, k=3, batch_size=64)
  assert radii.dtype == np.float32
  np.testing.assert_allclose(radii, want_radii, rtol=1e-4)
  # Duplicated points: the copy is the nearest neighbour (distance 0), self is not.
  dup = np.concatenate([real[:50], real[:1]])
  assert pr.manifold_radii(dup, k=1)[0] == pytest.approx(0.0, abs=1e-3)
  assert pr.manifold_radii(real[:50], k=1)[0] > 1.0


def test_results_do_not_depend_on_batch_size(gaussians):
  real, fake = gaussians
  results = {pr.precision_recall(real, fake, k=3, batch_size=b) for b in (7, 64, 300)}
  assert len(results) == 1


def test_argument_order_real_is_the_reference():
  # A tight generated cluster inside the real data: every fake sample is realistic (high
  # precision) but covers little of the real distribution (low recall).
  rng = np.random.default_rng(1)
  real = rng.normal(size=(400, 8)).astype(np.float32)
  fake = (rng.normal(size=(400, 8)) * 0.05).astype(np.float32)
  precision, recall = pr.precision_recall(real, fake, k=3)
  assert precision > 0.95 and recall < 0.2
  swapped = pr.precision_recall(fake, real, k=3)
  assert swapped[0] < 0.2 and swapped[1] > 0.95


def test_realism_score_matches_the_official_formula(gaussians):
  real, fake = gaussians
  scores = pr.realism_score(real, fake, k=3, batch_size=100)
  _, _, radii, d = _brute_force(real.astype(np.float64), fake.astype(np.float64), 3)
  radii = np.where(radii > np.percentile(radii, 50), 0.0, radii)
  want = np.max(radii[None, :] / (d + 1e-5), axis=1)
  np.testing.assert_allclose(scores, want, rtol=1e-3)


def test_bad_inputs():
  with pytest.raises(ValueError, match="equal D"):
    pr.precision_recall(np.zeros((10, 3)), np.zeros((10, 4)))
  with pytest.raises(ValueError, match="more than k"):
    pr.precision_recall(np.zeros((3, 3)), np.zeros((10, 3)), k=3)
