"""Test log-likelihood of a VampPrior-suite model through the shared estimator
(`evaluation.likelihood`), with the number of importance samples it ACTUALLY drew per example
counted from the shapes of the log-weights (so a results row can say which K it used)."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from evaluation import likelihood


@dataclasses.dataclass(frozen=True)
class CountedLikelihood:
  summary: likelihood.LikelihoodSummary
  importance_samples: float  # log-weight rows drawn per example (int when whole), counted here


def evaluate_nll(
  model,
  images,
  *,
  num_samples: int,
  batch_size: int,
  chunk_size: int | None = None,
  progress: bool = False,
  resume_path: str | None = None,
  resume_key=None,
  strategy=None,
  chief: bool = True,
) -> CountedLikelihood:
  """-IWAE_K over `images` [N, H, W, C] (K = `num_samples`, `chunk_size` at a time) with
  `model.log_weights`; counts the [k, B] log-weight rows every call returns.

  `evaluation.likelihood` raises a ValueError when a batch got another K than asked for. With
  `resume_path` (and a `resume_key` naming checkpoint, K and data) the evaluation saves its partial
  results after every batch and a rerun continues from them, with the model's random streams. With
  a `strategy` of several replicas or workers each batch is split over them; `chief=False` on the
  workers that do not write the partial file (`evaluation.likelihood.evaluate_log_likelihood`).
  """
  drawn = tf.Variable(0, dtype=tf.int64, trainable=False)

  def log_weight_fn(x, k):
    log_w = model.log_weights(x, k, training=False)  # [k, B]
    tf.debugging.assert_equal(tf.shape(log_w)[1], tf.shape(x)[0], "log w must be [k, B]")
    drawn.assign_add(tf.cast(tf.shape(log_w)[0], tf.int64))
    return log_w

  summary = likelihood.evaluate_log_likelihood(
    log_weight_fn,
    tf.data.Dataset.from_tensor_slices(images).batch(batch_size),
    num_samples=num_samples,
    num_dims=int(np.prod(images.shape[1:])),
    chunk_size=chunk_size,
    progress=progress,
    resume_path=resume_path,
    resume_key=resume_key,
    rng_variables=likelihood.seed_generator_states(model),
    strategy=strategy,
    chief=chief,
  )
  # Batches read back from a resume file drew nothing in this call.
  per_example = int(drawn.numpy()) / max(summary.batches_evaluated, 1)
  # The shared estimator raises when a batch got another K than asked for; the count recorded
  # here is ours, from the log-weight shapes, so a row never just echoes its flag.
  return CountedLikelihood(
    summary=summary,
    importance_samples=int(per_example) if per_example.is_integer() else per_example,
  )
