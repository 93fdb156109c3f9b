"""The flags of the 2-D latent priors study and the one place they are read into settings.

`define_flags` (experiments.priors_2d) defines them when the script runs, not at import, so tests
and other scripts can import this module next to other experiment modules that define flags of the
same name (e.g. --dataset). The script's `main` calls `study_settings_from_flags` once and passes
the frozen result to `experiments.priors_2d_train`, which reads no flags.
"""

from __future__ import annotations

from absl import flags

from experiments import flags as common
from experiments import priors_2d_train

FLAGS = flags.FLAGS
PRIORS, DATASETS = priors_2d_train.PRIORS, priors_2d_train.DATASETS


def define_flags():
  """Defines the study's flags (on top of the common flags of experiments.flags)."""
  common.define_preset_flag(
    priors_2d_train.PRESETS,
    help="'quick' fits a CPU in minutes; 'paper' is the report's protocol (docs/priors_2d.md).",
  )
  flags.DEFINE_integer(
    "seeds",
    None,
    "Number of seeds (--seed .. --seed + seeds - 1) per prior. "
    "Default: the preset's (paper 10, quick 2).",
  )
  flags.DEFINE_list("compare_priors", list(PRIORS), f"Priors to compare ({', '.join(PRIORS)}).")
  flags.DEFINE_enum(
    "dataset",
    None,
    list(DATASETS),
    "Data. Default: the preset's (paper "
    "binarized_mnist, quick mnist_test). See the module docstring.",
  )
  flags.DEFINE_integer(
    "iw_samples",
    None,
    "Importance samples for the test IWAE. Default: the preset's (paper 1000, quick 200).",
  )
  flags.DEFINE_integer(
    "train_examples",
    None,
    "Use only this many training images (a fixed "
    "random subset; tests and smoke runs). Default: all.",
    lower_bound=1,
  )
  flags.DEFINE_integer(
    "test_examples",
    None,
    "Use only this many test images (a fixed random subset). Default: all.",
    lower_bound=1,
  )
  flags.DEFINE_bool(
    "report_only",
    False,
    "Train and evaluate nothing: write the page from what "
    "the runs' logdirs hold (evaluated runs, and how far unfinished runs got, "
    "from their status.json; a run whose folder is not on this machine keeps its finished row "
    "from the page's JSON). For a study that spans several sessions.",
  )
  flags.DEFINE_string(
    "study_output",
    "results/priors_2d.md",
    "Markdown results page; PNGs (<output stem>_<prior>.png) and JSON rows go beside it.",
  )


def study_settings_from_flags() -> priors_2d_train.StudySettings:
  """The study's settings from the flags and the preset (`experiments.flags.flag_or`)."""
  preset = priors_2d_train.PRESETS[FLAGS.preset]
  runs = priors_2d_train.study_runs(
    preset,
    prior_names=tuple(FLAGS.compare_priors),
    first_seed=FLAGS.seed,
    seeds=common.flag_or("seeds", preset.seeds),
    dataset=FLAGS.dataset,
    epochs=common.flag_or("epochs", preset.epochs),
    batch_size=common.flag_or("batch_size", preset.batch_size),
    iw_samples=common.flag_or("iw_samples", preset.iw_samples),
    train_examples=FLAGS.train_examples,
    test_examples=FLAGS.test_examples,
  )
  base = FLAGS.logdir or common.default_logdir("priors_2d", preset=FLAGS.preset)
  return priors_2d_train.StudySettings(
    runs=runs,
    prior_names=tuple(FLAGS.compare_priors),
    base_logdir=base,
    report_only=FLAGS.report_only,
    data_dir=FLAGS.data_dir,
    # smoke runs (--max_steps): the page goes under the logdir
    output=common.results_file("study_output", logdir=base),
    command=common.command_line(),
    max_steps=FLAGS.max_steps,
    jit_compile=FLAGS.jit_compile,
    log_every=FLAGS.log_every,
  )
