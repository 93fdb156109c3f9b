"""Results writer: JSON rows (one file per run) and Markdown tables for `results/`.

Every write is atomic (temp file + rename): an interrupted run never truncates earlier results.

A metric value (FID, KID, IS, precision/recall, PPL) is stored with the protocol record it was made
under (`evaluation.protocol`): `row["fid"] = metric(value, record)` gives
`{"value": v, "protocol": {...}}` (plus `"interval": [lo, hi]` from `--subsamples`). `markdown_table`
prints the value with a marker `(p1)` and, under the table, one `protocol:` line per distinct
record; a column whose values were made under different protocols (network, weights, resize,
epsilon, ...: `evaluation.protocol.COMPARED`) is refused with `ProtocolMismatchError`.
`require_protocols(rows)` refuses bare numbers under metric keys.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from common_tf import host
from evaluation import protocol as protocol_lib

STATUS_FILE = "status.json"  # how far a run got: `harness.Trainer` writes it at every checkpoint
# A run's weights-only checkpoints (`harness.Trainer.weights`): the best validation (early
# stopping), and those of a finished run.
BEST_DIR, FINAL_DIR = "best", "final"

# Row keys holding metric values that need a protocol record ("fid", "fid_256", "ppl_lpips", ...).
METRIC_PREFIXES = ("fid", "kid", "is", "inception_score", "precision", "recall", "ppl")


def write_json(path: str, data: Any):
  """Writes `data` as JSON atomically."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(data, f, indent=2, sort_keys=True, default=_jsonable)
  os.replace(path + ".tmp", path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def rows_path(page: str) -> str:
  """The JSON rows written beside a table page (`results/x.md` -> `results/x.json`)."""
  return os.path.splitext(page)[0] + ".json"


def read_rows(page: str) -> list[dict]:
  """The JSON rows of the table page at `page` as last written; [] when there are none. The JSON
  is the list of rows, or an object whose "rows" are that list (beside what else the page keeps,
  e.g. its paired differences)."""
  path = rows_path(page)
  data = read_json(path) if os.path.exists(path) else []
  return data["rows"] if isinstance(data, dict) else data


# The status of a finished row whose run folder is not on this machine, kept from the page's JSON
# (`kept_row`).
FINISHED_ELSEWHERE = "finished; run folder not on this machine"
KEPT_STATUS = f"{FINISHED_ELSEWHERE} (row kept from the page's JSON)"


def is_finished(row: Mapping[str, Any]) -> bool:
  """Whether a page row is a finished run's: its status is 'finished', or says it was kept
  (`KEPT_STATUS`)."""
  return str(row.get("status") or "").startswith("finished")


def kept_row(
  earlier_rows: Iterable[Mapping[str, Any]], logdir: str, settings: Mapping[str, Any]
) -> dict | None:
  """The finished row of an earlier writing of a page (`earlier_rows`, its JSON: `read_rows`) made
  with `settings` (every key equal), for a run with no folder on this machine (no status.json in
  `logdir`), its status saying so (`KEPT_STATUS`); None otherwise.

  A finished run's numbers are on the page, but its run folder stays on the machine that ran it:
  on a new machine the folder is gone, and the page's command would otherwise lose the row (with
  --report_only) or train and evaluate the run again. The kept row keeps the numbers, commits and
  CPU it was made with; a local run of the same settings, started or finished, replaces it.
  """
  if read_status(logdir):
    return None
  for row in earlier_rows:
    if is_finished(row) and all(row.get(k) == v for k, v in settings.items()):
      return dict(row, status=KEPT_STATUS)
  return None


def append_row(path: str, row: Mapping[str, Any]):
  """Appends one row to a JSON list file (created if missing)."""
  rows = read_json(path) if os.path.exists(path) else []
  rows.append(dict(row))
  write_json(path, rows)


def metric(
  value: float, protocol: Mapping[str, Any], *, interval: Sequence[float] | None = None
) -> dict:
  """A metric value with its protocol record: {"value", "protocol"[, "interval"]}."""
  if not isinstance(protocol, Mapping) or not protocol:
    raise ValueError(
      f"a metric value needs its protocol record (evaluation.protocol), got {protocol!r}"
    )
  out = {"value": float(value), "protocol": dict(protocol)}
  if interval is not None:
    out["interval"] = [float(interval[0]), float(interval[1])]
  return out


def is_metric(value: Any) -> bool:
  return isinstance(value, Mapping) and "value" in value and "protocol" in value


def is_metric_key(key: str) -> bool:
  return any(key == p or key.startswith(p + "_") for p in METRIC_PREFIXES)


def require_protocols(rows: Iterable[Mapping[str, Any]]) -> None:
  """ValueError if a metric key (METRIC_PREFIXES) holds a number without its protocol record."""
  for i, row in enumerate(rows):
    for key, value in row.items():
      if is_metric_key(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(
          f"row {i}: {key} = {value} carries no protocol record; store it as "
          "results.metric(value, protocol)"
        )


def _jsonable(value):
  try:
    return float(value)
  except (TypeError, ValueError):
    return str(value)


def format_value(value: Any, digits: int = 2) -> str:
  """Numbers with `digits` decimals; (mean, std) pairs as `mean ± std`; None as `n/a`."""
  if value is None:
    return "n/a"
  if is_metric(value):
    text = format_value(value["value"], digits)
    if value.get("interval") is not None:
      lo, hi = value["interval"]
      text += f" [{format_value(float(lo), digits)}, {format_value(float(hi), digits)}]"
    return text
  if isinstance(value, (tuple, list)) and len(value) == 2:
    return f"{format_value(value[0], digits)} ± {format_value(value[1], digits)}"
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(
  rows: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]], *, digits: int = 2
) -> str:
  """A Markdown table; `columns` are (row key, header) pairs; missing keys show as `n/a`.

  Metric cells (`metric(...)`) show `value (pN)`; the distinct protocol records follow the table as
  `- (pN) protocol: ...` lines. Values of one column made under different protocols are an error
  (`evaluation.protocol.ProtocolMismatchError`).
  """
  rows = list(rows)
  lines = [
    "| " + " | ".join(h for _, h in columns) + " |",
    "| " + " | ".join("---" for _ in columns) + " |",
  ]
  markers: dict[str, int] = {}
  for key, header in columns:
    cells = [(i, row[key]) for i, row in enumerate(rows, 1) if is_metric(row.get(key))]
    for i, cell in cells[1:]:
      try:
        protocol_lib.check_compatible(
          cells[0][1]["protocol"],
          cell["protocol"],
          names=(f"{header!r} of row {cells[0][0]}", f"{header!r} of row {i}"),
        )
      except protocol_lib.ProtocolMismatchError as e:  # no --nostrict_protocol for a table
        raise protocol_lib.ProtocolMismatchError(str(e).split(" (pass --")[0]) from None
  for row in rows:
    texts = []
    for key, _ in columns:
      cell = row.get(key)
      text = format_value(cell, digits)
      if is_metric(cell):
        line = protocol_lib.describe_record(cell["protocol"])
        text += f" (p{markers.setdefault(line, len(markers) + 1)})"
      texts.append(text)
    lines.append("| " + " | ".join(texts) + " |")
  table = "\n".join(lines) + "\n"
  if markers:
    table += "\n" + "".join(f"- (p{n}) {line}\n" for line, n in markers.items())
  return table


def write_markdown(path: str, *, title: str, command: str, table: str, notes: str = ""):
  """Writes a results page: title, the command that produced it, the table, then notes."""
  text = f"# {title}\n\nProduced by:\n\n```\n{command}\n```\n\n{table}\n{notes.strip()}\n"
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def read_status(logdir: str) -> dict | None:
  """The `status.json` a `harness.Trainer` keeps in `logdir` (step, epoch, totals, finished, best
  epoch, training seconds, CPU, commits), or None when the run never reached a checkpoint."""
  path = os.path.join(logdir, STATUS_FILE)
  return read_json(path) if os.path.exists(path) else None


def status_cpus(status: Mapping[str, Any] | None) -> list[str]:
  """The CPUs a run trained on, oldest first: its status.json's `cpus` (accumulated over resumed
  invocations), or the single `cpu` of a file written before that list existed (2026-12-02; such a
  file names only its newest invocation's CPU)."""
  if not status:
    return []
  return list(status.get("cpus") or ([status["cpu"]] if status.get("cpu") else []))


def row_cpus(rows: Iterable[Mapping[str, Any]]) -> list[str]:
  """Every CPU the rows name (their `cpus`, or the `cpu` of rows written before 2026-12-02), each
  once, sorted: the host line of a results page."""
  return sorted(set(host.merge_in_order(*(status_cpus(r) for r in rows))))


def partial_evaluation_hosts(logdir: str) -> list[str]:
  """The hosts that ran the batches of the partial test-NLL evaluations in `logdir` (the resume
  files of `evaluation.likelihood`; `resume_cache.UNRECORDED_HOST` for batches of older files)."""
  from evaluation import resume_cache

  hosts = []
  for name in partial_evaluations(logdir):
    hosts = host.merge_in_order(hosts, resume_cache.resume_file_hosts(os.path.join(logdir, name)))
  return hosts


def partial_evaluations(logdir: str) -> dict[str, int]:
  """{file name: test examples done} of the resumable test-NLL evaluations part way in `logdir`
  (`evaluation.likelihood.evaluate_log_likelihood`'s `nll_partial*.npz`, deleted when one
  completes); empty when there is none."""
  names = sorted(
    n
    for n in os.listdir(logdir)
    if n.startswith("nll_partial") and n.endswith(".npz") and not n.endswith(".tmp.npz")
  )
  done = {}
  for name in names:
    with np.load(os.path.join(logdir, name)) as f:
      done[name] = len(f["log_px"])
  return done


# ----------------------------------------------------------------------------- per-image values
#
# Every published likelihood row keeps the per-example values it was computed from, so that anyone
# can recompute the page's mean and standard error (and paired differences between rows on the
# same test images): the run writes them to its folder (`PER_EXAMPLE_FILE`), and the page writer
# copies them beside the page, `results/<page stem>/<row id>.npz`, and prints the numbers these
# arrays give (`per_example_numbers`), also with --report_only.

PER_EXAMPLE_FILE = "test_per_example.npz"  # <run folder>/test_per_example.npz


def write_per_example(path: str, *, log_likelihood, elbo=None, **description) -> None:
  """Writes per-example test values atomically as float32: `log_likelihood` (nats, [N], or
  [passes, N] for several passes over the same images; IWAE_K or an exact log-density) and, when
  given, `elbo` of the same shape; `description` (JSON-able: K, the checkpoint, what the values
  are) is stored beside them."""
  arrays = {"log_likelihood": np.asarray(log_likelihood, np.float32)}
  if elbo is not None:
    arrays["elbo"] = np.asarray(elbo, np.float32)
    if arrays["elbo"].shape != arrays["log_likelihood"].shape:
      raise ValueError(
        f"elbo {arrays['elbo'].shape} and log_likelihood "
        f"{arrays['log_likelihood'].shape} differ in shape"
      )
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, description=json.dumps(description, sort_keys=True, default=_jsonable), **arrays)
  os.replace(tmp, path)


def read_per_example(path: str) -> dict[str, Any]:
  """{"log_likelihood": float32 array, "elbo": array or None, "description": dict}."""
  with np.load(path) as f:
    return {
      "log_likelihood": f["log_likelihood"],
      "elbo": f["elbo"] if "elbo" in f.files else None,
      "description": json.loads(str(f["description"])),
    }


def mean_and_sem(values) -> tuple[float, float | None]:
  """Mean of `values` [N] (in float64) and its standard error over the N values (ddof = 1; None
  for one value)."""
  v = np.asarray(values, np.float64).ravel()
  return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None)


def per_example_numbers(path: str) -> dict[str, Any]:
  """What a page prints of a likelihood row, from its per-example file: `nll` (mean of
  -log_likelihood over examples and passes), `nll_sem` (standard error over the test examples,
  averaged over passes), `neg_elbo`, `test_examples`, and `nll_passes` (one mean per pass)."""
  values = read_per_example(path)
  ll = np.atleast_2d(np.asarray(values["log_likelihood"], np.float64))  # [passes, N]
  passes = [mean_and_sem(-p) for p in ll]
  sems = [s for _, s in passes if s is not None]
  out = {
    "nll": float(np.mean([m for m, _ in passes])),
    "nll_sem": float(np.mean(sems)) if sems else None,
    "test_examples": int(ll.shape[1]),
    "nll_passes": [m for m, _ in passes],
  }
  if values["elbo"] is not None:
    out["neg_elbo"] = float(-np.asarray(values["elbo"], np.float64).mean())
  return out


def published_per_example_path(page: str, row_id: str) -> str:
  """Where a page keeps a row's per-example values: `results/<page stem>/<row id>.npz`."""
  return os.path.join(os.path.splitext(page)[0], f"{row_id}.npz")


def publish_per_example(run_dir: str, page: str, row_id: str) -> str | None:
  """Copies the run's `PER_EXAMPLE_FILE` beside `page` (`published_per_example_path`) and returns
  that path; None when the run has none (an evaluation made before they were kept, or none yet).
  An already published file is replaced only by the run's (same row, newer evaluation)."""
  source = os.path.join(run_dir, PER_EXAMPLE_FILE)
  if not os.path.exists(source):
    return None
  target = published_per_example_path(page, row_id)
  os.makedirs(os.path.dirname(target), exist_ok=True)
  shutil.copyfile(source, target + ".tmp")
  os.replace(target + ".tmp", target)
  return target


def with_per_example_numbers(
  row: Mapping[str, Any], page: str, row_id: str, *, num_dims: int | None = None
) -> dict:
  """`row` with its likelihood numbers replaced by what its published per-example file gives
  (`per_example_numbers`; `bits_per_dim` too when `num_dims` is given), and `per_example` naming
  that file relative to the page's folder; unchanged but for `per_example: None` when the page
  has no such file."""
  path = published_per_example_path(page, row_id)
  if not os.path.exists(path):
    return dict(row, per_example=None)
  numbers = per_example_numbers(path)
  if num_dims:
    numbers["bits_per_dim"] = numbers["nll"] / (num_dims * math.log(2.0))
  return dict(row, **numbers, per_example=os.path.relpath(path, os.path.dirname(page) or "."))


Z95 = 1.959963984540054  # two-sided 95% normal quantile: a 95% interval is mean ± Z95 s.e.


PAIRED_HEADER = ["NLL(a) - NLL(b) (nats)", "paired s.e.", "95% interval", "test images", "status"]


def paired_difference_cells(d: dict) -> list[str]:
  """The five table cells of one paired difference (`PAIRED_HEADER`): a pair with status "ok"
  (`difference`, `sem`, `interval_95`, `test_images`) prints its numbers, any other its status."""
  if d["status"] != "ok":
    return ["n/a"] * 4 + [d["status"]]
  lo_hi = d["interval_95"]
  return [
    f"{d['difference']:+.2f}",
    "n/a" if d["sem"] is None else f"{d['sem']:.2f}",
    f"[{lo_hi[0]:+.2f}, {lo_hi[1]:+.2f}]" if lo_hi else "n/a",
    f"{d['test_images']:,}",
    "paired over the same test images",
  ]


def paired_difference(path_a: str, path_b: str) -> tuple[float, float]:
  """NLL(a) - NLL(b), averaged over the same test images, and its paired standard error (the
  standard error of the per-image differences, passes averaged per image first): the two files
  must hold values of the same images in the same order."""
  a, b = (
    np.atleast_2d(np.asarray(read_per_example(p)["log_likelihood"], np.float64)).mean(0)
    for p in (path_a, path_b)
  )
  if a.shape != b.shape:
    raise ValueError(
      f"{path_a} and {path_b} hold {a.shape[0]} and {b.shape[0]} images: not the same test images"
    )
  mean, sem = mean_and_sem(b - a)  # -log p(x) of a minus that of b
  return mean, sem
