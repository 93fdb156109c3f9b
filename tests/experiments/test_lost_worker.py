"""A lost worker, as its peer's user sees it: two worker processes (`python -m
tests.experiments.distributed_worker`, TF_CONFIG on localhost, MultiWorkerMirroredStrategy, the
same start-up as the experiment scripts); one SIGKILLs itself after update 3 (worker 1, or the
chief, which hosts TensorFlow's coordination service); the survivor's whole stderr is one line naming
the lost worker and the command that resumes the run, and it exits with `harness.EXIT_WORKER_LOST`."""

import json
import os
import re
import subprocess
import sys

import pytest

from experiments import harness
from tests.experiments.test_distributed import _free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("lost", [1, 0], ids=["worker_1_lost", "chief_lost"])
def test_survivor_reports_the_lost_worker_in_one_line(tmp_path, lost):
  survivor = 1 - lost
  workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell
  args = ["--logdir", str(tmp_path / "run"), "--epochs", "4"]
  procs = []
  for i in range(2):
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
    procs.append(
      subprocess.Popen(
        [
          sys.executable,
          "-m",
          "tests.experiments.distributed_worker",
          *args,
          *(["--kill_at_step", "3"] if i == lost else []),
        ],
        cwd=ROOT,
        env=dict(env, TF_CONFIG=json.dumps(tf_config)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  outs = [p.communicate(timeout=300) for p in procs]
  assert procs[lost].returncode == -9, outs[lost][1][-2000:]
  stdout, stderr = outs[survivor]
  assert procs[survivor].returncode == harness.EXIT_WORKER_LOST == 75, stderr[-3000:]
  checkpoint = re.escape(str(tmp_path / "run" / "toy" / "checkpoints" / "ckpt-2"))
  assert re.fullmatch(
    rf"error: lost worker {lost} \({re.escape(workers[lost])}\) of the multi-worker cluster at "
    rf"step 3; "
    rf"newest checkpoint: {checkpoint}; to resume, restart every worker with: "
    rf"python -m tests.experiments.distributed_worker {re.escape(' '.join(args))}\n",
    stderr,
  ), stderr
  assert stdout == ""


def test_lost_peer_is_read_from_tensorflow_messages():
  cluster = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}
  coordination = (
    "{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:0"
    "/device:CPU:0}} Collective ops is aborted by: Error reported from "
    "/job:worker/task:1: The following tasks are unhealthy (stopped sending "
    "heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed."
  )
  assert harness.lost_peer(Exception(coordination), cluster, own=("worker", 0)) == (
    "worker 1 (10.0.0.2:2222)"
  )
  assert (
    harness.lost_peer(Exception("connect to 10.0.0.1:2222 failed"), cluster, own=("worker", 1))
    == "10.0.0.1:2222"
  )
  assert harness.lost_peer(Exception("socket closed"), cluster) == "a peer"
