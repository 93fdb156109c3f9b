"""NVAE importance weights, the cost of the K = 1000 test NLL: `NVAE.log_weights` (the bottom-up
pass once per image, its outputs tiled K times) against the whole network on the images tiled K
times (how log_weights worked before; the same numbers, tests/nvae_tf/test_model.py).

  python bench/bench_nvae_log_weights.py                     # cpu preset, 50 images x K = 100
  python bench/bench_nvae_log_weights.py --configs=quick,cpu --repeats=5

One call is one chunk of the evaluation (`--eval_batch_size` images x `--iw_chunk` samples, the
presets' 50 x 100); both are compiled with tf.function and timed after a warm-up call. The ratio
is formed from the two times measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

from experiments import harness  # pylint: disable=wrong-import-position
from experiments import nvae_train  # pylint: disable=wrong-import-position
from nvae_tf import NVAE  # pylint: disable=wrong-import-position


def seconds_per_call(fn, x, repeats: int) -> float:
  fn(x)  # trace
  start = time.perf_counter()
  for _ in range(repeats):
    fn(x).numpy()
  return (time.perf_counter() - start) / repeats


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default="cpu", help="Comma list of presets (quick, cpu, paper).")
  parser.add_argument("--images", type=int, default=50, help="Images per call (eval batch).")
  parser.add_argument("--samples", type=int, default=100, help="Importance samples per call (chunk).")
  parser.add_argument("--repeats", type=int, default=3, help="Timed calls per method.")
  args = parser.parse_args()
  print(f"host: {harness.cpu_model()}; {platform.python_version()}, TensorFlow {tf.__version__}; "
        f"load average {os.getloadavg()[0]:.1f}")
  k = args.samples
  for name in args.configs.split(","):
    model = NVAE(nvae_train.PRESETS[name].model, seed=0)
    x = tf.constant((np.random.default_rng(0).random((args.images, 28, 28, 1)) < 0.2)
                    .astype(np.float32))
    model(x[:2])
    once = tf.function(lambda xb: model.log_weights(xb, k))
    tiled = tf.function(lambda xb: tf.reshape(
        model(tf.tile(xb, [k, 1, 1, 1]), training=False).log_weight, [k, -1]))
    t_once, t_tiled = seconds_per_call(once, x, args.repeats), seconds_per_call(tiled, x, args.repeats)
    print(f"{name}: {args.images} images x K = {k}: log_weights {t_once:.2f} s/call, whole network "
          f"on tiled images {t_tiled:.2f} s/call; ratio tiled / log_weights = {t_tiled / t_once:.2f}")


if __name__ == "__main__":
  main()
