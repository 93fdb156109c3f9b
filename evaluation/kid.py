"""Kernel Inception Distance (Binkowski et al. 2018), as clean-fid / stylegan2-ada compute it.

    mean, std = kernel_inception_distance(pool3_real, pool3_fake, num_subsets=100, subset_size=1000)

Command line (prints `KID: <mean> +- <std>`, with --subsamples N `KID: <mean> [<lo>, <hi>] +- <std>`,
then a `protocol: ...` line):
    python -m evaluation.kid --samples DIR_OR_NPY --reference DIR_OR_NPZ [--num_subsets 100]
"""

from __future__ import annotations

import sys

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """k(x, y) = (x . y / d + 1)^3 for rows of x [m, d] and y [n, d] -> [m, n] (float64)."""
  d = x.shape[1]
  return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 of two equal-size samples [m, d] with the cubic polynomial kernel.

  MMD^2_u = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2
  """
  m = x.shape[0]
  kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
  within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
  return float(within - 2.0 * kxy.sum() / (m * m))


def kernel_inception_distance(
  real_features,
  fake_features,
  *,
  num_subsets: int = 100,
  subset_size: int = 1000,
  seed: int = 0,
  rng=None,
) -> tuple[float, float]:
  """Mean and standard deviation of `mmd2_unbiased` over random subsets.

  Each subset draws `subset_size` rows without replacement from each set, first from
  `real_features`, then from `fake_features` (`rng.choice(n, m, replace=False)`, with `rng` a
  numpy Generator seeded with `seed` unless given); `subset_size` is clipped to the smaller set,
  as clean-fid does. Features in float64.

  The reference implementations draw with a legacy `np.random.RandomState` stream; passing the
  same stream reproduces their subsets exactly (checked in tests/reference/test_metrics_ref.py):
    * torch-fidelity `kid_features_to_metric(f1, f2)`, rng_seed s: ours(f1, f2, rng=RandomState(s));
    * clean-fid `kernel_distance(f1, f2)` after `np.random.seed(s)`: ours(f2, f1, rng=RandomState(s)).

  Raises:
    ValueError: non-2-D or mismatched features, fewer than 2 samples, bad subset settings.
  """
  real = np.asarray(real_features, np.float64)
  fake = np.asarray(fake_features, np.float64)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"features must be [N, D] with equal D, got {real.shape} and {fake.shape}")
  if num_subsets < 1 or subset_size < 2:
    raise ValueError(
      f"need num_subsets >= 1 and subset_size >= 2, got {num_subsets}, {subset_size}"
    )
  m = min(real.shape[0], fake.shape[0], subset_size)
  if m < 2:
    raise ValueError(
      f"KID needs at least 2 samples per set, got {real.shape[0]} and {fake.shape[0]}"
    )
  if not (np.isfinite(real).all() and np.isfinite(fake).all()):
    raise ValueError("features contain NaN or inf")
  rng = np.random.default_rng(seed) if rng is None else rng
  estimates = np.empty(num_subsets)
  for i in range(num_subsets):
    x = real[rng.choice(real.shape[0], m, replace=False)]
    y = fake[rng.choice(fake.shape[0], m, replace=False)]
    estimates[i] = mmd2_unbiased(x, y)
  return float(estimates.mean()), float(estimates.std())


def subsample_interval(
  real_features,
  fake_features,
  mean: float,
  *,
  num_subsets: int = 100,
  subset_size: int = 1000,
  seed: int = 0,
  num: int,
  rate: float = 0.5,
  subsample_seed: int = 0,
  confidence: float = 0.95,
) -> tuple[float, float]:
  """Subsampling interval of the population KID (`evaluation.subsampling`), `mean` being
  `kernel_inception_distance(real, fake, ...)`: per replicate, rows of the samples then of the
  reference drawn without replacement, and the subset estimator run on them with the subsets
  scaled by the rate (subset_size * rate rows, as the subsets' share of the set stays), unless a
  subset is the whole set. KID is unbiased, so the deviations are taken from the replicates'
  mean (`subsampling.interval(center="mean")`): the estimate's own random subsets do not shift
  the interval."""
  from evaluation import subsampling

  real = np.asarray(real_features, np.float64)
  fake = np.asarray(fake_features, np.float64)
  m = min(len(real), len(fake), subset_size)
  if m < min(len(real), len(fake)):  # subsets keep their fraction of the smaller set
    m = max(2, int(np.floor(m * rate + 0.5)))
  statistic = lambda i, j: kernel_inception_distance(
    real[j], fake[i], num_subsets=num_subsets, subset_size=m, seed=seed
  )[0]
  low, high = subsampling.interval(
    statistic,
    (len(fake), len(real)),
    estimate=mean,
    num=num,
    rate=rate,
    seed=subsample_seed,
    confidence=confidence,
    center="mean",
  )
  return float(low), float(high)


# ----------------------------------------------------------------------------------------------
# Command line


def _define_flags(fv) -> None:
  from absl import flags

  from evaluation import cli

  cli.define_extractor_flags(fv)
  flags.DEFINE_integer(
    "num_subsets", 100, "Number of random subsets.", lower_bound=1, flag_values=fv
  )
  flags.DEFINE_integer(
    "subset_size",
    1000,
    "Samples per subset (clipped to the smaller set).",
    lower_bound=2,
    flag_values=fv,
  )
  flags.DEFINE_integer("seed", 0, "Seed of the subset sampling.", flag_values=fv)


def _run(fv) -> None:
  from evaluation import cli

  kind = cli.feature_kind(fv, "pool_3")
  samples = cli.open_source(fv.samples, "--samples", kind=kind, min_count=2)
  reference = cli.open_source(
    fv.reference, "--reference", kind=kind, min_count=2, cacheable=fv.cache
  )
  network = cli.feature_network(fv, "inception", [samples, reference])
  result = compute_from_sources(
    samples,
    reference,
    network,
    fv,
    num_subsets=fv.num_subsets,
    subset_size=fv.subset_size,
    seed=fv.seed,
  )
  cli.commit_cache(network)
  cli.print_results(
    fv,
    [cli.Value("KID", "kid", result["value"], result["interval"], std=result["std"], digits=".6g")],
    [samples, reference],
  )


def compute_from_sources(
  samples,
  reference,
  network,
  options,
  *,
  num_subsets: int = 100,
  subset_size: int = 1000,
  seed: int = 0,
) -> dict:
  """KID of two checked `evaluation.cli.Source`s: {"value" (mean), "std", "interval",
  "protocols"}. The --subsamples interval draws rows of both feature sets without replacement
  (`evaluation.subsampling`), then runs the same subset estimator (seeded as the full run, subset
  size clipped to the drawn rows) on them."""
  from evaluation import cli

  cli.check_protocols_early(samples, reference, network, options)
  real = cli.features_of(reference, network, options)
  cli.check_protocols_early(samples, reference, network, options)
  fake = cli.features_of(samples, network, options)
  cli.check_protocols(samples, reference, options)
  mean, std = kernel_inception_distance(
    real, fake, num_subsets=num_subsets, subset_size=subset_size, seed=seed
  )
  interval = None
  if options.subsamples:
    interval = subsample_interval(
      real,
      fake,
      mean,
      num_subsets=num_subsets,
      subset_size=subset_size,
      seed=seed,
      num=options.subsamples,
      rate=options.subsample_rate,
      subsample_seed=options.subsample_seed,
      confidence=options.confidence,
    )
  return {
    "value": mean,
    "std": std,
    "interval": interval,
    "protocols": {"samples": samples.protocol, "reference": reference.protocol},
  }


def main(argv=None) -> int:
  from evaluation import cli

  return cli.run(
    argv, doc=__doc__, network="inception", define_flags=_define_flags, body=_run, reference=True
  )


if __name__ == "__main__":
  sys.exit(main())
