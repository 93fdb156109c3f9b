"""NVAE model: shapes of the paper structure, IW bound vs ELBO, BN statistics, IAF path, overfitting."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from evaluation import likelihood
from nvae_tf import NVAE, groups_per_scale, optim
from nvae_tf import layers as L
from tests.nvae_tf.conftest import one_scale_config, tiny_config


def test_paper_structure_shapes_at_every_scale():
  """The official MNIST structure (2 pre/post blocks x 3 cells, [10, 5] groups, 2 cells per group,
  20 latents) with 4 channels instead of 32 so that it builds quickly."""
  config = tiny_config(
    num_channels_enc=4,
    num_channels_dec=4,
    num_groups_per_scale=10,
    num_latent_per_group=20,
    num_cell_per_cond_enc=2,
    num_cell_per_cond_dec=2,
    num_preprocess_cells=3,
    num_postprocess_cells=3,
    decoder_expansion=6,
    postprocess_expansion=3,
  )
  assert groups_per_scale(config) == [10, 5]
  model = NVAE(config)
  assert model.groups_dec == [5, 10] and model.num_groups == 15
  assert model.latent_shapes() == [(4, 4, 20)] * 5 + [(8, 8, 20)] * 10
  assert len(model.preprocess) == 6 and len(model.postprocess) == 6
  assert all(len(cells) == 2 for cells in model.encoder_cells)
  assert [len(c) for c in model.decoder_cells] == [0] + [2] * 14  # the first group has no cells
  assert len(model.encoder_combiners) == 14 and len(model.decoder_samplers) == 14
  assert model.prior_ftr0.shape == (4, 4, 32)  # 4 channels x 2^3
  x = tf.cast(tf.random.uniform((2, 28, 28, 1)) < 0.5, tf.float32)
  h = model.stem(tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]]))
  assert h.shape == (2, 32, 32, 4)
  for cell, shape in zip(
    model.preprocess, [(32, 32, 4)] * 2 + [(16, 16, 8)] + [(16, 16, 8)] * 2 + [(8, 8, 16)]
  ):
    h = cell(h)
    assert h.shape[1:] == shape
  top, features = model._encode(x, training=False)
  assert top.shape == (2, 4, 4, 32)
  assert [f.shape[1:] for f in features] == [(4, 4, 32)] * 4 + [(8, 8, 16)] * 10
  out = model(x, training=False)
  assert out.logits.shape == (2, 32, 32, 1)
  assert out.kl.shape == (2, 15) and out.kl_per_channel.shape == (2, 15, 20)
  assert out.recon_log_prob.shape == (2,) and out.log_q.shape == (2,)
  assert np.all(out.kl.numpy() >= -1e-4)
  np.testing.assert_allclose(model.kl_balance_alphas(), [1.0] * 5 + [2.0] * 10)
  samples = model.sample(3, temperature=0.7)
  assert samples.shape == (3, 28, 28, 1)
  assert float(tf.reduce_min(samples)) >= 0.0 and float(tf.reduce_max(samples)) <= 1.0


def test_importance_weighted_bound_is_at_least_the_elbo(digits):
  keras.utils.set_random_seed(0)
  model = NVAE(tiny_config(), seed=1)
  x = tf.constant(digits[:4])
  log_w = model.log_weights(x, 100)  # [K, B]
  assert log_w.shape == (100, 4)
  iwae = likelihood.iwae_bound(log_w).numpy()
  # The analytic-KL ELBO of 10 independent posterior samples (one forward pass of the batch tiled
  # 10 times, sample-major as log_weights) agrees with the mean log-weight ...
  out = model(tf.tile(x, [10, 1, 1, 1]))
  elbos = tf.reshape(out.recon_log_prob - tf.reduce_sum(out.kl, 1), [10, 4]).numpy()
  mean_log_w, se = log_w.numpy().mean(0), log_w.numpy().std(0) / 10.0
  assert np.all(np.abs(elbos.mean(0) - mean_log_w) < 4 * se + 1.0)
  # ... and IWAE_100 lies above both, per example.
  assert np.all(iwae >= mean_log_w) and np.all(iwae >= elbos.mean(0))


def test_log_weights_run_the_encoder_once_and_equal_the_tiled_forward_pass(digits):
  """log_weights tiles the bottom-up pass's outputs instead of the images: the same log-weights as
  the whole network on the batch tiled K times, from the same noise-generator state."""
  model = NVAE(tiny_config(), seed=3)
  x = tf.constant(digits[:3])
  model(x)  # built; the BN moving statistics are those of a trained model in what follows
  for bn in (v for v in model.variables if "moving_mean" in v.path):
    bn.assign(tf.random.stateless_normal(bn.shape, [0, 1]) * 0.1)  # not the identity: x-dependent
  state = model.seed_generator.state.numpy()
  log_w = model.log_weights(x, 4).numpy()  # [K, B]
  model.seed_generator.state.assign(state)
  want = tf.reshape(model(tf.tile(x, [4, 1, 1, 1])).log_weight, [4, 3]).numpy()
  np.testing.assert_allclose(log_w, want, rtol=1e-5, atol=1e-3)
  assert np.std(log_w, axis=0).min() > 1e-3  # the K samples differ (the noise is not shared)


def test_log_weights_keep_examples_apart(digits):
  model = NVAE(tiny_config(), seed=2)
  model.image_head.conv.bias.assign(tf.fill([1], -5.0))  # the decoder now favours black pixels
  blank = np.zeros_like(digits[:1])
  log_w = model.log_weights(tf.constant(np.concatenate([digits[:1], blank])), 5).numpy()  # [5, 2]
  assert np.all(log_w[:, 1] > log_w[:, 0] + 100)  # column 1 is the blank image, for every sample
  log_w = model.log_weights(tf.constant(np.concatenate([blank, digits[:1]])), 5).numpy()
  assert np.all(log_w[:, 0] > log_w[:, 1] + 100)


def test_batch_norm_moving_statistics_change_in_training_only(digits):
  model = NVAE(tiny_config())
  stats = lambda: [
    (bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()) for bn in model.bn_layers
  ]
  before = stats()
  model(tf.constant(digits[:8]), training=False)
  assert all(
    np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(before, stats())
  )
  model(tf.constant(digits[:8]), training=True)
  # Every BN layer runs in training mode: its moving variance moves (a BN after a bias-free 1x1
  # conv of BN output sees batch means of exactly 0, so its moving mean may stay at 0).
  moved = [not np.allclose(a[1], b[1]) for a, b in zip(before, stats())]
  assert all(moved), f"{moved.count(False)} of {len(moved)} BN layers did not update"
  assert (
    sum(not np.allclose(a[0], b[0], atol=1e-6) for a, b in zip(before, stats())) > len(moved) // 2
  )


def test_readjust_bn_moves_decoder_statistics_only(digits):
  """Official `set_bn`: sampling in training mode re-estimates BN statistics; weights stay put."""
  model = NVAE(tiny_config())
  model(tf.constant(digits[:8]), training=False)
  weights = [w.numpy().copy() for w in model.trainable_weights]
  variances = [bn.moving_variance.numpy().copy() for bn in model.bn_layers]
  model.readjust_bn(num_iterations=2, batch_size=4, temperature=0.8)
  moved = [
    not np.allclose(v, bn.moving_variance.numpy()) for v, bn in zip(variances, model.bn_layers)
  ]
  assert any(moved) and not all(moved)  # decoder-side BN layers move; encoder ones see no data
  assert all(np.array_equal(w, v.numpy()) for w, v in zip(weights, model.trainable_weights))


def test_flows_use_the_single_sample_kl(digits):
  model = NVAE(tiny_config(num_flows=1), seed=3)
  assert len(model.flows[0]) == 1
  out = model(tf.constant(digits[:3]), training=True)
  np.testing.assert_allclose(
    tf.reduce_sum(out.kl, 1).numpy(), (out.log_q - out.log_p).numpy(), rtol=1e-4, atol=1e-2
  )
  assert np.all(np.isfinite(model.log_weights(tf.constant(digits[:2]), 3).numpy()))


def test_decode_noise_is_deterministic_and_checks_groups():
  model = NVAE(tiny_config())
  noise = model.sample_noise(2)
  a = model.decode_noise(noise).numpy()
  np.testing.assert_array_equal(a, model.decode_noise(noise).numpy())
  with pytest.raises(ValueError, match="groups"):
    model.decode_noise(noise[:-1])


@pytest.mark.slow
def test_tiny_model_overfits_64_digits(digits):
  keras.utils.set_random_seed(0)
  model = NVAE(one_scale_config(), seed=0)
  optimizer = optim.CoupledAdamax(learning_rate=1e-2)
  x = tf.constant(digits)
  model(x[:2])  # variables (model, then optimizer) before tracing: one trace instead of two
  optimizer.build(model.trainable_variables)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      out = model(x, training=True)
      loss = tf.reduce_mean(-out.recon_log_prob + tf.reduce_sum(out.kl, axis=1))
    optimizer.apply_gradients(
      zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    )
    return loss

  losses = [float(step()) for _ in range(30)]  # ~716 -> ~313 nats on this setup
  start, end = np.mean(losses[:3]), np.mean(losses[-5:])
  assert end < 0.55 * start, (start, end)


def test_log_weights_with_folded_batch_norm_equal_the_layer_by_layer_network(digits, monkeypatch):
  """The test NLL's network (BN folded into the convolutions) against the same model with every
  BN applied on its own, from the same noise: equal up to float32 rounding."""
  model = NVAE(tiny_config(), seed=3)
  x = tf.constant(digits[:3])
  model(x)
  rng = np.random.default_rng(0)
  for v in model.variables:
    if v.path.endswith(("moving_mean", "beta")):
      v.assign(rng.normal(0.0, 0.3, v.shape).astype(np.float32))
    elif v.path.endswith(("moving_variance", "gamma")):
      v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
  state = model.seed_generator.state.numpy()
  folded = model.log_weights(x, 4).numpy()  # [K, B]
  monkeypatch.setattr(L.InvertedResidual, "fold_batch_norm", False)
  model.seed_generator.state.assign(state)
  want = model.log_weights(x, 4).numpy()
  np.testing.assert_allclose(folded, want, rtol=1e-5, atol=1e-3)
