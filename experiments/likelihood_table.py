"""One likelihood table across the model families on the static MNIST test set, built only from
the per-image values the results pages publish (`results/<page stem>/<row id>.npz`,
`results.write_per_example`): nothing is trained or evaluated, the page rebuilds in seconds.

  python -m experiments.likelihood_table                       # results/likelihood_static_mnist.md
  python -m experiments.likelihood_table --results_dir=/tmp/r --output=/tmp/r/ll.md

Rows (`ROWS`): the VampPrior paper grid (VAE / HVAE x standard / VampPrior,
results/vampprior_paper/), the NVAE CPU ablation (per-step / per-epoch KL warm-up x SR / SN,
results/nvae_cpu/) and, for each prior of the 2-D latent priors study (results/priors_2d/), its
best seed: the seed whose per-image values give the lowest mean test NLL (a choice made on the test
set, so optimistic; the mean and spread over all its seeds are printed beside it). Each row gives
the test NLL (-IWAE_K, nats, the mean over the test images of -log_likelihood), its standard error
over the test images and a 95% interval (mean ± 1.96 s.e.); a row whose file does not exist yet
names the file and the command that makes it.

Paired differences (`PAIRS`, `results.paired_difference`: the mean per-image difference and its
standard error over the same images) are computed only between rows evaluated on the same test
images: the same data file, binarization and subset, checked from each file's description and its
number of values.

The page (--output), its JSON rows beside it (.json) and a plot of the NLLs and differences with
their 95% intervals (<output stem>.png).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import sys

import numpy as np
from absl import flags

from experiments import flags as common
from experiments import harness, results

FLAGS = flags.FLAGS

DEFAULT_OUTPUT = "likelihood_static_mnist.md"
STATIC_MNIST_TEST_IMAGES = 10_000  # binarized_mnist_test.amat (Larochelle & Murray)
Z95 = results.Z95  # two-sided 95% normal quantile
FULL_TEST_SET = f"binarized_mnist test, all {STATIC_MNIST_TEST_IMAGES:,} images (file order)"

VAMPPRIOR_PAGE, NVAE_PAGE, PRIORS_PAGE = "vampprior_paper.md", "nvae_cpu.md", "priors_2d.md"
VAMPPRIOR_COMMAND = (
  "python -m experiments.vampprior_table --preset=paper --datasets=static_mnist "
  "--models=vae,hvae_2level --priors=standard,vampprior "
  "--logdir=../runs/vampprior_paper --table_output=results/vampprior_paper.md"
)
NVAE_COMMAND = (
  "python -m experiments.nvae_table1 --preset=cpu "
  "--table_rows=step_sr,step_sn,epoch_sr,epoch_sn --table_logdir=../runs/nvae_cpu "
  "--table_output=results/nvae_cpu.md --num_test_passes=1"
)
PRIORS_COMMAND = "python -m experiments.priors_2d --preset=paper --logdir=../runs/priors_2d_report"
# What each family's command reuses instead of evaluating again (a row evaluated before the suite
# kept per-image values gets its file only from a new test evaluation). The NVAE commands evaluate
# such a row again by themselves (`nvae_train.previous_nll`).
REUSED_RECORD = {
  "VampPrior paper": "the cell's results.json (or, for a cell trained elsewhere, its row in "
  "results/vampprior_paper.json)",
  "2-D priors study": "the run's row.json",
}
PRIORS_STUDY = ("standard", "mog", "flow", "vampprior")
PRIORS_SEEDS = 10  # the study's paper preset: seeds 0..9


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of the table: the published per-image file `results/<page stem>/<row_id>.npz`."""

  key: str  # how PAIRS name it
  family: str
  model: str
  page: str  # the results page (file name) whose folder holds the values
  row_id: str
  command: str


ROWS = (
  Row(
    "vae_standard",
    "VampPrior paper",
    "VAE, standard prior",
    VAMPPRIOR_PAGE,
    "static_mnist-vae-standard",
    VAMPPRIOR_COMMAND,
  ),
  Row(
    "vae_vampprior",
    "VampPrior paper",
    "VAE, VampPrior",
    VAMPPRIOR_PAGE,
    "static_mnist-vae-vampprior",
    VAMPPRIOR_COMMAND,
  ),
  Row(
    "hvae_standard",
    "VampPrior paper",
    "HVAE (2-level), standard prior",
    VAMPPRIOR_PAGE,
    "static_mnist-hvae_2level-standard",
    VAMPPRIOR_COMMAND,
  ),
  Row(
    "hvae_vampprior",
    "VampPrior paper",
    "HVAE (2-level), VampPrior",
    VAMPPRIOR_PAGE,
    "static_mnist-hvae_2level-vampprior",
    VAMPPRIOR_COMMAND,
  ),
  Row(
    "nvae_step_sr",
    "NVAE (cpu preset)",
    "NVAE, per-step warm-up + SR",
    NVAE_PAGE,
    "step_sr",
    NVAE_COMMAND,
  ),
  Row(
    "nvae_step_sn",
    "NVAE (cpu preset)",
    "NVAE, per-step warm-up + SN",
    NVAE_PAGE,
    "step_sn",
    NVAE_COMMAND,
  ),
  Row(
    "nvae_epoch_sr",
    "NVAE (cpu preset)",
    "NVAE, per-epoch warm-up + SR",
    NVAE_PAGE,
    "epoch_sr",
    NVAE_COMMAND,
  ),
  Row(
    "nvae_epoch_sn",
    "NVAE (cpu preset)",
    "NVAE, per-epoch warm-up + SN",
    NVAE_PAGE,
    "epoch_sn",
    NVAE_COMMAND,
  ),
) + tuple(
  # The row id of a priors row is its best seed, chosen when the page is built (`best_seed`).
  Row(
    f"priors_{p}",
    "2-D priors study",
    f"2-D latent VAE, prior {p} (best seed)",
    PRIORS_PAGE,
    f"{p}-seed<k>",
    PRIORS_COMMAND,
  )
  for p in PRIORS_STUDY
)

# (row a, row b, what a - b measures): NLL(a) - NLL(b), negative when a is better.
PAIRS = (
  ("vae_vampprior", "vae_standard", "VampPrior - standard prior, VAE"),
  ("hvae_vampprior", "hvae_standard", "VampPrior - standard prior, HVAE"),
  ("hvae_standard", "vae_standard", "HVAE - VAE, standard prior"),
  ("hvae_vampprior", "vae_vampprior", "HVAE - VAE, VampPrior"),
  ("nvae_step_sr", "nvae_step_sn", "SR - SN, per-step warm-up (NVAE)"),
  ("nvae_epoch_sr", "nvae_epoch_sn", "SR - SN, per-epoch warm-up (NVAE)"),
  ("nvae_step_sr", "nvae_epoch_sr", "per-step - per-epoch warm-up, SR (NVAE)"),
  ("nvae_step_sn", "nvae_epoch_sn", "per-step - per-epoch warm-up, SN (NVAE)"),
  ("nvae_step_sr", "hvae_vampprior", "NVAE (per-step + SR) - HVAE + VampPrior"),
  ("nvae_step_sr", "hvae_standard", "NVAE (per-step + SR) - HVAE, standard prior"),
  (
    "priors_vampprior",
    "priors_standard",
    "VampPrior - standard prior, 2-D latent VAE (best seeds)",
  ),
)


def test_set(description: dict, num_values: int) -> tuple[str | None, str]:
  """(which test images a per-image file holds, or None when not the static MNIST test set; why).

  The key names the data file, the binarization and the subset, so that two files with the same
  key hold the same images in the same order: all STATIC_MNIST_TEST_IMAGES of
  binarized_mnist_test.amat in file order (every family's loader when no subset is asked for), or
  a subset as its family draws it (a different subset rule per family)."""
  dataset = description.get("dataset")
  if dataset == "static_mnist":  # the VampPrior suite's name for the same file
    dataset = "binarized_mnist"
  if dataset != "binarized_mnist":
    return None, f"data set {dataset!r}, not static MNIST"
  if description.get("binarization", "static") != "static":
    return None, f"binarization {description['binarization']!r}, not the static file"
  recorded = description.get("test_examples")
  if recorded is not None and int(recorded) != num_values:
    return None, f"its description says {recorded} test images but it holds {num_values} values"
  subset = description.get("test_subset")
  if num_values == STATIC_MNIST_TEST_IMAGES and subset in (None, "all"):
    return FULL_TEST_SET, "the static MNIST test set"
  if num_values > STATIC_MNIST_TEST_IMAGES:
    return None, f"{num_values} values: more than the {STATIC_MNIST_TEST_IMAGES:,} test images"
  rule = (
    subset
    if subset not in (None, "all")
    else f"a subset chosen by the run that wrote it ({description.get('what', 'no description')})"
  )
  return (
    f"binarized_mnist test, {num_values:,} images: {rule}",
    "a subset of the static MNIST test set",
  )


def values_of(path: str) -> dict:
  """What the table needs of one per-image file: its numbers (`results.per_example_numbers`), K,
  the test-set key (`test_set`) and its description."""
  values = results.read_per_example(path)
  numbers = results.per_example_numbers(path)
  description = values["description"]
  key, why = test_set(description, numbers["test_examples"])
  k = description.get("num_samples", description.get("num_iw_samples"))
  return dict(
    numbers, test_set=key, test_set_note=why, importance_samples=k, description=description
  )


def seed_files(results_dir: str, prior: str) -> dict[int, str]:
  """{seed: path} of the priors study's published files of `prior`."""
  out = {}
  for path in glob.glob(
    os.path.join(results_dir, os.path.splitext(PRIORS_PAGE)[0], f"{prior}-seed*.npz")
  ):
    match = re.fullmatch(rf"{re.escape(prior)}-seed(\d+)\.npz", os.path.basename(path))
    if match:
      out[int(match.group(1))] = path
  return dict(sorted(out.items()))


def best_seed(results_dir: str, prior: str) -> tuple[int | None, dict]:
  """(the seed with the lowest mean test NLL among `prior`'s files holding the whole static MNIST
  test set, summary {seed_nlls, mean / std over those seeds, excluded seeds and why});
  (None, summary) without one. Files of other test images (a subset, another data set) are
  excluded, so that every candidate is measured on the same images."""
  nlls, excluded = {}, {}
  for seed, path in seed_files(results_dir, prior).items():
    v = values_of(path)
    if v["test_set"] != FULL_TEST_SET:
      excluded[seed] = v["test_set"] or v["test_set_note"]
    else:
      nlls[seed] = v["nll"]
  summary = {"seed_nlls": nlls, "excluded_seeds": excluded}
  if nlls:
    a = np.array(list(nlls.values()))
    summary.update(
      seeds_mean_nll=float(a.mean()), seeds_std_nll=float(a.std(ddof=1)) if len(a) > 1 else None
    )
  return (min(nlls, key=lambda s: (nlls[s], s)) if nlls else None), summary


def build_rows(results_dir: str) -> list[dict]:
  """Every `ROWS` entry with its numbers from its published file, or where that file is missing,
  the file expected and the command that makes it."""
  out = []
  for r in ROWS:
    row = dict(key=r.key, family=r.family, model=r.model, command=r.command)
    row_id = r.row_id
    if r.key.startswith("priors_"):
      prior = r.key[len("priors_") :]
      seed, summary = best_seed(results_dir, prior)
      row.update(summary)
      if seed is not None:
        row_id = f"{prior}-seed{seed}"
        row["seed"] = seed
    path = results.published_per_example_path(os.path.join(results_dir, r.page), row_id)
    row["file"] = path
    if not os.path.exists(path):
      if r.key.startswith("priors_"):
        row["file"] = os.path.join(
          results_dir,
          os.path.splitext(r.page)[0],
          f"{prior}-seed<k>.npz (k = 0..{PRIORS_SEEDS - 1})",
        )
      row.update(status="missing", test_set=None)
      out.append(row)
      continue
    v = values_of(path)
    del v["description"]
    row.update(v, status="ok" if v["test_set"] else "not on the static MNIST test set")
    if v["nll_sem"] is not None:
      row["interval_95"] = [v["nll"] - Z95 * v["nll_sem"], v["nll"] + Z95 * v["nll_sem"]]
    out.append(row)
  return out


def paired_differences(rows: list[dict], results_dir: str) -> list[dict]:
  """Every `PAIRS` entry: NLL(a) - NLL(b) with its paired standard error and 95% interval when
  both rows have values on the same test images; else why not."""
  by_key = {r["key"]: r for r in rows}
  out = []
  for a, b, what in PAIRS:
    ra, rb = by_key[a], by_key[b]
    d = dict(a=a, b=b, what=what)
    missing = [r["model"] for r in (ra, rb) if r["status"] == "missing"]
    if missing:
      d["status"] = (
        f"no per-image values on the static MNIST test set yet for {' and '.join(missing)}"
      )
    elif ra["test_set"] is None or rb["test_set"] is None or ra["test_set"] != rb["test_set"]:
      d["status"] = (
        f"not paired: different test images ({ra['model']}: "
        f"{ra['test_set'] or ra['test_set_note']}; {rb['model']}: "
        f"{rb['test_set'] or rb['test_set_note']})"
      )
    else:
      diff, sem = results.paired_difference(ra["file"], rb["file"])
      d.update(
        status="ok",
        difference=diff,
        sem=sem,
        test_images=ra["test_examples"],
        interval_95=[diff - Z95 * sem, diff + Z95 * sem] if sem is not None else None,
      )
    out.append(d)
  return out


def _num(x, digits=2) -> str:
  return "n/a" if x is None else f"{x:.{digits}f}"


def table_markdown(rows: list[dict], page: str) -> str:
  """The rows; a file's link is relative to the page's folder."""
  lines = [
    "| family | model | test NLL (nats) | ± s.e. | 95% interval | test -ELBO | K | "
    "test images | per-image values |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for r in rows:
    if r["status"] == "missing":
      cells = ["n/a"] * 6 + [
        f"missing: `{r['file']}`; made by `{r['command']}`"
        + (
          "; **excluded** (other test images): "
          + ", ".join(f"seed {s}: {why}" for s, why in r["excluded_seeds"].items())
          if r.get("excluded_seeds")
          else ""
        )
      ]
    else:
      lo_hi = r.get("interval_95")
      cells = [
        _num(r["nll"]),
        _num(r["nll_sem"]),
        f"[{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]" if lo_hi else "n/a",
        _num(r.get("neg_elbo")),
        str(r.get("importance_samples") or "n/a"),
        f"{r['test_examples']:,}",
        f"[{r['file']}]({os.path.relpath(r['file'], os.path.dirname(page) or '.')})"
        + ("" if r["test_set"] else f" (**excluded**: {r['test_set_note']})"),
      ]
    lines.append("| " + " | ".join([r["family"], r["model"]] + cells) + " |")
  return "\n".join(lines) + "\n"


def differences_markdown(pairs: list[dict]) -> str:
  header = ["difference (a - b)"] + results.PAIRED_HEADER
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  for d in pairs:
    cells = results.paired_difference_cells(d)
    lines.append("| " + " | ".join([d["what"]] + cells) + " |")
  return "\n".join(lines) + "\n"


def priors_notes(rows: list[dict]) -> list[str]:
  lines = []
  for r in rows:
    if not r["key"].startswith("priors_") or not (r.get("seed_nlls") or r.get("excluded_seeds")):
      continue
    seeds = ", ".join(f"seed {s}: {v:.2f}" for s, v in r["seed_nlls"].items())
    text = f"- prior {r['key'][len('priors_') :]}: " + (
      f"best seed {r['seed']} of {len(r['seed_nlls'])} on the static MNIST test set ({seeds})"
      if r["seed_nlls"]
      else "no seed on the static MNIST test set"
    )
    if r.get("seeds_std_nll") is not None:
      text += (
        f"; mean over those seeds {r['seeds_mean_nll']:.2f} ± {r['seeds_std_nll']:.2f} "
        "(std over seeds)"
      )
    if r["excluded_seeds"]:
      text += "; excluded (other test images): " + ", ".join(
        f"seed {s} ({why})" for s, why in r["excluded_seeds"].items()
      )
    lines.append(text + ".")
  return lines


def write_plot(rows: list[dict], pairs: list[dict], path: str) -> None:
  """Test NLLs (left) and paired differences (right) with their 95% intervals; rows and pairs
  without values are listed, marked 'no values yet'."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * max(len(rows), len(pairs)) + 1.8))
  for ax, items, label, value, title in (
    (axes[0], rows, lambda r: r["model"], "nll", "test NLL (nats), 95% interval"),
    (
      axes[1],
      pairs,
      lambda d: d["what"],
      "difference",
      "paired difference NLL(a) - NLL(b) (nats), 95% interval",
    ),
  ):
    names = [label(x) for x in items][::-1]
    ax.set_yticks(range(len(names)), names, fontsize=7)
    shown = False
    for i, x in enumerate(items[::-1]):
      v = x.get(value)
      if v is None or (value == "nll" and not x.get("test_set")):
        ax.text(
          0.02,
          i,
          "no values yet"
          if x.get("status", "").startswith(("missing", "no "))
          else "not shown: other test images",
          transform=ax.get_yaxis_transform(),
          va="center",
          fontsize=7,
          color="grey",
        )
        continue
      lo, hi = x.get("interval_95") or (v, v)
      ax.errorbar([v], [i], xerr=[[v - lo], [hi - v]], fmt="o", color="C0", capsize=3, ms=4)
      shown = True
    if value == "difference" and shown:
      ax.axvline(0.0, color="grey", lw=0.8)
    if not shown:  # no number: no axis to read one from
      ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    ax.set_ylim(-0.8, len(names) - 0.2)
  fig.suptitle("Static MNIST test set: per-image values of the results pages", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def write_page(results_dir: str, output: str, *, command: str) -> dict:
  """Builds the rows and differences from the per-image files under `results_dir`, writes the
  page, its JSON and its plot; returns the JSON written."""
  rows = build_rows(results_dir)
  pairs = paired_differences(rows, results_dir)
  stem = os.path.splitext(output)[0]
  plot = stem + ".png"
  os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
  write_plot(rows, pairs, plot)
  data = {"rows": rows, "differences": pairs, "results_dir": results_dir}
  results.write_json(results.rows_path(output), data)
  have = [r for r in rows if r["status"] != "missing"]
  state = f"**{len(have)} of {len(rows)} rows have per-image values.**" + (
    ""
    if have
    else " Every file is still missing: the rows were evaluated before the "
    "suite kept per-image values (or are not evaluated yet), and this page prints no "
    "number it cannot recompute from them."
  )
  notes = [
    state,
    "",
    "## Paired differences",
    "",
    differences_markdown(pairs),
    f"![test NLLs and paired differences with 95% intervals]({os.path.basename(plot)})",
    "",
    "## How the numbers are made",
    "",
    f"- Source: only the per-image files under `{results_dir}/` that the results pages publish "
    "(`results/<page stem>/<row id>.npz`, `experiments.results.write_per_example`: the test "
    "IWAE_K and ELBO of every test image, nats, with a description of how they were made). "
    "Nothing is trained or evaluated here.",
    "- Test NLL: the mean over the test images of -log_likelihood (passes averaged first where a "
    "file holds several); ± s.e.: its standard error over the test images "
    "(`results.per_example_numbers`); 95% interval: mean ± 1.96 s.e. (normal approximation). "
    "K: the importance samples per image of the estimate, from the file's description.",
    "- Paired differences: NLL(a) - NLL(b) (negative: a is better), the mean of the per-image "
    "differences, and the standard error of those differences (`results.paired_difference`), "
    "computed only when both files hold the same test images: the same data file, "
    "binarization and subset by their descriptions and the same number of values "
    f"(all {STATIC_MNIST_TEST_IMAGES:,} images of `binarized_mnist_test.amat`, in file order, "
    "is what every family evaluates when no subset is asked for). Rows on other images are "
    "shown but never paired.",
    "- 2-D priors study: each prior's row is its best seed, the seed whose file gives the lowest "
    "mean test NLL on the static MNIST test set. The choice is made on the test images "
    "themselves, so the best seed's NLL is optimistically biased; the mean and spread over all "
    "its seeds are given below. The study's paper preset trains on the static MNIST training "
    "set and tests on all 10,000 static MNIST test images (`priors_2d_train.load_study_data`, "
    "`binarized_mnist`); its quick preset (`mnist_test`, 2,000 images binarized once from "
    "MNIST's grey test images) is a different test set, and such files are excluded.",
    "- The families differ in model size, training length and K (see each page: "
    "results/vampprior_paper.md, results/nvae_cpu.md, results/priors_2d.md): a difference "
    "between families compares those whole set-ups, not one ingredient.",
    "- A missing file is made when its family's command evaluates the row (the command in its "
    "row). A row already evaluated before per-image values were kept gets its file only from a "
    "new test evaluation: the command reuses the recorded numbers ("
    + "; ".join(f"{f}: {w}" for f, w in REUSED_RECORD.items())
    + "), so that record has to be moved aside first; the NVAE commands evaluate such a row "
    "again by themselves.",
  ]
  seed_lines = priors_notes(rows)
  if seed_lines:
    notes += ["", "## 2-D priors study: seeds", ""] + seed_lines
  notes += ["", f"Code: this page at commit {harness.code_commit() or 'unknown'}."]
  results.write_markdown(
    output,
    title="Test negative log-likelihood on static MNIST, across the model families (nats)",
    command=command,
    table=table_markdown(rows, output),
    notes="\n".join(notes),
  )
  return data


def define_flags():
  """This script's flag (--output); --results_dir is the common flag."""
  flags.DEFINE_string(
    "output",
    os.path.join("results", DEFAULT_OUTPUT),
    "Markdown page to write (its JSON and PNG beside it). Default: "
    f"<--results_dir>/{DEFAULT_OUTPUT}, results/{DEFAULT_OUTPUT} without it.",
  )


def main(argv):
  del argv
  results_dir = FLAGS.results_dir or "results"
  if not os.path.isdir(results_dir):
    raise NotADirectoryError(f"--results_dir {results_dir} is not a folder")
  output = FLAGS.output if FLAGS["output"].present else os.path.join(results_dir, DEFAULT_OUTPUT)
  data = write_page(results_dir, output, command=common.command_line())
  have = sum(r["status"] != "missing" for r in data["rows"])
  print(
    f"wrote {output}: {have} of {len(data['rows'])} rows with per-image values, "
    f"{sum(d['status'] == 'ok' for d in data['differences'])} paired differences",
    file=sys.stderr,
  )


if __name__ == "__main__":
  define_flags()
  common.run(main)
