"""Sample an official DDPM checkpoint (hojonathanho/diffusion, TF1 `model.ckpt-*`) with our samplers.

  python -m experiments.ddpm_sample --official_checkpoint=diffusion_cifar10_model/model.ckpt-790000 \\
      --config=cifar10 --sampler=ddim --ddim_steps=50 --num_samples=64

The checkpoint is read with `tf.train.load_checkpoint` (no TF1 graph, no torch) into our U-Net
with the official configuration `--config` (diffusion_tf.official_checkpoint.OFFICIAL_CONFIGS:
cifar10 = ch 128, ch_mult 1,2,2,2, 2 res blocks, attention at 16, fixed-large variance;
celebahq / lsun = 256x256, ch_mult 1,1,2,2,4,4, fixed-small variance); the EMA weights are used when
the checkpoint has them, as in the paper. Writes <output_dir>/samples.png (a grid) and
samples.npz (uint8 [N, H, W, C], readable by the evaluation CLIs, e.g. python -m evaluation.cli).
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import flags
import numpy as np

from diffusion_tf import diffusion as diffusion_lib
from diffusion_tf import official_checkpoint
from experiments import flags as common
from experiments.images import save_grid, save_samples

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("official_checkpoint", None, "Official DDPM TF1 checkpoint: a model.ckpt-N "
                      "prefix, or the folder holding it (its latest checkpoint).")
  flags.DEFINE_string("config", "cifar10", "Official configuration of the checkpoint: one of "
                      f"{sorted(official_checkpoint.OFFICIAL_CONFIGS)}.")
  flags.DEFINE_bool("ema", True, "Use the EMA weights (<name>/ExponentialMovingAverage) the paper "
                    "samples with; --noema loads the raw weights.")
  flags.DEFINE_enum("sampler", "ddim", ["ancestral", "ddim"], "ancestral: all T DDPM steps "
                    "(Algorithm 2); ddim: --ddim_steps respaced DDIM steps.")
  flags.DEFINE_integer("num_samples", 64, "Number of samples to draw.", lower_bound=1)
  flags.DEFINE_integer("sample_batch", 64, "Samples per compiled sampler call (memory bound).",
                       lower_bound=1)
  flags.DEFINE_integer("ddim_steps", 50, "DDIM respaced steps S.", lower_bound=1)
  flags.DEFINE_float("ddim_eta", 0.0, "DDIM eta (0: deterministic; 1: DDPM-like variances).", lower_bound=0.0)
  flags.DEFINE_enum("ddim_spacing", "uniform", list(diffusion_lib.DDIM_SPACINGS),
                    "DDIM timesteps: uniform = official DDIM range(0, T, T // S); leading / "
                    "trailing / linspace = diffusers' timestep_spacing (docs/diffusion.md).")
  flags.DEFINE_bool("ddim_clip_x0", False, "Clip DDIM's x0 prediction to [-1, 1] (diffusers' "
                    "clip_sample); the official DDIM sampler does not.")
  flags.DEFINE_string("output_dir", None, "Folder for samples.png / samples.npz / sample.json. "
                      "Default: <logdir>, else runs/ddpm_sample/<config>.")


def _checkpoint_path(path: str) -> str:
  """A checkpoint prefix from a prefix or a folder (its latest checkpoint)."""
  if os.path.isdir(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise ValueError(f"--official_checkpoint {path} is a folder without a TF checkpoint")
    return latest
  return path


def main(argv):
  del argv
  if not FLAGS.official_checkpoint:
    raise ValueError("--official_checkpoint is required (an official DDPM model.ckpt-N)")
  path = _checkpoint_path(FLAGS.official_checkpoint)
  model, report = official_checkpoint.build_official_ddpm(path, config=FLAGS.config, ema=FLAGS.ema)
  out_dir = FLAGS.output_dir or FLAGS.logdir or os.path.join("runs", "ddpm_sample", FLAGS.config)
  start = time.perf_counter()
  chunks = []
  for i, first in enumerate(range(0, FLAGS.num_samples, FLAGS.sample_batch)):
    n = min(FLAGS.sample_batch, FLAGS.num_samples - first)
    seed = FLAGS.seed * 10_007 + i
    if FLAGS.sampler == "ancestral":
      chunks.append(model.sample(n, seed=seed).numpy())
    else:
      chunks.append(model.sample_ddim(n, seed=seed, num_steps=FLAGS.ddim_steps, eta=FLAGS.ddim_eta,
                                      spacing=FLAGS.ddim_spacing,
                                      clip_denoised=FLAGS.ddim_clip_x0).numpy())
  samples = np.concatenate(chunks)
  seconds = time.perf_counter() - start
  save_grid(os.path.join(out_dir, "samples.png"), samples[:64])
  save_samples(os.path.join(out_dir, "samples.npz"), samples)
  steps = (model.diffusion.num_timesteps if FLAGS.sampler == "ancestral"
           else len(model.diffusion.ddim_timesteps(FLAGS.ddim_steps, spacing=FLAGS.ddim_spacing)))
  info = {"checkpoint": path, "config": FLAGS.config, "ema": report.ema, "sampler": FLAGS.sampler,
          "network_calls_per_sample": steps, "num_samples": int(len(samples)),
          "seconds": round(seconds, 1), "command": common.command_line()}
  with open(os.path.join(out_dir, "sample.json"), "w") as f:
    json.dump(info, f, indent=2)
  print(f"{len(samples)} samples ({FLAGS.sampler}, {steps} steps) in {seconds:.0f} s -> "
        f"{os.path.join(out_dir, 'samples.png')}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  define_flags()
  common.run(main)
