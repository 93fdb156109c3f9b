"""`.ci/run` runs the suite once: a native crash of a test process fails CI, it is not retried."""

import os
import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]

# What `make test` prints when a pytest-xdist worker dies of a segmentation fault.
CRASH_LOG = """\
Fatal Python error: Segmentation fault
[gw1] node down: Not properly terminated
FAILED tests/experiments/test_sample_quality.py::test_x - worker 'gw1' crashed while running 'tests/experiments/test_sample_quality.py::test_x'
worker 'gw1' crashed while running 'tests/experiments/test_sample_quality.py::test_x'
1 failed, 554 passed in 420.00s
"""


def test_a_crashed_test_process_fails_the_run_once(tmp_path):
  (tmp_path / ".ci").mkdir()
  shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  calls = tmp_path / "make_calls"
  # A `make` that crashes the first time it runs and passes after.
  (bin_dir / "make").write_text(
    "#!/usr/bin/env bash\n"
    f'echo "$*" >> {calls}\n'
    f'if [ "$(wc -l < {calls})" -eq 1 ]; then printf %s "$CRASH_LOG"; exit 2; fi\n'
    'echo "555 passed in 400.00s"\n'
  )
  (bin_dir / "make").chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CRASH_LOG=CRASH_LOG)
  proc = subprocess.run(
    ["bash", str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True
  )
  assert proc.returncode == 2
  assert proc.stdout == CRASH_LOG and proc.stderr == ""
  assert calls.read_text() == "test\n"  # one `make test`, no rerun
