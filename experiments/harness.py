"""The training harness every experiment uses: one compiled step under a `tf.distribute` strategy,
checkpoints with automatic resume, TensorBoard, a progress bar, a NaN/Inf guard, loss scaling,
preemption handling and early stopping.

A task plugs in a model and a `loss_fn(model, batch, ctx) -> LossOutput`. The guarantees:

**Global batch, whoever runs it.** The harness minimises

    loss = sum(per_example over the global batch) / global_batch_size + regularizer

Each replica returns the per-example losses of its shard and its (replicated) regularizer; the
regularizer is divided by the replica count. **The harness aggregates the gradients**: one
cross-replica SUM of every replica's share, then (in this order) un-scaling of the float16 loss
scale, the finiteness check, `grad_transform` (clipping, AdamNormGrad, ...) on the global gradient,
and the optimizer update. The Keras 3 optimizer's own cross-replica sum (TF backend,
`_all_reduce_sum_gradients`) is switched off for the optimizer the Trainer drives, so nothing is
summed twice: any replica or worker count gives the update of one device on the same global batch
(tested with SGD, which is sensitive to the gradient scale, on 2 logical CPUs and on 2 worker
processes).

**Mixed precision.** `mixed_bfloat16` needs no loss scaling. Under `mixed_float16` the harness keeps
a dynamic loss scale (initial 2^15, doubled after 2000 finite steps, halved on overflow, as Keras'
`LossScaleOptimizer`); a step whose gradients overflow is skipped and counted
(`train/overflow_steps`); `grad_transform` and the logged `grad_norm` see unscaled gradients.

**NaN guard.** A step whose loss or gradient norm is not finite is never applied; the run stops at
the next log point naming the step (float16 overflow steps excepted, see above). Non-finite weights
(e.g. BatchNorm statistics of a bad batch) are never written to a checkpoint.

**Exact resume.** The step counter, optimizer slots, loss scale, early-stopping state, every
variable in `model.variables` (including layers kept in lists and Keras `SeedGenerator` states) and
the data position (epoch order from `seed + epoch`, batches already consumed are skipped) come back
from the checkpoint `logdir/status.json` names (else the newest readable one); a damaged one is
skipped with a warning and the previous one used. A checkpoint at an epoch end is written after
`epoch_end_fn` ran, so random numbers drawn there (sample grids) are replayed identically. With `setup_runtime(deterministic=True)` a resumed
run ends bit-identical to an uninterrupted one, whatever instant it was killed at: `status.json`,
written last in every save (write-then-rename), names the checkpoint a rerun resumes from
(docs/harness.md, "Crash points"; `crash_point` and $GENMODELS_CRASH_AT test it).

**Preemption.** SIGTERM or SIGINT during `fit` finishes the current step, writes a checkpoint and
raises `Preempted` (scripts print one line and exit 128 + signal); rerunning the command resumes.
A second signal stops the process at once with 128 + signal, also in the middle of a long TensorFlow
call (`common_tf.preemption.deferred_signals`). SIGUSR1 asks for the same stop at the end of the
current epoch (after `epoch_end_fn` and the best checkpoint), exit 128 + 10; SIGUSR2 at the end of
the next epoch that is a new best (early stopping), exit 128 + 12. A run stopped at its best epoch
has its best weights in its checkpoint, so `experiments.carry` need not carry best/ (`restore`
writes it again).
Under `multi_worker` each process handles its own signal; a lost worker makes the others fail in
their next collective: `fit` raises `WorkerLost` naming the peer (scripts print one line with the
command to restart on every worker and exit with `EXIT_WORKER_LOST`, 75), and restarting all of
them resumes from the chief's newest checkpoint.

**Multi-worker.** The chief (task 0) writes checkpoints and TensorBoard logs to `logdir`; other
workers write their (identical) checkpoints to `logdir/.worker-<id>` and no logs. `fit` returns on
every worker once all have written their checkpoints (the others then read the chief's), and a
script's workers leave together (`wait_for_every_worker`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from common_tf import host, preemption
from experiments import results

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("default", "mirrored", "multi_worker")

# Keras' LossScaleOptimizer defaults.
INITIAL_LOSS_SCALE = 2.0**15
LOSS_SCALE_GROWTH_STEPS = 2000


class NonFiniteLossError(RuntimeError):
  """The loss or the gradients became NaN/Inf; training stopped and the last good checkpoint was kept."""


# SIGTERM/SIGINT arrived during `fit`; a checkpoint was written. Rerun the command to resume.
Preempted = preemption.Preempted
# What `fit` takes as a request to stop: SIGTERM / SIGINT after the step in hand, SIGUSR1 at the end
# of the epoch in hand.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


@contextlib.contextmanager
def _stop_at_best_request():
  """In the block SIGUSR2 asks `fit` to stop at the end of the next epoch whose validation
  metric is a new best (early stopping; its best/ weights are then the checkpoint's). A list that
  is non-empty once the signal arrived; outside the main thread it stays empty."""
  request = []
  if threading.current_thread() is not threading.main_thread():
    yield request
    return
  previous = signal.signal(signal.SIGUSR2, lambda *_: request.append(True))
  try:
    yield request
  finally:
    signal.signal(signal.SIGUSR2, previous)


# Tests only: "<point>@<step>" makes the process SIGKILL itself at that point of `fit` (see
# `CRASH_POINTS`, docs/harness.md "Crash points"), as a power cut or the OOM killer would.
CRASH_ENV = "GENMODELS_CRASH_AT"
CRASH_POINTS = (
  "step",  # an update applied in memory, nothing else done for it
  "epoch_end_fn",  # the epoch-end hook ran (its random draws), no early-stopping update
  "best_checkpoint_files",  # best/ checkpoint files written, best/checkpoint not yet naming them
  "best_checkpoint",  # best/ checkpoint recorded, the regular checkpoint not yet written
  "checkpoint_files",  # checkpoint files written, checkpoints/checkpoint not yet naming them
  "checkpoint",  # checkpoint recorded, status.json not yet rewritten
  "status",  # status.json rewritten: the save is complete
)


def crash_point(point: str, step: int) -> None:
  """SIGKILLs this process if $GENMODELS_CRASH_AT is `<point>@<step>` (crash-consistency tests);
  `<point>@<step>:SIGTERM` sends that signal instead (a preemption arriving there)."""
  spec = os.environ.get(CRASH_ENV)
  if spec and spec.split(":")[0] == f"{point}@{step}":
    sys.stderr.flush()
    os.kill(os.getpid(), signal.Signals[spec.split(":")[1]] if ":" in spec else signal.SIGKILL)


# Exit code of a script whose multi-worker cluster lost a worker (sysexits.h EX_TEMPFAIL: a
# temporary failure, the same command is meant to be run again).
EXIT_WORKER_LOST = 75


class WorkerLost(RuntimeError):
  """Another worker of a multi-worker cluster stopped (killed, crashed, its machine lost); this one
  cannot go on (every step needs all workers). Restarting every worker with the same command
  resumes from the chief's newest checkpoint."""

  def __init__(self, message: str, peer: str):
    super().__init__(message)
    self.peer = peer


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

  step: tf.Tensor  # int64, number of updates done before this one
  epoch: tf.Tensor  # int64, 0-based epoch of this step
  steps_per_epoch: int
  total_steps: int
  total_epochs: int
  global_batch_size: int
  num_replicas: int


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Settings of one training run (experiments build it from the common flags)."""

  logdir: str
  batch_size: int  # global batch, split over replicas
  epochs: int
  max_steps: int | None = (
    None  # stop after this many updates (smoke runs); schedules still use epochs
  )
  seed: int = 0
  jit_compile: bool = False
  log_every: int = 50  # steps between TensorBoard scalars / progress-bar updates / NaN checks
  checkpoint_every: int | None = None  # steps; None = at the end of every epoch
  keep_checkpoints: int = 3
  early_stopping_metric: str | None = None  # a key returned by `epoch_end_fn`, lower is better
  early_stopping_patience: int | None = None  # stop once MORE than this many epochs did not improve
  early_stopping_start_epoch: int = 0  # epochs before this do not count (e.g. KL warm-up)
  progress: bool = True
  hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for name in ("batch_size", "epochs", "log_every", "keep_checkpoints"):
      check_positive(name, getattr(self, name))
    for name in ("max_steps", "checkpoint_every", "early_stopping_patience"):
      if getattr(self, name) is not None:
        check_positive(
          name, getattr(self, name), minimum=0 if name == "early_stopping_patience" else 1
        )
    if self.seed < 0:
      raise ValueError(f"--seed must be >= 0, got {self.seed}")
    if not self.logdir:
      raise ValueError("--logdir must name a directory")
    if os.path.exists(self.logdir) and not os.path.isdir(self.logdir):
      raise ValueError(f"--logdir {self.logdir} is a file, not a directory")


def check_positive(name: str, value, *, minimum: int = 1):
  """Raises a one-line ValueError naming the flag unless `value >= minimum`."""
  if value is None or value < minimum:
    raise ValueError(f"--{name} must be >= {minimum}, got {value}")


def setup_runtime(
  *,
  strategy: str = "default",
  precision: str = "float32",
  deterministic: bool = False,
  seed: int | None = None,
  allow_tf32: bool = True,
) -> tf.distribute.Strategy:
  """Sets the Keras mixed-precision policy, determinism and TF32; returns the strategy.

  `multi_worker` reads the cluster from TF_CONFIG. `deterministic` turns on
  `tf.config.experimental.enable_op_determinism()` (and seeds Python, NumPy and TF with `seed`):
  two runs with the same flags, and a killed-and-resumed run, then end bit-identical.
  `allow_tf32=False` keeps float32 matmuls/convolutions exact on Ampere+ GPUs (no effect on CPUs).
  Call before building models.
  """
  if precision not in PRECISIONS:
    raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
  if strategy not in STRATEGIES:
    raise ValueError(f"--strategy must be one of {STRATEGIES}, got {strategy!r}")
  if strategy == "multi_worker" and "TF_CONFIG" not in os.environ:
    raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable")
  keras.mixed_precision.set_global_policy(precision)
  tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)
  if deterministic:
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed or 0)
  if strategy == "mirrored":
    return tf.distribute.MirroredStrategy()
  if strategy == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


@functools.lru_cache(maxsize=1)
def code_commit() -> str | None:
  """The git commit of the code that is running (None outside a git checkout): read once per
  process (a `Trainer` reads it when built), so a checkout updated under a long run does not
  relabel the code that run has loaded."""
  import subprocess

  try:
    out = subprocess.run(
      ["git", "rev-parse", "--short", "HEAD"],
      cwd=os.path.dirname(__file__),
      capture_output=True,
      text=True,
      timeout=10,
    )
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() or None if out.returncode == 0 else None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True unless this process is a non-chief worker of a multi-worker cluster."""
  return _resolver_is_chief(getattr(strategy, "cluster_resolver", None))


def _resolver_is_chief(resolver) -> bool:
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  jobs = resolver.cluster_spec().as_dict()
  if "chief" in jobs:
    return resolver.task_type == "chief"
  return resolver.task_type in (None, "worker") and (resolver.task_id or 0) == 0


# How long a worker waits at the end of a multi-worker run for the others (`wait_for_every_worker`):
# the chief may write results for a long while after the last computation every worker takes part
# in. A worker that died is noticed sooner, by the coordination service's heartbeats (~10 s).
END_OF_RUN_TIMEOUT_S = 24 * 3600
# How long the workers wait for each other's checkpoint writes at the end of `Trainer.fit`.
FIT_END_TIMEOUT_S = 3600

_barrier_calls: dict[str, int] = {}


def barrier(name: str, *, timeout_s: float) -> tf.errors.OpError | None:
  """Blocks until every worker of this process's multi-worker cluster has reached the barrier
  `name` as often as this one (a barrier of TensorFlow's coordination service, one id per call);
  returns at once outside a multi-worker run. Returns None, or the error of a failed barrier (a
  peer died, or the chief, which hosts the coordination service, is gone)."""
  from tensorflow.python.eager import context  # the public API has no barrier

  if context.context().coordination_service is None:
    return None
  _barrier_calls[name] = _barrier_calls.get(name, 0) + 1
  try:
    context.context().wait_at_barrier(
      f"genmodels/{name}/{_barrier_calls[name]}", int(timeout_s * 1000)
    )
  except tf.errors.OpError as e:
    return e
  return None


def wait_for_every_worker(*, timeout_s: float = END_OF_RUN_TIMEOUT_S) -> tf.errors.OpError | None:
  """`barrier("end-of-run")`: the scripts call it after `main` (`experiments.flags.run`), so no
  worker exits while another may still read from it.

  A worker's part of a collective can end before its peers have read what it sent (the all-gather
  of a sharded test NLL: each peer pulls the data over gRPC, and retries); a worker that exited
  then would fail its peer's read with "Connection refused". Seen by the other workers, the wait
  fails when the chief has already passed it and exited.
  """
  return barrier("end-of-run", timeout_s=timeout_s)


def is_chief_process() -> bool:
  """`is_chief` of this process's cluster as TF_CONFIG describes it (True without one)."""
  if "TF_CONFIG" not in os.environ:
    return True
  return _resolver_is_chief(tf.distribute.cluster_resolver.TFConfigClusterResolver())


def _worker_id(strategy) -> int:
  resolver = getattr(strategy, "cluster_resolver", None)
  return int(getattr(resolver, "task_id", 0) or 0)


def _cluster(strategy) -> dict:
  """{job: [addresses]} of a multi-worker strategy's cluster; {} for one process."""
  resolver = getattr(strategy, "cluster_resolver", None)
  return resolver.cluster_spec().as_dict() if resolver is not None else {}


def lost_peer(
  error: Exception, cluster: Mapping[str, list] | None = None, *, own: tuple[str, int] | None = None
) -> str:
  """The worker a collective error names as gone, e.g. "worker 1 (127.0.0.1:4242)".

  TensorFlow's coordination service reports "The following tasks are unhealthy (stopped sending
  heartbeats): /job:worker/replica:0/task:1"; other errors name the peer in
  "Error reported from /job:worker/task:1" or only as an address. `own` (job, index) is skipped.
  """
  import re

  text = str(getattr(error, "message", None) or error)
  tail = text.split("unhealthy", 1)[1] if "unhealthy" in text else text
  for job, index in re.findall(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)", tail):
    if own is not None and (job, int(index)) == own:
      continue
    addresses = (cluster or {}).get(job, [])
    address = f" ({addresses[int(index)]})" if int(index) < len(addresses) else ""
    return f"{job} {index}{address}"
  for addresses in (cluster or {}).values():
    for address in addresses:
      if address in text:
        return address
  return "a peer"


class _LossScale:
  """Dynamic float16 loss scale (Keras LossScaleOptimizer's rule); state lives in checkpoints."""

  def __init__(self, enabled: bool):
    self.enabled = enabled
    agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
    self.scale = tf.Variable(
      INITIAL_LOSS_SCALE if enabled else 1.0,
      dtype=tf.float32,
      trainable=False,
      name="loss_scale",
      aggregation=agg,
    )
    self.good_steps = tf.Variable(
      0, dtype=tf.int64, trainable=False, name="loss_scale_good_steps", aggregation=agg
    )
    self.overflow_steps = tf.Variable(
      0, dtype=tf.int64, trainable=False, name="overflow_steps", aggregation=agg
    )

  def after_finite_step(self):
    if not self.enabled:
      return
    grow = self.good_steps >= LOSS_SCALE_GROWTH_STEPS - 1
    self.scale.assign(tf.where(grow, self.scale * 2.0, self.scale))
    self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), self.good_steps + 1))

  def after_overflow(self):
    self.overflow_steps.assign_add(1)
    if self.enabled:
      self.scale.assign(self.scale * 0.5)
      self.good_steps.assign(0)


def _disable_optimizer_all_reduce(optimizer: keras.optimizers.Optimizer):
  """The harness sums gradients across replicas itself; stop Keras 3 from summing them again."""
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    raise ValueError("pass the plain optimizer: the Trainer does float16 loss scaling itself")
  if not hasattr(optimizer, "_all_reduce_sum_gradients"):
    raise RuntimeError(
      f"{type(optimizer).__name__} has no _all_reduce_sum_gradients: this Keras "
      "version aggregates gradients differently; update experiments/harness.py"
    )
  optimizer._all_reduce_sum_gradients = lambda grads_and_vars: grads_and_vars


class Trainer:
  """Custom training loop with checkpoints, TensorBoard, progress bar, NaN guard, early stopping.

  Args:
    config: the run's `TrainConfig`.
    strategy: from `setup_runtime`; model and optimizer must be built inside `strategy.scope()`.
    model: a built Keras model (its variables exist).
    optimizer: a plain Keras optimizer (no LossScaleOptimizer: the harness scales float16 losses);
      learning-rate schedules are evaluated on its iteration counter, which counts applied updates.
    loss_fn: `(model, batch, ctx: StepContext) -> LossOutput`, called in replica context.
    train_data: unbatched, finite training set; the harness shuffles it per epoch with
      `seed + epoch`, applies `epoch_transform(dataset, seed)` and batches by the global batch.
    epoch_transform: per-epoch transform with a fresh seed (e.g. dynamic binarization).
    epoch_end_fn: `(model, epoch) -> dict of floats`, called at each epoch end inside the
      TensorBoard writer (write images there); the values are logged and drive early stopping.
      It may draw random numbers: the epoch-end checkpoint is written after it.
    grad_transform: `(grads, variables) -> grads` applied to the global (cross-replica summed,
      unscaled) gradient, in replica context (identical on every replica).
  """

  def __init__(
    self,
    *,
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss_fn: Callable[[keras.Model, Any, StepContext], LossOutput],
    train_data: tf.data.Dataset,
    epoch_transform: Callable[[tf.data.Dataset, int], tf.data.Dataset] | None = None,
    epoch_end_fn: Callable[[keras.Model, int], Mapping[str, float]] | None = None,
    grad_transform: Callable[[list, list], list] | None = None,
  ):
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
    self.is_chief = is_chief(strategy)
    if config.batch_size % self.num_replicas:
      raise ValueError(
        f"global batch {config.batch_size} is not divisible by {self.num_replicas} replicas"
      )
    num_train = int(train_data.cardinality())
    if num_train < 0:
      num_train = sum(1 for _ in train_data)
    self.steps_per_epoch = num_train // config.batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(
        f"{num_train} training examples are fewer than one batch of {config.batch_size}"
      )
    self.total_steps = self.steps_per_epoch * config.epochs
    self.stop_step = min(self.total_steps, config.max_steps or self.total_steps)
    self.float16 = keras.mixed_precision.global_policy().name == "mixed_float16"
    code_commit()  # the commit of the code this process loaded, before any checkout changes
    _disable_optimizer_all_reduce(optimizer)

    with strategy.scope():
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.best_metric = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best")
      self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_epochs")
      self.best_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_step")
      self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds")
      self.loss_scale = _LossScale(self.float16)
      optimizer.build(model.trainable_variables)
    # Keras 3 layers held in Python lists, and SeedGenerator states, are in `model.variables`
    # but not in TF's object graph: checkpoint that ordered list explicitly (its order is fixed
    # by the model's code, unlike the auto-generated layer names in variable paths). The list
    # holds the Keras variables themselves, the objects the optimizer also tracks, so each weight
    # is written once (a list of their `.value`s wrote the trainable weights a second time,
    # under the optimizer; such checkpoints restore the same).
    self.checkpoint = tf.train.Checkpoint(
      model=model,
      model_variables=list(model.variables),
      optimizer=optimizer,
      step=self.step,
      best_metric=self.best_metric,
      bad_epochs=self.bad_epochs,
      best_step=self.best_step,
      train_seconds=self.train_seconds,
      loss_scale=self.loss_scale.scale,
      loss_scale_good_steps=self.loss_scale.good_steps,
      overflow_steps=self.loss_scale.overflow_steps,
    )
    # Every worker saves (saving may run collectives); only the chief's copy is the run's.
    own_dir = (
      config.logdir
      if self.is_chief
      else os.path.join(config.logdir, f".worker-{_worker_id(strategy)}")
    )
    self.manager = tf.train.CheckpointManager(
      self.checkpoint, os.path.join(own_dir, "checkpoints"), config.keep_checkpoints
    )
    # The weights alone (no optimizer slots, no counters): what is evaluated and kept of a run.
    # best/ (early stopping) holds them, and final/ those of a finished run (`write_final`).
    self.weights = tf.train.Checkpoint(
      model=model, model_variables=[v.value for v in model.variables]
    )
    self.best_manager = tf.train.CheckpointManager(
      self.weights, os.path.join(own_dir, BEST_DIR), max_to_keep=1
    )
    self.final_manager = tf.train.CheckpointManager(
      self.weights, os.path.join(own_dir, FINAL_DIR), max_to_keep=1
    )
    self._restore_dir = os.path.join(config.logdir, "checkpoints")
    self._best_dir = os.path.join(config.logdir, BEST_DIR)
    self._final_dir = os.path.join(config.logdir, FINAL_DIR)
    self.writer = (
      tf.summary.create_file_writer(config.logdir)
      if self.is_chief
      else tf.summary.create_noop_writer()
    )
    self._train_step = self._make_train_step()

  # --------------------------------------------------------------------------- compiled step

  def _make_train_step(self):
    cfg, model, optimizer, strategy = self.config, self.model, self.optimizer, self.strategy
    variables = model.trainable_variables

    def replica_step(batch, step, epoch, scale):
      ctx = StepContext(
        step=step,
        epoch=epoch,
        steps_per_epoch=self.steps_per_epoch,
        total_steps=self.total_steps,
        total_epochs=cfg.epochs,
        global_batch_size=cfg.batch_size,
        num_replicas=self.num_replicas,
      )
      with tf.GradientTape() as tape:
        out = self.loss_fn(model, batch, ctx)
        per_example = tf.cast(out.per_example, tf.float32)
        regularizer = tf.cast(out.regularizer, tf.float32)
        loss = tf.reduce_sum(per_example) / cfg.batch_size + regularizer / self.num_replicas
        scaled = loss * scale if self.float16 else loss
      grads = tape.gradient(scaled, variables)
      grads = [
        tf.zeros_like(v) if g is None else tf.cast(g, v.dtype) for g, v in zip(grads, variables)
      ]
      replica_ctx = tf.distribute.get_replica_context()
      if self.num_replicas > 1:  # the one cross-replica sum (see module docstring)
        grads = replica_ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        total_loss = replica_ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)
      else:
        total_loss = loss
      if self.float16:
        grads = [g / scale for g in grads]  # exact: the scale is a power of two
      grad_norm = tf.linalg.global_norm(grads)
      finite = tf.logical_and(tf.math.is_finite(grad_norm), tf.math.is_finite(total_loss))
      if self.grad_transform is not None:
        grads = self.grad_transform(grads, variables)
      metrics = {k: tf.cast(v, tf.float32) for k, v in out.metrics.items()}
      metrics = {
        k: replica_ctx.all_reduce(tf.distribute.ReduceOp.MEAN, v) for k, v in metrics.items()
      }
      metrics["loss"] = total_loss
      metrics["grad_norm"] = grad_norm
      return grads, finite, metrics

    def apply(*grads):
      optimizer.apply(list(grads), variables)

    def train_step(batch):
      step = self.step.read_value()
      epoch = step // self.steps_per_epoch
      scale = self.loss_scale.scale.read_value()
      grads, finite, metrics = strategy.run(replica_step, args=(batch, step, epoch, scale))
      # Every replica holds the same all-reduced values: take the first.
      finite = strategy.experimental_local_results(finite)[0]
      metrics = {k: strategy.experimental_local_results(v)[0] for k, v in metrics.items()}

      def apply_update():
        strategy.run(apply, args=tuple(grads))
        self.loss_scale.after_finite_step()
        return tf.constant(0.0)

      def skip_update():  # overflow (float16) or a NaN/Inf step: weights and slots untouched
        self.loss_scale.after_overflow()
        return tf.constant(1.0)

      metrics["skipped"] = tf.cond(finite, apply_update, skip_update)
      metrics["loss_scale"] = scale
      self.step.assign_add(1)
      return metrics

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

  # --------------------------------------------------------------------------- checkpoints

  def restore(self) -> int:
    """Restores the checkpoint that logdir's status.json names (if any); returns the step reached.

    status.json is the run's manifest, written last in every save (write-then-rename): a checkpoint
    newer than the one it names belongs to a save that was cut short, and is not used (the steps
    since the named one are replayed, bit-identically under --deterministic). Without a manifest,
    or when the checkpoint it names is gone, the newest checkpoint is used. A checkpoint
    that cannot be read (truncated or corrupt files) is skipped with a warning and the previous one
    is tried; one that does not match the model is an error.
    """
    state = tf.train.get_checkpoint_state(self._restore_dir)
    paths = list(state.all_model_checkpoint_paths) if state else []
    if state and state.model_checkpoint_path and state.model_checkpoint_path not in paths:
      paths.append(state.model_checkpoint_path)
    named = self._manifest_checkpoint()
    if named is not None and tf.io.gfile.exists(named + ".index"):  # else: e.g. carried without it
      newer = [p for p in paths if _checkpoint_number(p) > _checkpoint_number(named)]
      if newer:
        print(
          f"note: {', '.join(newer)} not used: written by a save that did not finish "
          f"(status.json names {named})",
          file=sys.stderr,
        )
      paths = [p for p in paths if _checkpoint_number(p) < _checkpoint_number(named)] + [named]
    if not paths:
      return self._restore_finished()
    for path in reversed(paths):
      if not tf.io.gfile.exists(path + ".index"):
        print(f"warning: checkpoint {path} is missing; trying the previous one", file=sys.stderr)
        continue
      try:
        self._restore(path)
      except _DamagedCheckpoint as e:
        print(
          f"warning: checkpoint {path} is damaged ({e}); trying the previous one", file=sys.stderr
        )
        continue
      print(f"Resumed from {path} at step {int(self.step.numpy())}", file=sys.stderr)
      self._recreate_best(path)
      return int(self.step.numpy())
    if paths:
      print("warning: no readable checkpoint; starting from scratch", file=sys.stderr)
    return int(self.step.numpy())

  def _restore_finished(self) -> int:
    """A finished run kept as its weights alone (final/ or best/, no checkpoints/: how a finished
    run travels, `experiments.carry`): restores those weights and the counters its status.json
    records, so that `fit` has nothing to do and the run is evaluated as it ended. Returns the step
    (0 when the folder holds no such run)."""
    status = results.read_status(self.config.logdir) or {}
    weights = tf.train.latest_checkpoint(self._final_dir) or tf.train.latest_checkpoint(
      self._best_dir
    )
    if not (weights and (status.get("finished") or status.get("stopped_early"))):
      return 0
    self.weights.restore(weights).expect_partial()
    self.step.assign(int(status["step"]))
    if status.get("best_metric") is not None:
      self.best_metric.assign(float(status["best_metric"]))
    if status.get("best_epoch") is not None:
      self.best_step.assign(int(status["best_epoch"]) * self.steps_per_epoch)
    if status.get("stopped_early") and self.config.early_stopping_patience is not None:
      self.bad_epochs.assign(self.config.early_stopping_patience + 1)
    self.train_seconds.assign(float(status.get("train_seconds") or 0.0))
    print(
      f"Restored the finished run's weights from {weights} (step {int(status['step'])}; no "
      "optimizer state: nothing left to train)",
      file=sys.stderr,
    )
    return int(self.step.numpy())

  def _recreate_best(self, path: str) -> None:
    """Writes best/ again from the checkpoint just restored when best/ is missing and that
    checkpoint is at the best validation step (the same weights): `experiments.carry` leaves best/
    out of such a run."""
    step = int(self.step.numpy())
    if (
      self.config.early_stopping_metric is None
      or not math.isfinite(float(self.best_metric.numpy()))
      or int(self.best_step.numpy()) != step
      or tf.train.latest_checkpoint(self._best_dir)
    ):
      return
    self.best_manager.save(checkpoint_number=step)
    print(
      f"best/ written again from {path} (step {step} is the best validation step)",
      file=sys.stderr,
    )

  def write_final(self) -> str | None:
    """Writes final/: the weights of a finished run (no optimizer slots), unless it has them or
    the run is not finished. Returns the path written, or None."""
    if int(self.step.numpy()) < self.total_steps or self.final_manager.latest_checkpoint:
      return None
    return self.final_manager.save(checkpoint_number=int(self.step.numpy()))

  def _manifest_checkpoint(self) -> str | None:
    """The checkpoint (a path in the chief's checkpoints/) that the chief's status.json names, or
    None (no status.json, an unreadable one, or one without a checkpoint). By name: a carried run
    moves folders."""
    try:
      status = results.read_status(self.config.logdir)
    except (OSError, ValueError):  # e.g. emptied by a power cut before status.json was fsynced
      status = None
    name = (status or {}).get("checkpoint")
    return os.path.join(self._restore_dir, os.path.basename(name)) if name else None

  def _restore(self, path: str):
    try:
      reader = tf.train.load_checkpoint(path)
      for name in reader.get_variable_to_shape_map():  # read everything: finds truncated data files
        reader.get_tensor(name)
    except (IndexError, tf.errors.OpError, ValueError, OSError) as e:
      raise _DamagedCheckpoint(str(e).splitlines()[0][:200]) from e
    try:
      self.checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
      raise ValueError(
        f"checkpoint {path} does not match this model/optimizer (was --logdir "
        f"used by another configuration?): {str(e).splitlines()[0][:300]}"
      ) from e

  def restore_best(self) -> str | None:
    """Loads the weights of the best checkpoint (early stopping) if one was written; returns its
    path. Only the weights: best/ holds nothing else (runs written before it kept whole
    checkpoints there, of which the weights are read)."""
    path = tf.train.latest_checkpoint(self._best_dir)
    if path:
      try:
        self.weights.restore(path).expect_partial().assert_existing_objects_matched()
      except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise ValueError(
          f"checkpoint {path} does not match this model: {str(e).splitlines()[0][:300]}"
        ) from e
    return path

  def _check_finite_weights(self, step: int):
    values = [v for v in self.model.variables if v.value.dtype.is_floating]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v.value)) for v in values])
    if not bool(finite):
      bad = [v.path for v in values if not np.all(np.isfinite(v.value.numpy()))]
      raise NonFiniteLossError(
        f"non-finite weights at step {step} ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); "
        f"not saved; last good checkpoint kept: {self.manager.latest_checkpoint or 'none written yet'}"
      )

  def elapsed_train_seconds(self) -> float:
    """Training seconds so far: the checkpointed `train_seconds` (which spans resumed invocations)
    plus the time since the last save in this one. Only meaningful inside `fit` (e.g. from hooks)."""
    return float(self.train_seconds.numpy()) + time.perf_counter() - self._clock

  def _save(self, step: int, manager=None):
    """Writes a checkpoint; a regular one (not `best_manager`'s) is then committed by status.json.

    The order is what makes a kill at any point recoverable (docs/harness.md, "Crash points"):
    checkpoint files, the manager's `checkpoint` file (both TensorFlow's, write-then-rename), then
    status.json (write-then-rename) naming the checkpoint: `restore` uses the one it names. A best
    checkpoint (early stopping) is written before the regular checkpoint of the same step and
    does not touch status.json.
    """
    self._check_finite_weights(step)
    now = time.perf_counter()
    self.train_seconds.assign_add(now - self._clock)
    self._clock = now
    kind = "best_checkpoint" if manager is self.best_manager else "checkpoint"
    # The manager records the checkpoint (its `checkpoint` file) in a write callback: ours runs first.
    options = tf.train.CheckpointOptions(
      experimental_write_callbacks=[lambda *_: crash_point(f"{kind}_files", step)]
    )
    path = (manager or self.manager).save(checkpoint_number=step, options=options)
    crash_point(kind, step)
    if kind == "checkpoint":
      if self.is_chief:
        self._write_status(step, checkpoint=path)
      crash_point("status", step)

  def _write_status(self, step: int, **extra):
    """`logdir/status.json`: how far the run got (for results pages of long, resumed runs), and
    the checkpoint a rerun resumes from (`restore`): written last, by rename, after an fsync."""
    status = dict(
      step=step,
      epoch=step / self.steps_per_epoch,
      steps_per_epoch=self.steps_per_epoch,
      total_steps=self.total_steps,
      total_epochs=self.config.epochs,
      finished=step >= self.total_steps,
      train_seconds=float(self.train_seconds.numpy()),
      best_metric=(
        float(self.best_metric.numpy()) if math.isfinite(float(self.best_metric.numpy())) else None
      ),
      best_epoch=(
        int(self.best_step.numpy()) // self.steps_per_epoch
        if self.config.early_stopping_metric
        else None
      ),
      cpu=host.cpu_model(),
      updated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
      **extra,
    )
    status.setdefault("checkpoint", self.manager.latest_checkpoint)
    path = os.path.join(self.config.logdir, results.STATUS_FILE)
    earlier = {}
    if os.path.exists(path):
      try:
        with open(path) as f:
          earlier = json.load(f)
      except (OSError, ValueError):
        pass
    # Accumulated over resumed invocations: every commit the run trained at and every CPU it
    # trained on (`cpu` is this invocation's; a file without `cpus` kept only its newest `cpu`).
    status["code_commits"] = host.merge_in_order(earlier.get("code_commits", []), [code_commit()])
    status["cpus"] = host.merge_in_order(results.status_cpus(earlier), [status["cpu"]])
    with open(path + ".tmp", "w") as f:
      json.dump(status, f, indent=2, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())  # a power cut must not leave a renamed but empty manifest
    os.replace(path + ".tmp", path)

  def _log_hparams(self):
    from tensorboard.plugins.hparams import api as hp

    values = {
      k: (v if isinstance(v, (bool, int, float, str)) else str(v))
      for k, v in dict(self.config.hparams).items()
    }
    if values and self.is_chief:
      with self.writer.as_default():
        hp.hparams(values)
    if self.is_chief:
      with open(os.path.join(self.config.logdir, "hparams.json"), "w") as f:
        json.dump(values, f, indent=2, sort_keys=True)

  # --------------------------------------------------------------------------- loop

  def fit(self) -> dict[str, float]:
    """Trains until `epochs` (or `max_steps`); returns the last logged scalars.

    Under a multi-worker strategy a lost peer (TensorFlow's `UnavailableError` /
    `DeadlineExceededError` from a collective) is raised as `WorkerLost`, and every worker returns
    only once all have written their checkpoints (`barrier`): the others then read the chief's.
    """
    cluster = _cluster(self.strategy)
    if sum(len(tasks) for tasks in cluster.values()) < 2:
      return self._fit()
    try:
      out = self._fit()
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as e:
      raise self._worker_lost(e, cluster) from None
    # The chief's checkpoints, best/ and status.json are complete before any worker goes on
    # (`restore_best` reads the chief's best/; a worker that got there first found it empty).
    error = barrier("fit-end", timeout_s=FIT_END_TIMEOUT_S)
    if error is not None:
      raise self._worker_lost(error, cluster) from None
    return out

  def _worker_lost(self, error: Exception, cluster: dict) -> WorkerLost:
    resolver = self.strategy.cluster_resolver
    peer = lost_peer(error, cluster, own=(resolver.task_type, int(resolver.task_id or 0)))
    return WorkerLost(
      f"lost {peer} of the multi-worker cluster at step {int(self.step.numpy())}; newest "
      f"checkpoint: {self._manifest_checkpoint() or 'none written yet'}",
      peer,
    )

  def _fit(self) -> dict[str, float]:
    cfg = self.config
    os.makedirs(cfg.logdir, exist_ok=True)
    start = self.restore()
    if start == 0:
      self._log_hparams()
    if start >= self.stop_step:
      print(
        f"Nothing to do: step {start} already reached the target {self.stop_step}", file=sys.stderr
      )
      self.write_final()  # a run finished before final/ was written
      return {}
    if self.stopped_early():
      print(
        f"Nothing to do: the run stopped early at step {start} (no improvement of "
        f"{cfg.early_stopping_metric} for more than {cfg.early_stopping_patience} epochs)",
        file=sys.stderr,
      )
      return {}
    progbar = keras.utils.Progbar(
      self.stop_step - start, verbose=1 if cfg.progress else 0, unit_name="step"
    )
    last = {}
    window, window_start, window_time = [], start, time.perf_counter()
    step = start
    stopped_early = False
    self._clock = time.perf_counter()  # elapsed_train_seconds() counts from here
    # Checkpoint and stop after the current step (SIGUSR1: after the current epoch; SIGUSR2: after
    # the next epoch that is a new best, while any of the others still stops as it would).
    with (
      preemption.deferred_signals(STOP_SIGNALS) as stop_request,
      _stop_at_best_request() as stop_at_best,
    ):
      while step < self.stop_step and not stopped_early:
        epoch = step // self.steps_per_epoch
        for batch in self.epoch_dataset(epoch, skip=step % self.steps_per_epoch):
          window.append(self._train_step(batch))
          step += 1
          crash_point("step", step)
          at_epoch_end = step % self.steps_per_epoch == 0
          at_checkpoint = (
            (step % cfg.checkpoint_every == 0) if cfg.checkpoint_every else at_epoch_end
          )
          preempted = stop_request.signum is not None and (
            stop_request.signum != signal.SIGUSR1 or at_epoch_end
          )
          if (
            step % cfg.log_every == 0
            or at_checkpoint
            or at_epoch_end
            or step == self.stop_step
            or preempted
          ):
            last = self._flush(window, step, window_start, window_time)
            progbar.update(step - start, [(k, last[k]) for k in ("loss", "examples_per_s")])
            window, window_start, window_time = [], step, time.perf_counter()
          if at_epoch_end:  # before the checkpoint: the hook's random draws are part of the state
            stopped_early = self._end_epoch(epoch, step)
            if stop_at_best and not preempted and int(self.best_step.numpy()) == step:
              preempted, stop_request.signum = True, signal.SIGUSR2
          if (
            at_checkpoint
            or step == self.stop_step
            or stopped_early
            or preempted
            or (at_epoch_end and cfg.early_stopping_metric is not None)
          ):
            self._save(step)
          if preempted:
            self.writer.flush()
            where = f"step {step}" + {
              signal.SIGUSR1: f" (the end of epoch {step // self.steps_per_epoch})",
              signal.SIGUSR2: f" (the end of epoch {step // self.steps_per_epoch}, the best)",
            }.get(stop_request.signum, "")
            raise Preempted(
              f"preempted by {stop_request.name} at {where}: checkpoint written "
              f"to {self.manager.latest_checkpoint}; rerun the same command to resume",
              stop_request.signum,
            )
          if step >= self.stop_step or stopped_early:
            break
    if stopped_early and self.is_chief:
      self._write_status(step, stopped_early=True)
    self.write_final()  # every worker (a save may run collectives), each in its own folder
    self.writer.flush()
    return last

  def _flush(self, window, step, window_start, window_time) -> dict[str, float]:
    """Host-side NaN guard and TensorBoard scalars for the steps since the last flush."""
    values = {k: np.array([m[k].numpy() for m in window]) for k in window[0]}
    bad = ~np.isfinite(values["loss"])
    if not self.float16:  # under float16 a non-finite gradient is an overflow: skipped and counted
      bad |= ~np.isfinite(values["grad_norm"])
    if bad.any():
      first_bad = window_start + int(np.argmax(bad)) + 1
      what = "loss" if not np.isfinite(values["loss"][bad][0]) else "gradient norm"
      value = values["loss" if what == "loss" else "grad_norm"][bad][0]
      kept = self.manager.latest_checkpoint or "none written yet"
      raise NonFiniteLossError(
        f"non-finite {what} ({value}) at step {first_bad}; the step was not applied and training "
        f"stopped; last good checkpoint kept: {kept}"
      )
    if self.float16 and float(values["loss_scale"][-1]) < 1.0:
      raise NonFiniteLossError(
        f"float16 gradients overflow even at loss scale "
        f"{values['loss_scale'][-1]} (step {step}); try mixed_bfloat16"
      )
    elapsed = max(time.perf_counter() - window_time, 1e-9)
    means = {
      k: float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else float("nan")
      for k, v in values.items()
    }
    means["examples_per_s"] = len(window) * self.config.batch_size / elapsed
    means["learning_rate"] = float(
      np.asarray(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
    )
    means["overflow_steps"] = float(self.loss_scale.overflow_steps.numpy())
    with self.writer.as_default(step=step):
      for k, v in means.items():
        tf.summary.scalar(f"train/{k}", v)
    return means

  def stopped_early(self) -> bool:
    """True when the restored state already met the early-stopping rule (a finished run)."""
    patience = self.config.early_stopping_patience
    return (
      self.config.early_stopping_metric is not None
      and patience is not None
      and int(self.bad_epochs.numpy()) > patience
    )

  def _end_epoch(self, epoch: int, step: int) -> bool:
    """Runs `epoch_end_fn`; handles early stopping. Returns True to stop."""
    if self.epoch_end_fn is None:
      return False
    with self.writer.as_default(step=step):
      values = dict(self.epoch_end_fn(self.model, epoch))
      crash_point("epoch_end_fn", step)
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
      self.best_step.assign(step)
      self.bad_epochs.assign(0)
      self._save(step, self.best_manager)
    elif epoch + 1 > cfg.early_stopping_start_epoch:
      self.bad_epochs.assign_add(1)
    if self.stopped_early():
      print(
        f"Early stopping after epoch {epoch + 1}: no improvement of {cfg.early_stopping_metric} "
        f"for more than {cfg.early_stopping_patience} epochs",
        file=sys.stderr,
      )
      return True
    return False


BEST_DIR, FINAL_DIR = results.BEST_DIR, results.FINAL_DIR


def restore_weights(
  model: keras.Model, logdir: str, which: str = "latest", *, settings_file: str = "its settings"
) -> str:
  """Loads a run's weights into a built `model` and returns the checkpoint's path: the ordered
  `model.variables` the Trainer checkpoints as `model_variables` (weights, normalisation
  statistics, random-generator states), nothing of the optimizer. The one way the evaluation,
  sampling and PPL commands load a trained run.

  which: "latest" (checkpoints/, or final/ of a finished run kept as its weights alone) or "best"
  (best/, the early-stopping checkpoint). A checkpoint of another architecture is a ValueError
  that names `settings_file`, the record the model was built from.
  """
  folders = [BEST_DIR] if which == "best" else ["checkpoints", FINAL_DIR]
  path = None
  for name in folders:
    path = tf.train.latest_checkpoint(os.path.join(logdir, name))
    if path:
      break
  if not path:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(logdir, folders[0])}")
  checkpoint = tf.train.Checkpoint(model_variables=[v.value for v in model.variables])
  try:
    checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ValueError(
      f"checkpoint {path} does not match the architecture in {settings_file}: "
      f"{str(e).splitlines()[0][:300]}"
    ) from e
  return path


def _checkpoint_number(path: str) -> int:
  """N of a CheckpointManager path `.../ckpt-N`."""
  return int(path.rsplit("-", 1)[1])


class _DamagedCheckpoint(Exception):
  """A checkpoint whose files cannot be read."""
