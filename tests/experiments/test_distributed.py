"""The real distributed engine, in separate processes (forked from
one server that imported TensorFlow once: `distributed_worker.start`): 2 workers on localhost (TF_CONFIG,
MultiWorkerMirroredStrategy) give the weights of 1 process on the same global batch; a killed
worker, both restarted, resumes; under --deterministic a killed-and-resumed run is bit-identical
to an uninterrupted one. SGD throughout (a wrong gradient scale shows)."""

import json
import os
import socket
import time

import numpy as np
import pytest

from tests.experiments import distributed_worker
from tests.nvae_tf.conftest import write_binarized_mnist_head

# Seconds a worker process may take; a host busy with runs at a higher priority may need more.
TIMEOUT = float(os.environ.get("GENMODELS_TEST_WORKER_TIMEOUT", 300))


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


class _Process:
  """A worker process (see `distributed_worker.start`) and the file its output goes to."""

  count = 0  # numbers the log files (a logdir is run more than once)

  def __init__(self, logdir, *, tf_config=None, kill_at_step=None, tasks="toy", extra=()):
    argv = ["--logdir", str(logdir), "--tasks", tasks, *extra]
    if kill_at_step is not None:
      argv += ["--kill_at_step", str(kill_at_step)]
    env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    if tf_config is not None:
      env["TF_CONFIG"] = json.dumps(tf_config)
    os.makedirs(logdir, exist_ok=True)
    self.log = os.path.join(
      os.path.dirname(logdir), f"{os.path.basename(logdir)}-{_Process.count}.log"
    )
    _Process.count += 1
    self.process = distributed_worker.start(argv, env=env, log_path=self.log)

  def wait(self) -> int:
    self.process.join(TIMEOUT)
    assert self.process.exitcode is not None, f"still running after {TIMEOUT} s: {self.output()}"
    return self.process.exitcode

  def kill(self):
    self.process.kill()

  def output(self) -> str:
    with open(self.log) as f:
      return f.read()


def _finish(proc):
  assert proc.wait() == 0, proc.output()[-3000:]
  return proc.output()


def _finish_all(procs):
  """Every worker's output once all have ended with 0; else the end of each one's output."""
  codes = [proc.wait() for proc in procs]
  assert codes == [0] * len(procs), "\n".join(
    f"--- worker {i} (exit {code}):\n{proc.output()[-2000:]}"
    for i, (proc, code) in enumerate(zip(procs, codes))
  )
  return [proc.output() for proc in procs]


def _cluster(logdir, *, kill_worker_at_step=None, tasks="toy", extra=()):
  ports = _free_ports(2)
  workers = [f"127.0.0.1:{p}" for p in ports]
  procs = [
    _Process(
      logdir,
      tasks=tasks,
      extra=extra,
      tf_config={"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}},
      kill_at_step=kill_worker_at_step if i == 1 else None,
    )
    for i in range(2)
  ]
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
  single = _Process(tmp_path / "single", tasks="toy,vampprior")
  killed = _Process(tmp_path / "resumed", kill_at_step=5)
  chief, worker = _cluster(tmp_path / "two", kill_worker_at_step=5, tasks="toy,vampprior")
  assert killed.wait() == -9
  resumed = _Process(tmp_path / "resumed")
  assert worker.wait() == -9
  time.sleep(1)
  chief.kill()
  chief.wait()
  assert not os.path.exists(tmp_path / "two" / "toy" / "weights.npz")  # the cluster did not finish
  outputs = _finish_all(_cluster(tmp_path / "two", tasks="toy,vampprior"))
  assert "Resumed from" in outputs[0]
  _finish(resumed)
  _finish(single)

  for a, b in zip(_weights(tmp_path / "single"), _weights(tmp_path / "resumed")):
    np.testing.assert_array_equal(a, b)  # --deterministic: bit-identical
  # Two workers (killed and resumed in the toy task) == one uninterrupted process.
  for a, b in zip(_weights(tmp_path / "single"), _weights(tmp_path / "two")):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for a, b in zip(
    _weights(tmp_path / "single", "vampprior"), _weights(tmp_path / "two", "vampprior")
  ):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def _printed(output, tag):
  """The JSON a worker printed after `tag` (`distributed_worker.vampprior_script`)."""
  line = next(line for line in output.splitlines() if line.startswith(tag + " "))
  return json.loads(line[len(tag) + 1 :])


@pytest.mark.slow
def test_two_workers_shard_the_test_nll_of_a_real_script_and_only_the_chief_writes(tmp_path):
  # experiments.vampprior_train.train_and_evaluate, one process and two workers x 1 CPU on the
  # same global batch, a tiny VAE + VampPrior: 4 steps, then K = 30 on 40 test images in batches
  # of 20 (10 per worker), the chunk chosen from a 4 GiB budget. In the cluster the chief takes 3 s
  # longer to write each checkpoint (best/, checkpoints/, final/): worker 1, which then evaluates
  # the chief's best/, waits until it is written (it found best/ empty before). The chief also
  # takes 3 s more at the end: worker 1 waits for it (the chief may still be reading worker 1's
  # part of the last all-gather; a worker that had exited would fail it: "Connection refused").
  data_dir = write_binarized_mnist_head(tmp_path / "data", train=200, valid=40, test=40)
  extra = ["--script", "vampprior", "--data_dir", data_dir, "--eval_memory_gib", "4"]
  single = _Process(tmp_path / "single", extra=extra)
  slow_chief = ["--chief_slow_save_s", "3", "--chief_end_delay_s", "3"]
  cluster = _cluster(tmp_path / "two", extra=[*extra, *slow_chief])
  outputs = _finish_all(cluster)
  one = _finish(single)
  assert _printed(outputs[1], "LEFT") >= _printed(outputs[0], "ARRIVED")
  assert [line for out in outputs for line in out.splitlines() if line.startswith("warning")] == []
  nll_one, nll_two = _printed(one, "ROW")["test_nll"], _printed(outputs[0], "ROW")["test_nll"]
  assert _printed(outputs[1], "ROW")["test_nll"] == nll_two  # gathered: both have every image
  # Training on two workers equals one process up to float32 roundoff (the test above), and the
  # test NLL of each image is the one process's: the two workers split each batch.
  np.testing.assert_allclose(nll_two, nll_one, rtol=2e-5)
  with np.load(tmp_path / "single" / "test_per_example.npz") as a:
    with np.load(tmp_path / "two" / "test_per_example.npz") as b:
      assert a["log_likelihood"].shape == (40,)
      np.testing.assert_allclose(b["log_likelihood"], a["log_likelihood"], rtol=2e-5)
  files = ["results.json", "test_per_example.npz", "samples.npz", "samples.png"]
  chief_wrote, worker_wrote = (_printed(out, "WROTE") for out in outputs)
  for name in files:
    assert os.path.exists(tmp_path / "two" / name) and name in chief_wrote
  assert "nll_partial.npz" in chief_wrote  # the partial file, written per batch by the chief
  assert not os.path.exists(tmp_path / "two" / "nll_partial.npz")  # and deleted at the end
  assert [p for p in worker_wrote if not p.startswith(".worker-1")] == []


@pytest.mark.slow
def test_two_workers_train_and_shard_the_test_nll_of_nvae_and_only_the_chief_writes(tmp_path):
  # experiments.nvae_train.train_and_evaluate, one process and two workers x 1 CPU on the same
  # global batch, a tiny NVAE (synchronised BatchNorm, SR): 4 steps of 32 images, a validation
  # NLL per epoch, then K = 8 on 10 test images in batches of 4 (2 per worker; the last batch 2),
  # then FID / precision / recall of 10 samples through small stand-in feature networks.
  data_dir = write_binarized_mnist_head(tmp_path / "data", train=64, test=10)
  extra = ["--script", "nvae", "--data_dir", data_dir]
  single = _Process(tmp_path / "single", extra=extra)
  outputs = _finish_all(_cluster(tmp_path / "two", extra=extra))
  one = _finish(single)
  row_one, row_two = _printed(one, "ROW"), _printed(outputs[0], "ROW")
  assert row_two["steps"] == row_one["steps"] == 4 and row_two["test_examples"] == 10
  assert _printed(outputs[1], "ROW")["nll"] == row_two["nll"]  # gathered: both have every image
  np.testing.assert_allclose(row_two["nll"], row_one["nll"], rtol=2e-5)
  with np.load(tmp_path / "single" / "test_per_example.npz") as a:
    with np.load(tmp_path / "two" / "test_per_example.npz") as b:
      assert a["log_likelihood"].shape == (1, 10)  # [passes, images]
      np.testing.assert_allclose(b["log_likelihood"], a["log_likelihood"], rtol=2e-5)
      np.testing.assert_allclose(b["elbo"], a["elbo"], rtol=2e-5)
  chief_wrote, worker_wrote = (_printed(out, "WROTE") for out in outputs)
  for name in ["results.json", "test_per_example.npz", "samples.npz", "samples.png"]:
    assert os.path.exists(tmp_path / "two" / name) and name in chief_wrote
  for name in ["settings.json", "validation.json", "nll_partial_pass0.npz"]:
    assert name in chief_wrote
  assert [p for p in worker_wrote if not p.startswith(".worker-1")] == []
  # FID / precision / recall through stand-in networks (nvae_train.sample_metrics): the features
  # split over the two workers (a replica context of two) equal those of each worker alone.
  for out in outputs:
    metrics = _printed(out, "METRICS")
    assert metrics["replicas"] == [1, 2]
    assert metrics["split"]["precision"] > 0 and metrics["split"]["recall"] > 0
    for name, value in metrics["split"].items():
      assert value == pytest.approx(metrics["alone"][name], rel=1e-5, abs=1e-6), name
  assert _printed(outputs[1], "METRICS")["split"] == _printed(outputs[0], "METRICS")["split"]


@pytest.mark.slow
def test_the_chief_warns_in_one_line_when_a_worker_dies_after_the_last_step(tmp_path):
  # Worker 1 trains the toy task with the chief, then exits with 1 instead of waiting at the end:
  # the chief's wait fails when the coordination service misses worker 1's heartbeats (~10 s); its
  # run is complete, so it says so in one line and exits 0 (worker 1 reports its own failure).
  chief, worker = _cluster(tmp_path / "two", extra=["--worker_dies_at_end", "--epochs", "1"])
  assert worker.wait() == 1
  out = _finish(chief)
  assert os.path.exists(tmp_path / "two" / "toy" / "weights.npz")
  lines = [line for line in out.splitlines() if line.startswith("warning")]  # ours, not TF's
  assert len(lines) == 1 and lines[0].startswith(
    "warning: not every worker reached the end of the run: "
  ), out[-3000:]
  assert "LEFT" in out
