"""Several metrics from one feature pass: `python -m evaluation --fid --kid --isc --prc ...`.

    python -m evaluation --fid --kid --isc --samples samples/ --reference tfds:mnist/test
    python -m evaluation --fid --kid --isc --prc --samples s/ --reference real/ --subsamples 100 --json

Every input goes through each network it needs once: Inception for --fid, --kid (pool_3) and
--isc (logits, from the same pass as pool_3), VGG-16 for --prc (fc2). Every input, weights file
and protocol is checked before any image is processed. Prints the lines of the single-metric
commands in the order FID, KID, IS, precision, recall, then the `interval:` line (with
--subsamples) and one `protocol:` line per feature kind (pool_3, logits, fc2); with --json one
JSON object {"metrics": {"fid", "kid", "is", "precision", "recall"}, "interval",
"protocol": {kind: {"samples", "reference"}}}. The metric settings are those of the single
commands (--num_subsets, --subset_size, --seed for KID, --splits for IS, --k for precision/recall).
A statistics file as --reference serves --fid only.
"""

from __future__ import annotations

import sys

METRICS = ("fid", "kid", "isc", "prc")


def _define_flags(fv) -> None:
  from absl import flags

  from evaluation import cli

  cli.define_common_flags(fv, network="both", reference=True)
  flags.DEFINE_bool("fid", False, "Frechet Inception Distance (pool_3).", flag_values=fv)
  flags.DEFINE_bool("kid", False, "Kernel Inception Distance (pool_3).", flag_values=fv)
  flags.DEFINE_bool(
    "isc", False, "Inception Score of the samples (logits; no reference used).", flag_values=fv
  )
  flags.DEFINE_bool("prc", False, "Improved precision and recall (VGG-16 fc2).", flag_values=fv)
  flags.DEFINE_integer(
    "num_subsets", 100, "KID: number of random subsets.", lower_bound=1, flag_values=fv
  )
  flags.DEFINE_integer(
    "subset_size",
    1000,
    "KID: samples per subset (clipped to the smaller set).",
    lower_bound=2,
    flag_values=fv,
  )
  flags.DEFINE_integer("seed", 0, "KID: seed of the subset sampling.", flag_values=fv)
  flags.DEFINE_integer(
    "splits", 10, "IS: number of consecutive splits.", lower_bound=1, flag_values=fv
  )
  flags.DEFINE_integer(
    "k", 3, "Precision/recall: neighbourhood size.", lower_bound=1, flag_values=fv
  )


def main(argv=None) -> int:
  from evaluation import cli

  fv, _, code = cli.parse_command(argv, doc=__doc__, define_flags=_define_flags)
  if code is not None:
    return code
  try:
    cli.check_removed_flags(fv)
    wanted = [name for name in METRICS if fv[name].value]
    if not wanted:
      raise ValueError("name at least one metric: --fid, --kid, --isc, --prc")
    if not fv.samples:
      raise ValueError("--samples is required")
    if set(wanted) - {"isc"} and not fv.reference:
      raise ValueError("--reference is required for --fid, --kid and --prc")
  except ValueError as e:
    return cli.fail(e)
  cli.import_tensorflow_quietly()
  from google.protobuf.message import DecodeError

  try:
    _run(fv, wanted)
  except (ValueError, OSError, RuntimeError, DecodeError) as e:
    return cli.fail(e)
  return 0


def _open(
  fv,
  flag: str,
  kinds: list[str],
  opened: dict,
  *,
  min_count: int,
  allow_stats: bool = False,
  cacheable: bool = False,
) -> None:
  """Adds {kind: Source} of one input to `opened`: an image input is opened (and its files
  checked) once, its other kinds share its images; a features .npz is read once per key."""
  from evaluation import cli

  path = getattr(fv, flag.lstrip("-"))
  for kind in kinds:
    images = next((s for s in opened.values() if s.images is not None), None)
    if images is not None:
      opened[kind] = images.sibling(kind)
    else:
      opened[kind] = cli.open_source(
        path, flag, kind=kind, min_count=min_count, allow_stats=allow_stats, cacheable=cacheable
      )


def _run(fv, wanted: list[str]) -> None:
  from evaluation import cli, fid, inception_score, kid, precision_recall

  inception_kinds = (["pool_3"] if {"fid", "kid"} & set(wanted) else []) + (
    ["logits"] if "isc" in wanted else []
  )
  # Open and check every input before any network work.
  samples, reference = {}, {}
  min_count = max(
    [2] + ([fv.splits] if "isc" in wanted else []) + ([fv.k + 1] if "prc" in wanted else [])
  )
  _open(
    fv,
    "--samples",
    inception_kinds + (["fc2"] if "prc" in wanted else []),
    samples,
    min_count=min_count,
  )
  _open(
    fv,
    "--reference",
    (["pool_3"] if "pool_3" in inception_kinds else []) + (["fc2"] if "prc" in wanted else []),
    reference,
    min_count=min_count,
    allow_stats="kid" not in wanted and "prc" not in wanted,
    cacheable=fv.cache,
  )
  # Resolve (and build) both networks before extracting anything.
  inception = vgg = None
  if inception_kinds:
    inception = cli.feature_network(
      fv,
      "inception",
      [samples[k] for k in inception_kinds]
      + ([reference["pool_3"]] if "pool_3" in reference else []),
    )
  if "prc" in wanted:
    vgg = cli.feature_network(fv, "vgg16", [samples["fc2"], reference["fc2"]])
  if "pool_3" in reference:
    cli.check_protocols_early(samples["pool_3"], reference["pool_3"], inception, fv)
  if "prc" in wanted:
    cli.check_protocols_early(samples["fc2"], reference["fc2"], vgg, fv)

  values, groups = [], []
  if "fid" in wanted:
    result = fid.compute_from_sources(samples["pool_3"], reference["pool_3"], inception, fv)
    values.append(cli.Value("FID", "fid", result["value"], result["interval"]))
  if "kid" in wanted:
    result = kid.compute_from_sources(
      samples["pool_3"],
      reference["pool_3"],
      inception,
      fv,
      num_subsets=fv.num_subsets,
      subset_size=fv.subset_size,
      seed=fv.seed,
    )
    values.append(
      cli.Value("KID", "kid", result["value"], result["interval"], std=result["std"], digits=".6g")
    )
  if "pool_3" in samples:
    groups.append([samples["pool_3"], reference["pool_3"]])
  if "isc" in wanted:
    if "pool_3" in samples:  # the pool_3 pass gave the logits too
      cli.share_outputs(samples["pool_3"], samples["logits"])
    result = inception_score.compute_from_sources(
      samples["logits"], inception, fv, splits=fv.splits
    )
    values.append(cli.Value("IS", "is", result["value"], result["interval"], std=result["std"]))
    groups.append([samples["logits"]])
  if "prc" in wanted:
    result = precision_recall.compute_from_sources(
      samples["fc2"], reference["fc2"], vgg, fv, k=fv.k
    )
    values.extend(precision_recall.values(result))
    groups.append([samples["fc2"], reference["fc2"]])
  for network in (inception, vgg):
    if network is not None:
      cli.commit_cache(network)
  cli.print_results(fv, values, groups, by_kind=True)


if __name__ == "__main__":
  sys.exit(main())
