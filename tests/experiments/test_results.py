"""Results writer and common flags."""

import json
import os

from absl import flags

from experiments import flags as common
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
  results.write_markdown(
    md, title="T", command="python -m x --y", table=table, notes="quick preset"
  )
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
  helps = {f.name: f.help for f in flags.FLAGS.get_flags_for_module(common)}
  for name in (
    "logdir",
    "data_dir",
    "seed",
    "batch_size",
    "epochs",
    "max_steps",
    "strategy",
    "precision",
    "jit_compile",
    "log_every",
  ):
    assert len((helps.get(name) or "").strip()) >= 15, name


def _record(**changes):
  record = {
    "network": "inception-2015",
    "weights_sha256": "ab" * 32,
    "feature": "pool_3",
    "resize": "tf1-legacy-bilinear",
    "precision": "float32",
    "image_size": "28x28x1",
    "image_size_hw": "28x28",
    "image_count": 100,
    "version": "genmodels-tf==0.1.0",
  }
  record.update(changes)
  return record


def test_metric_values_carry_their_protocol_and_the_table_prints_it(tmp_path):
  """A protocol record next to every metric value, printed with the table; values of
  one column made under different protocols are refused, bare metric numbers detected."""
  import pytest

  from evaluation import protocol

  path = str(tmp_path / "rows.json")
  results.append_row(path, {"model": "a", "fid": results.metric(12.3456, _record()), "nll": 85.0})
  results.append_row(
    path,
    {"model": "b", "fid": results.metric(13.0, _record(image_count=50), interval=(12.5, 13.75))},
  )
  rows = results.read_json(path)  # through JSON: the record is stored next to the value
  assert rows[0]["fid"] == {"value": 12.3456, "protocol": _record()}
  table = results.markdown_table(rows, [("model", "Model"), ("fid", "FID"), ("nll", "NLL")])
  lines = table.strip().splitlines()
  assert lines[2] == "| a | 12.35 (p1) | 85.00 |"
  assert lines[3] == "| b | 13.00 [12.50, 13.75] (p2) | n/a |"
  assert lines[5] == (
    "- (p1) protocol: feature=pool_3 image_count=100 image_size=28x28x1 "
    "network=inception-2015 precision=float32 resize=tf1-legacy-bilinear "
    "version=genmodels-tf==0.1.0 weights_sha256=" + "ab" * 32
  )
  assert lines[6].startswith("- (p2) protocol: feature=pool_3 image_count=50 ")
  # A column mixing resize modes (or networks, weights, ...) is not a comparison: an error.
  rows.append(
    {"model": "c", "fid": results.metric(9.0, _record(resize="clean-pil-bicubic-antialias"))}
  )
  with pytest.raises(protocol.ProtocolMismatchError, match="resize tf1-legacy-bilinear vs clean"):
    results.markdown_table(rows, [("model", "Model"), ("fid", "FID")])
  ppl_a = protocol.ppl_record(
    network="lpips-vgg-v0.1",
    weights_sha="cd" * 32,
    feature="lpips",
    image_shape=(28, 28, 1),
    epsilon=1e-4,
    space="z",
    interpolation="slerp",
    sampling="full",
    crop=False,
    num_samples=100,
    seed=0,
  )
  ppl_b = dict(ppl_a, sampling="end")
  with pytest.raises(protocol.ProtocolMismatchError, match="sampling full vs end"):
    results.markdown_table(
      [{"ppl": results.metric(1.0, ppl_a)}, {"ppl": results.metric(2.0, ppl_b)}], [("ppl", "PPL")]
    )
  results.markdown_table(
    [
      {"ppl": results.metric(1.0, ppl_a)},  # seed / count: recorded only
      {"ppl": results.metric(2.0, dict(ppl_a, seed=1, num_samples=5))},
    ],
    [("ppl", "PPL")],
  )
  # No value without a record; bare numbers under metric keys are found.
  with pytest.raises(ValueError, match="protocol record"):
    results.metric(1.0, None)
  results.require_protocols(rows)
  with pytest.raises(ValueError, match="fid_256 = 3.5 carries no protocol record"):
    results.require_protocols([{"nll": 80.0, "fid_256": 3.5}])
