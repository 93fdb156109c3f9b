"""Results writer and common flags."""

import json
import os
import subprocess
import sys

from experiments import results


def test_rows_and_markdown(tmp_path):
  path = str(tmp_path / "rows.json")
  results.append_row(path, {"model": "a", "nll": 85.123, "fid": None})
  results.append_row(path, {"model": "b", "nll": (84.5, 0.25)})
  rows = results.read_json(path)
  assert [r["model"] for r in rows] == ["a", "b"]
  table = results.markdown_table(rows, [("model", "Model"), ("nll", "NLL"), ("fid", "FID")])
  lines = table.strip().splitlines()
  assert lines[0] == "| Model | NLL | FID |"
  assert lines[2] == "| a | 85.12 | n/a |"
  assert lines[3] == "| b | 84.50 ± 0.25 | n/a |"
  md = str(tmp_path / "t.md")
  results.write_markdown(md, title="T", command="python -m x --y", table=table, notes="quick preset")
  text = open(md).read()
  assert "python -m x --y" in text and "quick preset" in text and not os.path.exists(md + ".tmp")


def test_failed_write_keeps_previous_results(tmp_path):
  class Unwritable:
    def __str__(self):
      raise RuntimeError("disk full")

  path = str(tmp_path / "r.json")
  results.write_json(path, {"a": 1})
  try:
    results.write_json(path, {"a": 2, "b": Unwritable()})
  except RuntimeError:
    pass
  assert json.load(open(path)) == {"a": 1}


def test_common_flags_documented():
  code = ("from absl import flags; import experiments.flags; "
          "print(flags.FLAGS.get_help(include_special_flags=False))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
  for name in ("logdir", "data_dir", "seed", "batch_size", "epochs", "max_steps", "preset",
               "strategy", "precision", "jit_compile", "log_every"):
    assert f"--{name}" in out or f"--[no]{name}" in out, name
