"""Gated layers, He initialisation and the PixelCNN causal masks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vampprior_tf import layers


def test_gated_dense_is_linear_times_sigmoid_gate_with_he_init():
  layer = layers.GatedDense(400)
  x = np.random.RandomState(0).randn(5, 300).astype(np.float32)
  out = layer(x).numpy()
  h = x @ layer.h.kernel.numpy() + layer.h.bias.numpy()
  g = 1 / (1 + np.exp(-(x @ layer.g.kernel.numpy() + layer.g.bias.numpy())))
  np.testing.assert_allclose(out, h * g, rtol=1e-4, atol=1e-5)
  # Official he_init: N(0, 2 / fan_in), not truncated.
  std = layer.h.kernel.numpy().std()
  assert abs(std - np.sqrt(2 / 300)) < 0.03 * np.sqrt(2 / 300)


def test_gated_conv_shapes_follow_the_official_strides():
  x = tf.zeros((2, 28, 20, 1))
  assert layers.GatedConv2d(32, 3, 2)(x).shape == (2, 14, 10, 32)
  assert layers.GatedConv2d(6, 7)(x).shape == (2, 28, 20, 6)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_sees_only_earlier_pixels(mask_type):
  layer = layers.MaskedConv2D(4, 3, mask_type=mask_type)
  x = tf.Variable(tf.random.normal((1, 5, 5, 2)))
  with tf.GradientTape() as tape:
    out = layer(x)[0, 2, 2]  # one output pixel
  grad = np.abs(tape.gradient(out, x).numpy()[0]).sum(-1)  # [5, 5]
  visible = grad > 0
  expected = np.zeros((5, 5), bool)
  expected[1, 1:4] = True  # the row above (3x3 kernel)
  expected[2, 1] = True  # left neighbour
  expected[2, 2] = mask_type == "B"
  np.testing.assert_array_equal(visible, expected)


def test_causal_mask_rejects_unknown_type():
  with pytest.raises(ValueError, match="mask_type"):
    layers.causal_mask(3, 1, 1, "C")


def test_stride_two_gated_conv_pads_every_side_like_pytorch():
  """Official GatedConv2d(in, out, 3, 2, 1): one zero row/column on EVERY side, so output (i, j)
  is centred on input (2i, 2j). Keras 'same' pads only bottom/right: centre (2i + 1, 2j + 1).
  With h = the centre tap and a zero gate (sigmoid 0 = 1/2): out = x[::2, ::2] / 2."""
  layer = layers.GatedConv2d(1, 3, 2)
  x = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1)
  layer(x)
  centre = np.zeros((3, 3, 1, 1), np.float32)
  centre[1, 1] = 1.0
  layer.h.kernel.assign(centre)
  layer.g.kernel.assign(np.zeros_like(centre))
  for conv in (layer.h, layer.g):
    conv.bias.assign(np.zeros(1, np.float32))
  out = layer(x).numpy()[0, :, :, 0]
  np.testing.assert_array_equal(out, x[0, ::2, ::2, 0] / 2)
  # 7x7 with padding 3, stride 1: the same size (official q(z2|x) first layer).
  assert layers.GatedConv2d(4, 7)(x).shape == (1, 6, 6, 4)


def test_convolutions_start_as_pytorch_default_init():
  """nn.Conv2d default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in k^2
  (official convs keep it): 3 x 5 x 5 = 75 -> bound 0.11547, std bound / sqrt(3) = 0.06667."""
  keras.utils.set_random_seed(0)
  layer = layers.GatedConv2d(64, 5)
  layer(tf.zeros((1, 8, 8, 3)))
  masked = layers.MaskedConv2D(64, 5, mask_type="B", use_bias=True)
  masked(tf.zeros((1, 8, 8, 3)))
  for kernel, bias in (
    (layer.h.kernel, layer.h.bias),
    (layer.g.kernel, layer.g.bias),
    (masked.kernel, masked.bias),
  ):
    w, b = kernel.numpy(), bias.numpy()
    assert np.abs(w).max() <= 0.11547 and np.abs(b).max() <= 0.11547
    np.testing.assert_allclose(w.std(), 0.06667, rtol=0.05)  # 4800 draws: s.e. of the std ~1%
    np.testing.assert_allclose(b.std(), 0.06667, rtol=0.3)  # 64 draws
