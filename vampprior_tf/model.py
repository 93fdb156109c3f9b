"""VAE, two-level HVAE and its convolutional / PixelCNN-decoder variants (Tomczak & Welling 2018),
following the official networks (jmtomczak/vae_vampprior, models/*.py), in NHWC.

Every model exposes
  * `call(x, training)` -> `ELBOTerms` for one posterior sample per example,
  * `log_weights(x, num_samples)` -> log w = log p(x, z) - log q(z | x), [K, B] (K on axis 0),
    the input of `evaluation.likelihood`,
  * `sample(n)` and `reconstruct(x)` -> images in [0, 1] (decoder means; PixelHVAE: sampled
    autoregressively),
  * `encode_top(x)` -> (mean, log_var) of q over the latent the prior acts on (VampPrior components).
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from common_tf import random as common_random
from vampprior_tf import distributions
from vampprior_tf.layers import (
  GatedConv2d,
  GatedDense,
  MaskedConv2D,
  hardtanh,
  he_normal,
  torch_default_uniform,
)

# Official models/*.py: encoder / p(z1|z2) log-variances pass through Hardtanh(-6, 2).
LOG_VAR_RANGE = (-6.0, 2.0)
# Official PixelHVAE_2level.py uses nn.BatchNorm2d(64) defaults: running = 0.9 running + 0.1 batch
# (PyTorch momentum 0.1 = Keras momentum 0.9) and eps 1e-5.
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5


@dataclasses.dataclass(frozen=True)
class ELBOTerms:
  """One-sample ELBO terms per example [B], in nats (official `calculate_loss`).

  log_px: log p(x | z).
  kl: log q(z | x) - log p(z), summed over the latent levels (a one-sample estimate of the KL).
  kl_levels: the same per level (z for the VAE; (z1, z2) for HVAEs).
  """

  log_px: tf.Tensor
  kl: tf.Tensor
  kl_levels: tuple

  def loss(self, beta=1.0):
    """-log p(x | z) + beta * KL: the warm-up objective (beta = 1: the negative ELBO)."""
    return -self.log_px + beta * self.kl

  @property
  def elbo(self):
    """log p(x | z) - KL = log w of this sample."""
    return self.log_px - self.kl


def repeat_examples(x, num_samples: int):
  """[B, ...] -> [K * B, ...] as K consecutive copies of the batch (row k * B + b is example b)."""
  return tf.tile(x, tf.concat([[num_samples], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0))


def split_samples(values, num_samples: int):
  """Inverse layout of `repeat_examples`: [K * B] -> [K, B] (samples on axis 0, examples on 1)."""
  return tf.reshape(values, [num_samples, -1])


class GaussianHead(keras.layers.Layer):
  """(mean, log_var) of a diagonal Gaussian: Linear and Linear -> hardtanh (official `q_z_mean`,
  `q_z_logvar`); `log_var_range=None` leaves the log-variance unclamped."""

  def __init__(self, latent_dim: int, *, log_var_range=LOG_VAR_RANGE, **kwargs):
    super().__init__(**kwargs)
    self.log_var_range = log_var_range
    self.mean = keras.layers.Dense(latent_dim, kernel_initializer=he_normal())
    self.log_var = keras.layers.Dense(latent_dim, kernel_initializer=he_normal())

  def call(self, h):  # [B, F] -> ([B, D], [B, D])
    log_var = self.log_var(h)
    if self.log_var_range is not None:
      log_var = hardtanh(log_var, *self.log_var_range)
    return self.mean(h), log_var


def reparameterize(mean, log_var, seed):
  """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I) (the same eps per example on any number of
  replicas: `common_tf.random`)."""
  return mean + tf.exp(0.5 * log_var) * common_random.normal(
    tf.shape(mean), seed=seed, dtype=mean.dtype
  )


class LatentVariableModel(keras.Model):
  """Shared parts: observation model, prior, seed generator, importance weights, sampling API."""

  def __init__(self, *, image_shape, observation, prior, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.image_shape = tuple(int(s) for s in image_shape)
    self.num_pixels = int(np.prod(self.image_shape))
    self.observation = observation
    self.prior = prior
    self.seed_generator = keras.random.SeedGenerator(seed)

  def build(self, input_shape=None):
    """Sub-layers build themselves on their first call; nothing to create here."""
    del input_shape

  def _check_images(self, x):
    x = tf.convert_to_tensor(x, tf.float32)
    if tuple(x.shape[1:]) != self.image_shape:
      raise ValueError(
        f"expected images [B, {', '.join(map(str, self.image_shape))}], got {x.shape}"
      )
    return x

  def log_prior(self, z, training=False):
    """log p(z) of the top latent under `self.prior` [B]."""
    return self.prior.log_prob(z, encoder=self.encode_top, training=training)

  def call(self, x, training=False):
    x = self._check_images(x)
    return self._terms(x, self._encode_x(x, training=training), training=training)

  def _encode_x(self, x, training=False) -> tuple:
    """What q computes from x alone (deterministic; no latent sample involved) [B, ...] each."""
    raise NotImplementedError

  def _terms(self, x, x_parts, training=False) -> ELBOTerms:
    """One-sample ELBO terms of x [B, H, W, C] from `_encode_x(x)`'s outputs."""
    raise NotImplementedError

  def log_weights(self, x, num_samples: int, training=False):
    """log w_k = log p(x, z_k) - log q(z_k | x), z_k ~ q(z | x): [K, B] (samples on axis 0).

    q's networks on x alone (`_encode_x`) run once per image and their outputs are repeated; the
    K samples of the rest go through as one batch of K * B. The same as
    `self(repeat_examples(x, K))` with the same noise.
    """
    x = self._check_images(x)
    x_parts = tf.nest.map_structure(
      lambda t: repeat_examples(t, num_samples), self._encode_x(x, training=training)
    )
    terms = self._terms(repeat_examples(x, num_samples), x_parts, training=training)
    return split_samples(terms.elbo, num_samples)

  def encode_top(self, x, training=False):
    raise NotImplementedError

  def sample(self, num_samples: int, training=False):
    raise NotImplementedError

  def reconstruct(self, x, training=False):
    raise NotImplementedError

  def _image_params(self, h):
    """[B, D * P] decoder output -> [B, H, W, C * P] observation parameters."""
    h_, w_, c_ = self.image_shape
    p = self.observation.num_params
    # Parameter p of channel c is unit (p, i, j, c) so the P maps stack on the channel axis.
    return tf.concat(tf.split(tf.reshape(h, [-1, p, h_, w_, c_]), p, axis=1), axis=-1)[:, 0]


class VAE(LatentVariableModel):
  """One-level VAE: q(z | x) = N(mu(x), diag sigma^2(x)), p(x | z) the observation model.

  Official models/VAE.py: encoder and decoder are two GatedDense(300) layers (`hidden_units`,
  `num_hidden_layers`); `hidden_block` swaps the gated layer for another (e.g. ReLU Dense).
  """

  def __init__(
    self,
    *,
    image_shape,
    observation,
    prior,
    latent_dim: int = 40,
    hidden_units: int = 300,
    num_hidden_layers: int = 2,
    hidden_block=GatedDense,
    log_var_range=LOG_VAR_RANGE,
    seed: int = 0,
    **kwargs,
  ):
    super().__init__(
      image_shape=image_shape, observation=observation, prior=prior, seed=seed, **kwargs
    )
    self.latent_dim = latent_dim
    self.encoder_layers = [hidden_block(hidden_units) for _ in range(num_hidden_layers)]
    self.q_z = GaussianHead(latent_dim, log_var_range=log_var_range)
    self.decoder_layers = [hidden_block(hidden_units) for _ in range(num_hidden_layers)]
    self.p_x = keras.layers.Dense(
      self.num_pixels * observation.num_params, kernel_initializer=he_normal()
    )

  def encode_top(self, x, training=False):
    """q(z | x): (mean, log_var) [B, D]."""
    h = tf.reshape(x, [-1, self.num_pixels])
    for layer in self.encoder_layers:
      h = layer(h, training=training)
    return self.q_z(h, training=training)

  def decode(self, z, training=False):
    """Observation parameters [B, H, W, C * P] of p(x | z)."""
    h = z
    for layer in self.decoder_layers:
      h = layer(h, training=training)
    return self._image_params(self.p_x(h, training=training))

  def _encode_x(self, x, training=False):
    return self.encode_top(x, training=training)

  def _terms(self, x, x_parts, training=False):
    mean, log_var = x_parts  # q(z | x)
    z = reparameterize(mean, log_var, self.seed_generator)
    log_px = self.observation.log_prob(x, self.decode(z, training=training))
    kl = distributions.log_normal_diag(z, mean, log_var) - self.log_prior(z, training=training)
    return ELBOTerms(log_px=log_px, kl=kl, kl_levels=(kl,))

  def sample(self, num_samples: int, training=False):
    z = self.prior.sample(
      num_samples, encoder=self.encode_top, seed=self.seed_generator, training=training
    )
    return self.observation.mean(self.decode(z, training=training))

  def reconstruct(self, x, training=False):
    mean, log_var = self.encode_top(self._check_images(x), training=training)
    z = reparameterize(mean, log_var, self.seed_generator)
    return self.observation.mean(self.decode(z, training=training))


@dataclasses.dataclass(frozen=True)
class HVAEForward:
  """Everything one pass of a two-level HVAE draws and computes ([B, D] each; params as images)."""

  z1: tf.Tensor
  z2: tf.Tensor
  q_z1: tuple  # (mean, log_var) of q(z1 | x, z2)
  q_z2: tuple  # (mean, log_var) of q(z2 | x)
  p_z1: tuple  # (mean, log_var) of p(z1 | z2)
  x_params: tf.Tensor


class HVAE2Level(LatentVariableModel):
  """Two-level HVAE (official models/HVAE_2level.py), the prior acting on z2:

    q(z1, z2 | x) = q(z2 | x) q(z1 | x, z2),   p(x, z1, z2) = p(x | z1, z2) p(z1 | z2) p(z2).

  Networks (hidden_units = 300): q(z2|x): 2 GatedDense; q(z1|x,z2): GatedDense on x and on z2,
  concatenated, GatedDense; p(z1|z2): 2 GatedDense; p(x|z1,z2): GatedDense on z1 and on z2,
  concatenated, GatedDense, Linear. Subclasses replace `_x_features_*` / `decode`.
  """

  def __init__(
    self,
    *,
    image_shape,
    observation,
    prior,
    z1_dim: int = 40,
    z2_dim: int = 40,
    hidden_units: int = 300,
    seed: int = 0,
    **kwargs,
  ):
    super().__init__(
      image_shape=image_shape, observation=observation, prior=prior, seed=seed, **kwargs
    )
    self.z1_dim, self.z2_dim, self.hidden_units = z1_dim, z2_dim, hidden_units
    self._build_encoder_features()
    self.q_z2 = GaussianHead(z2_dim)
    self.q_z1_from_z2 = GatedDense(self._x_feature_units())
    self.q_z1_joint = GatedDense(hidden_units)
    self.q_z1 = GaussianHead(z1_dim)
    self.p_z1_layers = [GatedDense(hidden_units), GatedDense(hidden_units)]
    self.p_z1 = GaussianHead(z1_dim)
    self._build_decoder()

  # ---- networks (the MLP version; ConvHVAE2Level / PixelHVAE2Level override these)

  def _x_feature_units(self):
    return self.hidden_units

  def _build_encoder_features(self):
    self.q_z2_features = [GatedDense(self.hidden_units), GatedDense(self.hidden_units)]
    self.q_z1_features = [GatedDense(self.hidden_units)]

  def _features(self, layers, x, training):
    h = tf.reshape(x, [-1, self.num_pixels])
    for layer in layers:
      h = layer(h, training=training)
    return tf.reshape(h, [tf.shape(x)[0], -1])

  def _build_decoder(self):
    self.p_x_from_z1 = GatedDense(self.hidden_units)
    self.p_x_from_z2 = GatedDense(self.hidden_units)
    self.p_x_joint = GatedDense(self.hidden_units)
    self.p_x = keras.layers.Dense(
      self.num_pixels * self.observation.num_params, kernel_initializer=he_normal()
    )

  def decode(self, x, z1, z2, training=False):
    """Observation parameters [B, H, W, C * P] of p(x | z1, z2) (`x` only used by PixelHVAE)."""
    del x
    h = tf.concat(
      [self.p_x_from_z1(z1, training=training), self.p_x_from_z2(z2, training=training)], axis=-1
    )
    return self._image_params(self.p_x(self.p_x_joint(h, training=training), training=training))

  # ---- distributions

  def encode_top(self, x, training=False):
    """q(z2 | x): (mean, log_var) [B, z2_dim]."""
    return self.q_z2(self._features(self.q_z2_features, x, training), training=training)

  def encode_z1(self, x, z2, training=False):
    """q(z1 | x, z2): (mean, log_var) [B, z1_dim]."""
    return self._q_z1(self._features(self.q_z1_features, x, training), z2, training)

  def _q_z1(self, x_features, z2, training):
    """q(z1 | x, z2) from the x branch's features [B, F] and z2."""
    h = tf.concat([x_features, self.q_z1_from_z2(z2, training=training)], axis=-1)
    return self.q_z1(self.q_z1_joint(h, training=training), training=training)

  def prior_z1(self, z2, training=False):
    """p(z1 | z2): (mean, log_var) [B, z1_dim]."""
    h = z2
    for layer in self.p_z1_layers:
      h = layer(h, training=training)
    return self.p_z1(h, training=training)

  def _encode_x(self, x, training=False):
    """(q(z2 | x) as (mean, log_var), the x branch's features of q(z1 | x, z2))."""
    return (self.encode_top(x, training=training), self._features(self.q_z1_features, x, training))

  def forward(self, x, training=False) -> HVAEForward:
    """z2 ~ q(z2|x), z1 ~ q(z1|x,z2), and the parameters of p(z1|z2) and p(x|z1,z2)."""
    x = self._check_images(x)
    return self._forward(x, self._encode_x(x, training=training), training)

  def _forward(self, x, x_parts, training) -> HVAEForward:
    q_z2, x_features = x_parts
    z2 = reparameterize(*q_z2, self.seed_generator)
    q_z1 = self._q_z1(x_features, z2, training)
    z1 = reparameterize(*q_z1, self.seed_generator)
    p_z1 = self.prior_z1(z2, training=training)
    return HVAEForward(
      z1=z1,
      z2=z2,
      q_z1=q_z1,
      q_z2=q_z2,
      p_z1=p_z1,
      x_params=self.decode(x, z1, z2, training=training),
    )

  def _terms(self, x, x_parts, training=False):
    f = self._forward(x, x_parts, training)
    log_px = self.observation.log_prob(x, f.x_params)
    kl_z1 = distributions.log_normal_diag(f.z1, *f.q_z1) - distributions.log_normal_diag(
      f.z1, *f.p_z1
    )
    kl_z2 = distributions.log_normal_diag(f.z2, *f.q_z2) - self.log_prior(f.z2, training=training)
    return ELBOTerms(log_px=log_px, kl=kl_z1 + kl_z2, kl_levels=(kl_z1, kl_z2))

  def _generate_x(self, z1, z2, training):
    return self.observation.mean(self.decode(None, z1, z2, training=training))

  def sample(self, num_samples: int, training=False):
    z2 = self.prior.sample(
      num_samples, encoder=self.encode_top, seed=self.seed_generator, training=training
    )
    z1 = reparameterize(*self.prior_z1(z2, training=training), self.seed_generator)
    return self._generate_x(z1, z2, training)

  def reconstruct(self, x, training=False):
    f = self.forward(x, training=training)
    return self._generate_x(f.z1, f.z2, training)


class ConvHVAE2Level(HVAE2Level):
  """Convolutional HVAE (official models/convHVAE_2level.py).

  q(z2|x): GatedConv2d 32@7x7, 32@3x3/2, 64@5x5, 64@3x3/2, 6@3x3 -> flatten (h = 6 * H/4 * W/4:
  294 for 28x28, 210 for Frey Faces); q(z1|x,z2): GatedConv2d 32@3, 32@3/2, 64@3, 64@3/2, 6@3 on x,
  GatedDense(h) on z2, GatedDense(300) joint. p(x|z1,z2): GatedDense(300) on z1 and z2 ->
  GatedDense(H*W*C) -> image -> 4 x GatedConv2d 64@3x3 -> 1x1 conv to the observation parameters.
  """

  def _x_feature_units(self):
    h, w, _ = self.image_shape
    return 6 * math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2)

  def _build_encoder_features(self):
    self.q_z2_features = [
      GatedConv2d(32, 7),
      GatedConv2d(32, 3, 2),
      GatedConv2d(64, 5),
      GatedConv2d(64, 3, 2),
      GatedConv2d(6, 3),
    ]
    self.q_z1_features = [
      GatedConv2d(32, 3),
      GatedConv2d(32, 3, 2),
      GatedConv2d(64, 3),
      GatedConv2d(64, 3, 2),
      GatedConv2d(6, 3),
    ]

  def _features(self, layers, x, training):
    h = x
    for layer in layers:
      h = layer(h, training=training)
    return tf.reshape(h, [tf.shape(x)[0], self._x_feature_units()])

  def _build_decoder(self):
    self.p_x_from_z1 = GatedDense(self.hidden_units)
    self.p_x_from_z2 = GatedDense(self.hidden_units)
    self.p_x_joint = GatedDense(self.num_pixels)
    self.p_x_convs = [GatedConv2d(64, 3) for _ in range(4)]
    init = torch_default_uniform(64)  # official Conv2d(64, C, 1, 1, 0): PyTorch default init
    self.p_x = keras.layers.Conv2D(
      self.image_shape[-1] * self.observation.num_params,
      1,
      kernel_initializer=init,
      bias_initializer=init,
    )

  def decode(self, x, z1, z2, training=False):
    del x
    h = tf.concat(
      [self.p_x_from_z1(z1, training=training), self.p_x_from_z2(z2, training=training)], axis=-1
    )
    h = tf.reshape(self.p_x_joint(h, training=training), (-1,) + self.image_shape)
    for layer in self.p_x_convs:
      h = layer(h, training=training)
    return self.p_x(h, training=training)


class PixelHVAE2Level(ConvHVAE2Level):
  """ConvHVAE with a PixelCNN decoder (official models/PixelHVAE_2level.py):

  p(x | z1, z2) = prod_i p(x_i | x_<i, z1, z2). GatedDense(H*W*C) maps z1 and z2 to images that are
  concatenated with x; a masked conv 'A' then 7 masked convs 'B' (64@3x3, no bias, BatchNorm with
  PyTorch's momentum / eps, ReLU) and a 1x1 conv (bias only for binary data) give the parameters. Sampling runs the network once per pixel (raster order).
  """

  NUM_PIXELCNN_LAYERS = 8  # official: one 'A' + seven 'B' masked convolutions

  def _build_decoder(self):
    self.p_x_from_z1 = GatedDense(self.num_pixels)
    self.p_x_from_z2 = GatedDense(self.num_pixels)
    self.pixelcnn = []
    for i in range(self.NUM_PIXELCNN_LAYERS):
      self.pixelcnn += [
        MaskedConv2D(64, 3, mask_type="A" if i == 0 else "B"),
        keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON),
      ]
    # Official output convs: binary `Conv2d(64, 1, 1, 1, 0)` with a bias; gray / continuous
    # `p_x_mean`, `p_x_logvar` with bias=False.
    init = torch_default_uniform(64)  # PyTorch default init of the official 1x1 conv(s)
    self.p_x = keras.layers.Conv2D(
      self.image_shape[-1] * self.observation.num_params,
      1,
      use_bias=isinstance(self.observation, distributions.Bernoulli),
      kernel_initializer=init,
      bias_initializer=init,
    )

  def decode(self, x, z1, z2, training=False):
    shape = (-1,) + self.image_shape
    h = tf.concat(
      [
        x,
        tf.reshape(self.p_x_from_z1(z1, training=training), shape),
        tf.reshape(self.p_x_from_z2(z2, training=training), shape),
      ],
      axis=-1,
    )
    for i in range(0, len(self.pixelcnn), 2):
      h = self.pixelcnn[i](h, training=training)
      h = tf.nn.relu(self.pixelcnn[i + 1](h, training=training))
    return self.p_x(h, training=training)

  def _generate_x(self, z1, z2, training):
    """Ancestral sampling pixel by pixel in raster order (H * W decoder passes)."""
    height, width, _ = self.image_shape
    x = tf.zeros((tf.shape(z1)[0],) + self.image_shape)
    for i in range(height):
      for j in range(width):
        draw = self.observation.sample(
          self.decode(x, z1, z2, training=training), seed=self.seed_generator
        )
        pixel = np.zeros(self.image_shape[:2] + (1,), np.float32)
        pixel[i, j] = 1.0
        x = x * (1.0 - pixel) + draw * pixel
    return x
