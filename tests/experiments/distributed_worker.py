"""One training process for the distributed tests (`python -m tests.experiments.distributed_worker`,
or `child(argv, env, log_path)` as the target of a forked process: see `start`).

Without TF_CONFIG it trains on one device; with TF_CONFIG it is one worker of a
`MultiWorkerMirroredStrategy` cluster. Each task trains with plain SGD (sensitive to the gradient
scale) through `experiments.harness.Trainer` and the chief writes the final weights to
`<logdir>/<task>/weights.npz`. `--kill_at_step N` makes this process SIGKILL itself right after
update N (a lost machine: no checkpoint of its own). The `hooked` task (an epoch-end hook drawing
random numbers, best checkpoints, Adam) also writes its whole final state to `state.npz` and that of
its best checkpoint to `best.npz`: the crash-point tests kill it with $GENMODELS_CRASH_AT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

# First, so that TensorFlow starts up as in the scripts (experiments/__init__.py):
from experiments import harness

# isort: split
import keras
import numpy as np
import tensorflow as tf

GLOBAL_BATCH = 16
NUM_EXAMPLES = 64


class SyncBNNet(keras.Model):
  """An MLP with a synchronised BatchNorm: its batch statistics are global-batch statistics."""

  def __init__(self):
    super().__init__()
    self.hidden = keras.layers.Dense(8, activation="tanh")
    self.norm = keras.layers.BatchNormalization(synchronized=True)
    self.out = keras.layers.Dense(6)

  def call(self, x, training=False):
    return self.out(self.norm(self.hidden(x), training=training))


def toy_task():
  """Model, loss and data of the toy task (squared error, L2 regulariser, clipped gradients)."""
  model = SyncBNNet()
  model(tf.zeros((2, 6)))

  def loss_fn(model, batch, ctx):
    pred = model(batch, training=True)
    reg = 1e-2 * tf.add_n([tf.reduce_sum(tf.square(v)) for v in model.trainable_variables])
    return harness.LossOutput(
      per_example=tf.reduce_sum(tf.square(pred - batch), axis=-1), regularizer=reg
    )

  def clip(grads, variables):
    return tf.clip_by_global_norm(grads, 1.0)[0]

  data = np.random.RandomState(0).randn(NUM_EXAMPLES, 6).astype(np.float32)
  return model, loss_fn, clip, tf.data.Dataset.from_tensor_slices(data)


def vampprior_task():
  """The VampPrior experiment's real loss (KL warm-up) and AdamNormGrad on a tiny HVAE."""
  from experiments import vampprior_train as vampprior_experiment
  from vampprior_tf import distributions, optim, priors
  from vampprior_tf import model as models

  shape = (4, 4, 1)
  prior = priors.VampPrior(num_components=3, image_shape=shape, init_mean=0.05, init_std=0.01)
  model = models.HVAE2Level(
    image_shape=shape,
    observation=distributions.Bernoulli(),
    prior=prior,
    z1_dim=2,
    z2_dim=2,
    hidden_units=8,
    seed=5,
  )
  model(tf.zeros((2,) + shape))
  data = (np.random.RandomState(0).rand(NUM_EXAMPLES, *shape) > 0.5).astype(np.float32)
  return (
    model,
    vampprior_experiment.make_loss_fn(warmup=2),
    optim.normalize_gradients,
    tf.data.Dataset.from_tensor_slices(data),
  )


class NoisyNet(keras.Model):
  """An MLP with input noise from a SeedGenerator and a data-position witness: `seen` accumulates
  every training batch weighted by its step, so a skipped or repeated batch changes it."""

  def __init__(self):
    super().__init__()
    self.hidden = keras.layers.Dense(8, activation="tanh")
    self.out = keras.layers.Dense(6)
    self.seed_generator = keras.random.SeedGenerator(7)
    self.seen = self.add_weight(shape=(6,), initializer="zeros", trainable=False, name="seen")

  def call(self, x, training=False):
    return self.out(
      self.hidden(x + keras.random.normal(tf.shape(x), stddev=0.1, seed=self.seed_generator))
    )


HOOK_DRAWS = 15  # random draws of the epoch-end hook (as NVAE's sample grids and reconstructions)


def hooked_task():
  """The crash-point task: an epoch-end hook that draws `HOOK_DRAWS` times from the model's
  SeedGenerator and returns the validation metric that early stopping (best checkpoints) follows."""
  model = NoisyNet()
  model(tf.zeros((2, 6)))
  data = np.random.RandomState(0).randn(NUM_EXAMPLES, 6).astype(np.float32)

  def loss_fn(model, batch, ctx):
    model.seen.assign_add(tf.reduce_sum(batch, axis=0) * tf.cast(ctx.step + 1, tf.float32))
    pred = model(batch, training=True)
    return harness.LossOutput(per_example=tf.reduce_sum(tf.square(pred - batch), axis=-1))

  def epoch_end_fn(model, epoch):
    noise = [keras.random.normal((16, 6), seed=model.seed_generator) for _ in range(HOOK_DRAWS)]
    val = tf.reduce_mean(tf.square(model(data[:16] + 0.1 * noise[0]) - data[:16]))
    return {"val": float(val), "epoch": float(epoch)}

  return model, loss_fn, None, tf.data.Dataset.from_tensor_slices(data), epoch_end_fn


TASKS = {"toy": toy_task, "vampprior": vampprior_task, "hooked": hooked_task}


_RECORDERS: list[list[str]] = []  # the paths each active `record_writes` has seen


def _audit(event, args):
  if not _RECORDERS:
    return
  path = None
  if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
    mode, flags = args[1], args[2]
    if (
      any(c in mode for c in "wax+")
      if isinstance(mode, str)
      else mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)  # os.open
    ):
      path = os.fsdecode(args[0])
  elif event == "os.rename":  # os.rename and os.replace
    path = os.fsdecode(args[1])
  if path is not None:
    for written in _RECORDERS:
      written.append(path)


class record_writes:  # noqa: N801  (used like a function)
  """The files under `root` this process opens for writing (`open`, `os.open`) or renames into
  place from now on (Python's audit events; TensorFlow's own C++ writers, checkpoints and
  summaries, are not seen). Calling it gives them as paths relative to `root`, in order; `stop()`
  ends the recording (an audit hook cannot be removed: one hook serves every recorder)."""

  _hooked = False

  def __init__(self, root: str):
    self.root = os.path.abspath(root)
    self.written: list[str] = []
    if not record_writes._hooked:
      sys.addaudithook(_audit)
      record_writes._hooked = True
    _RECORDERS.append(self.written)

  def stop(self):
    if self.written in _RECORDERS:
      _RECORDERS.remove(self.written)

  def __call__(self) -> list[str]:
    paths = (os.path.abspath(p) for p in self.written)
    return [os.path.relpath(p, self.root) for p in paths if p.startswith(self.root + os.sep)]


class NonChiefView:
  """A strategy (default: the default one) as worker 1 of a two-worker cluster sees itself:
  `harness.is_chief` is False and its scratch folder is `.worker-1`, but the computation is that
  strategy's, in this one process. What a script writes under it is what its worker 1 writes,
  without a second process."""

  def __init__(self, strategy=None):
    self._strategy = strategy or tf.distribute.get_strategy()
    self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec({"worker": ["localhost:1", "localhost:2"]}),
      task_type="worker",
      task_id=1,
    )

  def __getattr__(self, name):
    return getattr(self._strategy, name)


def outside_worker_folders(paths: list[str]) -> list[str]:
  """The paths (relative, from `record_writes`) that are in no `.worker-<id>` folder."""
  return [p for p in paths if not any(part.startswith(".worker-") for part in p.split(os.sep))]


def vampprior_script(args, strategy):
  """`experiments.vampprior_train.train_and_evaluate` (what `python -m experiments.vampprior`
  runs) on a tiny VAE + VampPrior: a few steps, 40 test images, K = 30, the chunk chosen from a
  memory budget. Prints the test NLL and the files this process wrote in the run directory."""
  import json

  from experiments import vampprior_train
  from tests.experiments.test_vampprior import tiny_settings

  s = tiny_settings(train_examples=200)
  config = harness.TrainConfig(
    logdir=args.logdir,
    batch_size=50,
    epochs=1,
    seed=0,
    progress=False,
    early_stopping_metric="val_loss",
  )
  written = record_writes(args.logdir)
  row = vampprior_train.train_and_evaluate(
    s, config, strategy=strategy, data_dir=args.data_dir, eval_memory_gib=args.eval_memory_gib
  )
  print("ROW " + json.dumps({k: row[k] for k in ("test_nll", "ll_chunk_used")}), flush=True)
  print("WROTE " + json.dumps(written()), flush=True)


def nvae_script(args, strategy):
  """`experiments.nvae_train.train_and_evaluate` (what `python -m experiments.nvae_mnist` runs) on
  a tiny NVAE (`test_nvae_mnist.tiny_settings`): 4 steps of 32 images with a validation NLL per
  epoch, then K = 8 (chunks of 4) on 10 test images in batches of 4. Prints the test NLL and the
  files this process wrote in the run directory."""
  import json

  from experiments import nvae_train
  from tests.experiments.test_nvae_mnist import tiny_settings, tiny_train_config

  s = tiny_settings(test_examples=10, num_iw_samples=8, iw_chunk=4, eval_batch_size=4)
  written = record_writes(args.logdir)
  row, trained = nvae_train.train_and_evaluate(
    s, tiny_train_config(args.logdir, 4), strategy=strategy, data_dir=args.data_dir
  )
  print("ROW " + json.dumps({k: row[k] for k in ("nll", "steps", "test_examples")}), flush=True)
  print("WROTE " + json.dumps(written()), flush=True)
  print("METRICS " + json.dumps(nvae_sample_metrics(trained, strategy)), flush=True)


def nvae_sample_metrics(trained, strategy) -> dict:
  """FID, precision and recall (`nvae_train.sample_metrics`, 10 samples) through small stand-in
  networks loaded as `experiments.nvae_table1` loads its own, once with the features split over
  the workers ("split") and once in this process alone ("alone"), on the same samples."""
  from evaluation import likelihood, networks
  from experiments import nvae_train
  from tests.experiments.feature_stand_ins import stand_in

  networks.inception_network = lambda path, download: stand_in("pool_3")
  networks.vgg16_network = lambda path, download: stand_in("fc2")
  inception, vgg16 = (
    nvae_train.load_network(kind, path=None, download=False, strategy=strategy)
    for kind in ("inception", "vgg16")
  )
  # Half other samples of the model, half test images: precision and recall are not 0.
  reference = np.concatenate(
    [nvae_train.generate_samples(trained.model, 5), trained.splits.test[:5]]
  )
  states = likelihood.seed_generator_states(trained.model)
  start = [v.numpy() for v in states]
  out = {}
  for name, split in (("split", strategy), ("alone", None)):
    for v, value in zip(states, start):
      v.assign(value)
    metrics = nvae_train.sample_metrics(
      trained.model,
      reference,
      num_samples=10,
      inception=inception,
      vgg16=vgg16,
      strategy=split,
    )
    out[name] = {k: float(v["value"]) for k, v in metrics.items()}
  out["replicas"] = sorted({r for net in (inception[0], vgg16[0]) for r in net.replicas if r})
  return out


SCRIPTS = {"vampprior": vampprior_script, "nvae": nvae_script}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--logdir", required=True)
  parser.add_argument("--tasks", default="toy")
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--kill_at_step", type=int, default=None)
  parser.add_argument("--checkpoint_every", type=int, default=2, help="0: at epoch ends")
  parser.add_argument("--script", choices=sorted(SCRIPTS), default=None)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--eval_memory_gib", type=float, default=None)
  parser.add_argument(
    "--chief_end_delay_s", type=float, default=0, help="the chief's extra time before the end"
  )
  parser.add_argument(
    "--worker_dies_at_end", action="store_true", help="non-chief workers exit(1) before the end"
  )
  parser.add_argument(
    "--chief_slow_save_s", type=float, default=0, help="the chief's delay in each checkpoint write"
  )
  args = parser.parse_args(argv)
  strategy = harness.setup_runtime(
    strategy="multi_worker" if "TF_CONFIG" in os.environ else "default", deterministic=True, seed=1
  )
  if args.chief_slow_save_s and harness.is_chief(strategy):  # a slow disk under the chief's logdir
    save = tf.train.CheckpointManager.save

    def slow_save(manager, *a, **k):
      time.sleep(args.chief_slow_save_s)
      return save(manager, *a, **k)

    tf.train.CheckpointManager.save = slow_save
  run(args, argv, strategy)
  # As `experiments.flags.run` ends a script: the times show who waited for whom.
  from experiments import flags as common

  if harness.is_chief(strategy):
    time.sleep(args.chief_end_delay_s)
  print(f"ARRIVED {time.time()}", flush=True)
  if args.worker_dies_at_end and not harness.is_chief(strategy):
    os._exit(1)
  common.leave_cluster()
  print(f"LEFT {time.time()}", flush=True)


def run(args, argv, strategy):
  """The script or the tasks `args` name."""
  if args.script is not None:
    SCRIPTS[args.script](args, strategy)
    return
  for task in args.tasks.split(","):
    keras.utils.set_random_seed(1)
    with strategy.scope():
      model, loss_fn, grad_transform, data, *hook = TASKS[task]()
      optimizer = (
        keras.optimizers.Adam(0.01)
        if hook  # slots (moments) to compare too
        else keras.optimizers.SGD(0.1)
      )
    logdir = os.path.join(args.logdir, task)
    early = dict(early_stopping_metric="val", early_stopping_patience=100) if hook else {}
    config = harness.TrainConfig(
      logdir=logdir,
      batch_size=GLOBAL_BATCH,
      epochs=args.epochs,
      seed=5,
      log_every=1,
      checkpoint_every=args.checkpoint_every or None,
      progress=False,
      **early,
    )
    trainer = harness.Trainer(
      config=config,
      strategy=strategy,
      model=model,
      optimizer=optimizer,
      loss_fn=loss_fn,
      train_data=data,
      grad_transform=grad_transform,
      epoch_end_fn=hook[0] if hook else None,
    )
    if args.kill_at_step is not None:
      step_fn = trainer._train_step

      def step_then_maybe_die(batch):
        # The closures below run within this iteration of the task loop.
        out = step_fn(batch)  # noqa: B023
        if int(trainer.step.numpy()) == args.kill_at_step:  # noqa: B023
          os.kill(os.getpid(), signal.SIGKILL)
        return out

      trainer._train_step = step_then_maybe_die
    try:
      trainer.fit()
    except harness.Preempted as e:  # as the scripts report it (experiments.flags.run)
      print(str(e), file=sys.stderr)
      sys.exit(128 + e.signum)
    except harness.WorkerLost as e:
      from experiments import flags as common

      command = " ".join(
        [
          "python -m tests.experiments.distributed_worker",
          *(argv if argv is not None else sys.argv[1:]),
        ]
      )
      common.exit_now(common.report_worker_lost(e, command))
    if trainer.is_chief:
      np.savez(os.path.join(logdir, "weights.npz"), *[v.numpy() for v in model.weights])
      if hook:  # the whole resume state: model variables (RNG state, data witness), slots, step

        def state(model=model, optimizer=optimizer, trainer=trainer):
          return [v.numpy() for v in [*model.variables, *optimizer.variables, trainer.step]]

        np.savez(os.path.join(logdir, "state.npz"), *state())
        trainer.restore_best()
        np.savez(os.path.join(logdir, "best.npz"), *state())


def child(argv, env, log_path):
  """A process's whole life as `python -m` would run it, in a process forked from a server that
  has imported TensorFlow and this module once (`start`): `env` is applied, stdout and stderr
  (TensorFlow's C++ logging too) go to `log_path`, then `main(argv)`."""
  os.environ.pop("TF_CONFIG", None)
  os.environ.update(env)
  fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  main(argv)


# What the fork server imports once: this module (TensorFlow, Keras, the harness) and the VampPrior
# task's modules. Every process forked from it still builds its own TensorFlow runtime, cluster and
# model; only the 3 s interpreter start and import per process are shared.
PRELOAD = [
  "tests.experiments.distributed_worker",
  "experiments.vampprior_train",
  "vampprior_tf.model",
  "experiments.nvae_train",
]


def start(argv, *, env, log_path):
  """Starts `child` in a new process forked from a server that has imported `PRELOAD` once."""
  import multiprocessing

  context = multiprocessing.get_context("forkserver")
  context.set_forkserver_preload(PRELOAD)
  process = context.Process(target=child, args=(argv, env, str(log_path)))
  process.start()
  return process


if __name__ == "__main__":
  main()
