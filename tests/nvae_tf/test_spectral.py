"""Power iteration vs numpy SVD; the model's L_SR; spectral normalisation keeps sigma_max ~ 1."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nvae_tf import NVAE, spectral
from tests.nvae_tf.conftest import one_scale_config


def top_sv(matrix) -> float:
  return float(np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)[0])


def test_power_iteration_matches_svd():
  rng = np.random.RandomState(0)
  w = rng.randn(3, 12, 40).astype(np.float32)
  u0 = tf.math.l2_normalize(tf.constant(rng.randn(3, 12).astype(np.float32)), axis=-1)
  u, v = spectral.power_iteration(w, u0, num_iterations=200)
  sigma = spectral.top_singular_value(w, u, v).numpy()
  np.testing.assert_allclose(sigma, [top_sv(m) for m in w], rtol=1e-4)


def test_new_state_is_warm_started_with_the_official_40_iterations():
  """Singular values (1, 0.9, 0.9, ...): after k iterations from a random u0 the error of u shrinks
  like 0.9^(2k); 40 iterations (1e-4) align u and v with the top singular pair, 4 (0.4) do not."""
  rng = np.random.RandomState(3)
  left, _ = np.linalg.qr(rng.randn(6, 6))
  right, _ = np.linalg.qr(rng.randn(9, 9))
  w = (left @ np.diag([1.0] + [0.9] * 5) @ right[:6]).astype(np.float32)  # [6, 9]
  keras.utils.set_random_seed(0)
  state = spectral.PowerIterationState(np.stack([w, 2.0 * w]))  # N = 2 matrices of one shape
  for n in range(2):
    assert abs(float(np.dot(state.u.numpy()[n], left[:, 0]))) > 0.9999
    assert abs(float(np.dot(state.v.numpy()[n], right[0]))) > 0.9999
  assert spectral.NUM_INITIAL_POWER_ITERATIONS == 40  # NVAE official: 10 * num_power_iter


def test_kernel_matrix_has_the_singular_values_of_pytorch_layout():
  rng = np.random.RandomState(1)
  kernel = rng.randn(3, 3, 5, 7).astype(np.float32)  # Keras [kh, kw, C_in, C_out]
  torch_layout = kernel.transpose(3, 2, 0, 1).reshape(7, -1)  # (C_out, C_in*kh*kw)
  ours = spectral.kernel_matrix(tf.constant(kernel)).numpy()
  assert ours.shape == (7, 45)
  np.testing.assert_allclose(
    np.linalg.svd(ours, compute_uv=False), np.linalg.svd(torch_layout, compute_uv=False), rtol=1e-5
  )
  depthwise = rng.randn(5, 5, 6, 1).astype(np.float32)
  assert spectral.kernel_matrix(tf.constant(depthwise), depthwise=True).shape == (6, 25)


def test_spectral_regulariser_equals_sum_of_top_singular_values():
  keras.utils.set_random_seed(0)
  model = NVAE(one_scale_config(spectral="sr"))
  expected = sum(top_sv(conv.matrix().numpy()) for conv in model.conv_layers)
  # After the 40-iteration warm start + one 4-iteration training update: u^T W v <= sigma_max for
  # unit u, v, and close to it; more updates (weights unchanged) only get closer.
  first = float(model.spectral_loss(training=True))
  assert expected * 0.99 <= first <= expected * (1 + 1e-5)
  for _ in range(20):
    later = float(model.spectral_loss(training=True))
  assert first - 1e-4 <= later <= expected * (1 + 1e-5)
  assert expected - later <= 0.5 * (expected - first) + 1e-4
  # u / v are persistent, non-trainable model variables (checkpointed with it).
  names = [v.path for v in model.non_trainable_variables]
  assert any("sr_state" in n and n.endswith("/u") for n in names)
  assert all("sr_state" not in v.path for v in model.trainable_variables)
  # The gradient flows into the kernels (u v^T), not into u / v.
  with tf.GradientTape() as tape:
    loss = model.spectral_loss(training=False)
  grads = tape.gradient(loss, model.trainable_variables)
  assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


def test_depthwise_convs_are_regularised_too():
  model = NVAE(one_scale_config(spectral="sr"))
  assert any(c.depthwise for c in model.conv_layers)
  shapes = {tuple(c.matrix().shape) for c in model.conv_layers if c.depthwise}
  assert all(cols == 25 for _, cols in shapes)  # 5x5 depthwise: (C, 25)


def test_spectral_normalisation_keeps_top_singular_value_near_one(digits):
  """Train a tiny SN model a few steps, then every conv's effective kernel has sigma_max ~ 1."""
  keras.utils.set_random_seed(0)
  model = NVAE(one_scale_config(spectral="sn"))
  optimizer = keras.optimizers.Adam(5e-3)
  x = tf.constant(digits[:8])

  def step():  # eager: cheaper than tracing for a handful of steps
    with tf.GradientTape() as tape:
      out = model(x, training=True)
      loss = tf.reduce_mean(-out.recon_log_prob + tf.reduce_sum(out.kl, axis=1))
    optimizer.apply_gradients(
      zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    )

  for _ in range(6):
    step()
  sigmas = []
  for conv in model.conv_layers:
    w = conv.matrix()
    effective = w / conv.spectral_state.sigma(w[None])[0]
    sigmas.append(top_sv(effective.numpy()))
  assert len(sigmas) == len(model.conv_layers) > 20  # 26 convs, 2 of them depthwise
  # The persistent 4-iteration power iteration lags slightly behind changing weights (its estimate
  # is a lower bound of sigma_max), so the normalised kernels sit at or a little above 1.
  assert np.median(sigmas) == pytest.approx(1.0, abs=0.02)
  assert min(sigmas) > 0.97 and max(sigmas) < 1.1, sigmas
