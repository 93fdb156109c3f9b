"""Priors: brute-force mixture densities, normalisation in 2-D, pseudo-input gradients, sampling."""

import keras
import numpy as np
import tensorflow as tf
from scipy import special

from tests.vampprior_tf.test_distributions import brute_force_mixture
from vampprior_tf import priors

IMAGE_SHAPE = (4, 4, 1)


class TinyEncoder(keras.layers.Layer):
  """images [B, 4, 4, 1] -> (mean, log_var) [B, 2]."""

  def __init__(self):
    super().__init__()
    self.mean = keras.layers.Dense(2)
    self.log_var = keras.layers.Dense(2)

  def call(self, x, training=False):
    h = tf.reshape(x, [-1, 16]) * 4.0
    return self.mean(h), tf.tanh(self.log_var(h)) - 1.0


def vampprior(**kwargs):
  keras.utils.set_random_seed(0)
  return priors.VampPrior(
    num_components=6, image_shape=IMAGE_SHAPE, init_mean=0.5, init_std=0.3, **kwargs
  )


def test_vampprior_log_prob_equals_brute_force_mixture_of_encoded_pseudo_inputs():
  prior, encoder = vampprior(), TinyEncoder()
  z = np.random.RandomState(0).randn(9, 2).astype(np.float32)
  got = prior.log_prob(z, encoder=encoder).numpy()
  pseudo = np.clip(prior.pseudo_inputs_raw.numpy(), 0, 1)  # hardtanh(0, 1)
  means, log_vars = (a.numpy() for a in encoder(tf.constant(pseudo)))
  expected = brute_force_mixture(z, means, log_vars, np.full(6, -np.log(6)))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(prior.pseudo_inputs().numpy(), pseudo)


def test_mog_log_prob_equals_brute_force_with_learnt_weights():
  keras.utils.set_random_seed(1)
  prior = priors.MixtureOfGaussiansPrior(3, 4)
  prior.logits.assign([0.5, -1.0, 2.0, 0.0])
  prior.log_vars.assign(np.random.RandomState(1).randn(4, 3).astype(np.float32) * 0.3)
  z = np.random.RandomState(2).randn(5, 3).astype(np.float32)
  expected = brute_force_mixture(
    z, prior.means.numpy(), prior.log_vars.numpy(), special.log_softmax([0.5, -1.0, 2.0, 0.0])
  )
  np.testing.assert_allclose(prior.log_prob(z).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_pseudo_inputs_receive_nonzero_gradients_and_weights_only_when_learnt():
  encoder = TinyEncoder()
  z = tf.constant(np.random.RandomState(3).randn(8, 2).astype(np.float32))
  for learn in (False, True):
    prior = vampprior(learn_weights=learn)
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(prior.log_prob(z, encoder=encoder))
    variables = prior.trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables)))
    pseudo_grad = [g for p, g in grads.items() if "pseudo_inputs" in p][0]
    assert np.abs(pseudo_grad.numpy()).sum() > 0
    assert any("logits" in p for p in grads) == learn


def integral_2d(prior, encoder=None, extent=12.0, n=600):
  u = np.linspace(-extent, extent, n, dtype=np.float32)
  grid = np.stack(np.meshgrid(u, u), -1).reshape(-1, 2)
  density = np.exp(prior.log_prob(tf.constant(grid), encoder=encoder).numpy().astype(np.float64))
  return density.sum() * (u[1] - u[0]) ** 2


def test_every_prior_is_a_normalised_density_in_2d():
  encoder = TinyEncoder()
  keras.utils.set_random_seed(4)
  flow = priors.FlowPrior(2, num_couplings=4, hidden_units=8)
  for v in flow.trainable_variables:  # move the flow away from its identity initialisation
    v.assign(v + 0.05 * np.random.RandomState(5).randn(*v.shape).astype(np.float32))
  for prior in (priors.StandardPrior(2), priors.MixtureOfGaussiansPrior(2, 3), vampprior(), flow):
    np.testing.assert_allclose(integral_2d(prior, encoder), 1.0, atol=5e-3)


def test_mixture_samples_follow_the_mixture():
  keras.utils.set_random_seed(6)
  prior = priors.MixtureOfGaussiansPrior(2, 2)
  prior.means.assign([[-3.0, 0.0], [3.0, 0.0]])
  prior.log_vars.assign(np.full((2, 2), -4.0, np.float32))
  prior.logits.assign([np.log(0.25), np.log(0.75)])
  z = prior.sample(4000, seed=keras.random.SeedGenerator(0)).numpy()
  assert abs(np.mean(z[:, 0] > 0) - 0.75) < 0.03
  np.testing.assert_allclose(np.abs(z[:, 0]), 3.0, atol=0.6)
  flow = priors.FlowPrior(2, num_couplings=2, hidden_units=4)
  assert flow.sample(5, seed=keras.random.SeedGenerator(0)).shape == (5, 2)
  vamp = vampprior()
  assert vamp.sample(7, encoder=TinyEncoder(), seed=keras.random.SeedGenerator(0)).shape == (7, 2)
