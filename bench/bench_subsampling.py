"""Cost of one `--subsamples` replicate on cached features (Inception pool_3 size, 2048-d).

  python bench/bench_subsampling.py                       # n = 10000 per set, rate 0.5
  python bench/bench_subsampling.py --n 50000 --replicates 2

Per replicate, on random features: FID with both sets subsampled (two covariances of b x 2048
rows, one Cholesky factorisation and one symmetric eigenvalue solve, 2048 x 2048:
`fid.replicate_distance`), FID against a statistics file (one covariance, one eigenvalue solve),
the same with `fid.frechet_distance` (a full eigendecomposition more), and KID's subset estimator
as a replicate runs it (100 subsets of round(rate * 1000) rows: 3 kernel matrices each; timed on
--kid_subsets subsets and scaled to 100), the Inception Score of round(rate * --is_n) rows of
1008-class logits in 10 splits, and precision/recall (k = 3) of round(rate * --pr_n) rows of
both --pr_dims-d sets (three squared-distance matrices, `precision_recall.precision_recall`).
Prints seconds per replicate (median and fastest of the timed replicates, the cases
interleaved) and the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluation import fid, inception_score, kid, precision_recall


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    return "unknown"


def median_time(fn, repeats: int) -> float:
  return float(np.median(times_of(fn, repeats)))


def times_of(fn, repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=10000)
  parser.add_argument("--dims", type=int, default=2048)
  parser.add_argument("--rate", type=float, default=0.5)
  parser.add_argument("--replicates", type=int, default=3)
  parser.add_argument("--kid_subsets", type=int, default=5)
  parser.add_argument("--is_n", type=int, default=50000)
  parser.add_argument("--pr_n", type=int, default=10000)
  parser.add_argument("--pr_dims", type=int, default=4096)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  x = rng.normal(size=(args.n, args.dims)).astype(np.float32)
  y = (rng.normal(size=(args.n, args.dims)) + 0.1).astype(np.float32)
  b = int(np.floor(args.rate * args.n + 0.5))
  draws = np.random.default_rng(1)
  index = lambda: draws.choice(args.n, b, replace=False)
  xd, yd = x.astype(np.float64), y.astype(np.float64)  # as fid.subsample_interval holds them
  mu2, sigma2 = fid.feature_statistics(yd)
  factor2 = fid._factor(sigma2)
  logits = rng.normal(0, 3, size=(args.is_n, 1008))
  b_is = int(np.floor(args.rate * args.is_n + 0.5))
  real_pr = rng.normal(size=(args.pr_n, args.pr_dims)).astype(np.float32)
  fake_pr = (rng.normal(size=(args.pr_n, args.pr_dims)) + 0.05).astype(np.float32)
  b_pr = int(np.floor(args.rate * args.pr_n + 0.5))
  precision_recall.precision_recall(real_pr[:b_pr], fake_pr[:b_pr])  # compile outside the timing
  cases = (
    (
      "FID, both sets subsampled",
      lambda: fid.replicate_distance(
        *fid.feature_statistics(xd[index()]), *fid.feature_statistics(yd[index()])
      ),
    ),
    (
      "FID, reference statistics",
      lambda: fid.replicate_distance(
        *fid.feature_statistics(xd[index()]), mu2, sigma2, factor2=factor2
      ),
    ),
    (
      "(FID by frechet_distance, for comparison)",
      lambda: fid.frechet_distance(
        *fid.feature_statistics(xd[index()]), *fid.feature_statistics(yd[index()])
      ),
    ),
    (
      f"IS, {b_is} of {args.is_n} rows of 1008 logits, 10 splits",
      lambda: inception_score.inception_score(
        logits[np.sort(draws.choice(args.is_n, b_is, replace=False))], splits=10
      ),
    ),
    (
      f"precision/recall, {b_pr} of {args.pr_n} rows per set, {args.pr_dims}-d",
      lambda: precision_recall.precision_recall(
        real_pr[draws.choice(args.pr_n, b_pr, replace=False)],
        fake_pr[draws.choice(args.pr_n, b_pr, replace=False)],
      ),
    ),
  )
  times = {name: [] for name, _ in cases}
  for _ in range(args.replicates):  # interleaved, so a change of load hits every case alike
    for name, call in cases:
      times[name] += times_of(call, 1)
  for name, _ in cases:
    print(
      f"{name}: {np.median(times[name]):.3g} s per replicate, fastest {min(times[name]):.3g} s "
      f"({'' if name.startswith(('IS', 'precision')) else f'n={args.n}, b={b}, d={args.dims}; '}"
      f"{args.replicates} replicates)"
    )
  xs, ys = x[:b].astype(np.float64), y[:b].astype(np.float64)
  # kid.subsample_interval: subsets of round(rate * 1000) rows when 1000 < n (else all b rows).
  m = int(np.floor(args.rate * 1000 + 0.5)) if 1000 < args.n else b
  seconds = median_time(
    lambda: kid.kernel_inception_distance(xs, ys, num_subsets=args.kid_subsets, subset_size=m), 1
  )
  print(
    f"KID (100 subsets of {m} of the b rows): {seconds * 100 / args.kid_subsets:.3g} s per "
    f"replicate (timed on {args.kid_subsets} subsets)"
  )
  print(
    f"cpu: {cpu_model()}, {os.cpu_count()} logical CPUs, load average "
    f"{os.getloadavg()[0]:.1f} (other processes share the CPUs when it exceeds their count)"
  )


if __name__ == "__main__":
  main()
