"""Peak memory of the test NLL (`evaluation.likelihood.evaluate_log_likelihood`, as the scripts run
it) of NVAE or of a VampPrior-suite model, one fresh process per chunk size, so that each peak RSS
(`resource.getrusage`) belongs to that chunk alone. Each process also asks the memory-budget
chooser (`likelihood.choose_chunk`, two probe calls) what it predicts, so the prediction can be
compared with the measurement; `auto` evaluates at the chunk the chooser picks for --memory_gib.
The estimate does not depend on the chunk (the K samples are keyed by their index): the NLL column
must be the same on every line.

  python bench/bench_nll_memory.py                                   # NVAE cpu, chunks 10,25,50,auto
  python bench/bench_nll_memory.py --model=hvae_2level --preset=paper --images=20 \\
      --num_samples=500 --chunks=100,250,auto
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = ("nvae", "vae", "hvae_2level", "convhvae_2level", "pixelhvae_2level")  # VampPrior prior


def peak_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def build(model_name: str, preset: str):
  """(model, K of the preset), the same weights in every process."""
  import keras
  import tensorflow as tf

  keras.utils.set_random_seed(0)

  if model_name == "nvae":
    from experiments import nvae_train
    from nvae_tf import NVAE

    model = NVAE(nvae_train.PRESETS[preset].model, seed=0)
    model(tf.zeros((2, 28, 28, 1)))
    return model, nvae_train.PRESETS[preset].num_iw_samples
  from experiments import vampprior_train

  p = vampprior_train.PRESETS[preset]
  s = vampprior_train.RunSettings(
    model=model_name,
    prior="vampprior",
    dataset="static_mnist",
    likelihood="bernoulli",
    num_components=p.num_components,
    learn_prior_weights=False,
    warmup=p.warmup,
    lr=p.lr,
    early_stopping=p.early_stopping,
    test_samples=p.test_samples,
    train_examples=p.train_examples,
    eval_examples=p.eval_examples,
    image_every=p.image_every,
  )
  model = vampprior_train.build_model(s, image_shape=(28, 28, 1), seed=0)
  model(tf.zeros((2, 28, 28, 1)))
  return model, p.test_samples


def one_chunk(args, chunk: str) -> None:
  import numpy as np
  import tensorflow as tf

  from evaluation import likelihood

  model, preset_k = build(args.model, args.preset)
  k = args.num_samples or preset_k
  rng = np.random.default_rng(0)
  batches = [
    (rng.random((args.images, 28, 28, 1)) < 0.2).astype(np.float32) for _ in range(args.batches)
  ]
  built = peak_gib()
  states = likelihood.seed_generator_states(model)
  log_weights = (
    model.log_weights
    if args.model == "nvae"
    else (lambda x, n: model.log_weights(x, n, training=False))
  )
  choice = likelihood.choose_chunk(
    log_weights, batches[0], num_samples=k, memory_gib=args.memory_gib, rng_variables=states
  )
  size = choice.chunk if chunk == "auto" else int(chunk)
  r = likelihood.evaluate_log_likelihood(
    log_weights,
    [tf.constant(b) for b in batches],
    num_samples=k,
    num_dims=784,
    chunk_size=size,
    progress=False,
    rng_variables=states,
  )
  print(
    f"{args.model} {args.preset}: {args.images} images x chunk {size}{' (auto)' * (chunk == 'auto')}"
    f", K = {k}, {args.batches} batch(es): peak RSS {peak_gib():.2f} GiB, predicted "
    f"{choice.predicted_peak_bytes(size) / 2**30:.2f} GiB (model built: {built:.2f} GiB; "
    f"probe: {choice.per_sample_bytes / 2**20:.1f} MiB per sample, fixed "
    f"{choice.fixed_bytes / 2**20:.1f} MiB); NLL {r.nll:.6f}",
    flush=True,
  )
  if chunk == "auto":
    print("  " + choice.describe(), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--model", default="nvae", choices=MODELS, help="NVAE, or a VampPrior-suite model (VampPrior)."
  )
  parser.add_argument(
    "--preset", default="cpu", help="The model's preset (nvae: quick, cpu, paper)."
  )
  parser.add_argument("--images", type=int, default=50, help="Images per call (eval batch).")
  parser.add_argument("--batches", type=int, default=1, help="Batches of --images evaluated.")
  parser.add_argument("--num_samples", type=int, default=0, help="K (0: the preset's).")
  parser.add_argument("--chunks", default="10,25,50,auto", help="Comma list of chunks or auto.")
  parser.add_argument("--memory_gib", type=float, default=8.0, help="Budget of the chooser.")
  parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
  args = parser.parse_args()
  if args.one is not None:
    one_chunk(args, args.one)
    return
  from common_tf import host

  print(f"host: {host.cpu_model()}", flush=True)
  for chunk in args.chunks.split(","):
    subprocess.run(
      [sys.executable, __file__, *sys.argv[1:], f"--one={chunk}"],
      check=True,
    )


if __name__ == "__main__":
  main()
