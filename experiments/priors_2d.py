"""Priors study with a 2-D latent: a VAE (2 hidden layers of 512, ReLU, Bernoulli decoder) trained
with a Gaussian, a mixture of 16 Gaussians, a RealNVP flow (10 couplings, 8 hidden units) and a
VampPrior (16 pseudo-inputs, learnable weights); test ELBO and IWAE (mean ± std over seeds) and,
per prior, the aggregate posterior (a density of z ~ q(z|x) over the whole test set) beside the
prior's density on the same axes.

  # the report's protocol: static binarized MNIST 50k / 10k, 20 epochs, 10 seeds, K = 1000
  python -m experiments.priors_2d --preset=paper --logdir=runs/priors_2d_report
  # the page from what the logdirs hold (finished runs, how far the others got; a run whose folder
  # is not on this machine keeps its finished row from the page's JSON); trains nothing
  python -m experiments.priors_2d --preset=paper --logdir=runs/priors_2d_report --report_only
  # CPU smoke test on the labelled grey MNIST test images
  python -m experiments.priors_2d --preset=quick

Data (`--dataset`, default the preset's):
  binarized_mnist  static binarized MNIST (Larochelle & Murray 2011): 50,000 train / 10,000 test
                   images, no labels (the plots cannot be coloured by digit).
  mnist_test       the only labelled MNIST images offline, the 10,000 grey test images: a fixed
                   permutation (seed 2018) gives 8,000 training images (binarized afresh every
                   epoch) and 2,000 test images (binarized once, seed 777), with digit labels.

Every (prior, seed) run lives in <logdir>/<prior>-seed<seed>: the harness's checkpoints and
status.json, then `test_per_example.npz` (the test IWAE and ELBO of every test image, nats),
`row.json` (its evaluated numbers) and `aggregate_posterior.npz` (the plot's data); the page keeps
the per-image values beside it (<output stem>/<prior>-seed<seed>.npz) and prints the numbers they
give. A rerun resumes unfinished training and never re-trains or re-evaluates a finished,
evaluated run with the same settings; runs go seed by seed (all priors of seed 0 first), so a
partial study has every prior.
"""

from __future__ import annotations

from absl import flags

from experiments import flags as common
from experiments import priors_2d_flags, priors_2d_train

FLAGS = flags.FLAGS


def define_flags():
  """Defines this script's flags (`priors_2d_flags.define_flags`) and shows them in --help."""
  priors_2d_flags.define_flags()
  flags.adopt_module_key_flags(priors_2d_flags)


def main(argv):
  del argv
  study = priors_2d_flags.study_settings_from_flags()
  priors_2d_train.run(study, strategy=common.setup_runtime())


if __name__ == "__main__":
  define_flags()
  common.run(main)
