"""Sample quality of the third model family on MNIST: a VAE with a RealNVP prior, a RealNVP image
flow and a DDPM (ancestral and DDIM sampling), with FID/KID against held-out MNIST and bits/dim.

  python -m experiments.sample_quality --models=vae,flow,ddpm --preset=quick
  python -m experiments.sample_quality --preset=cpu --logdir=../runs/sample_quality_cpu  # ~2 CPU-hours

Each model trains with the shared harness under <logdir>/<model> (checkpoints, resumable;
TensorBoard scalars and sample images), or is loaded when its checkpoint already reached the target:
rerunning the same command resumes the model that was interrupted and does not retrain a finished one.
Writes `results/sample_quality.md` (the table and how it was made), one sample-grid PNG per model
and sampler in `results/`, the per-image held-out values beside the page
(`results/sample_quality/<model>.npz`, from <logdir>/<model>/test_per_example.npz; the page's
bits/dim are computed from them), samples as .npz and `results.json` in the logdir (smoke runs with
--max_steps write the page under <logdir>/results instead).

Data. `quick` and `cpu`: the only grey MNIST images available offline are the 10,000 test images,
so they train on test[:9000] and evaluate on the held-out test[9000:] (1,000 images). `paper`:
trains on the 60,000 MNIST train images and evaluates on the 10,000 test images (needs the train file).

FID/KID need the Inception-2015 weights (`--inception_path`, $GENMODELS_INCEPTION_PATH or
`--download_inception`); without them the table says "unavailable (...)", never a number.
"""

from __future__ import annotations

from absl import flags

from experiments import flags as common
from experiments import sample_quality_flags, sample_quality_train

FLAGS = flags.FLAGS


def define_flags():
  """Defines this script's flags (`sample_quality_flags.define_flags`) and shows them in --help."""
  sample_quality_flags.define_flags()
  flags.adopt_module_key_flags(sample_quality_flags)


def main(argv):
  del argv
  settings = sample_quality_flags.settings_from_flags()
  sample_quality_train.run(settings, strategy=common.setup_runtime())
  return 0


if __name__ == "__main__":
  define_flags()
  common.run(main)
