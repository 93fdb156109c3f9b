"""experiments.sample_quality (the library experiments.sample_quality_train) end to end on a tiny
preset (offline: FID/KID must say unavailable).

One tiny run of the three models (2 steps each, T = 4, 12x12 stand-in images) is shared by the
module; the tests read what it wrote and the settings `main` resolved from the flags.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from diffusion_tf import layers
from evaluation import protocol
from experiments import harness, results, vampprior
from experiments import sample_quality as script
from experiments import sample_quality_train as sq
from tests import scripts

RUN = sq.run  # the real one; tests wrap it to see the settings `main` passes

SIDE = 12  # stand-in images: not MNIST's 28, so a literal 784 / (28, 28, 1) anywhere breaks the run
NUM_EVAL = 10
TINY = sq.Preset(
  flow=sq.FlowPreset(batch_size=32, epochs=1, learning_rate=1e-4, num_couplings=2, hidden_units=8),
  vae=sq.VAEPreset(
    batch_size=32,
    epochs=1,
    learning_rate=1e-3,
    latent_dim=2,
    hidden_units=(8,),
    prior_couplings=2,
    prior_hidden_units=4,
    iw_samples=3,
  ),
  ddpm=sq.DDPMPreset(
    batch_size=8,
    epochs=1,
    learning_rate=1e-4,
    warmup_steps=2,
    ema_decay=0.9,
    unet=layers.UNetConfig(
      channels=8,
      channel_mult=(1,),
      num_res_blocks=1,
      attention_resolutions=(8,),
      dropout=0.0,
      num_groups=2,
    ),
    vlb_examples=2,
    padded_size=16,
  ),
  fid_samples=8,
  data="test data",
  offline_split=True,
)
ARGS = [
  "--max_steps=2",
  "--num_timesteps=4",
  "--grid_samples=4",
  "--ddim_steps=2",
  "--vlb_examples=3",
  "--vlb_unclipped",
  "--ddpm_dequantize",
  "--ddpm_random_flip",
  "--ddim_spacing=trailing",
  "--ddim_clip_x0",
  "--ddim_eta=0.5",
  "--iw_samples=2",
]


def _fake_mnist(name, split, data_dir=None):
  assert (name, split) == ("mnist", "test")
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(sq.OFFLINE_TRAIN_IMAGES + NUM_EVAL, SIDE, SIDE, 1)) / 255.0
  return images.astype(np.float32), None


def _main(monkeypatch, tmp_path, *args):
  """Runs `main` on the tiny preset with `args`; returns the Settings it resolved."""
  monkeypatch.setitem(sq.PRESETS, "quick", TINY)
  monkeypatch.setattr(sq.data, "load_arrays", _fake_mnist)
  monkeypatch.delenv("GENMODELS_INCEPTION_PATH", raising=False)
  monkeypatch.setenv("GENMODELS_CACHE_DIR", str(tmp_path / "cache"))
  seen = {}
  monkeypatch.setattr(
    sq,
    "run",
    lambda settings, **kw: seen.setdefault(
      "rows", RUN(seen.setdefault("settings", settings), **kw)
    ),
  )
  with scripts.defined_flags(script.define_flags) as fv:  # the script's flags, in this process
    fv(["sample_quality", f"--logdir={tmp_path / 'runs'}"] + list(args))
    assert script.main([]) == 0
  return seen["settings"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """The three models, 2 steps each, with every DDPM flag set; a spy records what the DDPM got."""
  tmp_path = tmp_path_factory.mktemp("sample_quality")
  seen = {}

  class SpyDDPM(sq.models.DDPM):
    def __init__(self, **kwargs):
      seen["ddpm"] = kwargs
      super().__init__(**dict(kwargs, jit_sampling=False))  # no XLA compiles: faster

    def sample_ddim(self, *args, **kwargs):
      seen["ddim"] = kwargs
      return super().sample_ddim(*args, **kwargs)

  with pytest.MonkeyPatch.context() as monkeypatch:
    monkeypatch.setattr(sq.models, "DDPM", SpyDDPM)
    settings = _main(monkeypatch, tmp_path, "--models=vae,flow,ddpm", *ARGS)
  return dict(
    tmp_path=tmp_path,
    settings=settings,
    seen=seen,
    rows=json.loads((tmp_path / "runs" / "results.json").read_text()),
    page=(tmp_path / "runs" / "results" / "sample_quality.md").read_text(),
  )


@pytest.mark.slow
def test_tiny_run_writes_the_page_grids_and_rows_without_faking_fid(tiny_run):
  rows, page, tmp_path = tiny_run["rows"], tiny_run["page"], tiny_run["tmp_path"]
  assert [r["sampler"] for r in rows] == ["vae", "flow", "ddpm_ancestral4", "ddpm_ddim2_eta0.5"]
  for row in rows:
    assert row["fid"].startswith("unavailable (no Inception weights")
    assert row["kid"].startswith("unavailable") and row["fid_256"].startswith("unavailable")
    assert np.isfinite(row["bits_per_dim"]) and row["bits_per_dim"] > 0
    batch = getattr(TINY, row["model"]).batch_size
    assert row["train_steps"] == 2 and row["train_epochs"] == round(2 / (9000 // batch), 2)
    # A --max_steps smoke run: pages and grids under <logdir>/results, never results/.
    assert row["grid"].startswith(str(tmp_path / "runs" / "results")) and os.path.exists(
      row["grid"]
    )
  # No FID/KID columns full of "unavailable": the page says why once.
  assert "Produced by:" in page and page.count("unavailable (no Inception weights") == 1
  assert "| FID" not in page and "| KID" not in page
  assert (
    "| ddpm | ddpm_ancestral4 |" in page and "CPU:" in page and f"D = {SIDE * SIDE} pixels" in page
  )
  assert "IWAE (K=2)" in rows[0]["bits_per_dim_kind"]  # --iw_samples overrides the preset's 3
  for name in ("vae", "flow", "ddpm"):
    assert (tmp_path / "runs" / name / "checkpoints").is_dir()


@pytest.mark.slow
def test_ddpm_flags_reach_the_model_the_sampler_and_the_bound(tiny_run):
  seen, rows = tiny_run["seen"], tiny_run["rows"]
  assert seen["ddpm"]["dequantize"] is True and seen["ddpm"]["image_shape"] == (SIDE, SIDE, 1)
  assert seen["ddpm"]["random_flip"] is True
  assert seen["ddpm"]["diffusion"].num_timesteps == 4
  assert {k: seen["ddim"][k] for k in ("num_steps", "eta", "spacing", "clip_denoised")} == {
    "num_steps": 2,
    "eta": 0.5,
    "spacing": "trailing",
    "clip_denoised": True,
  }
  for row in rows[2:]:  # the DDPM bound: --vlb_examples=3 (the preset says 2), clipped and not
    assert row["vlb_images"] == 3 and np.isfinite(row["bits_per_dim_se"])
    assert (
      "x0_hat clipped" in row["bits_per_dim_kind"] and "over 3 held-out" in row["bits_per_dim_kind"]
    )
    assert np.isfinite(row["bits_per_dim_unclipped"]) and np.isfinite(
      row["bits_per_dim_unclipped_se"]
    )
    assert row["bits_per_dim_unclipped"] != row["bits_per_dim"]


@pytest.mark.slow
def test_main_resolves_every_flag_once_into_the_settings(tiny_run):
  s = tiny_run["settings"]
  runs = str(tiny_run["tmp_path"] / "runs")
  assert s.preset.ddpm == dataclasses.replace(
    TINY.ddpm, vlb_examples=3, num_timesteps=4, dequantize=True, random_flip=True
  )
  assert s.preset.vae.iw_samples == 2 and s.preset.fid_samples == TINY.fid_samples
  assert s.ddim == sq.ddim_flags.DDIMSettings(steps=2, eta=0.5, spacing="trailing", clip_x0=True)
  assert s.models == ("vae", "flow", "ddpm") and s.vlb_unclipped is True and s.grid_samples == 4
  assert s.results_dir == os.path.join(runs, "results")
  assert {m: (c.logdir, c.batch_size, c.max_steps) for m, c in s.train.items()} == {
    "vae": (os.path.join(runs, "vae"), 32, 2),
    "flow": (os.path.join(runs, "flow"), 32, 2),
    "ddpm": (os.path.join(runs, "ddpm"), 8, 2),
  }


def kept_bits(path):
  """(bits/dim, its standard error, description) of a per-image file, computed here."""
  values = results.read_per_example(str(path))
  d = values["description"]
  nll = -values["log_likelihood"].astype(np.float64)
  scale = d["num_dims"] * np.log(2.0)
  return nll.mean() / scale + d["offset_bits"], nll.std(ddof=1) / np.sqrt(len(nll)) / scale, d


@pytest.mark.slow
def test_page_bits_per_dim_are_what_the_kept_per_image_values_give(tiny_run):
  rows, page, tmp_path = tiny_run["rows"], tiny_run["page"], tiny_run["tmp_path"]
  folder = tmp_path / "runs" / "results" / "sample_quality"
  for row in rows:
    want, se, description = kept_bits(folder / f"{row['model']}.npz")
    assert row["per_example"] == f"sample_quality/{row['model']}.npz"
    assert row["bits_per_dim"] == pytest.approx(want, rel=1e-12)
    assert row["bits_per_dim_se"] == pytest.approx(se, rel=1e-9)
    assert f"| {row['model']} | {row['sampler']} | {want:.3f} | {se:.3f} |" in page
    assert description["unit"] == "nats" and description["num_dims"] == SIDE * SIDE
    assert description["offset_bits"] == (0.0 if row["model"] == "ddpm" else 8.0)
    assert row["eval_images"] == (3 if row["model"] == "ddpm" else NUM_EVAL)
  assert results.read_per_example(str(folder / "vae.npz"))["elbo"].shape == (NUM_EVAL,)
  unclipped, _, description = kept_bits(folder / "ddpm_unclipped.npz")
  assert "not clipped" in description["what"]
  assert rows[2]["bits_per_dim_unclipped"] == pytest.approx(unclipped, rel=1e-12)
  assert "[sample_quality/vae.npz](sample_quality/vae.npz)" in page


@pytest.mark.slow
def test_rerun_page_follows_an_altered_per_image_value_without_evaluating_again(
  tiny_run, monkeypatch
):
  """The same command again finds the VAE finished and its values kept (same step, images, K):
  it evaluates nothing and the page prints what the (here altered) values give."""
  tmp_path = tiny_run["tmp_path"]
  path = str(tmp_path / "runs" / "vae" / results.PER_EXAMPLE_FILE)
  before = [r for r in tiny_run["rows"] if r["model"] == "vae"][0]["bits_per_dim"]
  values = results.read_per_example(path)
  ll = values["log_likelihood"].copy()
  ll[0] -= 1000.0
  results.write_per_example(path, log_likelihood=ll, elbo=values["elbo"], **values["description"])

  def evaluate(*args, **kwargs):
    raise AssertionError("a finished model with kept values was evaluated again")

  monkeypatch.setattr(sq.likelihood, "evaluate_log_likelihood", evaluate)
  _main(monkeypatch, tmp_path, "--models=vae", *ARGS)
  (row,) = json.loads((tmp_path / "runs" / "results.json").read_text())
  want = kept_bits(tmp_path / "runs" / "results" / "sample_quality" / "vae.npz")[0]
  assert row["bits_per_dim"] == pytest.approx(want, rel=1e-12)
  assert want == pytest.approx(before + 1000.0 / (NUM_EVAL * SIDE * SIDE * np.log(2.0)), rel=1e-5)
  page = (tmp_path / "runs" / "results" / "sample_quality.md").read_text()
  assert f"| vae | vae | {want:.3f} |" in page and f"| vae | vae | {before:.3f} |" not in page


@pytest.mark.slow
def test_rerun_does_not_retrain_a_finished_model_and_resumes_a_longer_one(tiny_run, monkeypatch):
  """The same command again: the flow restores step 2 and trains nothing; --max_steps=3 resumes."""
  restored, fitted = [], []
  restore, fit = harness.Trainer.restore, harness.Trainer.fit
  monkeypatch.setattr(
    harness.Trainer, "restore", lambda self: restored.append(restore(self)) or restored[-1]
  )
  monkeypatch.setattr(harness.Trainer, "fit", lambda self: fitted.append(fit(self)) or fitted[-1])
  tmp_path = tiny_run["tmp_path"]
  flow_args = [a for a in ARGS if a != "--max_steps=2"]
  _main(monkeypatch, tmp_path, "--models=flow", "--max_steps=2", *flow_args)
  assert restored == [2] and fitted == [{}]  # fit returns {} when there is nothing to do
  _main(monkeypatch, tmp_path, "--models=flow", "--max_steps=3", *flow_args)
  assert restored[1] == 2 and fitted[1] != {}
  rows = json.loads((tmp_path / "runs" / "results.json").read_text())
  assert [(r["sampler"], r["train_steps"]) for r in rows] == [("flow", 3)]


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="--models"):
    _main(monkeypatch, tmp_path, "--models=vae,gan")


def test_cpu_preset_is_selectable_and_bounds_all_held_out_images(tmp_path, monkeypatch):
  """--preset=cpu (this script's own preset), offline data, VLB over all 1,000
  held-out images with all T = 1000 terms."""
  with scripts.defined_flags(script.define_flags) as fv:
    fv(["sample_quality", "--preset=cpu"])
    assert fv.preset == "cpu"
  with scripts.defined_flags(vampprior.define_flags) as fv:  # other scripts keep rejecting it
    with pytest.raises(flags.IllegalFlagValueError):
      fv(["vampprior", "--preset=cpu"])
  cpu = sq.PRESETS["cpu"]
  assert cpu.offline_split and cpu.ddpm.vlb_examples is None and cpu.ddpm.num_timesteps == 1000


def test_fid_kid_on_features_of_a_small_network():
  inputs = keras.Input((28, 28, 1))
  pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
  network = keras.Model(inputs, {"pool_3": pooled})
  rng = np.random.default_rng(0)
  real = rng.uniform(size=(300, 28, 28, 1)).astype(np.float32)
  same = sq.fid_kid(network, real, real)
  assert same["fid"]["value"] == pytest.approx(0.0, abs=1e-3)
  assert same["fid_256"]["value"] == pytest.approx(0.0, abs=1e-3)
  other = sq.fid_kid(network, np.clip(real + 0.3, 0, 1), real)
  assert other["fid"]["value"] > 1e-3 and other["kid"]["value"] > same["kid"]["value"]
  # Every value carries the protocol it was made under; the 256 protocol says 256 images.
  assert other["fid"]["protocol"]["image_count"] == 300
  assert other["kid_256"]["protocol"]["image_count"] == 256
  assert other["fid"]["protocol"]["weights_sha256"] == protocol.weights_sha256(network)
  sq.results.require_protocols([other])


def test_paper_preset_without_mnist_train_images_is_a_clear_data_error(tmp_path):
  (tmp_path / "mnist").mkdir()
  with pytest.raises(sq.data.DataError, match="not found"):
    sq.load_images(sq.PRESETS["paper"], str(tmp_path))


def test_vlb_bits_per_dim_is_the_mean_and_standard_error_over_all_images():
  """Per-image bounds (nats) from a stand-in model, 250 images in batches of 100."""
  nats_of = lambda x: 784 * np.log(2) * (1.0 + x.reshape(len(x), -1)[:, 0])  # 1 + x bits/dim
  seeds = []

  class Model:
    trainable_variables = []

    def variational_bound(self, x, *, seed, clip_denoised):
      assert clip_denoised is True
      seeds.append(seed)
      return sq.models.VariationalBound(
        total=tf.constant(nats_of(x)), prior=None, diffusion=None, decoder=None
      )

  images = np.random.default_rng(0).uniform(size=(250, 28, 28, 1)).astype(np.float32)
  optimizer = keras.optimizers.Adam(use_ema=True)
  mean, se = sq.vlb_bits_per_dim(Model(), optimizer, images, clip_denoised=True, seed=0)
  bits = 1.0 + images[:, 0, 0, 0].astype(np.float64)
  assert mean == pytest.approx(bits.mean(), rel=1e-6)
  assert se == pytest.approx(bits.std(ddof=1) / np.sqrt(250), rel=1e-5)
  assert len(seeds) == 3 and len(set(seeds)) == 3  # every batch draws its own x_t noise


def test_vlb_cache_resumes_an_interrupted_bound_and_skips_a_finished_one(tmp_path):
  """A bound stopped after its first batch, then called again, gives the uninterrupted numbers and
  computes only the two missing batches; a third call computes none; another checkpoint step
  computes all three again. The stand-in bound depends on the batch's noise seed."""
  calls = []

  class Model:
    trainable_variables = []
    fail_after = None

    def variational_bound(self, x, *, seed, clip_denoised):
      if self.fail_after is not None and len(calls) == self.fail_after:
        raise KeyboardInterrupt
      calls.append(seed)
      nats = 784 * np.log(2) * (1.0 + x.reshape(len(x), -1)[:, 0] + seed * 1e-4)
      return sq.models.VariationalBound(
        total=tf.constant(nats), prior=None, diffusion=None, decoder=None
      )

  images = np.random.default_rng(0).uniform(size=(250, 28, 28, 1)).astype(np.float32)
  optimizer = keras.optimizers.Adam(use_ema=True)
  cache = str(tmp_path / "vlb.npz")
  bound = lambda model, step=7: sq.vlb_bits_per_dim(
    model,
    optimizer,
    images,
    clip_denoised=True,
    seed=3,
    progress=False,
    cache_path=cache,
    cache_key={"step": step},
  )
  want = sq.vlb_bits_per_dim(Model(), optimizer, images, clip_denoised=True, seed=3, progress=False)
  seeds = list(calls)
  calls.clear()
  interrupted = Model()
  interrupted.fail_after = 1
  with pytest.raises(KeyboardInterrupt):
    bound(interrupted)
  assert calls == seeds[:1]
  calls.clear()
  assert bound(Model()) == want  # bit for bit
  assert calls == seeds[1:]
  calls.clear()
  assert bound(Model()) == want and calls == []
  bound(Model(), step=8)
  assert calls == seeds


def test_sigterm_during_the_bound_saves_the_batch_in_hand_then_resumes_exactly(tmp_path):
  """A scheduler's SIGTERM during the second of three batches: that batch is finished and cached,
  `Preempted` is raised (the script's one line and exit 143), and the rerun computes only the third
  batch and gives the uninterrupted numbers (`evaluation.resume_cache`)."""
  import signal

  from common_tf import preemption

  calls = []

  class Model:
    trainable_variables = []
    kill_at = None

    def variational_bound(self, x, *, seed, clip_denoised):
      calls.append(seed)
      if len(calls) == self.kill_at:
        os.kill(os.getpid(), signal.SIGTERM)
      nats = 784 * np.log(2) * (1.0 + x.reshape(len(x), -1)[:, 0] + seed * 1e-4)
      return sq.models.VariationalBound(
        total=tf.constant(nats), prior=None, diffusion=None, decoder=None
      )

  images = np.random.default_rng(0).uniform(size=(250, 28, 28, 1)).astype(np.float32)
  optimizer = keras.optimizers.Adam(use_ema=True)
  bound = lambda model, cache=None: sq.vlb_nats(
    model, optimizer, images, clip_denoised=True, seed=3, progress=False, cache_path=cache
  )
  want = bound(Model())
  seeds = list(calls)
  calls.clear()
  cache = str(tmp_path / "vlb.npz")
  killed = Model()
  killed.kill_at = 2
  with pytest.raises(preemption.Preempted, match="SIGTERM after 2 batches of the DDPM bound"):
    bound(killed, cache)
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
  with np.load(cache) as f:
    assert int(f["batches_done"]) == 2 and f["nats"].shape == (200,)
  calls.clear()
  np.testing.assert_array_equal(bound(Model(), cache), want)
  assert calls == seeds[2:]


def test_an_interrupted_run_writes_no_grid_into_the_results_folder(tmp_path, monkeypatch):
  """Grids are written with the page: a run that fails at its second model leaves the results
  folder as it was (a finished first model's grid would otherwise replace the published one)."""
  results_dir = tmp_path / "results"

  def flow_runner(preset, *, settings, **kwargs):  # a finished model, no training
    os.makedirs(settings.train["flow"].logdir, exist_ok=True)
    return {"flow": lambda n, seed: np.zeros((n, SIDE, SIDE, 1), np.float32)}, {}

  def failing_runner(preset, **kwargs):
    raise RuntimeError("interrupted")

  monkeypatch.setitem(sq.RUNNERS, "flow", flow_runner)
  monkeypatch.setitem(sq.RUNNERS, "vae", failing_runner)
  with pytest.raises(RuntimeError, match="interrupted"):
    _main(monkeypatch, tmp_path, "--models=flow,vae", f"--results_dir={results_dir}")
  assert not results_dir.exists() or os.listdir(results_dir) == []
