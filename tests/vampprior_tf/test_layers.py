"""Gated layers, He initialisation and the PixelCNN causal masks."""

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
  expected[1, 1:4] = True        # the row above (3x3 kernel)
  expected[2, 1] = True          # left neighbour
  expected[2, 2] = mask_type == "B"
  np.testing.assert_array_equal(visible, expected)


def test_causal_mask_rejects_unknown_type():
  with pytest.raises(ValueError, match="mask_type"):
    layers.causal_mask(3, 1, 1, "C")
