"""Feature networks: Inception-2015 GraphDef loading, VGG-16 fc2, weight resolution errors."""

import tarfile

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from evaluation import features, inception, networks, vgg
from tests.evaluation import graphs

DIVISOR = 16


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
  monkeypatch.setenv(networks.CACHE_DIR_ENV, str(tmp_path / "cache"))
  monkeypatch.delenv(networks.INCEPTION_PATH_ENV, raising=False)
  monkeypatch.delenv(networks.VGG16_PATH_ENV, raising=False)
  monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("inception") / inception_pb_name()
  tensors = graphs.write_inception_graph_def(path, width_divisor=DIVISOR)
  return path, tensors


def inception_pb_name():
  return networks.INCEPTION_PB


def test_inception_architecture_has_the_published_shape():
  assert len(inception.conv_units()) == 94  # conv layers of the 2015 graph
  model = inception.build_inception_2015()
  out = model.output
  assert out["pool_3"].shape[-1] == 2048 and out["logits"].shape[-1] == 1008
  # The last block's pool branch is a max pool, the others average pools (graph quirk).
  assert isinstance(model.get_layer("mixed_10.tower_2.pool"), keras.layers.MaxPooling2D)
  assert isinstance(model.get_layer("mixed_9.tower_2.pool"), keras.layers.AveragePooling2D)
  assert not model.get_layer("softmax.logits").use_bias


def test_graph_def_loader_maps_every_tensor_and_matches_the_graph(graph_file):
  path, tensors = graph_file
  model = networks.inception_network(path, download=False)
  # Every conv/bn tensor and softmax/weights landed in the model; only non-weights are left.
  used = {
    n
    for n in tensors
    if n.endswith(("conv2d_params", "beta", "gamma", "moving_mean", "moving_variance"))
    or n == "softmax/weights"
  }
  assert len(used) == 94 * 5 + 1
  np.testing.assert_array_equal(
    model.get_layer("mixed_8.tower_1.conv_2.conv").kernel.numpy(),
    tensors["mixed_8/tower_1/conv_2/conv2d_params"],
  )
  np.testing.assert_array_equal(
    model.get_layer("mixed_4.tower.conv.batchnorm").moving_variance.numpy(),
    tensors["mixed_4/tower/conv/batchnorm/moving_variance"],
  )
  rng = np.random.default_rng(1)
  rgb = rng.integers(0, 256, (2, 37, 29, 3)).astype(np.float32)
  ours = features.extract(
    model, rgb.astype(np.uint8), batch_size=2, progress=False, jit_compile=False
  )  # the weight mapping is under test, not XLA
  pool3, logits = graphs.evaluate_graph_def(path, rgb, ["pool_3/_reshape", "softmax/logits/MatMul"])
  np.testing.assert_allclose(ours["pool_3"], pool3, rtol=1e-4, atol=1e-4 * np.abs(pool3).max())
  np.testing.assert_allclose(ours["logits"], logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
  # Grey input is replicated to RGB.
  grey = rng.integers(0, 256, (2, 20, 20, 1)).astype(np.float32)
  np.testing.assert_allclose(
    model(grey)["pool_3"].numpy(), model(np.repeat(grey, 3, -1))["pool_3"].numpy(), rtol=1e-6
  )
  # Converted once: a cached .npz now exists and is used by the next call.
  cached = list(networks.cache_dir().glob("inception_2015_*.npz"))
  assert len(cached) == 1
  again = networks.inception_network(path, download=False)
  np.testing.assert_array_equal(
    again.get_layer("softmax.logits").kernel.numpy(), tensors["softmax/weights"]
  )


def test_inception_accepts_the_tgz(graph_file, tmp_path):
  path, tensors = graph_file
  tgz = tmp_path / "inception-2015-12-05.tgz"
  with tarfile.open(tgz, "w:gz") as archive:
    archive.add(path, arcname=networks.INCEPTION_PB)
  model = networks.inception_network(str(tgz), download=False)
  np.testing.assert_array_equal(
    model.get_layer("conv.conv").kernel.numpy(), tensors["conv/conv2d_params"]
  )


def _swap_join_inputs(graph):
  node = next(n for n in graph.node if n.name == "mixed_4/join")
  node.input[1], node.input[2] = node.input[2], node.input[1]


def _avg_pool_in_last_block(graph):
  next(n for n in graph.node if n.name == "mixed_10/tower_2/pool").op = "AvgPool"


def _drop_tensor(graph):
  index = next(
    i for i, n in enumerate(graph.node) if n.name == "mixed_7/tower/conv_1/conv2d_params"
  )
  del graph.node[index]


def _other_epsilon(graph):
  next(n for n in graph.node if n.name == "conv_2/batchnorm").attr["variance_epsilon"].f = 1e-5


@pytest.mark.parametrize(
  "mutate, message",
  [
    (_swap_join_inputs, "concat order"),
    (_avg_pool_in_last_block, "expected MaxPool"),
    (_drop_tensor, "missing"),
    (_other_epsilon, "variance_epsilon"),
  ],
)
def test_graph_def_mismatch_is_an_error(tmp_path, mutate, message):
  path = tmp_path / "bad.pb"
  graphs.write_inception_graph_def(path, width_divisor=32, mutate=mutate)
  with pytest.raises(inception.GraphDefMismatchError, match=message):
    inception.read_graph_def_weights(str(path))


def test_missing_weights_raise_a_clear_error(tmp_path, monkeypatch):
  with pytest.raises(networks.WeightsUnavailableError, match=networks.INCEPTION_PATH_ENV):
    networks.inception_network(download=False)
  monkeypatch.setenv(networks.INCEPTION_PATH_ENV, str(tmp_path / "nowhere.pb"))
  with pytest.raises(networks.WeightsUnavailableError, match="nowhere.pb"):
    networks.inception_network()
  with pytest.raises(networks.WeightsUnavailableError, match=networks.VGG16_PATH_ENV):
    networks.vgg16_network(download=False)


def _keras_style_vgg_file(path, *, width_divisor):
  """A weights file written by Keras's own legacy HDF5 writer, with the classifier layer."""
  body = vgg.build_vgg16_fc2(width_divisor=width_divisor)
  fc2 = body.get_layer("fc2").output
  predictions = keras.layers.Dense(1000, activation="softmax", name="predictions")(fc2)
  full = keras.Model(body.input, predictions)
  with h5py.File(path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, full)
  return body


def test_vgg16_loads_a_keras_h5_file(tmp_path):
  path = tmp_path / networks.VGG16_FILE
  source = _keras_style_vgg_file(path, width_divisor=DIVISOR)
  model = networks.vgg16_network(str(tmp_path), download=False)  # folder lookup
  images = np.random.default_rng(0).uniform(0, 1, (3, 40, 40, 3)).astype(np.float32)
  got = features.extract(model, images, batch_size=3, progress=False)["fc2"]
  want = source(images * 255.0)["fc2"].numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  assert got.shape == (3, vgg.FC_WIDTH // DIVISOR) and (got >= 0).all()  # fc2 after ReLU


def test_vgg16_is_keras_vgg16_fc2_with_its_preprocessing():
  ours = vgg.build_vgg16_fc2()
  reference = keras.applications.VGG16(weights=None, include_top=True)
  for layer in reference.layers:
    if layer.weights and layer.name != vgg.CLASSIFIER_LAYER:
      ours.get_layer(layer.name).set_weights(layer.get_weights())
  fc2_reference = keras.Model(reference.input, reference.get_layer("fc2").output)
  image = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
  want = fc2_reference(keras.applications.vgg16.preprocess_input(image.copy())).numpy()
  got = ours(image)["fc2"].numpy()
  assert got.shape == (1, 4096)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
