"""Under several workers only the chief writes: each table script, run as worker 1 of a two-worker
cluster sees itself (`distributed_worker.NonChiefView`: `harness.is_chief` False, the default
strategy's computation, one process), writes nothing outside its `.worker-1` folders: no page,
JSON rows, PNGs, per-image values, samples or resume files (Python's audit hook sees every file
opened for writing). The real two-process runs are in test_distributed.py."""

import numpy as np
import pytest

from experiments import flags as common
from experiments import nvae_train, priors_2d_train
from tests import scripts
from tests.experiments import distributed_worker, test_nvae_table1, test_priors_2d
from tests.experiments import test_sample_quality as sample_quality_test
from tests.experiments.distributed_worker import NonChiefView, outside_worker_folders
from tests.experiments.test_sample_quality import RUN, sq
from tests.nvae_tf.conftest import one_scale_config, write_binarized_mnist_head


def written_by(root, run):
  """`run()`, then the files it opened for writing under `root` (relative paths)."""
  written = distributed_worker.record_writes(str(root))
  try:
    run()
  finally:
    written.stop()
  return written()


def report_only_args(script, tmp_path):
  """The command line of a page of runs in progress (none started here) for each table script."""
  runs, page = tmp_path / "runs", tmp_path / "page.md"
  return {
    "vampprior_table": [
      "--preset=quick",
      "--datasets=frey_faces",
      "--models=vae",
      "--priors=standard,vampprior",
      "--report_only",
      f"--logdir={runs}",
      f"--table_output={page}",
    ],
    "nvae_table1": test_nvae_table1.ARGS
    + [f"--table_logdir={runs}", f"--table_output={page}", f"--data_dir={tmp_path}"],
    "priors_2d": [
      "--preset=paper",
      "--seeds=1",
      "--compare_priors=standard,vampprior",
      "--report_only",
      f"--logdir={runs}",
      f"--study_output={page}",
    ],
  }[script]


@pytest.mark.parametrize("script", ["vampprior_table", "nvae_table1", "priors_2d"])
def test_a_page_of_runs_in_progress_is_written_by_the_chief_alone(script, tmp_path, monkeypatch):
  args, real = report_only_args(script, tmp_path), common.setup_runtime
  monkeypatch.setattr(common, "setup_runtime", lambda: NonChiefView(real()))
  proc = []
  wrote = written_by(tmp_path, lambda: proc.append(scripts.run_script(script, args)))
  assert proc[0].returncode == 0, proc[0].stderr[-2000:]
  assert outside_worker_folders(wrote) == []
  # The same command as the chief writes the page.
  monkeypatch.setattr(common, "setup_runtime", real)
  wrote = written_by(tmp_path, lambda: proc.append(scripts.run_script(script, args)))
  assert proc[1].returncode == 0, proc[1].stderr[-2000:]
  assert "page.md" in wrote and (tmp_path / "page.md").exists()


def test_priors_2d_runs_write_only_into_the_worker_folder(tmp_path):
  # Two tiny runs trained and evaluated as worker 1: checkpoints go to <run>/.worker-1, and the
  # per-image values, plot data, row and resume file of the test NLL are not written at all.
  settings = [test_priors_2d.tiny_settings(p, 0) for p in ("standard", "vampprior")]
  rows = []
  wrote = written_by(
    tmp_path,
    lambda: rows.extend(
      priors_2d_train.run_study(
        settings,
        base_logdir=str(tmp_path / "runs"),
        data_fn=test_priors_2d.tiny_study,
        strategy=NonChiefView(),
      )
    ),
  )
  assert [r["prior"] for r in rows] == ["standard", "vampprior"]
  assert np.isfinite([r["iwae"] for r in rows]).all()
  assert outside_worker_folders(wrote) == []


def test_nvae_table1_rows_write_only_into_the_worker_folder(tmp_path, monkeypatch):
  # One row of a tiny quick preset (2 steps of 32 images, K = 4 on 8 test images; FID and
  # precision / recall unavailable without weights) trained and evaluated as worker 1: its row
  # file, per-image values and the page are the chief's.
  data_dir = write_binarized_mnist_head(tmp_path / "data", train=64, test=8)
  tiny = nvae_train.Preset(
    model=one_scale_config(),
    batch_size=32,
    epochs=1,
    warmup_epochs=1,
    train_examples=64,
    test_examples=8,
    num_iw_samples=4,
    iw_chunk=4,
    eval_batch_size=8,
  )
  monkeypatch.setitem(nvae_train.PRESETS, "quick", tiny)
  real = common.setup_runtime
  monkeypatch.setattr(common, "setup_runtime", lambda: NonChiefView(real()))
  monkeypatch.delenv("GENMODELS_INCEPTION_PATH", raising=False)
  monkeypatch.delenv("GENMODELS_VGG16_PATH", raising=False)
  args = [
    "--preset=quick",
    "--table_rows=step_sr",
    "--num_test_passes=1",
    "--iw_chunk=4",
    "--fid_samples=4",
    f"--data_dir={data_dir}",
    f"--table_logdir={tmp_path / 'runs'}",
    f"--table_output={tmp_path / 'page.md'}",
  ]
  proc = []
  wrote = written_by(tmp_path, lambda: proc.append(scripts.run_script("nvae_table1", args)))
  assert proc[0].returncode == 0, proc[0].stderr[-2000:]
  assert "test NLL" in proc[0].stdout  # trained and evaluated
  assert outside_worker_folders(wrote) == []


@pytest.mark.slow
def test_sample_quality_writes_nothing_outside_the_worker_folders(tmp_path, monkeypatch):
  # The flow (2 steps) and the DDPM (2 steps, its bound on 3 images with a resume file) of the
  # tiny preset, trained and evaluated as worker 1, the grids and page included.
  real, rows = common.setup_runtime, []
  monkeypatch.setattr(common, "setup_runtime", lambda: NonChiefView(real()))

  class DDPM(sq.models.DDPM):
    def __init__(self, **kwargs):
      super().__init__(**dict(kwargs, jit_sampling=False))  # no XLA compiles: faster

  monkeypatch.setattr(sq.models, "DDPM", DDPM)
  monkeypatch.setattr(
    sample_quality_test, "RUN", lambda settings, **kw: rows.extend(RUN(settings, **kw)) or rows
  )
  args = ["--models=flow,ddpm", *sample_quality_test.ARGS]
  wrote = written_by(tmp_path, lambda: sample_quality_test._main(monkeypatch, tmp_path, *args))
  assert [r["sampler"] for r in rows] == ["flow", "ddpm_ancestral4", "ddpm_ddim2_eta0.5"]
  assert outside_worker_folders(wrote) == []
