"""Python entry points: score a model without writing PNGs.

    from evaluation import api
    result = api.compute_fid(generate_fn, 10000, reference="tfds:mnist/test")
    print(result)            # FID: 12.345678 [11.9, 12.8]  + protocol line
    result.value, result.interval, result.protocols
    api.compute_kid(...), api.compute_inception_score(generate_fn, 10000, splits=10),
    api.compute_precision_recall(...)

`samples` (and `reference`) may be a generator function `fn(n) -> images [n, H, W, C]` (uint8, or
float in [0, 1]; numpy or tf.Tensor) drawn `num_samples` times over, a `tf.data.Dataset` of images
or batches, an image array, a folder / .zip / .npy / .npz path, a `tfds:<name>/<split>` name, or
(FID reference only) statistics as a path or a (mu, sigma) tuple. Settings are the command-line
flags as keyword arguments (`evaluation.cli.Options`): inception_path, vgg16_path, vgg,
download, cache, batch_size, progress, jit_compile, resize, precision, device, workers,
strict_protocol, subsamples, subsample_rate, subsample_seed, confidence, and (FID, KID,
precision/recall) features="NAME": a feature extractor registered with
`evaluation.features.register_extractor` instead of Inception / VGG-16. Errors are `ValueError`s
(bad input, protocol mismatch, unknown extractor) or `WeightsUnavailableError`, with the same
one-line messages as the commands.
"""

from __future__ import annotations

import dataclasses

from evaluation import cli
from evaluation import protocol as protocol_lib


@dataclasses.dataclass
class Result:
  """A metric value, its --subsamples interval (or None) and the protocol records of its inputs."""

  name: str
  value: float | tuple
  interval: tuple | None
  protocols: dict
  extra: dict = dataclasses.field(default_factory=dict)

  def __str__(self) -> str:
    from evaluation import subsampling

    if isinstance(self.value, tuple):  # precision, recall
      lines = []
      for i, name in enumerate(("precision", "recall")):
        bounds = None if self.interval is None else (self.interval[0][i], self.interval[1][i])
        lines.append(f"{name}: {subsampling.format_value(self.value[i], bounds)}")
      text = "\n".join(lines)
    else:
      text = f"{self.name}: {subsampling.format_value(self.value, self.interval)}"
    return text + "\n" + protocol_lib.describe(self.protocols)


def _options(kwargs) -> cli.Options:
  fields = {f.name for f in dataclasses.fields(cli.Options)}
  unknown = sorted(set(kwargs) - fields)
  removed = [name for name in ("bootstrap", "bootstrap_seed") if name in unknown]
  if removed:
    raise TypeError(
      f"option {removed[0]} was removed: resampling with replacement biases FID and "
      "KID; use subsamples=N (subsample_rate, subsample_seed), see "
      "docs/evaluation.md"
    )
  if unknown:
    raise TypeError(f"unknown options {unknown}; known: {sorted(fields)}")
  return cli.Options(**kwargs)


def _sources(
  samples, reference, num_samples, reference_num_samples, *, kind, min_count, allow_stats, options
):
  from evaluation import image_io

  del image_io
  fake = cli.source_from_object(
    samples, "samples", kind=kind, min_count=min_count, num_samples=num_samples
  )
  real = cli.source_from_object(
    reference,
    "reference",
    kind=kind,
    min_count=min_count,
    allow_stats=allow_stats,
    num_samples=reference_num_samples,
    cacheable=options.cache,
  )
  return fake, real


def compute_fid(
  samples,
  num_samples: int | None = None,
  *,
  reference,
  reference_num_samples: int | None = None,
  dims: int = 2048,
  **options,
) -> Result:
  """FID of `samples` against `reference` (see the module docstring); `dims` as pytorch-fid's
  (2048: pool_3; 64, 192, 768: earlier blocks; Inception only)."""
  from evaluation import fid

  opts = _options(options)
  if opts.features and dims != 2048:
    raise ValueError("dims selects an Inception block; it does not apply to features=")
  fake, real = _sources(
    samples,
    reference,
    num_samples,
    reference_num_samples,
    kind=cli.feature_kind(opts, fid.feature_for_dims(dims)),
    min_count=2,
    allow_stats=True,
    options=opts,
  )
  network = cli.feature_network(opts, "inception", [fake, real])
  out = fid.compute_from_sources(fake, real, network, opts)
  cli.commit_cache(network)
  return Result(
    "FID", out["value"], out["interval"], out["protocols"], {"mu": out["mu"], "sigma": out["sigma"]}
  )


def compute_kid(
  samples,
  num_samples: int | None = None,
  *,
  reference,
  reference_num_samples: int | None = None,
  num_subsets: int = 100,
  subset_size: int = 1000,
  seed: int = 0,
  **options,
) -> Result:
  """KID (mean over subsets; `extra["std"]`) of `samples` against `reference`."""
  from evaluation import kid

  opts = _options(options)
  fake, real = _sources(
    samples,
    reference,
    num_samples,
    reference_num_samples,
    kind=cli.feature_kind(opts, "pool_3"),
    min_count=2,
    allow_stats=False,
    options=opts,
  )
  network = cli.feature_network(opts, "inception", [fake, real])
  out = kid.compute_from_sources(
    fake, real, network, opts, num_subsets=num_subsets, subset_size=subset_size, seed=seed
  )
  cli.commit_cache(network)
  return Result("KID", out["value"], out["interval"], out["protocols"], {"std": out["std"]})


def compute_inception_score(
  samples, num_samples: int | None = None, *, splits: int = 10, **options
) -> Result:
  """Inception Score (mean over `splits` consecutive parts; `extra["std"]`) of `samples`."""
  from evaluation import inception_score

  opts = _options(options)
  if opts.features or opts.extractor_module:
    raise ValueError("the Inception Score needs Inception's class logits; features= is not offered")
  fake = cli.source_from_object(
    samples, "samples", kind="logits", min_count=max(2, splits), num_samples=num_samples
  )
  network = cli.feature_network(opts, "inception", [fake])
  out = inception_score.compute_from_sources(fake, network, opts, splits=splits)
  return Result("IS", out["value"], out["interval"], out["protocols"], {"std": out["std"]})


def compute_precision_recall(
  samples,
  num_samples: int | None = None,
  *,
  reference,
  reference_num_samples: int | None = None,
  k: int = 3,
  **options,
) -> Result:
  """(precision, recall) of `samples` against `reference`; `vgg="keras"|"torch-fidelity"`."""
  from evaluation import precision_recall

  opts = _options(options)
  fake, real = _sources(
    samples,
    reference,
    num_samples,
    reference_num_samples,
    kind=cli.feature_kind(opts, "fc2"),
    min_count=k + 1,
    allow_stats=False,
    options=opts,
  )
  network = cli.feature_network(opts, "vgg16", [fake, real])
  out = precision_recall.compute_from_sources(fake, real, network, opts, k=k)
  cli.commit_cache(network)
  return Result(
    "precision/recall", (out["precision"], out["recall"]), out["interval"], out["protocols"]
  )
