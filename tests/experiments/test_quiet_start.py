"""What a user sees when a script is started with a bad flag or value: exactly one `error:` line on
stderr (TensorFlow's start-up logs included: none) and exit code 2.

Real subprocesses (the in-process runner of tests/scripts.py cannot see what TensorFlow's C++ code
writes to fd 2), started at once so their TensorFlow imports overlap: representative bad command
lines of a few scripts, and one process that imports every script module (`python -m
experiments.<script>`, i.e. with an `if __name__ == "__main__"` block) and must write nothing.
"""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(
  os.path.basename(p)[:-3]
  for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
  if 'if __name__ == "__main__":' in open(p, encoding="utf-8").read()
)
IMPORT_ALL = "import_every_script"


def _user_env() -> dict:
  """The environment of a user's shell: no TF_CPP_MIN_LOG_LEVEL (tests/conftest.py sets one)."""
  env = dict(os.environ)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  return env


@pytest.fixture(scope="module")
def started(tmp_path_factory):
  """{case: (returncode, stdout, stderr)} of the subprocesses, run in parallel."""
  a_file = tmp_path_factory.mktemp("quiet") / "not_a_dir"
  a_file.write_text("x")
  commands = {
    ("vampprior", "--batch_size=0"): ["-m", "experiments.vampprior", "--batch_size=0"],
    ("vampprior", "--seed=-1"): ["-m", "experiments.vampprior", "--seed=-1"],
    ("nvae_mnist", "--logdir=<a file>"): ["-m", "experiments.nvae_mnist", f"--logdir={a_file}"],
    ("vampprior", "--data_dir=<missing>"): [  # raised in main, after TensorFlow's runtime started
      "-m",
      "experiments.vampprior",
      f"--data_dir={a_file}.missing",
      f"--logdir={a_file}.run",
    ],
    ("ppl", "--no_such_flag=1"): ["-m", "experiments.ppl", "--no_such_flag=1"],
    ("run_status", "--no_such_flag=1"): ["-m", "experiments.run_status", "--no_such_flag=1"],
    IMPORT_ALL: [
      "-c",
      f"import importlib\nfor s in {SCRIPTS!r}: importlib.import_module('experiments.' + s)",
    ],
  }
  procs = {
    case: subprocess.Popen(
      [sys.executable, *args],
      cwd=ROOT,
      env=_user_env(),
      stdin=subprocess.DEVNULL,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for case, args in commands.items()
  }
  out = {case: proc.communicate(timeout=600) for case, proc in procs.items()}
  return {case: (procs[case].returncode, *out[case]) for case in procs}, str(a_file)


def test_scripts_are_found():
  assert {"vampprior", "nvae_mnist", "run_status", "ppl", "carry"} <= set(SCRIPTS)


def test_bad_flags_and_values_are_one_stderr_line_and_exit_2(started):
  results, a_file = started
  assert {case: r for case, r in results.items() if case != IMPORT_ALL} == {
    ("vampprior", "--batch_size=0"): (
      2,
      "",
      "error: flag --batch_size=0: 0 is not a positive integer\n",
    ),
    ("vampprior", "--seed=-1"): (
      2,
      "",
      "error: flag --seed=-1: -1 is not a non-negative integer\n",
    ),
    ("nvae_mnist", "--logdir=<a file>"): (
      2,
      "",
      f"error: --logdir {a_file} is a file, not a directory\n",
    ),
    ("vampprior", "--data_dir=<missing>"): (
      2,
      "",
      f"error: data directory {a_file}.missing does not exist (from --data_dir or "
      "$GENMODELS_DATA_DIR)\n",
    ),
    ("ppl", "--no_such_flag=1"): (2, "", "error: Unknown command line flag 'no_such_flag'\n"),
    ("run_status", "--no_such_flag=1"): (
      2,
      "",
      "error: Unknown command line flag 'no_such_flag'\n",
    ),
  }


def test_importing_every_script_writes_nothing_to_stderr(started):
  """TensorFlow's C++ start-up logs (oneDNN, cudart_stub, cpu_feature_guard) included."""
  assert started[0][IMPORT_ALL] == (0, "", "")


def test_a_failed_tensorflow_import_shows_what_tensorflow_wrote(capfd):
  """Muting must not hide why an import failed: the held output comes back before the error."""
  from common_tf import host

  class Failing:
    def exec_module(self, module):
      os.write(2, b"F0000 cpu_feature_guard: this CPU lacks AVX\n")
      raise ImportError("boom")

  with pytest.raises(ImportError, match="boom"):
    host._MutedLoader(Failing()).exec_module(None)
  assert capfd.readouterr().err == "F0000 cpu_feature_guard: this CPU lacks AVX\n"
