"""Results writer: JSON rows (one file per run) and Markdown tables for `results/`.

Every write is atomic (temp file + rename): an interrupted run never truncates earlier results.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence


def write_json(path: str, data: Any):
  """Writes `data` as JSON atomically."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(data, f, indent=2, sort_keys=True, default=_jsonable)
  os.replace(path + ".tmp", path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def append_row(path: str, row: Mapping[str, Any]):
  """Appends one row to a JSON list file (created if missing)."""
  rows = read_json(path) if os.path.exists(path) else []
  rows.append(dict(row))
  write_json(path, rows)


def _jsonable(value):
  try:
    return float(value)
  except (TypeError, ValueError):
    return str(value)


def format_value(value: Any, digits: int = 2) -> str:
  """Numbers with `digits` decimals; (mean, std) pairs as `mean ± std`; None as `n/a`."""
  if value is None:
    return "n/a"
  if isinstance(value, (tuple, list)) and len(value) == 2:
    return f"{format_value(value[0], digits)} ± {format_value(value[1], digits)}"
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
                   *, digits: int = 2) -> str:
  """A Markdown table; `columns` are (row key, header) pairs; missing keys show as `n/a`."""
  lines = ["| " + " | ".join(h for _, h in columns) + " |",
           "| " + " | ".join("---" for _ in columns) + " |"]
  for row in rows:
    lines.append("| " + " | ".join(format_value(row.get(k), digits) for k, _ in columns) + " |")
  return "\n".join(lines) + "\n"


def write_markdown(path: str, *, title: str, command: str, table: str, notes: str = ""):
  """Writes a results page: title, the command that produced it, the table, then notes."""
  text = f"# {title}\n\nProduced by:\n\n```\n{command}\n```\n\n{table}\n{notes.strip()}\n"
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
