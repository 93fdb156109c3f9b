"""Our Keras FID Inception (weights converted from a pytorch-fid `.pth`) vs pytorch-fid's and
torch-fidelity's networks built from the same random file: pool_3 and the 1008 logits."""

import pytest

import numpy as np

from evaluation import fid
from evaluation import inception
from evaluation import networks
from tests.reference import comparisons
from tests.reference import requires

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
  import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  model = inception.build_inception_2015(width_divisor=width_divisor)
  rng = np.random.default_rng(1)
  state = {}
  for unit in inception.conv_units():
    module, name = inception.torch_module_name(unit.scope), inception.layer_name(unit.scope)
    kernel = model.get_layer(name + ".conv").kernel.shape  # HWIO
    state[module + ".conv.weight"] = rng.normal(0, np.sqrt(2 / np.prod(kernel[:3])),
                                                (kernel[3], kernel[2], kernel[0], kernel[1]))
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
  assert fid.main(["--samples", str(samples), "--reference", str(reference), "--inception_path",
                   str(pth), "--noprogress", "--nocache", "--batch_size", "3",
                   "--nojit_compile"]) == 0
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
  import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  state = torch.load(pth, weights_only=True)
  state["Mixed_6b.branch7x7_2.conv.weight"] = state["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3)
  bad = tmp_path / "bad.pth"
  torch.save(state, bad)
  with pytest.raises(inception.GraphDefMismatchError, match="Mixed_6b.branch7x7_2.conv.weight"):
    networks.inception_network(str(bad), download=False)
  (tmp_path / "junk.pth").write_bytes(b"not a zip")
  with pytest.raises(inception.GraphDefMismatchError, match="torch.load"):
    networks.inception_network(str(tmp_path / "junk.pth"), download=False)
