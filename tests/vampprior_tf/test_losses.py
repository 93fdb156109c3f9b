"""The VampPrior objective pieces: official warm-up beta, AdamNormGrad, the prior registry and the
importance-sample count of the test likelihood."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vampprior_tf import likelihood, losses, optim, priors


def test_kl_warmup_beta_matches_the_official_one_based_schedule():
  """Official training.py: beta = epoch / warmup capped at 1 for epoch = 1, 2, ...; our epochs are
  0-based, so our epoch 0 (official epoch 1) already has beta = 1 / warmup."""
  betas = [float(losses.kl_warmup_beta(e, 4)) for e in range(6)]
  assert betas == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
  np.testing.assert_allclose(
    [float(losses.kl_warmup_beta(e, 100)) for e in (0, 24, 98, 99, 150)],
    [0.01, 0.25, 0.99, 1.0, 1.0],
    rtol=1e-6,
  )
  assert float(losses.kl_warmup_beta(0, 0)) == 1.0  # warmup 0: beta = 1 from the start


def test_warmup_objective_weights_the_kl_by_beta():
  class Terms:  # a model returning fixed ELBO terms
    log_px, kl = tf.constant([-10.0, -20.0]), tf.constant([4.0, 8.0])
    kl_levels = (kl,)
    elbo = log_px - kl

    def loss(self, beta):
      return -self.log_px + beta * self.kl

  per_example, metrics = losses.warmup_objective(
    lambda x, training: Terms(), None, epoch=1, warmup=4
  )
  np.testing.assert_allclose(per_example.numpy(), [10.0 + 0.5 * 4.0, 20.0 + 0.5 * 8.0])
  assert float(metrics["beta"]) == 0.5 and float(metrics["negative_elbo"]) == 21.0


def test_normalize_gradients_gives_unit_norm_tensors():
  grads = [tf.constant([3.0, 4.0]), tf.constant([[1e-3, 0.0], [0.0, 0.0]]), tf.constant(250.0)]
  out = optim.normalize_gradients(grads, [None] * 3)
  norms = np.array([5.0, 1e-3, 250.0])
  np.testing.assert_allclose([float(tf.norm(g)) for g in out], norms / (norms + 1e-7), rtol=1e-5)
  np.testing.assert_allclose(out[0].numpy(), [0.6, 0.8], rtol=1e-6)
  # The official epsilon 1e-7 shows on a tiny gradient: 1e-7 / (1e-7 + 1e-7) = 0.5.
  np.testing.assert_allclose(
    optim.normalize_gradients([tf.constant([1e-7])])[0].numpy(), [0.5], rtol=1e-4
  )


def test_official_early_stopping_in_harness_terms():
  assert losses.EarlyStopping.official(patience=50, warmup=100) == losses.EarlyStopping(
    harness_patience=50, start_epoch=99
  )
  assert losses.EarlyStopping.official(patience=0, warmup=5).harness_patience is None
  assert losses.EarlyStopping.official(patience=3, warmup=0).start_epoch == 0


def test_prior_registry_has_one_name_per_prior():
  built = {
    name: priors.build_prior(
      name,
      latent_dim=2,
      image_shape=(4, 4, 1),
      num_components=3,
      pseudo_mean=0.5,
      pseudo_std=0.1,
      flow_couplings=2,
      flow_hidden_units=4,
    )
    for name in priors.PRIORS
  }
  assert {n: type(p).__name__ for n, p in built.items()} == {
    "standard": "StandardPrior",
    "mog": "MixtureOfGaussiansPrior",
    "vampprior": "VampPrior",
    "flow": "FlowPrior",
  }
  with pytest.raises(ValueError, match="'gaussian' is called 'standard'"):
    priors.build_prior("gaussian", latent_dim=2)
  with pytest.raises(ValueError, match="unknown prior 'normal'"):
    priors.check_prior_name("normal")


class KnownWeights(keras.Model):
  """log w = (the example's pixel sum) + log j for the j = 1..k rows of each call (`rows` rows
  whatever k is asked for, if given): IWAE and ELBO are known in closed form."""

  def __init__(self, rows=None):
    super().__init__()
    self.rows = rows

  def log_weights(self, x, num_samples, training=False):
    k = self.rows or num_samples
    index = tf.reduce_sum(x, axis=[1, 2, 3])  # [B]
    return index[None, :] + tf.math.log(tf.range(1, k + 1, dtype=tf.float32))[:, None]


def test_evaluate_nll_counts_the_samples_the_estimator_drew():
  images = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1)  # pixel sums 0..4
  counted = likelihood.evaluate_nll(
    KnownWeights(), images, num_samples=7, batch_size=2, chunk_size=3
  )  # calls of 3 + 3 + 1 rows; batches 2 + 2 + 1
  assert counted.importance_samples == 7
  # The 7 weights are exp(index) * (1, 2, 3, 1, 2, 3, 1): IWAE_7 = index + log(13 / 7),
  # ELBO = index + (2 log 2 + 2 log 3) / 7.
  np.testing.assert_allclose(
    counted.summary.per_example_log_likelihood, np.arange(5) + np.log(13 / 7), rtol=1e-6
  )
  np.testing.assert_allclose(
    counted.summary.negative_elbo, -(2.0 + (2 * np.log(2) + 2 * np.log(3)) / 7), rtol=1e-6
  )
  assert counted.summary.num_samples == 7  # the shared estimator's own count agrees
  # The trap: a log-weight function that returns 4 rows whatever K is asked for is refused.
  with pytest.raises(ValueError, match="4 importance samples per example, not the 7"):
    likelihood.evaluate_nll(KnownWeights(rows=4), images, num_samples=7, batch_size=2, chunk_size=7)


def test_evaluate_nll_resumed_counts_only_the_batches_it_ran(tmp_path):
  """With `resume_path`, a rerun reads the finished batches back: the count of samples drawn per
  example is taken over the batches this call ran, and the numbers equal an uninterrupted run."""
  images = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1)
  full = likelihood.evaluate_nll(KnownWeights(), images, num_samples=7, batch_size=2, chunk_size=3)
  path = str(tmp_path / "partial.npz")
  # Interrupt after the first two batches: evaluate 4 images under the same key, keep the file.
  key = {"checkpoint": "ckpt-1", "K": 7}
  with pytest.raises(ValueError):  # the 5th image makes the third batch of the first call fail
    likelihood.evaluate_nll(
      _FailOnThirdBatch(),
      images,
      num_samples=7,
      batch_size=2,
      chunk_size=3,
      resume_path=path,
      resume_key=key,
    )
  resumed = likelihood.evaluate_nll(
    KnownWeights(),
    images,
    num_samples=7,
    batch_size=2,
    chunk_size=3,
    resume_path=path,
    resume_key=key,
  )
  assert resumed.summary.batches_evaluated == 1
  assert resumed.importance_samples == 7
  np.testing.assert_array_equal(
    resumed.summary.per_example_log_likelihood, full.summary.per_example_log_likelihood
  )


class _FailOnThirdBatch(KnownWeights):
  """KnownWeights that returns too few rows for a batch of one example (the last of five)."""

  def log_weights(self, x, num_samples, training=False):
    log_w = super().log_weights(x, num_samples, training=training)
    return tf.cond(tf.shape(x)[0] < 2, lambda: log_w[:1], lambda: log_w)
