"""Models: IWAE bounds on a trained tiny model vs the exact log p(x), sample/example layout, HVAE
KL terms vs Monte Carlo, PixelCNN causality, shapes and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from evaluation import likelihood
from vampprior_tf import distributions, priors
from vampprior_tf import model as models

SHAPE = (6, 6, 1)


def toy_binary_images(n, seed=0):
  """Three 6x6 binary prototypes with 5% flipped pixels."""
  protos = (np.random.RandomState(0).rand(3, *SHAPE) > 0.5).astype(np.float32)
  rng = np.random.RandomState(seed)
  x = protos[rng.randint(0, 3, n)]
  flip = rng.rand(*x.shape) < 0.05
  return np.where(flip, 1 - x, x).astype(np.float32)


@pytest.fixture(scope="module")
def trained_vae():
  """A VAE with a 2-D latent and a VampPrior, trained for a few hundred steps."""
  keras.utils.set_random_seed(0)
  prior = priors.VampPrior(num_components=5, image_shape=SHAPE, init_mean=0.5, init_std=0.1)
  model = models.VAE(
    image_shape=SHAPE,
    observation=distributions.Bernoulli(),
    prior=prior,
    latent_dim=2,
    hidden_units=32,
    seed=0,
  )
  data = toy_binary_images(512)
  model(data[:2])
  optimizer = keras.optimizers.Adam(3e-3)
  optimizer.build(model.trainable_variables)  # before tracing: one trace instead of two

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(model(x, training=True).loss(1.0))
    optimizer.apply_gradients(
      zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    )
    return loss

  for i in range(400):
    step(data[(i % 8) * 64 : (i % 8 + 1) * 64])
  return model, toy_binary_images(64, seed=1)


def exact_log_px(model, x, extent=7.0, n=301):
  """log p(x) = log sum_z p(x | z) p(z) dz on a 2-D grid (the latent is 2-D)."""
  u = np.linspace(-extent, extent, n, dtype=np.float32)
  z = tf.constant(np.stack(np.meshgrid(u, u), -1).reshape(-1, 2))
  log_pz = model.log_prior(z).numpy().astype(np.float64)
  params = model.decode(z)
  out = []
  for image in x:
    log_px_z = model.observation.log_prob(tf.repeat(image[None], len(z), 0), params).numpy()
    out.append(np.logaddexp.reduce(log_px_z + log_pz) + 2 * np.log(u[1] - u[0]))
  return np.array(out)


def test_iwae_recovers_the_exact_log_px_and_increases_in_k(trained_vae):
  model, x = trained_vae
  fn = lambda images, k: model.log_weights(images, k)
  exact = exact_log_px(model, x)
  bounds = {}
  for k in (1, 10, 100, 2000):
    est = likelihood.importance_weighted_log_likelihood(
      fn, tf.constant(x), num_samples=k, chunk_size=500
    )
    bounds[k] = est.log_likelihood.numpy().mean()
  assert bounds[1] < bounds[10] < bounds[100] <= bounds[2000] + 0.02
  # Values against the exact log p(x) of the grid integral (measured: exact -8.5553, IWAE_2000
  # -8.5556, IWAE_1 = ELBO -8.6434): K = 2000 recovers log p(x) to 0.01 nats, K = 1 does not.
  assert abs(bounds[2000] - exact.mean()) < 0.01
  assert exact.mean() - bounds[1] > 0.05


def test_log_weights_keep_examples_and_samples_apart(trained_vae):
  model, x = trained_vae
  k = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)  # layout of the helpers
  flat = models.repeat_examples(tf.constant(np.arange(4, dtype=np.float32)), 3)
  np.testing.assert_array_equal(
    models.split_samples(flat, 3).numpy(), np.tile(np.arange(4), (3, 1))
  )
  np.testing.assert_array_equal(models.split_samples(tf.reshape(k, [-1]), 3).numpy(), k)
  # Column b of the [K, B] weights is example b: compare with each example evaluated alone.
  batch = np.concatenate([x[:1], 1 - x[:1], x[1:2]])
  together = model.log_weights(batch, 1500).numpy()
  assert together.shape == (1500, 3)
  for b in range(3):
    alone = model.log_weights(batch[b : b + 1], 1500).numpy()[:, 0]
    se = np.sqrt(together[:, b].var() / 1500 + alone.var() / 1500)
    assert abs(together[:, b].mean() - alone.mean()) < 5 * se + 1e-3
  # The inverted image is far less likely: mixing columns would blur this difference.
  assert together[:, 1].mean() < together[:, 0].mean() - 10
  assert together[:, 1].mean() < together[:, 2].mean() - 10


def tiny_hvae(cls=models.HVAE2Level, prior=None, observation=None, shape=SHAPE, seed=0):
  keras.utils.set_random_seed(seed)
  return cls(
    image_shape=shape,
    observation=observation or distributions.Bernoulli(),
    prior=prior or priors.StandardPrior(5),
    z1_dim=3,
    z2_dim=5,
    hidden_units=16,
    seed=seed,
  )


@pytest.mark.parametrize(
  "cls", [models.VAE, models.HVAE2Level, models.ConvHVAE2Level, models.PixelHVAE2Level]
)
def test_log_weights_encode_x_once_and_equal_the_model_on_repeated_images(cls):
  """log_weights runs q's networks on x once and repeats their outputs: the same log-weights as
  the whole model on the images repeated K times, from the same noise-generator state."""
  prior = priors.VampPrior(num_components=3, image_shape=SHAPE, init_mean=0.5, init_std=0.1)
  if cls is models.VAE:
    keras.utils.set_random_seed(0)
    model = models.VAE(
      image_shape=SHAPE,
      observation=distributions.Bernoulli(),
      prior=prior,
      latent_dim=4,
      hidden_units=16,
      seed=0,
    )
  else:
    model = tiny_hvae(cls, prior=prior)
  x = toy_binary_images(3)
  model(x)
  state = model.seed_generator.state.numpy()
  log_w = model.log_weights(x, 4).numpy()  # [K, B]
  model.seed_generator.state.assign(state)
  want = models.split_samples(model(models.repeat_examples(tf.constant(x), 4)).elbo, 4).numpy()
  np.testing.assert_allclose(log_w, want, rtol=1e-5, atol=1e-4)
  assert np.std(log_w, axis=0).min() > 1e-4  # the K samples differ (the noise is not shared)


def test_hvae_posteriors_equal_the_official_networks_in_numpy():
  """q(z2 | x) = head(GD(GD(x))) and q(z1 | x, z2) = head(GD([GD(x), GD(z2)])) with GD(v) =
  (W_h v + b_h) * sigmoid(W_g v + b_g) and log-variances clipped to [-6, 2] (official
  HVAE_2level.py: q_z2_layers, q_z1_layers_x, q_z1_layers_z2, q_z1_layers_joint), in NumPy from
  the layers' weights; and forward() samples z1 from that q(z1 | x, z2)."""
  model = tiny_hvae()
  x = toy_binary_images(4)
  f = model.forward(x)
  dense = lambda layer, v: v @ layer.kernel.numpy() + layer.bias.numpy()
  gated = lambda layer, v: dense(layer.h, v) * (1.0 / (1.0 + np.exp(-dense(layer.g, v))))
  head = lambda layer, v: (dense(layer.mean, v), np.clip(dense(layer.log_var, v), -6.0, 2.0))
  flat = x.reshape(4, -1)
  want_z2 = head(model.q_z2, gated(model.q_z2_features[1], gated(model.q_z2_features[0], flat)))
  z2 = f.z2.numpy()
  joint = np.concatenate([gated(model.q_z1_features[0], flat), gated(model.q_z1_from_z2, z2)], -1)
  want_z1 = head(model.q_z1, gated(model.q_z1_joint, joint))
  for got, want in zip(f.q_z2 + f.q_z1, want_z2 + want_z1):
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_hvae_kl_terms_match_monte_carlo_of_closed_forms():
  model = tiny_hvae()
  x = toy_binary_images(1)
  n = 20000
  terms = model(models.repeat_examples(tf.constant(x), n))
  kl_z1, kl_z2 = (t.numpy() for t in terms.kl_levels)
  np.testing.assert_allclose(terms.kl.numpy(), kl_z1 + kl_z2, rtol=1e-5, atol=1e-4)
  # KL(q(z2|x) || N(0, I)) in closed form: the one-sample terms average to it.
  mean, log_var = model.encode_top(tf.constant(x))
  analytic_z2 = float(distributions.gaussian_kl(mean, log_var, 0 * mean, 0 * log_var)[0])
  assert abs(kl_z2.mean() - analytic_z2) < 4 * kl_z2.std() / np.sqrt(n) + 1e-3
  # E_{z2 ~ q} KL(q(z1|x,z2) || p(z1|z2)): closed form per z2, averaged over fresh z2 draws.
  f = model.forward(models.repeat_examples(tf.constant(x), n))
  analytic_z1 = distributions.gaussian_kl(*f.q_z1, *f.p_z1).numpy()
  se = np.sqrt(kl_z1.var() / n + analytic_z1.var() / n)
  assert abs(kl_z1.mean() - analytic_z1.mean()) < 4 * se + 1e-3


def test_vampprior_on_hvae_acts_on_z2():
  prior = priors.VampPrior(num_components=4, image_shape=SHAPE, init_mean=0.05, init_std=0.01)
  model = tiny_hvae(prior=prior)
  x = tf.constant(toy_binary_images(4))
  terms = model(x)
  assert terms.kl.shape == (4,) and np.all(np.isfinite(terms.kl.numpy()))
  means, _ = prior.components(model.encode_top)
  assert means.shape == (4, 5)  # components live in z2's space (z2_dim = 5, z1_dim = 3)


@pytest.mark.parametrize("cls", [models.HVAE2Level, models.ConvHVAE2Level, models.PixelHVAE2Level])
def test_models_sample_and_reconstruct_images_in_range(cls):
  shape = (4, 4, 1)
  model = tiny_hvae(cls, observation=distributions.DiscretizedLogistic(), shape=shape)
  x = np.random.RandomState(0).randint(0, 256, (3,) + shape).astype(np.float32) / 255
  for images in (model.sample(2), model.reconstruct(x)):
    images = images.numpy()
    assert images.shape[1:] == shape and images.min() >= 0 and images.max() <= 1
  assert model.log_weights(x, 4).shape == (4, 3)


def test_conv_feature_sizes_follow_the_official_models():
  assert tiny_hvae(models.ConvHVAE2Level, shape=(28, 28, 1))._x_feature_units() == 294
  assert tiny_hvae(models.ConvHVAE2Level, shape=(28, 20, 1))._x_feature_units() == 210


def test_pixelcnn_decoder_is_autoregressive_in_raster_order():
  shape = (4, 3, 1)
  model = tiny_hvae(models.PixelHVAE2Level, shape=shape)
  z1, z2 = tf.random.normal((1, 3)), tf.random.normal((1, 5))
  x = tf.Variable(tf.random.uniform((1,) + shape))
  model.decode(x, z1, z2)
  for i, j in [(0, 0), (1, 1), (3, 2)]:
    with tf.GradientTape() as tape:
      out = model.decode(x, z1, z2, training=False)[0, i, j, 0]
    grad = np.abs(tape.gradient(out, x).numpy()[0, :, :, 0])
    order = np.arange(grad.size).reshape(grad.shape)
    assert np.all(grad[order >= i * shape[1] + j] == 0)
    if (i, j) != (0, 0):
      assert grad[order < i * shape[1] + j].sum() > 0


def test_bad_image_shape_is_a_clear_error():
  model = tiny_hvae()
  with pytest.raises(ValueError, match="expected images"):
    model.log_weights(tf.zeros((2, 5, 5, 1)), 3)


def test_pixelhvae_batchnorm_and_output_bias_follow_pytorch_official():
  """nn.BatchNorm2d defaults (momentum 0.1 -> Keras 0.9, eps 1e-5): after one training batch the
  moving mean is 0.1 * the batch mean. Output 1x1 conv: bias for binary data only (official
  `p_x_mean` / `p_x_logvar` of gray data have bias=False)."""
  shape = (4, 4, 1)
  grey = tiny_hvae(
    models.PixelHVAE2Level, observation=distributions.DiscretizedLogistic(), shape=shape
  )
  binary = tiny_hvae(models.PixelHVAE2Level, shape=shape)
  x = np.random.RandomState(0).randint(0, 256, (8,) + shape).astype(np.float32) / 255
  grey(x)
  binary((x > 0.5).astype(np.float32))
  assert grey.p_x.bias is None and binary.p_x.bias is not None
  # PyTorch default init of the 1x1 conv on 64 channels: U(-1/8, 1/8) for weight and bias.
  for w in (grey.p_x.kernel.numpy(), binary.p_x.kernel.numpy(), binary.p_x.bias.numpy()):
    assert np.abs(w).max() <= 0.125 and np.abs(w).max() > 0.05
  bn = grey.pixelcnn[1]
  assert bn.epsilon == 1e-5
  # One training call: the first BN's moving mean moves 10% of the way to the batch mean.
  f = grey.forward(tf.constant(x))
  h = tf.concat(
    [
      tf.constant(x),
      tf.reshape(grey.p_x_from_z1(f.z1), (-1,) + shape),
      tf.reshape(grey.p_x_from_z2(f.z2), (-1,) + shape),
    ],
    axis=-1,
  )
  batch_mean = tf.reduce_mean(grey.pixelcnn[0](h), axis=[0, 1, 2]).numpy()
  bn(grey.pixelcnn[0](h), training=True)
  np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
