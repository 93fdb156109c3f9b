"""absl flags shared by every experiment script, and the `main` wrapper that turns errors into
one clear line on stderr with exit code 2.

Importing this module defines the flags once; a script adds its own flags and calls
`experiments.flags.run(main)`.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any, Callable, Mapping

from absl import app
from absl import flags
from absl import logging

from evaluation.networks import WeightsUnavailableError
from experiments import data
from experiments import harness

flags.DEFINE_string("logdir", None, "Directory for checkpoints, TensorBoard logs, samples and the "
                    "JSON results row. A run that finds checkpoints here resumes from the latest. "
                    "Default: runs/<script>/<settings>.")
flags.DEFINE_string("data_dir", None, "Folder with the standard data files (see README, 'Data'); "
                    f"default ${data.DATA_DIR_ENV}, else tfds / download (needs a network).")
flags.DEFINE_integer("seed", 0, "Random seed: weight init, data order, binarization, sampling.")
flags.DEFINE_integer("batch_size", None, "Global batch size (split over replicas). "
                     "Default: the preset's.")
flags.DEFINE_integer("epochs", None, "Number of training epochs (schedules are laid out over them). "
                     "Default: the preset's.")
flags.DEFINE_integer("max_steps", None, "Stop after this many optimizer steps (smoke runs); the "
                     "schedules still assume --epochs.")
flags.DEFINE_enum("preset", "quick", ["quick", "paper"], "'quick' fits a CPU in minutes; 'paper' is "
                  "the published configuration.")
flags.DEFINE_enum("strategy", "default", list(harness.STRATEGIES), "tf.distribute strategy: default "
                  "(one device), mirrored (all local GPUs), multi_worker (reads TF_CONFIG).")
flags.DEFINE_enum("precision", "float32", list(harness.PRECISIONS), "Keras mixed-precision policy; "
                  "losses, softmax and normalisation statistics stay float32.")
flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_integer("log_every", 50, "Steps between TensorBoard scalars, progress-bar updates and "
                     "NaN checks.")

FLAGS = flags.FLAGS

# Errors that mean "bad input or bad state", reported as one line and exit code 2.
USER_ERRORS = (data.DataError, harness.NonFiniteLossError, WeightsUnavailableError, ValueError,
               FileNotFoundError)


def command_line() -> str:
  """The command that started this process, for results pages."""
  module = sys.modules["__main__"].__spec__
  prog = f"python -m {module.name}" if module is not None else sys.argv[0]
  return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


def default_logdir(script: str, **settings: Any) -> str:
  name = ",".join(f"{k}={v}" for k, v in settings.items()) or "default"
  return os.path.join("runs", script, name)


def train_config(*, logdir: str, batch_size: int, epochs: int,
                 hparams: Mapping[str, Any] | None = None, **overrides) -> harness.TrainConfig:
  """A `TrainConfig` from the common flags; the preset supplies batch size and epochs defaults."""
  return harness.TrainConfig(
      logdir=FLAGS.logdir or logdir,
      batch_size=FLAGS.batch_size or batch_size,
      epochs=FLAGS.epochs or epochs,
      max_steps=FLAGS.max_steps,
      seed=FLAGS.seed,
      jit_compile=FLAGS.jit_compile,
      log_every=FLAGS.log_every,
      progress=sys.stderr.isatty() or not os.environ.get("CI"),
      hparams=dict(hparams or {}),
      **overrides)


def run(main: Callable[[list[str]], Any]):
  """`absl.app.run(main)`, printing expected errors as one line and exiting with code 2."""
  def wrapped(argv):
    if not FLAGS["verbosity"].present:  # absl defaults to INFO: keep TF's info chatter off stderr
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except USER_ERRORS as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  app.run(wrapped)
