"""The flags of experiments.sample_quality and the one place they are read into settings.

`define_flags` defines them when the script runs, not at import, so tests and other scripts can
import this module next to other experiment modules that define flags of the same name (e.g.
--iw_samples). The script's `main` calls `settings_from_flags` once and passes the frozen result to
`experiments.sample_quality_train`, which reads no flags.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

from experiments import ddim_flags, sample_quality_train
from experiments import flags as common

FLAGS = flags.FLAGS


def define_flags():
  """Defines the script's flags (on top of the common flags of experiments.flags)."""
  common.define_preset_flag(
    sample_quality_train.PRESETS,
    help=f"{common.QUICK_AND_PAPER} 'cpu' is about two CPU-hours of training on the offline "
    "grey MNIST (docs/diffusion.md).",
  )
  flags.DEFINE_list(
    "models",
    list(sample_quality_train.MODELS),
    f"Models to train/evaluate, any of {sample_quality_train.MODELS}.",
  )
  flags.DEFINE_string(
    "inception_path",
    None,
    "Inception-2015 weights for FID/KID "
    "(classify_image_graph_def.pb, the TTUR .tgz, or a folder with either). "
    "Default: $GENMODELS_INCEPTION_PATH, then the cache.",
  )
  flags.DEFINE_bool(
    "download_inception", False, "Download the Inception weights if not found (needs a network)."
  )
  flags.DEFINE_integer(
    "fid_samples",
    None,
    "Generated samples per model and sampler for FID/KID "
    "against the evaluation images. Default: the preset's (paper: 10000).",
    lower_bound=1,
  )
  flags.DEFINE_integer("grid_samples", 64, "Samples in each PNG grid.", lower_bound=1)
  flags.DEFINE_integer(
    "num_timesteps",
    None,
    "DDPM diffusion steps T. Default: the preset's (1000 as DDPM; smaller only for smoke tests).",
    lower_bound=1,
  )
  flags.DEFINE_enum(
    "beta_schedule",
    None,
    list(sample_quality_train.BETA_SCHEDULES),
    "DDPM noise schedule: linear "
    "1e-4..0.02 (DDPM) or cosine (Nichol & Dhariwal 2021). Default: the preset's (linear).",
  )
  ddim_flags.define_ddim_flags()
  flags.DEFINE_bool(
    "ddpm_dequantize",
    None,
    "Train the DDPM on uniformly dequantized (k + u)/256 "
    "data. Default: the preset's (no: k/127.5 - 1 without noise, as the official code).",
  )
  flags.DEFINE_bool(
    "ddpm_random_flip",
    None,
    "Mirror each DDPM training image left-right with "
    "probability 1/2 (official randflip=1 of run_cifar.py). Default: the preset's "
    "(no: digits are not mirror-symmetric).",
  )
  flags.DEFINE_integer(
    "vlb_examples",
    None,
    "Held-out images for the DDPM variational bound "
    "(T network calls each). Default: all evaluation images.",
    lower_bound=1,
  )
  flags.DEFINE_bool(
    "vlb_unclipped",
    False,
    "Also report the DDPM bound without clipping x0_hat "
    "(the official calc_bpd_loop clips; this doubles the bound's cost).",
  )
  flags.DEFINE_integer(
    "iw_samples",
    None,
    "Importance samples per image for the VAE's log p(x). Default: the preset's.",
    lower_bound=1,
  )


def settings_from_flags() -> sample_quality_train.Settings:
  """The run's settings: the preset with the flag overrides applied, one TrainConfig per model."""
  models = sample_quality_train.MODELS
  unknown = sorted(set(FLAGS.models) - set(models))
  if unknown or not FLAGS.models:
    raise ValueError(f"--models must be a non-empty subset of {models}, got {FLAGS.models}")
  preset = sample_quality_train.PRESETS[FLAGS.preset]
  preset = dataclasses.replace(
    preset,
    fid_samples=common.flag_or("fid_samples", preset.fid_samples),
    vae=dataclasses.replace(
      preset.vae, iw_samples=common.flag_or("iw_samples", preset.vae.iw_samples)
    ),
    ddpm=dataclasses.replace(
      preset.ddpm,
      vlb_examples=common.flag_or("vlb_examples", preset.ddpm.vlb_examples),
      num_timesteps=common.flag_or("num_timesteps", preset.ddpm.num_timesteps),
      beta_schedule=common.flag_or("beta_schedule", preset.ddpm.beta_schedule),
      dequantize=common.flag_or("ddpm_dequantize", preset.ddpm.dequantize),
      random_flip=common.flag_or("ddpm_random_flip", preset.ddpm.random_flip),
    ),
  )
  logdir = FLAGS.logdir or common.default_logdir(
    "sample_quality", preset=FLAGS.preset, seed=FLAGS.seed
  )
  # Each model trains in its own folder under the run's logdir.
  train_configs = {
    name: dataclasses.replace(
      common.train_config(
        logdir=logdir,
        batch_size=getattr(preset, name).batch_size,
        epochs=getattr(preset, name).epochs,
      ),
      logdir=os.path.join(logdir, name),
    )
    for name in FLAGS.models
  }
  return sample_quality_train.Settings(
    preset_name=FLAGS.preset,
    preset=preset,
    models=tuple(FLAGS.models),
    train=train_configs,
    seed=FLAGS.seed,
    data_dir=FLAGS.data_dir,
    logdir=logdir,
    results_dir=common.results_dir(logdir),
    ddim=ddim_flags.DDIMSettings.from_flags(FLAGS),
    vlb_unclipped=FLAGS.vlb_unclipped,
    grid_samples=FLAGS.grid_samples,
    inception_path=FLAGS.inception_path,
    download_inception=FLAGS.download_inception,
    command=common.command_line(),
  )
