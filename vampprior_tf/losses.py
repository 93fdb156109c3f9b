"""The VampPrior training objective and its schedule (official utils/training.py,
utils/perform_experiment.py): warm-up beta from its setting to the loss, in one place.

  loss = -log p(x | z) + beta(epoch) * [log q(z | x) - log p(z)]      (official `calculate_loss`)
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


def kl_warmup_beta(epoch, warmup: int):
  """beta = min((epoch + 1) / warmup, 1), beta = 1 when warmup = 0.

  `epoch` is 0-based here (the harness' `StepContext.epoch`); the official loop is 1-based,
  `beta = 1. * epoch / args.warmup` capped at 1 for epoch = 1, 2, ..., so its FIRST epoch already
  trains with beta = 1 / warmup (never 0).
  """
  if warmup <= 0:
    return tf.constant(1.0)
  return tf.minimum((tf.cast(epoch, tf.float32) + 1.0) / float(warmup), 1.0)


def warmup_objective(model, x, *, epoch, warmup: int):
  """(per-example loss [B], metrics) of one training step at 0-based `epoch`:

    loss = -log p(x | z) + beta * KL,  beta = kl_warmup_beta(epoch, warmup)  (official calculate_loss)

  with one posterior sample per example; metrics are batch means (beta, log_px, kl, per-level kl_z*,
  negative_elbo at beta = 1).
  """
  beta = kl_warmup_beta(epoch, warmup)
  terms = model(x, training=True)
  metrics = {
    "beta": beta,
    "log_px": tf.reduce_mean(terms.log_px),
    "kl": tf.reduce_mean(terms.kl),
    "negative_elbo": -tf.reduce_mean(terms.elbo),
  }
  for i, kl in enumerate(terms.kl_levels):
    metrics[f"kl_z{i + 1}"] = tf.reduce_mean(kl)
  return terms.loss(beta), metrics


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
  """The official early-stopping rule expressed in `experiments.harness.TrainConfig` terms.

  Official perform_experiment.py, after validating 1-based epoch t:
    if val < best: e = 0 (and save)   else: e += 1; if t < warmup: e = 0; if e > patience: stop.
  So bad epochs count from t = warmup on (0-based epoch warmup - 1), and training stops at the
  (patience + 1)-th consecutive bad counted epoch.

  The harness counts a bad 0-based epoch e when e + 1 > start_epoch and stops once MORE than its
  patience epochs were bad: hence start_epoch = warmup - 1 and the same patience. If the harness
  changes its rule, change this mapping (one place; the experiments test checks the pair against
  the official loop).
  """

  harness_patience: int | None
  start_epoch: int

  @classmethod
  def official(cls, *, patience: int, warmup: int) -> EarlyStopping:
    """`patience` 0 disables early stopping."""
    return cls(harness_patience=patience if patience > 0 else None, start_epoch=max(warmup - 1, 0))
