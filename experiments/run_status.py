"""How far long runs got: a results page from the harness's `status.json` files.

    python -m experiments.run_status --logdir ../runs/nvae_cpu,../runs/sample_quality_cpu \
        --output results/runs_in_progress.md

Each `--logdir` is a run directory (holding the `status.json` that `experiments.harness.Trainer`
writes at every checkpoint) or a folder whose sub-folders are run directories (searched two levels
deep). One row per run: finished, stopped early or how far training got (epoch and step of the
total), the best validation epoch where early stopping is on, the training time summed over resumed
sessions, the CPU, the commits the training ran at, and how far a resumable test-NLL evaluation
has got (the test images its `nll_partial*.npz` files hold, `evaluation.likelihood`). No test
numbers: those are on each experiment's own page once its run is finished and evaluated. Reads
files only (no TensorFlow).

Bad input (no such folder, no status.json found, bad flags) -> one `error:` line, exit code 2.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from common_tf import host
from evaluation import cli
from experiments import results

COLUMNS = [
  ("run", "run"),
  ("state", "training"),
  ("epoch", "epoch"),
  ("step", "step"),
  ("best_epoch", "best epoch"),
  ("best_metric", "best validation value"),
  ("train_hours", "train h"),
  ("cpu", "CPU"),
  ("updated", "updated"),
  ("code_commits", "training commits"),
  ("evaluation", "test NLL evaluation"),
]


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_list(
    "logdir",
    None,
    "Run directories (comma-separated) holding status.json, or "
    "folders whose sub-folders (two levels deep) are run directories.",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "output",
    None,
    "Markdown page to write (its folder must exist); without it the table is printed only.",
    flag_values=fv,
  )


def find_runs(root: str) -> list[str]:
  """`root` itself if it holds status.json, else its sub-folders (two levels) that do; sorted."""
  if not os.path.isdir(root):
    raise ValueError(f"--logdir {root} is not a folder")
  if os.path.isfile(os.path.join(root, results.STATUS_FILE)):
    return [root]
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    depth = os.path.relpath(dirpath, root).count(os.sep) + (dirpath != root)
    if results.STATUS_FILE in filenames and dirpath != root:
      found.append(dirpath)
      dirnames[:] = []  # a run's own sub-folders (checkpoints, best) hold no runs
    if depth >= 2:
      dirnames[:] = []
  return sorted(found)


def status_row(logdir: str) -> dict:
  """One page row from a run's status.json."""
  s = results.read_status(logdir)
  if s.get("finished"):
    state = "finished"
  elif s.get("stopped_early"):
    state = "stopped early (training done)"
  else:
    state = "training (resume: rerun its command)"
  total_epochs, total_steps = s.get("total_epochs"), s.get("total_steps")
  return dict(
    run=logdir,
    state=state,
    epoch=f"{s['epoch']:.2f} of {total_epochs}" if total_epochs else f"{s['epoch']:.2f}",
    step=f"{s['step']} of {total_steps}" if total_steps else str(s["step"]),
    best_epoch=s.get("best_epoch"),
    best_metric=None if s.get("best_metric") is None else f"{s['best_metric']:.2f}",
    train_hours=round(s.get("train_seconds", 0.0) / 3600, 2),
    cpu="; ".join(
      host.merge_in_order(results.status_cpus(s), results.partial_evaluation_hosts(logdir))
    )
    or None,
    updated=s.get("updated"),
    code_commits=", ".join(s.get("code_commits") or []) or None,
    evaluation=evaluation_progress(logdir),
  )


def evaluation_progress(logdir: str) -> str | None:
  """'<n> test images done (<file>)' per partial test-NLL evaluation in the run, or None."""
  return (
    "; ".join(
      f"{n:,} test images done ({name})" for name, n in results.partial_evaluations(logdir).items()
    )
    or None
  )


def main(argv: list[str] | None = None) -> int:
  """`python -m experiments.run_status ...`; returns the exit code (2 on bad input)."""
  fv, args, code = cli.parse_command(
    argv, doc=__doc__, define_flags=define_flags, required=("logdir",)
  )
  if code is not None:
    return code
  try:
    cli.check_output_path(fv.output)
    runs = [run for root in fv.logdir for run in find_runs(root)]
    if not runs:
      raise ValueError(f"no {results.STATUS_FILE} under {', '.join(fv.logdir)}")
    rows = [status_row(run) for run in runs]
  except (ValueError, OSError, KeyError) as e:
    return cli.fail(e)
  table = results.markdown_table(rows, COLUMNS)
  print(table)
  if fv.output:
    command = "python -m experiments.run_status " + " ".join(args)
    results.write_markdown(
      fv.output,
      title="Long runs: how far they got",
      command=command,
      table=table,
      notes="From each run's status.json (written by experiments.harness at every checkpoint). "
      "'best validation value' is the early-stopping metric at the best epoch (VampPrior: "
      "validation -ELBO, nats). 'train h' is the harness's training clock summed over resumed sessions (epoch-end "
      "hooks such as validation passes included). This page says how far training got, "
      "and how many test images a resumable test-NLL evaluation has done while it is "
      "part way; whether a trained run has been evaluated, and its test "
      "numbers, are on its experiment's own page. Rerunning a run's command resumes it "
      "from its newest checkpoint on a machine that holds its folder; on another machine, "
      "first `python -m experiments.carry --unpack` its packed state (docs/harness.md).",
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
