"""The `python -m evaluation.*` commands: results, caching, and every bad-input path (exit 2)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from evaluation import features, fid, image_io, inception_score, kid, networks, precision_recall
from tests.evaluation import graphs
from tests.evaluation.test_tool import one_network_per_weights_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def _value(out: str, name: str) -> float:
  """The first number of the `<name>: ...` line of a command's output."""
  line = next(l for l in out.splitlines() if l.startswith(f"{name}:"))
  return float(line.split(":", 1)[1].split()[0])


def _protocol(out: str) -> dict:
  """{key: value} of the `protocol: key=value ...` line."""
  line = next(l for l in out.splitlines() if l.startswith("protocol:"))
  return dict(item.split("=", 1) for item in line.split()[1:])


def _written(tmp_path):
  """Files under tmp_path other than the inputs the test made."""
  return sorted(
    p.relative_to(tmp_path).as_posix()
    for p in tmp_path.rglob("*")
    if p.is_file() and "inputs" not in p.parts
  )


def test_fid_command_end_to_end(tmp_path, graph_pb, capsys):
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  samples = _folder(inputs / "samples", _images(6, seed=1))
  reference = _folder(inputs / "reference", _images(6, seed=2))
  stats = str(tmp_path / "reference.stats")  # any name: written exactly there, read back
  args = [
    "--samples",
    samples,
    "--reference",
    reference,
    "--inception_path",
    graph_pb,
    "--noprogress",
    "--batch_size",
    "4",
  ]
  assert fid.main(args + ["--save_stats", stats]) == 0
  first = _value(capsys.readouterr().out, "FID")
  assert first > 0
  cached = list((tmp_path / "cache" / "reference_features").glob("*.npz"))
  assert len(cached) == 1 and os.path.exists(stats) and not os.path.exists(stats + ".npz")
  # The cached reference features and the saved statistics both reproduce the value.
  # (All with the default XLA step of batch 4, compiled once for the module.)
  assert fid.main(args) == 0
  assert _value(capsys.readouterr().out, "FID") == pytest.approx(first, rel=1e-6)
  assert (
    fid.main(
      [
        "--samples",
        samples,
        "--reference",
        stats,
        "--inception_path",
        graph_pb,
        "--noprogress",
        "--batch_size",
        "4",
      ]
    )
    == 0
  )
  assert _value(capsys.readouterr().out, "FID") == pytest.approx(first, rel=1e-4)
  assert (
    fid.main(
      [
        "--samples",
        samples,
        "--reference",
        samples,
        "--inception_path",
        graph_pb,
        "--noprogress",
        "--nocache",
        "--batch_size",
        "4",
      ]
    )
    == 0
  )
  assert abs(_value(capsys.readouterr().out, "FID")) < 1e-6


def _numpy_kid(real, fake, subsets):
  """KID from the definition (Binkowski et al. 2018, Eq. 4 with k(x, y) = (x.y / d + 1)^3), per
  subset of row indices (real_idx, fake_idx), in float64; mean and std over subsets."""
  values = []
  for real_idx, fake_idx in subsets:
    x, y = real[real_idx].astype(np.float64), fake[fake_idx].astype(np.float64)
    m, d = x.shape
    k = lambda a, b, d=d: (a @ b.T / d + 1.0) ** 3
    kxx, kyy = k(x, x), k(y, y)
    values.append(
      (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * k(x, y).mean()
    )
  return np.mean(values), np.std(values)


def _numpy_inception_score(logits, splits):
  """exp(mean_x KL(p(y|x) || p(y))) per consecutive split, p(y) the split's mean prediction."""
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  scores = []
  for part in np.array_split(p, splits):
    scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(part.mean(0))), 1))))
  return np.mean(scores), np.std(scores)


def test_kid_and_inception_score_commands(tmp_path, graph_pb, capsys):
  fake_images = _images(8, seed=3)
  real_images = _images(8, seed=4).astype(np.float32) / 255.0
  np.save(tmp_path / "a.npy", fake_images)
  np.savez(tmp_path / "b.npz", images=real_images)
  assert (
    kid.main(
      [
        "--samples",
        str(tmp_path / "a.npy"),
        "--reference",
        str(tmp_path / "b.npz"),
        "--inception_path",
        graph_pb,
        "--noprogress",
        "--num_subsets",
        "3",
        "--subset_size",
        "5",
        "--seed",
        "7",
        "--batch_size",
        "4",
      ]
    )
    == 0
  )
  line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("KID:"))
  mean, std = (float(v) for v in line.split("KID:")[1].split("+-"))
  # The same value from the network's features, with the subsets drawn as documented (numpy
  # Generator(seed): real rows, then fake rows, per subset).
  model = networks.inception_network(graph_pb, download=False)
  extract = lambda images: features.extract(
    model, images, batch_size=4, progress=False
  )  # as the command runs it
  fake, real = extract(fake_images)["pool_3"], extract(real_images)["pool_3"]
  rng = np.random.default_rng(7)
  subsets = [(rng.choice(8, 5, replace=False), rng.choice(8, 5, replace=False)) for _ in range(3)]
  want_mean, want_std = _numpy_kid(real, fake, subsets)
  assert mean == pytest.approx(want_mean, rel=1e-4) and std == pytest.approx(want_std, rel=1e-4)
  # IS from given logits (the narrow test graph's logits are nearly uniform, IS ~ 1).
  logits = np.random.default_rng(5).normal(0, 3, (20, 1008))
  np.savez(tmp_path / "logits.npz", logits=logits)
  assert inception_score.main(["--samples", str(tmp_path / "logits.npz"), "--splits", "2"]) == 0
  line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("IS:"))
  mean, std = (float(v) for v in line.split("IS:")[1].split("+-"))
  want_mean, want_std = _numpy_inception_score(logits, 2)
  assert mean == pytest.approx(want_mean, abs=1e-6) and std == pytest.approx(want_std, abs=1e-6)
  assert mean > 1.0 + 1e-3  # not the degenerate value of identical predictions


def test_precision_recall_command_on_cached_features(tmp_path, capsys):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "real.npz", fc2=rng.normal(size=(40, 8)))
  np.savez(tmp_path / "fake.npz", fc2=rng.normal(size=(30, 8)) * 0.1)
  # Features need no network, so no weights are looked up.
  assert (
    precision_recall.main(
      ["--samples", str(tmp_path / "fake.npz"), "--reference", str(tmp_path / "real.npz")]
    )
    == 0
  )
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
    "missing folder": str(inputs / "nope"),
    "empty folder": str(inputs / "empty"),
    "corrupt image": str(corrupt),
    "mixed sizes": str(mixed),
    "one image": one,
    "4 channels": str(inputs / "rgba.npy"),
    "wrong rank": str(inputs / "flat.npy"),
    "float out of range": str(inputs / "range.npy"),
  }


@pytest.mark.parametrize("command", [fid, kid, precision_recall, inception_score])
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(command, tmp_path, graph_pb, capsys):
  bad = _bad_inputs(tmp_path)
  good = _folder(tmp_path / "inputs" / "good", _images(5))
  weights = (
    ["--inception_path", graph_pb]
    if command is not precision_recall
    else ["--vgg16_path", str(tmp_path / "inputs" / "no_vgg.h5")]
  )
  extra = {
    fid: ["--save_stats", str(tmp_path / "stats.npz")],
    inception_score: ["--splits", "2"],
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


def test_help_and_subprocess_exit_code(tmp_path, capsys):
  assert fid.main(["--help"]) == 0  # in-process; the process boundary is checked below
  out = capsys.readouterr().out
  for flag in ("--samples", "--reference", "--save_stats", "--inception_path", "--batch_size"):
    assert flag in out
  bad = subprocess.run(
    [
      sys.executable,
      "-m",
      "evaluation.fid",
      "--samples",
      str(tmp_path / "x"),
      "--reference",
      str(tmp_path / "y"),
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, networks.CACHE_DIR_ENV: str(tmp_path / "c")},
  )
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
    f"error: --samples: image folder {tmp_path / 'x'} does not exist"
  ]


def test_16_bit_grey_pngs_are_read_at_full_depth(tmp_path, graph_pb, capsys):
  values = np.random.default_rng(0).integers(0, 65536, (4, 16, 16)).astype(np.uint16)
  values[0, 0, :4] = [0, 255, 256, 65535]  # 8-bit clipping would make the last two 255
  folder = tmp_path / "inputs" / "deep"
  folder.mkdir(parents=True)
  for i, image in enumerate(values):
    Image.fromarray(image).save(folder / f"{i}.png")  # PIL mode I;16
  with Image.open(folder / "0.png") as image:
    assert image.mode in ("I;16", "I")
  read = next(image_io.open_images(folder).batches(4))
  assert read.dtype == np.float32 and read.shape == (4, 16, 16, 1)
  np.testing.assert_array_equal(read[..., 0], values.astype(np.float32) / np.float32(65535.0))
  # 8-bit files next to a 16-bit one are read as float [0, 1] too (x / 255).
  Image.fromarray(np.full((16, 16), 51, np.uint8)).save(folder / "9.png")
  mixed = next(image_io.open_images(folder).batches(5))
  assert mixed.dtype == np.float32 and np.all(mixed[4] == np.float32(51 / 255))
  # The metric sees the same values as the equivalent float array.
  np.save(tmp_path / "inputs" / "deep.npy", mixed)
  outputs = []
  for source in (str(folder), str(tmp_path / "inputs" / "deep.npy")):
    assert (
      inception_score.main(
        [
          "--samples",
          source,
          "--splits",
          "1",
          "--inception_path",
          graph_pb,
          "--noprogress",
          "--nojit_compile",
        ]
      )
      == 0
    )
    outputs.append(capsys.readouterr().out)
  assert outputs[0] == outputs[1]
