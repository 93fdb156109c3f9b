"""Priors p(z) over the (top) latent: standard normal, mixture of Gaussians, VampPrior, RealNVP flow.

Common interface (Keras layers owning their parameters):
  `log_prob(z, *, encoder, training) -> [B]` and `sample(n, *, encoder, seed, training) -> [n, D]`.
`encoder(images, training=) -> (mean, log_var)` is the model's variational posterior over this
latent; only the VampPrior uses it (its components are q(z | u_k) at learnt pseudo-inputs u_k).
`seed` is the model's `keras.random.SeedGenerator`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from diffusion_tf.flows import RealNVPFlow
from vampprior_tf import distributions
from vampprior_tf.layers import hardtanh


def _sample_mixture(means, log_vars, logits, n, seed):
  """z ~ sum_k pi_k N(mu_k, var_k): a component per draw, then its Gaussian. -> [n, D]."""
  component = keras.random.categorical(logits[None, :], n, seed=seed)[0]  # [n]
  mean, log_var = tf.gather(means, component), tf.gather(log_vars, component)
  return mean + tf.exp(0.5 * log_var) * keras.random.normal(tf.shape(mean), seed=seed)


class StandardPrior(keras.layers.Layer):
  """p(z) = N(0, I)."""

  def __init__(self, latent_dim: int, **kwargs):
    super().__init__(**kwargs)
    self.latent_dim = latent_dim

  def log_prob(self, z, *, encoder=None, training=False):
    del encoder, training  # not used by this prior
    return distributions.log_standard_normal(z)

  def sample(self, n, *, encoder=None, seed=None, training=False):
    del encoder, training
    return keras.random.normal((n, self.latent_dim), seed=seed)


class MixtureOfGaussiansPrior(keras.layers.Layer):
  """p(z) = sum_k softmax(logits)_k N(z; mu_k, diag(exp(log_var_k))), all learnable.

  Means start at N(0, 1) draws, log-variances at 0, logits at 0 (uniform weights).
  """

  def __init__(self, latent_dim: int, num_components: int, **kwargs):
    super().__init__(**kwargs)
    self.latent_dim, self.num_components = latent_dim, num_components
    k, d = num_components, latent_dim
    self.means = self.add_weight(
      name="means", shape=(k, d), initializer=keras.initializers.RandomNormal(0.0, 1.0)
    )
    self.log_vars = self.add_weight(name="log_vars", shape=(k, d), initializer="zeros")
    self.logits = self.add_weight(name="logits", shape=(k,), initializer="zeros")

  def log_prob(self, z, *, encoder=None, training=False):
    del encoder, training
    return distributions.mixture_log_prob(
      z, self.means, self.log_vars, tf.nn.log_softmax(self.logits)
    )

  def sample(self, n, *, encoder=None, seed=None, training=False):
    del encoder, training
    return _sample_mixture(self.means, self.log_vars, self.logits, n, seed)


class VampPrior(keras.layers.Layer):
  """p(z) = sum_k w_k q(z | u_k)  (Tomczak & Welling 2018, eq. 9), K pseudo-inputs u_k.

  The pseudo-inputs are a K x D parameter passed through hardtanh(0, 1) (official
  `Model.add_pseudoinputs`: a bias-free linear layer on an identity "idle input" + Hardtanh(0, 1)),
  initialised N(init_mean, init_std^2) (official load_data.py per data set). Weights are uniform
  1/K (official) unless `learn_weights`, then softmax of learnt logits started at 0.
  """

  def __init__(
    self,
    *,
    num_components: int,
    image_shape,
    init_mean: float,
    init_std: float,
    learn_weights: bool = False,
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.num_components, self.image_shape = num_components, tuple(image_shape)
    self.init_mean, self.init_std, self.learn_weights = init_mean, init_std, learn_weights
    self.pseudo_inputs_raw = self.add_weight(
      name="pseudo_inputs",
      shape=(self.num_components,) + self.image_shape,
      initializer=keras.initializers.RandomNormal(self.init_mean, self.init_std),
    )
    self.logits = self.add_weight(
      name="logits", shape=(self.num_components,), initializer="zeros", trainable=self.learn_weights
    )

  def pseudo_inputs(self):
    """u = hardtanh(raw, 0, 1): [K, H, W, C] images."""
    return hardtanh(self.pseudo_inputs_raw, 0.0, 1.0)

  def components(self, encoder, training=False):
    """(means [K, D], log_vars [K, D]) of q(z | u_k)."""
    return encoder(self.pseudo_inputs(), training=training)

  def log_prob(self, z, *, encoder, training=False):
    means, log_vars = self.components(encoder, training)
    return distributions.mixture_log_prob(z, means, log_vars, tf.nn.log_softmax(self.logits))

  def sample(self, n, *, encoder, seed=None, training=False):
    means, log_vars = self.components(encoder, training)
    return _sample_mixture(means, log_vars, self.logits, n, seed)


class FlowPrior(keras.layers.Layer):
  """p(z) = N(f^{-1}(z); 0, I) |det d f^{-1} / dz|: the suite's RealNVP coupling flow
  (`diffusion_tf.flows.RealNVPFlow`) on a standard-normal base."""

  def __init__(self, latent_dim: int, *, num_couplings: int, hidden_units: int, **kwargs):
    super().__init__(**kwargs)
    self.latent_dim = latent_dim
    self.flow = RealNVPFlow(
      event_dim=latent_dim, num_couplings=num_couplings, hidden_units=hidden_units
    )

  def log_prob(self, z, *, encoder=None, training=False):
    del encoder, training
    return self.flow.log_prob(z)

  def sample(self, n, *, encoder=None, seed=None, training=False):
    del encoder, training
    return self.flow.forward(keras.random.normal((n, self.latent_dim), seed=seed))


# ----------------------------------------------------------------------------- registry

PRIORS = ("standard", "mog", "vampprior", "flow")
# Former names: a clear error instead of a silent second name for the same prior.
RENAMED = {"gaussian": "standard"}


def check_prior_name(name: str) -> str:
  """`name` if it is in `PRIORS`, else a ValueError naming the known priors (and the new name of a
  renamed one)."""
  if name in RENAMED:
    raise ValueError(
      f"prior {name!r} is called {RENAMED[name]!r} now (N(0, I)); known: {', '.join(PRIORS)}"
    )
  if name not in PRIORS:
    raise ValueError(f"unknown prior {name!r}; known: {', '.join(PRIORS)}")
  return name


def build_prior(
  name: str,
  *,
  latent_dim: int,
  image_shape=None,
  num_components: int | None = None,
  pseudo_mean: float | None = None,
  pseudo_std: float | None = None,
  learn_weights: bool = False,
  flow_couplings: int = 8,
  flow_hidden_units: int = 128,
) -> keras.layers.Layer:
  """The prior called `name` (one of `PRIORS`) over a `latent_dim` latent.

  mog / vampprior need `num_components`; vampprior also `image_shape`, `pseudo_mean`,
  `pseudo_std` (pseudo-input init N(mean, std^2)) and `learn_weights`; flow uses
  `flow_couplings` RealNVP couplings of `flow_hidden_units`.
  """
  check_prior_name(name)
  if name == "standard":
    return StandardPrior(latent_dim)
  if name == "mog":
    return MixtureOfGaussiansPrior(latent_dim, num_components)
  if name == "vampprior":
    return VampPrior(
      num_components=num_components,
      image_shape=image_shape,
      init_mean=pseudo_mean,
      init_std=pseudo_std,
      learn_weights=learn_weights,
    )
  return FlowPrior(latent_dim, num_couplings=flow_couplings, hidden_units=flow_hidden_units)
