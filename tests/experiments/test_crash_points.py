"""Crash consistency of the training loop, in the spirit of SQLite's crash tests: a run SIGKILLed at
each phase of the cycle (inside a step, inside the epoch-end hook, during and after each checkpoint
write, between the checkpoint and status.json) and then rerun ends bit-identical (--deterministic)
to an uninterrupted run: weights, Adam slots, the SeedGenerator counter the epoch-end hook draws
from, the data position (a witness variable summing every batch by its step), the step, and the
best checkpoint.

Five of the cases send SIGTERM instead (a preemption: the run finishes the step in hand, saves
and exits 128 + 15). The kill is injected deterministically: $GENMODELS_CRASH_AT=<point>@<step> makes the process SIGKILL
itself there (`experiments.harness.crash_point`). The runs are the `hooked` task of
`tests.experiments.distributed_worker` (3 epochs x 4 steps, early stopping so best checkpoints are
written, an epoch-end hook drawing 15 random numbers), forked from a server that imported
TensorFlow once, all crashed runs at once.
"""

import json
import os
import signal

import numpy as np
import pytest

from experiments import harness
from tests.experiments import distributed_worker

pytestmark = pytest.mark.slow  # 33 small training processes: ~65 s on a busy 2-core host

TIMEOUT = 300
EPOCH_END = 8  # the end of epoch 2 (4 steps per epoch)
CASES = [  # (point, step, --checkpoint_every; 0 = at epoch ends)
  ("step", 6, 0),  # mid-epoch: back to the epoch-1 checkpoint
  ("step", EPOCH_END, 0),  # the epoch's last update, before its hook
  *[(point, EPOCH_END, 0) for point in harness.CRASH_POINTS if point != "step"],
  ("checkpoint_files", 6, 3),  # a mid-epoch checkpoint (every 3 steps)
  ("checkpoint", 9, 3),
  ("epoch_end_fn", EPOCH_END, 3),  # at an epoch end that is no multiple of 3
]
# A SIGTERM arriving at these points: the run saves after the step in hand and exits 128 + 15.
TERM_CASES = [
  ("step", 6, 0),
  ("epoch_end_fn", EPOCH_END, 0),
  ("best_checkpoint", EPOCH_END, 0),
  ("checkpoint_files", EPOCH_END, 0),
  ("epoch_end_fn", EPOCH_END, 3),
  ("step", 6, 0, "SIGUSR1"),  # stop at the end of the epoch in hand
]


def _run(logdir, *, checkpoint_every=0, crash_at=None):
  argv = [
    "--logdir",
    str(logdir),
    "--tasks",
    "hooked",
    "--epochs",
    "3",
    "--checkpoint_every",
    str(checkpoint_every),
  ]
  env = {"TF_CPP_MIN_LOG_LEVEL": "2", harness.CRASH_ENV: crash_at or ""}
  os.makedirs(logdir, exist_ok=True)
  log = f"{logdir}.log" if crash_at is None else f"{logdir}-crash.log"
  return distributed_worker.start(argv, env=env, log_path=log), log


def _wait(started) -> int:
  process, log = started
  process.join(TIMEOUT)
  assert process.exitcode is not None, f"still running after {TIMEOUT} s"
  return process.exitcode


def _arrays(path):
  with np.load(path) as f:
    return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def _signalled(case):
  """A case of TERM_CASES as (point, step, every, signal name); SIGTERM unless it names one."""
  return case if len(case) > 3 else (*case, "SIGTERM")


def _name(case) -> str:
  point, step, every, *term = case
  return f"{point}@{step}-every{every}" + (f"-{term[0].lower()}" if term else "")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{case: logdir} of the crashed-then-resumed runs, the logdir of the uninterrupted one, and
  {case: what was on disk after the crash}. A case of TERM_CASES is (point, step, every, signal name)."""
  root = tmp_path_factory.mktemp("crash")
  cases = CASES + [_signalled(case) for case in TERM_CASES]
  reference = _run(root / "reference")
  crashed = {
    case: _run(
      root / _name(case),
      checkpoint_every=case[2],
      crash_at=f"{case[0]}@{case[1]}" + (f":{case[3]}" if len(case) > 3 else ""),
    )
    for case in cases
  }
  after_crash = {}
  for case, started in crashed.items():
    code = _wait(started)
    with open(started[1]) as f:
      want = 128 + signal.Signals[case[3]] if len(case) > 3 else -9
      assert code == want, f"{case}: exit {code}\n{f.read()[-3000:]}"
    after_crash[case] = _disk_state(root / _name(case) / "hooked")
  resumed = {case: _run(root / _name(case), checkpoint_every=case[2]) for case in cases}
  for started in [reference, *resumed.values()]:
    code = _wait(started)
    with open(started[1]) as f:
      assert code == 0, f.read()[-3000:]
  return (
    {case: root / _name(case) / "hooked" for case in cases},
    root / "reference" / "hooked",
    after_crash,
  )


def _disk_state(logdir):
  """What a crashed run left: the newest checkpoint TensorFlow recorded, and the step and
  checkpoint of status.json (the manifest a rerun resumes from)."""
  import tensorflow as tf

  latest = tf.train.latest_checkpoint(str(logdir / "checkpoints"))
  status_path = logdir / "status.json"
  status = json.loads(status_path.read_text()) if status_path.exists() else {}
  return dict(
    newest=int(latest.rsplit("-", 1)[1]) if latest else None,
    status=status.get("step"),
    manifest=os.path.basename(status.get("checkpoint") or ""),
  )


def _resumed_from(logdir) -> str:
  with open(f"{logdir.parent}.log") as f:
    return next(line for line in f if line.startswith("Resumed from"))


# Where each crash leaves the run: the step of the last save that completed (status.json written),
# and the newest checkpoint files TensorFlow recorded (a save cut short before its status.json).
AFTER_CRASH = {
  ("step", 6, 0): (4, 4),
  ("step", EPOCH_END, 0): (4, 4),
  ("epoch_end_fn", EPOCH_END, 0): (4, 4),
  ("best_checkpoint_files", EPOCH_END, 0): (4, 4),
  ("best_checkpoint", EPOCH_END, 0): (4, 4),
  ("checkpoint_files", EPOCH_END, 0): (4, 4),
  ("checkpoint", EPOCH_END, 0): (4, EPOCH_END),
  ("status", EPOCH_END, 0): (EPOCH_END, EPOCH_END),
  ("checkpoint_files", 6, 3): (4, 4),
  ("checkpoint", 9, 3): (EPOCH_END, 9),
  ("epoch_end_fn", EPOCH_END, 3): (6, 6),
  # SIGTERM: the step in hand (and the epoch end's hook and checkpoint) done, then a save.
  ("step", 6, 0, "SIGTERM"): (6, 6),
  ("epoch_end_fn", EPOCH_END, 0, "SIGTERM"): (9, 9),
  ("best_checkpoint", EPOCH_END, 0, "SIGTERM"): (9, 9),
  ("checkpoint_files", EPOCH_END, 0, "SIGTERM"): (9, 9),
  ("epoch_end_fn", EPOCH_END, 3, "SIGTERM"): (9, 9),
  # SIGUSR1: the rest of the epoch, its hook and checkpoint, then a stop.
  ("step", 6, 0, "SIGUSR1"): (EPOCH_END, EPOCH_END),
}


def test_status_json_names_what_a_rerun_resumes_from(runs):
  """After a kill at any point status.json (step and checkpoint) describes exactly the state the
  rerun resumed from, never a step it did not reach nor a save cut short."""
  logdirs, _, after_crash = runs
  assert set(AFTER_CRASH) == set(CASES + [_signalled(c) for c in TERM_CASES])
  for case, (saved, newest) in AFTER_CRASH.items():
    assert after_crash[case] == dict(newest=newest, status=saved, manifest=f"ckpt-{saved}"), case
    assert _resumed_from(logdirs[case]).startswith(
      f"Resumed from {logdirs[case] / 'checkpoints' / f'ckpt-{saved}'} at step {saved}"
    ), case


@pytest.mark.parametrize("case", CASES + [_signalled(c) for c in TERM_CASES], ids=_name)
def test_killed_and_rerun_equals_uninterrupted(runs, case):
  logdirs, reference, _ = runs
  for name in ("state.npz", "best.npz"):
    want, got = _arrays(reference / name), _arrays(logdirs[case] / name)
    assert len(want) == len(got)
    for i, (a, b) in enumerate(zip(want, got)):
      np.testing.assert_array_equal(a, b, err_msg=f"{name} array {i}")
  status = json.loads((logdirs[case] / "status.json").read_text())
  assert (status["step"], status["finished"]) == (12, True)
