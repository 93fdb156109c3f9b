"""Bootstrap confidence intervals for FID, KID and precision/recall (`--bootstrap N`).

Each replicate draws every input set again with replacement (sizes kept) and recomputes the
whole metric on the drawn rows; the interval is the percentile interval
[q_{(1-c)/2}, q_{(1+c)/2}] of the N replicate values (Efron & Tibshirani 1993, Sec. 13.3). For
precision/recall a drawn sample never counts its own copies as neighbours (see
`precision_recall.precision_recall(real_ids=..., fake_ids=...)`): a duplicate at distance 0 would
shrink every k-NN ball. Reported as `value [lo, hi]`, the value being the metric on the full sets.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def percentile_interval(values, *, confidence: float = 0.95) -> tuple[float, float]:
  """[lo, hi] = percentiles 100(1-c)/2 and 100(1+c)/2 of the replicate values."""
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
  values = np.asarray(values, np.float64)
  low, high = np.percentile(values, [50.0 * (1.0 - confidence), 50.0 * (1.0 + confidence)], axis=0)
  return low, high


def replicates(statistic: Callable, sizes: Sequence[int], *, num: int,
               seed: int = 0) -> np.ndarray:
  """statistic(*index_arrays) for `num` draws; index array i has sizes[i] rows drawn with
  replacement from range(sizes[i]). Returns [num] or [num, K] (K outputs per call)."""
  if num < 1:
    raise ValueError(f"bootstrap needs at least 1 replicate, got {num}")
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num):
    indices = [rng.integers(0, n, size=n) for n in sizes]
    values.append(statistic(*indices))
  return np.asarray(values, np.float64)


def interval(statistic: Callable, sizes: Sequence[int], *, num: int, seed: int = 0,
             confidence: float = 0.95):
  """Percentile interval(s) of `statistic` over `num` bootstrap replicates: (lo, hi), each a
  float or an array with one entry per output of the statistic."""
  return percentile_interval(replicates(statistic, sizes, num=num, seed=seed),
                             confidence=confidence)


def format_value(value: float, bounds=None, *, digits: str = ".6f") -> str:
  """`value` or `value [lo, hi]`."""
  if bounds is None:
    return f"{value:{digits}}"
  return f"{value:{digits}} [{bounds[0]:{digits}}, {bounds[1]:{digits}}]"
