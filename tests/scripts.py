"""Runs an experiment script's command line inside the test process.

A subprocess per command-line test costs a TensorFlow import (seconds, ~4x more on a slow host);
in-process, `run_script("vampprior_table", [...])` goes through the same path as
`python -m experiments.vampprior_table ...`: the script's `define_flags()`, absl parsing with
`experiments.flags.run` (bad values: one `error:` line, exit code 2), `main`. What it cannot show
is the process boundary itself (the `__main__` block, the interpreter's exit status):
`tests/experiments/test_flags.py` keeps one real subprocess for that, and
`tests/experiments/test_quiet_start.py` checks the whole stderr of real subprocesses (TensorFlow's
start-up logs, which no in-process test sees).

Afterwards the flags the script defined (its own `--preset` among them) are deleted, every flag is
unparsed, and the global Keras policy is float32 again, so the next script starts from the common
flags only. Scripts change no flag they did not define (`experiments.flags`), so nothing else needs
undoing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import sys
from collections.abc import Callable

import keras
from absl import flags

from experiments import flags as common

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Completed:
  returncode: int
  stdout: str
  stderr: str


@contextlib.contextmanager
def defined_flags(define: Callable[[], None]):
  """Defines a script's flags on the global FLAGS for the `with` block, then deletes them,
  unparses every flag and resets the global Keras policy."""
  before = set(FLAGS)
  try:
    define()
    yield FLAGS
  finally:
    for name in set(FLAGS) - before:
      delattr(FLAGS, name)
    FLAGS.unparse_flags()
    keras.mixed_precision.set_global_policy("float32")


def run_script(script: str, args: list[str]) -> Completed:
  """`python -m experiments.<script> <args>` in this process; returns its exit code and output."""
  module = importlib.import_module(f"experiments.{script}")
  argv, out, err = sys.argv, io.StringIO(), io.StringIO()
  code = 0
  main_module = sys.modules["__main__"]
  with defined_flags(module.define_flags):
    try:
      # As under `python -m experiments.<script>`: results pages record the command from these.
      sys.argv, sys.modules["__main__"] = [module.__file__, *args], module
      with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
          common.run(module.main)  # absl's app.run: always ends in sys.exit
        except SystemExit as e:
          code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
      sys.argv, sys.modules["__main__"] = argv, main_module
  return Completed(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
