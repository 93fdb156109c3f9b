"""Inception Score (Salimans et al. 2016), as openai/improved-gan `inception_score/model.py`.

    mean, std = inception_score(logits, splits=10)   # logits = pool_3 @ softmax/weights, no bias

Command line (prints `IS: <mean> +- <std>`):
    python -m evaluation.inception_score --samples DIR_OR_NPY [--splits 10]
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import special


def inception_score(logits, *, splits: int = 10) -> tuple[float, float]:
  """IS = exp(E_x KL(p(y|x) || p(y))) per split, mean and std over splits.

  p(y|x) is the softmax over the 1008 logits of the 2015 graph (`pool_3 @ W`, no bias, as the
  original). The N samples are cut into `splits` consecutive parts in order
  (`[i * N // splits, (i + 1) * N // splits)`); p(y) is the mean of p(y|x) within a part.
  Computed in float64 with log-softmax (no log(0)).

  Raises:
    ValueError: logits not [N, C] with C >= 2, non-finite, or fewer samples than splits.
  """
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or logits.shape[1] < 2:
    raise ValueError(f"logits must be [N, C] with C >= 2, got shape {logits.shape}")
  n = logits.shape[0]
  if splits < 1 or n < splits:
    raise ValueError(f"need 1 <= splits <= N, got splits={splits}, N={n}")
  if not np.isfinite(logits).all():
    raise ValueError("logits contain NaN or inf")
  log_p = special.log_softmax(logits, axis=1)  # [N, C] log p(y|x)
  scores = []
  for i in range(splits):
    part = log_p[i * n // splits : (i + 1) * n // splits]
    log_marginal = special.logsumexp(part, axis=0) - np.log(part.shape[0])  # [C] log p(y)
    kl = np.sum(np.exp(part) * (part - log_marginal), axis=1)  # [n_i]
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


# ----------------------------------------------------------------------------------------------
# Command line


def _define_flags(fv) -> None:
  from absl import flags

  flags.DEFINE_integer(
    "splits", 10, "Number of consecutive splits (original: 10).", lower_bound=1, flag_values=fv
  )


def _run(fv) -> None:
  from evaluation import cli

  samples = cli.open_source(fv.samples, "--samples", kind="logits", min_count=max(2, fv.splits))
  network = cli.feature_network(fv, "inception", [samples])
  result = compute_from_sources(samples, network, fv, splits=fv.splits)
  cli.print_results(
    fv, [cli.Value("IS", "is", result["value"], result["interval"], std=result["std"])], [samples]
  )


def compute_from_sources(samples, network, options, *, splits: int = 10) -> dict:
  """IS of a checked `evaluation.cli.Source` (logits): {"value" (mean over splits), "std",
  "interval" (None without --subsamples), "protocols"}."""
  from evaluation import cli

  logits = cli.features_of(samples, network, options)
  mean, std = inception_score(logits, splits=splits)
  return {
    "value": mean,
    "std": std,
    "interval": interval(logits, mean, splits=splits, options=options),
    "protocols": {"samples": samples.protocol},
  }


def interval(logits, mean, *, splits: int, options):
  """--subsamples interval of the population IS (None without): rows drawn without replacement,
  in their original order, cut into the same number of splits (`evaluation.subsampling`). The
  score of a split of m images is biased by about B/m; half-sampling removes that as for FID.
  Coverage by simulation (tests/evaluation/test_subsampling.py): nominal with splits of 200 or
  more images, about 90% with splits of 50."""
  if not options.subsamples:
    return None
  from evaluation import subsampling

  low, high = subsampling.interval(
    lambda i: inception_score(logits[np.sort(i)], splits=splits)[0],
    (len(logits),),
    estimate=mean,
    num=options.subsamples,
    rate=options.subsample_rate,
    seed=options.subsample_seed,
    confidence=options.confidence,
    min_size=max(2, splits),
  )
  return float(low), float(high)


def main(argv=None) -> int:
  from evaluation import cli

  return cli.run(
    argv, doc=__doc__, network="inception", define_flags=_define_flags, body=_run, reference=False
  )


if __name__ == "__main__":
  sys.exit(main())
