"""The VampPrior table: test log-likelihoods for data sets x models x priors
(Tomczak & Welling 2018, Table 2 / 3), one `experiments.vampprior` run per cell.

  python -m experiments.vampprior_table --preset=quick
  python -m experiments.vampprior_table --preset=paper --datasets=static_mnist \
      --models=vae,hvae_2level,convhvae_2level,pixelhvae_2level --priors=standard,vampprior

Each cell trains in <logdir>/<dataset>-<model>-<prior> (resumable: re-running a finished grid only
re-evaluates) and the table is written to --table_output (default results/vampprior_table.md) with its
JSON beside it (the rows and the paired differences). Below the table, the page's "Paired
differences" compare the cells of each data set over the same test images, VampPrior - standard
prior per model and HVAE - VAE per prior, computed only from the per-image values kept beside the
page (`paired_differences`, `results.paired_difference`). The work is done by `experiments.vampprior_train`; the flags are defined and
read once by `experiments.vampprior_flags` (`table_settings_from_flags`).
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags

from common_tf import host
from experiments import flags as common
from experiments import harness, results, vampprior_flags, vampprior_train


def define_flags():
  """Defines this script's flags (`vampprior_flags.define_table_flags`) and shows them in --help."""
  vampprior_flags.define_table_flags()
  flags.adopt_module_key_flags(vampprior_flags)


# Published test NLL (nats) on static MNIST: Tomczak & Welling 2018, Table 2 (VAE 88.56,
# VAE + VampPrior 85.57; HVAE 86.05, HVAE + VampPrior 83.19).
PAPER_NLL = {
  ("static_mnist", "vae", "standard"): 88.56,
  ("static_mnist", "vae", "vampprior"): 85.57,
  ("static_mnist", "hvae_2level", "standard"): 86.05,
  ("static_mnist", "hvae_2level", "vampprior"): 83.19,
}
# No Frey Faces entry: the paper's Frey numbers were not found verbatim in a source that can be
# cited here (docs/vampprior.md, "Frey Faces at the paper protocol").
EVALUATED_PART_WAY = "evaluated before training finished (--max_steps)"
FINISHED_ELSEWHERE = results.FINISHED_ELSEWHERE
COLUMNS = [
  ("dataset", "data set"),
  ("model", "model"),
  ("prior", "prior"),
  ("likelihood", "p(x|z)"),
  ("logistic_edges", "logistic edges"),
  ("epochs_trained", "epochs trained"),
  ("best_epoch", "best epoch"),
  ("test_negative_elbo", "test -ELBO"),
  ("test_nll", "test NLL"),
  ("test_nll_sem", "± s.e."),
  ("importance_samples", "K used"),
  ("paper_nll", "paper NLL"),
  ("adam_epsilon", "Adam ε"),
  ("best_val_negative_elbo", "best val -ELBO"),
  ("train_seconds_total", "train s"),
  ("eval_time_s", "eval s"),
  ("peak_rss_gib", "peak RSS GiB"),
  ("per_example_cell", "per-image values"),
  ("status", "status"),
]


def run_grid(
  cells,
  *,
  strategy,
  data_dir=None,
  report_only: bool = False,
  earlier_rows: list[dict] = (),
  eval_memory_gib: float | None = None,
) -> list[dict]:
  """Trains and evaluates every cell ((RunSettings, TrainConfig) pairs, e.g.
  `vampprior_flags.TableSettings.cells`; resuming, a finished, evaluated cell is not redone), or
  with `report_only` reads what each cell's logdir holds. A cell whose logdir is not on this
  machine keeps its finished row from `earlier_rows` (the page's own JSON) instead of training
  again (`kept_row`). `eval_memory_gib`: the test NLL's memory budget
  (`vampprior_train.train_and_evaluate`; None: each cell's `ll_chunk`)."""
  rows = []
  for s, config in cells:
    print(f"== {s.dataset} {s.model} {s.prior}", file=sys.stderr)
    row = finished_row(config.logdir, s) or kept_row(earlier_rows, config.logdir, s)
    if row is None and not report_only:
      evaluated = vampprior_train.train_and_evaluate(
        s, config, strategy=strategy, data_dir=data_dir, eval_memory_gib=eval_memory_gib
      )
      # Evaluated after training stopped short of its end (--max_steps): no 'finished' status.
      row = finished_row(config.logdir, s) or dict(evaluated, status=EVALUATED_PART_WAY)
    if row is None:
      row = unfinished_row(config.logdir, s)
    row.update(training_progress(results.read_status(config.logdir)))
    row["paper_nll"] = PAPER_NLL.get((s.dataset, s.model, s.prior))
    rows.append(row)
  return rows


def cell_id(row: dict) -> str:
  """The name of a cell's per-image values beside the page: <dataset>-<model>-<prior>."""
  return os.path.basename(
    vampprior_train.cell_logdir("", row["dataset"], row["model"], row["prior"])
  )


def with_per_example_numbers(rows: list[dict], *, page: str, logdirs: list[str]) -> list[dict]:
  """Each evaluated row (a test NLL) with its per-image values published beside the page
  (`results.publish_per_example`, from the cell's run folder when it has them) and its test
  numbers as those values give them; a row without values keeps its recorded numbers and says
  they were not kept."""
  out = []
  for row, logdir in zip(rows, logdirs):
    if row.get("test_nll") is None:
      out.append(row)
      continue
    results.publish_per_example(logdir, page, cell_id(row))
    row = results.with_per_example_numbers(row, page, cell_id(row))
    if row["per_example"]:
      row.update(
        test_nll=row["nll"],
        test_nll_sem=row["nll_sem"],
        test_negative_elbo=row["neg_elbo"],
        test_examples=row["test_examples"],
      )
      for key in ("nll", "nll_sem", "neg_elbo", "nll_passes"):
        row.pop(key)
    out.append(row)
  return out


# The page's paired comparisons within a data set, (a, b) for NLL(a) - NLL(b): the VampPrior
# against the standard prior for each model, the two-level HVAE against the VAE for each prior.
PRIOR_PAIR = ("vampprior", "standard")
MODEL_PAIR = ("hvae_2level", "vae")


def paired_differences(rows: list[dict], page: str) -> list[dict]:
  """For each data set of the page, VampPrior - standard prior for every model and HVAE - VAE for
  every prior whose two cells are on the page: NLL(a) - NLL(b), the mean of the per-image
  differences over the same test images, and its paired standard error, computed only from the
  per-image values beside `page` (`results.paired_difference`), with its 95% interval and number
  of images. A pair without both arrays, or whose arrays hold different test images, has no
  number and says why in its status."""
  cells = {(r["dataset"], r["model"], r["prior"]): r for r in rows}
  wanted = []
  for dataset in dict.fromkeys(r["dataset"] for r in rows):
    for model in dict.fromkeys(r["model"] for r in rows):
      a, b = PRIOR_PAIR
      wanted.append((dataset, f"{a} - {b}, model {model}", (model, a), (model, b)))
    for prior in dict.fromkeys(r["prior"] for r in rows):
      a, b = MODEL_PAIR
      wanted.append((dataset, f"{a} - {b}, prior {prior}", (a, prior), (b, prior)))
  out = []
  for dataset, what, a, b in wanted:
    ra, rb = cells.get((dataset, *a)), cells.get((dataset, *b))
    if ra is None or rb is None:
      continue  # a cell of the pair is not in this page's grid
    d = dict(dataset=dataset, what=what, a=cell_id(ra), b=cell_id(rb))
    without = [
      f"{r['model']} + {r['prior']} "
      + ("per-image values not kept" if r.get("test_nll") is not None else "not evaluated yet")
      for r in (ra, rb)
      if not r.get("per_example")
    ]
    if without:
      d["status"] = "no number: " + "; ".join(without)
    elif ra.get("test_examples") != rb.get("test_examples") or ra.get("eval_examples") != rb.get(
      "eval_examples"
    ):
      d["status"] = (
        f"not paired: different test images ({ra.get('test_examples')} and "
        f"{rb.get('test_examples')} images)"
      )
    else:
      diff, sem = results.paired_difference(
        results.published_per_example_path(page, d["a"]),
        results.published_per_example_path(page, d["b"]),
      )
      d.update(
        status="ok",
        difference=diff,
        sem=sem,
        interval_95=[diff - results.Z95 * sem, diff + results.Z95 * sem]
        if sem is not None
        else None,
        test_images=ra["test_examples"],
      )
    out.append(d)
  return out


def differences_markdown(pairs: list[dict]) -> str:
  """The "Paired differences" section of the page: its table, or a line saying there is no pair."""
  if not pairs:
    return "No pair of cells to compare on this page (VampPrior - standard, HVAE - VAE).\n"
  header = ["difference (a - b)", "data set"] + results.PAIRED_HEADER
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  for d in pairs:
    cells = results.paired_difference_cells(d)
    lines.append("| " + " | ".join([d["what"], d["dataset"]] + cells) + " |")
  return "\n".join(lines) + "\n"


def finished_row(logdir: str, s) -> dict | None:
  """The cell's evaluated row when its training had finished (or stopped early) and the row was
  made with these settings; None otherwise."""
  row_path, status = os.path.join(logdir, "results.json"), results.read_status(logdir)
  if not (os.path.exists(row_path) and status):
    return None
  row = results.read_json(row_path)
  done = status.get("finished") or status.get("stopped_early")
  return (
    dict(row, status="finished", **training_progress(status))
    if done and same_settings(row, s)
    else None
  )


def same_settings(row: dict, s) -> bool:
  """Whether a results row was made with the run settings `s` (every RunSettings field equal)."""
  return all(row.get(k) == v for k, v in dataclasses.asdict(s).items())


def kept_row(earlier_rows: list[dict], logdir: str, s) -> dict | None:
  """The finished row, made with these settings, of an earlier writing of the page
  (`earlier_rows`, its JSON) for a cell with no run on this machine (`results.kept_row`: no
  status.json in `logdir`); None otherwise.

  A finished cell's numbers are on the page, but its run folder stays on the machine that ran
  it: on a new machine the folder is gone and the grid would otherwise train and evaluate the
  cell again (hours each at the paper preset) before reaching the unfinished ones. A row kept
  this way says so in its status; a local run of the cell, started or finished, replaces it.
  """
  return results.kept_row(earlier_rows, logdir, dataclasses.asdict(s))


def training_progress(status: dict | None) -> dict:
  """Completed epochs, the best validation epoch (whose checkpoint is evaluated) and the commits
  the training ran at, from the harness's status (`epochs_run` of a results row is the restored
  best checkpoint's epoch). A run stopped part way through an epoch counts the epochs it
  completed; its status line gives the fractional epoch (290.62 of a run 62% through its 291st
  epoch)."""
  if not status:
    return {}
  return dict(
    epochs_trained=int(status["epoch"]),
    best_epoch=status.get("best_epoch"),
    code_commits=status.get("code_commits", []),
  )


def unfinished_row(logdir: str, s) -> dict:
  """How far an unfinished cell got (from the harness's status.json); no test numbers."""
  row = dict(dataclasses.asdict(s), status="not started")
  status = results.read_status(logdir)
  if status:
    done = sum(results.partial_evaluations(logdir).values())
    evaluation = (
      f"test evaluation in progress: {done:,} test images done"
      if done
      else "test evaluation not finished"
    )
    progress = (
      f"trained: stopped early at epoch {status['epoch']:.0f}, best validation epoch "
      f"{status['best_epoch']}; {evaluation}"
      if status.get("stopped_early")
      else f"training: epoch {status['epoch']:.2f} of at most {status['total_epochs']}, "
      f"best validation epoch {status['best_epoch']}"
    )
    row.update(
      status=progress,
      adam_epsilon=vampprior_train.adam_epsilon(logdir),
      best_val_negative_elbo=status["best_metric"],
      train_seconds_total=status["train_seconds"],
      cpus=host.merge_in_order(
        results.status_cpus(status), results.partial_evaluation_hosts(logdir)
      ),
    )
  return row


def test_counts(rows) -> str:
  """The test examples each data set of the page was evaluated on ("all" where a subset was not
  asked for and nothing is evaluated yet), e.g. "static_mnist 500, frey_faces 200"."""
  counts = {}
  for r in rows:
    counts.setdefault(r["dataset"], r.get("test_examples") or r.get("eval_examples") or "all")
  return ", ".join(f"{d} {n:,}" if isinstance(n, int) else f"{d} {n}" for d, n in counts.items())


def write_table(rows, *, output: str, command: str, preset: str):
  pairs = paired_differences(rows, output)
  results.write_json(results.rows_path(output), {"rows": rows, "differences": pairs})
  rows = [
    dict(
      r,
      per_example_cell=(
        f"[{r['per_example']}]({r['per_example']})"
        if r.get("per_example")
        else "not kept"
        if r.get("test_nll") is not None
        else None
      ),
      adam_epsilon=f"{r['adam_epsilon']:g}" if r.get("adam_epsilon") is not None else None,
    )
    for r in rows
  ]
  first = rows[0]
  notes = (
    f"Preset `{preset}`: {vampprior_train.PRESETS[preset].epochs} epochs max, batch "
    f"{vampprior_train.PRESETS[preset].batch_size}, "
    f"AdamNormGrad lr {first['lr']}, KL warm-up {first['warmup']} epochs, "
    f"K = {first['num_components']} pseudo-inputs / mixture components, "
    f"training subset {first['train_examples'] or 'all'}, validation / test subsets "
    f"{test_counts(rows)}. Test NLL = -IWAE_K (importance-weighted, "
    "evaluation.likelihood), ± its standard error over test examples; test -ELBO is the mean "
    "over the same K samples of -log w. Both in nats per example. 'K used' is the number of "
    "importance samples per test example the estimator actually drew (counted from the "
    "log-weights). 'logistic edges' applies to discretized_logistic rows only (official = "
    "log_Logistic_256, the paper's form). Paper NLLs: Tomczak & "
    "Welling 2018 with the paper preset (2000 epochs max, early stopping 50, K = 5000)."
  )
  if any(
    r.get("adam_epsilon") is None and r.get("status", "").startswith("finished") for r in rows
  ):
    notes += (
      " Adam ε: the official AdamNormGrad's 1e-8; a row without one was trained before "
      f"the suite recorded it, with Keras's default {vampprior_train.KERAS_DEFAULT_ADAM_EPSILON:g} "
      "(as is a run resumed from then on)."
    )
  commits = sorted({c for r in rows for c in r.get("code_commits") or []})
  notes += (
    f"\n\nData: {', '.join(sorted({r['dataset'] for r in rows}))} from the standard files "
    f"(offline copy). Code: this page at commit {harness.code_commit() or 'unknown'}"
    + (f"; training ran at commit(s) {', '.join(commits)}" if commits else "")
    + "."
  )
  cpus = results.row_cpus(rows)
  if cpus:
    notes += (
      f"\n\nCPU: {'; '.join(cpus)}; 'train s' is the training time summed over resumed "
      "sessions (the harness clock, validation passes included), 'eval s' the time of the "
      "test-NLL batches, also summed over resumed invocations."
    )
  if any(r.get("status", "").startswith(FINISHED_ELSEWHERE) for r in rows):
    notes += (
      f"\n\nA row whose status says '{FINISHED_ELSEWHERE}' was trained and evaluated "
      "on another machine (the CPU it names); its numbers are kept from "
      "this page's JSON and the command does not train it again (to redo it, remove its "
      "row from the JSON)."
    )
  notes += (
    "\n\nPer-image values: where a row links them (`results/<page>/<cell>.npz`, float32 "
    "IWAE_K and ELBO per test example), its test numbers are the ones these arrays give; "
    "a row marked 'not kept' was evaluated before the suite kept them (rerun its cell to "
    "make them)."
  )
  if any(not r.get("status", "").startswith("finished") for r in rows):
    notes += (
      "\n\n**Not converged:** a row whose status says 'training' or 'not started' has no test "
      "numbers yet; rerunning the command without --report_only resumes it from its newest "
      "checkpoint (or starts it)."
    )
  if preset == "quick":
    notes += (
      "\n\nThe quick preset is a CPU smoke test of the whole pipeline (minutes, a few "
      "epochs on a subset): its numbers are far from converged and NOT comparable with "
      "the paper's."
    )
  notes += (
    "\n\n## Paired differences\n\n"
    "NLL(a) - NLL(b) in nats (negative: a is better): the mean over the same test images of the "
    "per-image differences of the test NLL, computed only from the per-image values linked in "
    "the table (`results.paired_difference`); paired s.e.: the standard error of those "
    "differences (ddof = 1); 95% interval: the difference ± 1.96 paired s.e. (normal "
    "approximation). A pair whose arrays are not both kept gives no number; its status says "
    "which is missing.\n\n" + differences_markdown(pairs)
  )
  results.write_markdown(
    output,
    title="VampPrior: test negative log-likelihood (nats)",
    command=command,
    table=results.markdown_table(rows, COLUMNS),
    notes=notes,
  )


def main(argv):
  del argv
  strategy = common.setup_runtime()
  t = vampprior_flags.table_settings_from_flags()
  rows = run_grid(
    t.cells,
    strategy=strategy,
    data_dir=t.data_dir,
    report_only=t.report_only,
    earlier_rows=results.read_rows(t.output),
    eval_memory_gib=t.eval_memory_gib,
  )
  if not harness.is_chief(strategy):  # under several workers only the chief writes the page
    return
  rows = with_per_example_numbers(
    rows, page=t.output, logdirs=[config.logdir for _, config in t.cells]
  )
  write_table(rows, output=t.output, command=common.command_line(), preset=t.preset)
  print(f"wrote {t.output}", file=sys.stderr)


if __name__ == "__main__":
  define_flags()
  common.run(main)
