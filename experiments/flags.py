"""absl flags shared by every experiment script, and the `main` wrapper that turns errors into
one clear line on stderr with exit code 2.

How a script defines its flags and presets (one way for every script on the global FLAGS):

- The common flags below (--logdir, --seed, --batch_size, --strategy, ...) are defined once, when
  this module is first imported; every script and test in a process shares them.
- Everything else a script defines itself, in its flags module's `define_*flags()` functions,
  called by the script's `define_flags()` under `if __name__ == "__main__"` (tests:
  `tests.scripts.run_script` / `defined_flags`, which delete them again afterwards). That includes
  its `--preset`: `define_preset_flag(PRESETS, help=...)` defines the enum with exactly the names of
  the script's presets (frozen dataclass instances in its `*_train` library), so no flag is
  changed after it is defined and scripts never see each other's presets. A script without presets
  has no `--preset`.
- `main` reads the flags once (`<script>_flags.settings_from_flags()`, preset values unless a flag
  is set: `flag_or`) into a frozen settings object and passes it down; the libraries read no flags.

A script ends with `experiments.flags.run(main)`.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from absl import app, flags, logging

from evaluation.networks import WeightsUnavailableError
from experiments import data, harness

if TYPE_CHECKING:  # for the annotations only (TensorFlow is imported by harness)
  import tensorflow as tf

flags.DEFINE_string(
  "logdir",
  None,
  "Directory for checkpoints, TensorBoard logs, samples and the "
  "JSON results row. A run that finds checkpoints here resumes from the latest. "
  "Default: runs/<script>/<settings>.",
)
flags.DEFINE_string(
  "data_dir",
  None,
  "Folder with the standard data files (see README, 'Data'); "
  f"default ${data.DATA_DIR_ENV}, else tfds / download (needs a network).",
)
flags.DEFINE_integer(
  "seed", 0, "Random seed: weight init, data order, binarization, sampling.", lower_bound=0
)
flags.DEFINE_integer(
  "batch_size",
  None,
  "Global batch size (split over replicas). Default: the preset's.",
  lower_bound=1,
)
flags.DEFINE_integer(
  "epochs",
  None,
  "Number of training epochs (schedules are laid out over them). Default: the preset's.",
  lower_bound=1,
)
flags.DEFINE_integer(
  "max_steps",
  None,
  "Stop after this many optimizer steps (smoke runs); the "
  "schedules still assume --epochs. A smoke run writes its results pages under "
  "<logdir>/results unless --results_dir is given.",
  lower_bound=1,
)
flags.DEFINE_string(
  "results_dir",
  None,
  "Folder for results pages (Markdown) and their PNGs. "
  "Default: results/ for full runs; <logdir>/results for --max_steps smoke runs, "
  "so a smoke run never rewrites the committed results.",
)
flags.DEFINE_bool(
  "deterministic",
  False,
  "Deterministic kernels "
  "(tf.config.experimental.enable_op_determinism) and seeded Python/NumPy/TF: two runs "
  "with the same flags, and an interrupted-and-resumed run, end bit-identical. Slower.",
)
flags.DEFINE_enum(
  "strategy",
  "default",
  list(harness.STRATEGIES),
  "tf.distribute strategy: default "
  "(one device), mirrored (all local GPUs), multi_worker (reads TF_CONFIG).",
)
flags.DEFINE_enum(
  "precision",
  "float32",
  list(harness.PRECISIONS),
  "Keras mixed-precision policy; losses, softmax and normalisation statistics stay float32.",
)
flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_integer(
  "log_every",
  50,
  "Steps between TensorBoard scalars, progress-bar updates and NaN checks.",
  lower_bound=1,
)
flags.DEFINE_bool(
  "allow_tf32",
  True,
  "Allow TensorFloat-32 matmuls/convolutions on Ampere+ GPUs "
  "during training (faster, ~1e-3 relative error; no effect on CPUs). Evaluation "
  "metrics always run in exact float32.",
)

FLAGS = flags.FLAGS

# Errors that mean "bad input or bad state", reported as one line and exit code 2.
USER_ERRORS = (
  data.DataError,
  harness.NonFiniteLossError,
  WeightsUnavailableError,
  ValueError,
  FileNotFoundError,
  NotADirectoryError,
  IsADirectoryError,
)


def command_line() -> str:
  """The command that started this process, for results pages."""
  module = sys.modules["__main__"].__spec__
  prog = f"python -m {module.name}" if module is not None else sys.argv[0]
  return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


def default_logdir(script: str, **settings: Any) -> str:
  name = ",".join(f"{k}={v}" for k, v in settings.items()) or "default"
  return os.path.join("runs", script, name)


# The first sentence of most scripts' --preset help.
QUICK_AND_PAPER = "'quick' fits a CPU in minutes; 'paper' is the published configuration."


def define_preset_flag(presets: Mapping[str, Any], *, help: str, default: str = "quick") -> None:
  """Defines the calling script's `--preset`: an enum of exactly the names of `presets`.

  presets: {name: preset}, each a frozen dataclass instance (the script's `*_train.PRESETS`).
  help: what the presets are, for --help.

  The flag is registered as defined by the calling module (the script's flags module), so the
  script's --help lists it with its own flags (`flags.adopt_module_key_flags`).
  """
  for name, preset in presets.items():
    params = getattr(preset, "__dataclass_params__", None)
    if isinstance(preset, type) or params is None or not params.frozen:
      raise TypeError(f"preset {name!r} must be a frozen dataclass instance, got {preset!r}")
  if default not in presets:
    raise ValueError(f"default preset {default!r} is not one of {list(presets)}")
  caller = sys._getframe(1).f_globals["__name__"]
  flags.DEFINE_enum("preset", default, list(presets), help, module_name=caller)


def define_eval_memory_flag(*, chunk_flag: str) -> None:
  """Defines `--eval_memory_gib`, the test NLL's memory budget, from which the importance samples
  per network call are chosen unless `--<chunk_flag>` is given
  (`evaluation.likelihood.choose_chunk`)."""
  caller = sys._getframe(1).f_globals["__name__"]
  flags.DEFINE_float(
    "eval_memory_gib",
    8.0,
    "Memory budget of the test NLL, GiB of peak resident memory: the importance samples per "
    "network call are chosen to fit it (measured by two probe calls; the estimate does not "
    f"depend on them). An explicit --{chunk_flag} wins.",
    lower_bound=0.1,
    module_name=caller,
  )


def flag_or(name: str, preset_value: Any) -> Any:
  """The flag's value when it was set (even to 0 or False), else the preset's value."""
  value = FLAGS[name].value
  return preset_value if value is None else value


def setup_runtime() -> tf.distribute.Strategy:
  """`harness.setup_runtime` from the common flags (strategy, precision, determinism, TF32)."""
  return harness.setup_runtime(
    strategy=FLAGS.strategy,
    precision=FLAGS.precision,
    deterministic=FLAGS.deterministic,
    seed=FLAGS.seed,
    allow_tf32=FLAGS.allow_tf32,
  )


def is_smoke_run() -> bool:
  """True for `--max_steps` runs: their results pages stay out of the committed results/."""
  return FLAGS.max_steps is not None


def results_dir(logdir: str) -> str:
  """Folder for results pages: --results_dir; else results/, or <logdir>/results for smoke runs."""
  if FLAGS.results_dir:
    return FLAGS.results_dir
  return os.path.join(logdir, "results") if is_smoke_run() else "results"


def results_file(flag_name: str, *, logdir: str) -> str:
  """Where the page named by the script flag `flag_name` goes.

  The flag's value when it was given explicitly; otherwise its default file name inside
  `results_dir(logdir)` (results/ for full runs, <logdir>/results for smoke runs).
  """
  if FLAGS[flag_name].present:
    return FLAGS[flag_name].value
  return os.path.join(results_dir(logdir), os.path.basename(FLAGS[flag_name].value))


def train_config(
  *,
  logdir: str,
  batch_size: int,
  epochs: int,
  hparams: Mapping[str, Any] | None = None,
  **overrides,
) -> harness.TrainConfig:
  """A `TrainConfig` from the common flags; the preset supplies batch size and epochs defaults."""
  return harness.TrainConfig(
    logdir=FLAGS.logdir or logdir,
    batch_size=flag_or("batch_size", batch_size),
    epochs=flag_or("epochs", epochs),
    max_steps=FLAGS.max_steps,
    seed=FLAGS.seed,
    jit_compile=FLAGS.jit_compile,
    log_every=FLAGS.log_every,
    progress=sys.stderr.isatty() or not os.environ.get("CI"),
    hparams=dict(hparams or {}),
    **overrides,
  )


def _check_numeric_flags():
  """Every numeric flag of the experiment scripts: finite, and no negative counts."""
  for name in FLAGS:
    flag = FLAGS[name]
    module = FLAGS.find_module_defining_flag(name, default="")
    if not (module.startswith("experiments") or module == "__main__") or flag.value is None:
      continue
    if isinstance(flag.value, float) and not math.isfinite(flag.value):
      raise ValueError(f"--{name} must be a finite number, got {flag.value}")
    if isinstance(flag.value, int) and not isinstance(flag.value, bool) and flag.value < 0:
      raise ValueError(f"--{name} must be >= 0, got {flag.value}")
  if FLAGS.logdir and os.path.exists(FLAGS.logdir) and not os.path.isdir(FLAGS.logdir):
    raise ValueError(f"--logdir {FLAGS.logdir} is a file, not a directory")


def report_worker_lost(error: harness.WorkerLost, command: str | None = None) -> int:
  """Prints the one line of a lost multi-worker peer (with the command that resumes the run);
  returns the exit code, `harness.EXIT_WORKER_LOST`."""
  print(
    f"error: {error}; to resume, restart every worker with: {command or command_line()}",
    file=sys.stderr,
  )
  return harness.EXIT_WORKER_LOST


def exit_now(code: int):
  """Ends the process with `code` without Python's shutdown: after a lost worker TensorFlow's
  collective runtime is broken and its clean-up (thread pools, the coordination service's shutdown
  barrier) would print tracebacks or wait for the peer that is gone."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def leave_cluster():
  """The end of a multi-worker run (nothing outside one): waits until every worker got here
  (`harness.wait_for_every_worker`). If the chief's wait fails, a peer ended badly after the last
  step they shared: the chief's results are written, the peer reports its own failure, and the
  chief prints one warning line. Other workers' waits fail when the chief left first: no line."""
  error = harness.wait_for_every_worker()
  if error is not None and harness.is_chief_process():
    first = (error.message or type(error).__name__).splitlines()[0]
    print(f"warning: not every worker reached the end of the run: {first}", file=sys.stderr)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with bad values reported as one `error:` line and exit code 2."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run(main: Callable[[list[str]], Any]):
  """`absl.app.run(main)`, printing expected errors as one line and exiting with code 2.

  A preempted training run or resumable likelihood evaluation (SIGTERM/SIGINT, see
  `common_tf.preemption`) prints one line and exits with 128 + the signal number, after its
  checkpoint / partial results were written. A multi-worker run that lost a worker prints one line
  naming it and the command to restart on every worker, and exits with 75
  (`harness.EXIT_WORKER_LOST`). A multi-worker run that ends well waits for every worker before
  it exits (`leave_cluster`).
  """

  def wrapped(argv):
    if not FLAGS["verbosity"].present:  # absl defaults to INFO: keep TF's info chatter off stderr
      logging.set_verbosity(logging.WARNING)
    try:
      _check_numeric_flags()
      result = main(argv)
      leave_cluster()
      return result
    except harness.Preempted as e:
      print(str(e), file=sys.stderr)
      sys.exit(128 + e.signum)
    except harness.WorkerLost as e:
      exit_now(report_worker_lost(e))
    except USER_ERRORS as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(wrapped, flags_parser=_parse_flags)
