"""TensorFlow's host allocator: malloc (TensorFlow's default) against BFC (`TF_CPU_ALLOCATOR_USE_BFC`,
what `experiments`, `evaluation` and the tests set: common_tf/host.py), on the call that dominates
the long evaluations, NVAE's `log_weights` (one chunk of the test NLL), and on a VampPrior paper
VAE training step (forward, backward, Adam).

  python bench/bench_cpu_allocator.py                       # NVAE cpu preset, 10 images x K = 100
  python bench/bench_cpu_allocator.py --images=50 --samples=50 --repeats=1   # the cpu preset's chunk

Each allocator runs in its own process (the variable is read when TensorFlow makes its allocator),
one after the other; each prints its time per call after a warm-up call, the process's kernel CPU
time and minor page faults over the timed calls, and its peak resident memory. The ratios are formed
from the two processes of this one run; the NVAE outputs of the two are compared too (the allocator
must not change the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def timed(fn, x, repeats: int) -> dict:
  """Seconds per call, kernel CPU seconds and minor faults per call, after one warm-up call."""
  out = fn(x).numpy()  # trace
  before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  for _ in range(repeats):
    out = fn(x).numpy()
  after = resource.getrusage(resource.RUSAGE_SELF)
  return dict(
    seconds=(time.perf_counter() - start) / repeats,
    sys_seconds=(after.ru_stime - before.ru_stime) / repeats,
    minor_faults=(after.ru_minflt - before.ru_minflt) / repeats,
    out=out,
  )


def child(args) -> None:
  """One allocator (the environment says which): the measurements as one JSON line."""
  import keras
  import numpy as np
  import tensorflow as tf

  from experiments import nvae_train, vampprior_train
  from nvae_tf import NVAE

  keras.utils.set_random_seed(0)
  binary = lambda n: tf.constant(
    (np.random.default_rng(0).random((n, 28, 28, 1)) < 0.2).astype(np.float32)
  )
  model = NVAE(nvae_train.PRESETS[args.preset].model, seed=0)
  x = binary(args.images)
  nvae = timed(tf.function(lambda xb: model.log_weights(xb, args.samples)), x, args.repeats)
  s = vampprior_train.RunSettings(
    model="vae",
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
  vae = vampprior_train.build_model(s, image_shape=(28, 28, 1), seed=0)
  optimizer = keras.optimizers.Adam(5e-4)
  batch = binary(100)  # the paper's batch size

  @tf.function
  def train_step(xb):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(vae(xb).elbo)
    optimizer.apply_gradients(
      zip(tape.gradient(loss, vae.trainable_variables), vae.trainable_variables)
    )
    return loss

  step = timed(train_step, batch, args.repeats * 20)
  print(
    json.dumps(
      dict(
        allocator=os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"),
        nvae={k: v for k, v in nvae.items() if k != "out"},
        nvae_out=nvae["out"].tolist(),
        vae_step={k: v for k, v in step.items() if k != "out"},
        max_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      )
    )
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", default="cpu", help="NVAE preset (quick, cpu, paper).")
  parser.add_argument("--images", type=int, default=10, help="NVAE images per call.")
  parser.add_argument("--samples", type=int, default=100, help="NVAE importance samples per call.")
  parser.add_argument("--repeats", type=int, default=2, help="Timed NVAE calls (VAE steps: x20).")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(args)
    return
  from common_tf import host

  print(
    f"host: {host.cpu_model()}; load average {os.getloadavg()[0]:.1f}; NVAE {args.preset}: "
    f"{args.images} images x K = {args.samples} per call; VampPrior VAE (paper sizes, "
    "500 pseudo-inputs): a training step on 100 images",
    flush=True,
  )
  runs = {}
  for value in ("false", "true"):
    out = subprocess.run(
      [sys.executable, __file__, "--child"] + sys.argv[1:],
      check=True,
      capture_output=True,
      text=True,
      env=dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC=value),
    )
    runs[value] = r = json.loads(out.stdout.strip().splitlines()[-1])
    name = "BFC" if value == "true" else "malloc"
    for part, label in (("nvae", "NVAE log_weights"), ("vae_step", "VAE train step")):
      m = r[part]
      print(
        f"{name:6s} {label}: {m['seconds']:.3f} s/call, kernel CPU {m['sys_seconds']:.3f} s/call, "
        f"{m['minor_faults']:,.0f} minor faults/call",
        flush=True,
      )
    print(f"{name:6s} peak resident memory {r['max_rss_gib']:.2f} GiB", flush=True)
  import numpy as np

  a, b = np.array(runs["false"]["nvae_out"]), np.array(runs["true"]["nvae_out"])
  print(
    f"malloc / BFC time: NVAE log_weights {runs['false']['nvae']['seconds'] / runs['true']['nvae']['seconds']:.2f}, "
    f"VAE train step {runs['false']['vae_step']['seconds'] / runs['true']['vae_step']['seconds']:.2f}; "
    f"NVAE log-weights max |malloc - BFC| = {np.abs(a - b).max():.3g} (values up to "
    f"{np.abs(a).max():.3g})"
  )


if __name__ == "__main__":
  main()
