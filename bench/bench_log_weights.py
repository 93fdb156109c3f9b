"""Importance weights, the cost of the test NLL (NVAE K = 1000, VampPrior K = 5000): the models'
`log_weights` (the networks on x alone, NVAE's bottom-up pass and VampPrior's q(z | x) / x
branches, run once per image, their outputs repeated K times) against the whole model on the
images repeated K times (how log_weights worked before; the same numbers:
tests/nvae_tf/test_model.py, tests/vampprior_tf/test_model.py).

  python bench/bench_log_weights.py                    # NVAE cpu preset, VampPrior paper models
  python bench/bench_log_weights.py --configs=quick,cpu --vampprior=vae,hvae_2level --repeats=5
  python bench/bench_log_weights.py --configs=paper --images=4 --samples=25 --repeats=1 --vampprior=

One call is one chunk of an evaluation: NVAE `--images` x `--samples` (the presets' eval batch x
iw_chunk, 50 x 100), VampPrior 20 images x 250 samples (`vampprior_train.RunSettings`'s
ll_batch_size x ll_chunk) with the paper sizes (300 hidden units, 40-d latents, 500
pseudo-inputs). Both methods are compiled with tf.function and timed after a warm-up call; each
ratio is formed from two times measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from common_tf import host
from experiments import nvae_train, vampprior_train
from nvae_tf import NVAE
from vampprior_tf import model as vampprior_models


def seconds_per_call(fn, x, repeats: int) -> float:
  fn(x)  # trace
  start = time.perf_counter()
  for _ in range(repeats):
    fn(x).numpy()
  return (time.perf_counter() - start) / repeats


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--configs",
    default="cpu",
    help="Comma list of NVAE presets (quick, cpu, paper); empty for none.",
  )
  parser.add_argument("--images", type=int, default=50, help="NVAE images per call (eval batch).")
  parser.add_argument("--samples", type=int, default=100, help="NVAE importance samples per call.")
  parser.add_argument(
    "--vampprior",
    default="vae,hvae_2level",
    help="Comma list of VampPrior models (vae, hvae_2level, convhvae_2level), "
    "each with the VampPrior; empty for none.",
  )
  parser.add_argument("--repeats", type=int, default=3, help="Timed calls per method.")
  args = parser.parse_args()
  print(
    f"host: {host.cpu_model()}; {platform.python_version()}, TensorFlow {tf.__version__}; "
    f"load average {os.getloadavg()[0]:.1f}"
  )
  binary = lambda n, shape: tf.constant(
    (np.random.default_rng(0).random((n,) + shape) < 0.2).astype(np.float32)
  )
  for name in filter(None, args.configs.split(",")):
    k = args.samples
    model = NVAE(nvae_train.PRESETS[name].model, seed=0)
    x = binary(args.images, (28, 28, 1))
    model(x[:2])
    compare(
      f"NVAE {name}: {args.images} images x K = {k}",
      args.repeats,
      x,
      once=tf.function(lambda xb, m=model, k=k: m.log_weights(xb, k)),
      tiled=tf.function(
        lambda xb, m=model, k=k: tf.reshape(
          m(tf.tile(xb, [k, 1, 1, 1]), training=False).log_weight, [k, -1]
        )
      ),
    )
  defaults = vampprior_train.RunSettings.__dataclass_fields__
  images, k = defaults["ll_batch_size"].default, defaults["ll_chunk"].default
  for name in filter(None, args.vampprior.split(",")):
    s = vampprior_train.RunSettings(
      model=name,
      prior="vampprior",
      dataset="static_mnist",
      likelihood="bernoulli",
      num_components=500,
      learn_prior_weights=False,
      warmup=100,
      lr=5e-4,
      early_stopping=50,
      test_samples=5000,
      train_examples=None,
      eval_examples=None,
      image_every=0,
    )
    model = vampprior_train.build_model(s, image_shape=(28, 28, 1), seed=0)
    x = binary(images, (28, 28, 1))
    model(x[:2])
    compare(
      f"VampPrior {name}: {images} images x K = {k}",
      args.repeats,
      x,
      once=tf.function(lambda xb, m=model: m.log_weights(xb, k)),
      tiled=tf.function(
        lambda xb, m=model: vampprior_models.split_samples(
          m(vampprior_models.repeat_examples(xb, k)).elbo, k
        )
      ),
    )


def compare(label: str, repeats: int, x, *, once, tiled):
  t_once, t_tiled = seconds_per_call(once, x, repeats), seconds_per_call(tiled, x, repeats)
  print(
    f"{label}: log_weights {t_once:.3f} s/call, whole model on repeated images "
    f"{t_tiled:.3f} s/call; ratio = {t_tiled / t_once:.2f}",
    flush=True,
  )


if __name__ == "__main__":
  main()
