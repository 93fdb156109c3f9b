"""`python -m evaluation --fid --kid --isc --prc`: one feature pass, the single commands' lines, and
--json on every metric command. The whole stdout and stderr a user sees are asserted."""

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

from evaluation import features, fid, inception_score, kid, networks, precision_recall
from tests.evaluation import graphs
from tests.evaluation.test_tool import one_network_per_weights_file

evaluation_main = importlib.import_module("evaluation.__main__")


@pytest.fixture(scope="module")
def graph_pb(tmp_path_factory):
  path = tmp_path_factory.mktemp("weights") / networks.INCEPTION_PB
  graphs.write_inception_graph_def(path, width_divisor=32)
  return str(path)


@pytest.fixture(scope="module")
def _built_networks():
  return {}


@pytest.fixture(autouse=True)
def _one_network_per_weights_file(monkeypatch, _built_networks):
  one_network_per_weights_file(monkeypatch, _built_networks)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
  monkeypatch.setenv(networks.CACHE_DIR_ENV, str(tmp_path / "cache"))
  monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
  for name in (networks.INCEPTION_PATH_ENV, networks.VGG16_PATH_ENV, networks.VGG16_TORCH_PATH_ENV):
    monkeypatch.delenv(name, raising=False)


def _run(fn, args, capsys):
  code = fn(args)
  captured = capsys.readouterr()
  return code, captured.out, captured.err


NOTE = "note: --samples carries no protocol record; cannot check that both were made the same way"


def _feature_files(tmp_path):
  rng = np.random.default_rng(0)
  for name, shift in (("fake", 0.4), ("real", 0.0)):
    np.savez(
      tmp_path / f"{name}.npz",
      pool_3=rng.normal(size=(30, 6)) + shift,
      logits=rng.normal(0, 3, size=(30, 10)),
      fc2=rng.normal(size=(30, 5)) + shift,
    )
  return str(tmp_path / "fake.npz"), str(tmp_path / "real.npz")


def test_all_metrics_print_the_single_commands_lines(tmp_path, capsys):
  fake, real = _feature_files(tmp_path)
  io = ["--samples", fake, "--reference", real]
  single = {}
  for name, fn, extra in (
    ("fid", fid.main, []),
    ("kid", kid.main, ["--subset_size", "20"]),
    ("isc", inception_score.main, ["--splits", "3"]),
    ("prc", precision_recall.main, []),
  ):
    code, out, err = _run(fn, (["--samples", fake] if name == "isc" else io) + extra, capsys)
    assert code == 0
    single[name] = out.splitlines()
  code, out, err = _run(
    evaluation_main.main,
    io + ["--fid", "--kid", "--isc", "--prc", "--subset_size", "20", "--splits", "3"],
    capsys,
  )
  assert code == 0
  # Values as the single commands print them; one protocol line per feature kind.
  assert out.splitlines() == [
    single["fid"][0],
    single["kid"][0],
    single["isc"][0],
    single["prc"][0],
    single["prc"][1],
    "protocol: unknown",
    "protocol: unknown",
    "protocol: unknown",
  ]
  assert err.splitlines() == [NOTE] * 3  # FID, KID, precision/recall each check their inputs
  # The values themselves, from NumPy here.
  with np.load(fake) as f, np.load(real) as r:
    x, y = (
      f["pool_3"].astype(np.float32).astype(np.float64),
      r["pool_3"].astype(np.float32).astype(np.float64),
    )
  want = (
    ((x.mean(0) - y.mean(0)) ** 2).sum()
    + np.trace(np.cov(x, rowvar=False))
    + np.trace(np.cov(y, rowvar=False))
    - 2 * np.trace(_sqrtm(np.cov(x, rowvar=False) @ np.cov(y, rowvar=False)))
  )
  assert float(out.splitlines()[0].split()[1]) == pytest.approx(want, abs=2e-6)


def _sqrtm(matrix):
  from scipy import linalg

  return linalg.sqrtm(matrix).real


def test_json_output_of_every_command(tmp_path, capsys):
  fake, real = _feature_files(tmp_path)
  io = ["--samples", fake, "--reference", real, "--json"]
  code, out, err = _run(fid.main, io + ["--subsamples", "10"], capsys)
  assert code == 0 and err == NOTE + "\n"
  payload = json.loads(out)
  assert sorted(payload) == ["interval", "metrics", "protocol"]
  assert sorted(payload["metrics"]) == ["fid"]
  assert payload["metrics"]["fid"]["interval"][0] < payload["metrics"]["fid"]["interval"][1]
  assert payload["interval"] == {
    "method": "subsampling without replacement (Politis-Romano-Wolf interval, "
    "finite-population factor sqrt(rate / (1 - rate)))",
    "target": "population value",
    "replicates": 10,
    "rate": 0.5,
    "seed": 0,
    "confidence": 0.95,
  }
  assert payload["protocol"] == {"samples": None, "reference": None}
  # The text value is the JSON value to 6 decimals.
  _, text, _ = _run(fid.main, io[:-1], capsys)
  assert text.splitlines()[0] == f"FID: {payload['metrics']['fid']['value']:.6f}"
  code, out, _ = _run(kid.main, io + ["--subset_size", "20"], capsys)
  assert code == 0 and sorted(json.loads(out)["metrics"]["kid"]) == ["interval", "std", "value"]
  code, out, err = _run(
    inception_score.main, ["--samples", fake, "--splits", "3", "--json"], capsys
  )
  assert code == 0 and err == ""
  assert json.loads(out)["metrics"]["is"]["interval"] is None
  code, out, _ = _run(precision_recall.main, io, capsys)
  assert code == 0 and sorted(json.loads(out)["metrics"]) == ["precision", "recall"]
  # With intervals: FID's is for the population value, precision/recall's for the expected value
  # at these set sizes (their large-set limit is the supports' overlap, see docs/evaluation.md).
  code, out, _ = _run(evaluation_main.main, io + ["--fid", "--prc", "--subsamples", "5"], capsys)
  assert code == 0 and json.loads(out)["interval"]["target"] == (
    "population value (precision, recall: the expected value at these set sizes)"
  )
  code, out, _ = _run(evaluation_main.main, io + ["--fid", "--isc", "--splits", "3"], capsys)
  payload = json.loads(out)
  assert code == 0 and sorted(payload["metrics"]) == ["fid", "is"]
  assert payload["interval"] is None
  assert payload["protocol"] == {
    "pool_3": {"samples": None, "reference": None},
    "logits": {"samples": None},
  }


def test_one_inception_pass_per_input(tmp_path, graph_pb, monkeypatch, capsys):
  rng = np.random.default_rng(3)
  np.save(tmp_path / "s.npy", rng.integers(0, 256, (6, 16, 16, 3)).astype(np.uint8))
  np.save(tmp_path / "r.npy", rng.integers(0, 256, (7, 16, 16, 3)).astype(np.uint8))
  args = [
    "--samples",
    str(tmp_path / "s.npy"),
    "--reference",
    str(tmp_path / "r.npy"),
    "--inception_path",
    graph_pb,
    "--noprogress",
    "--nojit_compile",
    "--batch_size",
    "4",
    "--nocache",
  ]
  single = []
  for fn, extra in ((fid.main, []), (kid.main, []), (inception_score.main, ["--splits", "2"])):
    own = args + extra if fn is not inception_score.main else args[:2] + args[4:-1] + extra
    code, out, err = _run(fn, own, capsys)  # (IS has no reference and no --nocache)
    assert code == 0
    single.append(out.splitlines())
  calls = []
  real_extract = features.extract
  monkeypatch.setattr(features, "extract", lambda *a, **k: calls.append(1) or real_extract(*a, **k))
  code, out, err = _run(
    evaluation_main.main, args + ["--fid", "--kid", "--isc", "--splits", "2"], capsys
  )
  assert code == 0
  assert len(calls) == 2  # the reference once, the samples once (pool_3 and logits together)
  assert out.splitlines() == [single[0][0], single[1][0], single[2][0], single[0][1], single[2][1]]
  assert [l for l in err.splitlines() if not l.startswith("note: ")] == [
    f"warning: {name} has {n} feature vectors for 64 dimensions: the covariance is singular "
    f"and FID unreliable (two identical sets can give a small negative value); use at least "
    f"64 images"
    for name, n in (("samples", 6), ("reference", 7))
  ]
  assert "feature=pool_3" in out.splitlines()[3] and "feature=logits" in out.splitlines()[4]


@pytest.mark.parametrize(
  "args,message",
  [
    ([], "name at least one metric: --fid, --kid, --isc, --prc"),
    (["--fid", "--samples", "x.npy"], "--reference is required for --fid, --kid and --prc"),
    (["--isc"], "--samples is required"),
    (
      ["--fid", "--samples", "x.npy", "--reference", "y", "--bootstrap", "10"],
      "--bootstrap was removed: resampling with replacement duplicates images, which inflates "
      "FID and breaks KID's unbiased estimate; use --subsamples N (subsampling without "
      "replacement, see docs/evaluation.md)",
    ),
  ],
)
def test_bad_invocations_give_one_error_line(args, message, capsys):
  code, out, err = _run(evaluation_main.main, args, capsys)
  assert (code, out, err) == (2, "", f"error: {message}\n")


def test_statistics_reference_serves_fid_only(tmp_path, capsys):
  fake, _ = _feature_files(tmp_path)
  np.savez(tmp_path / "stats.npz", mu=np.zeros(6), sigma=np.eye(6))
  code, out, err = _run(
    evaluation_main.main,
    ["--fid", "--kid", "--samples", fake, "--reference", str(tmp_path / "stats.npz")],
    capsys,
  )
  assert (code, out) == (2, "")
  assert err == (
    f"error: --reference {tmp_path / 'stats.npz'} holds FID statistics (mu, sigma); "
    "this metric needs images or features\n"
  )


def test_python_dash_m_evaluation(tmp_path):
  fake, real = _feature_files(tmp_path)
  done = subprocess.run(
    [sys.executable, "-m", "evaluation", "--fid", "--samples", fake, "--reference", real],
    capture_output=True,
    text=True,
    check=False,
  )
  assert done.returncode == 0, done.stderr
  assert done.stdout.splitlines()[0].startswith("FID: ")
  assert done.stdout.splitlines()[1:] == ["protocol: unknown"]
  assert done.stderr == NOTE + "\n"


# ------------------------------------------------------------------------------ messages


def test_messages_for_garbage_arrays_missing_weights_and_tfds_imports(
  tmp_path, monkeypatch, capsys
):
  fake, _ = _feature_files(tmp_path)
  garbage = tmp_path / "garbage.npy"
  garbage.write_bytes(b"not an array at all " * 20)
  objects = tmp_path / "objects.npy"
  np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
  for path, reason in (
    (garbage, "no .npy header: the file is not a NumPy .npy file"),
    (objects, "it holds Python objects; uint8 or float images [N, H, W, C] are needed"),
  ):
    code, out, err = _run(fid.main, ["--samples", str(path), "--reference", fake], capsys)
    assert (code, out) == (2, "")
    assert err == f"error: --samples: {path} is not a valid image or feature array ({reason})\n"
  # A missing PyTorch weights file: the message names the .pth files it would take.
  missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
  images = tmp_path / "images.npy"
  np.save(images, np.zeros((3, 8, 8, 3), np.uint8))
  code, out, err = _run(
    fid.main,
    ["--samples", str(images), "--reference", str(images), "--inception_path", str(missing)],
    capsys,
  )
  assert (code, out) == (2, "")
  assert err == (
    f"error: Inception weights not found at {missing}: expected TTUR's "
    "classify_image_graph_def.pb or inception-2015-12-05.tgz (from "
    "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz), or the "
    "PyTorch port pt_inception-2015-12-05-6726825d.pth / "
    "weights-inception-2015-12-05-6726825d.pth (pytorch-fid / torch-fidelity), or a folder "
    "holding one\n"
  )
  # tensorflow_datasets failing on a module it imports lazily when preparing a data set.
  from evaluation import references

  class Builder:
    data_dir = str(tmp_path / "tfds")

    def download_and_prepare(self):
      raise ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")

  class Tfds:
    builder = staticmethod(lambda name: Builder())

  monkeypatch.delenv("GENMODELS_DATA_DIR", raising=False)  # no local IDX copy: tfds is asked
  monkeypatch.setattr(references, "_tfds_builder", lambda *a, **k: (Tfds, Builder(), False))
  with pytest.raises(references.image_io.ImageInputError) as error:
    references.NamedReference("tfds:mnist/test").load(download=True)
  assert str(error.value) == (
    "tfds:mnist/test: tensorflow_datasets cannot prepare the data set: the Python package "
    "importlib_resources is missing (pip install importlib_resources; setup.py requires it); "
    "or set $GENMODELS_DATA_DIR to a folder with the data set's files"
  )


def test_resize_pytorch_fid_flag_is_recorded(tmp_path, graph_pb, capsys):
  """--resize pytorch-fid: host-side resize to 299 (checked against pytorch-fid itself in
  tests/reference/test_fid_inception.py), named in the protocol, not comparable with tf1."""
  images = tmp_path / "s.npy"
  np.save(images, np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3)).astype(np.uint8))
  base = [
    "--samples",
    str(images),
    "--reference",
    str(images),
    "--inception_path",
    graph_pb,
    "--noprogress",
    "--nojit_compile",
    "--nocache",
  ]
  stats = tmp_path / "torch.stats"
  code, out, _ = _run(
    fid.main, base + ["--resize", "pytorch-fid", "--save_stats", str(stats)], capsys
  )
  assert code == 0
  assert "resize=pytorch-fid-bilinear-half-pixel" in out.splitlines()[1]
  code, out, err = _run(fid.main, base[:2] + ["--reference", str(stats)] + base[4:], capsys)
  assert (code, out) == (2, "")
  assert err.splitlines()[-1] == (
    "error: --samples and --reference were made under different protocols: resize "
    "tf1-legacy-bilinear vs pytorch-fid-bilinear-half-pixel (pass --nostrict_protocol to "
    "compare anyway)"
  )


def test_dims_selects_pytorch_fids_block_features(tmp_path, graph_pb, capsys):
  """--dims 768: FID of the Mixed_6e spatial means (checked against pytorch-fid's blocks in
  tests/reference/test_fid_inception.py); the narrow test graph has 768 / 32 = 24 of them."""
  rng = np.random.default_rng(5)
  fake_images = rng.integers(0, 256, (30, 16, 16, 3)).astype(np.uint8)
  real_images = rng.integers(0, 128, (30, 16, 16, 3)).astype(np.uint8)
  np.save(tmp_path / "f.npy", fake_images)
  np.save(tmp_path / "r.npy", real_images)
  args = [
    "--samples",
    str(tmp_path / "f.npy"),
    "--reference",
    str(tmp_path / "r.npy"),
    "--inception_path",
    graph_pb,
    "--noprogress",
    "--nojit_compile",
    "--nocache",
    "--batch_size",
    "10",
  ]
  code, out, err = _run(fid.main, args + ["--dims", "768"], capsys)
  assert code == 0, err
  model = networks.inception_network(graph_pb, download=False)
  extract = lambda images: features.extract(
    model, images, batch_size=10, progress=False, jit_compile=False
  )["block_768"].astype(np.float64)
  x, y = extract(fake_images), extract(real_images)
  assert x.shape == (30, 24)
  s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  want = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * _sqrtm(s1 @ s2))
  lines = out.splitlines()
  assert lines[0] == f"FID: {want:.6f}" or abs(float(lines[0].split()[1]) - want) < 1e-4 * want
  assert " feature=block_768 " in lines[1] and len(lines) == 2
  assert [l for l in err.splitlines() if not l.startswith("note: ")] == []  # 30 >= 24: no warning
  code, out, err = _run(fid.main, args + ["--dims", "100"], capsys)
  assert (code, out) == (2, "")
  assert err.startswith("error: flag --dims=100: value should be one of <64|192|768|2048>")
