"""Training harness: exact resume, replica-count invariance, NaN guard, early stopping."""

import os
import shutil
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import harness
from tests.conftest import two_cpu_strategy

DIM = 6


class TinyModel(keras.Model):
  """An MLP with sampling noise from a SeedGenerator (so resume must restore it) and a BatchNorm
  and a Dense kept in a Python list (Keras 3 does not put those in TF's checkpoint object graph)."""

  def __init__(self, *, seed=0):
    super().__init__()
    self.hidden = keras.layers.Dense(8, activation="tanh")
    self.blocks = [keras.layers.BatchNormalization(), keras.layers.Dense(8, activation="tanh")]
    self.out = keras.layers.Dense(DIM, dtype="float32")  # float32 output under mixed precision
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, x, training=False):
    noise = keras.random.normal(tf.shape(x), stddev=0.1, dtype=x.dtype, seed=self.seed_generator)
    h = self.hidden(x + noise)
    for block in self.blocks:
      h = (
        block(h, training=training)
        if isinstance(block, keras.layers.BatchNormalization)
        else block(h)
      )
    return self.out(h)


def tiny_loss(model, batch, ctx):
  pred = model(batch, training=True)
  per_example = tf.reduce_sum(tf.square(pred - batch), axis=-1)
  weight_decay = 1e-3 * tf.add_n([tf.reduce_sum(tf.square(v)) for v in model.trainable_variables])
  beta = tf.cast(ctx.step, tf.float32) / ctx.total_steps
  return harness.LossOutput(
    per_example=per_example, regularizer=weight_decay, metrics={"beta": beta}
  )


def make_data(n=64):
  rng = np.random.RandomState(0)
  return tf.data.Dataset.from_tensor_slices(rng.randn(n, DIM).astype(np.float32))


def make_trainer(logdir, *, strategy=None, epochs=3, max_steps=None, loss_fn=tiny_loss, **cfg):
  strategy = strategy or tf.distribute.get_strategy()
  keras.utils.set_random_seed(1)
  with strategy.scope():
    model = TinyModel()
    model(tf.zeros((1, DIM)))
    optimizer = keras.optimizers.Adam(1e-2)
  config = harness.TrainConfig(
    logdir=str(logdir),
    batch_size=16,
    epochs=epochs,
    max_steps=max_steps,
    seed=3,
    log_every=2,
    progress=False,
    **cfg,
  )
  return harness.Trainer(
    config=config,
    strategy=strategy,
    model=model,
    optimizer=optimizer,
    loss_fn=loss_fn,
    train_data=make_data(),
  )


def weights(model):
  return [v.numpy() for v in model.weights]


@pytest.fixture(scope="module")
def full_weights(tmp_path_factory):
  """The weights after an uninterrupted 3-epoch run (12 steps): the reference of the resume tests."""
  full = make_trainer(tmp_path_factory.mktemp("full"))
  full.fit()
  assert int(full.step.numpy()) == full.total_steps == 12
  return weights(full.model)


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
  """One epoch (4 steps) with hyper-parameters logged; the tests below only read it."""
  logdir = tmp_path_factory.mktemp("one_epoch")
  trainer = make_trainer(logdir, epochs=1, hparams={"lr": 1e-2, "name": "tiny"})
  trainer.fit()
  return logdir, trainer


def test_interrupted_then_resumed_run_equals_uninterrupted(tmp_path, full_weights):
  # Interrupt mid-epoch (step 5 of 4 steps/epoch), then resume in a fresh process-like state.
  first = make_trainer(tmp_path / "resumed", max_steps=5)
  first.fit()
  assert int(first.step.numpy()) == 5
  second = make_trainer(tmp_path / "resumed")
  assert second.restore() == 5
  second.fit()
  assert int(second.step.numpy()) == second.total_steps == 12
  for a, b in zip(full_weights, weights(second.model), strict=True):
    np.testing.assert_array_equal(a, b)
  # Optimizer state came back too (its iteration counter equals the step).
  assert int(second.optimizer.iterations.numpy()) == 12


def test_replica_count_gives_same_loss_and_gradients(tmp_path):
  """MirroredStrategy over 2 logical CPUs == one device, for the same global batch."""

  def deterministic_loss(model, batch, ctx):
    pred = model.out(model.blocks[1](model.hidden(batch)))  # no noise / BN: replicas would differ
    per_example = tf.reduce_sum(tf.square(pred - batch), axis=-1)
    reg = 1e-2 * tf.add_n([tf.reduce_sum(tf.square(v)) for v in model.trainable_variables])
    return harness.LossOutput(per_example=per_example, regularizer=reg)

  one = make_trainer(tmp_path / "one", epochs=1, loss_fn=deterministic_loss)
  two = make_trainer(tmp_path / "two", epochs=1, loss_fn=deterministic_loss, strategy=_two_cpus())
  for a, b in zip(weights(one.model), weights(two.model)):
    np.testing.assert_array_equal(a, b)
  batch = next(iter(make_data().batch(16)))
  out_one = one._train_step(batch)
  out_two = two._train_step(
    two.strategy.experimental_distribute_values_from_function(
      lambda ctx: batch[ctx.replica_id_in_sync_group * 8 : (ctx.replica_id_in_sync_group + 1) * 8]
    )
  )
  np.testing.assert_allclose(out_one["loss"].numpy(), out_two["loss"].numpy(), rtol=1e-5)
  np.testing.assert_allclose(out_one["grad_norm"].numpy(), out_two["grad_norm"].numpy(), rtol=1e-5)
  for a, b in zip(weights(one.model), weights(two.model)):  # same update applied
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
  def nan_after_step_6(model, batch, ctx):
    out = tiny_loss(model, batch, ctx)
    poison = tf.where(ctx.step >= 6, np.nan, 0.0)
    return harness.LossOutput(per_example=out.per_example + poison, regularizer=out.regularizer)

  trainer = make_trainer(tmp_path, loss_fn=nan_after_step_6, checkpoint_every=4)
  with pytest.raises(harness.NonFiniteLossError, match="step 7"):
    trainer.fit()
  ckpt_dir = tmp_path / "checkpoints"
  assert tf.train.latest_checkpoint(str(ckpt_dir)).endswith("ckpt-4")
  resumed = make_trainer(tmp_path)
  assert resumed.restore() == 4
  assert all(np.all(np.isfinite(w)) for w in weights(resumed.model))


def test_early_stopping_and_best_checkpoint(tmp_path):
  values = iter([5.0, 3.0, 4.0, 4.0, 4.0, 4.0])

  def epoch_end(model, epoch):
    return {"val_loss": next(values)}

  trainer = make_trainer(
    tmp_path, epochs=6, early_stopping_metric="val_loss", early_stopping_patience=2
  )
  trainer.epoch_end_fn = epoch_end
  trainer.fit()
  # Official VampPrior rule: stop once MORE than `patience` epochs did not improve: epochs 3, 4, 5.
  assert int(trainer.step.numpy()) == 5 * 4
  assert trainer.best_manager.latest_checkpoint.endswith("ckpt-8")
  # best/ holds the weights alone: no optimizer slots, no counters.
  best_keys = tf.train.load_checkpoint(
    trainer.best_manager.latest_checkpoint
  ).get_variable_to_shape_map()
  assert not [k for k in best_keys if k.startswith(("optimizer/", "step/", "best"))], best_keys
  last = weights(trainer.model)
  assert trainer.restore_best().endswith("ckpt-8")
  best = weights(trainer.model)
  assert int(trainer.step.numpy()) == 20 and not all(
    np.array_equal(a, b) for a, b in zip(last, best)
  )
  rerun = make_trainer(
    tmp_path, epochs=6, early_stopping_metric="val_loss", early_stopping_patience=2
  )
  rerun.epoch_end_fn = epoch_end
  assert rerun.fit() == {} and int(rerun.step.numpy()) == 5 * 4  # a stopped run stays stopped
  # Kept as its best weights alone (how a finished run travels): still stopped, the same weights.
  shutil.rmtree(tmp_path / "checkpoints")
  again = make_trainer(
    tmp_path, epochs=6, early_stopping_metric="val_loss", early_stopping_patience=2
  )
  assert again.fit() == {} and int(again.step.numpy()) == 20
  assert again.restore_best().endswith("ckpt-8")
  for a, b in zip(best, weights(again.model), strict=True):
    np.testing.assert_array_equal(a, b)


def test_tensorboard_events_written(one_epoch_run):
  tmp_path, _ = one_epoch_run
  events = [f for f in os.listdir(tmp_path) if f.startswith("events.out")]
  assert events
  tags = set()
  for e in tf.compat.v1.train.summary_iterator(str(tmp_path / events[0])):
    tags.update(v.tag for v in e.summary.value)
  assert {"train/loss", "train/beta", "train/grad_norm", "train/examples_per_s"} <= tags


def test_bad_runtime_settings():
  with pytest.raises(ValueError, match="precision"):
    harness.setup_runtime(precision="float8")
  with pytest.raises(ValueError, match="strategy"):
    harness.setup_runtime(strategy="tpu_pod")
  with pytest.raises(ValueError, match="fewer than one batch"):
    make_trainer("/tmp/unused", epochs=1).__class__(
      config=harness.TrainConfig(logdir="/tmp/unused", batch_size=1000, epochs=1),
      strategy=tf.distribute.get_strategy(),
      model=TinyModel(),
      optimizer=keras.optimizers.Adam(),
      loss_fn=tiny_loss,
      train_data=make_data(),
    )


def test_xla_and_mixed_precision_steps_run(tmp_path):
  """The compiled (XLA) step and the bfloat16 policy both train; the policy is restored after."""
  xla = make_trainer(tmp_path / "xla", epochs=1, jit_compile=True)
  xla.fit()
  assert np.isfinite(weights(xla.model)[0]).all() and int(xla.step.numpy()) == 4
  try:
    harness.setup_runtime(precision="mixed_bfloat16")
    mixed = make_trainer(tmp_path / "bf16", epochs=1)
    assert mixed.model.hidden.compute_dtype == "bfloat16"
    assert mixed.model.hidden.kernel.dtype == "float32"
    out = mixed.fit()
    assert np.isfinite(out["loss"])
  finally:
    harness.setup_runtime(precision="float32")


def test_multi_worker_needs_tf_config(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match="TF_CONFIG"):
    harness.setup_runtime(strategy="multi_worker")


def test_each_weight_is_written_once(one_epoch_run):
  """The training checkpoint holds every weight once: not again under the optimizer, which
  tracks the same Keras variables (values compared, so a second copy under any name counts)."""
  _, trainer = one_epoch_run
  path = trainer.manager.latest_checkpoint
  reader = tf.train.load_checkpoint(path)
  tensors = [
    reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in n
  ]
  for v in trainer.model.trainable_variables:
    value = v.numpy()
    copies = [t for t in tensors if np.shape(t) == value.shape and np.array_equal(t, value)]
    assert len(copies) == 1, v.path


def test_a_checkpoint_with_the_weights_written_twice_restores_the_same(one_epoch_run, tmp_path):
  """Checkpoints written before each weight was written once (model_variables as the variables'
  `.value`s, the trainable ones again under the optimizer) restore every weight, slot and counter."""
  _, trainer = one_epoch_run
  children = {
    name: child
    for name, child in trainer.checkpoint._trackable_children().items()
    if name != "save_counter"
  }
  children["model_variables"] = [v.value for v in trainer.model.variables]
  old = tf.train.Checkpoint(**children).save(str(tmp_path / "old" / "ckpt"))
  reader = tf.train.load_checkpoint(old)
  names = reader.get_variable_to_shape_map()
  assert any(n.startswith("optimizer/_trainable_variables/") for n in names)  # the old layout
  fresh = make_trainer(tmp_path / "fresh", epochs=2)
  fresh._restore(old)
  assert int(fresh.step.numpy()) == int(trainer.step.numpy()) == 4
  for a, b in zip(fresh.model.variables, trainer.model.variables, strict=True):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  for a, b in zip(fresh.optimizer.variables, trainer.optimizer.variables, strict=True):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_checkpoint_holds_listed_layers_and_rejects_other_models(one_epoch_run):
  tmp_path, trainer = one_epoch_run
  names = [name for name, _ in tf.train.list_variables(trainer.manager.latest_checkpoint)]
  stored = {
    tuple(tf.train.load_variable(trainer.manager.latest_checkpoint, n).shape)
    for n in names
    if n.startswith("model_variables/")
  }
  assert len([n for n in names if n.startswith("model_variables/")]) == len(trainer.model.variables)
  assert (8, 8) in stored  # the Dense inside the list
  moving_mean = trainer.model.blocks[0].moving_mean.numpy()
  assert not np.allclose(moving_mean, 0.0)  # BN statistics moved ...
  fresh = make_trainer(tmp_path, epochs=2)
  fresh.restore()
  np.testing.assert_array_equal(
    fresh.model.blocks[0].moving_mean.numpy(), moving_mean
  )  # ... and came back

  class Wider(TinyModel):
    def __init__(self):
      super().__init__()
      self.hidden = keras.layers.Dense(9, activation="tanh")

  with tf.distribute.get_strategy().scope():
    model = Wider()
    model(tf.zeros((1, DIM)))
  other = harness.Trainer(
    config=fresh.config,
    strategy=tf.distribute.get_strategy(),
    model=model,
    optimizer=keras.optimizers.Adam(),
    loss_fn=tiny_loss,
    train_data=make_data(),
  )
  with pytest.raises(ValueError, match="does not match"):
    other.restore()


# --------------------------------------------------------------------------- at scale


def _sgd_trainer(
  logdir,
  *,
  strategy=None,
  loss_fn,
  grad_transform=None,
  batch_size=16,
  lr=1.0,
  num_examples=None,
  **cfg,
):
  """One scalar weight w = 1 trained by plain SGD: every gradient-scale error shows in w."""
  strategy = strategy or tf.distribute.get_strategy()

  class Scalar(keras.Model):
    def __init__(self):
      super().__init__()
      self.w = self.add_weight(shape=(), initializer="ones", name="w")

    def call(self, x):
      return self.w * x

  with strategy.scope():
    model = Scalar()
    optimizer = keras.optimizers.SGD(lr)
  config = harness.TrainConfig(
    logdir=str(logdir), batch_size=batch_size, epochs=1, seed=3, log_every=1, progress=False, **cfg
  )
  data = tf.data.Dataset.from_tensor_slices(np.ones((num_examples or batch_size, 1), np.float32))
  return harness.Trainer(
    config=config,
    strategy=strategy,
    model=model,
    optimizer=optimizer,
    loss_fn=loss_fn,
    train_data=data,
    grad_transform=grad_transform,
  )


def _half_square(model, batch, ctx):
  """Per example 0.5 * (w x)^2 with x = 1: the global-mean gradient is w."""
  return harness.LossOutput(per_example=0.5 * tf.square(model(batch)[:, 0]))


_two_cpus = two_cpu_strategy


def test_sgd_step_moves_the_same_on_one_and_two_replicas(tmp_path):
  """The double all-reduce bug: on 2 replicas w went 1 -> -1 instead of 1 -> 0."""
  for name, strategy in (("one", None), ("two", _two_cpus())):
    trainer = _sgd_trainer(tmp_path / name, strategy=strategy, loss_fn=_half_square)
    trainer.fit()
    assert float(trainer.model.w.numpy()) == 0.0, name
    assert int(trainer.optimizer.iterations.numpy()) == 1


def test_grad_transform_sees_the_global_gradient_on_two_replicas(tmp_path):
  """Clipping to norm 0.25 of the global gradient (w = 1): w -> 0.75 on any replica count."""

  def clip(grads, variables):
    del variables
    return [tf.clip_by_norm(g, 0.25) for g in grads]

  for name, strategy in (("one", None), ("two", _two_cpus())):
    trainer = _sgd_trainer(
      tmp_path / name, strategy=strategy, loss_fn=_half_square, grad_transform=clip
    )
    out = trainer.fit()
    assert float(trainer.model.w.numpy()) == 0.75, name
    assert out["grad_norm"] == 1.0  # logged before the transform, global (not per replica)


def test_float16_gradients_are_unscaled_before_grad_transform_and_overflow_is_skipped(tmp_path):
  def record(grads, variables):
    del variables
    return [tf.clip_by_norm(g, 0.5) for g in grads]  # would be a no-op on loss-scaled gradients

  def overflow_at_step_1(model, batch, ctx):
    y = model(batch)[:, 0]
    blow = tf.where(tf.equal(ctx.step, 1), np.inf, 0.0)  # finite loss, infinite gradient at step 1
    return harness.LossOutput(
      per_example=0.5 * tf.square(tf.cast(y, tf.float32)) + _inf_grad(tf.cast(y, tf.float32), blow)
    )

  try:
    harness.setup_runtime(precision="mixed_float16")
    trainer = _sgd_trainer(
      tmp_path,
      loss_fn=overflow_at_step_1,
      grad_transform=record,
      lr=1.0,
      batch_size=4,
      num_examples=12,
    )
    out = trainer.fit()
  finally:
    harness.setup_runtime(precision="float32")
  # Step 0: g = w = 1 (unscaled), clipped to 0.5 -> w = 0.5. Step 1: overflow, skipped.
  # Step 2: g = 0.5, not clipped -> w = 0.
  assert float(trainer.model.w.numpy()) == 0.0
  assert int(trainer.loss_scale.overflow_steps.numpy()) == 1
  assert float(trainer.loss_scale.scale.numpy()) == harness.INITIAL_LOSS_SCALE / 2
  assert int(trainer.optimizer.iterations.numpy()) == 2  # the skipped step left the slots alone
  assert out["overflow_steps"] == 1


@tf.custom_gradient
def _inf_grad(y, blow):
  """Value 0; gradient `blow` (inf at the chosen step) with respect to y."""

  def grad(upstream):
    return upstream * blow, tf.zeros_like(blow)

  return tf.zeros_like(y), grad


def _sampling_hook(model, epoch):
  """An epoch-end hook that draws from the model's SeedGenerator (like the sample grids)."""
  keras.random.normal((3,), seed=model.seed_generator)
  return {"epoch_value": float(epoch)}


def test_resume_is_exact_when_the_epoch_end_hook_draws_random_numbers(tmp_path):
  full = make_trainer(tmp_path / "full")
  full.epoch_end_fn = _sampling_hook
  full.fit()
  first = make_trainer(tmp_path / "resumed", max_steps=8)  # stops at an epoch end (4 steps/epoch)
  first.epoch_end_fn = _sampling_hook
  first.fit()
  second = make_trainer(tmp_path / "resumed")
  second.epoch_end_fn = _sampling_hook
  second.fit()
  for a, b in zip(weights(full.model), weights(second.model)):
    np.testing.assert_array_equal(a, b)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, full_weights):
  first = make_trainer(tmp_path / "run", max_steps=8)
  first.fit()  # checkpoints at steps 4 and 8
  data_file = [
    f for f in os.listdir(tmp_path / "run" / "checkpoints") if f.startswith("ckpt-8.data")
  ][0]
  path = tmp_path / "run" / "checkpoints" / data_file
  path.write_bytes(path.read_bytes()[:100])  # truncated, as by a full disk or a kill mid-write
  second = make_trainer(tmp_path / "run")
  assert second.restore() == 4
  assert "ckpt-8 is damaged" in capsys.readouterr().err
  second.fit()
  for a, b in zip(full_weights, weights(second.model), strict=True):
    np.testing.assert_array_equal(a, b)


def test_restore_uses_the_checkpoint_status_json_names(tmp_path, capsys):
  """status.json is written last in a save: a newer checkpoint is from a save cut short (not
  used); a named checkpoint that is gone (a carried run holds only the newest) is no manifest."""
  import json

  make_trainer(tmp_path, max_steps=8).fit()  # checkpoints at steps 4 and 8
  status_path = tmp_path / "status.json"
  status = json.loads(status_path.read_text())
  assert os.path.basename(status["checkpoint"]) == "ckpt-8" and status["step"] == 8
  status_path.write_text(json.dumps(dict(status, checkpoint="elsewhere/ckpt-4", step=4)))
  assert make_trainer(tmp_path).restore() == 4
  assert "ckpt-8 not used: written by a save that did not finish" in capsys.readouterr().err
  status_path.write_text(json.dumps(dict(status, checkpoint="ckpt-3", step=3)))
  assert make_trainer(tmp_path).restore() == 8
  status_path.write_text("")  # unreadable: no manifest
  assert make_trainer(tmp_path).restore() == 8


def test_nan_gradient_with_finite_loss_is_never_applied_nor_saved(tmp_path):
  def nan_gradient_from_step_5(model, batch, ctx):
    out = tiny_loss(model, batch, ctx)
    pred = model.out(model.hidden(batch))
    blow = tf.where(ctx.step >= 5, np.nan, 0.0)
    return harness.LossOutput(
      per_example=out.per_example + _inf_grad(pred[:, 0], blow), regularizer=out.regularizer
    )

  trainer = make_trainer(tmp_path, loss_fn=nan_gradient_from_step_5, checkpoint_every=4)
  with pytest.raises(harness.NonFiniteLossError, match="gradient norm.*step 6"):
    trainer.fit()
  assert all(np.all(np.isfinite(w)) for w in weights(trainer.model))
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-4")


def test_non_finite_weights_are_never_checkpointed(tmp_path):
  trainer = make_trainer(tmp_path, epochs=1)
  trainer.model.blocks[0].moving_mean.assign(np.full(8, np.nan, np.float32))
  with pytest.raises(harness.NonFiniteLossError, match="non-finite weights.*moving_mean"):
    trainer.fit()
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")) is None


def test_sigterm_writes_a_checkpoint_and_the_resumed_run_is_exact(tmp_path, full_weights):
  import signal

  def terminate_at_step_6(model, batch, ctx):
    out = tiny_loss(model, batch, ctx)

    def maybe_kill(step):
      if int(step) == 5:
        os.kill(os.getpid(), signal.SIGTERM)
      return step

    tf.py_function(maybe_kill, [ctx.step], tf.int64)
    return out

  first = make_trainer(tmp_path / "run", loss_fn=terminate_at_step_6)
  with pytest.raises(harness.Preempted, match="SIGTERM at step 6") as caught:
    first.fit()
  assert caught.value.signum == signal.SIGTERM
  assert first.manager.latest_checkpoint.endswith("ckpt-6")
  second = make_trainer(tmp_path / "run")
  assert second.restore() == 6
  second.fit()
  for a, b in zip(full_weights, weights(second.model), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("batch_size", 0, "--batch_size must be >= 1, got 0"),
    ("epochs", -1, "--epochs must be >= 1"),
    ("max_steps", 0, "--max_steps must be >= 1"),
    ("log_every", 0, "--log_every must be >= 1"),
  ],
)
def test_bad_train_config_is_one_clear_error(tmp_path, field, value, message):
  settings = dict(logdir=str(tmp_path), batch_size=16, epochs=1)
  settings[field] = value
  with pytest.raises(ValueError, match=message):
    harness.TrainConfig(**settings)


def test_logdir_naming_a_file_is_one_clear_error(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("x")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    harness.TrainConfig(logdir=str(path), batch_size=16, epochs=1)


def test_status_file_says_how_far_the_run_got(tmp_path, monkeypatch):
  import json
  import subprocess

  values = iter([5.0, 3.0, 4.0, 4.0])

  harness.code_commit.cache_clear()
  trainer = make_trainer(
    tmp_path, epochs=4, max_steps=14, early_stopping_metric="val_loss", early_stopping_patience=5
  )
  # The checkout moves on while the run trains (`git pull` beside a long run): its status keeps
  # the commit of the code it loaded.
  monkeypatch.setattr(
    subprocess,
    "run",
    lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout="fffffff\n", stderr=""),
  )
  trainer.epoch_end_fn = lambda model, epoch: {"val_loss": next(values)}
  trainer.fit()
  status = json.loads((tmp_path / "status.json").read_text())
  assert status["step"] == 14 and status["epoch"] == 3.5 and not status["finished"]
  assert status["best_epoch"] == 2 and status["best_metric"] == 3.0  # epochs counted from 1
  assert status["total_epochs"] == 4 and status["train_seconds"] > 0
  assert status["checkpoint"].endswith("ckpt-14") and status["cpu"]
  monkeypatch.undo()
  head = subprocess.run(
    ["git", "rev-parse", "--short", "HEAD"],
    cwd=os.path.dirname(harness.__file__),
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()
  assert status["code_commits"] == [head]


def test_status_file_names_every_cpu_the_run_trained_on(tmp_path, monkeypatch):
  """A run resumed on other machines (a carried checkpoint): status.json's `cpus` names each CPU
  once, oldest first, and `cpu` the newest; a file written before `cpus` existed contributes its
  single `cpu`."""
  import json

  from common_tf import host

  path = tmp_path / "status.json"
  monkeypatch.setattr(host, "cpu_model", lambda: "Xeon, AVX-512")
  make_trainer(tmp_path, max_steps=2).fit()
  status = json.loads(path.read_text())
  assert status["cpus"] == ["Xeon, AVX-512"] and status["step"] == 2
  del status["cpus"]  # as written before 2026-12-02
  path.write_text(json.dumps(status))
  monkeypatch.setattr(host, "cpu_model", lambda: "EPYC, AVX2")
  make_trainer(tmp_path, max_steps=4).fit()
  status = json.loads(path.read_text())
  assert status["cpus"] == ["Xeon, AVX-512", "EPYC, AVX2"] and status["cpu"] == "EPYC, AVX2"
  monkeypatch.setattr(host, "cpu_model", lambda: "Xeon, AVX-512")
  make_trainer(tmp_path, max_steps=6).fit()
  status = json.loads(path.read_text())
  assert status["step"] == 6 and status["cpus"] == ["Xeon, AVX-512", "EPYC, AVX2"]
  assert status["cpu"] == "Xeon, AVX-512"


def test_carried_state_resumes_on_another_machine_to_the_uninterrupted_weights(
  tmp_path, full_weights
):
  """`experiments.carry`: the packed state (newest checkpoint, JSON files) is all a resume needs."""
  from experiments import carry

  first = make_trainer(tmp_path / "runs" / "row", max_steps=5)
  first.fit()  # checkpoints at steps 4 (epoch end) and 5
  (tmp_path / "runs" / "row" / "samples.png").write_bytes(b"png")
  assert carry.main([f"--logdir={tmp_path / 'runs'}", f"--carry_dir={tmp_path / 'carried'}"]) == 0
  packed = sorted(
    str(p.relative_to(tmp_path / "carried"))
    for p in (tmp_path / "carried").rglob("*")
    if p.is_file()
  )
  assert [p for p in packed if p.startswith("row/checkpoints/")] == [
    "row/checkpoints/checkpoint",
    "row/checkpoints/ckpt-5.data-00000-of-00001",
    "row/checkpoints/ckpt-5.index",
  ]
  assert "row/status.json" in packed and "row/hparams.json" in packed
  assert not [p for p in packed if p.endswith(".png") or "tfevents" in p]
  # A new machine: nothing but the carried folder.
  assert (
    carry.main(
      [f"--logdir={tmp_path / 'new_runs'}", f"--carry_dir={tmp_path / 'carried'}", "--unpack"]
    )
    == 0
  )
  second = make_trainer(tmp_path / "new_runs" / "row")
  assert second.restore() == 5
  second.fit()
  assert int(second.step.numpy()) == 12
  for a, b in zip(full_weights, weights(second.model), strict=True):
    np.testing.assert_array_equal(a, b)
  # Packing the finished run replaces the carried state: its training done, it travels as its
  # final/ weights (no optimizer state, no checkpoints/).
  assert (
    carry.main([f"--logdir={tmp_path / 'new_runs'}", f"--carry_dir={tmp_path / 'carried'}"]) == 0
  )
  assert not (tmp_path / "carried" / "row" / "checkpoints").exists()
  assert sorted(p.name for p in (tmp_path / "carried" / "row" / "final").iterdir()) == [
    "checkpoint",
    "ckpt-12.data-00000-of-00001",
    "ckpt-12.index",
  ]
  # Never backwards: the step-5 run packed again leaves the carried step-12 state alone.
  assert carry.carry(str(tmp_path / "runs"), str(tmp_path / "carried"), unpack=False) == [
    f"{tmp_path / 'carried' / 'row'}: kept (it is at step 12, {tmp_path / 'runs' / 'row'} at step 5)"
  ]
  assert (tmp_path / "carried" / "row" / "final" / "ckpt-12.index").exists()

  # Same step, its test-NLL evaluation further on: the partial file is carried, never a shorter one.
  def partial(run, done):
    np.savez(
      tmp_path / run / "row" / "nll_partial_pass0.npz", log_px=np.zeros(done), elbo=np.zeros(done)
    )

  partial("new_runs", 8)
  assert carry.carry(str(tmp_path / "new_runs"), str(tmp_path / "carried"), unpack=False) == [
    f"{tmp_path / 'carried' / 'row'}: step 12 kept, partial test NLL from "
    f"{tmp_path / 'new_runs' / 'row'}: nll_partial_pass0.npz (8 test examples)"
  ]
  partial("new_runs", 4)
  kept = carry.carry(str(tmp_path / "new_runs"), str(tmp_path / "carried"), unpack=False)
  assert kept == [
    f"{tmp_path / 'carried' / 'row'}: kept (it is at step 12, "
    f"{tmp_path / 'new_runs' / 'row'} at step 12)"
  ]
  assert len(np.load(tmp_path / "carried" / "row" / "nll_partial_pass0.npz")["log_px"]) == 8
  # A third machine resumes that evaluation; the first finishes it (partial file gone, results
  # written): packing then carries the results, and unpacking them on the third replaces its partial.
  assert (
    carry.main(
      [f"--logdir={tmp_path / 'third'}", f"--carry_dir={tmp_path / 'carried'}", "--unpack"]
    )
    == 0
  )
  assert len(np.load(tmp_path / "third" / "row" / "nll_partial_pass0.npz")["log_px"]) == 8
  (tmp_path / "new_runs" / "row" / "nll_partial_pass0.npz").unlink()
  (tmp_path / "new_runs" / "row" / "results.json").write_text('{"nll": 80.0}')
  # Finished and evaluated: it travels as its weights (final/, no optimizer slots) and results;
  # the carried resume state is removed.
  assert carry.carry(str(tmp_path / "new_runs"), str(tmp_path / "carried"), unpack=False)[
    0
  ].startswith(
    f"{tmp_path / 'carried' / 'row'}: finished at step 12, its final/ weights and results from "
    f"{tmp_path / 'new_runs' / 'row'} ("
  )
  packed = sorted(
    str(p.relative_to(tmp_path / "carried" / "row"))
    for p in (tmp_path / "carried" / "row").rglob("*")
    if p.is_file()
  )
  assert packed == [
    "final/checkpoint",
    "final/ckpt-12.data-00000-of-00001",
    "final/ckpt-12.index",
    "hparams.json",
    "results.json",
    "status.json",
  ]
  assert not [
    k
    for k in tf.train.load_checkpoint(
      str(tmp_path / "carried" / "row" / "final" / "ckpt-12")
    ).get_variable_to_shape_map()
    if k.startswith("optimizer/")
  ]
  assert (
    carry.main(
      [f"--logdir={tmp_path / 'third'}", f"--carry_dir={tmp_path / 'carried'}", "--unpack"]
    )
    == 0
  )
  assert (tmp_path / "third" / "row" / "results.json").read_text() == '{"nll": 80.0}'
  assert not (tmp_path / "third" / "row" / "nll_partial_pass0.npz").exists()
  # Nothing further on either way now.
  assert carry.carry(str(tmp_path / "third"), str(tmp_path / "carried"), unpack=False) == [
    f"{tmp_path / 'carried' / 'row'}: kept (it is at step 12, {tmp_path / 'third' / 'row'} at step 12)"
  ]
  # A machine with nothing but the finished run's weights: restored, nothing to train, the
  # uninterrupted run's weights.
  assert (
    carry.main(
      [f"--logdir={tmp_path / 'fourth'}", f"--carry_dir={tmp_path / 'carried'}", "--unpack"]
    )
    == 0
  )
  fourth = make_trainer(tmp_path / "fourth" / "row")
  assert fourth.fit() == {} and int(fourth.step.numpy()) == 12
  for a, b in zip(full_weights, weights(fourth.model), strict=True):
    np.testing.assert_array_equal(a, b)
  # The evaluation and sampling commands load it the same way (`harness.restore_weights`).
  model = make_trainer(tmp_path / "elsewhere").model
  assert harness.restore_weights(model, str(tmp_path / "fourth" / "row")).endswith("final/ckpt-12")
  for a, b in zip(full_weights, weights(model), strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*fourth/row/best"):
    harness.restore_weights(model, str(tmp_path / "fourth" / "row"), "best")


def test_sigusr1_stops_at_the_epoch_end_and_best_travels_in_the_checkpoint(
  tmp_path, monkeypatch, capsys, full_weights
):
  """SIGUSR1 mid-epoch: the run finishes the epoch (hook, best checkpoint), saves and stops. Its
  last epoch being its best, `experiments.carry` packs it without best/; the resumed run writes
  best/ again, equal to the original, and ends at the uninterrupted run's weights."""
  from experiments import carry

  early = dict(epochs=3, early_stopping_metric="val_loss", early_stopping_patience=5)

  def trainer_at(logdir):
    values = iter([3.0, 2.0, 1.0])
    trainer = make_trainer(logdir, **early)
    trainer.epoch_end_fn = lambda model, epoch: {"val_loss": next(values)}
    return trainer

  monkeypatch.setenv(harness.CRASH_ENV, "step@6:SIGUSR1")
  first = trainer_at(tmp_path / "runs" / "row")
  with pytest.raises(harness.Preempted) as stopped:
    first.fit()
  monkeypatch.delenv(harness.CRASH_ENV)
  assert stopped.value.signum == signal.SIGUSR1
  assert str(stopped.value) == (
    "preempted by SIGUSR1 at step 8 (the end of epoch 2): checkpoint written to "
    f"{tmp_path / 'runs' / 'row' / 'checkpoints' / 'ckpt-8'}; rerun the same command to resume"
  )
  best_path = str(tmp_path / "runs" / "row" / "best" / "ckpt-8")
  reader = tf.train.load_checkpoint(best_path)
  best = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}
  # A machine that ran the first epoch itself (its best/ at step 4) then unpacks the carry.
  older = make_trainer(tmp_path / "new_runs" / "row", max_steps=4, **early)
  older.epoch_end_fn = lambda model, epoch: {"val_loss": 3.0}
  older.fit()
  assert (tmp_path / "new_runs" / "row" / "best" / "ckpt-4.index").exists()
  assert carry.carry(str(tmp_path / "runs"), str(tmp_path / "carried"), unpack=False) == [
    f"{tmp_path / 'carried' / 'row'}: step 8 from {tmp_path / 'runs' / 'row'} (0.0 MiB; best/ = "
    "the checkpoint's weights, written again on resume)"
  ]
  assert not (tmp_path / "carried" / "row" / "best").exists()
  carry.carry(str(tmp_path / "new_runs"), str(tmp_path / "carried"), unpack=True)
  assert not (tmp_path / "new_runs" / "row" / "best").exists()
  capsys.readouterr()
  resumed = trainer_at(tmp_path / "new_runs" / "row")
  assert resumed.restore() == 8
  new_best = tmp_path / "new_runs" / "row" / "best" / "ckpt-8"
  assert capsys.readouterr().err.splitlines()[-1] == (
    f"best/ written again from {tmp_path / 'new_runs' / 'row' / 'checkpoints' / 'ckpt-8'} "
    "(step 8 is the best validation step)"
  )
  reader = tf.train.load_checkpoint(str(new_best))
  assert sorted(reader.get_variable_to_shape_map()) == sorted(best)
  del best["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]  # saves by this process, not a weight
  del best["_CHECKPOINTABLE_OBJECT_GRAPH"]  # names Keras gave the layers in this process
  assert len(best) == 15  # the 11 model variables, the 4 weights again under model/
  for k, v in best.items():
    np.testing.assert_array_equal(reader.get_tensor(k), v, err_msg=k)
  resumed.fit()
  for a, b in zip(full_weights, weights(resumed.model), strict=True):
    np.testing.assert_array_equal(a, b)


def test_sigusr2_stops_at_the_end_of_the_next_best_epoch(tmp_path, monkeypatch):
  """SIGUSR2 mid-epoch 2: epoch 2 is no new best, so the run goes on; epoch 3 is, and the run
  stops at its end with best/ and the checkpoint at the same step."""
  from experiments import carry

  values = iter([3.0, 4.0, 2.0, 1.0])
  trainer = make_trainer(
    tmp_path, epochs=4, early_stopping_metric="val_loss", early_stopping_patience=5
  )
  trainer.epoch_end_fn = lambda model, epoch: {"val_loss": next(values)}
  monkeypatch.setenv(harness.CRASH_ENV, "step@6:SIGUSR2")
  with pytest.raises(harness.Preempted) as stopped:
    trainer.fit()
  assert stopped.value.signum == signal.SIGUSR2
  assert str(stopped.value) == (
    "preempted by SIGUSR2 at step 12 (the end of epoch 3, the best): checkpoint written to "
    f"{tmp_path / 'checkpoints' / 'ckpt-12'}; rerun the same command to resume"
  )
  assert trainer.best_manager.latest_checkpoint.endswith("ckpt-12")
  assert carry.best_in_checkpoint(str(tmp_path))


def test_a_run_stopped_early_travels_as_its_best_weights_and_partial_evaluation(tmp_path):
  """Training done, its test NLL part way: packed as best/ (weights only), JSON files and the
  partial file, no checkpoints/; unpacked over an older copy of the run, the older checkpoints go,
  and the run has nothing left to train and the same best weights."""
  from experiments import carry

  early = dict(epochs=6, early_stopping_metric="val_loss", early_stopping_patience=1)

  def trainer_at(logdir, values, **cfg):
    values = iter(values)
    trainer = make_trainer(logdir, **{**early, **cfg})
    trainer.epoch_end_fn = lambda model, epoch: {"val_loss": next(values)}
    return trainer

  run = tmp_path / "runs" / "row"
  trainer = trainer_at(run, [3.0, 2.0, 4.0, 4.0, 4.0, 4.0])
  trainer.fit()
  assert int(trainer.step.numpy()) == 16  # stopped early after epoch 4
  trainer.restore_best()
  best = weights(trainer.model)
  np.savez(run / "nll_partial.npz", log_px=np.zeros(8), elbo=np.zeros(8))
  older = trainer_at(tmp_path / "new_runs" / "row", [3.0], max_steps=4)
  older.fit()
  assert carry.carry(str(tmp_path / "runs"), str(tmp_path / "carried"), unpack=False)[0] == (
    f"{tmp_path / 'carried' / 'row'}: step 16 from {run} (0.0 MiB; training done: its best/ "
    "weights, no optimizer state)"
  )
  packed = sorted(
    str(p.relative_to(tmp_path / "carried" / "row"))
    for p in (tmp_path / "carried" / "row").rglob("*")
    if p.is_file()
  )
  assert packed == [
    "best/checkpoint",
    "best/ckpt-8.data-00000-of-00001",
    "best/ckpt-8.index",
    "hparams.json",
    "nll_partial.npz",
    "status.json",
  ]
  carry.carry(str(tmp_path / "new_runs"), str(tmp_path / "carried"), unpack=True)
  assert not (tmp_path / "new_runs" / "row" / "checkpoints").exists()
  again = trainer_at(tmp_path / "new_runs" / "row", [])
  assert again.fit() == {} and int(again.step.numpy()) == 16
  assert again.restore_best().endswith("ckpt-8")
  for a, b in zip(best, weights(again.model), strict=True):
    np.testing.assert_array_equal(a, b)
