"""NVAE training throughput: examples/s of the harness's compiled train step (quick and paper configs,
XLA off/on, float32 vs mixed_bfloat16) and the paper config's parameter count.

  python bench/bench_nvae.py                      # all combinations (paper ones are slow on a CPU)
  python bench/bench_nvae.py --configs=quick --steps=10

Each combination trains through `experiments.harness.Trainer.fit` (data pipeline, loss with
SR / L_BN / KL balancing, optimizer) on random binary images for 2 x `--steps` steps; the rate is
that of the second window (the first one includes tracing / XLA compilation). Ratios are formed
from numbers measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

from experiments import harness  # pylint: disable=wrong-import-position
from experiments import nvae_mnist  # pylint: disable=wrong-import-position


def measure(config_name: str, *, batch_size: int, steps: int, xla: bool, precision: str) -> float:
  """Examples/s of the second window of 2 x steps training steps."""
  strategy = harness.setup_runtime(precision=precision)
  preset = nvae_mnist.PRESETS[config_name]
  s = nvae_mnist.RunSettings(model=preset.model, preset=config_name, warmup_epochs=1)
  images = (np.random.RandomState(0).uniform(size=(batch_size * (2 * steps + 1), 28, 28, 1))
            < 0.2).astype(np.float32)
  train = tf.data.Dataset.from_tensor_slices(images)
  model, optimizer = nvae_mnist.build(s, strategy=strategy, steps_per_epoch=2 * steps + 1,
                                      epochs=10, seed=0)
  with tempfile.TemporaryDirectory() as logdir:
    config = harness.TrainConfig(logdir=logdir, batch_size=batch_size, epochs=10,
                                 max_steps=2 * steps, jit_compile=xla, log_every=steps,
                                 progress=False)
    trainer = harness.Trainer(config=config, strategy=strategy, model=model, optimizer=optimizer,
                              loss_fn=nvae_mnist.make_loss_fn(s, model), train_data=train)
    last = trainer.fit()
  keras.mixed_precision.set_global_policy("float32")
  return last["examples_per_s"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default="quick,paper", help="Comma list of presets to time.")
  parser.add_argument("--quick_batch", type=int, default=100, help="Global batch of the quick config.")
  parser.add_argument("--paper_batch", type=int, default=16,
                      help="Global batch of the paper config (official: 400; smaller on a CPU).")
  parser.add_argument("--steps", type=int, default=5, help="Timed steps per combination.")
  parser.add_argument("--xla", default="off,on", help="XLA settings to time: off,on.")
  parser.add_argument("--precisions", default="float32,mixed_bfloat16",
                      help="Keras precision policies to time.")
  args = parser.parse_args()

  keras.utils.set_random_seed(0)
  t = time.perf_counter()
  paper = nvae_mnist.NVAE(nvae_mnist.PRESETS["paper"].model)
  print(f"paper config: {paper.count_params():,} trainable parameters, {len(paper.conv_layers)} "
        f"convs, {len(paper.bn_layers)} BN layers (built in {time.perf_counter() - t:.1f} s)")
  quick = nvae_mnist.NVAE(nvae_mnist.PRESETS["quick"].model)
  print(f"quick config: {quick.count_params():,} trainable parameters")
  del paper, quick
  print(f"device: {tf.config.list_physical_devices('GPU') or 'CPU'}, "
        f"{os.cpu_count()} CPU cores visible; load average {os.getloadavg()[0]:.1f}")

  rates = {}
  print(f"{'config':8s} {'batch':>5s} {'xla':>4s} {'precision':>15s} {'examples/s':>11s} {'wall s':>7s}")
  for config_name in args.configs.split(","):
    batch = args.quick_batch if config_name == "quick" else args.paper_batch
    for xla in [x == "on" for x in args.xla.split(",")]:
      for precision in args.precisions.split(","):
        start = time.perf_counter()
        rate = measure(config_name, batch_size=batch, steps=args.steps, xla=xla, precision=precision)
        rates[config_name, xla, precision] = rate
        print(f"{config_name:8s} {batch:5d} {'on' if xla else 'off':>4s} {precision:>15s} "
              f"{rate:11.1f} {time.perf_counter() - start:7.1f}", flush=True)
  for (config_name, xla, precision), rate in rates.items():
    if xla and (config_name, False, precision) in rates:
      print(f"ratio {config_name} {precision}: XLA on / off = {rate / rates[config_name, False, precision]:.2f}")
    if precision == "mixed_bfloat16" and (config_name, xla, "float32") in rates:
      print(f"ratio {config_name} xla={'on' if xla else 'off'}: bfloat16 / float32 = "
            f"{rate / rates[config_name, xla, 'float32']:.2f}")


if __name__ == "__main__":
  main()
