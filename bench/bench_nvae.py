"""NVAE training throughput: examples/s of the harness's compiled train step (the presets of
experiments.nvae_train: quick, cpu, paper; XLA off/on, float32 vs mixed_bfloat16) and the paper
config's parameter count.

  python bench/bench_nvae.py                      # all combinations (paper ones are slow on a CPU)
  python bench/bench_nvae.py --configs=quick,cpu --steps=10 --xla=off --precisions=float32

Each combination trains through `experiments.harness.Trainer.fit` (data pipeline, loss with
SR / L_BN / KL balancing, optimizer) on random binary images for 2 x `--steps` steps; the rate is
that of the second window (the first one includes tracing / XLA compilation). Ratios are formed
from numbers measured in this one run. The cpu preset's step against the official NVlabs/NVAE code:
bench/bench_nvae_official.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from experiments import data, harness, nvae_train
from nvae_tf import NVAE

IMAGE_SHAPE = data.image_shape("binarized_mnist")


def measure(config_name: str, *, batch_size: int, steps: int, xla: bool, precision: str) -> float:
  """Examples/s of the second window of 2 x steps training steps."""
  strategy = harness.setup_runtime(precision=precision)
  preset = nvae_train.PRESETS[config_name]
  s = nvae_train.RunSettings(model=preset.model, preset=config_name, warmup_epochs=1)
  images = (
    np.random.RandomState(0).uniform(size=(batch_size * (2 * steps + 1),) + IMAGE_SHAPE) < 0.2
  ).astype(np.float32)
  train = tf.data.Dataset.from_tensor_slices(images)
  model, optimizer = nvae_train.build(
    s, strategy=strategy, steps_per_epoch=2 * steps + 1, epochs=10, seed=0, image_shape=IMAGE_SHAPE
  )
  with tempfile.TemporaryDirectory() as logdir:
    config = harness.TrainConfig(
      logdir=logdir,
      batch_size=batch_size,
      epochs=10,
      max_steps=2 * steps,
      jit_compile=xla,
      log_every=steps,
      progress=False,
    )
    trainer = harness.Trainer(
      config=config,
      strategy=strategy,
      model=model,
      optimizer=optimizer,
      loss_fn=nvae_train.make_loss_fn(s),
      train_data=train,
    )
    last = trainer.fit()
  keras.mixed_precision.set_global_policy("float32")
  return last["examples_per_s"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default="quick,cpu,paper", help="Comma list of presets to time.")
  parser.add_argument(
    "--quick_batch",
    type=int,
    default=100,
    help="Global batch of the quick and cpu configs (their presets' batch).",
  )
  parser.add_argument(
    "--paper_batch",
    type=int,
    default=16,
    help="Global batch of the paper config (official: 400; smaller on a CPU).",
  )
  parser.add_argument("--steps", type=int, default=5, help="Timed steps per combination.")
  parser.add_argument("--xla", default="off,on", help="XLA settings to time: off,on.")
  parser.add_argument(
    "--precisions", default="float32,mixed_bfloat16", help="Keras precision policies to time."
  )
  args = parser.parse_args()

  keras.utils.set_random_seed(0)
  t = time.perf_counter()
  paper = NVAE(nvae_train.PRESETS["paper"].model)
  print(
    f"paper config: {paper.count_params():,} trainable parameters, {len(paper.conv_layers)} "
    f"convs, {len(paper.bn_layers)} BN layers (built in {time.perf_counter() - t:.1f} s)"
  )
  for name in ("cpu", "quick"):
    print(
      f"{name} config: {NVAE(nvae_train.PRESETS[name].model).count_params():,} trainable parameters"
    )
  del paper
  print(
    f"device: {tf.config.list_physical_devices('GPU') or 'CPU'}, "
    f"{os.cpu_count()} CPU cores visible; load average {os.getloadavg()[0]:.1f}"
  )

  rates = {}
  print(
    f"{'config':8s} {'batch':>5s} {'xla':>4s} {'precision':>15s} {'examples/s':>11s} {'wall s':>7s}"
  )
  for config_name in args.configs.split(","):
    batch = args.paper_batch if config_name == "paper" else args.quick_batch
    for xla in [x == "on" for x in args.xla.split(",")]:
      for precision in args.precisions.split(","):
        start = time.perf_counter()
        rate = measure(
          config_name, batch_size=batch, steps=args.steps, xla=xla, precision=precision
        )
        rates[config_name, xla, precision] = rate
        print(
          f"{config_name:8s} {batch:5d} {'on' if xla else 'off':>4s} {precision:>15s} "
          f"{rate:11.1f} {time.perf_counter() - start:7.1f}",
          flush=True,
        )
  for (config_name, xla, precision), rate in rates.items():
    if xla and (config_name, False, precision) in rates:
      print(
        f"ratio {config_name} {precision}: XLA on / off = {rate / rates[config_name, False, precision]:.2f}"
      )
    if precision == "mixed_bfloat16" and (config_name, xla, "float32") in rates:
      print(
        f"ratio {config_name} xla={'on' if xla else 'off'}: bfloat16 / float32 = "
        f"{rate / rates[config_name, xla, 'float32']:.2f}"
      )


if __name__ == "__main__":
  main()
