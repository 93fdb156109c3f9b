"""experiments.vampprior_train (and the experiments.vampprior CLI): end-to-end tiny runs, the
importance-sample count in the results row, the official warm-up / early-stopping rule through the
real harness, presets, bad input."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import data, harness, results, vampprior_train
from tests import scripts
from tests.nvae_tf.conftest import write_binarized_mnist_head
from vampprior_tf import likelihood, losses


def tiny_settings(**overrides):
  base = dict(
    model="vae",
    prior="vampprior",
    dataset="static_mnist",
    likelihood="bernoulli",
    num_components=10,
    learn_prior_weights=False,
    warmup=1,
    lr=3e-3,
    early_stopping=0,
    test_samples=30,
    train_examples=300,
    eval_examples=40,
    image_every=1,
    z1_dim=8,
    z2_dim=6,
    hidden_units=32,
    flow_couplings=2,
    flow_hidden_units=16,
    ll_batch_size=20,
    ll_chunk=20,
  )
  base.update(overrides)
  return vampprior_train.RunSettings(**base)


def tiny_config(logdir, epochs=2, **overrides):
  return harness.TrainConfig(
    logdir=str(logdir),
    batch_size=50,
    epochs=epochs,
    seed=0,
    progress=False,
    early_stopping_metric="val_loss",
    **overrides,
  )


def test_vae_vampprior_static_mnist_end_to_end(tmp_path):
  # The first lines of the offline files (reading all 70k takes seconds; test_data reads them).
  data_dir = write_binarized_mnist_head(tmp_path / "data", train=300, valid=40, test=40)
  row = vampprior_train.train_and_evaluate(
    tiny_settings(),
    # the settings in hparams.json, as experiments.vampprior_flags puts them
    tiny_config(tmp_path / "run", hparams=dataclasses.asdict(tiny_settings())),
    strategy=tf.distribute.get_strategy(),
    data_dir=data_dir,
  )
  assert row["epochs_run"] == 2 and row["test_examples"] == 40
  # Trained: better than 784 fair coin flips.
  assert np.isfinite(row["test_nll"]) and 0 < row["test_nll"] < 784 * np.log(2)
  # The "4 importance samples" trap: the row records the samples the estimator drew (30 = a chunk
  # of 20 + a remainder of 10), which must be the setting's.
  assert row["importance_samples"] == row["test_samples"] == 30
  run = tmp_path / "run"
  saved = json.load(open(run / "results.json"))
  assert saved["test_nll"] == pytest.approx(row["test_nll"]) and saved["importance_samples"] == 30
  assert (run / "samples.png").exists() and (run / "samples.npz").exists()
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(run))
  assert row["best_checkpoint"] is not None
  # Adam's epsilon is the official AdamNormGrad's 1e-8 (Keras's default is 1e-7), recorded in the
  # row and in hparams.json, so that a resumed run keeps it.
  assert row["adam_epsilon"] == 1e-8
  assert json.load(open(run / "hparams.json"))["adam_epsilon"] == 1e-8
  # The run loads in one line (settings from hparams.json, the best weights and random streams):
  # its test NLL again gives the per-image values the run kept.
  os.remove(run / "results.json")  # a run in progress has none
  s, model, path = vampprior_train.restore_run(str(run))
  assert s == tiny_settings() and path == row["best_checkpoint"]
  test = vampprior_train.load_splits(s.dataset, data_dir=data_dir, eval_examples=40)[2]
  again = likelihood.evaluate_nll(
    model, test, num_samples=s.test_samples, batch_size=s.ll_batch_size, chunk_size=s.ll_chunk
  ).summary
  kept = results.read_per_example(str(run / results.PER_EXAMPLE_FILE))
  for values, stored in (
    (again.per_example_log_likelihood, kept["log_likelihood"]),
    (again.per_example_elbo, kept["elbo"]),
  ):  # kept as float32
    np.testing.assert_array_equal(values.astype(np.float32), stored)


def test_adam_epsilon_of_a_run_started_before_it_was_recorded_stays_the_keras_default(tmp_path):
  assert vampprior_train.adam_epsilon(str(tmp_path)) == 1e-8  # a new run
  (tmp_path / "hparams.json").write_text(json.dumps({"model": "vae"}))
  assert vampprior_train.adam_epsilon(str(tmp_path)) == 1e-7  # resumes as it was trained
  (tmp_path / "hparams.json").write_text(json.dumps({"model": "vae", "adam_epsilon": 1e-8}))
  assert vampprior_train.adam_epsilon(str(tmp_path)) == 1e-8


def test_evaluating_without_a_best_checkpoint_is_an_error(tmp_path):
  """Training that ends with an empty best/ (here: no early-stopping metric, so nothing is ever
  written there) must not evaluate its last weights in silence."""
  data_dir = write_binarized_mnist_head(tmp_path / "data", train=100, valid=20, test=20)
  config = harness.TrainConfig(
    logdir=str(tmp_path / "run"), batch_size=50, epochs=1, seed=0, progress=False
  )
  with pytest.raises(ValueError) as e:
    vampprior_train.train_and_evaluate(
      tiny_settings(train_examples=100, eval_examples=20),
      config,
      strategy=tf.distribute.get_strategy(),
      data_dir=data_dir,
    )
  assert str(e.value) == (
    f"{tmp_path / 'run'}: training ended without a best-validation "
    "checkpoint (best/ is empty), so there are no weights the protocol "
    "evaluates"
  )
  assert not (tmp_path / "run" / "results.json").exists()


def test_hvae_flow_prior_frey_faces_grey_end_to_end(tmp_path):
  settings = tiny_settings(
    model="hvae_2level",
    prior="flow",
    dataset="frey_faces",
    likelihood="discretized_logistic",
    train_examples=100,
    eval_examples=20,
    test_samples=10,
    ll_chunk=10,
  )
  row = vampprior_train.train_and_evaluate(
    settings, tiny_config(tmp_path, epochs=1), strategy=tf.distribute.get_strategy()
  )
  # Discretized logistic on 560 pixels (official edges by default): probabilities <= 1, NLL > 0.
  assert row["test_nll"] > 0 and row["logistic_edges"] == "official"
  assert row["importance_samples"] == 10


def test_loss_fn_uses_the_official_warmup_beta_from_the_first_epoch():
  """Official first epoch: beta = 1 / warmup (not 0); the loss is -log p(x|z) + beta KL."""
  keras.utils.set_random_seed(0)
  s = tiny_settings(test_samples=2)
  model = vampprior_train.build_model(s, image_shape=(28, 28, 1), seed=0)
  x = tf.constant((np.random.RandomState(0).rand(4, 28, 28, 1) > 0.5).astype(np.float32))
  ctx = harness.StepContext(
    step=tf.constant(0, tf.int64),
    epoch=tf.constant(0, tf.int64),
    steps_per_epoch=1,
    total_steps=1,
    total_epochs=1,
    global_batch_size=4,
    num_replicas=1,
  )
  out = vampprior_train.make_loss_fn(4)(model, x, ctx)
  assert float(out.metrics["beta"]) == 0.25
  log_px, kl = float(out.metrics["log_px"]), float(out.metrics["kl"])
  np.testing.assert_allclose(float(tf.reduce_mean(out.per_example)), -log_px + 0.25 * kl, rtol=1e-5)


def official_stop_epoch(val_losses, *, patience, warmup):
  """The official early-stopping loop (utils/perform_experiment.py) on a list of validation
  losses; returns the number of epochs trained."""
  best, bad = 100000.0, 0
  for epoch, value in enumerate(val_losses, 1):
    if value < best:
      best, bad = value, 0
    else:
      bad += 1
      if epoch < warmup:
        bad = 0
      if bad > patience:
        return epoch
  return len(val_losses)


class Linear(keras.Model):
  def __init__(self):
    super().__init__()
    self.dense = keras.layers.Dense(1)

  def call(self, x, training=False):
    return self.dense(x)


@pytest.mark.parametrize(
  "val_losses,patience,warmup",
  [
    ([9, 8, 8.5, 8.6, 8.7, 8.8, 8.9, 9, 9, 9], 2, 4),  # last improvement inside warm-up
    ([9, 8, 7, 6, 5, 4.5, 5, 5, 5, 5, 5, 5], 2, 4),  # last improvement after warm-up
    ([5, 4, 3, 3.5, 3.5, 3.5, 3.5, 3.5], 1, 0),  # no warm-up
  ],
)
def test_official_early_stopping_through_the_real_harness(tmp_path, val_losses, patience, warmup):
  """The harness with `losses.EarlyStopping.official` stops after the epoch the official loop does."""
  stopping = losses.EarlyStopping.official(patience=patience, warmup=warmup)
  config = harness.TrainConfig(
    logdir=str(tmp_path),
    batch_size=4,
    epochs=len(val_losses),
    seed=0,
    progress=False,
    early_stopping_metric="val_loss",
    early_stopping_patience=stopping.harness_patience,
    early_stopping_start_epoch=stopping.start_epoch,
  )
  model = Linear()
  model(tf.zeros((1, 2)))
  trainer = harness.Trainer(
    config=config,
    strategy=tf.distribute.get_strategy(),
    model=model,
    optimizer=keras.optimizers.SGD(0.0),
    loss_fn=lambda m, b, ctx: harness.LossOutput(per_example=tf.reduce_sum(m(b), -1)),
    train_data=tf.data.Dataset.from_tensor_slices(np.zeros((4, 2), np.float32)),
    epoch_end_fn=lambda m, epoch: {"val_loss": float(val_losses[epoch])},
  )
  trainer.fit()
  expected = official_stop_epoch(val_losses, patience=patience, warmup=warmup)
  assert expected < len(val_losses)  # every case stops early
  assert int(trainer.step.numpy()) // trainer.steps_per_epoch == expected


def test_paper_preset_is_the_official_setting():
  p = vampprior_train.PRESETS["paper"]
  assert (p.batch_size, p.lr, p.warmup, p.early_stopping, p.num_components, p.test_samples) == (
    100,
    5e-4,
    100,
    50,
    500,
    5000,
  )
  assert (p.train_examples, p.eval_examples) == (None, None)
  assert vampprior_train.DATASETS["static_mnist"].pseudo_mean == 0.05
  assert vampprior_train.default_likelihood("frey_faces") == "discretized_logistic"


def test_dynamic_mnist_binarizes_eval_sets_once_and_needs_train_images(tmp_path):
  grey = np.random.RandomState(0).rand(50, 28, 28, 1).astype(np.float32)
  once = data.binarize_once(grey, seed=777)
  np.testing.assert_array_equal(once, data.binarize_once(grey, seed=777))
  assert set(np.unique(once)) <= {0.0, 1.0}
  with pytest.raises(data.DataError, match="train"):
    vampprior_train.load_splits("dynamic_mnist", data_dir=str(tmp_path))


def test_cli_reports_missing_data_in_one_line(tmp_path):
  proc = scripts.run_script(
    "vampprior",
    ["--dataset=fashion_mnist", f"--data_dir={tmp_path}", f"--logdir={tmp_path / 'run'}"],
  )
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "fashion_mnist" in errors[0]
