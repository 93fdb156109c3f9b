"""`python -m experiments.ppl`: PPL of a run directory (tiny NVAE / VAE runs written here, narrow
random LPIPS-VGG and VGG-16 weight files), its protocol record and its bad-input errors."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from evaluation import lpips, networks, ppl, protocol
from experiments import nvae_train, results
from experiments import ppl as ppl_cli
from nvae_tf import NVAE
from tests.evaluation.test_lpips import torch_state_dicts
from tests.evaluation.test_networks import _keras_style_vgg_file
from tests.evaluation.test_tool import _one_error_line, _protocol_line
from tests.nvae_tf.conftest import tiny_config


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
  monkeypatch.setenv(networks.CACHE_DIR_ENV, str(tmp_path / "cache"))
  monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
  for name in (lpips.LPIPS_PATH_ENV, networks.VGG16_PATH_ENV, networks.VGG16_TORCH_PATH_ENV):
    monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def nvae_run(tmp_path_factory):
  """A run directory as experiments.nvae_mnist leaves it (settings.json, harness checkpoint), and
  the model whose weights it holds (built with seed 3: the command builds with --seed 0, so only a
  working restore gives these weights)."""
  logdir = tmp_path_factory.mktemp("nvae_run")
  s = nvae_train.RunSettings(model=tiny_config(), dataset="binarized_mnist")
  results.write_json(
    str(logdir / nvae_train.SETTINGS_FILE),
    json.loads(json.dumps(dataclasses.asdict(s), default=str)),
  )
  model = NVAE(s.model, seed=3)
  tf.train.Checkpoint(model_variables=[v.value for v in model.variables]).save(
    str(logdir / "checkpoints" / "ckpt")
  )
  return str(logdir), model


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("lpips") / "lpips_vgg.npz"
  lpips.save_weights(path, lpips.convert_state_dicts(*torch_state_dicts(2)))
  return str(path)


def _eager_generator(model, temperature):
  """latents [B, D] -> Bernoulli means, the groups' noise in decoder order, run eagerly."""
  shapes = model.latent_shapes()
  splits = np.cumsum([int(np.prod(shape)) for shape in shapes])

  def generate(latents):
    parts = np.split(np.asarray(latents, np.float32), splits[:-1], axis=1)
    noise = [tf.constant(p.reshape((-1,) + tuple(s))) for p, s in zip(parts, shapes)]
    return model.probabilities(model.decode_noise(noise, temperature=temperature)).numpy()

  return generate, int(splits[-1])


def _eager_lpips(network):
  return lambda a, b: network((tf.constant(a), tf.constant(b))).numpy()


def test_ppl_of_an_nvae_run_with_lpips(nvae_run, lpips_file, tmp_path, capsys):
  logdir, model = nvae_run
  output = tmp_path / "rows.json"
  assert (
    ppl_cli.main(
      [
        "--logdir",
        logdir,
        "--lpips_path",
        lpips_file,
        "--num_samples",
        "8",
        "--batch_size",
        "4",
        "--space",
        "w",
        "--sampling",
        "end",
        "--epsilon",
        "1e-2",
        "--seed",
        "5",
        "--temperature",
        "0.8",
        "--output",
        str(output),
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  (row,) = results.read_json(str(output))
  value = row["ppl"]["value"]
  assert float(out.split("PPL:")[1].split()[0]) == pytest.approx(value, abs=1e-6)
  # The same path by hand on the model that was saved: latents default_rng([seed, 1]), space w =
  # lerp, sampling end = t 0, the LPIPS network of the file, LPIPS / eps^2.
  generate, dim = _eager_generator(model, 0.8)
  rng = np.random.default_rng([5, 1])
  network = lpips.lpips_vgg_network(lpips_file)
  want = ppl.perceptual_path_length(
    generate,
    latent_sampler=lambda n: rng.standard_normal((n, dim)).astype(np.float32),
    num_samples=8,
    distance=_eager_lpips(network),
    epsilon=1e-2,
    interpolation="lerp",
    batch_size=4,
    seed=5,
    sampling="end",
  )
  assert value == pytest.approx(want, rel=1e-3)  # XLA (command) vs eager float32
  printed = _protocol_line(out)
  assert printed["network"] == "lpips-vgg-v0.1" and printed["metric"] == "ppl"
  assert printed["weights_sha256"] == protocol.weights_sha256(network)
  assert (printed["space"], printed["interpolation"], printed["sampling"]) == ("w", "lerp", "end")
  assert (printed["epsilon"], printed["num_samples"], printed["crop"]) == ("0.01", "8", "False")
  assert printed["image_size"] == "28x28x1"
  # The results row carries the value with its record, and the table prints both.
  assert row["ppl"]["protocol"]["sampling"] == "end" and row["model"] == "nvae"
  assert row["checkpoint"].endswith("ckpt-1")
  table = results.markdown_table([row], [("model", "Model"), ("ppl", "PPL")])
  assert "(p1)" in table and "- (p1) protocol: crop=False epsilon=0.01" in table


def test_ppl_of_a_vampprior_vae_run(tmp_path, lpips_file, capsys):
  """A finished experiments.vampprior --model=vae run: results.json settings + best/ checkpoint."""
  from experiments import data, vampprior_train

  s = vampprior_train.RunSettings(
    model="vae",
    prior="standard",
    dataset="static_mnist",
    likelihood="bernoulli",
    num_components=2,
    learn_prior_weights=False,
    warmup=1,
    lr=1e-3,
    early_stopping=0,
    test_samples=2,
    train_examples=None,
    eval_examples=None,
    image_every=1,
    z1_dim=3,
    hidden_units=8,
  )
  results.write_json(str(tmp_path / "results.json"), dict(dataclasses.asdict(s), test_nll=90.0))
  images = data.load_arrays("binarized_mnist", "test")[0][:2]
  model = vampprior_train.build_model(s, image_shape=images.shape[1:], seed=4)
  model(tf.constant(images))
  tf.train.Checkpoint(model_variables=[v.value for v in model.variables]).save(
    str(tmp_path / "best" / "ckpt")
  )
  assert (
    ppl_cli.main(
      [
        "--logdir",
        str(tmp_path),
        "--lpips_path",
        lpips_file,
        "--num_samples",
        "4",
        "--batch_size",
        "4",
        "--space",
        "w",
        "--epsilon",
        "1e-2",
      ]
    )
    == 0
  )
  value = float(capsys.readouterr().out.split("PPL:")[1].split()[0])
  # lerp between two standard-normal z (the standard prior's draws of keras SeedGenerator(0)) is
  # the decoder's path: recomputed here with the saved model and that draw.
  import keras

  seeds = keras.random.SeedGenerator(0)
  network = lpips.lpips_vgg_network(lpips_file)
  want = ppl.perceptual_path_length(
    lambda z: model.observation.mean(model.decode(tf.constant(z))).numpy(),
    latent_sampler=lambda n: model.prior.sample(n, encoder=model.encode_top, seed=seeds).numpy(),
    num_samples=4,
    distance=_eager_lpips(network),
    epsilon=1e-2,
    interpolation="lerp",
    batch_size=4,
    seed=0,
  )
  assert value == pytest.approx(want, rel=1e-4)


# (After the two LPIPS tests: experiments.ppl keeps the last distance network and its XLA-compiled
# distance, so the LPIPS ones share a compile.)
def test_ppl_defaults_are_stylegans_and_the_vgg16_distance(nvae_run, tmp_path, capsys):
  fv = ppl_cli.flags.FlagValues()
  ppl_cli.define_flags(fv)
  fv(["experiments.ppl"])
  # NVlabs/stylegan run_metrics.py ppl_zfull: epsilon 1e-4, space z, sampling full, 100k, 16.
  assert (
    fv.epsilon,
    fv.space,
    fv.sampling,
    fv.num_samples,
    fv.batch_size,
    fv.crop,
    fv.distance,
  ) == (1e-4, "z", "full", 100_000, 16, False, "lpips")
  logdir, model = nvae_run
  path = tmp_path / networks.VGG16_FILE
  vgg_body = _keras_style_vgg_file(path, width_divisor=32)
  assert (
    ppl_cli.main(
      [
        "--logdir",
        logdir,
        "--distance",
        "vgg16",
        "--vgg16_path",
        str(path),
        "--num_samples",
        "4",
        "--batch_size",
        "4",
        "--epsilon",
        "0.5",
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  generate, dim = _eager_generator(model, 1.0)
  rng = np.random.default_rng([0, 1])
  # Squared fc2 distance of the file's network, by hand; slerp (space z), t ~ U(0, 1) (full).
  z0, z1 = rng.standard_normal((4, dim)), rng.standard_normal((4, dim))
  t = np.random.default_rng(0).uniform(0, 1, 4)
  images = generate(
    np.concatenate([ppl.slerp(z0, z1, t), ppl.slerp(z0, z1, t + 0.5)]).astype(np.float32)
  )
  fc2 = vgg_body(tf.constant(images * 255.0))["fc2"].numpy().astype(np.float64)
  want = ppl.filtered_mean(((fc2[:4] - fc2[4:]) ** 2).sum(1) / 0.25)
  assert want > 0
  assert float(out.split("PPL:")[1].split()[0]) == pytest.approx(want, rel=1e-3)
  printed = _protocol_line(out)
  assert (printed["network"], printed["feature"], printed["space"], printed["sampling"]) == (
    "vgg16-keras",
    "fc2",
    "z",
    "full",
  )


def test_bad_input_is_one_error_line(nvae_run, lpips_file, tmp_path, capsys):
  logdir, _ = nvae_run
  assert ppl_cli.main([]) == 2
  assert "--logdir is required" in _one_error_line(capsys)
  assert ppl_cli.main(["--logdir", str(tmp_path / "missing"), "--lpips_path", lpips_file]) == 2
  assert "is not a directory" in _one_error_line(capsys)
  assert ppl_cli.main(["--logdir", str(tmp_path), "--lpips_path", lpips_file]) == 2
  assert "neither settings.json" in _one_error_line(capsys)
  # Weights missing offline: LPIPS never downloads; VGG-16 with --nodownload.
  assert ppl_cli.main(["--logdir", logdir]) == 2
  assert "LPIPS-VGG weights unavailable" in _one_error_line(capsys)
  assert ppl_cli.main(["--logdir", logdir, "--lpips_path", str(tmp_path / "no.npz")]) == 2
  assert "no.npz" in _one_error_line(capsys)
  assert ppl_cli.main(["--logdir", logdir, "--distance", "vgg16", "--nodownload"]) == 2
  assert "VGG-16 weights unavailable offline" in _one_error_line(capsys)
  assert ppl_cli.main(["--logdir", logdir, "--space", "x"]) == 2
  assert "--space" in _one_error_line(capsys)
  assert ppl_cli.main(["--logdir", logdir, "--epsilon", "0"]) == 2
  _one_error_line(capsys)
  assert ppl_cli.main(["--logdir", logdir, "--output", str(tmp_path / "no" / "r.json")]) == 2
  assert "does not exist" in _one_error_line(capsys)
  assert ppl_cli.main(["--help"]) == 0
  assert "--sampling" in capsys.readouterr().out
