"""Improved precision and recall (Kynkaanniemi et al. 2019) and the realism score.

    precision, recall = precision_recall(real_vgg_fc2, fake_vgg_fc2, k=3)
    scores = realism_score(real_vgg_fc2, fake_vgg_fc2)          # [N_fake]

The real set is the reference manifold for precision: a generated sample counts if it lies in
some ball B(r_j, R_k(r_j)) of a real sample r_j, whose radius is the distance to r_j's k-th
nearest *real* neighbour (r_j itself excluded). Recall swaps the roles. Radii come from the full
sets, as kynkaat/improved-precision-and-recall-metric: squared distances in float32
(|u|^2 - 2 u.v + |v|^2, clipped at 0) and `d <= R` comparisons.

Compute: row blocks of `batch_size` samples against the whole other set, one
`tf.function(jit_compile=True)` per block kind; memory is O(batch_size x N), never N x N unless
that fits the block budget. The real-fake distance block is computed once and serves both
precision (any over real columns) and recall (any over fake rows), so the work is three
squared-distance matrices (real-real, fake-fake, real-fake), as the NumPy floor in
bench/bench_precision_recall.py.

Command line (prints `precision: <p>` and `recall: <r>`, each followed by `[<lo>, <hi>]` with
--subsamples N -- an interval for the expected value at these set sizes and k, see
`subsample_interval` -- then a `protocol: ...` line naming the VGG-16 used):
    python -m evaluation.precision_recall --samples DIR_OR_NPY --reference DIR_OR_NPZ [--k 3] \
        [--vgg keras|torch-fidelity]
"""

from __future__ import annotations

import functools
import sys

import numpy as np

DEFAULT_BLOCK_ELEMENTS = 1 << 25  # 128 MiB of float32 distances per block
REALISM_EPS = 1e-5  # realism score denominator offset (official code)
REALISM_RADIUS_PERCENTILE = 50.0  # official realism: radii above the median are pruned


def _tf():
  import tensorflow as tf

  return tf


def _default_batch_size(num_columns: int) -> int:
  return max(1, DEFAULT_BLOCK_ELEMENTS // max(1, num_columns))


def _check_features(real, fake, k: int) -> tuple[np.ndarray, np.ndarray]:
  real = np.ascontiguousarray(real, np.float32)
  fake = np.ascontiguousarray(fake, np.float32)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"features must be [N, D] with equal D, got {real.shape} and {fake.shape}")
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  if min(real.shape[0], fake.shape[0]) <= k:
    raise ValueError(
      f"need more than k={k} samples per set, got {real.shape[0]} real and {fake.shape[0]} fake"
    )
  if not (np.isfinite(real).all() and np.isfinite(fake).all()):
    raise ValueError("features contain NaN or inf")
  return real, fake


class _Blocks:
  """The XLA-compiled block computations (built lazily so importing needs no TensorFlow)."""

  def __init__(self):
    tf = _tf()

    def squared_distances(rows, columns, column_sqnorms):  # [b, D], [N, D], [N] -> [b, N]
      row_sqnorms = tf.reduce_sum(tf.square(rows), axis=1)
      products = tf.matmul(rows, columns, transpose_b=True)
      return tf.maximum(row_sqnorms[:, None] - 2.0 * products + column_sqnorms[None, :], 0.0)

    @tf.function(jit_compile=True)
    def kth_neighbour(rows, row_ids, columns, column_ids, column_sqnorms, k):
      """Squared distance from each row to its k-th nearest column, columns with the row's own
      id (itself, and any copies of it) excluded."""
      d = squared_distances(rows, columns, column_sqnorms)  # [b, N]
      d = tf.where(column_ids[None, :] == row_ids[:, None], np.float32(np.inf), d)  # self excluded
      positions = tf.range(tf.shape(columns)[0])[None, :]
      for _ in range(k - 1):  # drop the k-1 nearest one at a time (ties count separately)
        nearest = tf.argmin(d, axis=1, output_type=tf.int32)[:, None]
        d = tf.where(positions == nearest, np.float32(np.inf), d)
      return tf.reduce_min(d, axis=1)  # [b]

    @tf.function(jit_compile=True)
    def cross(fake_rows, fake_radii, real, real_sqnorms, real_radii):
      """Per fake row: inside the real manifold; per real column: inside some fake row's ball."""
      d = squared_distances(fake_rows, real, real_sqnorms)  # [b, N_real]
      in_real_manifold = tf.reduce_any(d <= real_radii[None, :], axis=1)  # [b]
      covered = tf.reduce_any(d <= fake_radii[:, None], axis=0)  # [N_real]
      return in_real_manifold, covered

    @tf.function(jit_compile=True)
    def realism(fake_rows, real, real_sqnorms, real_radii, eps):
      d = squared_distances(fake_rows, real, real_sqnorms)  # [b, N_real]
      return tf.reduce_max(real_radii[None, :] / (d + eps), axis=1)  # [b]

    self.kth_neighbour, self.cross, self.realism = kth_neighbour, cross, realism


_BLOCKS: _Blocks | None = None


def _blocks() -> _Blocks:
  global _BLOCKS
  if _BLOCKS is None:
    _BLOCKS = _Blocks()
  return _BLOCKS


def _exact_float32(fn):
  """Runs `fn` with TF32 off (exact float32 distances on Ampere+ GPUs; see evaluation.numerics)."""

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    from evaluation import numerics

    with numerics.exact_float32():
      return fn(*args, **kwargs)

  return wrapper


def _row_blocks(rows: np.ndarray, batch_size: int, pad_value: float = 0.0):
  """(start, count, padded block [batch_size, ...]) so every block has one compiled shape."""
  for start in range(0, rows.shape[0], batch_size):
    block = rows[start : start + batch_size]
    count = block.shape[0]
    if count < batch_size:
      pad = np.full((batch_size - count,) + block.shape[1:], pad_value, block.dtype)
      block = np.concatenate([block, pad])
    yield start, count, block


@_exact_float32
def manifold_radii(features, *, k: int = 3, batch_size: int | None = None, ids=None) -> np.ndarray:
  """Squared distance of every sample to its k-th nearest neighbour in the same set (self
  excluded), float32 [N]; `batch_size` rows at a time against the whole set.

  ids: optional [N] int identities (default: the row numbers); rows sharing an id
  (copies of one sample) are never each other's neighbours.
  """
  tf = _tf()
  features = np.ascontiguousarray(features, np.float32)
  n = features.shape[0]
  if n <= k:
    raise ValueError(f"need more than k={k} samples, got {n}")
  ids = np.arange(n, dtype=np.int32) if ids is None else np.asarray(ids, np.int32)
  if ids.shape != (n,):
    raise ValueError(f"ids must have shape ({n},), got {ids.shape}")
  batch_size = min(n, batch_size or _default_batch_size(n))
  columns = tf.constant(features)
  column_ids = tf.constant(ids)
  sqnorms = tf.reduce_sum(tf.square(columns), axis=1)
  padded_ids = np.concatenate([ids, np.full(batch_size, -1, np.int32)])
  radii = np.empty(n, np.float32)
  for start, count, block in _row_blocks(features, batch_size):
    radii[start : start + count] = (
      _blocks()
      .kth_neighbour(
        tf.constant(block),
        tf.constant(padded_ids[start : start + batch_size]),
        columns,
        column_ids,
        sqnorms,
        k,
      )
      .numpy()[:count]
    )
  return radii


@_exact_float32
def precision_recall(
  real_features,
  fake_features,
  *,
  k: int = 3,
  batch_size: int | None = None,
  real_ids=None,
  fake_ids=None,
) -> tuple[float, float]:
  """Improved precision and recall of generated features against real features.

  precision = (1/M) sum_i 1[exists j: |f_i - r_j|^2 <= R_k(r_j)^2]   (fake inside real manifold)
  recall    = (1/N) sum_j 1[exists i: |r_j - f_i|^2 <= R_k(f_i)^2]   (real inside fake manifold)
  with R_k(x) the distance from x to its k-th nearest neighbour within its own set (self excluded).

  Args:
    real_features: [N, D] features of real images (VGG-16 fc2 in the paper) -- the reference.
    fake_features: [M, D] features of generated images.
    k: neighbourhood size (paper: 3).
    batch_size: rows per block (memory ~ batch_size x max(N, M) floats); default keeps a block
      at 128 MiB. The result does not depend on it.
    real_ids, fake_ids: optional sample identities (see `manifold_radii`; rows sharing an id are copies of one sample).

  Returns:
    (precision, recall) as Python floats.
  """
  tf = _tf()
  real, fake = _check_features(real_features, fake_features, k)
  real_radii = manifold_radii(real, k=k, batch_size=batch_size, ids=real_ids)  # [N]
  fake_radii = manifold_radii(fake, k=k, batch_size=batch_size, ids=fake_ids)  # [M]
  rows = min(fake.shape[0], batch_size or _default_batch_size(real.shape[0]))
  real_t = tf.constant(real)
  real_sqnorms = tf.reduce_sum(tf.square(real_t), axis=1)
  real_radii_t = tf.constant(real_radii)
  inside = np.empty(fake.shape[0], bool)
  covered = np.zeros(real.shape[0], bool)
  # Padded fake rows get radius -1: no squared distance is <= -1, so they cover nothing.
  padded_radii = np.concatenate([fake_radii, np.full(rows, -1.0, np.float32)])
  for start, count, block in _row_blocks(fake, rows):
    block_inside, block_covered = _blocks().cross(
      tf.constant(block),
      tf.constant(padded_radii[start : start + rows]),
      real_t,
      real_sqnorms,
      real_radii_t,
    )
    inside[start : start + count] = block_inside.numpy()[:count]
    covered |= block_covered.numpy()
  return float(inside.mean()), float(covered.mean())


@_exact_float32
def realism_score(
  real_features,
  fake_features,
  *,
  k: int = 3,
  radius_percentile: float = REALISM_RADIUS_PERCENTILE,
  batch_size: int | None = None,
) -> np.ndarray:
  """Realism score of every generated sample (Kynkaanniemi et al. 2019, Sec. 5).

  R(f) = max_j R_k(r_j)^2 / (|f - r_j|^2 + 1e-5) over real samples whose radius is at most the
  `radius_percentile`-th percentile of all radii (larger balls are pruned, radius set to 0), as
  the official code; like it, the ratio is of *squared* distances (the paper writes norms;
  R >= 1 <=> inside a kept ball either way).

  Returns:
    float32 [M].
  """
  tf = _tf()
  real, fake = _check_features(real_features, fake_features, k)
  radii = manifold_radii(real, k=k, batch_size=batch_size)
  radii = np.where(radii > np.percentile(radii, radius_percentile), 0.0, radii).astype(np.float32)
  rows = min(fake.shape[0], batch_size or _default_batch_size(real.shape[0]))
  real_t = tf.constant(real)
  real_sqnorms = tf.reduce_sum(tf.square(real_t), axis=1)
  scores = np.empty(fake.shape[0], np.float32)
  for start, count, block in _row_blocks(fake, rows):
    scores[start : start + count] = (
      _blocks()
      .realism(
        tf.constant(block),
        real_t,
        real_sqnorms,
        tf.constant(radii),
        tf.constant(REALISM_EPS, tf.float32),
      )
      .numpy()[:count]
    )
  return scores


# ----------------------------------------------------------------------------------------------
# Command line


def _define_flags(fv) -> None:
  from absl import flags

  from evaluation import cli

  cli.define_extractor_flags(fv)
  flags.DEFINE_integer(
    "k", 3, "Neighbourhood size of the manifold balls (paper: 3).", lower_bound=1, flag_values=fv
  )
  flags.DEFINE_integer(
    "distance_batch_size",
    None,
    "Rows per distance block (default: blocks of 128 MiB).",
    lower_bound=1,
    flag_values=fv,
  )


def _run(fv) -> None:
  from evaluation import cli

  kind = cli.feature_kind(fv, "fc2")
  samples = cli.open_source(fv.samples, "--samples", kind=kind, min_count=fv.k + 1)
  reference = cli.open_source(
    fv.reference, "--reference", kind=kind, min_count=fv.k + 1, cacheable=fv.cache
  )
  network = cli.feature_network(fv, "vgg16", [samples, reference])
  result = compute_from_sources(
    samples, reference, network, fv, k=fv.k, batch_size=fv.distance_batch_size
  )
  cli.commit_cache(network)
  cli.print_results(fv, values(result), [samples, reference])


def values(result: dict) -> list:
  """The two printed values (`evaluation.cli.Value`) of a `compute_from_sources` result."""
  from evaluation import cli

  out = []
  for i, name in enumerate(("precision", "recall")):
    bounds = (
      None if result["interval"] is None else (result["interval"][0][i], result["interval"][1][i])
    )
    out.append(cli.Value(name, name, result[name], bounds))
  return out


def subsample_interval(
  real_features,
  fake_features,
  estimate,
  *,
  k: int = 3,
  num: int,
  rate: float = 0.5,
  seed: int = 0,
  confidence: float = 0.95,
  batch_size: int | None = None,
) -> tuple[list[float], list[float]]:
  """Subsampling interval ([lo_p, lo_r], [hi_p, hi_r]) of the *expected* precision and recall at
  these set sizes and k, `estimate` being `precision_recall(real, fake, k=k)`.

  Per replicate, round(rate * M) rows of the samples and round(rate * N) of the reference are
  drawn without replacement (`evaluation.subsampling.replicates`) and precision/recall recomputed
  on them, radii included. The deviations are taken from the replicates' mean
  (`subsampling.interval(center="mean")`), so the interval is centred on `estimate` with the
  spread sqrt(rate / (1 - rate)) (q - mean):

    [theta_n - k_r (q_{(1+c)/2} - mean), theta_n - k_r (q_{(1-c)/2} - mean)].

  Why not the population value as for FID: the k-NN radii shrink as the sets grow, so the
  large-set limit is the overlap of the supports (1 for two distributions with densities on one
  support), approached slowly (a few hundredths per doubling of both sets, not as 1/n), and the
  half-sample shift that removes FID's 1/n bias has no such target here. Measured by simulation
  (tests/evaluation/test_subsampling.py): this interval covers the expected value at the given
  sizes at the nominal rate; the population-value construction covers it at 80% / 69%.
  """
  from evaluation import subsampling

  real, fake = np.asarray(real_features), np.asarray(fake_features)
  low, high = subsampling.interval(
    lambda i, j: precision_recall(real[j], fake[i], k=k, batch_size=batch_size),
    (len(fake), len(real)),
    estimate=np.asarray(estimate, np.float64),
    num=num,
    rate=rate,
    seed=seed,
    confidence=confidence,
    min_size=k + 1,
    center="mean",
  )
  return low.tolist(), high.tolist()


def compute_from_sources(
  samples, reference, network, options, *, k: int = 3, batch_size: int | None = None
) -> dict:
  """Precision/recall of two checked `evaluation.cli.Source`s: {"precision", "recall",
  "interval" (None or ([lo_p, lo_r], [hi_p, hi_r])), "protocols"}. The --subsamples interval is
  for the expected precision/recall at these set sizes (`subsample_interval`)."""
  from evaluation import cli

  cli.check_protocols_early(samples, reference, network, options)
  real = cli.features_of(reference, network, options)
  cli.check_protocols_early(samples, reference, network, options)
  fake = cli.features_of(samples, network, options)
  cli.check_protocols(samples, reference, options)
  precision, recall = precision_recall(real, fake, k=k, batch_size=batch_size)
  interval = None
  if options.subsamples:
    interval = subsample_interval(
      real,
      fake,
      (precision, recall),
      k=k,
      num=options.subsamples,
      rate=options.subsample_rate,
      seed=options.subsample_seed,
      confidence=options.confidence,
      batch_size=batch_size,
    )
  return {
    "precision": precision,
    "recall": recall,
    "interval": interval,
    "protocols": {"samples": samples.protocol, "reference": reference.protocol},
  }


def main(argv=None) -> int:
  from evaluation import cli

  return cli.run(
    argv, doc=__doc__, network="vgg16", define_flags=_define_flags, body=_run, reference=True
  )


if __name__ == "__main__":
  sys.exit(main())
