"""Performance of diffusion_tf, as ratios measured in one run (absolute numbers are printed too).

  python bench/bench_diffusion.py [--batch=16] [--timesteps=1000] [--channels=16]

1. DDPM ancestral sampling of one batch with T steps: the whole loop compiled once (XLA while
   loop) vs a Python loop calling a compiled step T times (XLA step, then plain-graph step).
2. DDIM with 50 respaced steps (compiled) vs the 1000-step ancestral loop.
3. Train-step throughput (examples/s, through the shared harness) of the U-Net DDPM and the
   RealNVP flow (20 couplings of 256 units).
The U-Net is the quick preset's unless --channels/--res_blocks say otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from diffusion_tf import diffusion, layers
from diffusion_tf import model as models
from experiments import harness


def timed(fn, repeats: int = 1, warmup=None) -> float:
  """Seconds per call after a warm-up (compile) call of `warmup` (default `fn`); the result is
  fetched to the host."""
  np.asarray((warmup or fn)())
  start = time.perf_counter()
  for _ in range(repeats):
    np.asarray(fn())
  return (time.perf_counter() - start) / repeats


def train_throughput(model, loss_fn, images, *, batch_size: int, steps: int) -> float:
  """Examples/s of the harness's compiled train step over the last `steps` steps (compile excluded)."""
  with tempfile.TemporaryDirectory() as logdir:
    config = harness.TrainConfig(
      logdir=logdir,
      batch_size=batch_size,
      epochs=1000,
      max_steps=2 * steps,
      log_every=steps,
      progress=False,
    )
    trainer = harness.Trainer(
      config=config,
      strategy=tf.distribute.get_strategy(),
      model=model,
      optimizer=keras.optimizers.Adam(1e-4),
      loss_fn=loss_fn,
      train_data=tf.data.Dataset.from_tensor_slices(images),
    )
    return trainer.fit()["examples_per_s"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=8, help="samples per sampling batch")
  parser.add_argument("--timesteps", type=int, default=1000, help="diffusion steps T")
  parser.add_argument("--channels", type=int, default=16, help="U-Net base channels")
  parser.add_argument("--res_blocks", type=int, default=1, help="U-Net residual blocks per level")
  parser.add_argument("--train_batch", type=int, default=64, help="train-step batch size")
  parser.add_argument("--train_steps", type=int, default=20, help="timed train steps")
  args = parser.parse_args()

  print(
    f"devices: {[d.name for d in tf.config.list_logical_devices()]}; "
    f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
  )
  unet = layers.UNetConfig(
    channels=args.channels,
    channel_mult=(1, 2, 2, 2),
    num_res_blocks=args.res_blocks,
    attention_resolutions=(8,),
    dropout=0.1,
    num_groups=8,
  )
  gd = diffusion.GaussianDiffusion.linear(args.timesteps)
  ddpm = models.DDPM(image_shape=(28, 28, 1), unet=unet, diffusion=gd, padded_size=32)
  shape = (args.batch,) + ddpm.padded_shape
  seed = tf.constant([0, 0], tf.int32)

  compiled = timed(lambda: ddpm.sample(args.batch, seed=0))
  results = {"ancestral, whole loop compiled (XLA)": compiled}
  for name, jit in (("Python loop of XLA steps", True), ("Python loop of graph steps", False)):
    step = tf.function(lambda x, i, s: gd.ancestral_step(ddpm._eps_fn, x, i, s), jit_compile=jit)
    x_T = gd.initial_noise(shape, seed)
    results[f"ancestral, {name}"] = timed(
      lambda step=step, x_T=x_T: gd.p_sample_loop_stepwise(step, x_T, seed=seed),
      warmup=lambda step=step, x_T=x_T: step(x_T, tf.constant(0), seed),
    )
  ddim = timed(lambda: ddpm.sample_ddim(args.batch, seed=0, num_steps=50), repeats=2)
  results["DDIM 50 steps, compiled (XLA)"] = ddim

  print(f"\nSampling one batch of {args.batch} (T = {args.timesteps}, U-Net ch={args.channels}):")
  for name, seconds in results.items():
    print(f"  {name:45s} {seconds:8.2f} s   {seconds / compiled:6.2f} x the compiled loop")

  images = np.random.default_rng(0).integers(0, 256, (4 * args.train_batch, 28, 28, 1)) / 255.0
  images = images.astype(np.float32)
  unet_eps = train_throughput(
    ddpm,
    lambda m, x, ctx: harness.LossOutput(per_example=m.loss_terms(x).simple),
    images,
    batch_size=args.train_batch,
    steps=args.train_steps,
  )
  flow = models.FlowModel(image_shape=(28, 28, 1), num_couplings=20, hidden_units=256)
  flow_eps = train_throughput(
    flow,
    lambda m, x, ctx: harness.LossOutput(per_example=m.loss_terms(x).nll),
    images,
    batch_size=args.train_batch,
    steps=args.train_steps,
  )
  print(f"\nTrain step, batch {args.train_batch} (harness, graph mode, compile excluded):")
  print(f"  {'U-Net DDPM (ch=' + str(args.channels) + ')':30s} {unet_eps:10.1f} examples/s")
  print(
    f"  {'RealNVP flow (20 x 256)':30s} {flow_eps:10.1f} examples/s   "
    f"({flow_eps / unet_eps:.2f} x the U-Net)"
  )


if __name__ == "__main__":
  main()
