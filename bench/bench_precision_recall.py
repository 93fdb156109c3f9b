"""Precision/recall speed: ours (XLA blocks) vs the NumPy floor, measured in one run.

    python bench/bench_precision_recall.py [--n 10000] [--dim 4096] [--k 3]

The floor is the minimum NumPy work the metric needs: the three squared-distance matrices
(real-real, fake-fake, real-fake) by float32 GEMM, `np.partition` for the k-th neighbour radii and
the two `any(d <= r)` reductions, with whole N x N matrices (no memory bound). Features are random
ReLU'd Gaussians (VGG fc2-like: non-negative, 4096-d); speed does not depend on their values.
Prints both times and their ratio (goal: ours <= 1.3x the floor on CPU).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from evaluation import precision_recall


def numpy_floor(real, fake, k):
  def sq(a, b):
    d = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)

  def radii(x):
    d = sq(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]

  r_real, r_fake = radii(real), radii(fake)
  d = sq(fake, real)
  return (d <= r_real[None, :]).any(1).mean(), (d <= r_fake[:, None]).any(0).mean()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=10000, help="samples per set")
  parser.add_argument("--dim", type=int, default=4096, help="feature dimension")
  parser.add_argument("--k", type=int, default=3, help="neighbourhood size")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  real = np.maximum(rng.normal(size=(args.n, args.dim)), 0).astype(np.float32)
  fake = np.maximum(rng.normal(size=(args.n, args.dim)), 0).astype(np.float32)  # same law

  start = time.perf_counter()
  ours_first = precision_recall.precision_recall(real, fake, k=args.k)
  t_first = time.perf_counter() - start
  start = time.perf_counter()
  ours = precision_recall.precision_recall(real, fake, k=args.k)
  t_ours = time.perf_counter() - start
  start = time.perf_counter()
  floor = numpy_floor(real, fake, args.k)
  t_floor = time.perf_counter() - start
  assert ours == ours_first
  print(f"precision/recall {args.n} vs {args.n}, {args.dim}-d, k={args.k}, {os.cpu_count()} CPUs")
  print(f"  ours  (XLA, first call incl. compile): {t_first:8.2f} s")
  print(
    f"  ours  (XLA, steady state)            : {t_ours:8.2f} s   -> P={ours[0]:.4f} R={ours[1]:.4f}"
  )
  print(
    f"  NumPy floor (3 GEMMs + partition)    : {t_floor:8.2f} s   -> P={floor[0]:.4f} R={floor[1]:.4f}"
  )
  print(f"  ratio ours / floor: {t_ours / t_floor:.2f}x (first call {t_first / t_floor:.2f}x)")


if __name__ == "__main__":
  main()
