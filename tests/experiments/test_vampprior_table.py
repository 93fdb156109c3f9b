"""experiments.vampprior_table: a one-data-set grid through the real CLI, and the table layout."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from experiments import results, vampprior_flags, vampprior_table
from tests import scripts


def test_table_cli_runs_a_tiny_grid(tmp_path):
  out = tmp_path / "table.md"
  proc = scripts.run_script(
    "vampprior_table",
    [
      "--preset=quick",
      "--datasets=frey_faces",
      "--models=vae",
      "--priors=standard,vampprior",
      "--epochs=1",
      "--train_examples=100",
      "--eval_examples=10",
      "--test_samples=8",
      "--ll_chunk=8",
      "--num_components=5",
      "--hidden_units=16",
      "--z1_dim=4",
      f"--logdir={tmp_path / 'runs'}",
      f"--table_output={out}",
    ],
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  text = out.read_text()
  assert "python -m experiments.vampprior_table" in text
  rows = [l for l in text.splitlines() if l.startswith("| frey_faces")]
  assert len(rows) == 2 and "vampprior" in rows[1]
  saved = json.load(open(tmp_path / "table.json"))["rows"]
  assert [r["prior"] for r in saved] == ["standard", "vampprior"]
  # Trained and evaluated in this run: finished, and the page does not call them unconverged.
  assert [r["status"] for r in saved] == ["finished", "finished"]
  assert "**Not converged:**" not in text
  # A finished row names the commits its training ran at (from its run's status.json).
  status = json.load(open(tmp_path / "runs" / "frey_faces-vae-standard" / "status.json"))
  assert saved[0]["code_commits"] == status["code_commits"]
  assert all(c in text for c in status["code_commits"])
  # The importance samples the estimator drew, per row and in the table's "K used" column.
  assert [r["importance_samples"] for r in saved] == [8, 8]
  assert "K used" in text and all(" 8 |" in row for row in rows)
  assert os.path.isdir(tmp_path / "runs" / "frey_faces-vae-vampprior" / "checkpoints")
  # Per-image values beside the page; the rows' numbers are what they give.
  for row in saved:
    values = results.read_per_example(
      str(tmp_path / "table" / f"frey_faces-vae-{row['prior']}.npz")
    )
    nll = -values["log_likelihood"].astype(np.float64)
    assert values["log_likelihood"].shape == (10,) and values["log_likelihood"].dtype == np.float32
    assert row["test_nll"] == nll.mean() and row["test_examples"] == 10
    assert row["test_nll_sem"] == nll.std(ddof=1) / np.sqrt(10)
    assert row["test_negative_elbo"] == -values["elbo"].astype(np.float64).mean()
    assert row["per_example"] == f"table/frey_faces-vae-{row['prior']}.npz"
  assert "[table/frey_faces-vae-standard.npz](table/frey_faces-vae-standard.npz)" in text
  # The page's one pair of cells, from those arrays (tested in detail below).
  pairs = json.load(open(tmp_path / "table.json"))["differences"]
  assert [(d["what"], d["status"], d["test_images"]) for d in pairs] == [
    ("vampprior - standard, model vae", "ok", 10)
  ]
  assert "validation / test subsets frey_faces 10." in text
  assert [r["adam_epsilon"] for r in saved] == [1e-8, 1e-8] and " | 1e-08 | " in rows[0]

  # --report_only: finished cells are read back (not retrained, not re-evaluated), an unfinished
  # cell says how far it got, a cell never started says so; no test numbers are invented.
  mog = tmp_path / "runs" / "frey_faces-vae-mog"
  mog.mkdir()
  (mog / "status.json").write_text(
    json.dumps(
      dict(
        epoch=3.5,
        total_epochs=2000,
        best_epoch=2,
        best_metric=101.5,
        train_seconds=7.0,
        cpu="test CPU",
        finished=False,
        code_commits=["abc1234"],
      )
    )
  )
  flow = tmp_path / "runs" / "frey_faces-vae-flow"  # early-stopped, its evaluation interrupted
  flow.mkdir()
  (flow / "status.json").write_text(
    json.dumps(
      dict(
        epoch=9.0,
        total_epochs=2000,
        best_epoch=4,
        best_metric=99.0,
        train_seconds=9.0,
        cpu="test CPU",
        finished=False,
        stopped_early=True,
      )
    )
  )
  np.savez(flow / "nll_partial.npz", log_px=np.zeros(6), elbo=np.zeros(6))  # 6 images evaluated
  report = tmp_path / "report.md"
  proc = scripts.run_script(
    "vampprior_table",
    [
      "--preset=quick",
      "--report_only",
      "--datasets=frey_faces",
      "--models=vae",
      "--priors=standard,vampprior,mog,flow",
      "--epochs=1",
      "--train_examples=100",
      "--eval_examples=10",
      "--test_samples=8",
      "--ll_chunk=8",
      "--num_components=5",
      "--hidden_units=16",
      "--z1_dim=4",
      f"--logdir={tmp_path / 'runs'}",
      f"--table_output={report}",
    ],
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "Resumed from" not in proc.stderr
  rows = json.load(open(tmp_path / "report.json"))["rows"]
  assert [r["status"] for r in rows] == [
    "finished",
    "finished",
    "training: epoch 3.50 of at most 2000, best validation epoch 2",
    "trained: stopped early at epoch 9, best validation epoch 4; test evaluation in progress: "
    "6 test images done",
  ]
  assert [r.get("test_nll") for r in rows[:2]] == [r["test_nll"] for r in saved]
  # One value of a published array altered: --report_only prints what the arrays now give.
  values = results.read_per_example(str(tmp_path / "report" / "frey_faces-vae-standard.npz"))
  values["log_likelihood"][0] -= 100.0
  altered = tmp_path / "altered.md"
  results.write_per_example(
    str(tmp_path / "altered" / "frey_faces-vae-standard.npz"),
    log_likelihood=values["log_likelihood"],
    elbo=values["elbo"],
  )
  os.remove(tmp_path / "runs" / "frey_faces-vae-standard" / results.PER_EXAMPLE_FILE)
  proc = scripts.run_script(
    "vampprior_table",
    [
      "--preset=quick",
      "--report_only",
      "--datasets=frey_faces",
      "--models=vae",
      "--priors=standard",
      "--epochs=1",
      "--train_examples=100",
      "--eval_examples=10",
      "--test_samples=8",
      "--ll_chunk=8",
      "--num_components=5",
      "--hidden_units=16",
      "--z1_dim=4",
      f"--logdir={tmp_path / 'runs'}",
      f"--table_output={altered}",
    ],
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.load(open(tmp_path / "altered.json"))["rows"][0]["test_nll"] == pytest.approx(
    saved[0]["test_nll"] + 10.0, abs=1e-4
  )
  assert rows[2].get("test_nll") is None and rows[3].get("test_nll") is None
  # Completed epochs and the best (evaluated) epoch come from status.json, for every kind of row
  # (the mog run is half way through its 4th epoch: 3 completed, its status says 3.50).
  assert [(r.get("epochs_trained"), r.get("best_epoch")) for r in rows] == [
    (1, 1),
    (1, 1),
    (3, 2),
    (9, 4),
  ]
  assert "| epochs trained | best epoch |" in report.read_text()
  assert "**Not converged:**" in report.read_text()
  commits_line = next(
    l for l in report.read_text().splitlines() if "training ran at commit(s)" in l
  )
  assert "abc1234" in commits_line  # the unfinished mog run's status, beside the finished rows'

  # A finished cell whose run folder is not on this machine (a new machine, the folder gone)
  # keeps its row from the page's JSON and is not trained again; the page says so.
  shutil.rmtree(tmp_path / "runs" / "frey_faces-vae-standard")
  proc = scripts.run_script(
    "vampprior_table",
    [
      "--preset=quick",
      "--datasets=frey_faces",
      "--models=vae",
      "--priors=standard",
      "--epochs=1",
      "--train_examples=100",
      "--eval_examples=10",
      "--test_samples=8",
      "--ll_chunk=8",
      "--num_components=5",
      "--hidden_units=16",
      "--z1_dim=4",
      f"--logdir={tmp_path / 'runs'}",
      f"--table_output={out}",
    ],
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert not os.path.exists(tmp_path / "runs" / "frey_faces-vae-standard")
  kept = json.load(open(tmp_path / "table.json"))["rows"]
  assert [r["status"] for r in kept] == [
    "finished; run folder not on this machine (row kept from the page's JSON)"
  ]
  assert kept[0]["test_nll"] == saved[0]["test_nll"]
  assert "was trained and evaluated on another machine" in out.read_text()
  assert "**Not converged:**" not in out.read_text()

  # A smoke run (--max_steps) is evaluated part way through its training: never 'finished'.
  smoke = tmp_path / "smoke.md"
  proc = scripts.run_script(
    "vampprior_table",
    [
      "--preset=quick",
      "--datasets=frey_faces",
      "--models=vae",
      "--priors=standard",
      "--epochs=2",
      "--max_steps=1",
      "--train_examples=100",
      "--eval_examples=10",
      "--test_samples=8",
      "--ll_chunk=8",
      "--num_components=5",
      "--hidden_units=16",
      "--z1_dim=4",
      f"--logdir={tmp_path / 'smoke'}",
      f"--table_output={smoke}",
    ],
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert [r["status"] for r in json.load(open(tmp_path / "smoke.json"))["rows"]] == [
    "evaluated before training finished (--max_steps)"
  ]
  assert "**Not converged:**" in smoke.read_text()


def test_paper_numbers_are_only_attached_to_published_cells():
  assert vampprior_table.PAPER_NLL[("static_mnist", "vae", "vampprior")] == 85.57
  assert all(k[0] == "static_mnist" for k in vampprior_table.PAPER_NLL)


# A finished 2 x 2 grid on Frey Faces (7 test images), nothing trained: run folders as
# `experiments.vampprior_train` leaves them, with recorded test numbers the page must not use.
GRID_ARGS = [
  "--preset=quick",
  "--datasets=frey_faces",
  "--models=vae,hvae_2level",
  "--priors=standard,vampprior",
  "--eval_examples=7",
  "--test_samples=8",
]
Z95 = 1.959963984540054  # two-sided 95% normal quantile
SAME_IMAGES = "paired over the same test images"


def finished_grid(runs, page) -> dict[str, np.ndarray]:
  """Run folders of the finished cells under `runs` (status.json, results.json with a recorded test
  NLL of 999 and no per-image file) and each cell's per-image values beside `page` only; returns
  {cell id: the float32 log-likelihoods written}."""
  with scripts.defined_flags(vampprior_table.define_flags) as fv:
    fv(["vampprior_table", *GRID_ARGS, f"--logdir={runs}", f"--table_output={page}"])
    cells = vampprior_flags.table_settings_from_flags().cells
  rng = np.random.default_rng(0)
  faces = rng.normal(-1800.0, 30.0, 7)  # how hard each test face is, shared by the four cells
  values = {}
  for i, (s, config) in enumerate(cells):
    os.makedirs(config.logdir)
    status = dict(
      epoch=5.0,
      total_epochs=5,
      best_epoch=4,
      best_metric=1850.0,
      train_seconds=1.0,
      cpu="test CPU",
      finished=True,
      code_commits=["abc1234"],
    )
    with open(os.path.join(config.logdir, "status.json"), "w") as f:
      json.dump(status, f)
    row = dict(
      dataclasses.asdict(s),
      test_nll=999.0,
      test_nll_sem=1.0,
      test_negative_elbo=1000.0,
      importance_samples=8,
    )
    with open(os.path.join(config.logdir, "results.json"), "w") as f:
      json.dump(row, f)
    cell = os.path.basename(config.logdir)
    ll = (faces - 10.0 * i + rng.normal(0.0, 3.0, 7)).astype(np.float32)
    results.write_per_example(
      results.published_per_example_path(str(page), cell), log_likelihood=ll, elbo=ll - 20.0
    )
    values[cell] = ll
  return values


def expected_line(what, ll_a, ll_b) -> str:
  """The page's line of NLL(a) - NLL(b) from the per-image log-likelihoods, in NumPy."""
  diff = -ll_a.astype(np.float64) - -ll_b.astype(np.float64)
  mean, sem = diff.mean(), diff.std(ddof=1) / np.sqrt(len(diff))
  lo, hi = mean - Z95 * sem, mean + Z95 * sem
  return (
    f"| {what} | frey_faces | {mean:+.2f} | {sem:.2f} | [{lo:+.2f}, {hi:+.2f}] | {len(diff)} | "
    f"{SAME_IMAGES} |"
  )


# (what the page calls the pair, cell a, cell b) for NLL(a) - NLL(b).
PAIRS = [
  ("vampprior - standard, model vae", "frey_faces-vae-vampprior", "frey_faces-vae-standard"),
  (
    "vampprior - standard, model hvae_2level",
    "frey_faces-hvae_2level-vampprior",
    "frey_faces-hvae_2level-standard",
  ),
  (
    "hvae_2level - vae, prior standard",
    "frey_faces-hvae_2level-standard",
    "frey_faces-vae-standard",
  ),
  (
    "hvae_2level - vae, prior vampprior",
    "frey_faces-hvae_2level-vampprior",
    "frey_faces-vae-vampprior",
  ),
]


def test_paired_differences_come_from_the_per_image_values_beside_the_page(tmp_path):
  runs, page = tmp_path / "runs", tmp_path / "page.md"
  values = finished_grid(runs, page)
  args = [*GRID_ARGS, f"--logdir={runs}", f"--table_output={page}"]

  def section(extra):
    proc = scripts.run_script("vampprior_table", args + extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Resumed from" not in proc.stderr  # nothing trained or evaluated
    text = page.read_text()
    return text[text.index("## Paired differences") :], text

  # A normal run of the finished grid and --report_only write the same section: the four pairs,
  # each the NumPy mean and ddof = 1 standard error of the per-image differences.
  shown, text = section([])
  assert shown == section(["--report_only"])[0]
  for what, a, b in PAIRS:
    assert expected_line(what, values[a], values[b]) in shown.splitlines()
  assert "999" not in shown  # the recorded test NLLs are not what the pairs are made from
  data = json.load(open(tmp_path / "page.json"))
  assert [r["status"] for r in data["rows"]] == ["finished"] * 4
  diff = -values[PAIRS[0][1]].astype(np.float64) + values[PAIRS[0][2]].astype(np.float64)
  assert [
    (d["what"], d["a"], d["b"], d["status"], d["test_images"]) for d in data["differences"]
  ] == [(what, a, b, "ok", 7) for what, a, b in PAIRS]
  assert data["differences"][0]["difference"] == diff.mean()
  assert data["differences"][0]["sem"] == diff.std(ddof=1) / np.sqrt(7)
  # The table and notes above the section are the page's own, as before: its rows are the only
  # lines that start with the data set.
  assert [l.split(" | ")[1:3] for l in text.splitlines() if l.startswith("| frey_faces")] == [
    ["vae", "standard"],
    ["vae", "vampprior"],
    ["hvae_2level", "standard"],
    ["hvae_2level", "vampprior"],
  ]
  assert text.index("| data set | model | prior |") < text.index("Per-image values: where a row")
  assert text.index("Per-image values: where a row") < text.index("## Paired differences")

  # One per-image value altered: the pairs with that cell change, the others do not.
  altered = values["frey_faces-hvae_2level-vampprior"].copy()
  altered[3] -= 4.0
  results.write_per_example(
    results.published_per_example_path(str(page), "frey_faces-hvae_2level-vampprior"),
    log_likelihood=altered,
    elbo=altered - 20.0,
  )
  values_after = dict(values, **{"frey_faces-hvae_2level-vampprior": altered})
  after, _ = section(["--report_only"])
  for what, a, b in PAIRS:
    line = expected_line(what, values_after[a], values_after[b])
    assert line in after.splitlines()
    assert (line in shown.splitlines()) == ("frey_faces-hvae_2level-vampprior" not in (a, b))


def test_a_pair_without_both_arrays_says_so_and_prints_no_number(tmp_path):
  runs, page = tmp_path / "runs", tmp_path / "page.md"
  values = finished_grid(runs, page)
  os.remove(results.published_per_example_path(str(page), "frey_faces-vae-standard"))
  proc = scripts.run_script(
    "vampprior_table", [*GRID_ARGS, "--report_only", f"--logdir={runs}", f"--table_output={page}"]
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  text = page.read_text()
  assert "| not kept | finished |" in text  # the row of the missing array
  lines = text[text.index("## Paired differences") :].splitlines()
  missing = "no number: vae + standard per-image values not kept"
  assert f"| {PAIRS[0][0]} | frey_faces | n/a | n/a | n/a | n/a | {missing} |" in lines
  assert f"| {PAIRS[2][0]} | frey_faces | n/a | n/a | n/a | n/a | {missing} |" in lines
  for what, a, b in (PAIRS[1], PAIRS[3]):
    assert expected_line(what, values[a], values[b]) in lines
  pairs = json.load(open(tmp_path / "page.json"))["differences"]
  assert [d["status"] for d in pairs] == [missing, "ok", missing, "ok"]
  assert all("difference" not in d for d in (pairs[0], pairs[2]))


def test_a_page_json_of_rows_alone_is_still_read(tmp_path):
  # A page's JSON written as the plain list of its rows (before it kept paired differences beside
  # them) gives the same rows, e.g. for the finished rows a new machine keeps from it.
  rows = [dict(dataset="frey_faces", model="vae", prior="standard", status="finished")]
  page = str(tmp_path / "page.md")
  results.write_json(results.rows_path(page), rows)
  assert results.read_rows(page) == rows
  results.write_json(results.rows_path(page), {"rows": rows, "differences": []})
  assert results.read_rows(page) == rows
