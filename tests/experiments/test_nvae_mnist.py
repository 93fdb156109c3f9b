"""experiments.nvae_mnist / nvae_table1: smoke run with resume, the loss function's warm-up clocks,
bad data directories, and the table's metric plumbing (with small stand-in networks)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import data
from experiments import harness
from experiments import nvae_evaluate
from experiments import nvae_mnist
from experiments import nvae_table1
from nvae_tf import NVAE
from nvae_tf import model as nvae_model
from tests.nvae_tf.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def digits():
  return data.load_arrays("binarized_mnist", "test")[0][:8]


def tiny_settings(**changes):
  values = dict(model=tiny_config(spectral="sr"), dataset="binarized_mnist", warmup_epochs=1,
                train_examples=64, test_examples=8, num_iw_samples=4, iw_chunk=4, eval_batch_size=8,
                num_test_passes=1)
  values.update(changes)
  return nvae_mnist.RunSettings(**values)


def tiny_train_config(logdir, max_steps):
  return harness.TrainConfig(logdir=str(logdir), batch_size=32, epochs=2, max_steps=max_steps,
                             seed=0, log_every=1, progress=False)


@pytest.mark.slow
def test_run_trains_evaluates_and_resumes(tmp_path):
  strategy = tf.distribute.get_strategy()
  s = tiny_settings()
  row, trained = nvae_mnist.train_and_evaluate(s, tiny_train_config(tmp_path, 2), strategy=strategy)
  assert row["steps"] == 2 and np.isfinite(row["nll"]) and row["nll"] > 0
  assert row["bits_per_dim"] == pytest.approx(row["nll"] / (784 * np.log(2)))
  assert len(row["nll_passes"]) == 1 and row["test_examples"] == 8
  assert row["dataset"] == "binarized_mnist" and row["binarization"] == "static"
  for name in ("samples.png", "samples.npz", "results.json"):
    assert os.path.exists(tmp_path / name)
  assert json.load(open(tmp_path / "results.json"))["nll"] == pytest.approx(row["nll"])
  # A second invocation resumes at step 2 (optimizer and SR power-iteration state restored).
  u_before = [v.numpy() for v in trained.model.non_trainable_variables if v.path.endswith("/u")]
  resumed = nvae_mnist.train(s, tiny_train_config(tmp_path, 3), strategy=strategy)
  assert int(resumed.trainer.step.numpy()) == 3
  assert int(resumed.trainer.optimizer.iterations.numpy()) == 3
  assert u_before and not np.allclose(
      u_before[0], [v.numpy() for v in resumed.model.non_trainable_variables
                    if v.path.endswith("/u")][0])  # advanced by the third step
  assert json.load(open(tmp_path / "train_time.json"))["step"] == 3

  # experiments.nvae_evaluate restores the run: the architecture from settings.json, the weights and
  # BN statistics of the latest checkpoint (the harness checkpoint format).
  restored_settings = nvae_evaluate.run_settings(str(tmp_path))
  assert restored_settings == s
  model, path = nvae_evaluate.restore_run(str(tmp_path), "latest", restored_settings, seed=0)
  assert path.endswith("ckpt-3")
  for ours, theirs in zip(model.variables, resumed.model.variables):
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)


def test_evaluate_readjusts_bn_per_temperature_from_the_trained_statistics(tmp_path, digits):
  """nvae_evaluate.evaluate: NLL with the training BN statistics, then per temperature a fresh
  re-estimation (official set_bn, 16-sample batches) starting from them, restored at the end."""
  s = tiny_settings()
  model = NVAE(s.model)
  for bn in model.bn_layers:  # distinct "trained" statistics
    bn.moving_variance.assign(bn.moving_variance + 0.5)
  splits = nvae_mnist.Splits(dataset="binarized_mnist", dynamic=False, train=None, test=digits[:8])
  trained_bn = nvae_evaluate.bn_statistics(model)
  settings = nvae_evaluate.EvalSettings(temperatures=(0.6, 1.0), num_iw_samples=4, readjust_bn_steps=2,
                                        num_grid_images=4, fid_samples=4)
  seen = []
  original = model.readjust_bn

  def readjust(**kwargs):  # records the BN statistics each re-estimation starts from
    seen.append((kwargs, nvae_evaluate.bn_statistics(model)))
    original(**kwargs)
  model.readjust_bn = readjust
  out = nvae_evaluate.evaluate(model, s, splits, settings, output_dir=str(tmp_path / "ev"), seed=0,
                               progress=False)
  assert [k for k, _ in seen] == [dict(num_iterations=2, temperature=0.6),
                                  dict(num_iterations=2, temperature=1.0)]
  for stats in [start for _, start in seen] + [nvae_evaluate.bn_statistics(model)]:
    for (mean, var), (mean0, var0) in zip(stats, trained_bn):
      np.testing.assert_array_equal(mean, mean0)
      np.testing.assert_array_equal(var, var0)
  assert np.isfinite(out["nll"]) and out["num_iw_samples"] == 4 and out["test_examples"] == 8
  assert sorted(out["temperatures"]) == ["0.6", "1"]
  assert str(out["temperatures"]["1"]["fid"]).startswith("unavailable")
  for t in ("0.6", "1"):
    assert os.path.exists(tmp_path / "ev" / f"samples_t{t}.png")
  assert nvae_model.READJUST_BN_BATCH == 16
  assert nvae_evaluate.parse_temperatures(["0.6", "1"]) == (0.6, 1.0)
  with pytest.raises(ValueError, match="> 0"):
    nvae_evaluate.parse_temperatures(["0.6", "-1"])


def test_validation_nll_period_and_values(digits):
  """Official train.py: eval_freq = 1 if epochs <= 50 else 20, and after the last epoch; K = 10."""
  s = tiny_settings()
  assert [nvae_mnist.validation_period(s, e) for e in (50, 51)] == [1, 20]
  assert nvae_mnist.validation_period(tiny_settings(val_every_epochs=0), 400) == 0
  model = NVAE(s.model)
  fn = nvae_mnist.make_epoch_end_fn(digits[:2], val_images=digits[:4], val_every=2,
                                    val_num_iw_samples=3, epochs=4, eval_batch_size=4)
  with tf.summary.create_noop_writer().as_default(step=0):
    logged = [sorted(fn(model, epoch)) for epoch in range(4)]
  with_val = sorted(["test_batch_neg_elbo", "val_bpd_log_p", "val_nelbo", "val_neg_log_p"])
  assert logged == [with_val, ["test_batch_neg_elbo"], with_val, with_val]
  with tf.summary.create_noop_writer().as_default(step=0):
    values = fn(model, 3)
  assert values["val_bpd_log_p"] == pytest.approx(values["val_neg_log_p"] / (784 * np.log(2)))
  assert 0 < values["val_neg_log_p"] <= values["val_nelbo"] + 1e-3


def fake_context(step, epoch):
  return harness.StepContext(step=tf.constant(step, tf.int64), epoch=tf.constant(epoch, tf.int64),
                             steps_per_epoch=10, total_steps=100, total_epochs=10,
                             global_batch_size=8, num_replicas=1)


@pytest.mark.parametrize("clock", ["step", "epoch"])
def test_loss_fn_warmup_clock(clock, digits):
  s = tiny_settings(kl_warmup=clock, model=tiny_config())
  model = NVAE(s.model)
  loss_fn = nvae_mnist.make_loss_fn(s, model)
  x = tf.constant(digits[:4])
  betas = [float(loss_fn(model, x, fake_context(step, step // 10)).metrics["beta"])
           for step in (21, 28, 99)]
  if clock == "step":   # (t - 0.01) / 30 on the step counter
    assert betas[0] == pytest.approx((21 - 0.01) / 30) and betas[1] > betas[0]
  else:                 # (e - 0.001) / 3 on the epoch counter: constant within epoch 2
    assert betas[0] == betas[1] == pytest.approx((2 - 0.001) / 3)
  assert betas[2] == 1.0
  out = loss_fn(model, x, fake_context(0, 0))
  assert out.per_example.shape == (4,)
  assert float(out.regularizer) == pytest.approx(1e-2 * float(model.batchnorm_loss()), rel=1e-5)
  np.testing.assert_allclose(np.mean([float(out.metrics[f"kl_gamma/group_{g:02d}"])
                                      for g in range(model.num_groups)]), 1.0, rtol=1e-5)


def test_bad_data_dir_is_a_data_error(tmp_path):
  with pytest.raises(data.DataError, match="does not exist"):
    nvae_mnist.load_splits(tiny_settings(), data_dir=str(tmp_path / "missing"))


def test_command_line_reports_bad_data_dir_in_one_line(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.nvae_mnist", f"--data_dir={tmp_path / 'missing'}",
       "--dataset=binarized_mnist", f"--logdir={tmp_path / 'run'}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "does not exist" in errors[0]


def test_table_metrics_are_unavailable_without_weights_and_computed_with_a_network():
  model = NVAE(tiny_config())
  reference = np.random.RandomState(0).uniform(size=(20, 28, 28, 1)).astype(np.float32)
  missing = (None, "no weights here")
  out = nvae_table1.sample_metrics(model, reference, num_samples=20, inception=missing,
                                   vgg16=missing)
  assert all(str(out[k]).startswith("unavailable (no ") for k in ("fid", "precision", "recall"))

  # A small stand-in feature network exercises the FID path (never used for reported numbers).
  inputs = keras.Input((None, None, 1))
  pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3)(inputs / 255.0))
  network = keras.Model(inputs, {"pool_3": pooled})
  assert nvae_table1.fid_from_features(network, reference, reference) == pytest.approx(0.0, abs=1e-6)
  shifted = nvae_table1.fid_from_features(network, np.clip(reference * 0.3, 0, 1), reference)
  assert shifted > 1e-4
