"""Importance weights, the cost of the test NLL (NVAE K = 1000, VampPrior K = 5000): the models'
`log_weights` (the networks on x alone, NVAE's bottom-up pass and VampPrior's q(z | x) / x
branches, run once per image, their outputs repeated K times) against the whole model on the
images repeated K times (how log_weights worked before; the same numbers:
tests/nvae_tf/test_model.py, tests/vampprior_tf/test_model.py); for NVAE also the inference
network with batch norm folded into the convolutions (what log_weights runs) against the same
network with every batch norm applied on its own (`InvertedResidual.fold_batch_norm = False`).

  python bench/bench_log_weights.py                    # NVAE cpu preset, VampPrior paper models
  python bench/bench_log_weights.py --cores=1 --threads=1 --vampprior=  # one core, NVAE only
  python bench/bench_log_weights.py --configs=quick,cpu --vampprior=vae,hvae_2level --repeats=5
  python bench/bench_log_weights.py --configs=paper --images=4 --samples=25 --repeats=1 --vampprior=
  python bench/bench_log_weights.py --cores=0 --threads=1 --vampprior= --op_profile  # where it goes

One call is one chunk of an evaluation: NVAE `--images` x `--samples` (the presets' eval batch x
iw_chunk, 50 x 100), VampPrior 20 images x 250 samples (`vampprior_train.RunSettings`'s
ll_batch_size x ll_chunk) with the paper sizes (300 hidden units, 40-d latents, 500
pseudo-inputs). Every method is compiled with tf.function and timed after a warm-up call, the
methods alternating call by call; each prints wall and CPU seconds per call (medians), and each
ratio is formed from CPU times measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import statistics  # noqa: E402

import peer  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cores", default="", help="Comma list of cores to run on (default: all).")
  parser.add_argument(
    "--threads", type=int, default=0, help="TensorFlow intra/inter-op threads (0: its default)."
  )
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
  parser.add_argument(
    "--op_profile",
    action="store_true",
    help="Instead of comparing, trace NVAE's log_weights (TensorFlow profiler) and print where "
    "its time goes by kind of op.",
  )
  args = parser.parse_args()
  cores = [int(c) for c in args.cores.split(",") if c]
  peer.pin(cores or None, args.threads)
  if not args.threads:
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
      del os.environ[name]
  import numpy as np  # after pinning: TensorFlow reads the thread counts when imported
  import tensorflow as tf

  from experiments import nvae_train, vampprior_train
  from nvae_tf import NVAE
  from nvae_tf import layers as L
  from vampprior_tf import model as vampprior_models

  print(peer.header(args.threads or tf.config.threading.get_intra_op_parallelism_threads()))
  print(f"Python {platform.python_version()}, TensorFlow {tf.__version__}")
  binary = lambda n, shape: tf.constant(
    (np.random.default_rng(0).random((n,) + shape) < 0.2).astype(np.float32)
  )
  for name in filter(None, args.configs.split(",")):
    k = args.samples
    model = NVAE(nvae_train.PRESETS[name].model, seed=0)
    x = binary(args.images, (28, 28, 1))
    model(x[:2])

    if args.op_profile:
      op_profile(f"NVAE {name}: {args.images} images x K = {k}", model, x, k, args.repeats)
      continue

    def unfolded(xb, m=model, k=k):
      L.InvertedResidual.fold_batch_norm = False  # read while tracing
      try:
        return m.log_weights(xb, k)
      finally:
        L.InvertedResidual.fold_batch_norm = True

    compare(
      f"NVAE {name}: {args.images} images x K = {k}",
      args.repeats,
      x,
      once=tf.function(lambda xb, m=model, k=k: m.log_weights(xb, k)),
      once_bn_apart=tf.function(unfolded),
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


def _nvae_op_kind(name: str, op_type: str) -> str:
  if "Depthwise" in op_type:
    return "depthwise 5x5 convolutions (bias fused)"
  if "Conv2D" in op_type:
    return "convolutions (1x1 and 3x3; bias, padding and the swish after them fused)"
  if "Swish" in op_type:
    return "swish after the depthwise convolutions (TensorFlow fuses it into Conv2D only)"
  if "Einsum" in op_type:
    return "bilinear upsampling of the up cells' skips (einsum)"
  if op_type.startswith("StatelessRandom"):
    return "noise of the K samples"
  if op_type == "Tile":
    return "encoder features and images tiled over the K samples"
  return "the rest (ELU, SE, residual adds, log-densities, Bernoulli log-likelihood)"


def op_profile(label: str, model, x, k: int, repeats: int):
  """NVAE `log_weights` traced by the TensorFlow profiler (one call, after a warm-up call and
  `repeats` timed ones): each kind of op's share of the traced op time and of the measured CPU
  time per call."""
  import tensorflow as tf

  fn = tf.function(lambda xb: model.log_weights(xb, k))
  step = lambda: fn(x).numpy()
  step()
  cpu = time.process_time()
  for _ in range(repeats):
    step()
  cpu_s = (time.process_time() - cpu) / repeats
  per_sample_ms = 1e3 * cpu_s / (int(x.shape[0]) * k)
  print(f"{label}: {cpu_s:.2f} CPU s per call ({per_sample_ms:.3f} ms per image-sample)")
  for kind, share in peer.op_time_by_kind(step, _nvae_op_kind, calls=1).items():
    print(f"  {kind:85s} {100 * share:5.1f}%  {cpu_s * share:6.2f} CPU s per call")


def compare(label: str, repeats: int, x, **methods):
  """Times each method (compiled functions of x) `repeats` times, alternating call by call;
  prints each method's median wall / CPU seconds per call and its CPU time / the first one's."""
  for fn in methods.values():
    fn(x).numpy()  # trace and warm up
  wall = {name: [] for name in methods}
  cpu = {name: [] for name in methods}
  for _ in range(repeats):
    for name, fn in methods.items():
      w, c = time.perf_counter(), time.process_time()
      fn(x).numpy()
      wall[name].append(time.perf_counter() - w)
      cpu[name].append(time.process_time() - c)
  first = statistics.median(next(iter(cpu.values())))
  print(f"{label} (medians of {repeats} calls):")
  for name in methods:
    c = statistics.median(cpu[name])
    print(
      f"  {name:14s} {statistics.median(wall[name]):8.3f} s wall {c:8.3f} s CPU per call; "
      f"CPU / {next(iter(methods))} = {c / first:.2f}",
      flush=True,
    )


if __name__ == "__main__":
  main()
