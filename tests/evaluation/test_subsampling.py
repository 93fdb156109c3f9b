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

from evaluation import cli, fid, inception_score, kid, precision_recall, subsampling

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


# ----------------------------------------------------------------------------- Inception Score

IS_CLASSES = 10
IS_WEIGHTS = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01])


def _is_logits(rng, n):
  """Logits 2.5 e_c + N(0, I), c ~ IS_WEIGHTS: a classifier that is sure of some images only."""
  classes = rng.choice(IS_CLASSES, n, p=IS_WEIGHTS)
  return 2.5 * np.eye(IS_CLASSES)[classes] + rng.normal(size=(n, IS_CLASSES))


def _softmax_terms(logits):
  """p(y|x) [N, C] and sum_y p log p(y|x) [N] (NumPy, independent of evaluation/)."""
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  p = np.exp(log_p)
  return p, (p * log_p).sum(axis=1)


@pytest.fixture(scope="module")
def population_is():
  """exp(E KL(p(y|x) || p(y))) = exp(E sum p log p(y|x) - sum p(y) log p(y)), p(y) = E p(y|x),
  both expectations over 2,000,000 draws (Monte Carlo error about 3e-4 relative)."""
  rng = np.random.default_rng(123)
  total, chunk, neg_entropy, marginal = 2_000_000, 200_000, 0.0, np.zeros(IS_CLASSES)
  for _ in range(total // chunk):
    p, h = _softmax_terms(_is_logits(rng, chunk))
    neg_entropy += h.sum()
    marginal += p.sum(axis=0)
  marginal /= total
  return float(np.exp(neg_entropy / total - (marginal * np.log(marginal)).sum()))


def _is_of_rows(p, h, rows, splits):
  """The Inception Score of logits[rows] from its softmax terms: the mean over `splits`
  consecutive parts of exp(mean_x sum p log p(y|x) - sum p(y) log p(y)), p(y) the part's mean."""
  n, scores = len(rows), []
  for s in range(splits):
    part = rows[s * n // splits : (s + 1) * n // splits]
    marginal = p[part].mean(axis=0)
    scores.append(np.exp(h[part].mean() - (marginal * np.log(marginal)).sum()))
  return float(np.mean(scores))


@pytest.mark.parametrize("n,splits,lowest", [(500, 1, 0.90), (2000, 10, 0.90), (500, 10, 0.85)])
def test_inception_score_interval_covers_the_population_score(population_is, n, splits, lowest):
  """The IS interval (`inception_score.interval`: rows drawn without replacement, kept in their
  order, cut into the same number of splits) covers the population IS. The replicates here use
  the NumPy score above, checked first to equal `inception_score.inception_score` and to give
  the same interval as `inception_score.interval` on one data set.

  Splits of 50 images (n = 500, 10 splits; half-samples of 25 per split) cover at about 90%
  only: at such sizes the split score's bias is not yet of the 1/m form that half-sampling
  removes, and removing it adds spread to the centre that the replicates do not show. Splits of
  200 and more cover at the nominal rate (the standard 50,000 images in 10 splits: 5,000)."""
  rng = np.random.default_rng(7)
  logits = _is_logits(rng, n)
  p, h = _softmax_terms(logits)
  estimate = inception_score.inception_score(logits, splits=splits)[0]
  assert _is_of_rows(p, h, np.arange(n), splits) == pytest.approx(estimate, rel=1e-12)
  options = cli.Options(subsamples=20, subsample_seed=3)
  want = subsampling.interval(
    lambda i: _is_of_rows(p, h, np.sort(i), splits), (n,), estimate=estimate, num=20, seed=3
  )
  got = inception_score.interval(logits, estimate, splits=splits, options=options)
  assert got == pytest.approx(want, rel=1e-12)

  def simulate(rng, dataset):
    p, h = _softmax_terms(_is_logits(rng, n))
    estimate = _is_of_rows(p, h, np.arange(n), splits)
    return estimate, subsampling.interval(
      lambda i: _is_of_rows(p, h, np.sort(i), splits),
      (n,),
      estimate=estimate,
      num=REPLICATES,
      seed=dataset,
      min_size=max(2, splits),
    )

  coverage, own, mean_estimate = _coverage(simulate, population_is)
  print(
    f"IS n={n} splits={splits}: population {population_is:.4f}, mean estimate "
    f"{mean_estimate:.4f}, coverage {coverage:.3f}, holds own estimate {own:.3f}"
  )
  assert lowest <= coverage <= 0.99


# ---------------------------------------------------------------------------- precision/recall

PR_K = 3


def _sq_distances(a, b):
  """|a_i - b_j|^2 in float64 (|a|^2 - 2 a.b + |b|^2, clipped at 0)."""
  return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0.0)


def _pr_from_distances(real_real, fake_fake, fake_real, k=PR_K):
  """Improved precision/recall from squared distances (NumPy port of the paper's equations):
  radius = k-th nearest other row of the same set; precision = share of fake rows inside some
  real ball, recall = share of real rows inside some fake ball."""

  def radii(d):
    d = d.copy()
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]

  real_radii, fake_radii = radii(real_real), radii(fake_fake)
  return np.array(
    [
      (fake_real <= real_radii[None, :]).any(axis=1).mean(),
      (fake_real <= fake_radii[:, None]).any(axis=0).mean(),
    ]
  )


PR_D, PR_N = 4, 200
PR_FAKE_MEAN, PR_FAKE_SCALE = 0.25, 1.2  # fake ~ N(0.25 * 1, 1.2^2 I); real ~ N(0, I)


def _pr_sets(rng, n=PR_N):
  real = rng.normal(size=(n, PR_D))
  fake = PR_FAKE_MEAN + PR_FAKE_SCALE * rng.normal(size=(n, PR_D))
  return real, fake


def _pr_statistic(real, fake):
  """(precision, recall) of index draws (i: fake rows, j: real rows) from the full distance
  matrices, computed once per data set."""
  rr, ff, fr = _sq_distances(real, real), _sq_distances(fake, fake), _sq_distances(fake, real)
  return lambda i, j: _pr_from_distances(rr[np.ix_(j, j)], ff[np.ix_(i, i)], fr[np.ix_(i, j)])


@pytest.fixture(scope="module")
def expected_pr():
  """E[precision], E[recall] at n = m = 200, k = 3 over 2000 independent pairs of sets (Monte
  Carlo error about 5e-4), and at half and twice the set sizes over 500 and 250 pairs."""
  rng = np.random.default_rng(99)
  out = {}
  for n, count in ((PR_N // 2, 500), (PR_N, 2000), (2 * PR_N, 250)):
    values = []
    for _ in range(count):
      real, fake = _pr_sets(rng, n)
      values.append(_pr_statistic(real, fake)(np.arange(n), np.arange(n)))
    out[n] = np.mean(values, axis=0)
  return out


def test_precision_recall_interval_covers_the_expected_value_at_the_set_sizes(expected_pr):
  """Precision/recall grow with the set sizes (the k-NN balls shrink and the estimated manifold
  fills the support; the large-set limit is 1 here), by a few hundredths per doubling, not as
  1/n. The interval (`precision_recall.subsample_interval`, deviations from the replicates'
  mean) covers the expected value at the given sizes; the population-value construction of FID
  (deviations from the estimate) does not. The replicates use the NumPy port above, checked
  first to equal `precision_recall.precision_recall` and to give the library's interval."""
  real, fake = _pr_sets(np.random.default_rng(5))
  statistic = _pr_statistic(real, fake)
  everything = np.arange(PR_N)
  estimate = statistic(everything, everything)
  library = precision_recall.precision_recall(real, fake, k=PR_K)
  assert library == pytest.approx(tuple(estimate), abs=1e-12)
  want = subsampling.interval(
    statistic, (PR_N, PR_N), estimate=estimate, num=20, seed=3, center="mean"
  )
  got = precision_recall.subsample_interval(real, fake, library, k=PR_K, num=20, seed=3)
  assert np.array(got) == pytest.approx(np.array(want), abs=1e-12)
  small, target, large = expected_pr[PR_N // 2], expected_pr[PR_N], expected_pr[2 * PR_N]
  assert (small < target).all() and (target < large).all()  # depends on the set sizes

  sizes = (PR_N, PR_N)
  k = subsampling.scale(sizes, subsampling.subsample_sizes(sizes, rate=subsampling.DEFAULT_RATE))
  hits = {"mean": np.zeros(2), "estimate": np.zeros(2)}
  own = np.zeros(2)  # intervals holding their own estimate
  estimates = []
  for dataset in range(DATASETS):
    real, fake = _pr_sets(np.random.default_rng(1000 + dataset))
    statistic = _pr_statistic(real, fake)
    estimate = statistic(everything, everything)
    estimates.append(estimate)
    values = subsampling.replicates(statistic, sizes, num=REPLICATES, seed=dataset)
    for center in hits:
      low, high = subsampling.interval_from_replicates(estimate, values, k=k, center=center)
      hits[center] += (low <= target) & (target <= high)
      if center == "mean":
        own += (low <= estimate) & (estimate <= high)
  coverage = hits["mean"] / DATASETS
  old = hits["estimate"] / DATASETS
  print(
    f"precision/recall d={PR_D} n={PR_N}/{PR_N} k={PR_K}: expected value at n/2, n, 2n "
    f"{np.round(small, 4)}, {np.round(target, 4)}, {np.round(large, 4)}; mean estimate "
    f"{np.round(np.mean(estimates, axis=0), 4)}; coverage {coverage}, holds own estimate "
    f"{own / DATASETS} (population-value construction: {old})"
  )
  assert ((0.90 <= coverage) & (coverage <= 0.99)).all()
  assert (old < 0.90).any()  # the shift toward larger sets misses the value at these sizes
