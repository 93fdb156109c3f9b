"""The real distributed engine, in separate processes: 2 workers on localhost (TF_CONFIG,
MultiWorkerMirroredStrategy) give the weights of 1 process on the same global batch; a killed
worker, both restarted, resumes; under --deterministic a killed-and-resumed run is bit-identical
to an uninterrupted one. SGD throughout (a wrong gradient scale shows)."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def _env(tf_config=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  env.pop("TF_CONFIG", None)
  if tf_config is not None:
    env["TF_CONFIG"] = json.dumps(tf_config)
  return env


def _start(logdir, *, tf_config=None, kill_at_step=None, tasks="toy"):
  cmd = [sys.executable, "-m", "tests.experiments.distributed_worker", "--logdir", str(logdir),
         "--tasks", tasks]
  if kill_at_step is not None:
    cmd += ["--kill_at_step", str(kill_at_step)]
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(tf_config), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _finish(proc):
  out, _ = proc.communicate(timeout=TIMEOUT)
  assert proc.returncode == 0, out[-3000:]
  return out


def _cluster(logdir, *, kill_worker_at_step=None, tasks="toy"):
  ports = _free_ports(2)
  workers = [f"127.0.0.1:{p}" for p in ports]
  procs = [_start(logdir, tasks=tasks,
                  tf_config={"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}},
                  kill_at_step=kill_worker_at_step if i == 1 else None) for i in range(2)]
  return procs


def _weights(logdir, task="toy"):
  with np.load(os.path.join(logdir, task, "weights.npz")) as f:
    return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.slow
def test_two_workers_equal_one_process_and_resume_after_a_lost_worker(tmp_path):
  # Seven processes in all, at most four at a time:
  # - one process, uninterrupted: the toy task (synchronised BatchNorm, clipping) and the
  #   VampPrior experiment's real loss with AdamNormGrad;
  # - one process killed after update 5 of the toy task (checkpoint at 4), then resumed;
  # - two workers x 1 CPU on the same global batch: worker 1 dies after update 5 of the toy task,
  #   the chief is then stopped too (as a cluster manager would); both restart, resume the toy task
  #   from the chief's newest checkpoint and then train the VampPrior task uninterrupted.
  single = _start(tmp_path / "single", tasks="toy,vampprior")
  killed = _start(tmp_path / "resumed", kill_at_step=5)
  chief, worker = _cluster(tmp_path / "two", kill_worker_at_step=5, tasks="toy,vampprior")
  killed.communicate(timeout=TIMEOUT)
  assert killed.returncode == -9
  resumed = _start(tmp_path / "resumed")
  worker.communicate(timeout=TIMEOUT)
  assert worker.returncode == -9
  time.sleep(1)
  chief.kill()
  chief.communicate(timeout=TIMEOUT)
  assert not os.path.exists(tmp_path / "two" / "toy" / "weights.npz")  # the cluster did not finish
  outputs = [_finish(proc) for proc in _cluster(tmp_path / "two", tasks="toy,vampprior")]
  assert "Resumed from" in outputs[0]
  _finish(resumed)
  _finish(single)

  for a, b in zip(_weights(tmp_path / "single"), _weights(tmp_path / "resumed")):
    np.testing.assert_array_equal(a, b)  # --deterministic: bit-identical
  # Two workers (killed and resumed in the toy task) == one uninterrupted process.
  for a, b in zip(_weights(tmp_path / "single"), _weights(tmp_path / "two")):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for a, b in zip(_weights(tmp_path / "single", "vampprior"), _weights(tmp_path / "two", "vampprior")):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
