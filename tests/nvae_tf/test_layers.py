"""Cells (skip + 0.1 * cell), BN settings, weight norm, resampling, autoregressive (IAF) cells."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nvae_tf import NVAE
from nvae_tf import layers as L
from tests.nvae_tf.conftest import tiny_config


def test_cell_output_is_skip_plus_a_tenth_of_the_branch():
  keras.utils.set_random_seed(0)
  x = tf.random.normal((2, 8, 8, 6))
  down = L.residual_cell(6, downsample=True)
  branch = down.se(down.ops[1](down.ops[0](x)))
  np.testing.assert_allclose(down(x).numpy(), (down.skip(x) + 0.1 * branch).numpy(), atol=1e-5)
  assert down(x).shape == (2, 4, 4, 12)
  up = L.inverted_residual_cell(6, expansion=3, upsample=True)
  branch = up.se(up.ops[0](x))
  np.testing.assert_allclose(up(x).numpy(), (up.skip(x) + 0.1 * branch).numpy(), atol=1e-5)
  assert up(x).shape == (2, 16, 16, 3)
  normal = L.residual_cell(6)
  branch = normal.se(normal.ops[1](normal.ops[0](x)))
  np.testing.assert_allclose(normal(x).numpy(), (x + 0.1 * branch).numpy(), atol=1e-5)


def test_batch_norm_settings_everywhere():
  model = NVAE(tiny_config())
  assert model.bn_layers
  for bn in model.bn_layers:
    assert bn.momentum == 0.95 and bn.epsilon == 1e-5


def test_weight_norm_sets_channel_norms_and_torch_padding():
  conv = L.Conv2D(3, 5, 3, stride=2)
  w = conv.weight().numpy()
  np.testing.assert_allclose(
    np.sqrt((w**2).sum(axis=(0, 1, 2))), np.exp(conv.log_weight_norm.numpy()), rtol=1e-3
  )
  x = tf.random.normal((1, 8, 8, 3))
  # PyTorch padding=1, stride 2: pad 1 on every side, then a VALID conv.
  ref = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), w, 2, "VALID") + conv.bias
  np.testing.assert_allclose(conv(x).numpy(), ref.numpy(), atol=1e-5)
  assert conv(x).shape == (1, 4, 4, 5)


def test_bilinear_upsampling_is_align_corners():
  x = tf.random.normal((2, 4, 5, 3))
  ref = tf.compat.v1.image.resize_bilinear(x, (8, 10), align_corners=True)
  np.testing.assert_allclose(L.upsample_bilinear(x).numpy(), ref.numpy(), atol=1e-5)


def test_factorized_reduce_uses_the_four_pixel_phases():
  x = tf.random.normal((1, 6, 6, 4))
  fr = L.FactorizedReduce(4, 8)
  out = fr(x).numpy()
  assert out.shape == (1, 3, 3, 8)
  s = tf.nn.silu(x)
  np.testing.assert_allclose(out[..., 2:4], fr.convs[1](s[:, 1:, 1:, :]).numpy(), atol=1e-5)


def raster_index(h, w, c, mirror):
  """Position of (row, col, channel) in the autoregressive order of a (mirrored) cell."""
  r, q, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
  if mirror:
    r, q = h - 1 - r, w - 1 - q
  return ((r * w + q) * c + ch).reshape(-1)


def jacobian(layer, z):
  with tf.GradientTape() as tape:
    tape.watch(z)
    out, _ = layer(z)
  return tape.jacobian(out, z).numpy().reshape(z.shape.num_elements(), z.shape.num_elements())


@pytest.mark.parametrize("mirror", [False, True])
def test_iaf_cell_is_autoregressive_with_unit_diagonal(mirror):
  keras.utils.set_random_seed(0)
  cell = L.AutoregressiveShift(3, mirror=mirror)
  # Larger mu weights so that every allowed dependency is numerically visible.
  cell.conv_mu.log_weight_norm.assign(cell.conv_mu.log_weight_norm + 3.0)
  z = tf.random.normal((1, 3, 4, 3))
  jac = jacobian(cell, z)
  order = raster_index(3, 4, 3, mirror)
  permuted = jac[np.argsort(order)][:, np.argsort(order)]  # rows/cols in autoregressive order
  np.testing.assert_allclose(np.triu(permuted, 1), 0.0, atol=1e-7)  # no dependence on later dims
  np.testing.assert_allclose(np.diag(permuted), 1.0, atol=1e-7)  # z' = z - mu(z_<)
  assert np.abs(np.tril(permuted, -1)).max() > 1e-3  # and it is not trivial


def test_paired_iaf_is_volume_preserving():
  keras.utils.set_random_seed(1)
  flow = L.PairedAutoregressiveFlow(2)
  z = tf.random.normal((1, 3, 3, 2))
  jac = jacobian(flow, z)
  sign, logdet = np.linalg.slogdet(jac)
  assert sign > 0 and abs(logdet) < 1e-4
  _, log_det = flow(z)
  np.testing.assert_array_equal(log_det.numpy(), 0.0)


def trained_batch_norms(layer, seed):
  """Moving statistics, gamma and beta away from their initial values (as after training)."""
  rng = np.random.default_rng(seed)
  for v in layer.variables:
    if v.path.endswith(("moving_mean", "beta")):
      v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))
    elif v.path.endswith(("moving_variance", "gamma")):
      v.assign(rng.uniform(0.3, 3.0, v.shape).astype(np.float32))


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_inference_folds_batch_norm_into_the_convolutions(upsample, spectral_norm):
  """At inference the inverted residual runs three convolutions with folded BN; the same function
  as its layers one by one with BN in inference mode: y = gamma (x - mean) / sqrt(var + eps) + beta."""
  keras.utils.set_random_seed(0)
  layer = L.InvertedResidual(6, 4, expansion=3, upsample=upsample, spectral_norm=spectral_norm)
  trained_batch_norms(layer, seed=1)
  x = tf.random.normal((2, 5, 5, 6))

  def bn(b, h):  # inference batch norm, written out
    return b.gamma * (h - b.moving_mean) / tf.sqrt(b.moving_variance + 1e-5) + b.beta

  h = L.upsample_nearest(x) if upsample else x
  h = tf.nn.silu(bn(layer.bn_expand, layer.expand(bn(layer.bn_in, h))))
  h = tf.nn.silu(bn(layer.bn_depthwise, layer.depthwise(h)))
  want = bn(layer.bn_out, layer.project(h)).numpy()
  got = layer(x, training=False).numpy()
  assert got.shape == ((2, 10, 10, 4) if upsample else (2, 5, 5, 4))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
  assert np.abs(want).max() > 1.0  # BN statistics and weights that matter


def test_upsampling_skip_runs_its_convolution_first_at_inference():
  """conv1x1(upsample(x)) = upsample(conv1x1(x)) without a bias: the inference order."""
  keras.utils.set_random_seed(0)
  skip = L.UpsampleSkip(6)
  x = tf.random.normal((2, 4, 5, 6))
  want = skip.conv(L.upsample_bilinear(x)).numpy()
  np.testing.assert_allclose(skip(x, training=False).numpy(), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(skip(x, training=True).numpy(), want, rtol=1e-5, atol=1e-6)


def test_depthwise_padding_inside_the_kernel_gives_the_same_training_step(digits, monkeypatch):
  """Depthwise convolutions pad inside the kernel (SAME at stride 1) instead of with a Pad op:
  the same loss and gradients of a whole training step (bit for bit on the Xeon it was measured
  on; float32 rounding allowed here)."""

  def step():
    keras.utils.set_random_seed(0)
    model = NVAE(tiny_config(), seed=0)
    x = tf.constant(digits[:4])
    with tf.GradientTape() as tape:
      out = model(x, training=True)
      loss = -tf.reduce_mean(out.log_weight)
    return loss.numpy(), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]

  loss, grads = step()
  monkeypatch.setattr(L.Conv2D, "pad_inside", False)
  want_loss, want_grads = step()
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  assert len(grads) == len(want_grads) > 50
  for g, want in zip(grads, want_grads):
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-7)
