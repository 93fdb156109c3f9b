"""Train NVAE on binary MNIST and estimate its test NLL (Vahdat & Kautz 2020; NVlabs/NVAE MNIST setup).

  python -m experiments.nvae_mnist --spectral=sr --kl_warmup=step --preset=quick
  python -m experiments.nvae_mnist --preset=cpu --logdir=../runs/nvae_cpu/step_sr   # 4-5 h (results/nvae_cpu.md)
  python -m experiments.nvae_mnist --preset=paper --strategy=mirrored   # the official run

Data (`--dataset`): `mnist` = grey MNIST with dynamic binarization (a fresh Bernoulli draw of every
image each epoch; the official setup); `binarized_mnist` = the fixed binarization of Larochelle &
Murray (static, 50k train / 10k test); `auto` (default) = `mnist` when its training images can be
read, else `binarized_mnist` (the case offline here). The choice is printed and recorded.

Writes to --logdir: checkpoints (resumable), TensorBoard (loss, recon, KL total and per group,
beta, gammas, lambda, L_SR, L_BN, lr, grad norm, active units per group, sample grids at
temperatures 0.7 / 1.0 and reconstructions each epoch), `validation.json` (validation NLL vs
training time), and at the end the importance-weighted NLL
(`--num_iw_samples`, 1000 in the paper preset as official) in nats and bits/dim, `samples.png` /
`samples.npz`, and `results.json` (one row).

The work is done by the library `experiments.nvae_train` (no flags); this script defines the flags
(`experiments.nvae_flags`), reads them once into a frozen `RunSettings` and calls it.
"""

from __future__ import annotations

from absl import flags

from experiments import flags as common
from experiments import nvae_flags, nvae_train

FLAGS = flags.FLAGS


def define_flags():
  """Defines this script's flags (`nvae_flags.define_run_flags`) and shows them in --help."""
  nvae_flags.define_run_flags()
  flags.adopt_module_key_flags(nvae_flags)


def main(argv):
  del argv
  strategy = common.setup_runtime()
  s = nvae_flags.settings_from_flags()
  nvae_train.train_and_evaluate(
    s,
    nvae_flags.train_config(s),
    strategy=strategy,
    data_dir=FLAGS.data_dir,
    command=common.command_line(),
  )


if __name__ == "__main__":
  define_flags()
  common.run(main)
