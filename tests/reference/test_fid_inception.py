"""Our Keras FID Inception (weights converted from a pytorch-fid `.pth`) vs pytorch-fid's and
torch-fidelity's networks built from the same random file: pool_3 and the 1008 logits."""

import numpy as np
import pytest

from evaluation import fid, inception, networks
from tests.reference import comparisons, requires

pytestmark = requires("torch", "torchvision", "pytorch_fid", "torch_fidelity")

TOLERANCE = 1e-4  # max |ours - theirs| / max |theirs|


@pytest.fixture(scope="module")
def _module_cache(tmp_path_factory):
  """One conversion cache for the module (the .pth is converted once, then read from it)."""
  return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch, _module_cache):
  monkeypatch.setenv(networks.CACHE_DIR_ENV, str(_module_cache))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
  monkeypatch.delenv(networks.INCEPTION_PATH_ENV, raising=False)


@pytest.fixture(scope="module")
def pth(tmp_path_factory):
  path = tmp_path_factory.mktemp("pth") / networks.INCEPTION_TORCH_FILES[0]
  comparisons.write_inception_pth(path, seed=0)
  return path


@pytest.fixture(scope="module")
def ours(pth, _module_cache):
  """Our full-width network of `pth`, built once (through the converter and its cache)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(networks.CACHE_DIR_ENV, str(_module_cache))
    return networks.inception_network(str(pth), download=False)


def test_pool3_and_logits_equal_pytorch_fid_and_torch_fidelity(pth, ours):
  rows = comparisons.inception_cross_check(pth, sizes=comparisons.INCEPTION_SIZES, ours=ours)
  assert len(rows) == 3 * 2 * 4  # sizes x {grey, RGB} x {2 references x 2 outputs}
  worst = max(rows, key=lambda row: row["max_rel_diff"])
  assert worst["max_rel_diff"] <= TOLERANCE, worst


def test_pytorch_fid_default_input_pipeline_is_not_ttur(pth, ours):
  """pytorch-fid resizes with half-pixel centres (= TF1 `half_pixel_centers=True`, TF2's
  `tf.image.resize`) and scales x / 255 * 2 - 1; TTUR's graph uses TF1's legacy resize and
  (x - 128) / 128, which ours reproduces (and torch-fidelity too, see the test above)."""
  diff = comparisons.pytorch_fid_protocol_difference(pth, size=64, ours=ours)
  assert diff["resize_vs_tf1_half_pixel"] < 1e-5
  assert diff["resize_vs_tf1_legacy"] > 1e-2
  assert diff["pool_3_vs_ours"] > 1e-3


def _narrow_pth(path, width_divisor=16):
  """A narrow random file in the .pth layout (names from the converter's map; the names
  themselves are checked at full width against torchvision above)."""
  import torch

  model = inception.build_inception_2015(width_divisor=width_divisor)
  rng = np.random.default_rng(1)
  state = {}
  for unit in inception.conv_units():
    module, name = inception.torch_module_name(unit.scope), inception.layer_name(unit.scope)
    kernel = model.get_layer(name + ".conv").kernel.shape  # HWIO
    state[module + ".conv.weight"] = rng.normal(
      0, np.sqrt(2 / np.prod(kernel[:3])), (kernel[3], kernel[2], kernel[0], kernel[1])
    )
    for part in ("weight", "running_var"):
      state[f"{module}.bn.{part}"] = rng.uniform(0.5, 1.5, kernel[3])
    for part in ("bias", "running_mean"):
      state[f"{module}.bn.{part}"] = rng.normal(0, 0.1, kernel[3])
  state["fc.weight"] = rng.normal(0, 0.1, (1008, 2048 // width_divisor))
  state["fc.bias"] = np.zeros(1008)
  torch.save({k: torch.tensor(v, dtype=torch.float32) for k, v in state.items()}, path)


def test_fid_command_reads_a_pth(tmp_path, capsys):
  pth = tmp_path / networks.INCEPTION_TORCH_FILES[0]
  _narrow_pth(pth)
  rng = np.random.default_rng(0)
  samples, reference = tmp_path / "a.npy", tmp_path / "b.npy"
  np.save(samples, rng.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8))
  np.save(reference, rng.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8))
  assert (
    fid.main(
      [
        "--samples",
        str(samples),
        "--reference",
        str(reference),
        "--inception_path",
        str(pth),
        "--noprogress",
        "--nocache",
        "--batch_size",
        "3",
        "--nojit_compile",
      ]
    )
    == 0
  )
  got = float(capsys.readouterr().out.split("FID:")[1].split()[0])  # then a protocol line
  model = networks.inception_network(str(pth), download=False)
  mu1, s1 = fid.feature_statistics(model(np.load(samples).astype(np.float32))["pool_3"].numpy())
  mu2, s2 = fid.feature_statistics(model(np.load(reference).astype(np.float32))["pool_3"].numpy())
  assert got == pytest.approx(fid.frechet_distance(mu1, s1, mu2, s2), rel=1e-4)
  # Found in PyTorch's hub cache, where pytorch-fid keeps its download.
  hub = networks.torch_hub_checkpoints()
  hub.mkdir(parents=True)
  (hub / pth.name).symlink_to(pth)
  assert networks.resolve_inception_graph_def(download=False) == hub / pth.name


def test_a_damaged_pth_is_a_clear_error(tmp_path, pth):
  import torch

  state = torch.load(pth, weights_only=True)
  state["Mixed_6b.branch7x7_2.conv.weight"] = state["Mixed_6b.branch7x7_2.conv.weight"].transpose(
    2, 3
  )
  bad = tmp_path / "bad.pth"
  torch.save(state, bad)
  with pytest.raises(inception.GraphDefMismatchError, match="Mixed_6b.branch7x7_2.conv.weight"):
    networks.inception_network(str(bad), download=False)
  (tmp_path / "junk.pth").write_bytes(b"not a zip")
  with pytest.raises(inception.GraphDefMismatchError, match="torch.load"):
    networks.inception_network(str(tmp_path / "junk.pth"), download=False)


def test_pytorch_fid_resize_equals_torch_interpolate():
  """`resize_pytorch_fid` against `F.interpolate(bilinear, align_corners=False)` of x / 255, for
  up- and downscaling, square and not, uint8 and float input."""
  import torch
  import torch.nn.functional as F

  from evaluation import resize

  rng = np.random.default_rng(0)
  for shape in ((28, 28, 1), (64, 48, 3), (400, 333, 3), (299, 299, 3)):
    image = rng.integers(0, 256, shape).astype(np.uint8)
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    theirs = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    theirs = (theirs * 2 - 1)[0].numpy().transpose(1, 2, 0)
    ours = (resize.resize_pytorch_fid(image, 299) - 128.0) / 128.0  # what the network then sees
    np.testing.assert_allclose(
      ours, theirs, atol=1e-5
    )  # float32 rounding (weights in another order)
    floats = resize.resize_pytorch_fid(image.astype(np.float32) / 255.0, 299)
    np.testing.assert_allclose(floats, resize.resize_pytorch_fid(image, 299), atol=1e-4)


def test_resize_pytorch_fid_equals_pytorch_fids_own_path(pth, ours):
  """features.extract(resize="pytorch-fid") = pytorch-fid's InceptionV3([3]) on x / 255 (its
  defaults resize_input=True, normalize_input=True), same random weights, pool_3."""
  import pytorch_fid.inception as pf
  import torch

  from evaluation import features

  with comparisons.pytorch_fid_with_weights(pth):
    model = pf.InceptionV3([3]).eval()
  for size, channels in ((64, 3), (28, 1)):
    images = comparisons.inception_images(size, channels, count=2)
    rgb = np.broadcast_to(images, images.shape[:3] + (3,)).transpose(0, 3, 1, 2)
    with torch.no_grad():
      theirs = model(torch.from_numpy(np.ascontiguousarray(rgb)).float() / 255.0)[0]
    theirs = theirs.reshape(len(images), -1).numpy()
    mine = features.extract(
      ours, images, batch_size=2, progress=False, jit_compile=False, resize="pytorch-fid"
    )["pool_3"]
    assert comparisons.max_relative_difference(mine, theirs) <= TOLERANCE
    tf1 = features.extract(ours, images, batch_size=2, progress=False, jit_compile=False)["pool_3"]
    assert comparisons.max_relative_difference(tf1, theirs) > 1e-3  # the default differs


def test_dims_features_equal_pytorch_fids_blocks(pth, ours):
  """pytorch-fid `--dims 64/192/768/2048`: its blocks 0-3 with adaptive average pooling to 1x1
  (`get_activations`) = our "block_64", "block_192", "block_768", "pool_3" (resize pytorch-fid)."""
  import pytorch_fid.inception as pf
  import torch
  import torch.nn.functional as F

  from evaluation import features

  dims = (64, 192, 768, 2048)
  with comparisons.pytorch_fid_with_weights(pth):
    model = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[d] for d in dims]).eval()
  images = comparisons.inception_images(40, 3, count=2)
  with torch.no_grad():
    blocks = model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).float() / 255.0)
  mine = features.extract(
    ours, images, batch_size=2, progress=False, jit_compile=False, resize="pytorch-fid"
  )
  for d, block in zip(dims, blocks):
    theirs = F.adaptive_avg_pool2d(block, output_size=(1, 1)).reshape(len(images), -1).numpy()
    assert theirs.shape == (2, d)
    name = "pool_3" if d == 2048 else f"block_{d}"
    assert comparisons.max_relative_difference(mine[name], theirs) <= TOLERANCE, d
