"""NVAE objective terms: KL warm-up coefficient and KL balancing (NVlabs/NVAE `utils.py`).

    loss = recon + beta * sum_l gamma_l KL_l + lambda (L_SR + L_BN)

beta follows `kl_warmup_beta` on the step or on the epoch counter; gamma_l (`kl_balance`) is used
only while beta < 1.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

KL_ANNEAL_PORTION = 0.3     # NVAE official --kl_anneal_portion
KL_CONST_PORTION = 1e-4     # NVAE official --kl_const_portion
KL_CONST_COEFF = 1e-4       # NVAE official --kl_const_coeff (the floor of beta)
KL_BALANCE_OFFSET = 0.01    # NVAE official kl_per_group: mean |KL_l| + 0.01
SPECTRAL_LAMBDA = 1e-2      # NVAE official MNIST --weight_decay_norm


def kl_warmup_beta(progress, total):
  """beta = max(min((t - 1e-4 T) / (0.3 T), 1), 1e-4)  (official `kl_coeff`).

  `progress` t and `total` T are both steps (`--kl_warmup=step`) or both epochs
  (`--kl_warmup=epoch`, constant within an epoch): beta reaches 1 at t = 0.3001 T.
  """
  t = tf.cast(progress, tf.float32)
  total = tf.cast(total, tf.float32)
  beta = (t - KL_CONST_PORTION * total) / (KL_ANNEAL_PORTION * total)
  return tf.maximum(tf.minimum(beta, 1.0), KL_CONST_COEFF)


def kl_balance_alphas(groups_per_scale_decoder) -> np.ndarray:
  """alpha_l per group in decoder order (official kl_balancer_coeff, fun='square').

  Scale i (coarsest i = 0) with n_i groups gets (2^i)^2 / n_i, normalised so that min = 1:
  MNIST [5 groups at 4x4, 10 at 8x8] -> 1 for the 4x4 groups, 2 for the 8x8 groups.
  """
  coeff = np.concatenate([np.full(n, (2 ** i) ** 2 / n) for i, n in enumerate(groups_per_scale_decoder)])
  return (coeff / coeff.min()).astype(np.float32)


def kl_balance(kl, alphas):
  """KL-balancing coefficients gamma_l (official `kl_balancer`), no gradient.

  gamma_l ∝ (mean_batch |KL_l| + 0.01) / alpha_l, normalised to mean 1 over the groups.
  kl: [B, G] per-example KL of each group; alphas: [G]. Returns [G].
  """
  kl = tf.cast(kl, tf.float32)
  coeff = tf.reduce_mean(tf.abs(kl), axis=0) + KL_BALANCE_OFFSET  # [G]
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

  kl_per_channel: [B, G, C] -> [G] counts (float32).
  """
  return tf.reduce_sum(tf.cast(tf.reduce_mean(kl_per_channel, axis=0) > threshold, tf.float32), axis=-1)
