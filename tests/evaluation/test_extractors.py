"""A feature extractor of one's own (`evaluation.features.register_extractor`): FID and KID through
`evaluation.api` and through the commands, and precision/recall through the API, equal NumPy/SciPy
on that network's features; the protocol record names the extractor, so statistics of two
extractors are never compared."""

import json
import textwrap

import keras
import numpy as np
import pytest
from scipy import linalg

from evaluation import api, extractors, features, fid, kid, networks

N = 40  # images per set (> the 6 feature dimensions: non-singular covariances)


def build_tiny(seed: int = 1):
  """A 3x3 convolution, a global mean and a dense layer: [B, H, W, 3] in [0, 255] -> [B, 6]."""
  inputs = keras.Input((None, None, 3))
  x = keras.layers.Rescaling(1 / 255)(inputs)
  x = keras.layers.Conv2D(
    4, 3, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed)
  )(x)
  x = keras.layers.Activation("tanh")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  outputs = keras.layers.Dense(
    6, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed + 1)
  )(x)
  return keras.Model(inputs, outputs, name=f"tiny_{seed}")


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
  monkeypatch.setenv(networks.CACHE_DIR_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(0)
  level = lambda mean: rng.normal(mean, 50, (N, 1, 1, 3))  # a colour per image, then noise
  fake = np.clip(level(150) + rng.normal(0, 30, (N, 12, 12, 3)), 0, 255).astype(np.uint8)
  real = np.clip(level(90) + rng.normal(0, 30, (N, 12, 12, 3)), 0, 255).astype(np.uint8)
  return fake, real


def _features(name, images):
  """The registered network called directly, outside the evaluation package."""
  model = extractors.build(extractors.get_extractor(name))
  return np.asarray(model(images.astype(np.float32)), np.float64)


def numpy_fid(x, y):
  """|mu_x - mu_y|^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)) with SciPy's general sqrtm."""
  sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  root = linalg.sqrtm(sx @ sy).real
  return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(sx + sy - 2 * root))


def numpy_kid(x, y):
  """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 over all rows (one subset of every row)."""
  d, n = x.shape[1], len(x)
  k = lambda a, b: (a @ b.T / d + 1) ** 3
  kxx, kyy = k(x, x), k(y, y)
  return float(
    (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * k(x, y).mean()
  )


def numpy_precision_recall(real, fake, *, k):
  """Share of fake rows inside some real k-NN ball, and of real rows inside some fake one."""
  d = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)

  def radii(a):
    within = d(a, a)
    np.fill_diagonal(within, np.inf)
    return np.sort(within, axis=1)[:, k - 1]

  cross = d(fake, real)
  return (
    float((cross <= radii(real)[None]).any(1).mean()),
    float((cross <= radii(fake)[:, None]).any(0).mean()),
  )


def _value(out, key):
  """The value of metric `key` in the --json output."""
  return json.loads(out)["metrics"][key]["value"]


def _protocol(out):
  return json.loads(out)["protocol"]["samples"]


def _error_line(capsys):
  err = [l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("note: ")]
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


def test_registered_extractor_through_the_api(images):
  fake, real = images
  features.register_extractor("tiny-api", build_tiny, input_size=12, dims=6)
  x, y = _features("tiny-api", fake), _features("tiny-api", real)
  options = dict(features="tiny-api", jit_compile=False, batch_size=16)
  result = api.compute_fid(fake, reference=real, **options)
  assert result.value == pytest.approx(numpy_fid(x, y), rel=1e-6)
  record = result.protocols["samples"]
  assert record["network"] == "tiny-api" and record["feature"] == "features"
  assert record["resize"] == "none" and result.protocols["reference"]["network"] == "tiny-api"
  result = api.compute_kid(fake, reference=real, num_subsets=1, subset_size=N, **options)
  assert result.value == pytest.approx(numpy_kid(x, y), rel=1e-6)
  result = api.compute_precision_recall(fake, reference=real, k=3, **options)
  assert result.value == pytest.approx(numpy_precision_recall(y, x, k=3), abs=1e-12)
  assert result.protocols["reference"]["network"] == "tiny-api"
  # --resize clean: PIL bicubic to input_size (12 -> 12 is not the identity for PIL's filter,
  # but the network sees 12 x 12 images either way and the record says which resize ran).
  clean = api.compute_fid(fake, reference=real, resize="clean", **options)
  assert clean.protocols["samples"]["resize"] == "clean-pil-bicubic-antialias"
  with pytest.raises(
    ValueError, match="^unknown feature extractor 'nope' \\(registered: .*tiny-api"
  ):
    api.compute_fid(fake, reference=real, features="nope")
  with pytest.raises(ValueError, match="Inception Score needs Inception's class logits"):
    api.compute_inception_score(fake, features="tiny-api")
  with pytest.raises(ValueError, match="already registered"):
    features.register_extractor("tiny-api", lambda: build_tiny(5))
  with pytest.raises(ValueError, match="built-in network's name"):
    features.register_extractor("inception-2015", build_tiny)
  features.register_extractor("tiny-wrong-dims", build_tiny, dims=7)
  with pytest.raises(ValueError, match="returned 6-dimensional features, registered with dims=7"):
    api.compute_fid(fake, reference=real, features="tiny-wrong-dims", jit_compile=False)


MODULE = """
import keras
from evaluation import features

def build(seed):
  inputs = keras.Input((None, None, 3))
  x = keras.layers.Rescaling(1 / 255)(inputs)
  x = keras.layers.Conv2D(4, 3, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed))(x)
  x = keras.layers.Activation("tanh")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  init = keras.initializers.RandomNormal(stddev=1.0, seed=seed + 1)
  return keras.Model(inputs, keras.layers.Dense(6, kernel_initializer=init)(x))

features.register_extractor("tiny-cli-a", lambda: build(1), dims=6)
features.register_extractor("tiny-cli-b", lambda: build(3), dims=6)
"""


def test_registered_extractor_through_the_commands(tmp_path, images, capsys):
  fake, real = images
  module = tmp_path / "my_features.py"
  module.write_text(textwrap.dedent(MODULE))
  np.save(tmp_path / "fake.npy", fake)
  np.save(tmp_path / "real.npy", real)
  common = ["--extractor_module", str(module), "--noprogress", "--nojit_compile", "--json"]
  io = ["--samples", str(tmp_path / "fake.npy"), "--reference", str(tmp_path / "real.npy")]
  stats = tmp_path / "a.stats"
  assert fid.main(io + common + ["--features", "tiny-cli-a", "--save_stats", str(stats)]) == 0
  out = capsys.readouterr().out
  x, y = _features("tiny-cli-a", fake), _features("tiny-cli-a", real)
  assert _value(out, "fid") == pytest.approx(numpy_fid(x, y), rel=1e-6)
  assert _protocol(out)["network"] == "tiny-cli-a" and _protocol(out)["feature"] == "features"
  with np.load(stats) as data:
    assert json.loads(str(data["protocol"]))["network"] == "tiny-cli-a"
  argv = io + common + ["--features", "tiny-cli-a", "--num_subsets", "1", "--subset_size", "40"]
  assert kid.main(argv) == 0
  assert _value(capsys.readouterr().out, "kid") == pytest.approx(numpy_kid(x, y), rel=1e-6)
  # Extractor b on the same reference file: the reference cache of extractor a is not used.
  assert fid.main(io + common + ["--features", "tiny-cli-b"]) == 0
  xb, yb = _features("tiny-cli-b", fake), _features("tiny-cli-b", real)
  assert _value(capsys.readouterr().out, "fid") == pytest.approx(numpy_fid(xb, yb), rel=1e-6)
  # Statistics of extractor a against samples through extractor b: refused, one line.
  argv = ["--samples", str(tmp_path / "fake.npy"), "--reference", str(stats), "--features"]
  assert fid.main(argv + ["tiny-cli-b"] + common) == 2
  message = _error_line(capsys)
  assert "network tiny-cli-b vs tiny-cli-a" in message and "weights_sha256" in message
  # An unknown name: one line naming what is registered.
  assert fid.main(io + common + ["--features", "nope"]) == 2
  message = _error_line(capsys)
  assert message.startswith("error: unknown feature extractor 'nope' (registered: ")
  assert "tiny-cli-a, tiny-cli-b" in message and message.endswith("--extractor_module)")
  assert fid.main(io + ["--extractor_module", str(tmp_path / "missing.py"), "--features", "x"]) == 2
  assert _error_line(capsys) == f"error: --extractor_module {tmp_path / 'missing.py'}: no such file"
