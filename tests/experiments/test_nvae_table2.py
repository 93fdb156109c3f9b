"""experiments.nvae_table2: the PPL columns (VGG-16 and LPIPS-VGG) with and without weights,
with a tiny NVAE and a narrow random LPIPS network (never used for reported numbers)."""

import numpy as np
import pytest

from evaluation import lpips, ppl
from experiments import nvae_table2
from nvae_tf import NVAE
from tests.nvae_tf.conftest import one_scale_config


def _random_lpips_file(path, *, width_divisor=16, seed=0):
  rng = np.random.default_rng(seed)
  weights = {
    key: (rng.uniform(0, 1, shape) if key.startswith("lin") else rng.normal(0, 0.3, shape)).astype(
      np.float32
    )
    for key, shape in lpips.weight_shapes(width_divisor).items()
  }
  lpips.save_weights(path, weights)


def test_ppl_lpips_column_is_unavailable_without_weights_and_a_number_with_them(
  tmp_path, monkeypatch
):
  monkeypatch.delenv(lpips.LPIPS_PATH_ENV, raising=False)
  model = NVAE(one_scale_config())
  missing = nvae_table2.load_lpips(None)
  assert missing[0] is None and "--lpips_path" in missing[1]
  value = nvae_table2.path_length(
    model,
    missing,
    make_distance=ppl.lpips_distance,
    missing="no LPIPS-VGG weights: pass --lpips_path",
    num_samples=4,
    temperature=1.0,
    seed=0,
    label="lpips-vgg-v0.1",
    feature="lpips",
  )
  assert value == "unavailable (no LPIPS-VGG weights: pass --lpips_path)"

  _random_lpips_file(tmp_path / "lpips.npz")
  network = nvae_table2.load_lpips(str(tmp_path / "lpips.npz"))
  assert network[1] is None
  value = nvae_table2.path_length(
    model,
    network,
    make_distance=ppl.lpips_distance,
    missing="unused",
    num_samples=4,
    temperature=1.0,
    seed=0,
    label="lpips-vgg-v0.1",
    feature="lpips",
  )
  assert np.isfinite(value["value"]) and value["value"] >= 0.0
  record = value["protocol"]  # the value carries the protocol it was made under
  assert (record["metric"], record["network"], record["feature"], record["epsilon"]) == (
    "ppl",
    "lpips-vgg-v0.1",
    "lpips",
    1e-4,
  )
  assert (record["num_samples"], record["image_size"], record["space"]) == (4, "28x28x1", "z")

  # A malformed file is an error (exit 2 through experiments.flags.run), not "unavailable".
  (tmp_path / "bad.npz").write_bytes(b"not an npz")
  with pytest.raises(ValueError, match="not a readable .npz"):
    nvae_table2.load_lpips(str(tmp_path / "bad.npz"))


def test_rows_and_page_record_the_data_set_and_its_binarization(tmp_path, monkeypatch):
  """main() without feature weights: nothing is measured, the rows and page say which data the
  Table 1 models were trained on (training itself is stubbed out: the Splits it would return)."""
  import json
  import types

  import tensorflow as tf

  from experiments import nvae_train
  from tests import scripts

  monkeypatch.delenv(lpips.LPIPS_PATH_ENV, raising=False)
  monkeypatch.setattr(nvae_train, "load_network", lambda kind, **kw: (None, f"no {kind} (test)"))
  splits = nvae_train.Splits(
    dataset="mnist", dynamic=True, train=None, test=np.zeros((2, 28, 28, 1), np.float32)
  )
  monkeypatch.setattr(
    nvae_train,
    "train",
    lambda s, config, **kw: types.SimpleNamespace(
      splits=splits, model=None, trainer=types.SimpleNamespace(step=tf.constant(7))
    ),
  )
  page = tmp_path / "table2.md"
  proc = scripts.run_script(
    "nvae_table2",
    [
      "--preset=quick",
      "--table_rows=step_sr",
      f"--table_logdir={tmp_path / 'runs'}",
      f"--table_output={page}",
    ],
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = json.load(open(tmp_path / "runs" / "table2.json"))
  assert [(r["dataset"], r["binarization"], r["steps"]) for r in rows] == [("mnist", "dynamic", 7)]
  assert "(restored, trained first if missing), trained on mnist (dynamic binarization)." in (
    page.read_text()
  )
