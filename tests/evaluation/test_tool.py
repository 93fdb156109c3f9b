"""Inputs (recursive folders, .zip, webp/bmp/tiff, generator functions, tf.data), the
protocol record, subsample intervals, the clean resize, named references, device/precision flags.

Tiny inputs and a 1/32-width Inception graph keep every test at seconds."""

import gzip
import json
import os
import struct
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from evaluation import (
  api,
  features,
  fid,
  image_io,
  inception_score,
  kid,
  networks,
  precision_recall,
  protocol,
)
from tests.evaluation import graphs


@pytest.fixture(scope="module")
def graph_pb(tmp_path_factory):
  path = tmp_path_factory.mktemp("weights") / networks.INCEPTION_PB
  graphs.write_inception_graph_def(path, width_divisor=32)
  return str(path)


@pytest.fixture(scope="module")
def model(graph_pb):
  return networks.inception_network(graph_pb, download=False)


@pytest.fixture(scope="module")
def _built_networks(graph_pb, model):
  """{(weights file, dtype policy): network} of this module, seeded with `model`."""
  return {(os.path.realpath(graph_pb), None): model}


def one_network_per_weights_file(monkeypatch, built: dict) -> None:
  """Makes the commands and the API load each weights file's network once per module (the real
  `networks.inception_network` builds it the first time, into `built`): they then share one model
  and its traced feature steps, where a 94-layer trace per call would dominate the module. The
  weights are still told apart per file (another file, or a dtype policy, builds its own)."""
  real = networks.inception_network

  def inception_network(weights_path=None, *, download=True, dtype_policy=None):
    if weights_path is None:
      return real(weights_path, download=download, dtype_policy=dtype_policy)
    key = (os.path.realpath(weights_path), dtype_policy)
    if key not in built:
      built[key] = real(weights_path, download=download, dtype_policy=dtype_policy)
    return built[key]

  monkeypatch.setattr(networks, "inception_network", inception_network)


@pytest.fixture(autouse=True)
def _one_network_per_weights_file(monkeypatch, _built_networks):
  one_network_per_weights_file(monkeypatch, _built_networks)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
  monkeypatch.setenv(networks.CACHE_DIR_ENV, str(tmp_path / "cache"))
  monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
  for name in (
    networks.INCEPTION_PATH_ENV,
    networks.VGG16_PATH_ENV,
    networks.VGG16_TORCH_PATH_ENV,
    "GENMODELS_DATA_DIR",
  ):
    monkeypatch.delenv(name, raising=False)


def _images(n, size=16, channels=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels)).astype(np.uint8)


def _pool3(model, images, **kwargs):
  return features.extract(model, images, batch_size=4, progress=False, jit_compile=False, **kwargs)[
    "pool_3"
  ]


def _value(out: str, name: str) -> tuple[float, list[float] | None]:
  """(value, [lo, hi] or None) of the `<name>: v [lo, hi]` line."""
  line = next(l for l in out.splitlines() if l.startswith(f"{name}:"))
  rest = line.split(":", 1)[1].split("+-")[0]
  value = float(rest.split()[0])
  if "[" in rest:
    return value, [float(v) for v in rest.split("[")[1].split("]")[0].split(",")]
  return value, None


def _protocol_line(out: str) -> dict:
  line = next(l for l in out.splitlines() if l.startswith("protocol:"))
  return dict(item.split("=", 1) for item in line.split()[1:])


def _one_error_line(capsys) -> str:
  """The one `error:` line (the narrow test graph's `note:` line aside)."""
  err = [l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("note: ")]
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


# ------------------------------------------------------------------------------------- inputs


def test_nested_folders_zip_and_other_formats_read_the_same_pixels(tmp_path):
  images = _images(6, seed=1)
  root = tmp_path / "nested"
  names = ["a/0.png", "a/b/1.webp", "2.bmp", "c/3.tiff", "c/4.tif", "c/d/e/5.jpeg"]
  for image, name in zip(images, names):
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    kwargs = (
      {"lossless": True}
      if name.endswith(".webp")
      else ({"quality": 100, "subsampling": 0} if name.endswith(".jpeg") else {})
    )
    Image.fromarray(image).save(root / name, **kwargs)
  (root / "notes.txt").write_text("not an image")  # ignored
  folder = image_io.open_images(root)
  order = sorted(names)  # sorted relative paths
  assert [f.relative_to(root).as_posix() for f in folder.files] == order
  want = images[[names.index(n) for n in order]]
  got = np.concatenate(list(folder.batches(4, workers=3)))
  lossless = [not n.endswith(".jpeg") for n in order]
  np.testing.assert_array_equal(got[lossless], want[lossless])
  assert np.abs(got[~np.array(lossless)].astype(int) - want[~np.array(lossless)]).max() <= 8
  # One thread and three threads (prefetching) give the same batches, in order.
  np.testing.assert_array_equal(np.concatenate(list(folder.batches(4, workers=1))), got)
  # The same files in a .zip archive (members in sub-folders).
  archive = tmp_path / "images.zip"
  with zipfile.ZipFile(archive, "w") as z:
    for name in names:
      z.write(root / name, arcname=f"top/{name}")
  zipped = image_io.open_images(archive)
  assert len(zipped) == 6
  np.testing.assert_array_equal(np.concatenate(list(zipped.batches(5, workers=2))), got)


def test_bad_archives_and_generators_give_one_line_errors(tmp_path, graph_pb, capsys):
  empty = tmp_path / "empty.zip"
  with zipfile.ZipFile(empty, "w") as z:
    z.writestr("readme.txt", "no images")
  corrupt = tmp_path / "corrupt.zip"
  with zipfile.ZipFile(corrupt, "w") as z:
    z.writestr("0.png", b"\x89PNG broken")
  good = tmp_path / "good.npy"
  np.save(good, _images(4))
  for bad, words in ((empty, "holds no"), (corrupt, "cannot read image")):
    assert (
      fid.main(
        [
          "--samples",
          str(good),
          "--reference",
          str(bad),
          "--inception_path",
          graph_pb,
          "--noprogress",
        ]
      )
      == 2
    )
    assert words in _one_error_line(capsys)
  with pytest.raises(image_io.ImageInputError, match="returned 3 images"):
    api.compute_fid(
      lambda n: _images(3),
      8,
      reference=str(good),
      inception_path=graph_pb,
      batch_size=4,
      jit_compile=False,
    )
  with pytest.raises(image_io.ImageInputError, match="num_samples"):
    api.compute_fid(
      lambda n: _images(n),
      None,
      reference=str(good),
      inception_path=graph_pb,
      batch_size=4,
      jit_compile=False,
    )
  with pytest.raises(image_io.ImageInputError, match=r"\[0, 1\]"):
    api.compute_fid(
      lambda n: np.full((n, 8, 8, 3), 2.0, np.float32),
      4,
      reference=str(good),
      inception_path=graph_pb,
      batch_size=4,
      jit_compile=False,
    )


def test_generator_function_and_dataset_equal_the_command_on_pngs(
  tmp_path, graph_pb, model, capsys
):
  samples = _images(10, seed=2)
  reference = _images(8, seed=3)
  for folder, images in (("samples", samples), ("reference", reference)):
    (tmp_path / folder).mkdir()
    for i, image in enumerate(images):
      Image.fromarray(image).save(tmp_path / folder / f"{i:02d}.png")
  # The folders of PNGs, as the command reads them (the narrow random graph gives tiny FIDs,
  # so compare full-precision values, not the printed 6 decimals).
  command = api.compute_fid(
    str(tmp_path / "samples"),
    reference=str(tmp_path / "reference"),
    inception_path=graph_pb,
    batch_size=4,
    cache=False,
    jit_compile=False,
  ).value
  want = fid.frechet_distance(
    *fid.feature_statistics(_pool3(model, samples)),
    *fid.feature_statistics(_pool3(model, reference)),
  )
  assert command == pytest.approx(want, rel=1e-4) and command > 0
  calls = []

  def generate(n):  # float [0, 1], as models return them; drawn in order
    start = sum(calls)
    calls.append(n)
    return tf.constant(samples[start : start + n].astype(np.float32) / 255.0)

  result = api.compute_fid(
    generate,
    10,
    reference=str(tmp_path / "reference"),
    inception_path=graph_pb,
    batch_size=4,
    cache=False,
    jit_compile=False,
  )
  assert calls == [4, 4, 2]
  assert result.value == pytest.approx(command, rel=1e-5)
  dataset = tf.data.Dataset.from_tensor_slices(samples).batch(3)  # rebatched to 4
  from_dataset = api.compute_fid(
    dataset,
    reference=reference,
    inception_path=graph_pb,
    batch_size=4,
    cache=False,
    jit_compile=False,
  )
  assert from_dataset.value == pytest.approx(command, rel=1e-5)
  assert from_dataset.protocols["samples"]["image_count"] == 10
  assert str(from_dataset).startswith("FID: ")


# ----------------------------------------------------------------------------------- protocol


def test_protocol_is_stored_printed_and_checked(tmp_path, graph_pb, model, capsys):
  samples, reference = tmp_path / "s.npy", tmp_path / "r.npy"
  np.save(samples, _images(5, seed=4))
  np.save(reference, _images(6, size=16, seed=5))
  stats = tmp_path / "ref.stats"
  # Batches of 4 (the last padded): one traced shape per image size for 5 and 6 images.
  base = ["--inception_path", graph_pb, "--noprogress", "--nojit_compile", "--batch_size", "4"]
  assert (
    fid.main(
      ["--samples", str(samples), "--reference", str(reference), "--save_stats", str(stats)] + base
    )
    == 0
  )
  out = capsys.readouterr().out
  printed = _protocol_line(out)
  sha = protocol.weights_sha256(model)
  assert printed["network"] == "inception-2015" and printed["weights_sha256"] == sha
  assert printed["resize"] == "tf1-legacy-bilinear" and printed["precision"] == "float32"
  assert printed["samples"] == "5x16x16x3:uint8" and printed["reference"] == "6x16x16x3:uint8"
  with np.load(stats) as data:
    stored = json.loads(str(data["protocol"]))
  assert stored["weights_sha256"] == sha and stored["image_count"] == 6
  assert stored["feature"] == "pool_3" and stored["resize"] == "tf1-legacy-bilinear"
  # Statistics made with the clean resize cannot be compared with tf1-resized samples...
  clean_stats = tmp_path / "clean.stats"
  assert (
    fid.main(
      [
        "--samples",
        str(samples),
        "--reference",
        str(reference),
        "--resize",
        "clean",
        "--save_stats",
        str(clean_stats),
      ]
      + base
    )
    == 0
  )
  assert _protocol_line(capsys.readouterr().out)["resize"] == "clean-pil-bicubic-antialias"
  assert fid.main(["--samples", str(samples), "--reference", str(clean_stats)] + base) == 2
  assert "different protocols: resize tf1-legacy-bilinear vs clean" in _one_error_line(capsys)
  # ... nor with samples of another size, nor under another network's weights.
  small = tmp_path / "small.npy"
  np.save(small, _images(5, size=8, seed=6))
  assert fid.main(["--samples", str(small), "--reference", str(stats)] + base) == 2
  assert "image_size_hw 8x8 vs 16x16" in _one_error_line(capsys)
  other = tmp_path / "other" / networks.INCEPTION_PB
  other.parent.mkdir()
  graphs.write_inception_graph_def(other, width_divisor=32, seed=1)
  assert (
    fid.main(
      [
        "--samples",
        str(samples),
        "--reference",
        str(stats),
        "--inception_path",
        str(other),
        "--noprogress",
        "--nojit_compile",
        "--batch_size",
        "4",
      ]
    )
    == 2
  )
  assert "weights_sha256" in _one_error_line(capsys)
  # --nostrict_protocol compares anyway, with a warning; the same protocol compares silently.
  assert (
    fid.main(
      ["--samples", str(samples), "--reference", str(clean_stats), "--nostrict_protocol"] + base
    )
    == 0
  )
  assert "warning: --samples and --reference were made under different" in capsys.readouterr().err
  assert fid.main(["--samples", str(samples), "--reference", str(stats)] + base) == 0
  assert _value(capsys.readouterr().out, "FID")[0] == pytest.approx(_value(out, "FID")[0], rel=1e-6)
  # TTUR's own statistics files carry no record: accepted with a note.
  with np.load(stats) as data:
    np.savez(tmp_path / "ttur.npz", mu=data["mu"], sigma=data["sigma"])
  assert (
    fid.main(["--samples", str(samples), "--reference", str(tmp_path / "ttur.npz")] + base) == 0
  )
  assert "carries no protocol record" in capsys.readouterr().err


def test_protocol_mismatch_is_found_before_the_samples_are_extracted(
  tmp_path, graph_pb, monkeypatch, capsys
):
  samples, reference = tmp_path / "s.npy", tmp_path / "r.npy"
  np.save(samples, _images(5, seed=4))
  np.save(reference, _images(6, seed=5))
  base = ["--inception_path", graph_pb, "--noprogress", "--nojit_compile", "--batch_size", "4"]
  clean_stats = tmp_path / "clean.stats"
  assert (
    fid.main(
      [
        "--samples",
        str(reference),
        "--reference",
        str(reference),
        "--resize",
        "clean",
        "--save_stats",
        str(clean_stats),
      ]
      + base
    )
    == 0
  )
  capsys.readouterr()
  extracted = []
  real_extract = features.extract
  monkeypatch.setattr(
    features, "extract", lambda *a, **k: extracted.append(1) or real_extract(*a, **k)
  )
  assert fid.main(["--samples", str(samples), "--reference", str(clean_stats)] + base) == 2
  assert _one_error_line(capsys) == (
    "error: --samples and --reference were made under different protocols: resize "
    "tf1-legacy-bilinear vs clean-pil-bicubic-antialias (pass --nostrict_protocol to compare "
    "anyway)"
  )
  assert not extracted  # refused before any image went through the network
  # Cached reference features of the clean resize against tf1 samples: the same, for KID too.
  np.savez(
    tmp_path / "clean_features.npz",
    pool_3=np.zeros((6, 64), np.float32),
    protocol=np.str_(
      json.dumps(
        {
          **protocol.record(
            network="inception-2015",
            weights_sha="x" * 64,
            feature="pool_3",
            resize="clean-pil-bicubic-antialias",
            precision="float32",
            info={"count": 6, "height": 16, "width": 16, "channels": 3},
          )
        }
      )
    ),
  )
  assert (
    kid.main(
      ["--samples", str(samples), "--reference", str(tmp_path / "clean_features.npz")] + base
    )
    == 2
  )
  assert "different protocols: weights_sha256" in _one_error_line(capsys)
  assert not extracted


def test_fewer_samples_than_feature_dimensions_warn(tmp_path, graph_pb, capsys):
  """The narrow graph's pool_3 has 64 dimensions: 10 images give a singular covariance."""
  samples = tmp_path / "s.npy"
  np.save(samples, _images(10, seed=4))
  args = [
    "--samples",
    str(samples),
    "--reference",
    str(samples),
    "--inception_path",
    graph_pb,
    "--noprogress",
    "--nojit_compile",
    "--batch_size",
    "5",
    "--nocache",
  ]
  assert fid.main(args) == 0
  captured = capsys.readouterr()
  assert captured.out.splitlines()[0].startswith("FID: ")
  warning = (
    "warning: {} has 10 feature vectors for 64 dimensions: the covariance is singular "
    "and FID unreliable (two identical sets can give a small negative value); use at "
    "least 64 images"
  )
  err = [l for l in captured.err.splitlines() if not l.startswith("note: ")]
  assert err == [warning.format("samples"), warning.format("reference")]


def test_compute_inception_score_equals_the_command(tmp_path, graph_pb, model, capsys):
  images = _images(12, seed=21)
  np.save(tmp_path / "s.npy", images)
  result = api.compute_inception_score(
    images, splits=3, inception_path=graph_pb, batch_size=4, jit_compile=False
  )
  logits = features.extract(model, images, batch_size=4, progress=False, jit_compile=False)[
    "logits"
  ].astype(np.float64)
  # By hand: softmax, per consecutive third exp(mean KL(p(y|x) || mean p(y|x))).
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  scores = [np.exp((q * (np.log(q) - np.log(q.mean(0)))).sum(1).mean()) for q in np.split(p, 3)]
  assert result.name == "IS"
  assert result.value == pytest.approx(np.mean(scores), rel=1e-5)
  assert result.extra["std"] == pytest.approx(np.std(scores), rel=1e-3, abs=1e-9)
  assert result.protocols["samples"]["feature"] == "logits"
  assert (
    inception_score.main(
      [
        "--samples",
        str(tmp_path / "s.npy"),
        "--splits",
        "3",
        "--inception_path",
        graph_pb,
        "--noprogress",
        "--nojit_compile",
        "--batch_size",
        "4",
      ]
    )
    == 0
  )
  line = capsys.readouterr().out.splitlines()[0]
  assert line == f"IS: {result.value:.6f} +- {result.extra['std']:.6f}"


def test_reference_cache_keeps_the_protocol_and_depends_on_resize(tmp_path, graph_pb, capsys):
  samples, reference = tmp_path / "s.npy", tmp_path / "r.npy"
  np.save(samples, _images(4, seed=7))
  np.save(reference, _images(4, seed=8))
  args = [
    "--samples",
    str(samples),
    "--reference",
    str(reference),
    "--inception_path",
    graph_pb,
    "--noprogress",
    "--nojit_compile",
  ]
  assert kid.main(args + ["--num_subsets", "2"]) == 0
  first = capsys.readouterr().out
  assert kid.main(args + ["--num_subsets", "2"]) == 0  # reference from the cache
  second = capsys.readouterr().out
  assert first == second
  assert len(list((tmp_path / "cache" / "reference_features").glob("*.npz"))) == 1
  assert kid.main(args + ["--num_subsets", "2", "--resize", "clean"]) == 0
  assert len(list((tmp_path / "cache" / "reference_features").glob("*.npz"))) == 2
  assert _protocol_line(capsys.readouterr().out)["resize"] == "clean-pil-bicubic-antialias"


# ------------------------------------------------------------------------------------- resize


def test_clean_resize_is_clean_fids_pil_bicubic_before_the_network(model):
  images = _images(4, size=20, seed=9)  # 4 images: the clean resize shares a traced shape
  clean = _pool3(model, images, resize="clean")
  # By hand: PIL bicubic per channel in float mode to 299, clipped, then the network (whose TF1
  # resize is then the identity).
  by_hand = np.stack(
    [
      np.stack(
        [
          np.asarray(
            Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(
              (299, 299), Image.BICUBIC
            )
          ).clip(0, 255)
          for c in range(3)
        ],
        -1,
      )
      for image in images
    ]
  )
  want = model(by_hand.astype(np.float32))["pool_3"].numpy()
  np.testing.assert_allclose(clean, want, rtol=1e-4, atol=1e-5)
  tf1 = _pool3(model, images)
  assert np.abs(clean - tf1).max() > 1e-3 * np.abs(tf1).max()  # the modes do differ
  with pytest.raises(ValueError, match="resize must be one of"):
    _pool3(model, images, resize="bilinear")


# ------------------------------------------------------------------------- subsample intervals


def _subsample_interval(estimate, values, rates, confidence=0.95, center=None):
  """[theta_n - k q_hi, theta_n - k q_lo] of the deviations values - theta_n (or values - center),
  with k = sqrt(r / (1 - r)), r the mean of the realised rates b_i / n_i."""
  estimate = np.asarray(estimate)
  low, high = np.quantile(
    np.asarray(values) - (estimate if center is None else center),
    [(1 - confidence) / 2, (1 + confidence) / 2],
    axis=0,
  )
  r = np.mean(rates)
  k = np.sqrt(r / (1 - r))
  return estimate - k * high, estimate - k * low


def test_fid_subsample_interval_equals_the_documented_draws(tmp_path, graph_pb, capsys):
  rng = np.random.default_rng(10)
  fake = rng.normal(size=(8, 3)).astype(np.float32)  # features are read as float32
  real = (rng.normal(size=(9, 3)) * 1.5 + 0.5).astype(np.float32)
  np.savez(tmp_path / "f.npz", pool_3=fake)
  np.savez(tmp_path / "r.npz", pool_3=real)
  result = api.compute_fid(
    str(tmp_path / "f.npz"),
    reference=str(tmp_path / "r.npz"),
    subsamples=20,
    subsample_seed=3,
    confidence=0.9,
  )
  draws = np.random.default_rng(3)
  values = []
  for _ in range(20):  # per replicate: 4 of 8 sample rows, then 5 of 9 reference rows, distinct
    i, j = draws.choice(8, 4, replace=False), draws.choice(9, 5, replace=False)
    values.append(
      fid.frechet_distance(*fid.feature_statistics(fake[i]), *fid.feature_statistics(real[j]))
    )
  estimate = fid.frechet_distance(*fid.feature_statistics(fake), *fid.feature_statistics(real))
  assert result.value == pytest.approx(estimate, rel=1e-6)
  low, high = result.interval
  assert (low, high) == pytest.approx(
    _subsample_interval(estimate, values, (4 / 8, 5 / 9), confidence=0.9), rel=1e-6
  )
  # The command prints `value [lo, hi]` with the same numbers (6 decimals) and the method.
  args = [
    "--samples",
    str(tmp_path / "f.npz"),
    "--reference",
    str(tmp_path / "r.npz"),
    "--inception_path",
    graph_pb,
    "--noprogress",
    "--nojit_compile",
    "--batch_size",
    "4",
  ]
  assert (
    fid.main(args + ["--subsamples", "20", "--subsample_seed", "3", "--confidence", "0.9"]) == 0
  )
  lines = capsys.readouterr().out.splitlines()
  assert lines == [
    f"FID: {result.value:.6f} [{low:.6f}, {high:.6f}]",
    "interval: 90% for the population value, 20 subsamples without replacement at rate 0.5 "
    "(Politis-Romano-Wolf, finite-population corrected), seed 3",
    "protocol: unknown",
  ]
  # The removed flag and option say what replaces them.
  assert fid.main(args + ["--bootstrap", "20"]) == 2
  assert _one_error_line(capsys) == (
    "error: --bootstrap was removed: resampling with replacement duplicates images, which "
    "inflates FID and breaks KID's unbiased estimate; use --subsamples N (subsampling without "
    "replacement, see docs/evaluation.md)"
  )
  with pytest.raises(TypeError, match="bootstrap was removed.*subsamples=N"):
    api.compute_fid(str(tmp_path / "f.npz"), reference=str(tmp_path / "r.npz"), bootstrap=20)


def test_fid_subsample_interval_against_statistics(tmp_path):
  """Reference statistics stay fixed; samples subsampled; the one-eigendecomposition path agrees
  with frechet_distance."""
  rng = np.random.default_rng(2)
  fake = rng.normal(size=(12, 3))
  mu, sigma = rng.normal(size=3), np.cov(rng.normal(size=(20, 3)), rowvar=False)
  low, high = fid.subsample_interval(
    fake, None, reference_stats=(mu, sigma), num=15, seed=1, rate=0.25
  )
  draws = np.random.default_rng(1)
  values = [
    fid.frechet_distance(
      *fid.feature_statistics(fake[draws.choice(12, 3, replace=False)]), mu, sigma
    )
    for _ in range(15)
  ]
  estimate = fid.frechet_distance(*fid.feature_statistics(fake), mu, sigma)
  q_lo, q_hi = np.quantile(np.asarray(values) - estimate, [0.025, 0.975])
  k = np.sqrt(0.25 / 0.75)
  assert (low, high) == pytest.approx((estimate - k * q_hi, estimate - k * q_lo), rel=1e-7)


def _numpy_precision_recall(real, fake, real_ids, fake_ids, k):
  """kynkaat's equations with bootstrap copies (same id) excluded from each other's k-NN."""

  def radii(x, ids):
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    d[ids[:, None] == ids[None, :]] = np.inf
    return np.sort(d, axis=1)[:, k - 1]

  rr, rf = radii(real, real_ids), radii(fake, fake_ids)
  d = ((fake[:, None] - real[None]) ** 2).sum(-1)  # [M, N]
  return (d <= rr[None]).any(1).mean(), (d <= rf[:, None]).any(0).mean()


def test_precision_recall_ids_exclude_copies_of_a_sample():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(30, 5)).astype(np.float32)
  fake = (rng.normal(size=(25, 5)) * 0.8 + 0.3).astype(np.float32)
  j, i = rng.integers(0, 30, 30), rng.integers(0, 25, 25)
  assert len(set(j)) < 30  # copies present
  got = precision_recall.precision_recall(real[j], fake[i], k=3, real_ids=j, fake_ids=i)
  want = _numpy_precision_recall(real[j].astype(np.float64), fake[i].astype(np.float64), j, i, 3)
  assert got == pytest.approx(want, abs=1e-12)
  # Copies as neighbours would shrink the balls: with k=1 a copied sample's radius would be 0.
  radii = precision_recall.manifold_radii(real[j], k=1, ids=j)
  d = ((real[j][:, None].astype(np.float64) - real[j][None]) ** 2).sum(-1)
  d[j[:, None] == j[None, :]] = np.inf
  np.testing.assert_allclose(radii, d.min(1), rtol=1e-5)
  assert radii.min() > 0 and precision_recall.manifold_radii(real[j], k=1).min() == 0


def test_precision_recall_subsample_interval(capsys, tmp_path):
  rng = np.random.default_rng(0)
  real = rng.normal(size=(30, 5)).astype(np.float32)
  fake = (rng.normal(size=(25, 5)) * 0.8 + 0.3).astype(np.float32)
  np.savez(tmp_path / "real.npz", fc2=real)
  np.savez(tmp_path / "fake.npz", fc2=fake)
  assert (
    precision_recall.main(
      [
        "--samples",
        str(tmp_path / "fake.npz"),
        "--reference",
        str(tmp_path / "real.npz"),
        "--subsamples",
        "10",
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  ids = lambda n: np.arange(n)
  estimate = _numpy_precision_recall(
    real.astype(np.float64), fake.astype(np.float64), ids(30), ids(25), 3
  )
  draws = np.random.default_rng(0)
  values = []
  for _ in range(10):
    fi, rj = draws.choice(25, 13, replace=False), draws.choice(30, 15, replace=False)
    values.append(
      _numpy_precision_recall(real[rj].astype(np.float64), fake[fi].astype(np.float64), rj, fi, 3)
    )
  # Precision/recall: deviations from the replicates' mean (the expected value at these sizes).
  want_low, want_high = _subsample_interval(
    estimate, values, (13 / 25, 15 / 30), center=np.mean(values, axis=0)
  )
  for column, name in enumerate(("precision", "recall")):
    value, (low, high) = _value(out, name)
    assert value == pytest.approx(estimate[column], abs=6e-7)
    assert low == pytest.approx(want_low[column], abs=6e-7)  # 6 decimals
    assert high == pytest.approx(want_high[column], abs=6e-7)
  assert "protocol: unknown" in out  # features without a record
  assert (
    "interval: 95% for the expected value at these set sizes, 10 subsamples without replacement "
    "at rate 0.5 (Politis-Romano-Wolf, finite-population corrected), seed 0\n" in out
  )


def test_kid_subsample_interval(tmp_path, capsys):
  rng = np.random.default_rng(1)
  real, fake = rng.normal(size=(12, 4)), rng.normal(size=(10, 4)) + 0.5
  np.savez(tmp_path / "real.npz", pool_3=real)
  np.savez(tmp_path / "fake.npz", pool_3=fake)
  assert (
    kid.main(
      [
        "--samples",
        str(tmp_path / "fake.npz"),
        "--reference",
        str(tmp_path / "real.npz"),
        "--subsamples",
        "8",
        "--num_subsets",
        "3",
        "--subset_size",
        "5",
      ]
    )
    == 0
  )
  value, (low, high) = _value(capsys.readouterr().out, "KID")
  estimate = kid.kernel_inception_distance(real, fake, num_subsets=3, subset_size=5)[0]
  assert value == pytest.approx(estimate, rel=1e-5)
  draws = np.random.default_rng(0)
  values = []
  for _ in range(8):  # subsets of 5 of >= 10 rows: of round(0.5 * 5) = 3 of the half-samples
    i, j = draws.choice(10, 5, replace=False), draws.choice(12, 6, replace=False)
    values.append(kid.kernel_inception_distance(real[j], fake[i], num_subsets=3, subset_size=3)[0])
  # KID is unbiased: deviations from the replicates' mean (the estimate's own subsets aside).
  assert (low, high) == pytest.approx(
    _subsample_interval(estimate, values, (5 / 10, 6 / 12), center=np.mean(values)), rel=1e-5
  )


# --------------------------------------------------------------------------- named references


def _write_idx(path, images):
  path.parent.mkdir(parents=True, exist_ok=True)
  with gzip.open(path, "wb") as f:
    f.write(struct.pack(">4I", 2051, *images.shape[:3]) + images.tobytes())


def test_tfds_reference_reads_the_local_copy_once_and_caches(
  tmp_path, graph_pb, model, capsys, monkeypatch
):
  digits = _images(6, size=28, channels=1, seed=12)
  _write_idx(tmp_path / "data" / "mnist" / "t10k-images-idx3-ubyte.gz", digits[..., 0])
  monkeypatch.setenv("GENMODELS_DATA_DIR", str(tmp_path / "data"))
  samples = tmp_path / "s.npy"
  np.save(samples, _images(5, size=28, channels=1, seed=13))
  args = [
    "--samples",
    str(samples),
    "--reference",
    "tfds:mnist/test",
    "--inception_path",
    graph_pb,
    "--noprogress",
    "--nojit_compile",
  ]
  result = api.compute_fid(
    str(samples),
    reference="tfds:mnist/test",
    inception_path=graph_pb,
    batch_size=4,
    jit_compile=False,
  )
  want = fid.frechet_distance(
    *fid.feature_statistics(_pool3(model, np.load(samples))),
    *fid.feature_statistics(_pool3(model, digits)),
  )
  assert result.value == pytest.approx(want, rel=1e-4)
  assert result.protocols["reference"]["image_count"] == 6
  os.remove(tmp_path / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")
  assert fid.main(args + ["--batch_size", "4", "--nodownload"]) == 0  # cached: not read again
  out = capsys.readouterr().out
  assert out.splitlines()[0] == f"FID: {result.value:.6f}"
  assert _protocol_line(out)["reference"] == "6x28x28x1:uint8"
  # Offline, nothing local, nothing prepared: one line, exit 2.
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  assert (
    fid.main(
      [
        "--samples",
        str(samples),
        "--reference",
        "tfds:mnist/train",
        "--nodownload",
        "--inception_path",
        graph_pb,
        "--noprogress",
      ]
    )
    == 2
  )
  assert "not available offline" in _one_error_line(capsys)
  assert (
    fid.main(["--samples", str(samples), "--reference", "tfds:mnist", "--inception_path", graph_pb])
    == 2
  )
  assert "tfds:<name>/<split>" in _one_error_line(capsys)


# ---------------------------------------------------------------------------- device/precision


def test_device_precision_and_vgg_flags(tmp_path, graph_pb, capsys):
  samples = tmp_path / "s.npy"
  np.save(samples, _images(4, seed=14))
  base = [
    "--samples",
    str(samples),
    "--reference",
    str(samples),
    "--inception_path",
    graph_pb,
    "--noprogress",
    "--nocache",
    "--nojit_compile",
  ]
  assert fid.main(base + ["--device", "tpu:7"]) == 2
  assert "--device tpu:7: no such device" in _one_error_line(capsys)
  assert fid.main(base + ["--precision", "float16"]) == 2
  _one_error_line(capsys)
  assert fid.main(base + ["--device", "cpu:0", "--precision", "bfloat16"]) == 0
  out = capsys.readouterr().out
  assert _protocol_line(out)["precision"] == "bfloat16"
  assert abs(_value(out, "FID")[0]) < 1e-3
  # The torch-fidelity VGG-16 is looked up (and reported missing) on its own path.
  assert (
    precision_recall.main(
      [
        "--samples",
        str(samples),
        "--reference",
        str(samples),
        "--vgg",
        "torch-fidelity",
        "--nodownload",
      ]
    )
    == 2
  )
  assert "vgg16-397923af.pth" in _one_error_line(capsys)
  assert (
    precision_recall.main(
      ["--samples", str(samples), "--reference", str(samples), "--vgg", "caffe"]
    )
    == 2
  )
  _one_error_line(capsys)
