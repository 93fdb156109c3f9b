"""Table 1 of the reproduced NVAE ablation: KL warm-up clock x spectral method on binary MNIST.

  python -m experiments.nvae_table1 --preset=quick        # CPU, minutes: results/nvae_table1.md
  python -m experiments.nvae_table1 --preset=paper --strategy=mirrored

  python -m experiments.nvae_table1 --preset=cpu --table_rows=step_sr,epoch_sr \
      --table_logdir=../runs/nvae_cpu --table_output=results/nvae_cpu.md   # warm-up clocks, CPU
  ... the same command with --report_only    # the page now, from the rows' folders; trains nothing

Trains the `--table_rows` (default Step+SN, Step+SR and Epoch+SN) with `experiments.nvae_train`
(each run resumable in `<table_logdir>/<warmup>_<spectral>`), then reports per run: test NLL
(mean +- std over `--num_test_passes` passes, nats and bits/dim), FID of `--fid_samples` samples at
temperature 1 against the test set (Inception-2015), improved precision / recall (VGG-16 fc2,
k = 3), the training time and epochs reached, and the validation NLL against training time.
Metrics whose network weights are not on the machine are written as "unavailable (...)" with the
way to provide them; nothing is estimated without them. With `--report_only` nothing is trained or
evaluated: an evaluated row is read back and its per-image values published beside the page,
any other says how far its training got, with its validation NLL so far, and has no test numbers.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import flags

from common_tf import host
from experiments import flags as common
from experiments import harness, nvae_flags, nvae_train, results

FLAGS = flags.FLAGS


def define_flags():
  """The table flags (`nvae_flags.define_table_flags`), shown in --help."""
  nvae_flags.define_table_flags()
  flags.adopt_module_key_flags(nvae_flags)
  flags.DEFINE_bool(
    "report_only",
    False,
    "Train and evaluate nothing: write the page from what the "
    "rows' folders hold (an evaluated row's numbers, its per-image values published "
    "beside the page; else how far its training got and its validation NLL so far).",
  )


COLUMNS = [
  ("row", "Warm-up + spectral"),
  ("nll", "NLL (nats)"),
  ("nll_sem", "± s.e. over test images"),
  ("passes_cell", "std over passes"),
  ("bits_per_dim", "bits/dim"),
  ("neg_elbo", "-ELBO (nats)"),
  ("fid", "FID"),
  ("precision", "Precision"),
  ("recall", "Recall"),
  ("train_minutes", "Train time (min)"),
  ("steps", "Steps"),
  ("epochs_reached", "Epochs reached"),
  ("peak_rss_gib", "Peak RSS (GiB)"),
  ("per_example", "per-image values"),
]


# The paired comparisons of the ablation: (row a, row b, what a - b measures).
PAIRS = (
  ("step_sr", "step_sn", "SR - SN, per-step warm-up"),
  ("epoch_sr", "epoch_sn", "SR - SN, per-epoch warm-up"),
  ("step_sr", "epoch_sr", "per-step - per-epoch warm-up, SR"),
  ("step_sn", "epoch_sn", "per-step - per-epoch warm-up, SN"),
)
# NVAE paper (Vahdat & Kautz 2020), Table 1: MNIST test NLL 78.01 nats, dynamically binarized;
# official README's MNIST command: 400 epochs, batch 200, no flows; 33,363,134 parameters when
# its model is built with those arguments (tools/check_official_nvae.py --config mnist).
PAPER_MNIST_NLL, PAPER_EPOCHS, PAPER_PARAMETERS = 78.01, 400, 33_363_134


def paired_differences(rows: list[dict], page: str) -> list[dict]:
  """The `PAIRS` whose two rows both have per-image values beside the page, as the pages' JSON
  keeps them: {"a", "b", "what", "status": "ok", "difference", "sem"} (`results.paired_difference`:
  NLL(a) - NLL(b) over the same test images, its paired standard error)."""
  names = {nvae_train.row_name(r["kl_warmup"], r["spectral"]) for r in rows if r.get("per_example")}
  pairs = []
  for a, b, what in PAIRS:
    if a in names and b in names:
      d, se = results.paired_difference(
        results.published_per_example_path(page, a), results.published_per_example_path(page, b)
      )
      pairs.append(dict(a=a, b=b, what=what, status="ok", difference=d, sem=se))
  return pairs


def difference_lines(pairs: list[dict]) -> list[str]:
  """A note line "a - b: d ± s.e." per paired difference."""
  return [
    f"- {p['what']}: test NLL difference {p['difference']:+.2f} ± {p['sem']:.2f} nats (paired "
    "standard error over the same test images; negative: the first is better)."
    for p in pairs
  ]


def write_rows(rows: list[dict], page: str) -> list[dict]:
  """The page's rows and paired differences (returned) as JSON beside it (`results.rows_path`):
  what `tests/test_results.py` checks against the per-image values."""
  pairs = paired_differences(rows, page)
  results.write_json(results.rows_path(page), {"rows": rows, "differences": pairs})
  return pairs


def comparability(rows: list[dict], preset: str) -> str:
  """What the page's numbers can be compared with: the paper's MNIST number and how this preset
  differs from its setting (data, binarization, model size, epochs)."""
  if preset == "paper":
    return ""
  r = next((u for u in rows if "parameters" in u), rows[0])
  size = f"a {r['parameters'] / 1e6:.1f}M-parameter model" if "parameters" in r else "a small model"
  return (
    f"- Not comparable with the paper's {PAPER_MNIST_NLL} nats (NVAE Table 1, MNIST): here "
    f"{nvae_train.data_description(r['dataset'])}, {size} trained {r['epochs']} epochs; the "
    f"paper binarizes the grey images dynamically (a Bernoulli draw, test set included) "
    f"and trains {PAPER_PARAMETERS / 1e6:.1f}M parameters for {PAPER_EPOCHS} epochs. The "
    "rows compare with each other: same data, model, schedule and test images."
  )


def table_notes(rows: list[dict], preset: str, missing: list[str], pairs: list[dict]) -> str:
  r = rows[0]
  lines = (
    [
      f"**{preset} preset.**"
      + (
        " These are quick-preset numbers from a small CPU run (a reduced "
        "architecture, a few hundred steps, a test subset and few importance "
        "samples): they check the pipeline and are not comparable with the "
        "paper."
        if preset == "quick"
        else ""
      ),
      f"- Data: {nvae_train.data_description(r['dataset'])}; global batch "
      f"{r['global_batch_size']}, {r['epochs']} epochs, {r['parameters']:,} parameters; precision "
      f"{r['precision_policy']}.",
      f"- NLL: importance-weighted bound with K = {r['num_iw_samples']} on {r['test_examples']} test "
      f"images ({r.get('test_subset', 'the first ones of the file')}), {len(r['nll_passes'])} "
      "independent pass(es): the mean, its standard error over the test images and, with several "
      f"passes, the std of the pass means; bits/dim = nats / ({r['num_dims']} ln 2), no offset "
      "(binary data). Where a row's per-image values are kept (last column, float32 IWAE_K and "
      "ELBO per test image and pass), its numbers are the ones these arrays give.",
      f"- FID / precision / recall: {r['fid_samples']} samples at temperature 1 against the same "
      "number of test images. A metric shown as unavailable could not be computed because its "
      "network weights are not on this machine; pass --inception_path / --vgg16_path (or set "
      "GENMODELS_INCEPTION_PATH / GENMODELS_VGG16_PATH, or --download_weights with a network).",
      "- Train time: wall-clock of training only, summed over resumed invocations (this machine's "
      "CPU/GPU, shared with other jobs when run here). Peak RSS: the resident memory peak of the "
      "process that wrote the row (training and evaluation, `ru_maxrss`); n/a for rows written "
      "before it was recorded.",
      "- Host(s) that trained or evaluated the rows: "
      f"{'; '.join(results.row_cpus(rows)) or 'unknown'} "
      "(per row in `<row logdir>/table1_row.json`: `cpus`, and `eval_hosts`, the test-NLL "
      "batches per host); training ran at commit(s) "
      f"{', '.join(sorted({c for u in rows for c in u.get('code_commits') or []})) or 'unknown'}.",
    ]
    + [
      f"- {format_row(u)['row']} is a partial run ({u['epochs_reached']:.2f} of {u['epochs']} "
      "epochs): rerun the command to resume it."
      for u in rows
      if not u["finished"]
    ]
    + [f"- {reason}" for reason in missing]
    + [comparability(rows, preset)]
    + difference_lines(pairs)
  )
  return "\n".join(lines) + "\n"


ROW_FILE = (
  "table1_row.json"  # <row logdir>/table1_row.json: the evaluated row with its sample metrics
)


def format_row(row: dict) -> dict:
  """Cells of a row; those of a row not yet evaluated (no test NLL) stay missing (`n/a`)."""
  out = dict(row)
  out["row"] = nvae_train.table_row_label(row["kl_warmup"], row["spectral"])
  if "nll" in row:
    passes = len(row.get("nll_passes") or [row["nll"]])
    out["passes_cell"] = (
      f"{row['nll_std_over_passes']:.2f} ({passes} passes)" if passes > 1 else "one pass"
    )
    out["bits_per_dim"] = f"{row['bits_per_dim']:.4f}"
    out["per_example"] = (
      f"[{row['per_example']}]({row['per_example']})" if row.get("per_example") else "not kept"
    )
  if row.get("train_seconds") is not None:
    out["train_minutes"] = row["train_seconds"] / 60.0
  return out


def with_per_example_numbers(row: dict, page: str) -> dict:
  """An evaluated row with its test numbers as its per-image values under the page's folder give
  them (`results.with_per_example_numbers`); a row without such values keeps its recorded ones."""
  if "nll" not in row:
    return row
  row = results.with_per_example_numbers(
    row, page, nvae_train.row_name(row["kl_warmup"], row["spectral"]), num_dims=row.get("num_dims")
  )
  if row["per_example"] and len(row["nll_passes"]) > 1:
    row["nll_std_over_passes"] = float(np.std(row["nll_passes"], ddof=1))
  return row


def report_row(s: nvae_train.RunSettings, logdir: str, *, epochs: int) -> dict:
  """A row as its folder holds it, nothing trained or evaluated: its `ROW_FILE` when that was made
  with these settings (memory-only ones aside, e.g. --iw_chunk) at the newest checkpoint; else how
  far training got (the harness's status.json) with the validation NLL so far (validation.json),
  and no test numbers."""
  settings = nvae_train.jsonable(nvae_train.hparams(s))
  status = results.read_status(logdir)
  path = os.path.join(logdir, ROW_FILE)
  if status and os.path.exists(path):
    row = results.read_json(path)
    if row.get("steps") == status["step"] and nvae_train.same_measurement(
      row.get("settings"), settings
    ):
      return dict(row, status="evaluated")
  validation = nvae_train.ValidationHistory(os.path.join(logdir, nvae_train.VALIDATION_FILE)).rows()
  row = dict(
    kl_warmup=s.kl_warmup,
    spectral=s.model.spectral,
    epochs=epochs,
    settings=settings,
    test_examples=s.test_examples,
    status="not started",
    validation=validation,
  )
  if status:
    row.update(
      steps=status["step"],
      epochs_reached=status["epoch"],
      train_seconds=nvae_train.training_seconds(status["train_seconds"], validation),
      cpus=host.merge_in_order(
        results.status_cpus(status), results.partial_evaluation_hosts(logdir)
      ),
      code_commits=status.get("code_commits", []),
      status=(
        f"training: epoch {status['epoch']:.2f} of {status['total_epochs']}"
        if not status["finished"]
        else evaluation_progress(logdir, s)
      ),
    )
  return row


def evaluation_progress(logdir: str, s: nvae_train.RunSettings) -> str:
  """Status of a trained row whose test NLL is not finished: how many test images the first
  pass has done (its resumable partial file, `nvae_train.evaluate_nll`); no partial numbers."""
  done = results.partial_evaluations(logdir).get(
    os.path.basename(nvae_train.partial_nll_path(logdir, 0))
  )
  if done is None:
    return "trained, test NLL not evaluated yet"
  return (
    f"trained; test NLL (K = {s.num_iw_samples}) in progress: {done:,} test images done "
    "(rerun to resume)"
  )


def curve_figure(formatted_rows: list[dict], page: str) -> str:
  """Writes <page stem>_validation.png beside the page (`nvae_train.plot_validation_curves`) and
  returns its Markdown image line ("" when no row has a validation history)."""
  path = os.path.splitext(page)[0] + "_validation.png"
  if not nvae_train.plot_validation_curves(formatted_rows, path):
    return ""
  return f"![validation NLL against training time and steps]({os.path.basename(path)})\n\n"


def write_report(rows: list[dict], *, table: nvae_flags.TableSettings, command: str) -> None:
  """The page of `--report_only` (and its rows beside it as .json): every row's status, test
  numbers only where evaluated."""
  s = table.base
  commits = sorted({c for r in rows for c in r.get("code_commits") or []})
  cpus = results.row_cpus(rows)
  notes = [
    f"**{s.preset} preset, written with --report_only: runs in progress.** A row whose status is "
    "not 'evaluated' has no test numbers and is not converged; rerunning the command without "
    f"--report_only resumes it (training, then the K = {s.num_iw_samples} test NLL, both resume).",
    f"- Test NLL when a row is evaluated: importance-weighted bound with K = {s.num_iw_samples} on "
    f"{s.test_examples or 'all'} test images{' (a fixed random subset)' if s.test_examples else ''}, "
    f"{s.num_test_passes} pass(es). FID / precision / "
    "recall need the Inception / VGG-16 weights (--inception_path / --vgg16_path); without them "
    "an evaluated row shows them as unavailable.",
    "- Train time: wall clock of training only, summed over resumed invocations; on a shared "
    "host it includes the time the process waited for the CPU or was paused.",
    f"- Data: {nvae_train.data_description(rows[0]['dataset'])}"
    + (" (--dataset=auto as it resolves on this host)" if s.dataset == "auto" else "")
    + ".",
    f"- Host: {'; '.join(cpus) or 'n/a'}; training ran at commit(s) {', '.join(commits) or 'n/a'}; "
    f"this page at commit {harness.code_commit() or 'unknown'}.",
    comparability(rows, s.preset),
  ]
  notes += difference_lines(write_rows(rows, table.output))
  formatted = [format_row(r) for r in rows]
  results.write_markdown(
    table.output,
    title=f"NVAE on binary MNIST: warm-up x spectral ablation ({s.preset} preset, in progress)",
    command=command,
    table=results.markdown_table(formatted, COLUMNS + [("status", "Status")]),
    notes="\n".join(notes)
    + "\n\n"
    + curve_figure(formatted, table.output)
    + nvae_train.validation_table(formatted),
  )


def main(argv):
  del argv
  strategy = common.setup_runtime()
  chief = harness.is_chief(strategy)  # under several workers only the chief writes files
  table = nvae_flags.table_settings_from_flags()
  command = common.command_line()
  if table.report_only:
    if not chief:  # nothing to compute: the page is the chief's
      return
    rows = []
    dataset = nvae_train.resolve_dataset(table.base.dataset, FLAGS.data_dir)
    for kl_warmup, spectral in table.rows:
      s, config = table.row(kl_warmup, spectral)
      row = report_row(s, config.logdir, epochs=config.epochs)
      if "dataset" not in row:  # an evaluated row keeps the data set it was trained on
        row.update(dataset=dataset, binarization=nvae_train.binarization(dataset))
      if row["status"] == "evaluated":  # its per-image values, from the evaluation in its folder
        results.publish_per_example(
          config.logdir, table.output, nvae_train.row_name(kl_warmup, spectral)
        )
      rows.append(with_per_example_numbers(row, table.output))
    write_report(rows, table=table, command=command)
    print(f"wrote {table.output}")
    return
  inception = nvae_train.load_network(
    "inception", path=table.inception_path, download=table.download_weights, strategy=strategy
  )
  vgg16 = nvae_train.load_network(
    "vgg16", path=table.vgg16_path, download=table.download_weights, strategy=strategy
  )
  for name, (net, reason) in (("Inception", inception), ("VGG-16", vgg16)):
    if net is None:
      print(
        f"note: {name} weights unavailable, its metrics will be marked so: {reason}",
        file=sys.stderr,
      )
  rows = []
  for kl_warmup, spectral in table.rows:
    s, config = table.row(kl_warmup, spectral)
    row, trained = nvae_train.train_and_evaluate(
      s, config, strategy=strategy, data_dir=FLAGS.data_dir, command=command
    )
    reference = trained.splits.test
    num_fid = min(table.fid_samples, len(reference))
    row.update(
      nvae_train.sample_metrics(
        trained.model,
        reference,
        num_samples=num_fid,
        inception=inception,
        vgg16=vgg16,
        strategy=strategy,
      )
    )
    row["fid_samples"] = num_fid
    if not chief:
      continue
    results.write_json(os.path.join(config.logdir, ROW_FILE), row)
    results.publish_per_example(
      config.logdir, table.output, nvae_train.row_name(kl_warmup, spectral)
    )
    rows.append(with_per_example_numbers(row, table.output))
  if not chief:
    return
  pairs = write_rows(rows, table.output)
  formatted = [format_row(r) for r in rows]
  results.write_markdown(
    table.output,
    title=f"NVAE on binary MNIST: warm-up x spectral ablation ({table.base.preset} preset)",
    command=command,
    table=results.markdown_table(formatted, COLUMNS),
    notes=table_notes(
      rows, table.base.preset, [r for net, r in (inception, vgg16) if net is None], pairs
    )
    + "\n"
    + curve_figure(formatted, table.output)
    + nvae_train.validation_table(formatted),
  )
  print(f"wrote {table.output}")


if __name__ == "__main__":
  define_flags()
  common.run(main)
