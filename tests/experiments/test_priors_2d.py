"""experiments.priors_2d (the library experiments.priors_2d_train): the report preset, the data
options, reuse of finished runs, the summary over finished seeds, the aggregate-posterior plot
writer, --report_only and the per-image values through the real CLI."""

import dataclasses
import json
import math
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from experiments import priors_2d_train, results
from tests import scripts


def write_amat_dir(root, *, num_train=256, num_test=40):
  """A tiny binarized_mnist folder whose rows are grouped like the offline copy's: the first half
  of each file is one 'class' (blank images), the second half another (full images)."""
  folder = root / "binarized_mnist"
  folder.mkdir(parents=True)
  for split, n in (("train", num_train), ("valid", 4), ("test", num_test)):
    rows = np.zeros((n, 784), np.int64)
    rows[n // 2 :] = 1
    rows[:, 0] = np.arange(n) % 2  # makes rows distinguishable without changing the halves much
    np.savetxt(folder / f"binarized_mnist_{split}.amat", rows, fmt="%d")
  return root


def test_paper_preset_is_the_report_protocol():
  assert priors_2d_train.PRESETS["paper"] == priors_2d_train.Preset(
    dataset="binarized_mnist", epochs=20, batch_size=128, lr=1e-3, iw_samples=1000, seeds=10
  )
  assert priors_2d_train.PRESETS["quick"].dataset == "mnist_test"
  assert (
    priors_2d_train.NUM_COMPONENTS,
    priors_2d_train.FLOW_COUPLINGS,
    priors_2d_train.FLOW_HIDDEN_UNITS,
  ) == (16, 10, 8)


def test_split_uses_disjoint_labelled_mnist_test_images():
  train, test, labels = priors_2d_train.load_split()
  assert train.shape == (8000, 28, 28, 1) and test.shape == (2000, 28, 28, 1)
  assert labels.shape == (2000,) and set(np.unique(labels)) == set(range(10))
  assert set(np.unique(test)) == {0.0, 1.0} and 0 < train.mean() < 1
  # Disjoint: no test image's grey original is among the training images.
  train_flat = {t.tobytes() for t in (train > 0.5).reshape(8000, -1)[:2000]}
  assert sum(t.tobytes() in train_flat for t in test.reshape(2000, -1)) < 20


def test_static_mnist_data_and_subsets_mix_the_class_grouped_rows(tmp_path):
  root = write_amat_dir(tmp_path)
  full = priors_2d_train.load_study_data("binarized_mnist", str(root))
  assert full.train.shape == (256, 28, 28, 1) and full.test.shape == (40, 28, 28, 1)
  assert full.test_labels is None and full.binary_train
  sub = priors_2d_train.load_study_data(
    "binarized_mnist", str(root), train_examples=20, test_examples=10
  )
  assert sub.train.shape == (20, 28, 28, 1) and sub.test.shape == (10, 28, 28, 1)
  # A prefix would hold only the first (blank) group; the fixed random subset holds both.
  assert 0 < sub.train[:, 5, 5, 0].sum() < 20 and 0 < sub.test[:, 5, 5, 0].sum() < 10
  labelled = priors_2d_train.load_study_data("mnist_test", test_examples=100)
  assert labelled.test_labels.shape == (100,) and not labelled.binary_train
  with pytest.raises(ValueError, match="--dataset"):
    priors_2d_train.load_study_data("cifar10")


def row(prior, seed, elbo, iwae, status="finished"):
  return {
    "prior": prior,
    "seed": seed,
    "elbo": elbo,
    "iwae": iwae,
    "status": status,
    "iw_samples_used": 4,
    "train_seconds": 10.0 * (seed + 1),
    "eval_seconds": 1.0,
  }


def test_summary_is_mean_and_std_over_finished_seeds_only():
  rows = [
    row("mog", 0, -100.0, -98.0),
    row("mog", 1, -102.0, -99.0),
    {"prior": "mog", "seed": 2, "status": "training: epoch 3.0 of 20", "epochs_run": 3.0},
    dict(row("mog", 3, -150.0, -140.0), status="smoke: stopped at epoch 0.10 of 20"),
    {"prior": "flow", "seed": 0, "status": "not started"},
  ]
  mog, flow = priors_2d_train.summarize(rows, ["mog", "flow"])
  assert mog["elbo"] == (-101.0, np.std([-100.0, -102.0], ddof=1))
  assert mog["iwae"] == (-98.5, np.std([-98.0, -99.0], ddof=1))
  assert mog["seeds"] == "2 of 4" and mog["iw_samples"] == "4" and mog["train_s"] == 15.0
  assert flow["elbo"] is None and flow["seeds"] == "0 of 1"


def tiny_settings(prior, seed, **kw):
  return priors_2d_train.Settings(
    prior=prior,
    seed=seed,
    dataset="binarized_mnist",
    epochs=1,
    batch_size=16,
    lr=1e-3,
    iw_samples=3,
    **kw,
  )


def tiny_study():
  rng = np.random.RandomState(0)
  images = (rng.uniform(size=(52, 28, 28, 1)) < 0.3).astype(np.float32)
  labels = np.arange(20) % 10
  return priors_2d_train.StudyData(
    train=images[:32], test=images[32:], test_labels=labels, binary_train=True
  )


def test_finished_runs_are_reused_not_retrained_or_reevaluated(tmp_path, monkeypatch):
  settings = [tiny_settings("standard", 0)]
  strategy = tf.distribute.get_strategy()
  loads = []
  data_fn = lambda: loads.append(1) or tiny_study()
  (first,) = priors_2d_train.run_study(
    settings, base_logdir=str(tmp_path), data_fn=data_fn, strategy=strategy
  )
  logdir = tmp_path / "standard-seed0"
  assert first["status"] == "finished" and first["epochs_run"] == 1.0
  assert first["iw_samples_used"] == 3 and first["test_images"] == 20
  assert json.load(open(logdir / "row.json")) == json.loads(json.dumps(first))
  plot = np.load(logdir / "aggregate_posterior.npz")
  assert plot["z"].shape == (20 * priors_2d_train.PLOT_SAMPLES_PER_IMAGE, 2)
  assert plot["labels"].shape == (20 * priors_2d_train.PLOT_SAMPLES_PER_IMAGE,)

  def fail(*args, **kwargs):
    raise AssertionError("a finished, evaluated run was trained or evaluated again")

  monkeypatch.setattr(priors_2d_train, "train_and_evaluate", fail)
  (again,) = priors_2d_train.run_study(
    settings, base_logdir=str(tmp_path), data_fn=data_fn, strategy=strategy
  )
  assert again == json.loads(json.dumps(first)) and len(loads) == 1  # no data load either
  # Other settings (here K) do not reuse the stored row: the run is evaluated again.
  with pytest.raises(AssertionError, match="trained or evaluated again"):
    priors_2d_train.run_study(
      [priors_2d_train.Settings(**dict(vars(settings[0]), iw_samples=5))],
      base_logdir=str(tmp_path),
      data_fn=data_fn,
      strategy=strategy,
    )
  # A run whose training has not finished (status.json says so) is not reused.
  status = json.load(open(logdir / "status.json"))
  json.dump(dict(status, finished=False, epoch=0.5), open(logdir / "status.json", "w"))
  (report,) = priors_2d_train.run_study(
    settings, base_logdir=str(tmp_path), data_fn=data_fn, strategy=strategy, report_only=True
  )
  assert report["status"] == "training: epoch 0.5 of 1" and "elbo" not in report


def test_density_images_are_normalised_densities():
  edges = np.linspace(-2.0, 2.0, priors_2d_train.PLOT_GRID + 1)
  centres = 0.5 * (edges[1:] + edges[:-1])
  u, v = np.meshgrid(centres, centres, indexing="ij")
  log_p = -0.5 * (u**2 + v**2) - np.log(2 * np.pi)
  # 3 samples in one histogram cell, 1 outside the window.
  z = np.array([[0.01, 0.01], [0.02, 0.03], [0.03, 0.02], [5.0, 5.0]], np.float32)
  prior, posterior = priors_2d_train.density_images(
    dict(z=z, edges_x=edges, edges_y=edges, log_prior=log_p)
  )
  np.testing.assert_allclose(prior, np.exp(log_p))
  cell = (4.0 / priors_2d_train.HIST_BINS) ** 2
  assert posterior.shape == (priors_2d_train.HIST_BINS, priors_2d_train.HIST_BINS)
  i = priors_2d_train.HIST_BINS // 2  # the cell [0, 0.08)^2
  assert posterior[i, i] == pytest.approx(3 / (4 * cell))
  assert posterior.sum() * cell == pytest.approx(0.75)  # mass inside the window
  # N(0, I) mass in [-2, 2]^2 = erf(2 / sqrt 2)^2.
  assert prior.sum() * (4.0 / priors_2d_train.PLOT_GRID) ** 2 == pytest.approx(
    math.erf(2 / math.sqrt(2)) ** 2, abs=1e-3
  )


def test_plot_writer_draws_prior_and_posterior_and_digits_when_labelled(tmp_path):
  rng = np.random.RandomState(0)
  z = rng.standard_normal((500, 2)).astype(np.float32)
  lo, hi = priors_2d_train.plot_window(z, 2 * z)
  assert np.all(lo < np.percentile(2 * z, 1, axis=0)) and np.all(
    hi > np.percentile(2 * z, 99, axis=0)
  )
  edges = np.linspace(-4, 4, priors_2d_train.PLOT_GRID + 1)
  c = 0.5 * (edges[1:] + edges[:-1])
  log_p = -0.5 * (c[:, None] ** 2 + c[None, :] ** 2)
  plot = dict(z=z, edges_x=edges, edges_y=edges, log_prior=log_p)
  assert priors_2d_train.write_aggregate_posterior_png(plot, str(tmp_path / "a.png"), "t") == 2
  labelled = dict(plot, labels=np.arange(500) % 10)
  assert priors_2d_train.write_aggregate_posterior_png(labelled, str(tmp_path / "b.png"), "t") == 3
  assert (tmp_path / "a.png").stat().st_size > 5000 and (tmp_path / "b.png").stat().st_size > 5000


def run_cli(args):
  return scripts.run_script("priors_2d", args)


def test_study_cli_and_report_only_page(tmp_path):
  root = write_amat_dir(tmp_path / "data")
  out, runs = tmp_path / "priors_2d.md", tmp_path / "runs"
  common = [
    "--preset=paper",
    f"--data_dir={root}",
    "--epochs=1",
    "--batch_size=64",
    "--iw_samples=4",
    f"--logdir={runs}",
  ]
  proc = run_cli(common + ["--seeds=1", "--compare_priors=standard", f"--study_output={out}"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / "priors_2d_standard.png").stat().st_size > 5000
  rows = json.load(open(tmp_path / "priors_2d.json"))
  assert [(r["prior"], r["status"], r["iw_samples_used"], r["train_images"]) for r in rows] == [
    ("standard", "finished", 4, 256)
  ]

  # Seed 1 of standard part-trained (a status.json as the harness writes it); vampprior never
  # started. A stale PNG of a prior without a finished run is removed.
  (runs / "standard-seed1").mkdir()
  (runs / "standard-seed1" / "status.json").write_text(
    json.dumps(dict(epoch=3.0, total_epochs=20, finished=False, train_seconds=7.0, cpu="test CPU"))
  )
  (tmp_path / "report_vampprior.png").write_bytes(b"stale")
  report = tmp_path / "report.md"
  proc = run_cli(
    common
    + [
      "--seeds=2",
      "--compare_priors=standard,vampprior",
      "--report_only",
      f"--study_output={report}",
    ]
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "== " not in proc.stderr  # nothing trained or evaluated
  rows2 = json.load(open(tmp_path / "report.json"))
  assert [(r["prior"], r["seed"], r["status"]) for r in rows2] == [
    ("standard", 0, "finished"),
    ("vampprior", 0, "not started"),
    ("standard", 1, "training: epoch 3.0 of 20"),
    ("vampprior", 1, "not started"),
  ]
  assert rows2[0]["iwae"] == rows[0]["iwae"]
  text = report.read_text()
  assert "--report_only" in text.split("```")[1]  # the page names the command that wrote it
  assert text.startswith("# Priors for a 2-D latent VAE (binarized_mnist) — PARTIAL, 1 of 4 runs\n")
  assert "**1 of 4 runs finished and evaluated**" in text
  assert "| 1 of 2 |" in text and "| 0 of 2 |" in text
  assert "no labels" in text and "git commit" in text and "Training command" in text
  assert (tmp_path / "report_standard.png").stat().st_size > 5000
  assert not (tmp_path / "report_vampprior.png").exists()


def test_page_numbers_are_what_the_kept_per_image_values_give(tmp_path):
  """Each run keeps its test IWAE / ELBO per image; the page copies them beside it and prints what
  they give (per run, and mean ± std over seeds); --report_only recomputes from them, and a run
  without them says so instead of inventing them."""
  root = write_amat_dir(tmp_path / "data")
  out, runs = tmp_path / "page.md", tmp_path / "runs"
  args = [
    "--preset=paper",
    f"--data_dir={root}",
    "--epochs=1",
    "--batch_size=64",
    "--iw_samples=4",
    f"--logdir={runs}",
    "--seeds=2",
    "--compare_priors=standard",
    f"--study_output={out}",
  ]
  proc = run_cli(args)
  assert proc.returncode == 0, proc.stderr[-2000:]

  def page_rows():
    return json.load(open(tmp_path / "page.json"))

  def published(seed):
    return results.read_per_example(str(tmp_path / "page" / f"standard-seed{seed}.npz"))

  rows = page_rows()
  for r in rows:
    values = published(r["seed"])
    assert values["log_likelihood"].shape == values["elbo"].shape == (40,)
    assert values["description"]["num_samples"] == 4
    iwae, sem = results.mean_and_sem(values["log_likelihood"])
    assert (r["iwae"], r["iwae_sem"]) == (iwae, sem)
    assert r["elbo"] == results.mean_and_sem(values["elbo"])[0]
    assert r["per_example"] == f"page/standard-seed{r['seed']}.npz"
  iwaes = [r["iwae"] for r in rows]
  summary = f"| {np.mean(iwaes):.2f} ± {np.std(iwaes, ddof=1):.2f} |"
  text = out.read_text()
  assert summary in text and "| kept (2 runs) |" in text
  assert "[page/standard-seed0.npz](page/standard-seed0.npz)" in text

  # One altered value in a run's file: the rebuilt page follows it.
  path = str(runs / "standard-seed0" / results.PER_EXAMPLE_FILE)
  values = results.read_per_example(path)
  ll = values["log_likelihood"].copy()
  ll[3] -= 400.0
  results.write_per_example(path, log_likelihood=ll, elbo=values["elbo"], **values["description"])
  proc = run_cli(args + ["--report_only"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  rebuilt = page_rows()
  assert rebuilt[0]["iwae"] == results.mean_and_sem(ll)[0]
  assert rebuilt[0]["iwae"] == pytest.approx(rows[0]["iwae"] - 10.0, abs=1e-3)
  assert rebuilt[1]["iwae"] == rows[1]["iwae"]
  iwaes = [r["iwae"] for r in rebuilt]
  assert f"| {np.mean(iwaes):.2f} ± {np.std(iwaes, ddof=1):.2f} |" in out.read_text()
  assert summary not in out.read_text()

  # A run evaluated before per-image values were kept: its recorded numbers, marked as such.
  os.remove(runs / "standard-seed1" / results.PER_EXAMPLE_FILE)
  os.remove(tmp_path / "page" / "standard-seed1.npz")
  proc = run_cli(args + ["--report_only"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  old = page_rows()[1]
  recorded = json.load(open(runs / "standard-seed1" / "row.json"))
  assert old["per_example"] is None and old["iwae"] == recorded["iwae"]
  text = out.read_text()
  assert "| per-image values not kept |" in text and "| kept for 1 of 2 runs |" in text


REPO = os.path.join(os.path.dirname(__file__), "..", "..")


def paper_runs(prior_names, seeds):
  preset = priors_2d_train.PRESETS["paper"]
  return priors_2d_train.study_runs(
    preset,
    prior_names=prior_names,
    first_seed=0,
    seeds=seeds,
    dataset=None,
    epochs=preset.epochs,
    batch_size=preset.batch_size,
    iw_samples=preset.iw_samples,
    train_examples=None,
    test_examples=None,
  )


def rebuild(tmp_path, runs, prior_names, *, page="page.md"):
  """The page writer with --report_only and no run folders (`tmp_path/runs` is never made)."""
  study = priors_2d_train.StudySettings(
    runs=tuple(runs),
    prior_names=tuple(prior_names),
    base_logdir=str(tmp_path / "runs"),
    report_only=True,
    data_dir=None,
    output=str(tmp_path / page),
    command="python -m experiments.priors_2d --preset=paper --logdir=runs --report_only",
  )
  return priors_2d_train.run(study, strategy=tf.distribute.get_strategy())


def page_tables(text):
  """{first header: [{header: cell}, ...]} of every Markdown table of a page."""
  tables, lines = {}, text.splitlines()
  for i, line in enumerate(lines):
    if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
      headers = [c.strip() for c in line.strip("|").split("|")]
      rows = []
      for body in lines[i + 2 :]:
        if not body.startswith("| "):
          break
        rows.append(dict(zip(headers, (c.strip() for c in body.strip("|").split("|")))))
      tables[" ".join(headers[:3])] = rows
  return tables


def test_report_only_keeps_the_rows_of_runs_not_on_this_machine(tmp_path):
  """A (prior, seed) whose run folder is absent keeps its finished row from the page's JSON (its
  status says so, its per-image values are 'not kept'); the means over seeds are those of the kept
  rows; a row altered in the JSON changes the page; a local run of the same settings replaces the
  kept row; a JSON row made with other settings is not kept."""
  names = ("standard", "mog")
  runs = paper_runs(names, 3)
  rng = np.random.RandomState(5)
  earlier = []
  for s in runs:
    elbo = float(-143.0 + rng.normal())
    earlier.append(
      dict(
        dataclasses.asdict(s),
        status="finished",
        elbo=elbo,
        iwae=elbo + 3.5 + float(rng.uniform()),
        iwae_sem=0.48,
        iw_samples_used=1000,
        test_images=10000,
        train_images=50000,
        epochs_run=20.0,
        train_seconds=float(rng.uniform(100, 900)),
        eval_seconds=float(rng.uniform(100, 900)),
        cpu="Test CPU, 2 cores",
        git_commit=f"abc{s.seed}",
        evaluated="2026-11-30 06:10:22 UTC",
      )
    )
  earlier[-1]["iw_samples"] = 500  # mog seed 2: evaluated with another K, so not this run's row
  (tmp_path / "page.json").write_text(json.dumps(earlier))
  (tmp_path / "page_standard.png").write_bytes(b"drawn on the machine that ran it")

  rows = rebuild(tmp_path, runs, names)
  assert not (tmp_path / "runs").exists()
  assert [r["status"] for r in rows] == [results.KEPT_STATUS] * 5 + ["not started"]
  assert results.KEPT_STATUS == (
    "finished; run folder not on this machine (row kept from the page's JSON)"
  )
  for r, e in zip(rows[:5], earlier):
    assert dict(r, status="finished", per_example=None) == dict(e, per_example=None)
    assert r["per_example"] is None
  assert json.load(open(tmp_path / "page.json")) == json.loads(json.dumps(rows))

  def summary_cells(json_rows, prior):
    finished = [r for r in json_rows if r["prior"] == prior and r["iw_samples"] == 1000]
    elbo, iwae = (np.array([r[k] for r in finished]) for k in ("elbo", "iwae"))
    return (
      f"{elbo.mean():.2f} ± {elbo.std(ddof=1):.2f}",
      f"{iwae.mean():.2f} ± {iwae.std(ddof=1):.2f}",
      f"{len(finished)} of 3",
    )

  def page_summary():
    table = page_tables((tmp_path / "page.md").read_text())["prior test ELBO test IWAE"]
    return {
      r["prior"]: (r["test ELBO"], r["test IWAE"], r["finished seeds"], r["per-image values"])
      for r in table
    }

  expected = {p: summary_cells(earlier, p) + ("per-image values not kept",) for p in names}
  assert page_summary() == expected
  text = (tmp_path / "page.md").read_text()
  per_run = page_tables(text)["prior seed status"]
  assert [(r["seed"], r["test IWAE"], r["per-image values"]) for r in per_run[:2]] == [
    ("0", f"{earlier[0]['iwae']:.2f}", "per-image values not kept"),
    ("0", f"{earlier[1]['iwae']:.2f}", "per-image values not kept"),
  ]
  assert "**5 of 6 runs finished and evaluated**" in text and "CPU Test CPU, 2 cores" in text
  assert "evaluated at abc0, abc1, abc2." in text
  assert "5 of the finished runs say 'finished; run folder not on this machine" in text
  # The PNG of a prior whose runs are all kept stays as drawn; a prior without one gets none.
  assert (tmp_path / "page_standard.png").read_bytes() == b"drawn on the machine that ran it"
  assert "`page_standard.png` (seed 0; kept as drawn" in text
  assert "mog: no plot (its run folders are not on this machine)" in text
  assert "```\npython -m experiments.priors_2d --preset=paper --logdir=runs\n```" in text

  # A row altered in the page's JSON changes the page: the means follow the kept rows.
  altered = json.load(open(tmp_path / "page.json"))
  altered[2]["iwae"] -= 10.0  # standard, seed 1
  (tmp_path / "page.json").write_text(json.dumps(altered))
  rows = rebuild(tmp_path, runs, names)
  assert rows[2]["iwae"] == earlier[2]["iwae"] - 10.0
  assert page_summary()["standard"][:3] == summary_cells(altered, "standard")
  assert page_summary()["standard"][1] != expected["standard"][1]

  # A local run of the same settings (here part-trained) replaces the kept row.
  (tmp_path / "runs" / "standard-seed0").mkdir(parents=True)
  (tmp_path / "runs" / "standard-seed0" / "status.json").write_text(
    json.dumps(dict(epoch=3.0, total_epochs=20, finished=False, train_seconds=7.0, cpu="CPU B"))
  )
  rows = rebuild(tmp_path, runs, names)
  assert rows[0]["status"] == "training: epoch 3.0 of 20" and "iwae" not in rows[0]
  # standard seeds 1 and 2 are the finished ones left
  assert page_summary()["standard"][:3] == summary_cells(altered[2:5:2], "standard")


def test_the_committed_page_rebuilds_from_its_json_without_the_runs(tmp_path):
  """results/priors_2d.md rebuilt from results/priors_2d.json alone (its 40 run folders are not
  on this machine): every number of both tables is the committed page's."""
  committed = open(os.path.join(REPO, "results", "priors_2d.md")).read()
  shutil.copy(os.path.join(REPO, "results", "priors_2d.json"), tmp_path / "priors_2d.json")
  rows = rebuild(
    tmp_path, paper_runs(priors_2d_train.PRIORS, 10), priors_2d_train.PRIORS, page="priors_2d.md"
  )
  assert len(rows) == 40 and all(r["status"] == results.KEPT_STATUS for r in rows)
  old, new = page_tables(committed), page_tables((tmp_path / "priors_2d.md").read_text())
  assert old.keys() == new.keys() == {"prior test ELBO test IWAE", "prior seed status"}
  for name, old_rows in old.items():
    numbers = [h for h in old_rows[0] if h not in ("status", "per-image values")]
    assert len(numbers) >= 7
    assert [[r[h] for h in numbers] for r in new[name]] == [
      [r[h] for h in numbers] for r in old_rows
    ]
  assert "**40 of 40 runs finished and evaluated**" in (tmp_path / "priors_2d.md").read_text()
