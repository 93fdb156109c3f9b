"""Common flags: smoke runs never write into results/, bad values are one `error:` line, exit 2."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf
from absl import flags

from experiments import flags as common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = flags.FLAGS
if "test_page" not in FLAGS:
  flags.DEFINE_string("test_page", "results/test_page.md", "A results page flag of a test script.")


@pytest.fixture
def parse():
  def _parse(*args):
    FLAGS.unparse_flags()
    FLAGS(["prog"] + list(args))

  yield _parse
  FLAGS.unparse_flags()


def test_full_run_writes_results_and_smoke_run_writes_under_its_logdir(parse, tmp_path):
  parse()
  assert common.results_dir("runs/x") == "results"
  assert common.results_file("test_page", logdir="runs/x") == os.path.join(
    "results", "test_page.md"
  )
  parse("--max_steps=3")
  assert common.results_dir("runs/x") == os.path.join("runs/x", "results")
  assert common.results_file("test_page", logdir="runs/x") == os.path.join(
    "runs/x", "results", "test_page.md"
  )
  parse("--max_steps=3", f"--results_dir={tmp_path}")  # asked for explicitly
  assert common.results_file("test_page", logdir="runs/x") == os.path.join(
    str(tmp_path), "test_page.md"
  )
  parse("--max_steps=3", "--test_page=elsewhere/page.md")
  assert common.results_file("test_page", logdir="runs/x") == "elsewhere/page.md"


def test_flag_or_keeps_an_explicit_value(parse):
  parse("--epochs=2")
  assert common.flag_or("epochs", 7) == 2
  parse()
  assert common.flag_or("epochs", 7) == 7


def test_numeric_flags_and_logdir_are_checked(parse, tmp_path):
  (tmp_path / "file").write_text("x")
  parse(f"--logdir={tmp_path / 'file'}")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    common._check_numeric_flags()
  with pytest.raises(flags.IllegalFlagValueError, match="batch_size"):
    parse("--batch_size=0")


def test_bad_flag_is_one_error_line_and_exit_2():
  out = subprocess.run(
    [sys.executable, "-m", "experiments.vampprior", "--batch_size=0"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
  )
  assert out.returncode == 2
  lines = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert lines == ["error: flag --batch_size=0: 0 is not >= 1"] or (
    len(lines) == 1 and "--batch_size" in lines[0]
  ), out.stderr[-2000:]


@pytest.mark.parametrize("chief", [True, False], ids=["chief", "worker"])
def test_a_script_waits_for_every_worker_before_it_exits(tmp_path, monkeypatch, chief):
  # experiments.flags.run ends a script with harness.wait_for_every_worker (a coordination-service
  # barrier; the real one is in test_distributed.py). A failed wait is a peer's failure after the
  # run's last collective: the chief's results are written; it says so in one line and exits 0.
  # Another worker's wait fails whenever the chief left first: no line.
  from experiments import harness
  from tests import scripts

  waits = []

  def wait(error):
    waits.append(os.path.exists(tmp_path / "page.md"))  # after main wrote its page
    return error

  monkeypatch.setattr(harness, "is_chief_process", lambda: chief)
  # A page of runs in progress (none started): main writes it and returns.
  args = ["--preset=quick", "--datasets=frey_faces", "--models=vae", "--report_only"]
  args += [f"--logdir={tmp_path / 'runs'}", f"--table_output={tmp_path / 'page.md'}"]
  monkeypatch.setattr(harness, "wait_for_every_worker", lambda: wait(None))
  plain = scripts.run_script("vampprior_table", args)
  message = "Task /job:worker/task:1 heartbeat timeout.\nThe tasks have crashed."
  failed = tf.errors.UnavailableError(None, None, message)
  monkeypatch.setattr(harness, "wait_for_every_worker", lambda: wait(failed))
  out = scripts.run_script("vampprior_table", args)
  assert waits == [True, True]
  assert plain.returncode == out.returncode == 0
  warning = "warning: not every worker reached the end of the run: Task /job:worker/task:1 "
  assert out.stderr == plain.stderr + (warning + "heartbeat timeout.\n" if chief else "")
  assert plain.stderr.endswith(f"wrote {tmp_path / 'page.md'}\n")
