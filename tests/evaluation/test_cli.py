"""The `python -m evaluation.*` commands: results, caching, and every bad-input path (exit 2)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from evaluation import fid
from evaluation import inception_score
from evaluation import kid
from evaluation import networks
from evaluation import precision_recall
from tests.evaluation import graphs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def graph_pb(tmp_path_factory):
  path = tmp_path_factory.mktemp("weights") / networks.INCEPTION_PB
  graphs.write_inception_graph_def(path, width_divisor=32)
  return str(path)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
  monkeypatch.setenv(networks.CACHE_DIR_ENV, str(tmp_path / "cache"))
  monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
  monkeypatch.delenv(networks.INCEPTION_PATH_ENV, raising=False)
  monkeypatch.delenv(networks.VGG16_PATH_ENV, raising=False)


def _folder(path, images):
  path.mkdir()
  for i, image in enumerate(images):
    Image.fromarray(image.squeeze()).save(path / f"{i:03d}.png")
  return str(path)


def _images(n, size=16, channels=3, seed=0):
  shape = (n, size, size, channels)
  return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def _written(tmp_path):
  """Files under tmp_path other than the inputs the test made."""
  return sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                if p.is_file() and "inputs" not in p.parts)


def test_fid_command_end_to_end(tmp_path, graph_pb, capsys):
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  samples = _folder(inputs / "samples", _images(6, seed=1))
  reference = _folder(inputs / "reference", _images(6, seed=2))
  stats = str(tmp_path / "stats.npz")
  args = ["--samples", samples, "--reference", reference, "--inception_path", graph_pb,
          "--noprogress", "--batch_size", "4"]
  assert fid.main(args + ["--save_stats", stats]) == 0
  first = float(capsys.readouterr().out.strip().splitlines()[-1].split("FID:")[1])
  assert first > 0
  cached = list((tmp_path / "cache" / "reference_features").glob("*.npz"))
  assert len(cached) == 1 and os.path.exists(stats)
  # The cached reference features and the saved statistics both reproduce the value.
  assert fid.main(args + ["--nojit_compile"]) == 0
  assert float(capsys.readouterr().out.split("FID:")[1]) == pytest.approx(first, rel=1e-6)
  assert fid.main(["--samples", samples, "--reference", stats, "--inception_path", graph_pb,
                   "--noprogress", "--nojit_compile"]) == 0
  assert float(capsys.readouterr().out.split("FID:")[1]) == pytest.approx(first, rel=1e-4)
  assert fid.main(["--samples", samples, "--reference", samples, "--inception_path", graph_pb,
                   "--noprogress", "--nocache", "--nojit_compile"]) == 0
  assert abs(float(capsys.readouterr().out.split("FID:")[1])) < 1e-6


def test_kid_and_inception_score_commands(tmp_path, graph_pb, capsys):
  np.save(tmp_path / "a.npy", _images(8, seed=3))
  np.savez(tmp_path / "b.npz", images=_images(8, seed=4).astype(np.float32) / 255.0)
  assert kid.main(["--samples", str(tmp_path / "a.npy"), "--reference", str(tmp_path / "b.npz"),
                   "--inception_path", graph_pb, "--noprogress", "--num_subsets", "3",
                   "--nojit_compile"]) == 0
  assert capsys.readouterr().out.strip().splitlines()[-1].startswith("KID: ")
  assert inception_score.main(["--samples", str(tmp_path / "a.npy"), "--splits", "2",
                               "--inception_path", graph_pb, "--noprogress",
                               "--nojit_compile"]) == 0
  value = float(capsys.readouterr().out.split("IS:")[1].split("+-")[0])
  assert 1.0 <= value <= 1008


def test_precision_recall_command_on_cached_features(tmp_path, capsys):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "real.npz", fc2=rng.normal(size=(40, 8)))
  np.savez(tmp_path / "fake.npz", fc2=rng.normal(size=(30, 8)) * 0.1)
  # Features need no network, so no weights are looked up.
  assert precision_recall.main(["--samples", str(tmp_path / "fake.npz"),
                                "--reference", str(tmp_path / "real.npz")]) == 0
  out = capsys.readouterr().out
  p = float(out.split("precision:")[1].split()[0])
  r = float(out.split("recall:")[1].split()[0])
  assert p > 0.9 and r < 0.5


def _bad_inputs(tmp_path):
  """(name, path) of inputs every command must reject."""
  inputs = tmp_path / "inputs"
  inputs.mkdir(exist_ok=True)
  (inputs / "empty").mkdir()
  corrupt = inputs / "corrupt"
  _folder(corrupt, _images(3))
  (corrupt / "zzz.png").write_bytes(b"\x89PNG not really an image")
  mixed = inputs / "mixed"
  _folder(mixed, _images(3, size=16))
  Image.fromarray(_images(1, size=20)[0]).save(mixed / "zzz.png")
  one = _folder(inputs / "one", _images(1))
  np.save(inputs / "rgba.npy", np.zeros((4, 8, 8, 4), np.uint8))
  np.save(inputs / "flat.npy", np.zeros((4, 64), np.uint8))
  np.save(inputs / "range.npy", np.full((4, 8, 8, 3), 3.0, np.float32))
  return {
      "missing folder": str(inputs / "nope"), "empty folder": str(inputs / "empty"),
      "corrupt image": str(corrupt), "mixed sizes": str(mixed), "one image": one,
      "4 channels": str(inputs / "rgba.npy"), "wrong rank": str(inputs / "flat.npy"),
      "float out of range": str(inputs / "range.npy"),
  }


@pytest.mark.parametrize("command", [fid, kid, precision_recall, inception_score])
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(command, tmp_path, graph_pb, capsys):
  bad = _bad_inputs(tmp_path)
  good = _folder(tmp_path / "inputs" / "good", _images(5))
  weights = (["--inception_path", graph_pb] if command is not precision_recall
             else ["--vgg16_path", str(tmp_path / "inputs" / "no_vgg.h5")])
  extra = {fid: ["--save_stats", str(tmp_path / "stats.npz")], inception_score: ["--splits", "2"]
          }.get(command, [])
  for name, path in bad.items():
    if command is inception_score:
      argv = ["--samples", path]
    else:
      argv = ["--samples", good, "--reference", path]
    assert command.main(argv + weights + extra + ["--noprogress"]) == 2, name
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), (name, err)
  # Missing weights, offline.
  argv = ["--samples", good] + ([] if command is inception_score else ["--reference", good])
  assert command.main(argv + extra + ["--nodownload"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "weights unavailable" in err[0], err
  assert command.main(["--samples", good, "--batch_size", "0"]) == 2  # flag error, one line
  assert len(capsys.readouterr().err.strip().splitlines()) == 1
  assert _written(tmp_path) == []


def test_help_and_subprocess_exit_code(tmp_path):
  out = subprocess.run([sys.executable, "-m", "evaluation.fid", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0
  for flag in ("--samples", "--reference", "--save_stats", "--inception_path", "--batch_size"):
    assert flag in out.stdout
  bad = subprocess.run([sys.executable, "-m", "evaluation.fid", "--samples", str(tmp_path / "x"),
                        "--reference", str(tmp_path / "y")], cwd=REPO, capture_output=True,
                       text=True, timeout=300,
                       env={**os.environ, networks.CACHE_DIR_ENV: str(tmp_path / "c")})
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [f"error: --samples: image folder {tmp_path / 'x'} "
                                             "does not exist"]
