"""Confidence intervals by subsampling without replacement (`--subsamples N`).

Why not the bootstrap: a bootstrap draw (with replacement) repeats about a third of the images.
A draw holds only about 0.63 n distinct rows, so FID's upward bias (which grows as the number of
distinct samples falls) is larger in every replicate, and KID's within-set sums, unbiased for
distinct samples, pick up the copies as pairs at distance 0. The replicates are shifted and
their percentile interval need not even contain the metric (FID 7.34 with a "95% interval"
[12.2, 13.6] for two 400-sample Gaussian sets in 64 dimensions).

The method: every replicate draws b_i = round(rate * n_i) rows of every input set *without*
replacement (rate 0.5: half-sampling) and recomputes the metric on them, theta_b. With
theta_n the metric on the full sets, the interval for the population value theta is

    [theta_n - k * q_{(1+c)/2}, theta_n - k * q_{(1-c)/2}],   q_p = p-quantile of theta_b - theta_n,
    k = sqrt(rate / (1 - rate))                               (1 for half-sampling)

This is the subsampling interval of Politis, Romano & Wolf (1999, "Subsampling", Springer,
Sec. 2.2: the law of tau_n (theta_n - theta) estimated by that of tau_b (theta_b - theta_n),
tau_n = sqrt(n)), with the finite-population factor of the delete-d jackknife histogram (Wu
1990, Ann. Statist. 18:1438-1452): theta_b - theta_n has variance sigma^2 (1/b - 1/n) given the
data, so sqrt(b n / (n - b)) (theta_b - theta_n) matches sqrt(n) (theta_n - theta) for any fixed
rate b/n in (0, 1), not only b/n -> 0.

Bias: FID's estimate is biased upward by about B/n (Chong & Forsyth 2020). A subsample of b rows
is biased by B/b, so theta_b - theta_n is centred near B (1/b - 1/n); scaled by k this is
B sqrt(n - b) / (n sqrt(b)), which equals the bias B/n of theta_n exactly at b = n/2. Half-sampling
therefore subtracts the estimate's bias: the interval is for the population value and, when the
bias exceeds the sampling spread (small n, many feature dimensions), it lies *below* the reported
finite-sample FID. That is intended; it does not promise to contain the point estimate. For an
unbiased statistic (KID) any rate is valid; for a biased one use 0.5.

KID's estimate averages over random subsets of its own; `kid.subsample_interval` scales those
subsets with the rate and centres the deviations at the replicates' mean (`center="mean"`).

Inception Score: the same construction (rows kept in order, cut into the same number of splits);
its bias is about B/m for splits of m images, which half-sampling removes as FID's.

Precision/recall (`precision_recall.subsample_interval`) are the exception: their k-NN radii
shrink as the sets grow, so the large-set limit is the overlap of the supports (1 for two
distributions with densities on one support), approached slowly and not as 1/n. Their interval
takes the deviations from the replicates' mean (center="mean"): it is centred on the estimate
and is for the *expected value at the given set sizes* (and k), stated as such in the output.

Checked by simulation (tests/evaluation/test_subsampling.py): Gaussian feature sets with
closed-form population FID and KID, 95% intervals cover the population value at 93.5-95%; the
population IS (by a 2,000,000-draw Monte Carlo) at 92.5-93% with splits of 200+ images (90% with
splits of 50); the expected precision/recall at n = m = 200 at 97% / 95.5%.
Cost: N evaluations of the metric on cached features (docs/evaluation.md, "Uncertainty").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_RATE = 0.5


def subsample_sizes(sizes: Sequence[int], *, rate: float, min_size: int = 2) -> list[int]:
  """b_i = round(rate * n_i), at least `min_size` and at most n_i - 1 (ValueError if impossible)."""
  if not 0.0 < rate < 1.0:
    raise ValueError(f"subsample rate must lie in (0, 1), got {rate}")
  out = []
  for n in sizes:
    b = min(max(int(np.floor(rate * n + 0.5)), min_size), n - 1)  # round half up
    if b < min_size:
      raise ValueError(f"subsampling needs sets of at least {min_size + 1} samples, got {n}")
    out.append(b)
  return out


def scale(sizes: Sequence[int], subsizes: Sequence[int]) -> float:
  """k = sqrt(r / (1 - r)), r the mean realised rate b_i / n_i."""
  r = float(np.mean([b / n for b, n in zip(subsizes, sizes)]))
  return float(np.sqrt(r / (1.0 - r)))


def replicates(
  statistic: Callable,
  sizes: Sequence[int],
  *,
  num: int,
  rate: float = DEFAULT_RATE,
  seed: int = 0,
  min_size: int = 2,
) -> np.ndarray:
  """statistic(*index_arrays) for `num` draws; index array i holds b_i distinct rows of
  range(sizes[i]) (`rng.choice(n_i, b_i, replace=False)`, sets in order, rng =
  numpy.random.default_rng(seed)). Returns [num] or [num, K] (K outputs per call)."""
  if num < 2:
    raise ValueError(f"subsampling needs at least 2 replicates, got {num}")
  subsizes = subsample_sizes(sizes, rate=rate, min_size=min_size)
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num):
    indices = [rng.choice(n, b, replace=False) for n, b in zip(sizes, subsizes)]
    values.append(statistic(*indices))
  return np.asarray(values, np.float64)


def interval_from_replicates(
  estimate, values, *, k: float, confidence: float = 0.95, center: str = "estimate"
):
  """[theta_n - k q_{(1+c)/2}, theta_n - k q_{(1-c)/2}], q of the deviations values - estimate
  (center="estimate") or values - mean(values) (center="mean": for an unbiased statistic whose
  estimate carries Monte Carlo noise of its own, see `interval`)."""
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
  if center not in ("estimate", "mean"):
    raise ValueError(f"center must be 'estimate' or 'mean', got {center!r}")
  estimate = np.asarray(estimate, np.float64)
  values = np.asarray(values, np.float64)
  deviations = values - (estimate if center == "estimate" else values.mean(axis=0))
  q_low, q_high = np.quantile(
    deviations, [0.5 * (1.0 - confidence), 0.5 * (1.0 + confidence)], axis=0
  )
  return estimate - k * q_high, estimate - k * q_low


def interval(
  statistic: Callable,
  sizes: Sequence[int],
  *,
  estimate,
  num: int,
  rate: float = DEFAULT_RATE,
  seed: int = 0,
  confidence: float = 0.95,
  min_size: int = 2,
  center: str = "estimate",
):
  """Subsampling interval (module docstring) of `statistic`, whose value on all rows is
  `estimate`: (lo, hi), each a float or an array with one entry per output.

  center="mean" measures the deviations from the replicates' mean instead of from `estimate`:
  for an unbiased statistic computed with random draws of its own (KID's subsets), `estimate`
  holds one fixed draw's noise e_n, which would shift every deviation by -e_n and the interval
  by +e_n (the noise then counts twice in its centre); a U-statistic's half-sample mean is the
  full-sample value, so the replicate mean is the right centre."""
  values = replicates(statistic, sizes, num=num, rate=rate, seed=seed, min_size=min_size)
  subsizes = subsample_sizes(sizes, rate=rate, min_size=min_size)
  return interval_from_replicates(
    estimate, values, k=scale(sizes, subsizes), confidence=confidence, center=center
  )


POPULATION = "population value"
AT_SET_SIZES = "expected value at these set sizes"
# What each metric's interval is for (JSON key -> target); FID, KID and IS: the population value.
# Precision/recall: k-NN radii shrink as the sets grow, so their large-set limit is the overlap of
# the supports (1 for distributions with densities on the same support), approached slowly and
# not as 1/n; the interval is for their expected value at the given set sizes and k.
TARGETS = {"precision": AT_SET_SIZES, "recall": AT_SET_SIZES}


def target(keys) -> str:
  """What the intervals of the metrics `keys` (JSON keys) are for, as one phrase."""
  kinds = {TARGETS.get(key, POPULATION) for key in keys} or {POPULATION}
  if len(kinds) == 1:
    return kinds.pop()
  at_sizes = ", ".join(key for key in keys if TARGETS.get(key) == AT_SET_SIZES)
  return f"{POPULATION} ({at_sizes}: the {AT_SET_SIZES})"


def describe(options, keys=()) -> str | None:
  """`interval: ...` line stating the method of an interval (for the metrics `keys`), or None
  without one."""
  num = getattr(options, "subsamples", 0)
  if not num:
    return None
  return (
    f"interval: {100 * options.confidence:g}% for the {target(keys)}, {num} subsamples "
    f"without replacement at rate {options.subsample_rate:g} (Politis-Romano-Wolf, "
    f"finite-population corrected), seed {options.subsample_seed}"
  )


def format_value(value: float, bounds=None, *, digits: str = ".6f") -> str:
  """`value` or `value [lo, hi]`."""
  if bounds is None:
    return f"{value:{digits}}"
  return f"{value:{digits}} [{bounds[0]:{digits}}, {bounds[1]:{digits}}]"
