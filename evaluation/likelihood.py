"""The importance-weighted likelihood estimator shared by every VAE of the suite.

For a latent-variable model with proposal q(z|x), the importance weights are
w_k = p(x, z_k) / q(z_k | x), z_k ~ q(z | x), and (Burda et al. 2016, eq. 8)

    log p(x) >= IWAE_K(x) = E[ logsumexp_k(log w_k) - log K ] >= ELBO(x) = E[ log w_1 ],

with IWAE_K non-decreasing in K and tending to log p(x). The log-sum-exp is over the SAMPLE axis
(axis 0 of `log_weights`), never over the batch. With K = 1000 or 5000 the samples are drawn in
chunks and combined by a running log-sum-exp, so memory is bounded by the chunk size.

Everything is in nats per example, summed over data dimensions; `bits_per_dim` converts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

# `log_weight_fn(x, k)` returns log p(x, z) - log q(z | x) for k fresh samples: [k, B].
LogWeightFn = Callable[[tf.Tensor, int], tf.Tensor]


def iwae_bound(log_weights: tf.Tensor) -> tf.Tensor:
  """IWAE_K = logsumexp_k(log w_k) - log K over axis 0 of `log_weights` [K, B] -> [B]."""
  log_weights = tf.convert_to_tensor(log_weights)
  num_samples = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
  return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(num_samples)


def bits_per_dim(nats, num_dims: int, *, offset_bits: float = 0.0):
  """bits/dim = nats / (D ln 2) + offset_bits.

  `offset_bits` is the change of the bits/dim caused by rescaling the data (e.g. +8 for a density
  on [0, 1] reported for 8-bit data: log2(256) per dimension); say so where it is reported.
  """
  return nats / (num_dims * math.log(2.0)) + offset_bits


@dataclasses.dataclass(frozen=True)
class LikelihoodEstimate:
  """Per-example estimates [B] for one batch, in nats."""
  log_likelihood: tf.Tensor  # IWAE_K, the importance-weighted estimate of log p(x)
  elbo: tf.Tensor            # mean over the K samples of log w_k (unbiased ELBO estimate)


def importance_weighted_log_likelihood(log_weight_fn: LogWeightFn, x, *, num_samples: int,
                                       chunk_size: int | None = None) -> LikelihoodEstimate:
  """log p(x) ~= logsumexp_k(log w_k) - log K, drawing the K samples `chunk_size` at a time.

  Chunks are combined with a running (max, sum of exp) pair: memory grows with `chunk_size`,
  not with `num_samples`. Call inside a `tf.function` for speed; works eagerly too.
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  chunk = min(chunk_size or num_samples, num_samples)
  full_chunks, remainder = divmod(num_samples, chunk)

  def combine(state, log_w):  # log_w: [k, B]
    running_max, running_sum, sum_log_w = state
    log_w = tf.cast(log_w, tf.float64)
    new_max = tf.maximum(running_max, tf.reduce_max(log_w, axis=0))
    # Guard -inf - -inf; a -inf weight contributes exp(-inf) = 0.
    safe_max = tf.where(tf.math.is_finite(new_max), new_max, tf.zeros_like(new_max))
    running_sum = (running_sum * tf.exp(running_max - safe_max)
                   + tf.reduce_sum(tf.exp(log_w - safe_max), axis=0))
    return safe_max, running_sum, sum_log_w + tf.reduce_sum(log_w, axis=0)

  first = tf.cast(log_weight_fn(x, chunk), tf.float64)  # [chunk, B]
  batch = tf.shape(first)[1:]
  state = combine((tf.fill(batch, tf.constant(-np.inf, tf.float64)), tf.zeros(batch, tf.float64),
                   tf.zeros(batch, tf.float64)), first)
  for _ in tf.range(full_chunks - 1):
    state = combine(state, log_weight_fn(x, chunk))
  if remainder:
    state = combine(state, log_weight_fn(x, remainder))
  running_max, running_sum, sum_log_w = state
  log_likelihood = running_max + tf.math.log(running_sum) - math.log(num_samples)
  return LikelihoodEstimate(log_likelihood=log_likelihood, elbo=sum_log_w / num_samples)


@dataclasses.dataclass(frozen=True)
class LikelihoodSummary:
  """Test-set summary in nats per example (NLL = -log p(x))."""
  nll: float                 # mean of -IWAE_K
  nll_sem: float             # standard error of that mean over examples
  negative_elbo: float       # mean of -ELBO
  bits_per_dim: float        # nll in bits/dim (no offset)
  num_examples: int
  num_samples: int
  per_example_log_likelihood: np.ndarray  # [N]


@functools.lru_cache(maxsize=8)
def _compiled_estimator(log_weight_fn: LogWeightFn, num_samples: int, chunk_size: int | None,
                        jit_compile: bool):
  """One compiled batch estimator per (function, settings): repeated test passes do not retrace."""
  @tf.function(jit_compile=jit_compile)
  def estimate(x):
    result = importance_weighted_log_likelihood(log_weight_fn, x, num_samples=num_samples,
                                                chunk_size=chunk_size)
    return result.log_likelihood, result.elbo
  return estimate


def evaluate_log_likelihood(log_weight_fn: LogWeightFn, batches: Iterable, *, num_samples: int,
                            num_dims: int, chunk_size: int | None = None,
                            progress: bool = True, jit_compile: bool = False) -> LikelihoodSummary:
  """Runs `importance_weighted_log_likelihood` over batches of x (a tf.data dataset or arrays).

  Each batch is one compiled call; `num_dims` is D of one example, for bits/dim.
  """
  estimate = _compiled_estimator(log_weight_fn, num_samples, chunk_size, jit_compile)
  batches = list(batches) if not isinstance(batches, tf.data.Dataset) else batches
  total = len(batches) if isinstance(batches, list) else int(batches.cardinality())
  bar = None
  if progress:
    import keras  # pylint: disable=g-import-not-at-top
    bar = keras.utils.Progbar(total if total > 0 else None, unit_name="batch")
  log_px, elbo = [], []
  for i, x in enumerate(batches):
    ll, e = estimate(x)
    log_px.append(ll.numpy())
    elbo.append(e.numpy())
    if bar is not None:
      bar.update(i + 1, [("nll", -float(np.mean(log_px[-1])))])
  if not log_px:
    raise ValueError("no data to evaluate the likelihood on")
  log_px, elbo = np.concatenate(log_px), np.concatenate(elbo)
  if not np.all(np.isfinite(log_px)):
    raise FloatingPointError(f"{int(np.sum(~np.isfinite(log_px)))} non-finite log-likelihoods")
  nll = float(-log_px.mean())
  return LikelihoodSummary(
      nll=nll, nll_sem=float(log_px.std(ddof=1) / np.sqrt(len(log_px))) if len(log_px) > 1 else 0.0,
      negative_elbo=float(-elbo.mean()), bits_per_dim=float(bits_per_dim(nll, num_dims)),
      num_examples=len(log_px), num_samples=num_samples, per_example_log_likelihood=log_px)
