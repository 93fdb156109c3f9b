"""DDPM / U-Net / EMA, the image flow and the VAE with a flow prior, on tiny configurations."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from diffusion_tf import diffusion, layers
from diffusion_tf import model as model_lib
from evaluation import likelihood
from experiments import harness
from tests.diffusion_tf import numpy_ddpm

# One level, attention only in the middle block: for tests of what surrounds the U-Net (the
# U-Net's levels and attention placement are tested on their own below).
MICRO_UNET = layers.UNetConfig(
  channels=8,
  channel_mult=(1,),
  num_res_blocks=1,
  attention_resolutions=(),
  dropout=0.1,
  num_groups=2,
)


def _ddpm(num_timesteps=6, unet=MICRO_UNET, **kwargs):
  d = diffusion.GaussianDiffusion(betas=np.linspace(1e-3, 0.2, num_timesteps))
  return model_lib.DDPM(image_shape=(6, 6, 1), unet=unet, diffusion=d, padded_size=8, **kwargs)


def _randomize(model, seed=0, scale=0.3):
  rng = np.random.default_rng(seed)
  for v in model.trainable_variables:
    v.assign(scale * rng.standard_normal(v.shape).astype(np.float32))


def _images(n=4, shape=(6, 6, 1), seed=0):
  return tf.constant(np.random.default_rng(seed).integers(0, 256, (n,) + shape) / 255.0, tf.float32)


# ----------------------------------------------------------------------------- U-Net


def test_timestep_embedding_closed_form():
  emb = layers.timestep_embedding(tf.constant([0, 7]), 8).numpy()
  freqs = np.exp(-np.log(10000.0) * np.arange(4) / 3)
  np.testing.assert_allclose(
    emb[1], np.concatenate([np.sin(7 * freqs), np.cos(7 * freqs)]), rtol=1e-5
  )
  np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])
  with pytest.raises(ValueError):
    layers.timestep_embedding(tf.constant([1]), 5)


def test_unet_shapes_attention_placement_and_bad_size():
  # Four levels at 16x16 (resolutions 16, 8, 4, 2): attention at 4 is the third level.
  config = layers.UNetConfig(
    channels=8,
    channel_mult=(1, 2, 2, 2),
    num_res_blocks=1,
    attention_resolutions=(4,),
    dropout=0.0,
    num_groups=2,
  )
  unet = layers.UNet(config=config, image_size=16, out_channels=1)
  out = unet(tf.zeros([2, 16, 16, 1]), tf.constant([0, 999]))
  assert out.shape == (2, 16, 16, 1)
  np.testing.assert_array_equal(out.numpy(), 0.0)  # zero-initialised output convolution
  with_attention = [
    b.name
    for b in unet.down_blocks + unet.up_blocks
    if isinstance(b, layers.ResAttnBlock) and b.attn is not None
  ]
  assert with_attention == ["down_2_block_0", "up_2_block_0", "up_2_block_1"]  # 16/2^2 = 4
  with pytest.raises(ValueError, match="divisible"):
    layers.UNet(config=config, image_size=20, out_channels=1)  # not divisible by 2^3


def test_group_norm_closed_form_backward_equals_autodiff_and_numpy():
  """GroupNorm with the hand-written backward == keras.layers.GroupNormalization differentiated by
  TensorFlow (value; gradients of x, gamma, beta under a random cotangent), and its value ==
  NumPy's (x - mean) / sqrt(var + eps) * gamma + beta per example and group."""
  rng = np.random.default_rng(0)
  b, h, w, c, groups, eps = 3, 4, 5, 6, 3, 1e-6
  x = tf.constant(rng.standard_normal([b, h, w, c]) * 2.0 + 0.5, tf.float32)
  dout = tf.constant(rng.standard_normal([b, h, w, c]), tf.float32)
  gamma = rng.standard_normal(c).astype(np.float32) + 1.0
  beta = rng.standard_normal(c).astype(np.float32)
  results = []
  for cls in (layers.GroupNorm, keras.layers.GroupNormalization):
    layer = cls(groups=groups, epsilon=eps)
    layer.build(x.shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      loss = tf.reduce_sum(y * dout)
    results.append([y] + tape.gradient(loss, [x, layer.gamma, layer.beta]))
  for ours, reference, name in zip(*results, ["y", "dx", "dgamma", "dbeta"]):
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
  xr = x.numpy().astype(np.float64).reshape(b, h * w, groups, c // groups)
  mean, var = xr.mean(axis=(1, 3), keepdims=True), xr.var(axis=(1, 3), keepdims=True)
  expected = ((xr - mean) / np.sqrt(var + eps)).reshape(b, h, w, c) * gamma + beta
  np.testing.assert_allclose(results[0][0].numpy(), expected, rtol=1e-5, atol=1e-5)
  assert [v.path for v in layers._group_norm(2, "norm").weights] == []  # built on first call
  assert isinstance(
    layers.ResBlock(out_channels=4, dropout=0.0, num_groups=2).norm1, layers.GroupNorm
  )


def test_upsample_phase_convolutions_equal_conv_of_the_repeated_input(monkeypatch):
  """upsample_conv (four 2x2 convolutions on the source) == a 3x3 'same' convolution of the
  nearest-neighbour x2 input, in value and in the gradients of x, kernel and bias; and the
  Upsample layer gives the same on either side of its size threshold."""
  rng = np.random.default_rng(0)
  x = tf.constant(rng.standard_normal([2, 5, 4, 3]), tf.float32)  # H != W, odd H
  kernel = tf.constant(rng.standard_normal([3, 3, 3, 6]), tf.float32)
  bias = tf.constant(rng.standard_normal([6]), tf.float32)
  dout = tf.constant(rng.standard_normal([2, 10, 8, 6]), tf.float32)

  def plain(x, kernel, bias):
    up = tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)
    return tf.nn.conv2d(up, kernel, 1, "SAME") + bias

  results = []
  for fn in (layers.upsample_conv, plain):
    with tf.GradientTape() as tape:
      tape.watch([x, kernel, bias])
      y = fn(x, kernel, bias)
      loss = tf.reduce_sum(y * dout)
    results.append([y] + tape.gradient(loss, [x, kernel, bias]))
  for ours, reference, name in zip(*results, ["y", "dx", "dkernel", "dbias"]):
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)

  layer = layers.Upsample()
  plain_out = layer(x).numpy()  # 20 pixels: below the threshold, the plain path
  monkeypatch.setattr(layers, "UPSAMPLE_PHASES_MIN_PIXELS", 20)
  np.testing.assert_allclose(layer(x).numpy(), plain_out, rtol=1e-5, atol=1e-5)
  assert layer(x).shape == (2, 10, 8, 3)
  assert [v.path for v in layer.weights] == ["upsample/conv/kernel", "upsample/conv/bias"]


def test_unet_mixed_precision_keeps_norms_and_output_float32():
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    m = _ddpm(
      unet=MICRO_UNET
    )  # res blocks, the middle attention, the output conv: every layer kind
    _randomize(m)
    block = m.unet.down_blocks[0].res
    assert block.norm1.compute_dtype == "float32" and block.conv1.compute_dtype == "float16"
    eps = m.eps(tf.random.normal([2, 8, 8, 1]), tf.constant([1, 3]))
    assert eps.dtype == tf.float32 and np.all(np.isfinite(eps.numpy()))
    assert m.loss_terms(_images(2)).simple.dtype == tf.float32
  finally:
    keras.mixed_precision.set_global_policy("float32")


# ----------------------------------------------------------------------------- DDPM


def test_ddpm_boundary_padding_round_trip():
  m = _ddpm(unet=MICRO_UNET)
  x = _images()
  padded = m.to_model_space(x)
  assert padded.shape == (4, 8, 8, 1)
  np.testing.assert_array_equal(padded.numpy()[:, 0], -1.0)
  np.testing.assert_allclose(m.to_image_space(padded).numpy(), x.numpy(), atol=1e-6)


def _np_eps(m):
  """The model's epsilon network as a NumPy function (a black box for the NumPy samplers)."""
  return lambda x, t: m.eps(tf.constant(x, tf.float32), tf.fill([x.shape[0]], int(t))).numpy()


def test_compiled_ddpm_samplers_equal_numpy_samplers():
  """DDPM.sample / sample_ddim (XLA while loops) against the NumPy samplers on the same noise,
  with the U-Net as a black box; then the same crop and [0, 1] mapping."""
  m = _ddpm(unet=MICRO_UNET)
  _randomize(m, scale=0.1)
  samples = m.sample(3, seed=5).numpy()
  shape, seed, d = (3, 8, 8, 1), [5, 0], m.diffusion
  noises = numpy_ddpm.draws(shape, seed, range(d.num_timesteps + 1), jit=True)
  x_T = noises[d.num_timesteps]
  x0 = numpy_ddpm.ancestral(
    numpy_ddpm.Schedule(d.betas), _np_eps(m), x_T, noises, variance=d.variance.value, clip=True
  )
  np.testing.assert_allclose(samples, np.clip((x0[:, 1:7, 1:7] + 1) / 2, 0, 1), atol=1e-4)
  ddim = m.sample_ddim(3, seed=5, num_steps=3, eta=0.5).numpy()
  steps = d.ddim_timesteps(3)
  x0 = numpy_ddpm.ddim(
    numpy_ddpm.Schedule(d.betas), _np_eps(m), x_T, steps, noises, eta=0.5, clip=False
  )
  np.testing.assert_allclose(ddim, np.clip((x0[:, 1:7, 1:7] + 1) / 2, 0, 1), atol=1e-4)


def test_ddpm_trains_on_official_scaling_and_dequantizes_only_on_request():
  x = _images(2)
  k = np.round(x.numpy() * 255)
  official = _ddpm(unet=MICRO_UNET).training_data(x).numpy()[:, 1:7, 1:7]
  np.testing.assert_allclose(official, k / 127.5 - 1, atol=1e-6)  # tpu_utils.normalize_data
  dequantized = _ddpm(unet=MICRO_UNET, dequantize=True).training_data(x).numpy()[:, 1:7, 1:7]
  u = ((dequantized + 1) / 2) * 256 - k  # (k + u) / 256 mapped to [-1, 1]
  assert u.min() >= -1e-4 and u.max() <= 1 + 1e-4 and u.std() > 0.2


def test_random_flip_mirrors_about_half_the_images_in_place_and_only_on_request():
  n, shape = 64, (6, 5, 1)  # padded to 8x8: 1 column left, 2 right (the flip is before padding)
  x = _images(n, shape)
  k = np.round(x.numpy() * 255) / 127.5 - 1
  d = diffusion.GaussianDiffusion(betas=np.linspace(1e-3, 0.2, 6))
  make = lambda **kw: model_lib.DDPM(
    image_shape=shape, unet=MICRO_UNET, diffusion=d, padded_size=8, **kw
  )
  plain = make().training_data(x).numpy()
  flipping = make(random_flip=True)
  got = flipping.training_data(x).numpy()
  np.testing.assert_array_equal(plain[:, 1:7, 1:6], k)  # official scaling, no flip by default
  np.testing.assert_array_equal(got[:, :, 0], -1.0)  # the padding stays where it was
  np.testing.assert_array_equal(got[:, :, 6:], -1.0)
  same = np.all(got[:, 1:7, 1:6] == k, axis=(1, 2, 3))
  mirrored = np.all(got[:, 1:7, 1:6] == k[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same | mirrored) and not np.any(same & mirrored)  # no image is its own mirror
  assert 20 <= mirrored.sum() <= 44  # Binomial(64, 1/2): outside with probability < 0.01
  again = flipping.training_data(x).numpy()  # a new draw per batch
  assert not np.array_equal(np.all(again[:, 1:7, 1:6] == k[:, :, ::-1], axis=(1, 2, 3)), mirrored)


def test_ddpm_loss_and_variational_bound():
  # One model for both parts: jit_sampling only switches XLA off for the bound (graph mode, so
  # the x_t draws are the CPU kernel's); the loss and its gradients are eager either way.
  m = _ddpm(unet=MICRO_UNET, jit_sampling=False)
  _randomize(m, scale=0.1)
  with tf.GradientTape() as tape:
    loss = m.loss_terms(_images()).simple
  grads = tape.gradient(loss, m.trainable_variables)
  assert loss.shape == (4,) and np.all(np.isfinite(loss.numpy()))
  assert sum(g is not None for g in grads) == len(grads)
  # The model's bound (official: x0_hat clipped) against the NumPy calc_bpd_loop on the padded
  # 8-bit images; graph mode, so the x_t draws are the CPU kernel's.
  x01 = _images(2)
  x0 = m.to_model_space(x01).numpy().astype(np.float64)
  noises = numpy_ddpm.draws(x0.shape, [0, 1], range(m.diffusion.num_timesteps), jit=False)
  vb = m.variational_bound(x01, seed=0)
  total, prior, kl, decoder = numpy_ddpm.vlb(
    numpy_ddpm.Schedule(m.diffusion.betas),
    _np_eps(m),
    x0,
    noises,
    variance=m.diffusion.variance.value,
    clip=True,
  )
  np.testing.assert_allclose(vb.prior.numpy(), prior, rtol=1e-5)
  np.testing.assert_allclose(vb.diffusion.numpy(), kl, rtol=1e-4)
  np.testing.assert_allclose(vb.decoder.numpy(), decoder, rtol=1e-4)
  np.testing.assert_allclose(vb.total.numpy(), total, rtol=1e-4)


def test_ema_follows_the_weights_and_leaves_schedule_constants_alone(tmp_path):
  m = _ddpm(unet=MICRO_UNET)
  tables = {k: v.copy() for k, v in vars(m.diffusion).items() if isinstance(v, np.ndarray)}
  optimizer = keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.5)
  data = tf.data.Dataset.from_tensor_slices(_images(8))
  config = harness.TrainConfig(logdir=str(tmp_path), batch_size=4, epochs=1, progress=False)
  loss_fn = lambda model, batch, ctx: harness.LossOutput(per_example=model.loss_terms(batch).simple)
  trainer = harness.Trainer(
    config=config,
    strategy=tf.distribute.get_strategy(),
    model=m,
    optimizer=optimizer,
    loss_fn=loss_fn,
    train_data=data,
  )
  variables = m.trainable_variables
  w0 = [v.numpy() for v in variables]
  trainer._train_step(next(iter(trainer.epoch_dataset(0))))
  w1 = [v.numpy() for v in variables]
  trainer._train_step(next(iter(trainer.epoch_dataset(0))))
  w2 = [v.numpy() for v in variables]
  assert any(not np.allclose(a, b) for a, b in zip(w0, w1))
  with model_lib.ema_weights(optimizer, variables):
    # Keras EMA: the first average is the weights after step 1, then 0.5 avg + 0.5 w.
    for v, a, b in zip(variables, w1, w2):
      np.testing.assert_allclose(v.numpy(), 0.5 * a + 0.5 * b, rtol=1e-5, atol=1e-6)
  for v, b in zip(variables, w2):
    np.testing.assert_array_equal(v.numpy(), b)  # raw weights back
  # The schedule is NumPy float64, untouched, and no model variable holds it.
  for k, v in tables.items():
    assert getattr(m.diffusion, k).dtype == np.float64
    np.testing.assert_array_equal(getattr(m.diffusion, k), v)
  assert not any(v.shape == (6,) and "unet" not in v.path for v in m.variables)
  # The averages are checkpointed with the optimizer by the harness.
  path = trainer.manager.save(checkpoint_number=2)
  names = [n for n, _ in tf.train.list_variables(path)]
  assert sum(n.startswith("optimizer/_variables/") for n in names) == 3 * len(variables)


def test_ema_weights_needs_an_ema_optimizer():
  with pytest.raises(ValueError, match="use_ema"):
    with model_lib.ema_weights(keras.optimizers.Adam(), []):
      pass


# ----------------------------------------------------------------------------- flow


def test_flow_model_log_prob_counts_the_logit_jacobian_and_bits_per_dim():
  alpha = 0.05
  m = model_lib.FlowModel(image_shape=(4, 4, 1), num_couplings=4, hidden_units=8, logit_alpha=alpha)
  _randomize(m, scale=0.2)
  x = tf.constant(np.random.default_rng(1).uniform(0.01, 0.99, (3, 4, 4, 1)), tf.float32)
  density = m.log_prob(x)
  p = alpha + (1 - 2 * alpha) * x.numpy().reshape(3, 16)
  y = np.log(p / (1 - p))
  logit_log_det = np.sum(np.log((1 - 2 * alpha) / (p * (1 - p))), axis=1)
  np.testing.assert_allclose(density.logit_log_det.numpy(), logit_log_det, rtol=1e-5)
  np.testing.assert_allclose(
    density.log_prob_logit_space.numpy(),
    m.flow.log_prob(tf.constant(y, tf.float32)).numpy(),
    rtol=1e-4,
  )
  np.testing.assert_allclose(
    density.log_prob.numpy(), density.log_prob_logit_space.numpy() + logit_log_det, rtol=1e-5
  )
  loss = m.loss_terms(_images(3, (4, 4, 1)))
  np.testing.assert_allclose(
    loss.bits_per_dim.numpy(),
    likelihood.bits_per_dim(loss.nll.numpy(), 16, offset_bits=8.0),
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    loss.bits_per_dim.numpy(), loss.nll.numpy() / (16 * math.log(2)) + 8, rtol=1e-6
  )
  samples = m.sample(5, seed=3)
  assert samples.shape == (5, 4, 4, 1) and samples.numpy().min() >= 0 and samples.numpy().max() <= 1


def test_flow_model_learns_under_the_harness(tmp_path):
  m = model_lib.FlowModel(image_shape=(4, 4, 1), num_couplings=2, hidden_units=16, logit_alpha=0.05)
  x = np.clip(np.random.default_rng(2).normal(0.7, 0.05, (64, 4, 4, 1)), 0, 1)
  data = tf.data.Dataset.from_tensor_slices(tf.constant(np.round(x * 255) / 255, tf.float32))
  before = float(tf.reduce_mean(m.loss_terms(tf.constant(x, tf.float32)).nll))
  # One checkpoint, at the last of the 60 steps (not one per epoch: saving is not under test).
  config = harness.TrainConfig(
    logdir=str(tmp_path),
    batch_size=16,
    epochs=15,
    progress=False,
    log_every=1000,
    checkpoint_every=1000,
  )
  harness.Trainer(
    config=config,
    strategy=tf.distribute.get_strategy(),
    model=m,
    optimizer=keras.optimizers.Adam(1e-2),
    loss_fn=lambda model, b, ctx: harness.LossOutput(per_example=model.loss_terms(b).nll),
    train_data=data,
  ).fit()
  after = float(tf.reduce_mean(m.loss_terms(tf.constant(x, tf.float32)).nll))
  assert after < before - 5.0


# ----------------------------------------------------------------------------- VAE


def _vae():
  return model_lib.FlowPriorVAE(
    image_shape=(4, 4, 1), latent_dim=3, hidden_units=(16,), prior_couplings=2, prior_hidden_units=8
  )


def test_vae_loss_pieces_and_iwae_bound_above_elbo():
  m = _vae()
  _randomize(m, scale=0.2)
  x = _images(5, (4, 4, 1))
  loss = m.loss_terms(x)
  np.testing.assert_allclose(
    loss.negative_elbo.numpy(), (loss.reconstruction + loss.kl).numpy(), rtol=1e-6
  )
  log_w = m.log_weights(tf.reshape(x, [5, 16]), 7)
  assert log_w.shape == (7, 5)
  est = likelihood.importance_weighted_log_likelihood(
    lambda xx, k: m.log_weights(xx, k), x, num_samples=200, chunk_size=50
  )
  assert np.all(est.log_likelihood.numpy() >= est.elbo.numpy())
  # The continuous Bernoulli decoder is normalised on [0, 1]: its density integrates to 1.
  z = tf.zeros([1, 3])
  grid = np.linspace(0.0005, 0.9995, 1000)
  marginal = m.decode(z).distribution[0, 0]
  np.testing.assert_allclose(np.sum(np.exp(marginal.log_prob(grid).numpy())) / 1000, 1.0, atol=1e-3)
  samples = m.sample(4, seed=1)
  assert samples.shape == (4, 4, 4, 1) and samples.numpy().min() >= 0 and samples.numpy().max() <= 1


def test_vae_prior_is_the_shared_realnvp_flow():
  from diffusion_tf import flows

  m = _vae()
  assert isinstance(m.prior, flows.RealNVPFlow)
  prior_vars = {id(v) for v in m.prior.trainable_variables}
  assert prior_vars <= {id(v) for v in m.trainable_variables}
