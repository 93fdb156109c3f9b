"""The IW estimator under a strategy, the samples-count check and the cache's lifetime."""

import gc
import math
import weakref

import numpy as np
import pytest
import tensorflow as tf

from evaluation import likelihood
from tests.conftest import two_cpu_strategy

S2 = 0.5  # z ~ N(0, 1), x | z ~ N(z, S2): p(x) = N(0, 1 + S2), p(z | x) = N(x / (1 + S2), S2 / (1 + S2))


def log_normal(x, mean, var):
  return -0.5 * (tf.math.log(2 * math.pi * var) + tf.square(x - mean) / var)


class ExactPosteriorModel:
  """Proposal = true posterior: every log-weight equals log p(x), whatever z was drawn."""

  def __init__(self):
    self.gen = tf.random.Generator.from_seed(0)

  def log_weights(self, x, k):  # [B] -> [k, B]
    mean, var = x / (1 + S2), S2 / (1 + S2)
    z = mean + math.sqrt(var) * tf.random.stateless_normal([k, tf.shape(x)[0]], seed=[1, 2])
    return log_normal(z, 0.0, 1.0) + log_normal(x, z, S2) - log_normal(z, mean, var)


def exact_log_px(x):
  return -0.5 * (np.log(2 * np.pi * (1 + S2)) + x**2 / (1 + S2))


def test_two_replicas_give_the_exact_single_device_values_in_batch_order():
  x = np.linspace(-2.0, 2.0, 15).astype(np.float32)  # 15: not a multiple of 2 replicas
  model = ExactPosteriorModel()
  one = likelihood.evaluate_log_likelihood(
    model.log_weights, [x[:15]], num_samples=10, chunk_size=4, num_dims=1, progress=False
  )
  two = likelihood.evaluate_log_likelihood(
    model.log_weights,
    [x[:15]],
    num_samples=10,
    chunk_size=4,
    num_dims=1,
    progress=False,
    strategy=two_cpu_strategy(),
  )
  np.testing.assert_allclose(one.per_example_log_likelihood, exact_log_px(x), rtol=1e-5)
  np.testing.assert_allclose(two.per_example_log_likelihood, exact_log_px(x), rtol=1e-5)
  assert two.num_examples == 15 and two.num_samples == 10


def test_a_log_weight_fn_that_ignores_k_is_caught():
  """The 'four importance samples' trap: K must be what the estimator really averaged over."""

  def four_samples(x, k):
    del k
    return tf.zeros([4, tf.shape(x)[0]])

  with pytest.raises(ValueError, match="returned 4 importance samples per example, not the 1000"):
    likelihood.evaluate_log_likelihood(
      four_samples,
      [np.zeros(3, np.float32)],
      num_samples=1000,
      chunk_size=1000,
      num_dims=1,
      progress=False,
    )
  est = likelihood.importance_weighted_log_likelihood(four_samples, tf.zeros(3), num_samples=10)
  assert int(est.samples_drawn) == 4
  np.testing.assert_allclose(est.log_likelihood.numpy(), 0.0)  # logsumexp(0 x 4) - log 4


def _evaluate_twice_and_forget():
  """Uses a model, then drops it; only a weak reference leaves this frame."""
  model = ExactPosteriorModel()
  x = np.zeros(2, np.float32)
  for _ in range(2):
    likelihood.evaluate_log_likelihood(
      model.log_weights, [x], num_samples=3, num_dims=1, progress=False
    )
  compiled = likelihood._compiled_estimator(model.log_weights, 3, None, False)
  assert compiled.experimental_get_tracing_count() == 1  # the second pass reused the trace
  return weakref.ref(model)


def test_the_compiled_estimator_cache_does_not_keep_models_alive():
  alive = _evaluate_twice_and_forget()
  gc.collect()
  assert alive() is None
