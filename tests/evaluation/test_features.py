"""TF1 bilinear resize and `features.extract` (sources, batching, scaling)."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from evaluation import features, image_io, ppl, vgg
from evaluation.resize import resize_bilinear_tf1

SIZES = [
  (32, 32, 299, 299),
  (28, 28, 299, 299),
  (300, 257, 299, 224),
  (1, 5, 3, 7),
  (64, 48, 224, 224),
]


@pytest.mark.parametrize("h, w, out_h, out_w", SIZES)
def test_resize_matches_tf1_resize_bilinear_also_under_xla(h, w, out_h, out_w):
  images = np.random.default_rng(h * w).uniform(0, 255, (2, h, w, 3)).astype(np.float32)
  reference = tf.compat.v1.image.resize_bilinear(
    images, (out_h, out_w), align_corners=False, half_pixel_centers=False
  ).numpy()
  eager = resize_bilinear_tf1(images, (out_h, out_w)).numpy()
  np.testing.assert_array_equal(eager, reference)  # same arithmetic order: bit-identical
  xla = tf.function(lambda x: resize_bilinear_tf1(x, (out_h, out_w)), jit_compile=True)(images)
  np.testing.assert_allclose(xla.numpy(), reference, rtol=0, atol=1e-4)  # FMA rounding only
  if (h, w) != (1, 5):  # TF2's half-pixel resize is a different function
    assert np.abs(tf.image.resize(images, (out_h, out_w)).numpy() - reference).max() > 1.0


@pytest.fixture(scope="module")
def small_vgg():
  return vgg.build_vgg16_fc2(width_divisor=32)


def test_extract_is_batch_size_independent_and_keeps_order(small_vgg):
  images = np.random.default_rng(0).integers(0, 256, (7, 24, 24, 3)).astype(np.uint8)
  outputs = [
    features.extract(small_vgg, images, batch_size=b, progress=False)["fc2"] for b in (1, 3, 7)
  ]
  for other in outputs[1:]:
    np.testing.assert_allclose(other, outputs[0], rtol=1e-5, atol=1e-5 * np.abs(outputs[0]).max())
  single = features.extract(small_vgg, images[4:5], batch_size=1, progress=False)["fc2"]
  np.testing.assert_allclose(single[0], outputs[0][4], rtol=1e-5, atol=1e-6)


def test_extract_sources_agree(small_vgg, tmp_path):
  images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3)).astype(np.uint8)
  folder = tmp_path / "imgs"
  folder.mkdir()
  for i, image in enumerate(images):
    Image.fromarray(image).save(folder / f"{i:03d}.png")
  np.save(tmp_path / "imgs.npy", images)
  want = features.extract(small_vgg, images, batch_size=2, progress=False)["fc2"]
  tol = dict(rtol=1e-5, atol=1e-5 * np.abs(want).max())
  for source in (
    str(folder),
    tmp_path / "imgs.npy",
    images.astype(np.float32) / 255.0,
    tf.data.Dataset.from_tensor_slices(images),
    tf.data.Dataset.from_tensor_slices((images, np.arange(5))).batch(3),
  ):
    got = features.extract(small_vgg, source, batch_size=2, progress=False)["fc2"]
    np.testing.assert_allclose(got, want, **tol)


def test_float_images_are_not_quantised(small_vgg):
  # A textured image on exact 8-bit levels, nudged by a quarter level: quantising would give back
  # the same levels. (The constant image 0.5 used before gave identical features once, in a
  # `make test-fast` run on an AVX2 host: likely every fc2 unit of that random narrow VGG at zero.)
  levels = np.random.default_rng(2).integers(50, 200, (2, 16, 16, 3))
  base = (levels / 255.0).astype(np.float32)
  nudged = base + np.float32(1e-3)  # 0.26 of one 8-bit level
  np.testing.assert_array_equal(np.round(nudged * 255.0), levels)
  a = features.extract(small_vgg, base, batch_size=2, progress=False)["fc2"]
  b = features.extract(small_vgg, nudged, batch_size=2, progress=False)["fc2"]
  assert np.abs(a).max() > 0, "the random test VGG's fc2 is all zero for this image"
  assert np.abs(a - b).max() > 0
  distance = ppl.vgg16_feature_distance(small_vgg)
  d = distance(base, nudged)
  np.testing.assert_allclose(d, ((a - b) ** 2).sum(1), rtol=1e-3, atol=1e-9)


def test_bad_arrays_are_rejected(small_vgg):
  with pytest.raises(image_io.ImageInputError, match="shape"):
    features.extract(small_vgg, np.zeros((2, 8, 8, 4), np.uint8), progress=False)
  with pytest.raises(image_io.ImageInputError, match=r"\[0, 1\]"):
    features.extract(small_vgg, np.full((2, 8, 8, 3), 2.0, np.float32), progress=False)
