"""The training harness every experiment uses: one compiled step under a `tf.distribute` strategy,
checkpoints with automatic resume, TensorBoard, a progress bar, a NaN/Inf guard and early stopping.

A task plugs in a model and a `loss_fn(model, batch, ctx) -> LossOutput`. Global-batch semantics:
the harness minimises

    loss = sum(per_example over the global batch) / global_batch_size + regularizer

where each replica returns the per-example losses of its shard and its (replicated) regularizer; the
regularizer is divided by the replica count before the gradients are summed across replicas, so any
replica count gives the gradients of one device on the same global batch.

Resume is exact: the step counter, optimizer slots, early-stopping state, every variable in
`model.variables` (including layers kept in lists and Keras `SeedGenerator` states) and the data position (epoch order from `seed + epoch`, batches already
consumed are skipped) all come back from the latest checkpoint in `logdir`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Any, Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("default", "mirrored", "multi_worker")


class NonFiniteLossError(RuntimeError):
  """The loss became NaN/Inf; training stopped and the last good checkpoint was kept."""


@dataclasses.dataclass(frozen=True)
class LossOutput:
  """What a task's loss function returns for one replica's shard of the global batch.

  per_example: [B_replica] loss of each example (nats, summed over dimensions).
  regularizer: scalar added once to the global loss (weight decay, spectral terms, ...).
  metrics: scalars to log (means over the shard); averaged over replicas.
  """
  per_example: tf.Tensor
  regularizer: tf.Tensor | float = 0.0
  metrics: Mapping[str, tf.Tensor] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StepContext:
  """Schedule position handed to the loss function (tensors inside the compiled step)."""
  step: tf.Tensor          # int64, number of updates done before this one
  epoch: tf.Tensor         # int64, 0-based epoch of this step
  steps_per_epoch: int
  total_steps: int
  total_epochs: int
  global_batch_size: int
  num_replicas: int


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Settings of one training run (experiments build it from the common flags)."""
  logdir: str
  batch_size: int                 # global batch, split over replicas
  epochs: int
  max_steps: int | None = None    # stop after this many updates (smoke runs); schedules still use epochs
  seed: int = 0
  jit_compile: bool = False
  log_every: int = 50             # steps between TensorBoard scalars / progress-bar updates / NaN checks
  checkpoint_every: int | None = None  # steps; None = at the end of every epoch
  keep_checkpoints: int = 3
  early_stopping_metric: str | None = None  # a key returned by `epoch_end_fn`, lower is better
  early_stopping_patience: int | None = None
  early_stopping_start_epoch: int = 0       # epochs before this do not count (e.g. KL warm-up)
  progress: bool = True
  hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def setup_runtime(*, strategy: str = "default", precision: str = "float32") -> tf.distribute.Strategy:
  """Sets the Keras mixed-precision policy and returns the `tf.distribute` strategy.

  `multi_worker` reads the cluster from TF_CONFIG. Call before building models.
  """
  if precision not in PRECISIONS:
    raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
  keras.mixed_precision.set_global_policy(precision)
  if strategy == "default":
    return tf.distribute.get_strategy()
  if strategy == "mirrored":
    return tf.distribute.MirroredStrategy()
  if strategy == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable")
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"--strategy must be one of {STRATEGIES}, got {strategy!r}")


def wrap_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
  """Adds dynamic loss scaling when the global policy is mixed_float16."""
  if keras.mixed_precision.global_policy().name == "mixed_float16":
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


class Trainer:
  """Custom training loop with checkpoints, TensorBoard, progress bar, NaN guard, early stopping.

  Args:
    config: the run's `TrainConfig`.
    strategy: from `setup_runtime`; model and optimizer must be built inside `strategy.scope()`.
    model: a built Keras model (its variables exist).
    optimizer: a Keras optimizer (learning-rate schedules are evaluated on its iteration counter).
    loss_fn: `(model, batch, ctx: StepContext) -> LossOutput`, called in replica context.
    train_data: unbatched, finite training set; the harness shuffles it per epoch with
      `seed + epoch`, applies `epoch_transform(dataset, seed)` and batches by the global batch.
    epoch_transform: per-epoch transform with a fresh seed (e.g. dynamic binarization).
    epoch_end_fn: `(model, epoch) -> dict of floats`, called at each epoch end inside the
      TensorBoard writer (write images there); the values are logged and drive early stopping.
    grad_transform: `(grads, variables) -> grads` applied after the cross-replica sum.
  """

  def __init__(self, *, config: TrainConfig, strategy: tf.distribute.Strategy, model: keras.Model,
               optimizer: keras.optimizers.Optimizer,
               loss_fn: Callable[[keras.Model, Any, StepContext], LossOutput],
               train_data: tf.data.Dataset,
               epoch_transform: Callable[[tf.data.Dataset, int], tf.data.Dataset] | None = None,
               epoch_end_fn: Callable[[keras.Model, int], Mapping[str, float]] | None = None,
               grad_transform: Callable[[list, list], list] | None = None):
    self.config = config
    self.strategy = strategy
    self.model = model
    self.optimizer = optimizer
    self.loss_fn = loss_fn
    self.train_data = train_data
    self.epoch_transform = epoch_transform
    self.epoch_end_fn = epoch_end_fn
    self.grad_transform = grad_transform
    self.num_replicas = strategy.num_replicas_in_sync
    if config.batch_size % self.num_replicas:
      raise ValueError(f"global batch {config.batch_size} is not divisible by "
                       f"{self.num_replicas} replicas")
    num_train = int(train_data.cardinality())
    if num_train < 0:
      num_train = sum(1 for _ in train_data)
    self.steps_per_epoch = num_train // config.batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f"{num_train} training examples are fewer than one batch of {config.batch_size}")
    self.total_steps = self.steps_per_epoch * config.epochs
    self.stop_step = min(self.total_steps, config.max_steps or self.total_steps)

    with strategy.scope():
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.best_metric = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best")
      self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_epochs")
      optimizer.build(model.trainable_variables)
    # Keras 3 layers held in Python lists, and SeedGenerator states, are in `model.variables`
    # but not in TF's object graph: checkpoint that ordered list explicitly (its order is fixed
    # by the model's code, unlike the auto-generated layer names in variable paths).
    self.checkpoint = tf.train.Checkpoint(
        model=model, model_variables=[v.value for v in model.variables], optimizer=optimizer,
        step=self.step, best_metric=self.best_metric, bad_epochs=self.bad_epochs)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, os.path.join(config.logdir, "checkpoints"), config.keep_checkpoints)
    self.best_manager = tf.train.CheckpointManager(
        self.checkpoint, os.path.join(config.logdir, "best"), max_to_keep=1)
    self.writer = tf.summary.create_file_writer(config.logdir)
    self._train_step = self._make_train_step()

  # --------------------------------------------------------------------------- compiled step

  def _make_train_step(self):
    cfg, model, optimizer = self.config, self.model, self.optimizer
    variables = model.trainable_variables

    def replica_step(batch, step, epoch):
      ctx = StepContext(step=step, epoch=epoch, steps_per_epoch=self.steps_per_epoch,
                        total_steps=self.total_steps, total_epochs=cfg.epochs,
                        global_batch_size=cfg.batch_size, num_replicas=self.num_replicas)
      with tf.GradientTape() as tape:
        out = self.loss_fn(model, batch, ctx)
        per_example = tf.cast(out.per_example, tf.float32)
        regularizer = tf.cast(out.regularizer, tf.float32)
        loss = tf.reduce_sum(per_example) / cfg.batch_size + regularizer / self.num_replicas
        scaled = optimizer.scale_loss(loss)
      grads = tape.gradient(scaled, variables)
      grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
      replica_ctx = tf.distribute.get_replica_context()
      if self.num_replicas > 1:
        grads = replica_ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
      if self.grad_transform is not None:
        grads = self.grad_transform(grads, variables)
      grad_norm = tf.linalg.global_norm([tf.cast(g, tf.float32) for g in grads])
      optimizer.apply_gradients(zip(grads, variables))
      metrics = {k: tf.cast(v, tf.float32) for k, v in out.metrics.items()}
      # Replica means; the loss is already this replica's share of the global mean.
      metrics = {k: replica_ctx.all_reduce(tf.distribute.ReduceOp.MEAN, v) for k, v in metrics.items()}
      metrics["loss"] = replica_ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)
      metrics["grad_norm"] = grad_norm
      return metrics

    def train_step(batch):
      step = self.step.read_value()
      epoch = step // self.steps_per_epoch
      per_replica = self.strategy.run(replica_step, args=(batch, step, epoch))
      self.step.assign_add(1)
      # Every replica holds the same all-reduced values: take the first.
      return {k: self.strategy.experimental_local_results(v)[0] for k, v in per_replica.items()}

    return tf.function(train_step, jit_compile=cfg.jit_compile if self.num_replicas == 1 else None)

  # --------------------------------------------------------------------------- data

  def epoch_dataset(self, epoch: int, skip: int = 0) -> tf.data.Dataset:
    """Global batches of `epoch`, a fixed function of (seed, epoch); the first `skip` dropped."""
    seed = self.config.seed * 100_003 + epoch
    n = int(self.train_data.cardinality())
    ds = self.train_data.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=False)
    if self.epoch_transform is not None:
      ds = self.epoch_transform(ds, seed)
    ds = ds.batch(self.config.batch_size, drop_remainder=True).skip(skip)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return self.strategy.experimental_distribute_dataset(ds)

  # --------------------------------------------------------------------------- loop

  def restore(self) -> int:
    """Restores the latest checkpoint in logdir (if any); returns the step reached."""
    path = self.manager.latest_checkpoint
    if path:
      self._restore(path)
      print(f"Resumed from {path} at step {int(self.step.numpy())}", file=sys.stderr)
    return int(self.step.numpy())

  def _restore(self, path: str):
    try:
      self.checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
      raise ValueError(f"checkpoint {path} does not match this model/optimizer (was --logdir "
                       f"used by another configuration?): {str(e).splitlines()[0][:300]}") from e

  def restore_best(self) -> str | None:
    """Loads the best checkpoint (early stopping) if one was written; returns its path."""
    path = self.best_manager.latest_checkpoint
    if path:
      self._restore(path)
    return path

  def _save(self, step: int):
    self.manager.save(checkpoint_number=step)

  def _log_hparams(self):
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
    values = {k: (v if isinstance(v, (bool, int, float, str)) else str(v))
              for k, v in dict(self.config.hparams).items()}
    if values:
      with self.writer.as_default():
        hp.hparams(values)

  def fit(self) -> dict[str, float]:
    """Trains until `epochs` (or `max_steps`); returns the last logged scalars."""
    cfg = self.config
    os.makedirs(cfg.logdir, exist_ok=True)
    start = self.restore()
    if start == 0:
      self._log_hparams()
    if start >= self.stop_step:
      print(f"Nothing to do: step {start} already reached the target {self.stop_step}", file=sys.stderr)
      return {}
    progbar = keras.utils.Progbar(self.stop_step - start, verbose=1 if cfg.progress else 0,
                                  unit_name="step")
    last = {}
    window, window_start, window_time = [], start, time.perf_counter()
    step = start
    stopped_early = False
    while step < self.stop_step and not stopped_early:
      epoch = step // self.steps_per_epoch
      for batch in self.epoch_dataset(epoch, skip=step % self.steps_per_epoch):
        window.append(self._train_step(batch))
        step += 1
        at_epoch_end = step % self.steps_per_epoch == 0
        at_checkpoint = (step % cfg.checkpoint_every == 0) if cfg.checkpoint_every else at_epoch_end
        if step % cfg.log_every == 0 or at_checkpoint or at_epoch_end or step == self.stop_step:
          last = self._flush(window, step, window_start, window_time)
          progbar.update(step - start, [(k, last[k]) for k in ("loss", "examples_per_s")])
          window, window_start, window_time = [], step, time.perf_counter()
        if at_checkpoint or step == self.stop_step:
          self._save(step)
        if at_epoch_end:
          stopped_early = self._end_epoch(epoch, step)
        if step >= self.stop_step or stopped_early:
          break
    self.writer.flush()
    return last

  def _flush(self, window, step, window_start, window_time) -> dict[str, float]:
    """Host-side NaN guard and TensorBoard scalars for the steps since the last flush."""
    values = {k: np.array([m[k].numpy() for m in window]) for k in window[0]}
    bad = ~np.isfinite(values["loss"])
    if bad.any():
      first_bad = window_start + int(np.argmax(bad)) + 1
      kept = self.manager.latest_checkpoint or "none written yet"
      raise NonFiniteLossError(
          f"non-finite loss ({values['loss'][bad][0]}) at step {first_bad}; training stopped, "
          f"last good checkpoint kept: {kept}")
    elapsed = max(time.perf_counter() - window_time, 1e-9)
    means = {k: float(v.mean()) for k, v in values.items()}
    means["examples_per_s"] = len(window) * self.config.batch_size / elapsed
    means["learning_rate"] = float(np.asarray(keras.ops.convert_to_numpy(self.optimizer.learning_rate)))
    with self.writer.as_default(step=step):
      for k, v in means.items():
        tf.summary.scalar(f"train/{k}", v)
    return means

  def _end_epoch(self, epoch: int, step: int) -> bool:
    """Runs `epoch_end_fn`; handles early stopping. Returns True to stop."""
    if self.epoch_end_fn is None:
      return False
    with self.writer.as_default(step=step):
      values = dict(self.epoch_end_fn(self.model, epoch))
      for k, v in values.items():
        tf.summary.scalar(f"epoch/{k}", v)
    cfg = self.config
    if cfg.early_stopping_metric is None:
      return False
    value = float(values[cfg.early_stopping_metric])
    if not math.isfinite(value):
      raise NonFiniteLossError(f"{cfg.early_stopping_metric} is {value} after epoch {epoch + 1}")
    if value < float(self.best_metric.numpy()):
      self.best_metric.assign(value)
      self.bad_epochs.assign(0)
      self.best_manager.save(checkpoint_number=step)
    elif epoch + 1 > cfg.early_stopping_start_epoch:
      self.bad_epochs.assign_add(1)
    self._save(step)  # keep the early-stopping counters with the weights
    if cfg.early_stopping_patience is not None and self.bad_epochs.numpy() >= cfg.early_stopping_patience:
      print(f"Early stopping after epoch {epoch + 1}: no improvement of {cfg.early_stopping_metric} "
            f"for {cfg.early_stopping_patience} epochs", file=sys.stderr)
      return True
    return False

