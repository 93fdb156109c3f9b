"""experiments.priors_2d: the study end to end (tiny), the data split and the summary."""

import json
import os
import subprocess
import sys

import numpy as np

from experiments import priors_2d

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_split_uses_disjoint_labelled_mnist_test_images():
  train, test, labels = priors_2d.load_split()
  assert train.shape == (8000, 28, 28, 1) and test.shape == (2000, 28, 28, 1)
  assert labels.shape == (2000,) and set(np.unique(labels)) == set(range(10))
  assert set(np.unique(test)) == {0.0, 1.0} and 0 < train.mean() < 1
  # Disjoint: no test image's grey original is among the training images.
  train_flat = {t.tobytes() for t in (train > 0.5).reshape(8000, -1)[:2000]}
  assert sum(t.tobytes() in train_flat for t in test.reshape(2000, -1)) < 20


def test_summary_is_mean_and_std_over_seeds():
  rows = [{"prior": "mog", "elbo": -100.0, "iwae": -98.0, "train_time_s": 1.0, "iw_samples": 4},
          {"prior": "mog", "elbo": -102.0, "iwae": -99.0, "train_time_s": 3.0, "iw_samples": 4}]
  (row,) = priors_2d.summarize(rows, ["mog"])
  assert row["elbo"] == (-101.0, np.std([-100.0, -102.0], ddof=1)) and row["seeds"] == 2
  assert row["iw_samples"] == "4"


def test_study_cli_writes_table_and_aggregate_posterior_pngs(tmp_path):
  # Two priors keep it fast (the 10-coupling flow alone compiles for ~20 s); the flow prior's
  # density and sampling are tested in tests/vampprior_tf/test_priors.py.
  out = tmp_path / "priors_2d.md"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.priors_2d", "--seeds=1", "--epochs=1", "--max_steps=3",
       "--compare_priors=standard,vampprior", "--iw_samples=4",
       f"--logdir={tmp_path / 'runs'}", f"--study_output={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  text = out.read_text()
  for name in ("standard", "vampprior"):
    assert f"| {name} |" in text
    assert (tmp_path / f"priors_2d_{name}.png").stat().st_size > 1000
  rows = json.load(open(tmp_path / "priors_2d.json"))
  # The importance samples the estimator drew (counted) equal --iw_samples.
  assert [r["iw_samples"] for r in rows] == [4, 4]

