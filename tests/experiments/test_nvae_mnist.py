"""experiments.nvae_train (the NVAE experiment library) and its scripts: one tiny trained run shared
by the module (results row, validation history, resume restores every variable, nvae_evaluate
restores the run), the loss function's warm-up clocks, bad data directories, the table rows and the
table's metric plumbing (with small stand-in networks)."""

import dataclasses
import json
import os
import shutil
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from common_tf import host
from evaluation import protocol
from experiments import data, harness, nvae_evaluate, nvae_train, results
from nvae_tf import NVAE, Spectral, WarmupClock
from nvae_tf import model as nvae_model
from tests import scripts
from tests.nvae_tf.conftest import one_scale_config, write_binarized_mnist_head

IMAGE_SHAPE = data.image_shape("binarized_mnist")
NUM_DIMS = int(np.prod(IMAGE_SHAPE))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The first 64 training and 8 test images of static binarized MNIST (fast to load)."""
  return write_binarized_mnist_head(tmp_path_factory.mktemp("data"), train=64, test=8)


@pytest.fixture(scope="module")
def digits(data_dir):
  return data.load_arrays("binarized_mnist", "test", data_dir)[0]


@pytest.fixture(scope="module")
def untrained():
  """A tiny untrained NVAE (no SR) for tests that only call it."""
  return NVAE(one_scale_config(), seed=0)


def tiny_settings(**changes):
  values = dict(
    model=one_scale_config(spectral="sr"),
    dataset="binarized_mnist",
    warmup_epochs=1,
    train_examples=64,
    test_examples=8,
    num_iw_samples=4,
    iw_chunk=4,
    eval_batch_size=8,
    num_test_passes=1,
  )
  values.update(changes)
  return nvae_train.RunSettings(**values)


def tiny_train_config(logdir, max_steps):
  return harness.TrainConfig(
    logdir=str(logdir),
    batch_size=32,
    epochs=2,
    max_steps=max_steps,
    seed=0,
    log_every=1,
    progress=False,
  )


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
  """train_and_evaluate for 2 steps (= 1 epoch of 64 images, so one validation NLL): the logdir,
  settings, results row and Trained."""
  logdir = tmp_path_factory.mktemp("nvae_run")
  s = tiny_settings()
  row, trained = nvae_train.train_and_evaluate(
    s,
    tiny_train_config(logdir, 2),
    data_dir=data_dir,
    strategy=tf.distribute.get_strategy(),
    command="cmd",
  )
  return logdir, s, row, trained, data_dir


@pytest.mark.slow
def test_run_writes_the_results_row_samples_and_settings(run):
  logdir, s, row, _, _ = run
  assert row["steps"] == 2 and row["epochs_reached"] == 1.0 and not row["finished"]
  assert np.isfinite(row["nll"]) and row["nll"] > 0 and row["command"] == "cmd"
  assert row["bits_per_dim"] == pytest.approx(row["nll"] / (NUM_DIMS * np.log(2)))
  assert row["num_dims"] == NUM_DIMS
  assert len(row["nll_passes"]) == 1 and row["test_examples"] == 8
  assert row["dataset"] == "binarized_mnist" and row["binarization"] == "static"
  for name in ("samples.png", "samples.npz", "results.json", "settings.json", "validation.json"):
    assert os.path.exists(logdir / name), name
  saved = json.load(open(logdir / "results.json"))
  assert saved["nll"] == pytest.approx(row["nll"]) and saved["kl_warmup"] == "step"
  assert saved["cpus"] == [host.cpu_model()]  # trained and evaluated here
  assert saved["eval_hosts"] == {host.cpu_model(): 1}  # batches of the test NLL
  assert saved["peak_rss_gib"] > 0.1  # recorded; host.peak_rss_gib is checked in test_host
  # The per-image values stay in the run folder (float32 IWAE_K and ELBO, [passes, images]) and
  # give the row's numbers.
  values = results.read_per_example(str(logdir / results.PER_EXAMPLE_FILE))
  assert values["log_likelihood"].shape == values["elbo"].shape == (1, 8)
  assert values["log_likelihood"].dtype == np.float32
  assert values["description"]["num_iw_samples"] == s.num_iw_samples
  numbers = results.per_example_numbers(str(logdir / results.PER_EXAMPLE_FILE))
  assert numbers["nll"] == pytest.approx(row["nll"], abs=1e-4)
  assert numbers["neg_elbo"] == pytest.approx(row["neg_elbo"], abs=1e-4)
  assert numbers["nll_sem"] == pytest.approx(row["nll_sem"], abs=1e-4)
  # experiments.nvae_evaluate reads the settings back, enums included.
  restored = nvae_train.load_run_settings(str(logdir))
  assert restored == s and restored.kl_warmup is WarmupClock.STEP
  assert restored.model.spectral is Spectral.SR


@pytest.mark.slow
def test_validation_history_has_the_nll_and_training_time(run):
  """One row per validation NLL (after epoch 1 here) with the harness's cumulative training time."""
  logdir, s, row, trained, _ = run
  history = json.load(open(logdir / "validation.json"))
  assert row["validation"] == history
  assert [(h["epoch"], h["step"]) for h in history] == [(1, 2)]
  h = history[0]
  assert 0 < h["val_neg_log_p"] <= h["val_nelbo"] + 1e-3
  assert h["val_bpd_log_p"] == pytest.approx(h["val_neg_log_p"] / (NUM_DIMS * np.log(2)))
  assert 0 < h["val_seconds"] and 0 < h["train_seconds"] == h["train_seconds_no_val"]
  assert h["train_seconds"] <= float(trained.trainer.train_seconds.numpy())
  # The row's training time is the checkpointed harness clock (so it spans preempted invocations)
  # without the validation pass.
  assert row["train_seconds"] == pytest.approx(
    float(trained.trainer.train_seconds.numpy()) - h["val_seconds"], rel=1e-12
  )
  assert s.val_num_iw_samples == 10


@pytest.mark.slow
def test_resumed_run_restores_every_variable_and_nvae_evaluate_restores_the_weights(
  run, monkeypatch
):
  """A second invocation restores step, optimizer, weights, BN statistics and the SR power-iteration
  vectors (the harness checkpoint) and reuses the test NLL of results.json (nothing changed);
  nvae_train.restore_run rebuilds the same model from settings.json + the latest checkpoint.
  (Continuing after a resume is exact: test_harness.)"""
  logdir, s, first_row, trained, data_dir = run

  def no_evaluation(*args, **kwargs):
    raise AssertionError("the NLL of an unchanged finished run must be reused")

  monkeypatch.setattr(nvae_train, "evaluate_nll", no_evaluation)
  row, resumed = nvae_train.train_and_evaluate(
    s,
    tiny_train_config(logdir, 2),
    data_dir=data_dir,
    strategy=tf.distribute.get_strategy(),
    command="cmd",
  )
  assert row["nll"] == first_row["nll"] and row["nll_passes"] == first_row["nll_passes"]
  assert nvae_train.previous_nll(str(logdir), s, steps=2, seed=0)["nll"] == first_row["nll"]
  for changed, steps, seed in (
    (dataclasses.replace(s, num_iw_samples=5), 2, 0),
    (s, 3, 0),
    (s, 2, 1),
    (dataclasses.replace(s, num_test_passes=2), 2, 0),
  ):
    assert nvae_train.previous_nll(str(logdir), changed, steps=steps, seed=seed) is None
  # Another choice of test images (results.json holds all 8: the test_subset "all").
  assert (
    nvae_train.previous_nll(
      str(logdir), s, steps=2, seed=0, test_subset="random 4 of 8 (seed 2020)"
    )
    is None
  )
  assert int(resumed.trainer.step.numpy()) == 2
  assert int(resumed.trainer.optimizer.iterations.numpy()) == 2
  model, path = nvae_train.restore_run(str(logdir), "latest", s, seed=0)
  assert path.endswith("ckpt-2")
  fresh = NVAE(s.model, seed=0)
  names = [v.path for v in model.variables]
  assert any("sr_state" in n and n.endswith("/u") for n in names)
  # The harness saves the ordered model.variables list; read it back by that list (the tensors'
  # names follow TF's object graph, which may reach a variable through the model first).
  holders = [tf.Variable(np.zeros(v.shape, v.dtype)) for v in model.variables]
  tf.train.Checkpoint(model_variables=holders).restore(path).expect_partial()
  moved = 0
  for i, (ours, theirs, trained_v, init) in enumerate(
    zip(model.variables, resumed.model.variables, trained.model.variables, fresh.variables)
  ):
    saved = holders[i].numpy()
    np.testing.assert_array_equal(ours.numpy(), saved, err_msg=ours.path)  # seed states included
    if "seed_generator" not in ours.path:  # sampling after training advanced those
      np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
      np.testing.assert_array_equal(ours.numpy(), trained_v.numpy(), err_msg=ours.path)
    moved += int(not np.array_equal(ours.numpy(), init.numpy()))
  assert moved > len(model.trainable_variables)  # weights, BN statistics and SR vectors


@pytest.mark.slow
def test_a_finished_run_without_per_image_values_is_evaluated_again_to_the_same_numbers(
  run, tmp_path, capsys
):
  """A results.json whose per-image values are not beside it (an evaluation made before they were
  kept) is not reused: rerunning the run evaluates its checkpoint again, says why in one line and
  writes the values, equal to the first evaluation's (the generator states come back with the
  checkpoint)."""
  logdir, s, first_row, _, data_dir = run
  copy = tmp_path / "run"
  shutil.copytree(logdir, copy)
  first = results.read_per_example(str(copy / results.PER_EXAMPLE_FILE))
  os.remove(copy / results.PER_EXAMPLE_FILE)
  capsys.readouterr()
  row, _ = nvae_train.train_and_evaluate(
    s,
    tiny_train_config(copy, 2),
    data_dir=data_dir,
    strategy=tf.distribute.get_strategy(),
    command="cmd",
  )
  assert capsys.readouterr().err.splitlines() == [
    "data: binarized_mnist (static binarization), 64 train / 8 test images",
    f"Resumed from {copy / 'checkpoints' / 'ckpt-2'} at step 2",
    "Nothing to do: step 2 already reached the target 2",
    f"the test NLL of step 2 in {copy / 'results.json'} has no per-image values beside it "
    f"({results.PER_EXAMPLE_FILE}): evaluating it again to keep them",
    f"test NLL, pass 1 of 1: K = 4 importance samples on 8 test images, resumable (partial "
    f"results: {copy / 'nll_partial_pass0.npz'}); --num_iw_samples / --test_examples make it "
    "smaller",
  ]
  again = results.read_per_example(str(copy / results.PER_EXAMPLE_FILE))
  np.testing.assert_array_equal(again["log_likelihood"], first["log_likelihood"])
  np.testing.assert_array_equal(again["elbo"], first["elbo"])
  assert row["nll_passes"] == first_row["nll_passes"] and row["nll"] == first_row["nll"]
  assert nvae_train.previous_nll(str(copy), s, steps=2, seed=0)["nll"] == first_row["nll"]
  # A rerun that reuses the evaluation keeps the peak memory of the process that made it.
  results.write_json(str(copy / "results.json"), dict(row, peak_rss_gib=99.0))
  again_row, _ = nvae_train.train_and_evaluate(
    s,
    tiny_train_config(copy, 2),
    data_dir=data_dir,
    strategy=tf.distribute.get_strategy(),
    command="cmd",
  )
  assert again_row["nll"] == row["nll"] and again_row["peak_rss_gib"] == 99.0


@pytest.mark.slow
def test_interrupted_test_nll_resumes_to_the_uninterrupted_numbers(
  run, tmp_path, monkeypatch, capsys
):
  """evaluate_nll(resume_dir=...): a K-sample evaluation interrupted after its first batch and rerun
  from the same checkpoint state gives the uninterrupted per-pass NLL exactly (the partial file
  holds the finished batches and the model's generator states)."""
  _, s, _, trained, _ = run
  s = dataclasses.replace(s, eval_batch_size=4, num_iw_samples=3)  # 8 test images: 2 batches
  model = trained.model
  seeds = [v for v in model.variables if "seed_generator_state" in v.path]
  assert seeds
  at_checkpoint = [v.numpy() for v in seeds]

  def restore_checkpoint_state():
    for v, value in zip(seeds, at_checkpoint):
      v.assign(value)

  full = nvae_train.evaluate_nll(s, model, trained.splits, seed=0, progress=False)
  restore_checkpoint_state()
  savez, calls = np.savez, []

  def save_then_stop(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt
    savez(*args, **kwargs)

  monkeypatch.setattr(np, "savez", save_then_stop)
  with pytest.raises(KeyboardInterrupt):
    nvae_train.evaluate_nll(
      s,
      model,
      trained.splits,
      seed=0,
      progress=False,
      resume_dir=str(tmp_path),
      checkpoint="step 2",
    )
  monkeypatch.setattr(np, "savez", savez)
  assert (tmp_path / "nll_partial_pass0.npz").exists()
  restore_checkpoint_state()  # a new process restores the checkpoint
  capsys.readouterr()
  resumed = nvae_train.evaluate_nll(
    s, model, trained.splits, seed=0, progress=False, resume_dir=str(tmp_path), checkpoint="step 2"
  )
  # Its size is said before it starts (a smoke run of a preset still evaluates at the preset's K).
  assert capsys.readouterr().err.splitlines()[0] == (
    f"test NLL, pass 1 of 1: K = 3 importance samples on 8 test images, resumable (partial "
    f"results: {tmp_path / 'nll_partial_pass0.npz'}); --num_iw_samples / --test_examples make "
    "it smaller"
  )
  assert resumed["nll_passes"] == full["nll_passes"] and resumed["neg_elbo"] == full["neg_elbo"]
  assert not (tmp_path / "nll_partial_pass0.npz").exists()


def test_validation_history_logs_a_repeated_epoch_once(tmp_path):
  history = nvae_train.ValidationHistory(str(tmp_path / "validation.json"))
  history(0, {"val_neg_log_p": 3.0}, val_seconds=2.0)
  history(1, {"val_neg_log_p": 2.0}, val_seconds=2.0)
  history(1, {"val_neg_log_p": 1.5}, val_seconds=2.0)  # epoch 2 again after an interruption
  rows = history.rows()
  assert [(r["epoch"], r["val_neg_log_p"]) for r in rows] == [(1, 3.0), (2, 1.5)]
  history(0, {"val_neg_log_p": 4.0}, val_seconds=2.0)  # resumed from before epoch 1
  assert [r["epoch"] for r in history.rows()] == [1]


@pytest.mark.slow
def test_evaluate_readjusts_bn_per_temperature_from_the_trained_statistics(
  run, tmp_path, digits, monkeypatch
):
  """nvae_evaluate.evaluate: NLL with the training BN statistics, then per temperature a fresh
  re-estimation (official set_bn, 16-sample batches) starting from them, restored at the end.
  On the module's trained model (its NLL estimator is already compiled); the last user of `run`
  in this file, and its BN statistics are put back afterwards all the same."""
  _, s, _, trained, _ = run
  model = trained.model
  before = nvae_evaluate.bn_statistics(model)
  try:
    for bn in model.bn_layers:  # distinct "trained" statistics
      bn.moving_variance.assign(bn.moving_variance + 0.5)
    splits = nvae_train.Splits(
      dataset="binarized_mnist", dynamic=False, train=None, test=digits[:8]
    )
    trained_bn = nvae_evaluate.bn_statistics(model)
    settings = nvae_evaluate.EvalSettings(
      temperatures=(0.6, 1.0),
      num_iw_samples=4,
      readjust_bn_steps=2,
      num_grid_images=4,
      fid_samples=4,
    )
    seen = []
    original = model.readjust_bn

    def readjust(**kwargs):  # records the BN statistics each re-estimation starts from
      seen.append((kwargs, nvae_evaluate.bn_statistics(model)))
      original(**kwargs)

    monkeypatch.setattr(model, "readjust_bn", readjust)
    out = nvae_evaluate.evaluate(
      model, s, splits, settings, output_dir=str(tmp_path / "ev"), seed=0, progress=False
    )
    after = nvae_evaluate.bn_statistics(model)
  finally:
    nvae_evaluate.set_bn_statistics(model, before)
  assert [k for k, _ in seen] == [
    dict(num_iterations=2, temperature=0.6),
    dict(num_iterations=2, temperature=1.0),
  ]
  for stats in [start for _, start in seen] + [after]:
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


def test_validation_nll_period_and_values(digits, untrained):
  """Official train.py: eval_freq = 1 if epochs <= 50 else 20, and after the last epoch; K = 10."""
  s = tiny_settings()
  assert [nvae_train.validation_period(s, e) for e in (50, 51)] == [1, 20]
  assert nvae_train.validation_period(tiny_settings(val_every_epochs=0), 400) == 0
  assert nvae_train.PRESETS["cpu"].val_every_epochs == 2
  calls = []
  fn = nvae_train.make_epoch_end_fn(
    digits[:2],
    val_images=digits[:4],
    val_every=2,
    val_num_iw_samples=3,
    epochs=4,
    eval_batch_size=4,
    on_validation=lambda e, v, val_seconds: calls.append((e, v)),
  )
  with tf.summary.create_noop_writer().as_default(step=0):
    logged = [fn(untrained, epoch) for epoch in range(4)]
  with_val = sorted(["test_batch_neg_elbo", "val_bpd_log_p", "val_nelbo", "val_neg_log_p"])
  assert [sorted(v) for v in logged] == [with_val, ["test_batch_neg_elbo"], with_val, with_val]
  assert [e for e, _ in calls] == [0, 2, 3]
  assert calls[2][1]["val_neg_log_p"] == logged[3]["val_neg_log_p"]
  values = logged[3]
  assert values["val_bpd_log_p"] == pytest.approx(values["val_neg_log_p"] / (NUM_DIMS * np.log(2)))
  assert 0 < values["val_neg_log_p"] <= values["val_nelbo"] + 1e-3


def fake_context(step, epoch):
  return harness.StepContext(
    step=tf.constant(step, tf.int64),
    epoch=tf.constant(epoch, tf.int64),
    steps_per_epoch=10,
    total_steps=100,
    total_epochs=10,
    global_batch_size=8,
    num_replicas=1,
  )


@pytest.mark.parametrize("clock", ["step", "epoch"])
def test_loss_fn_warmup_clock(clock, digits, untrained):
  s = tiny_settings(kl_warmup=clock, model=untrained.config)
  assert s.kl_warmup is WarmupClock(clock)
  loss_fn = nvae_train.make_loss_fn(s)
  x = tf.constant(digits[:4])
  betas = [
    float(loss_fn(untrained, x, fake_context(step, step // 10)).metrics["beta"])
    for step in (21, 28, 99)
  ]
  if clock == "step":  # (t - 0.01) / 30 on the step counter
    assert betas[0] == pytest.approx((21 - 0.01) / 30) and betas[1] > betas[0]
  else:  # (e - 0.001) / 3 on the epoch counter: constant within epoch 2
    assert betas[0] == betas[1] == pytest.approx((2 - 0.001) / 3)
  assert betas[2] == 1.0
  out = loss_fn(untrained, x, fake_context(0, 0))
  assert out.per_example.shape == (4,)
  assert float(out.regularizer) == pytest.approx(1e-2 * float(untrained.batchnorm_loss()), rel=1e-5)
  np.testing.assert_allclose(
    np.mean([float(out.metrics[f"kl_gamma/group_{g:02d}"]) for g in range(untrained.num_groups)]),
    1.0,
    rtol=1e-5,
  )


def test_test_examples_are_a_fixed_random_subset(data_dir, digits):
  """--test_examples N picks N test images at random (seed TEST_SUBSET_SEED), in file order: the
  static binarized MNIST test file is sorted by class, its first N would be one digit."""
  splits = nvae_train.test_splits("binarized_mnist", 4, data_dir)
  assert splits.test_subset == "random 4 of 8 (seed 2020)"
  np.testing.assert_array_equal(splits.test, digits[[1, 2, 4, 6]])  # RandomState(2020)'s choice
  whole = nvae_train.test_splits("binarized_mnist", 0, data_dir)
  assert whole.test_subset == "all" and len(whole.test) == 8


def test_bad_settings_are_value_errors():
  with pytest.raises(ValueError, match="kl_warmup"):
    tiny_settings(kl_warmup="linear")
  with pytest.raises(ValueError, match="dataset"):
    tiny_settings(dataset="cifar10")


def test_bad_data_dir_is_a_data_error(tmp_path):
  with pytest.raises(data.DataError, match="does not exist"):
    nvae_train.load_splits(tiny_settings(), data_dir=str(tmp_path / "missing"))


def test_command_line_accepts_the_cpu_preset_and_reports_bad_data_dir_in_one_line(tmp_path):
  proc = scripts.run_script(
    "nvae_mnist",
    [
      "--preset=cpu",
      f"--data_dir={tmp_path / 'missing'}",
      "--dataset=binarized_mnist",
      f"--logdir={tmp_path / 'run'}",
    ],
  )
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "does not exist" in errors[0], proc.stderr[-2000:]


def test_table_rows_names_settings_and_validation_table():
  rows = nvae_train.parse_table_rows(["step_sr", "epoch_sr"])
  assert rows == ((WarmupClock.STEP, Spectral.SR), (WarmupClock.EPOCH, Spectral.SR))
  assert [nvae_train.row_name(*r) for r in nvae_train.TABLE_ROWS] == [
    "step_sn",
    "step_sr",
    "epoch_sn",
  ]
  with pytest.raises(ValueError, match="table_rows"):
    nvae_train.parse_table_rows(["step_sx"])
  s = nvae_train.row_settings(tiny_settings(), "epoch", "sn")
  assert s.kl_warmup is WarmupClock.EPOCH and s.model.spectral is Spectral.SN
  assert nvae_train.table_row_label("epoch", "sn") == "Epoch + SN"
  history = [
    dict(
      epoch=2,
      step=20,
      train_seconds=130.0,
      val_seconds=10.0,
      train_seconds_no_val=120.0,
      val_neg_log_p=95.25,
      val_nelbo=99.0,
    ),
    dict(
      epoch=4,
      step=40,
      train_seconds=250.0,
      val_seconds=10.0,
      train_seconds_no_val=230.0,
      val_neg_log_p=90.5,
      val_nelbo=94.0,
    ),
  ]
  text = nvae_train.validation_table(
    [
      dict(
        row="Step + SR",
        validation=history,
        test_examples=10000,
        settings={"val_num_iw_samples": 10},
      )
    ]
  )
  assert "**Step + SR**" in text and "K = 10" in text
  assert "| 2 | 20 | 2.00 | 95.25 | 99.00 |" in text and "| 4 | 40 | 3.83 | 90.50 | 94.00 |" in text


def test_validation_times_leave_out_every_validation_pass(tmp_path):
  """Two validations on a harness clock at 100 s (pass of 10 s) and 250 s (pass of 20 s): the
  training time without the passes is 90 s, then 250 - 20 - 10 = 220 s; `training_seconds` of the
  status clock (270 s after the second pass) gives the same 240 s the row reports."""
  clock = {"now": 100.0}
  history = nvae_train.ValidationHistory(str(tmp_path / "validation.json"))
  history.trainer = types.SimpleNamespace(
    strategy=tf.distribute.get_strategy(),
    elapsed_train_seconds=lambda: clock["now"],
    step=tf.constant(10),
  )
  history(0, {"val_neg_log_p": 100.0}, val_seconds=10.0)
  clock["now"] = 250.0
  history(2, {"val_neg_log_p": 90.0}, val_seconds=20.0)
  rows = history.rows()
  assert [(r["train_seconds"], r["train_seconds_no_val"]) for r in rows] == [
    (90.0, 90.0),
    (230.0, 220.0),
  ]
  assert nvae_train.training_seconds(270.0, rows) == 240.0


def test_table_metrics_are_unavailable_without_weights_and_computed_with_a_network(untrained):
  reference = np.random.RandomState(0).uniform(size=(20,) + IMAGE_SHAPE).astype(np.float32)
  missing = (None, "no weights here")
  out = nvae_train.sample_metrics(
    untrained, reference, num_samples=20, inception=missing, vgg16=missing
  )
  assert all(str(out[k]).startswith("unavailable (no ") for k in ("fid", "precision", "recall"))

  # A small stand-in feature network exercises the FID path (never used for reported numbers).
  inputs = keras.Input((None, None, 1))
  pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3)(inputs / 255.0))
  network = keras.Model(inputs, {"pool_3": pooled})
  same = nvae_train.fid_from_features(network, reference, reference)
  assert same["value"] == pytest.approx(0.0, abs=1e-6)
  shifted = nvae_train.fid_from_features(network, np.clip(reference * 0.3, 0, 1), reference)
  assert shifted["value"] > 1e-4
  # The value carries its protocol record (network, weights hash, feature, resize, image count).
  record = shifted["protocol"]
  assert (record["network"], record["feature"], record["resize"]) == (
    "inception-2015",
    "pool_3",
    "tf1-legacy-bilinear",
  )
  assert record["image_count"] == 20 and record["image_size"] == "28x28x1"
  assert record["weights_sha256"] == protocol.weights_sha256(network)
  results.require_protocols([{"fid": shifted}])
  assert "(p1)" in results.markdown_table([{"fid": shifted}], [("fid", "FID")])


def test_fewer_samples_than_test_images_compare_with_a_random_subset(untrained, monkeypatch):
  """FID with N samples uses N test images chosen at random, not the first N (one digit)."""
  seen = []
  monkeypatch.setattr(
    nvae_train,
    "fid_from_features",
    lambda network, samples, reference, **kwargs: seen.append(reference) or 0.0,
  )
  reference = np.arange(20, dtype=np.float32)[:, None, None, None] * np.ones(
    (1,) + IMAGE_SHAPE, np.float32
  )
  nvae_train.sample_metrics(
    untrained, reference, num_samples=5, inception=("network", ""), vgg16=(None, "no weights here")
  )
  chosen = seen[0][:, 0, 0, 0]
  assert len(chosen) == 5 and chosen.tolist() != [0, 1, 2, 3, 4] and chosen.max() >= 10
  assert np.all(np.diff(chosen) > 0)
