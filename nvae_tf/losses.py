"""NVAE objective terms: KL warm-up coefficient and KL balancing (NVlabs/NVAE `utils.py`).

    loss = recon + beta * sum_l gamma_l KL_l + lambda (L_SR + L_BN)

beta follows `kl_warmup_beta` on the step or on the epoch counter; gamma_l (`kl_balance`) is used
only while beta < 1. `NVAE.loss_terms` assembles the objective and returns a `LossTerms`.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import numpy as np
import tensorflow as tf

KL_ANNEAL_PORTION = 0.3  # NVAE official --kl_anneal_portion
KL_CONST_PORTION = 1e-4  # NVAE official --kl_const_portion
KL_CONST_COEFF = 1e-4  # NVAE official --kl_const_coeff (the floor of beta)
KL_BALANCE_OFFSET = 0.01  # NVAE official kl_per_group: mean |KL_l| + 0.01
SPECTRAL_LAMBDA = 1e-2  # NVAE official MNIST --weight_decay_norm


def kl_warmup_beta(progress, total):
  """beta = max(min((t - 1e-4 T) / (0.3 T), 1), 1e-4)  (official `kl_coeff`).

  `progress` t and `total` T are both steps (`--kl_warmup=step`) or both epochs
  (`--kl_warmup=epoch`, constant within an epoch): beta reaches 1 at t = 0.3001 T.
  """
  t = tf.cast(progress, tf.float32)
  total = tf.cast(total, tf.float32)
  beta = (t - KL_CONST_PORTION * total) / (KL_ANNEAL_PORTION * total)
  return tf.maximum(tf.minimum(beta, 1.0), KL_CONST_COEFF)


class WarmupClock(enum.StrEnum):
  """The counter the KL warm-up runs on: STEP (official) or EPOCH (constant within an epoch)."""

  STEP = "step"
  EPOCH = "epoch"


WARMUP_CLOCKS = tuple(c.value for c in WarmupClock)


def kl_warmup_beta_on_clock(clock: str, *, step, total_steps, epoch, total_epochs):
  """`kl_warmup_beta` on the chosen clock: (step, total steps) or (epoch, total epochs)."""
  if clock == WarmupClock.STEP:
    return kl_warmup_beta(step, total_steps)
  if clock == WarmupClock.EPOCH:
    return kl_warmup_beta(epoch, total_epochs)
  raise ValueError(f"kl warm-up clock must be one of {WARMUP_CLOCKS}, got {clock!r}")


def kl_balance_alphas(groups_per_scale_decoder) -> np.ndarray:
  """alpha_l per group in decoder order (official kl_balancer_coeff, fun='square').

  Scale i (coarsest i = 0) with n_i groups gets (2^i)^2 / n_i, normalised so that min = 1:
  MNIST [5 groups at 4x4, 10 at 8x8] -> 1 for the 4x4 groups, 2 for the 8x8 groups.
  """
  coeff = np.concatenate(
    [np.full(n, (2**i) ** 2 / n) for i, n in enumerate(groups_per_scale_decoder)]
  )
  return (coeff / coeff.min()).astype(np.float32)


def global_batch_mean(x):
  """mean over the *global* batch of x [B_replica, ...] -> [...]: sum_replicas sum_b x / sum_replicas B.

  Inside a `tf.distribute` replica context with several replicas the sums are all-reduced, so every
  replica gets the statistic of the whole global batch (what one device would compute); elsewhere
  it is `reduce_mean(x, axis=0)`.
  """
  x = tf.cast(x, tf.float32)
  total = tf.reduce_sum(x, axis=0)
  count = tf.cast(tf.shape(x)[0], tf.float32)
  ctx = tf.distribute.get_replica_context()
  if ctx is not None and ctx.num_replicas_in_sync > 1:
    total, count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [total, count])
  return total / count


def kl_balance(kl, alphas):
  """KL-balancing coefficients gamma_l (official `kl_balancer`), no gradient.

  gamma_l ∝ (mean_batch |KL_l| + 0.01) / alpha_l, normalised to mean 1 over the groups.
  kl: [B, G] per-example KL of each group; alphas: [G]. Returns [G]. The batch mean is over the
  global batch under several replicas (`global_batch_mean`); the official code averages over each
  GPU's own shard (`kl_per_group`), which makes gamma depend on the replica count.
  """
  coeff = global_batch_mean(tf.abs(tf.cast(kl, tf.float32))) + KL_BALANCE_OFFSET  # [G]
  coeff = coeff / tf.cast(alphas, tf.float32)
  return tf.stop_gradient(coeff / tf.reduce_mean(coeff))


def balanced_kl(kl, alphas, beta):
  """beta * sum_l gamma_l KL_l per example [B]; gamma = kl_balance while beta < 1, else 1.

  Returns (weighted KL [B], gammas [G]).
  """
  kl = tf.cast(kl, tf.float32)
  gammas = tf.where(beta < 1.0, kl_balance(kl, alphas), tf.ones_like(tf.cast(alphas, tf.float32)))
  return beta * tf.reduce_sum(kl * gammas, axis=1), gammas


def active_units(kl_per_channel, threshold: float = 0.1):
  """Active latent channels per group: batch-mean KL of the channel > 0.1 nats (official logging).

  kl_per_channel: [B, G, C] -> [G] counts (float32); the mean is over the global batch.
  """
  return tf.reduce_sum(tf.cast(global_batch_mean(kl_per_channel) > threshold, tf.float32), axis=-1)


@dataclasses.dataclass(frozen=True)
class LossTerms:
  """The NVAE objective of one batch (shard), from `NVAE.loss_terms`.

  per_example = recon + beta * sum_l gamma_l KL_l        [B]
  regularizer = lambda * (L_SR + L_BN)                     scalar, added once per step
  """

  per_example: tf.Tensor  # [B]
  regularizer: tf.Tensor  # scalar
  recon: tf.Tensor  # [B] -log p(x | z)
  kl: tf.Tensor  # [B, G] KL per group
  gammas: tf.Tensor  # [G] balancing coefficients (1 once beta = 1)
  beta: tf.Tensor  # scalar
  spectral_lambda: float
  l_sr: tf.Tensor | None  # None unless spectral == 'sr'
  l_bn: tf.Tensor
  active_units: tf.Tensor  # [G]
  output: Any  # the model's NVAEOutput

  def metrics(self) -> dict[str, tf.Tensor]:
    """Scalars to log: recon, kl, neg_elbo, beta, lambda, l_bn, [l_sr], per-group KL / gamma / AU."""
    kl_groups = tf.reduce_mean(self.kl, axis=0)
    recon = tf.reduce_mean(self.recon)
    out = {
      "recon": recon,
      "kl": tf.reduce_sum(kl_groups),
      "neg_elbo": recon + tf.reduce_sum(kl_groups),
      "beta": tf.cast(self.beta, tf.float32),
      "lambda": tf.constant(self.spectral_lambda, tf.float32),
      "l_bn": self.l_bn,
      "active_units/total": tf.reduce_sum(self.active_units),
    }
    if self.l_sr is not None:
      out["l_sr"] = self.l_sr
    for g in range(self.kl.shape[1]):
      out[f"kl/group_{g:02d}"] = kl_groups[g]
      out[f"kl_gamma/group_{g:02d}"] = self.gammas[g]
      out[f"active_units/group_{g:02d}"] = self.active_units[g]
    return out
