"""vampprior_tf's convolution blocks against PyTorch's own layers with the official settings
(jmtomczak/vae_vampprior utils/nn.py, models/PixelHVAE_2level.py): same weights, same outputs.

- GatedConv2d(in, out, k, stride, padding=k//2) of every official encoder layer,
- MaskedConv2d('A' / 'B', ..., 3, 1, 1, bias=False) with the official mask,
- nn.BatchNorm2d(64) defaults (momentum 0.1, eps 1e-5) against our Keras BatchNormalization.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.reference import lazy, requires
from vampprior_tf import layers
from vampprior_tf import model as models

pytestmark = requires("torch")
torch = lazy("torch")


def to_keras_kernel(weight):
  """torch conv weight [out, in, kh, kw] -> Keras [kh, kw, in, out]."""
  return weight.detach().numpy().transpose(2, 3, 1, 0)


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize(
  "in_ch,out_ch,k,stride",
  [(1, 32, 7, 1), (32, 32, 3, 2), (32, 64, 5, 1), (64, 64, 3, 2), (64, 6, 3, 1)],
)
def test_gated_conv_equals_torch_conv_pair_with_official_padding(in_ch, out_ch, k, stride):
  """The q(z2|x) layers of convHVAE_2level on Frey-sized maps (28 x 20 and the halved sizes)."""
  torch.manual_seed(0)
  h = torch.nn.Conv2d(in_ch, out_ch, k, stride, k // 2)
  g = torch.nn.Conv2d(in_ch, out_ch, k, stride, k // 2)
  size = (28, 20) if in_ch == 1 else (14, 10)
  x = np.random.RandomState(0).rand(2, *size, in_ch).astype(np.float32)
  expected = (h(nchw(x)) * torch.sigmoid(g(nchw(x)))).detach().numpy().transpose(0, 2, 3, 1)
  ours = layers.GatedConv2d(out_ch, k, stride)
  ours(x)
  for dense, ref in ((ours.h, h), (ours.g, g)):
    dense.kernel.assign(to_keras_kernel(ref.weight))
    dense.bias.assign(ref.bias.detach().numpy())
  got = ours(x).numpy()
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_equals_torch_conv_with_the_official_mask(mask_type):
  torch.manual_seed(1)
  conv = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
  unmasked = conv.weight.detach().clone()
  mask = torch.ones_like(conv.weight)  # official MaskedConv2d: zero right of / below the centre
  mask[:, :, 1, 1 + (mask_type == "B") :] = 0
  mask[:, :, 2:] = 0
  with torch.no_grad():
    conv.weight *= mask
  x = np.random.RandomState(1).rand(2, 6, 5, 3).astype(np.float32)
  expected = conv(nchw(x)).detach().numpy().transpose(0, 2, 3, 1)
  ours = layers.MaskedConv2D(64, 3, mask_type=mask_type)
  ours(x)
  ours.kernel.assign(to_keras_kernel(unmasked))  # our layer applies its own mask
  np.testing.assert_allclose(ours(x).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_pixelhvae_batchnorm_equals_torch_batchnorm2d_defaults():
  """Three training batches (outputs equal) then inference: running mean equal; running variance equal up to
  PyTorch's unbiased n / (n - 1) factor (n = B H W = 2000 here, so 5e-4 relative), outputs too."""
  torch.manual_seed(2)
  ref = torch.nn.BatchNorm2d(8)  # official: nn.BatchNorm2d(64), defaults
  ours = keras.layers.BatchNormalization(momentum=models.BN_MOMENTUM, epsilon=models.BN_EPSILON)
  rng = np.random.RandomState(2)
  batches = [
    (rng.randn(5, 20, 20, 8) * 0.1 + 1).astype(np.float32) for _ in range(3)
  ]  # var 0.01: eps shows
  for x in batches:  # training mode: normalised by the batch statistics (eps shows here)
    expected = ref.train()(nchw(x)).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(
      ours(tf.constant(x), training=True).numpy(), expected, rtol=1e-4, atol=1e-4
    )
  np.testing.assert_allclose(
    ours.moving_mean.numpy(), ref.running_mean.numpy(), rtol=1e-5, atol=1e-6
  )
  n = 5 * 20 * 20
  np.testing.assert_allclose(ours.moving_variance.numpy(), ref.running_var.numpy(), rtol=1.2 / n)
  x = batches[0]
  expected = ref.eval()(nchw(x)).detach().numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(
    ours(tf.constant(x), training=False).numpy(), expected, rtol=1e-3, atol=1e-3
  )
