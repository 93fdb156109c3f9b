"""experiments.sample_quality end to end on tiny presets (offline: FID/KID must say unavailable)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from diffusion_tf import layers
from experiments import sample_quality as sq

sq.define_flags()  # this module parses the script's flags in-process

TINY = sq.Preset(
    flow=sq.FlowPreset(batch_size=32, epochs=1, learning_rate=1e-4, num_couplings=2, hidden_units=8),
    vae=sq.VAEPreset(batch_size=32, epochs=1, learning_rate=1e-3, latent_dim=2, hidden_units=(8,),
                     prior_couplings=2, prior_hidden_units=4, iw_samples=3),
    ddpm=sq.DDPMPreset(batch_size=8, epochs=1, learning_rate=1e-4, warmup_steps=2, ema_decay=0.9,
                       unet=layers.UNetConfig(channels=8, channel_mult=(1, 2),
                                              num_res_blocks=1, attention_resolutions=(16,),
                                              dropout=0.0, num_groups=2),
                       vlb_examples=2),
    fid_samples=8, data="test data")


def _run(tmp_path, monkeypatch, *args):
  monkeypatch.setitem(sq.PRESETS, "quick", TINY)
  monkeypatch.delenv("GENMODELS_INCEPTION_PATH", raising=False)
  monkeypatch.setenv("GENMODELS_CACHE_DIR", str(tmp_path / "cache"))
  argv = ["sample_quality", f"--logdir={tmp_path / 'runs'}", f"--results_dir={tmp_path / 'res'}",
          "--max_steps=2", "--num_timesteps=4", "--grid_samples=4", "--ddim_steps=2"] + list(args)
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  try:
    return sq.main([])
  finally:
    flags.FLAGS.unparse_flags()


@pytest.mark.slow
def test_tiny_run_writes_the_page_grids_and_rows_without_faking_fid(tmp_path, monkeypatch):
  assert _run(tmp_path, monkeypatch, "--models=vae,flow,ddpm") == 0
  page = (tmp_path / "res" / "sample_quality.md").read_text()
  rows = json.loads((tmp_path / "runs" / "results.json").read_text())
  assert [r["sampler"] for r in rows] == ["vae", "flow", "ddpm_ancestral4", "ddpm_ddim2_eta0"]
  for row in rows:
    assert row["fid"].startswith("unavailable (no Inception weights")
    assert row["kid"].startswith("unavailable") and row["fid_256"].startswith("unavailable")
    assert np.isfinite(row["bits_per_dim"]) and row["bits_per_dim"] > 0
    assert row["train_steps"] == 2
    assert os.path.exists(row["grid"])
  assert "Produced by:" in page and "unavailable (no Inception weights" in page
  assert "| ddpm | ddpm_ancestral4 |" in page
  for row in rows[2:]:  # the DDPM bound: the preset's 2 images, with a standard error
    assert row["vlb_images"] == 2 and np.isfinite(row["bits_per_dim_se"])
    assert "x0_hat clipped" in row["bits_per_dim_kind"] and "over 2 held-out" in row["bits_per_dim_kind"]
  for name in ("vae", "flow", "ddpm"):
    assert (tmp_path / "runs" / name / "checkpoints").is_dir()


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="--models"):
    _run(tmp_path, monkeypatch, "--models=vae,gan")


def test_fid_kid_on_features_of_a_small_network():
  inputs = keras.Input((28, 28, 1))
  pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
  network = keras.Model(inputs, {"pool_3": pooled})
  rng = np.random.default_rng(0)
  real = rng.uniform(size=(300, 28, 28, 1)).astype(np.float32)
  same = sq.fid_kid(network, real, real)
  assert same["fid"] == pytest.approx(0.0, abs=1e-3) and same["fid_256"] == pytest.approx(0.0, abs=1e-3)
  other = sq.fid_kid(network, np.clip(real + 0.3, 0, 1), real)
  assert other["fid"] > 1e-3 and other["kid"][0] > same["kid"][0]


def test_paper_preset_without_mnist_train_images_is_a_clear_data_error(tmp_path):
  (tmp_path / "mnist").mkdir()
  with pytest.raises(sq.data.DataError, match="not found"):
    sq.load_images("paper", str(tmp_path))


def test_ddpm_flags_reach_the_model_the_sampler_and_the_bound(tmp_path, monkeypatch):
  seen = {}

  class SpyDDPM(sq.models.DDPM):
    def __init__(self, **kwargs):
      seen["dequantize"] = kwargs["dequantize"]
      super().__init__(**dict(kwargs, jit_sampling=False))  # no XLA compiles: faster

    def sample_ddim(self, *args, **kwargs):
      seen["ddim"] = kwargs
      return super().sample_ddim(*args, **kwargs)

  monkeypatch.setattr(sq.models, "DDPM", SpyDDPM)
  assert _run(tmp_path, monkeypatch, "--models=ddpm", "--vlb_examples=3", "--vlb_unclipped",
              "--ddpm_dequantize", "--ddim_spacing=trailing", "--ddim_clip_x0",
              "--ddim_eta=0.5") == 0
  rows = json.loads((tmp_path / "runs" / "results.json").read_text())
  assert seen["dequantize"] is True
  assert {k: seen["ddim"][k] for k in ("num_steps", "eta", "spacing", "clip_denoised")} == {
      "num_steps": 2, "eta": 0.5, "spacing": "trailing", "clip_denoised": True}
  for row in rows:
    assert row["vlb_images"] == 3
    assert np.isfinite(row["bits_per_dim_unclipped"]) and np.isfinite(row["bits_per_dim_unclipped_se"])
    assert row["bits_per_dim_unclipped"] != row["bits_per_dim"]


def test_vlb_bits_per_dim_is_the_mean_and_standard_error_over_all_images():
  """Per-image bounds (nats) from a stand-in model, 250 images in batches of 100."""
  nats_of = lambda x: 784 * np.log(2) * (1.0 + x.reshape(len(x), -1)[:, 0])  # 1 + x bits/dim
  seeds = []

  class Model:
    trainable_variables = []

    def variational_bound(self, x, *, seed, clip_denoised):
      assert clip_denoised is True
      seeds.append(seed)
      return sq.models.VariationalBound(total=tf.constant(nats_of(x)), prior=None, diffusion=None,
                                        decoder=None)

  flags.FLAGS.unparse_flags()
  flags.FLAGS(["sample_quality"])
  try:
    images = np.random.default_rng(0).uniform(size=(250, 28, 28, 1)).astype(np.float32)
    optimizer = keras.optimizers.Adam(use_ema=True)
    mean, se = sq.vlb_bits_per_dim(Model(), optimizer, images, clip_denoised=True)
  finally:
    flags.FLAGS.unparse_flags()
  bits = 1.0 + images[:, 0, 0, 0].astype(np.float64)
  assert mean == pytest.approx(bits.mean(), rel=1e-6)
  assert se == pytest.approx(bits.std(ddof=1) / np.sqrt(250), rel=1e-5)
  assert len(seeds) == 3 and len(set(seeds)) == 3  # every batch draws its own x_t noise
