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

import dataclasses
import json
import os
import sys
import time

import numpy as np
from absl import flags

from diffusion_tf import official_checkpoint
from experiments import ddim_flags
from experiments import flags as common
from experiments.images import save_grid, save_samples

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string(
    "official_checkpoint",
    None,
    "Official DDPM TF1 checkpoint: a model.ckpt-N "
    "prefix, or the folder holding it (its latest checkpoint).",
  )
  flags.DEFINE_string(
    "config",
    "cifar10",
    "Official configuration of the checkpoint: one of "
    f"{sorted(official_checkpoint.OFFICIAL_CONFIGS)}.",
  )
  flags.DEFINE_bool(
    "ema",
    True,
    "Use the EMA weights (<name>/ExponentialMovingAverage) the paper "
    "samples with; --noema loads the raw weights.",
  )
  flags.DEFINE_enum(
    "sampler",
    "ddim",
    ["ancestral", "ddim"],
    "ancestral: all T DDPM steps (Algorithm 2); ddim: --ddim_steps respaced DDIM steps.",
  )
  flags.DEFINE_integer("num_samples", 64, "Number of samples to draw.", lower_bound=1)
  flags.DEFINE_integer(
    "sample_batch", 64, "Samples per compiled sampler call (memory bound).", lower_bound=1
  )
  ddim_flags.define_ddim_flags()
  flags.DEFINE_string(
    "output_dir",
    None,
    "Folder for samples.png / samples.npz / sample.json. "
    "Default: <logdir>, else runs/ddpm_sample/<config>.",
  )


def _checkpoint_path(path: str) -> str:
  """A checkpoint prefix from a prefix or a folder (its latest checkpoint)."""
  if os.path.isdir(path):
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise ValueError(f"--official_checkpoint {path} is a folder without a TF checkpoint")
    return latest
  return path


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything one run needs, read from the flags once in `main`."""

  checkpoint: str  # a model.ckpt-N prefix or the folder holding it
  config: str  # a key of official_checkpoint.OFFICIAL_CONFIGS
  ema: bool
  sampler: str  # ancestral | ddim
  ddim: ddim_flags.DDIMSettings
  num_samples: int
  sample_batch: int
  seed: int
  output_dir: str
  command: str  # recorded in sample.json


def main(argv):
  del argv
  if not FLAGS.official_checkpoint:
    raise ValueError("--official_checkpoint is required (an official DDPM model.ckpt-N)")
  run(
    Settings(
      checkpoint=FLAGS.official_checkpoint,
      config=FLAGS.config,
      ema=FLAGS.ema,
      sampler=FLAGS.sampler,
      ddim=ddim_flags.DDIMSettings.from_flags(FLAGS),
      num_samples=FLAGS.num_samples,
      sample_batch=FLAGS.sample_batch,
      seed=FLAGS.seed,
      output_dir=FLAGS.output_dir
      or FLAGS.logdir
      or os.path.join("runs", "ddpm_sample", FLAGS.config),
      command=common.command_line(),
    )
  )
  return 0


def run(s: Settings) -> dict:
  """Samples the checkpoint; writes samples.png, samples.npz and sample.json; returns the JSON."""
  path = _checkpoint_path(s.checkpoint)
  model, report = official_checkpoint.build_official_ddpm(path, config=s.config, ema=s.ema)
  start = time.perf_counter()
  chunks = []
  for i, first in enumerate(range(0, s.num_samples, s.sample_batch)):
    n = min(s.sample_batch, s.num_samples - first)
    seed = s.seed * 10_007 + i
    if s.sampler == "ancestral":
      chunks.append(model.sample(n, seed=seed).numpy())
    else:
      chunks.append(model.sample_ddim(n, seed=seed, **s.ddim.sampler_kwargs()).numpy())
  samples = np.concatenate(chunks)
  seconds = time.perf_counter() - start
  save_grid(os.path.join(s.output_dir, "samples.png"), samples[:64])
  save_samples(os.path.join(s.output_dir, "samples.npz"), samples)
  steps = (
    model.diffusion.num_timesteps
    if s.sampler == "ancestral"
    else s.ddim.network_calls(model.diffusion)
  )
  info = {
    "checkpoint": path,
    "config": s.config,
    "ema": report.ema,
    "sampler": s.sampler,
    "network_calls_per_sample": steps,
    "num_samples": int(len(samples)),
    "seconds": round(seconds, 1),
    "command": s.command,
  }
  if s.sampler == "ddim":
    info["ddim"] = dataclasses.asdict(s.ddim)
  with open(os.path.join(s.output_dir, "sample.json"), "w") as f:
    json.dump(info, f, indent=2)
  print(
    f"{len(samples)} samples ({s.sampler}, {steps} steps) in {seconds:.0f} s -> "
    f"{os.path.join(s.output_dir, 'samples.png')}",
    file=sys.stderr,
  )
  return info


if __name__ == "__main__":
  define_flags()
  common.run(main)
