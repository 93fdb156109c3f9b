"""experiments.run_status: a page of how far long runs got, from the harness's status.json files."""

import json

import numpy as np

from experiments import run_status


def _status(folder, **values):
  folder.mkdir(parents=True)
  (folder / "status.json").write_text(
    json.dumps(
      dict(
        step=values.pop("step"),
        epoch=values.pop("epoch"),
        total_steps=800,
        total_epochs=16,
        train_seconds=values.pop("train_seconds"),
        cpu="test CPU",
        updated="2026-11-30 12:00:00 UTC",
        code_commits=["abc1234"],
        **values,
      )
    )
  )


def test_page_lists_finished_stopped_and_training_runs(tmp_path, capsys):
  runs = tmp_path / "runs"
  _status(runs / "table" / "vae", step=800, epoch=16.0, train_seconds=7200.0, finished=True)
  np.savez(runs / "table" / "vae" / "nll_partial.npz", log_px=np.zeros(1200), elbo=np.zeros(1200))
  _status(
    runs / "table" / "hvae",
    step=300,
    epoch=6.0,
    train_seconds=1800.0,
    finished=False,
    stopped_early=True,
    best_epoch=3,
    best_metric=91.2349,
  )
  _status(runs / "nvae", step=66, epoch=1.32, train_seconds=90.0, finished=False)
  (runs / "nvae" / "checkpoints").mkdir()
  (runs / "nvae" / "checkpoints" / "status.json").write_text("{}")  # inside a run: not a run
  # Three levels down: not searched.
  _status(runs / "a" / "b" / "deep", step=1, epoch=0.0, train_seconds=1.0, finished=False)
  page = tmp_path / "status.md"
  assert run_status.main([f"--logdir={runs}", f"--output={page}"]) == 0
  text = page.read_text()
  rows = [l for l in text.splitlines() if l.startswith(f"| {runs}")]
  assert rows == [
    f"| {runs}/nvae | training (resume: rerun its command) | 1.32 of 16 | 66 of 800 | n/a | n/a | 0.03 "
    "| test CPU | 2026-11-30 12:00:00 UTC | abc1234 | n/a |",
    f"| {runs}/table/hvae | stopped early (training done) | 6.00 of 16 | 300 of 800 | 3 | 91.23 | 0.50 "
    "| test CPU | 2026-11-30 12:00:00 UTC | abc1234 | n/a |",
    f"| {runs}/table/vae | finished | 16.00 of 16 | 800 of 800 | n/a | n/a | 2.00 | test CPU "
    "| 2026-11-30 12:00:00 UTC | abc1234 | 1,200 test images done (nll_partial.npz) |",
  ]
  assert f"python -m experiments.run_status --logdir={runs}" in text
  # One run directory named directly is that run alone.
  assert run_status.find_runs(str(runs / "nvae")) == [str(runs / "nvae")]
  capsys.readouterr()


def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys):
  assert run_status.main([f"--logdir={tmp_path / 'missing'}"]) == 2
  assert capsys.readouterr().err.strip().splitlines() == [
    f"error: --logdir {tmp_path / 'missing'} is not a folder"
  ]
  assert run_status.main([f"--logdir={tmp_path}"]) == 2  # a folder without runs
  assert "no status.json under" in capsys.readouterr().err
  assert run_status.main([]) == 2  # --logdir is required
  assert capsys.readouterr().err.startswith("error:")


def test_cpu_cell_names_every_host_that_trained_or_evaluated_the_run(tmp_path):
  """status.json's `cpus` (training, oldest first), then the hosts of the partial test-NLL batches
  (a resume file of `evaluation.likelihood`), each once."""
  run = tmp_path / "runs" / "row"
  _status(
    run, step=800, epoch=16.0, train_seconds=1.0, finished=True, cpus=["Xeon, AVX-512", "test CPU"]
  )
  np.savez(
    run / "nll_partial_pass0.npz",
    log_px=np.zeros(100),
    elbo=np.zeros(100),
    batches_done=2,
    hosts=json.dumps({"test CPU": 1, "EPYC, AVX2": 1}),
  )
  assert run_status.status_row(str(run))["cpu"] == "Xeon, AVX-512; test CPU; EPYC, AVX2"
