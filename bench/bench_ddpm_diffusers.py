"""DDPM on CIFAR-10 shapes, ours against diffusers: a training step (Adam, gradient clipping at 1,
the weight EMA) and a sampling step, with the same U-Net configuration and parameter count.

  python bench/bench_ddpm_diffusers.py [--cores=0] [--threads=1] [--batch=8] [--sample_batch=64]
      [--without_speedups] [--op_profile]

Ours: `diffusion_tf.DDPM` with the paper's CIFAR-10 U-Net (ch 128, (1, 2, 2, 2), 2 residual
blocks, attention at 16, dropout 0.1), stepped by the harness's compiled train step with the
optimizer and clipping `experiments.sample_quality_train` trains with (`ddpm_adam`, EMA 0.9999).
Peer: diffusers' `UNet2DModel` with the configuration of the converted official CIFAR-10 checkpoint
(google/ddpm-cifar10-32), stepped as diffusers' `train_unconditional.py` does (add_noise, MSE on
epsilon, clip_grad_norm_(1), Adam, `EMAModel.step`). Sampling: one reverse step x_t -> x_(t-1)
(ours: the compiled `p_sample` of `GaussianDiffusion`; diffusers: the U-Net under no_grad then
`DDPMScheduler.step`). Each side in its own pinned process, alternating (bench/peer.py).
`--without_speedups` adds our train step without diffusion_tf's CPU speed-ups as a third side;
`--op_profile` instead traces our train step and prints where its time goes by kind of op.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer  # noqa: E402

LEARNING_RATE, EMA_DECAY, CLIP = 2e-4, 0.9999, 1.0  # DDPM paper, Appendix B
# The configuration of google/ddpm-cifar10-32 (diffusers' conversion of the official checkpoint).
DIFFUSERS_CIFAR10 = dict(
  sample_size=32,
  in_channels=3,
  out_channels=3,
  layers_per_block=2,
  block_out_channels=(128, 256, 256, 256),
  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
  up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
  attention_head_dim=None,
  norm_num_groups=32,
  norm_eps=1e-6,
  act_fn="silu",
  downsample_padding=0,
  flip_sin_to_cos=False,
  freq_shift=1,
  dropout=0.1,
)


def images(batch: int):
  import numpy as np

  return np.random.RandomState(0).randint(0, 256, (batch, 32, 32, 3)).astype(np.float32) / 255.0


def ours_train(batch: int, precision: str, speedups: bool = True):
  """`speedups=False`: the step without diffusion_tf's three CPU speed-ups (this process only):
  upsampling as repeat + 3x3 convolution at every size, GroupNorm differentiated by TensorFlow
  (Keras' own `call`), and Keras' Adam and EMA instead of `FusedAdam`."""
  import tempfile

  import keras
  import tensorflow as tf

  from diffusion_tf import diffusion, layers, optim
  from diffusion_tf import model as models
  from experiments import harness
  from experiments.sample_quality_train import clip_by_global_norm

  keras.mixed_precision.set_global_policy(precision)
  if not speedups:
    layers.UPSAMPLE_PHASES_MIN_PIXELS = float("inf")
    layers.GroupNorm.call = keras.layers.GroupNormalization.call
    optim.FusedAdam = keras.optimizers.Adam  # what ddpm_adam builds
  ddpm = models.DDPM(
    image_shape=(32, 32, 3),
    unet=layers.UNetConfig(),
    diffusion=diffusion.GaussianDiffusion.linear(),
    seed=0,
  )
  optimizer = optim.ddpm_adam(learning_rate=LEARNING_RATE, warmup_steps=1, ema_decay=EMA_DECAY)
  x = images(batch)
  trainer = harness.Trainer(
    config=harness.TrainConfig(
      logdir=tempfile.mkdtemp(), batch_size=batch, epochs=10, progress=False
    ),
    strategy=tf.distribute.get_strategy(),
    model=ddpm,
    optimizer=optimizer,
    loss_fn=lambda m, xb, ctx: harness.LossOutput(
      per_example=m.loss_terms(xb, training=True).simple
    ),
    train_data=tf.data.Dataset.from_tensor_slices(x),
    grad_transform=clip_by_global_norm(CLIP),
  )
  print(f"    ours: {ddpm.unet.count_params():,} U-Net parameters", flush=True)
  x = tf.constant(x)
  return lambda: trainer._train_step(x)["loss"].numpy()


def _op_kind(name: str, op_type: str) -> str:
  if "Conv2D" in op_type:
    return "3x3 convolutions (oneDNN)"
  if "MatMul" in op_type:
    return "matrix products (attention, 1x1 shortcuts, timestep MLP)"
  if op_type.startswith("ResourceApply") or "/fused_adam/" in name or "/adam/" in name:
    return "Adam + EMA"
  # GroupNorm's hand-written backward and swish's gradient run under generated names: one kind.
  return "the rest (GroupNorm, swish, dropout, residual adds, attention softmax, loss, clipping)"


def op_profile(batch: int, cores, threads: int):
  """Our train step traced by the TensorFlow profiler (two steps, after three untimed and three
  timed ones); prints each kind of operation's share of the traced op time and that share of the
  step's measured CPU time."""
  import time

  peer.pin(cores, threads)
  step = ours_train(batch, "float32")
  for _ in range(3):
    step()
  cpu = time.process_time()
  for _ in range(3):
    step()
  cpu_ms = 1e3 * (time.process_time() - cpu) / 3
  shares = peer.op_time_by_kind(step, _op_kind, calls=2)
  print(peer.header(threads))
  print(f"ours, train step batch {batch}: {cpu_ms:.0f} CPU ms/step; traced op time by kind:")
  for kind, share in shares.items():
    print(f"  {kind:80s} {100 * share:5.1f}%  {cpu_ms * share:7.0f} CPU ms/step")


def ours_sample(batch: int):
  import tensorflow as tf

  from diffusion_tf import diffusion, layers
  from diffusion_tf import model as models

  ddpm = models.DDPM(
    image_shape=(32, 32, 3),
    unet=layers.UNetConfig(),
    diffusion=diffusion.GaussianDiffusion.linear(),
    seed=0,
  )
  gd = ddpm.diffusion
  x = tf.random.normal([batch, 32, 32, 3], seed=0)
  t = tf.fill([batch], 500)

  @tf.function
  def step(x_t, t):  # DDPM Algorithm 2, one step (the noise drawn here, as diffusers' step does)
    return gd.p_sample(ddpm._eps_fn, x_t, t, tf.random.normal(tf.shape(x_t)))

  return lambda: step(x, t).numpy()


def diffusers_train(batch: int, threads: int, precision: str):
  import copy

  import diffusers
  import torch
  from diffusers.training_utils import EMAModel

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  unet = diffusers.UNet2DModel(**DIFFUSERS_CIFAR10)
  unet.train()
  print(
    f"    diffusers {diffusers.__version__}: "
    f"{sum(p.numel() for p in unet.parameters()):,} U-Net parameters",
    flush=True,
  )
  scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
  optimizer = torch.optim.Adam(unet.parameters(), lr=LEARNING_RATE, eps=1e-8)
  ema = EMAModel(copy.deepcopy(unet).parameters(), decay=EMA_DECAY)
  x = torch.from_numpy(images(batch)).permute(0, 3, 1, 2) * 2 - 1

  autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "mixed_bfloat16")

  def step():
    noise = torch.randn_like(x)
    t = torch.randint(0, 1000, (batch,))
    with autocast:
      prediction = unet(scheduler.add_noise(x, noise, t), t).sample
    loss = torch.nn.functional.mse_loss(prediction.float(), noise)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), CLIP)
    optimizer.step()
    optimizer.zero_grad()
    ema.step(unet.parameters())
    return loss.item()

  return step


def diffusers_sample(batch: int, threads: int):
  import diffusers
  import torch

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  unet = diffusers.UNet2DModel(**DIFFUSERS_CIFAR10).eval()
  scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
  scheduler.set_timesteps(1000)
  x = torch.randn(batch, 3, 32, 32)

  @torch.no_grad()
  def step():
    return scheduler.step(unet(x, 500).sample, 500, x).prev_sample.numpy()

  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  peer.add_timing_flags(parser, steps=3, rounds=4, warmup=2)
  parser.add_argument("--batch", type=int, default=8, help="training batch")
  parser.add_argument("--sample_batch", type=int, default=64, help="sampling batch")
  parser.add_argument("--parts", default="train,sample", help="train and/or sample")
  parser.add_argument(
    "--precision",
    default="float32",
    choices=["float32", "mixed_bfloat16"],
    help="training precision of both sides (ours: the Keras policy; diffusers: "
    "torch.autocast to bfloat16 around the U-Net)",
  )
  parser.add_argument(
    "--without_speedups",
    action="store_true",
    help="also time our train step without diffusion_tf's CPU speed-ups (phase-convolution "
    "upsampling, GroupNorm's closed-form backward, FusedAdam), a third side in the alternation",
  )
  parser.add_argument(
    "--op_profile",
    action="store_true",
    help="only profile our train step (TensorFlow profiler) and print the time by kind of op",
  )
  args = parser.parse_args()
  cores = peer.cores_from(args)
  if args.op_profile:
    op_profile(args.batch, cores, args.threads)
    return
  common = dict(
    cores=cores, threads=args.threads, steps=args.steps, rounds=args.rounds, warmup=args.warmup
  )
  if "train" in args.parts:
    sides = {"ours": (ours_train, (args.batch, args.precision))}
    if args.without_speedups:
      sides["ours without the speed-ups"] = (ours_train, (args.batch, args.precision, False))
    sides["diffusers"] = (diffusers_train, (args.batch, args.threads, args.precision))
    timings = peer.alternate(sides, **common)
    print(
      peer.report(
        f"DDPM CIFAR-10 train step, batch {args.batch}, {args.precision} (Adam, "
        f"clip 1, EMA {EMA_DECAY})",
        timings,
        ours="ours",
        peer="diffusers",
      ),
      flush=True,
    )
  if "sample" in args.parts:
    timings = peer.alternate(
      {
        "ours": (ours_sample, (args.sample_batch,)),
        "diffusers": (diffusers_sample, (args.sample_batch, args.threads)),
      },
      **common,
    )
    print(
      peer.report(
        f"DDPM CIFAR-10 sampling step, batch {args.sample_batch}",
        timings,
        ours="ours",
        peer="diffusers",
      ),
      flush=True,
    )


if __name__ == "__main__":
  main()
