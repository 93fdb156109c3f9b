"""Frechet Inception Distance (Heusel et al. 2017, TTUR).

    mu1, s1 = feature_statistics(pool3_fake); mu2, s2 = feature_statistics(pool3_real)
    fid = frechet_distance(mu1, s1, mu2, s2)

Command line (prints `FID: <value>` or, with --subsamples N, `FID: <value> [<lo>, <hi>]` (an
interval for the population FID, see evaluation/subsampling.py), then a `protocol: ...` line):
    python -m evaluation.fid --samples DIR_ZIP_OR_NPY --reference DIR_NPZ_OR_tfds:mnist/test \
        [--save_stats OUT.npz] [--resize tf1|clean|pytorch-fid] [--dims 2048] [--subsamples 100] [--precision float32]
`--reference` may be images (folder, searched recursively, .zip, .npy/.npz), a name
`tfds:<name>/<split>`, or a statistics file (.npz with `mu`, `sigma`, and the protocol record
when we wrote it). Python: `evaluation.api.compute_fid(generate_fn, num_samples, reference=...)`.
See --help.
"""

from __future__ import annotations

import sys

import numpy as np


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of [N, D] features in float64, covariance with N - 1 (as TTUR's np.cov).

  Raises:
    ValueError: not a 2-D array, fewer than 2 samples, or non-finite values.
  """
  features = np.asarray(features, dtype=np.float64)
  if features.ndim != 2:
    raise ValueError(f"features must be [N, D], got shape {features.shape}")
  if features.shape[0] < 2:
    raise ValueError(f"FID statistics need at least 2 samples, got {features.shape[0]}")
  if not np.isfinite(features).all():
    raise ValueError("features contain NaN or inf")
  mu = features.mean(axis=0)  # [D]
  sigma = np.cov(features, rowvar=False)  # [D, D], divides by N - 1
  return mu, np.atleast_2d(sigma)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix (negative rounding eigenvalues -> 0)."""
  eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """tr(sqrt(sigma1 sigma2)) for covariance matrices, in the symmetric form.

  sigma1 sigma2 is similar to A = sqrt(s1) s2 sqrt(s1) (symmetric PSD), so
  tr(sqrt(s1 s2)) = sum_i sqrt(lambda_i(A)), real and finite even for singular covariances (no
  complex intermediate as with `scipy.linalg.sqrtm(s1 @ s2)`, no eps retry needed).
  """
  root1 = _psd_sqrt(sigma1)
  product = root1 @ sigma2 @ root1
  eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
  return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """FID = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2)), in float64.

  Raises:
    ValueError: mismatched or non-square shapes, or non-finite statistics.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.ndim != 1 or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(
      f"mismatched statistics: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
      f"mu2 {mu2.shape}, sigma2 {sigma2.shape}"
    )
  for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
    if not np.isfinite(value).all():
      raise ValueError(f"{name} contains NaN or inf")
  diff = mu1 - mu2
  return float(
    diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
  )


def subsample_interval(
  samples,
  reference,
  *,
  reference_stats=None,
  num: int,
  rate: float = 0.5,
  seed: int = 0,
  confidence: float = 0.95,
) -> tuple[float, float]:
  """Subsampling interval of the population FID (`evaluation.subsampling`): both feature sets
  subsampled without replacement per replicate (only the samples when the reference is given as
  statistics, which are then taken as exact). Replicates use `replicate_distance`."""
  from evaluation import subsampling

  samples = np.asarray(samples, np.float64)
  if reference_stats is not None:
    mu2, sigma2 = (np.asarray(v, np.float64) for v in reference_stats)
    factor2 = _factor(sigma2)  # once for all replicates
    statistic = lambda i: replicate_distance(
      *feature_statistics(samples[i]), mu2, sigma2, factor2=factor2
    )
    sizes = (len(samples),)
    estimate = frechet_distance(*feature_statistics(samples), mu2, sigma2)
  else:
    reference = np.asarray(reference, np.float64)
    statistic = lambda i, j: replicate_distance(
      *feature_statistics(samples[i]), *feature_statistics(reference[j])
    )
    sizes = (len(samples), len(reference))
    estimate = frechet_distance(*feature_statistics(samples), *feature_statistics(reference))
  low, high = subsampling.interval(
    statistic, sizes, estimate=estimate, num=num, rate=rate, seed=seed, confidence=confidence
  )
  return float(low), float(high)


def _factor(sigma: np.ndarray) -> np.ndarray:
  """F with F F^T = sigma: the Cholesky factor, or sqrt(sigma) if sigma is singular."""
  try:
    return np.linalg.cholesky(sigma)
  except np.linalg.LinAlgError:
    return _psd_sqrt(sigma)


def replicate_distance(mu1, sigma1, mu2, sigma2, *, factor2=None) -> float:
  """`frechet_distance` for the subsample replicates, cheaper: tr sqrt(s1 s2) from the eigenvalues
  of F^T s1 F with F F^T = s2 (F^T s1 F is similar to s1 s2); F is the Cholesky factor (no
  eigenvectors needed) unless s2 is singular. Equal to frechet_distance up to rounding."""
  factor2 = _factor(sigma2) if factor2 is None else factor2
  product = factor2.T @ sigma1 @ factor2
  eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
  diff = mu1 - mu2
  return float(
    diff @ diff
    + np.trace(sigma1)
    + np.trace(sigma2)
    - 2.0 * np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
  )


def save_statistics(path, mu, sigma, protocol: dict | None = None) -> None:
  """Writes TTUR-format statistics (.npz with `mu`, `sigma`) to exactly `path`.

  The protocol record (`evaluation.protocol`), when given, is stored as the key "protocol".
  `np.savez(path)` would append ".npz" to a name without it; the file is written through a
  handle instead, so `--save_stats out.stats` gives `out.stats`, which `--reference` reads back
  (it recognises .npz files by their content, not their name).
  """
  extra = {}
  if protocol is not None:
    from evaluation import protocol as protocol_lib

    extra[protocol_lib.NPZ_KEY] = np.str_(protocol_lib.to_json(protocol))
  with open(path, "wb") as f:
    np.savez(f, mu=mu, sigma=sigma, **extra)


def compute_from_sources(samples, reference, network, options) -> dict:
  """FID of two checked `evaluation.cli.Source`s (shared by the command and `evaluation.api`).

  Returns {"value", "interval" (None without --subsamples), "mu", "sigma" (the reference's),
  "protocols"}; raises ProtocolMismatchError before computing if the records differ.
  """
  from evaluation import cli

  cli.check_protocols_early(samples, reference, network, options)
  real = None if reference.stats is not None else cli.features_of(reference, network, options)
  cli.check_protocols_early(samples, reference, network, options)
  fake = cli.features_of(samples, network, options)
  cli.check_protocols(samples, reference, options)
  for features, source in ((fake, samples), (real, reference)):
    if features is not None:
      cli.warn_singular(np.asarray(features), source.flag)
  if options.subsamples:
    b = int(np.floor(options.subsample_rate * len(fake) + 0.5))
    if b < fake.shape[1]:
      print(
        f"warning: a subsample has {b} of {len(fake)} samples for {fake.shape[1]} "
        "dimensions: singular covariances in every replicate",
        file=sys.stderr,
      )
  mu1, sigma1 = feature_statistics(fake)
  mu2, sigma2 = reference.stats if real is None else feature_statistics(real)
  value = frechet_distance(mu1, sigma1, mu2, sigma2)
  interval = None
  if options.subsamples:
    interval = subsample_interval(
      fake,
      real,
      reference_stats=reference.stats if real is None else None,
      num=options.subsamples,
      rate=options.subsample_rate,
      seed=options.subsample_seed,
      confidence=options.confidence,
    )
  return {
    "value": value,
    "interval": interval,
    "mu": mu2,
    "sigma": sigma2,
    "protocols": {"samples": samples.protocol, "reference": reference.protocol},
  }


# ----------------------------------------------------------------------------------------------
# Command line


DIMS_FEATURE = {64: "block_64", 192: "block_192", 768: "block_768", 2048: "pool_3"}


def feature_for_dims(dims: int) -> str:
  """pytorch-fid's `--dims` -> our Inception output (ValueError for other values)."""
  if dims not in DIMS_FEATURE:
    raise ValueError(
      f"dims must be one of {sorted(DIMS_FEATURE)} (pytorch-fid's blocks), got {dims}"
    )
  return DIMS_FEATURE[dims]


def _define_flags(fv) -> None:
  from absl import flags

  from evaluation import cli

  cli.define_extractor_flags(fv)
  flags.DEFINE_enum(
    "dims",
    "2048",
    [str(d) for d in DIMS_FEATURE],
    "Inception features, as "
    "pytorch-fid's --dims: 2048 (pool_3, the standard FID), or 64 / 192 / 768 (the "
    "spatial mean after the stem's first / second max pool / after Mixed_6e). "
    "Recorded as the protocol's feature.",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "save_stats",
    None,
    "Write the reference statistics (TTUR format: .npz with "
    "'mu' and 'sigma') to exactly this file (no suffix added), for later use as "
    "--reference.",
    flag_values=fv,
  )


def _run(fv) -> None:
  from evaluation import cli

  cli.check_output_path(fv.save_stats)
  if fv.features and fv.dims != "2048":
    raise ValueError("--dims selects an Inception block; it does not apply to --features")
  kind = cli.feature_kind(fv, feature_for_dims(int(fv.dims)))
  samples = cli.open_source(fv.samples, "--samples", kind=kind, min_count=2)
  reference = cli.open_source(
    fv.reference, "--reference", kind=kind, min_count=2, allow_stats=True, cacheable=fv.cache
  )
  network = cli.feature_network(fv, "inception", [samples, reference])
  result = compute_from_sources(samples, reference, network, fv)
  cli.commit_cache(network)
  if fv.save_stats:
    save_statistics(fv.save_stats, result["mu"], result["sigma"], protocol=reference.protocol)
  cli.print_results(
    fv, [cli.Value("FID", "fid", result["value"], result["interval"])], [samples, reference]
  )


def main(argv=None) -> int:
  from evaluation import cli

  return cli.run(
    argv, doc=__doc__, network="inception", define_flags=_define_flags, body=_run, reference=True
  )


if __name__ == "__main__":
  sys.exit(main())
