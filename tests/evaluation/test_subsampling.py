"""The --subsamples interval covers the population value at its nominal rate (by simulation).

Gaussian feature sets whose population FID and KID are known in closed form (computed here with
SciPy / NumPy, independently of evaluation/): 200 simulated data sets per case, each with its own
95% interval from 100 subsamples; the share of intervals holding the population value must lie in
[0.90, 0.99]. The cases have a visible FID bias (the mean estimate is well above the population
FID), which a with-replacement bootstrap interval does not survive.
"""

import numpy as np
import pytest
from scipy import linalg

from evaluation import fid, kid, subsampling

DATASETS = 200  # simulated data sets per case
REPLICATES = 100  # subsamples per interval


def _gaussians(d, seed):
  rng = np.random.default_rng(seed)
  a, b = rng.normal(size=(d, d)) / np.sqrt(d), rng.normal(size=(d, d)) / np.sqrt(d)
  return (
    np.zeros(d),
    a @ a.T + 0.5 * np.eye(d),
    rng.normal(size=d) * 0.3,
    b @ b.T + 0.5 * np.eye(d),
  )


def _draw(rng, mu, sigma, n):
  return mu + rng.normal(size=(n, len(mu))) @ np.linalg.cholesky(sigma).T


def population_fid(mu1, s1, mu2, s2):
  """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), with SciPy's general sqrtm."""
  return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))


def _moments(mu, sigma):
  """E[x], E[x x^T], E[x x x] (3-tensor) of N(mu, sigma)."""
  second = sigma + np.outer(mu, mu)
  third = (
    np.einsum("i,j,k->ijk", mu, mu, mu)
    + np.einsum("i,jk->ijk", mu, sigma)
    + np.einsum("j,ik->ijk", mu, sigma)
    + np.einsum("k,ij->ijk", mu, sigma)
  )
  return mu, second, third


def population_kid(mu1, s1, mu2, s2):
  """MMD^2 of N(mu1, s1) and N(mu2, s2) under k(x, y) = (x.y / d + 1)^3.

  k = sum_j C(3, j) d^-j <x^(x)j, y^(x)j>, so MMD^2 = sum_{j=1..3} C(3, j) d^-j |E x^(x)j - E y^(x)j|^2
  with the Gaussian moment tensors (Isserlis)."""
  d = len(mu1)
  return float(
    sum(
      c * d**-j * ((m1 - m2) ** 2).sum()
      for j, c, m1, m2 in zip((1, 2, 3), (3, 3, 1), _moments(mu1, s1), _moments(mu2, s2))
    )
  )


def _coverage(simulate, target):
  """(share of intervals holding `target`, share holding their own estimate, mean estimate)."""
  hits, own, estimates = 0, 0, []
  for dataset in range(DATASETS):
    estimate, (low, high) = simulate(np.random.default_rng(1000 + dataset), dataset)
    hits += low <= target <= high
    own += low <= estimate <= high
    estimates.append(estimate)
  return hits / DATASETS, own / DATASETS, float(np.mean(estimates))


@pytest.mark.parametrize("d,n_samples,n_reference", [(8, 200, 200), (16, 200, 300)])
def test_fid_interval_covers_the_population_fid(d, n_samples, n_reference):
  mu1, s1, mu2, s2 = _gaussians(d, seed=d)
  target = population_fid(mu1, s1, mu2, s2)

  def simulate(rng, dataset):
    x, y = _draw(rng, mu1, s1, n_samples), _draw(rng, mu2, s2, n_reference)
    estimate = fid.frechet_distance(*fid.feature_statistics(x), *fid.feature_statistics(y))
    return estimate, fid.subsample_interval(x, y, num=REPLICATES, seed=dataset)

  coverage, own, mean_estimate = _coverage(simulate, target)
  print(
    f"FID d={d} n={n_samples}/{n_reference}: population {target:.4f}, mean estimate "
    f"{mean_estimate:.4f}, coverage {coverage:.3f}, holds own estimate {own:.3f}"
  )
  assert mean_estimate > target + 0.05 * target  # the estimate is visibly biased
  assert 0.90 <= coverage <= 0.99


def test_fid_interval_against_reference_statistics_covers_the_population_fid():
  """Reference given as (exact) statistics: only the samples are subsampled."""
  d, n = 16, 200
  mu1, s1, mu2, s2 = _gaussians(d, seed=3)
  target = population_fid(mu1, s1, mu2, s2)

  def simulate(rng, dataset):
    x = _draw(rng, mu1, s1, n)
    estimate = fid.frechet_distance(*fid.feature_statistics(x), mu2, s2)
    return estimate, fid.subsample_interval(
      x, None, reference_stats=(mu2, s2), num=REPLICATES, seed=dataset
    )

  coverage, own, mean_estimate = _coverage(simulate, target)
  print(
    f"FID vs statistics d={d} n={n}: population {target:.4f}, mean estimate "
    f"{mean_estimate:.4f}, coverage {coverage:.3f}, holds own estimate {own:.3f}"
  )
  assert 0.90 <= coverage <= 0.99


@pytest.mark.parametrize("num_subsets,subset_size", [(1, 150), (10, 50)])
def test_kid_interval_covers_the_population_kid(num_subsets, subset_size):
  """(1, 150): one subset of all rows, the plain unbiased MMD^2. (10, 50): the subset estimator
  as KID is reported, whose random subsets add noise of their own to the estimate."""
  d, n = 8, 150
  mu1, s1, mu2, s2 = _gaussians(d, seed=5)
  target = population_kid(mu1, s1, mu2, s2)

  def simulate(rng, dataset):
    x, y = _draw(rng, mu1, s1, n), _draw(rng, mu2, s2, n)
    mean, _ = kid.kernel_inception_distance(x, y, num_subsets=num_subsets, subset_size=subset_size)
    return mean, kid.subsample_interval(
      x,
      y,
      mean,
      num_subsets=num_subsets,
      subset_size=subset_size,
      num=REPLICATES,
      subsample_seed=dataset,
    )

  coverage, own, mean_estimate = _coverage(simulate, target)
  print(
    f"KID d={d} n={n} {num_subsets} subsets of {subset_size}: population {target:.5f}, "
    f"mean estimate {mean_estimate:.5f}, coverage {coverage:.3f}, holds own estimate "
    f"{own:.3f}"
  )
  # The estimator is unbiased: its mean over the data sets checks the closed form too.
  assert mean_estimate == pytest.approx(target, rel=0.05)
  assert 0.90 <= coverage <= 0.99


def test_population_kid_closed_form_against_a_large_sample():
  d = 4
  mu1, s1, mu2, s2 = _gaussians(d, seed=7)
  rng = np.random.default_rng(0)
  x, y = _draw(rng, mu1, s1, 3000), _draw(rng, mu2, s2, 3000)
  k = lambda a, b: (a @ b.T / d + 1) ** 3
  n = len(x)
  kxx, kyy = k(x, x), k(y, y)
  u = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * k(x, y).mean()
  assert u == pytest.approx(population_kid(mu1, s1, mu2, s2), rel=0.05)


def test_interval_formula_sizes_and_draws():
  """Half-sampling: [2 theta_n - q_hi, 2 theta_n - q_lo] of the replicate values, draws as
  documented (rng.choice(n, round(rate n), replace=False) per set, in order)."""
  data = np.random.default_rng(0).normal(size=40)
  statistic = lambda i: data[i].var()
  values = []
  rng = np.random.default_rng(4)
  for _ in range(30):
    i = rng.choice(40, 20, replace=False)
    assert len(set(i)) == 20
    values.append(data[i].var())
  low, high = subsampling.interval(
    statistic, (40,), estimate=data.var(), num=30, seed=4, confidence=0.9
  )
  q05, q95 = np.quantile(values, [0.05, 0.95])
  assert (low, high) == pytest.approx((2 * data.var() - q95, 2 * data.var() - q05))
  # Rate 0.2: k = sqrt(0.2 / 0.8) = 0.5 times the deviations.
  values = subsampling.replicates(statistic, (40,), num=30, rate=0.2, seed=4)
  low, high = subsampling.interval(statistic, (40,), estimate=data.var(), num=30, rate=0.2, seed=4)
  q_lo, q_hi = np.quantile(values - data.var(), [0.025, 0.975])
  assert (low, high) == pytest.approx((data.var() - 0.5 * q_hi, data.var() - 0.5 * q_lo))
  assert subsampling.subsample_sizes([10, 7, 3], rate=0.5) == [5, 4, 2]
  with pytest.raises(ValueError, match="at least 3 samples"):
    subsampling.subsample_sizes([2], rate=0.5)
  with pytest.raises(ValueError, match=r"rate must lie in \(0, 1\)"):
    subsampling.subsample_sizes([10], rate=1.0)


def test_replicate_distance_equals_frechet_distance():
  """The replicates' Cholesky form against frechet_distance (and the singular fallback)."""
  rng = np.random.default_rng(11)
  for n2 in (40, 5):  # 5 rows in 8 dimensions: singular reference covariance
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(n2, 8)) * 2 + 1
    stats = fid.feature_statistics(x) + fid.feature_statistics(y)
    # (rounding in a singular covariance's null space is amplified by the square root)
    assert fid.replicate_distance(*stats) == pytest.approx(
      fid.frechet_distance(*stats), rel=1e-9 if n2 > 8 else 1e-7
    )
    if n2 > 8:  # SciPy's sqrtm of a singular product is itself inexact
      assert fid.replicate_distance(*stats) == pytest.approx(population_fid(*stats), rel=1e-6)
