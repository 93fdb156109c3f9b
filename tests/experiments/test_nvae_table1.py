"""experiments.nvae_table1 --report_only: the page of runs in progress, from the rows' folders.

Nothing is trained or evaluated: a row evaluated at its newest checkpoint is read back with its
numbers, a row still training says how far it got with its validation NLL so far and has no test
numbers, a trained row says how far its test NLL got, a row never started says so. The folders are written here as the harness and
nvae_train write them (status.json, validation.json, table1_row.json)."""

import json
import os

import numpy as np
import pytest

from experiments import nvae_table1, nvae_train, results
from tests import scripts

ARGS = [
  "--preset=cpu",
  "--table_rows=step_sr,epoch_sr,step_sn,epoch_sn",
  "--num_test_passes=1",
  "--report_only",
]


def write(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(value, f)


def status(step, *, finished, commits):
  return dict(
    step=step,
    epoch=step / 500,
    steps_per_epoch=500,
    total_steps=8000,
    total_epochs=16,
    finished=finished,
    train_seconds=60.0 * step / 100,
    cpu="test CPU",
    code_commits=commits,
    best_metric=None,
    best_epoch=None,
  )


def test_report_only_reads_the_rows_folders_and_trains_nothing(tmp_path):
  root, page = tmp_path / "runs", tmp_path / "page.md"
  # No grey MNIST training images in this data folder: --dataset=auto is the static binarized_mnist.
  args = ARGS + [f"--table_logdir={root}", f"--table_output={page}", f"--data_dir={tmp_path}"]
  write(root / "step_sr" / "status.json", status(1500, finished=False, commits=["abc1234"]))
  write(
    root / "step_sr" / "validation.json",
    [
      dict(
        epoch=1,
        step=500,
        train_seconds=300.0,
        train_seconds_no_val=300.0,
        val_seconds=20.0,
        val_neg_log_p=128.99,
        val_nelbo=140.41,
      ),
      dict(
        epoch=3,
        step=1500,
        train_seconds=920.0,
        train_seconds_no_val=900.0,
        val_seconds=20.0,
        val_neg_log_p=91.95,
        val_nelbo=96.20,
      ),
    ],
  )
  write(root / "step_sn" / "status.json", status(8000, finished=True, commits=["def5678"]))
  # epoch_sr trained on a Xeon and is evaluated part way, on the Xeon and then an AVX2 host.
  write(
    root / "epoch_sr" / "status.json",
    dict(status(8000, finished=True, commits=[]), cpu="Xeon, AVX-512", cpus=["Xeon, AVX-512"]),
  )
  np.savez(
    root / "epoch_sr" / "nll_partial_pass0.npz",
    log_px=np.zeros(150),
    elbo=np.zeros(150),
    batches_done=3,
    hosts=json.dumps({"Xeon, AVX-512": 2, "EPYC, AVX2": 1}),
  )

  first = scripts.run_script("nvae_table1", args)
  assert first.returncode == 0, first.stderr[-2000:]
  assert not os.path.exists(root / "step_sr" / "checkpoints")  # nothing trained
  rows = json.load(open(tmp_path / "page.json"))["rows"]
  assert [r["status"] for r in rows] == [
    "training: epoch 3.00 of 16",
    "trained; test NLL (K = 1000) in progress: 150 test images done (rerun to resume)",
    "trained, test NLL not evaluated yet",
    "not started",
  ]
  assert all("nll" not in r for r in rows)
  assert {(r["dataset"], r["binarization"]) for r in rows} == {("binarized_mnist", "static")}
  assert (
    "- Data: binarized_mnist (static binarization) (--dataset=auto as it resolves on this host)."
  ) in page.read_text()
  assert rows[1]["cpus"] == ["Xeon, AVX-512", "EPYC, AVX2"] and rows[0]["cpus"] == ["test CPU"]
  assert "- Host: EPYC, AVX2; Xeon, AVX-512; test CPU; training ran at" in page.read_text()
  # The validation curve so far: as columns for the plot, and the PNG beside the page.
  curves = nvae_train.validation_curves([nvae_table1.format_row(r) for r in rows])
  assert curves == {"Step + SR": dict(step=[500, 1500], minutes=[5.0, 15.0], nll=[128.99, 91.95])}
  assert (
    "![validation NLL against training time and steps](page_validation.png)" in page.read_text()
  )
  assert (tmp_path / "page_validation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  # step_sn evaluated at its newest step (its row as nvae_table1 writes it), step_sr's row file
  # stale (made at an older step): only step_sn shows test numbers.
  evaluated = dict(
    rows[2],
    steps=8000,
    epochs_reached=16.0,
    finished=True,
    nll=84.25,
    nll_std_over_passes=0.0,
    nll_sem=0.31,
    bits_per_dim=0.155,
    neg_elbo=87.5,
    nll_passes=[84.25],
    num_dims=784,
    fid="unavailable (x)",
  )
  del evaluated["status"]
  # Evaluated with --iw_chunk=50 (memory only) where this command has the preset's 100: the same row.
  assert evaluated["settings"]["iw_chunk"] == 100
  write(
    root / "step_sn" / nvae_table1.ROW_FILE,
    dict(evaluated, settings=dict(evaluated["settings"], iw_chunk=50)),
  )
  write(root / "step_sr" / nvae_table1.ROW_FILE, dict(rows[0], steps=1000, nll=99.0))
  # epoch_sr's row file at the newest step but with another K: another measurement, not this row.
  write(
    root / "epoch_sr" / nvae_table1.ROW_FILE,
    dict(evaluated, settings=dict(rows[1]["settings"], num_iw_samples=50), nll=90.0),
  )
  second = scripts.run_script("nvae_table1", args)
  assert second.returncode == 0, second.stderr[-2000:]
  rows = json.load(open(tmp_path / "page.json"))["rows"]
  assert [r["status"] for r in rows][:3] == [
    "training: epoch 3.00 of 16",
    "trained; test NLL (K = 1000) in progress: 150 test images done (rerun to resume)",
    "evaluated",
  ]
  assert [r.get("nll") for r in rows] == [None, None, 84.25, None]
  text = page.read_text()
  # Training minutes: the harness clock (900 s) without the two validation passes (2 x 20 s).
  assert (
    "| Step + SR | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | 14.33 | 1500 | 3.00 | n/a | n/a | "
    "training: epoch 3.00 of 16 |"
  ) in text
  # One pass: no "± 0.00 over passes"; no per-image values beside the page: its recorded numbers.
  assert "| Step + SN | 84.25 | 0.31 | one pass | 0.1550 | 87.50 |" in text
  assert "| 16.00 | n/a | not kept | evaluated |" in text  # no peak RSS recorded in this row
  assert "| 3 | 1500 | 15.00 | 91.95 | 96.20 |" in text  # the validation curve so far
  assert "training ran at commit(s) abc1234, def5678" in text
  assert "without --report_only resumes it" in text

  # The evaluation's per-image values in the row's folder are published beside the page
  # (<page>/<row>.npz), and the page prints what they give; a row not evaluated publishes nothing.
  log_px = -np.array([80.0, 82.5, 90.25, 84.0], np.float32)
  elbo = log_px - np.float32(3.0)
  results.write_per_example(
    str(root / "step_sn" / results.PER_EXAMPLE_FILE), log_likelihood=log_px, elbo=elbo
  )
  results.write_per_example(
    str(root / "epoch_sr" / results.PER_EXAMPLE_FILE), log_likelihood=log_px, elbo=elbo
  )

  def step_sn_cells():
    assert scripts.run_script("nvae_table1", args).returncode == 0
    return next(line for line in page.read_text().splitlines() if line.startswith("| Step + SN"))

  nll = float(np.mean(-log_px.astype(np.float64)))
  sem = float(np.std(-log_px.astype(np.float64), ddof=1) / 2)
  assert step_sn_cells().startswith(
    f"| Step + SN | {nll:.2f} | {sem:.2f} | one pass | {nll / (784 * np.log(2)):.4f} | "
    f"{nll + 3:.2f} |"
  )
  assert "| [page/step_sn.npz](page/step_sn.npz) | evaluated |" in step_sn_cells()
  assert sorted(os.listdir(tmp_path / "page")) == ["step_sn.npz"]
  published = results.read_per_example(str(tmp_path / "page" / "step_sn.npz"))
  np.testing.assert_array_equal(published["log_likelihood"], log_px)
  assert json.load(open(tmp_path / "page.json"))["rows"][2]["nll"] == pytest.approx(
    84.1875, abs=1e-6
  )
  log_px[2] = -100.0  # one value altered: the page follows
  results.write_per_example(
    str(root / "step_sn" / results.PER_EXAMPLE_FILE), log_likelihood=log_px, elbo=elbo
  )
  assert step_sn_cells().startswith("| Step + SN | 86.62 | 4.53 | one pass |")  # 84.19, 2.18 before


def test_paired_differences_are_over_the_same_test_images(tmp_path):
  page = str(tmp_path / "page.md")
  rng = np.random.RandomState(0)
  sr, sn = -80 - rng.rand(50).astype(np.float32), -81 - rng.rand(50).astype(np.float32)
  results.write_per_example(results.published_per_example_path(page, "step_sr"), log_likelihood=sr)
  results.write_per_example(results.published_per_example_path(page, "step_sn"), log_likelihood=sn)
  rows = [
    dict(kl_warmup="step", spectral=sp, per_example=f"page/step_{sp}.npz") for sp in ("sr", "sn")
  ]
  d = (-sr.astype(np.float64)) - (-sn.astype(np.float64))
  pairs = nvae_table1.paired_differences(rows, page)
  assert pairs == [
    dict(
      a="step_sr",
      b="step_sn",
      what="SR - SN, per-step warm-up",
      status="ok",
      difference=pytest.approx(d.mean(), abs=1e-12),
      sem=pytest.approx(d.std(ddof=1) / np.sqrt(50), abs=1e-12),
    )
  ]
  assert nvae_table1.difference_lines(pairs) == [
    f"- SR - SN, per-step warm-up: test NLL difference {d.mean():+.2f} ± "
    f"{d.std(ddof=1) / np.sqrt(50):.2f} nats (paired standard error over the same test images; "
    "negative: the first is better)."
  ]
  results.write_per_example(
    results.published_per_example_path(page, "step_sn"), log_likelihood=sn[:49]
  )
  with pytest.raises(ValueError, match="hold 50 and 49 images: not the same test images"):
    nvae_table1.paired_differences(rows, page)


def test_binarization_is_dynamic_for_grey_mnist_and_static_for_the_binarized_file():
  assert nvae_train.binarization("mnist") == "dynamic"
  assert nvae_train.binarization("binarized_mnist") == "static"
  assert nvae_train.data_description("mnist") == "mnist (dynamic binarization)"
  with pytest.raises(ValueError, match="resolve 'auto' first"):
    nvae_train.binarization("auto")


def test_table_notes_name_every_host_and_commit_of_the_rows(tmp_path):
  """The evaluated table's notes: the CPUs of all rows (`cpus`, or the `cpu` of rows written
  before 2026-12-02) and the union of their training commits, not the first row's alone."""
  common = dict(
    dataset="binarized_mnist",
    binarization="static",
    global_batch_size=32,
    epochs=16,
    parameters=1000,
    precision_policy="float32",
    num_iw_samples=1000,
    test_examples=10000,
    nll_passes=[82.1],
    num_dims=784,
    fid_samples=1000,
    finished=True,
    kl_warmup="step",
    spectral="sr",
  )
  rows = [
    dict(common, cpu="Xeon, AVX-512", code_commits=["abc1234"]),
    dict(
      common,
      kl_warmup="epoch",
      cpus=["Xeon, AVX-512", "EPYC, AVX2"],
      code_commits=["abc1234", "def5678"],
    ),
  ]
  notes = nvae_table1.table_notes(rows, "cpu", [], [])
  assert "- Host(s) that trained or evaluated the rows: EPYC, AVX2; Xeon, AVX-512 (per row" in notes
  assert "training ran at commit(s) abc1234, def5678." in notes
  assert "- Data: binarized_mnist (static binarization); global batch 32" in notes
