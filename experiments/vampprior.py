"""Train and evaluate one VAE / HVAE with a standard, MoG, VampPrior or flow prior (Tomczak & Welling
2018, official code jmtomczak/vae_vampprior), then estimate the test log-likelihood with
importance sampling.

  python -m experiments.vampprior --model=vae --prior=vampprior --dataset=static_mnist --preset=quick

Writes to --logdir: checkpoints (resumable), TensorBoard (ELBO terms, beta, validation -ELBO,
pseudo-inputs, samples, reconstructions), `samples.png` / `samples.npz`, and `results.json`
(one row, also appended to `runs/vampprior/results.json`).

The work is done by the library `experiments.vampprior_train` (no flags); this script defines the
flags (`experiments.vampprior_flags`), reads them once into a frozen `RunSettings` and calls it.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from experiments import flags as common
from experiments import harness, results, vampprior_flags, vampprior_train

FLAGS = flags.FLAGS


def define_flags():
  """Defines this script's flags (`vampprior_flags.define_run_flags`) and shows them in --help."""
  vampprior_flags.define_run_flags()
  flags.adopt_module_key_flags(vampprior_flags)


def main(argv):
  del argv
  s = vampprior_flags.settings_from_flags()
  strategy = common.setup_runtime()
  row = vampprior_train.train_and_evaluate(
    s,
    vampprior_flags.run_config(s),
    strategy=strategy,
    data_dir=FLAGS.data_dir,
    eval_memory_gib=None if FLAGS["ll_chunk"].present else FLAGS.eval_memory_gib,
  )
  row["command"] = common.command_line()
  if harness.is_chief(strategy):
    results.append_row(os.path.join("runs", "vampprior", "results.json"), row)
  print(
    f"{s.dataset} {s.model} {s.prior}: test NLL {row['test_nll']:.2f} +- "
    f"{row['test_nll_sem']:.2f} nats (K={row['importance_samples']}), test -ELBO "
    f"{row['test_negative_elbo']:.2f}, {row['epochs_run']} epochs",
    file=sys.stderr,
  )


if __name__ == "__main__":
  define_flags()
  common.run(main)
