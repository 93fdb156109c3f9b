"""Peak memory of one test-NLL call of NVAE (`NVAE.log_weights` on `--images` images x chunk
importance samples, compiled with tf.function), one fresh process per chunk size, so that each
peak RSS (`resource.getrusage`) belongs to that chunk alone. `--iw_chunk` of nvae_mnist /
nvae_evaluate / nvae_table1 sets the chunk; the estimate does not depend on it (the K samples are
drawn in K / chunk calls), its memory does.

  python bench/bench_nll_memory.py                       # cpu preset, chunks 10, 25, 50
  python bench/bench_nll_memory.py --preset=quick --chunks=10,50,100
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def peak_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def one_chunk(preset: str, images: int, chunk: int) -> None:
  import numpy as np
  import tensorflow as tf

  from experiments import nvae_train
  from nvae_tf import NVAE

  model = NVAE(nvae_train.PRESETS[preset].model, seed=0)
  x = tf.constant((np.random.default_rng(0).random((images, 28, 28, 1)) < 0.2).astype(np.float32))
  model(x[:2])
  built = peak_gib()
  log_weights = tf.function(lambda xb: model.log_weights(xb, chunk))
  for _ in range(2):
    log_weights(x).numpy()
  print(
    f"NVAE {preset}: {images} images x chunk {chunk}: peak RSS {peak_gib():.2f} GiB "
    f"(model built: {built:.2f} GiB)",
    flush=True,
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", default="cpu", help="NVAE preset (quick, cpu, paper).")
  parser.add_argument("--images", type=int, default=50, help="Images per call (eval batch).")
  parser.add_argument("--chunks", default="10,25,50", help="Comma list of chunk sizes.")
  parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process
  args = parser.parse_args()
  if args.one is not None:
    one_chunk(args.preset, args.images, args.one)
    return
  from common_tf import host

  print(f"host: {host.cpu_model()}", flush=True)
  for chunk in (int(c) for c in args.chunks.split(",")):
    subprocess.run(
      [
        sys.executable,
        __file__,
        f"--preset={args.preset}",
        f"--images={args.images}",
        f"--one={chunk}",
      ],
      check=True,
    )


if __name__ == "__main__":
  main()
