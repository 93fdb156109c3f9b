"""The NVAE experiment as a library (no flags): presets, run settings, data splits, model and loss
wiring, training with a validation-NLL history, test NLL, restoring a run, sample metrics, and the
shared parts of the ablation tables.

The scripts (`experiments.nvae_mnist`, `nvae_table1`, `nvae_table2`, `nvae_evaluate`) read their
flags once into a frozen `RunSettings` (`experiments.nvae_flags`) and call into this module, as
flax examples split `main.py` (flags) from `train.py` (the work).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from common_tf import host
from evaluation import likelihood
from experiments import data, harness, results
from experiments.images import save_grid, save_samples
from nvae_tf import losses, optim
from nvae_tf.losses import WarmupClock
from nvae_tf.model import NVAE, NVAEConfig, Spectral

SAMPLE_TEMPERATURES = (0.7, 1.0)  # official train.py logs grids at 0.7, 0.8, 0.9, 1.0
NUM_GRID_IMAGES = 64
SAMPLE_BATCH = 100
SETTINGS_FILE = "settings.json"  # RunSettings of a run (read by `load_run_settings`)
VALIDATION_FILE = (
  "validation.json"  # [{epoch, step, train_seconds, val_neg_log_p, ...}] per validation
)
DATASETS = ("auto", "mnist", "binarized_mnist")
TEST_SUBSET_SEED = 2020  # the fixed random choice of --test_examples images (`data.subset`)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
  model: NVAEConfig
  batch_size: int  # global batch
  epochs: int
  warmup_epochs: int
  train_examples: int  # 0 = all
  test_examples: int  # 0 = all
  num_iw_samples: int
  iw_chunk: int
  eval_batch_size: int
  val_every_epochs: int | None = None  # None: official rule (1 if epochs <= 50 else 20)


PRESETS = {
  # NVlabs/NVAE README, MNIST: batch 200 per GPU on 2 GPUs (global 400), 400 epochs, 2 scales,
  # 10 groups (ada: [10, 5]), 20 latents/group, 2 cells per group, 32 channels, lambda 1e-2.
  "paper": Preset(
    model=NVAEConfig(),
    batch_size=400,
    epochs=400,
    warmup_epochs=5,
    train_examples=0,
    test_examples=0,
    num_iw_samples=1000,
    iw_chunk=100,
    eval_batch_size=50,
  ),
  # CPU-sized: the paper's two latent scales (4x4 then 8x8) with 2 + 1 groups, 1 cell per group,
  # 1 pre/post cell per block, 8 channels; 10 epochs of 4k images (400 steps, so that the per-epoch
  # warm-up takes 3 epochs to reach beta = 1, as the per-step one takes 120 steps), NLL with K = 50
  # on 500 test images.
  "quick": Preset(
    model=NVAEConfig(
      num_channels_enc=8,
      num_channels_dec=8,
      num_groups_per_scale=2,
      num_cell_per_cond_enc=1,
      num_cell_per_cond_dec=1,
      num_preprocess_cells=1,
      num_postprocess_cells=1,
    ),
    batch_size=100,
    epochs=10,
    warmup_epochs=1,
    train_examples=4_000,
    test_examples=500,
    num_iw_samples=50,
    iw_chunk=50,
    eval_batch_size=50,
  ),
  # Meant as about two hours of training (measured since: 4.1 and 5.3 h per row on a 2-core
  # Xeon, results/nvae_cpu.md), full 50k static binarized MNIST: 16
  # channels, groups [4, 2], 1 cell per group, 16 epochs of 500 steps; chosen from the
  # measured cost per step of candidate configs (docs/nvae.md, "The cpu preset").
  # K = 1000 on all 10k test images at the end (official evaluate.py); validation NLL (K = 10) on
  # the test images every 2 epochs gives the NLL-vs-wall-time curve.
  "cpu": Preset(
    model=NVAEConfig(
      num_channels_enc=16,
      num_channels_dec=16,
      num_groups_per_scale=4,
      num_cell_per_cond_enc=1,
      num_cell_per_cond_dec=1,
      num_preprocess_cells=1,
      num_postprocess_cells=1,
    ),
    batch_size=100,
    epochs=16,
    warmup_epochs=1,
    train_examples=0,
    test_examples=0,
    num_iw_samples=1000,
    iw_chunk=100,
    eval_batch_size=50,
    val_every_epochs=2,
  ),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSettings:
  """Everything that defines one run besides the common TrainConfig."""

  model: NVAEConfig
  preset: str = "custom"
  kl_warmup: WarmupClock = WarmupClock.STEP
  dataset: str = "auto"
  warmup_epochs: int = optim.WARMUP_EPOCHS
  train_examples: int = 0
  test_examples: int = 0
  num_iw_samples: int = 1000
  iw_chunk: int = 100
  eval_batch_size: int = 50
  num_test_passes: int = 1
  temperature: float = 1.0
  readjust_bn_steps: int = 0
  val_every_epochs: int | None = None  # None: official rule (1 if epochs <= 50 else 20); 0 = off
  val_num_iw_samples: int = 10  # official train.py: test(..., num_samples=10)
  # The test NLL's memory budget (peak resident GiB): when set, the chunk (importance samples per
  # call) is chosen from it (`likelihood.choose_chunk`) instead of `iw_chunk`. Memory only.
  eval_memory_gib: float | None = None

  def __post_init__(self):
    if self.kl_warmup not in tuple(WarmupClock):
      raise ValueError(f"kl_warmup must be 'step' or 'epoch', got {self.kl_warmup!r}")
    object.__setattr__(self, "kl_warmup", WarmupClock(self.kl_warmup))  # strings from settings.json
    if self.dataset not in DATASETS:
      raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
    for name in (
      "num_iw_samples",
      "iw_chunk",
      "eval_batch_size",
      "num_test_passes",
      "val_num_iw_samples",
    ):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.val_every_epochs is not None and self.val_every_epochs < 0:
      raise ValueError(f"--val_every_epochs must be >= 0, got {self.val_every_epochs}")
    if self.temperature <= 0:
      raise ValueError(f"--temperature must be > 0, got {self.temperature}")
    if self.eval_memory_gib is not None and self.eval_memory_gib <= 0:
      raise ValueError(f"--eval_memory_gib must be > 0, got {self.eval_memory_gib}")


def hparams(s: RunSettings) -> dict:
  """The settings flattened to one level (`model.<field>` for the architecture)."""
  flat = {f"model.{k}": v for k, v in dataclasses.asdict(s.model).items()}
  flat.update({k: v for k, v in dataclasses.asdict(s).items() if k != "model"})
  return flat


# Settings that bound memory only: a row made with another value is the same measurement (the
# likelihood resume key and `previous_nll` leave them out too).
MEMORY_ONLY_SETTINGS = ("iw_chunk", "eval_memory_gib")


def same_measurement(recorded: dict | None, settings: dict) -> bool:
  """Whether a row's recorded `settings` (its `hparams`, as JSON) describe the run `settings` do,
  ignoring `MEMORY_ONLY_SETTINGS`."""

  def drop(d):
    return {k: v for k, v in (d or {}).items() if k not in MEMORY_ONLY_SETTINGS}

  return recorded is not None and drop(recorded) == drop(settings)


def jsonable(value):
  """`value` with enums and other non-JSON leaves as plain strings."""
  return json.loads(json.dumps(value, default=str))


def load_run_settings(logdir: str) -> RunSettings:
  """The RunSettings a run recorded in <logdir>/settings.json (or, for older runs, results.json)."""
  path = os.path.join(logdir, SETTINGS_FILE)
  older = os.path.join(logdir, "results.json")  # runs from before settings.json: flattened settings
  if os.path.exists(path):
    values = results.read_json(path)
  elif os.path.exists(older):
    flat = results.read_json(older)["settings"]
    values = {k: v for k, v in flat.items() if not k.startswith("model.")}
    values["model"] = {k[len("model.") :]: v for k, v in flat.items() if k.startswith("model.")}
  else:
    raise FileNotFoundError(f"{path} not found: --logdir must be a run of experiments.nvae_mnist")
  fields = {f.name for f in dataclasses.fields(RunSettings)}
  # The memory budget is the invocation's, not the run's: a restored run uses its own flags'.
  values = {k: v for k, v in values.items() if k in fields and k != "eval_memory_gib"}
  model_fields = {f.name for f in dataclasses.fields(NVAEConfig)}
  values["model"] = NVAEConfig(**{k: v for k, v in values["model"].items() if k in model_fields})
  return RunSettings(**values)


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Splits:
  dataset: str  # the data set actually used (auto resolved)
  dynamic: bool  # dynamic binarization of grey images
  train: tf.data.Dataset | None  # unbatched [H, W, C] float32 in [0, 1]; None: evaluation only
  test: np.ndarray  # [N, H, W, C] grey (dynamic) or binary (static)
  test_subset: str = "all"  # which test images: "all" or "random N of M (seed S)"

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.test.shape[1:])

  @property
  def num_dims(self) -> int:
    """D of bits/dim = nats / (D ln 2)."""
    return int(np.prod(self.image_shape))

  @property
  def binarization(self) -> str:
    return binarization(self.dataset)

  def epoch_transform(self):
    return (lambda ds, seed: data.dynamic_binarization(ds, seed=seed)) if self.dynamic else None

  def binary_test(self, seed: int) -> np.ndarray:
    """The test images as {0, 1}: a fresh binarization per seed when dynamic."""
    if not self.dynamic:
      return self.test
    return data.binarize_once(self.test, seed=seed)


def binarization(dataset: str) -> str:
  """How the images of a resolved data set are binarized, as results rows and pages record it:
  'dynamic' for mnist (a fresh Bernoulli draw of the grey images, training images each epoch and
  test images per evaluation pass; official datasets.py `Binarize` on train and valid), 'static'
  for binarized_mnist (the fixed Larochelle & Murray binarization)."""
  if dataset not in ("mnist", "binarized_mnist"):
    raise ValueError(f"binarization of {dataset!r} is unknown: resolve 'auto' first")
  return "dynamic" if dataset == "mnist" else "static"


def data_description(dataset: str) -> str:
  """'binarized_mnist (static binarization)': the data line of the NVAE pages."""
  return f"{dataset} ({binarization(dataset)} binarization)"


def resolve_dataset(name: str, data_dir=None) -> str:
  """'auto' -> 'mnist' when grey MNIST training images load, else 'binarized_mnist'."""
  if name != "auto":
    return name
  try:
    data.load_arrays("mnist", "train", data_dir)
    return "mnist"
  except data.DataError as e:
    print(
      f"--dataset=auto: grey MNIST training images unavailable ({str(e)[:120]}...); using the "
      "static binarized_mnist (Larochelle & Murray) instead of dynamic binarization.",
      file=sys.stderr,
    )
    return "binarized_mnist"


def test_splits(dataset: str, test_examples: int, data_dir=None) -> Splits:
  """`test_examples` (0 = all) test images of `dataset`, a fixed random subset
  (`data.subset`: the static binarized MNIST test file is sorted by class), no training set."""
  name = resolve_dataset(dataset, data_dir)
  test, _ = data.load_arrays(name, "test", data_dir)
  chosen = data.subset(test, test_examples, seed=TEST_SUBSET_SEED)
  return Splits(
    dataset=name,
    dynamic=name == "mnist",
    train=None,
    test=chosen,
    test_subset="all"
    if len(chosen) == len(test)
    else f"random {len(chosen)} of {len(test)} (seed {TEST_SUBSET_SEED})",
  )


def load_splits(s: RunSettings, data_dir=None) -> Splits:
  """Training (first `s.train_examples`, 0 = all) and test images of the run's data set."""
  evaluation_only = test_splits(s.dataset, s.test_examples, data_dir)
  train, _ = data.load_arrays(evaluation_only.dataset, "train", data_dir)
  if s.train_examples:
    train = train[: s.train_examples]
  print(
    f"data: {evaluation_only.dataset} ({'dynamic' if evaluation_only.dynamic else 'static'} "
    f"binarization), {len(train)} train / {len(evaluation_only.test)} test images",
    file=sys.stderr,
  )
  return dataclasses.replace(evaluation_only, train=tf.data.Dataset.from_tensor_slices(train))


# ----------------------------------------------------------------------------- model and loss


def build(
  s: RunSettings,
  *,
  strategy,
  steps_per_epoch: int,
  epochs: int,
  seed: int,
  image_shape: tuple[int, ...],
):
  """(model, optimizer) built inside `strategy.scope()` (model called once on a dummy batch)."""
  keras.utils.set_random_seed(seed)
  with strategy.scope():
    model = NVAE(s.model, seed=seed)
    model(tf.zeros((1,) + tuple(image_shape)), training=False)
    schedule = optim.WarmupCosine(
      steps_per_epoch=steps_per_epoch, epochs=epochs, warmup_epochs=s.warmup_epochs
    )
    optimizer = optim.CoupledAdamax(schedule)  # the harness does float16 loss scaling itself
  return model, optimizer


def make_loss_fn(s: RunSettings):
  """Wires the harness to `NVAE.loss_terms` (the objective lives in nvae_tf) with the warm-up clock."""

  def loss_fn(model, batch, ctx: harness.StepContext) -> harness.LossOutput:
    beta = losses.kl_warmup_beta_on_clock(
      s.kl_warmup,
      step=ctx.step,
      total_steps=ctx.total_steps,
      epoch=ctx.epoch,
      total_epochs=ctx.total_epochs,
    )
    terms = model.loss_terms(batch, beta=beta)
    return harness.LossOutput(
      per_example=terms.per_example, regularizer=terms.regularizer, metrics=terms.metrics()
    )

  return loss_fn


# ----------------------------------------------------------------------------- per-epoch logging


def validation_period(s: RunSettings, epochs: int) -> int:
  """Epochs between validation NLLs: the setting, else official train.py's `1 if epochs <= 50 else 20`."""
  if s.val_every_epochs is not None:
    return s.val_every_epochs
  return 1 if epochs <= 50 else 20


def validation_nll(model: NVAE, images: np.ndarray, *, num_samples: int, batch_size: int) -> dict:
  """IW NLL with K = `num_samples` (official train.py: `test(valid_queue, num_samples=10)`)."""
  num_dims = int(np.prod(images.shape[1:]))
  batches = tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
  r = likelihood.evaluate_log_likelihood(
    model.log_weights, batches, num_samples=num_samples, num_dims=num_dims, progress=False
  )
  return dict(
    val_neg_log_p=float(r.nll),
    val_nelbo=float(r.negative_elbo),
    val_bpd_log_p=float(likelihood.bits_per_dim(r.nll, num_dims)),
  )


def make_epoch_end_fn(
  test_batch: np.ndarray,
  *,
  val_images: np.ndarray | None = None,
  val_every: int = 0,
  val_num_iw_samples: int = 10,
  epochs: int = 1,
  eval_batch_size: int = 50,
  on_validation=None,
):
  """Per epoch: sample grids, reconstructions of fixed test images, -ELBO on them (BN in eval);
  every `val_every` epochs and after the last one, `validation_nll` on `val_images`, also passed to
  `on_validation(epoch, values, val_seconds=...)` (e.g. a `ValidationHistory`)."""

  def epoch_end_fn(model, epoch):
    for t in SAMPLE_TEMPERATURES:
      tf.summary.image(
        f"samples/temperature_{t:.1f}", model.sample(16, temperature=t), max_outputs=16
      )
    out = model(test_batch, training=False)
    pairs = tf.concat([tf.constant(test_batch), model.probabilities(out.logits)], axis=2)
    tf.summary.image("reconstructions", pairs, max_outputs=8)
    neg_elbo = -tf.reduce_mean(out.recon_log_prob) + tf.reduce_mean(tf.reduce_sum(out.kl, axis=1))
    values = {"test_batch_neg_elbo": float(neg_elbo)}
    if val_images is not None and val_every and (epoch % val_every == 0 or epoch == epochs - 1):
      start = time.perf_counter()
      values.update(
        validation_nll(
          model, val_images, num_samples=val_num_iw_samples, batch_size=eval_batch_size
        )
      )
      if on_validation is not None:
        on_validation(epoch, dict(values), val_seconds=time.perf_counter() - start)
    return values

  return epoch_end_fn


class ValidationHistory:
  """<logdir>/validation.json: one row per validation NLL with the cumulative training time.

  `train_seconds` is the harness clock (`Trainer.train_seconds`, checkpointed, so it spans resumed
  invocations) at the epoch end, without this epoch's validation pass; `train_seconds_no_val` also
  leaves out the earlier passes (their `val_seconds`). Rows of epochs at or after a resumed epoch are
  replaced, so an epoch repeated after an interruption is logged once.
  """

  def __init__(self, path: str):
    self.path = path
    self.trainer: harness.Trainer | None = None

  def rows(self) -> list[dict]:
    return results.read_json(self.path) if os.path.exists(self.path) else []

  def __call__(self, epoch: int, values: dict, *, val_seconds: float):
    trainer = self.trainer
    if trainer is not None and not harness.is_chief(trainer.strategy):
      return
    earlier = [r for r in self.rows() if r["epoch"] < epoch + 1]
    seconds = no_val = step = None
    if trainer is not None:  # the harness's own clock, without this validation pass
      seconds = trainer.elapsed_train_seconds() - val_seconds
      no_val = training_seconds(seconds, earlier)  # nor the earlier ones
      step = int(trainer.step.numpy())
    row = dict(
      epoch=epoch + 1,
      step=step,
      train_seconds=seconds,
      val_seconds=val_seconds,
      train_seconds_no_val=no_val,
      **values,
    )
    results.write_json(self.path, earlier + [row])


# ----------------------------------------------------------------------------- run


@dataclasses.dataclass
class Trained:
  model: NVAE
  splits: Splits
  trainer: harness.Trainer
  train_seconds: float  # `training_seconds`: over resumed invocations, validation passes excluded
  validation: list  # rows of <logdir>/validation.json


def train(s: RunSettings, config: harness.TrainConfig, *, strategy, data_dir=None) -> Trained:
  """Builds the model and trains it (resuming from config.logdir when checkpoints exist)."""
  splits = load_splits(s, data_dir)
  num_train = data.num_examples(splits.train)
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"{num_train} training images are fewer than one batch of {config.batch_size}")
  model, optimizer = build(
    s,
    strategy=strategy,
    steps_per_epoch=steps_per_epoch,
    epochs=config.epochs,
    seed=config.seed,
    image_shape=splits.image_shape,
  )
  test_images = splits.binary_test(config.seed)
  if harness.is_chief(strategy):
    results.write_json(os.path.join(config.logdir, SETTINGS_FILE), jsonable(dataclasses.asdict(s)))
  history = ValidationHistory(os.path.join(config.logdir, VALIDATION_FILE))
  epoch_end = make_epoch_end_fn(
    test_images[:8],
    val_images=test_images,
    val_every=validation_period(s, config.epochs),
    val_num_iw_samples=s.val_num_iw_samples,
    epochs=config.epochs,
    eval_batch_size=s.eval_batch_size,
    on_validation=history,
  )
  trainer = harness.Trainer(
    config=config,
    strategy=strategy,
    model=model,
    optimizer=optimizer,
    loss_fn=make_loss_fn(s),
    train_data=splits.train,
    epoch_transform=splits.epoch_transform(),
    epoch_end_fn=epoch_end,
  )
  history.trainer = trainer
  trainer.fit()
  validation = history.rows()
  return Trained(
    model=model,
    splits=splits,
    trainer=trainer,
    validation=validation,
    train_seconds=training_seconds(float(trainer.train_seconds.numpy()), validation),
  )


def training_seconds(clock_seconds: float, validation: list[dict]) -> float:
  """Training time without the validation passes: the harness clock at the newest checkpoint
  (`Trainer.train_seconds` / status.json, which spans resumed, preempted and killed invocations and
  includes the epoch-end hooks) minus the `val_seconds` of the validation rows."""
  return clock_seconds - sum(r["val_seconds"] for r in validation)


def partial_nll_path(logdir: str, test_pass: int) -> str:
  """The resumable partial results of one test-NLL pass (`evaluate_nll`)."""
  return os.path.join(logdir, f"nll_partial_pass{test_pass}.npz")


def evaluate_nll(
  s: RunSettings,
  model: NVAE,
  splits: Splits,
  *,
  seed: int,
  progress: bool = True,
  resume_dir: str | None = None,
  checkpoint: str | None = None,
  per_example_path: str | None = None,
  strategy: tf.distribute.Strategy | None = None,
):
  """Importance-weighted test NLL (evaluation.likelihood), `num_test_passes` independent passes.

  The chunk (importance samples per compiled call) is `s.iw_chunk`, or with `s.eval_memory_gib`
  the largest that fits that budget (`likelihood.choose_chunk`, probed on the first batch); the
  numbers do not depend on it. Under a `strategy` of several workers each batch is split over
  them, and only the chief writes the partial and per-example files.

  With `resume_dir`, each pass saves its partial results after every batch in
  `<resume_dir>/nll_partial_pass<p>.npz` (keyed by `checkpoint`, K, test images and seed), so an
  interrupted K = 1000 evaluation over 10,000 images continues where it stopped. With
  `per_example_path`, the per-image IWAE_K and ELBO of every pass ([passes, N]) are written there
  (`results.write_per_example`) when the evaluation completes.
  """
  passes = []
  rng_variables = likelihood.seed_generator_states(model)
  chief = strategy is None or harness.is_chief(strategy)
  chunk, choice = s.iw_chunk, None
  for p in range(s.num_test_passes):
    images = splits.binary_test(seed * 1000 + p)
    # Said before it starts: at the paper and cpu presets' K = 1000 this takes hours on a CPU,
    # --max_steps or not.
    where = (
      f", resumable (partial results: {partial_nll_path(resume_dir, p)})" if resume_dir else ""
    )
    print(
      f"test NLL, pass {p + 1} of {s.num_test_passes}: K = {s.num_iw_samples} importance "
      f"samples on {len(images):,} test images{where}; --num_iw_samples / --test_examples make "
      "it smaller",
      file=sys.stderr,
    )
    batches = tf.data.Dataset.from_tensor_slices(images).batch(s.eval_batch_size)
    if s.eval_memory_gib is not None and choice is None:
      choice = likelihood.choose_chunk(
        model.log_weights,
        images[: s.eval_batch_size],
        num_samples=s.num_iw_samples,
        memory_gib=s.eval_memory_gib,
        rng_variables=rng_variables,
        replicas=strategy.num_replicas_in_sync if strategy is not None else 1,
      )
      chunk = choice.chunk
      print(choice.describe(), file=sys.stderr)
    passes.append(
      likelihood.evaluate_log_likelihood(
        model.log_weights,
        batches,
        num_samples=s.num_iw_samples,
        num_dims=splits.num_dims,
        chunk_size=chunk,
        progress=progress and chief,
        strategy=strategy,
        chief=chief,
        resume_path=resume_dir and partial_nll_path(resume_dir, p),
        resume_key=dict(
          checkpoint=checkpoint,
          num_iw_samples=s.num_iw_samples,
          test_examples=len(images),
          seed=seed,
          test_pass=p,
          eval_batch_size=s.eval_batch_size,
          # which images, when not all (a key without it: the whole test set)
          **({} if splits.test_subset == "all" else {"test_subset": splits.test_subset}),
        ),
        rng_variables=rng_variables,
      )
    )
  nll = np.array([r.nll for r in passes])
  if per_example_path and chief:
    results.write_per_example(
      per_example_path,
      log_likelihood=[r.per_example_log_likelihood for r in passes],
      elbo=[r.per_example_elbo for r in passes],
      what="NVAE test log p(x) (IWAE_K) and ELBO, nats per image",
      num_iw_samples=s.num_iw_samples,
      checkpoint=checkpoint,
      seed=seed,
      test_subset=splits.test_subset,
      dataset=splits.dataset,
      binarization=splits.binarization,
    )
  return {
    "nll": float(nll.mean()),
    "nll_std_over_passes": float(nll.std(ddof=1)) if len(nll) > 1 else 0.0,
    "nll_sem": float(np.mean([r.nll_sem for r in passes])),
    "neg_elbo": float(np.mean([r.negative_elbo for r in passes])),
    "bits_per_dim": float(likelihood.bits_per_dim(nll.mean(), splits.num_dims)),
    "nll_passes": nll.tolist(),
    "test_examples": passes[0].num_examples,
    "test_subset": splits.test_subset,
    "num_iw_samples": s.num_iw_samples,
    "num_dims": splits.num_dims,
    "iw_chunk_used": chunk,  # memory only; settings.iw_chunk is the newest invocation's
    # the budget the chunk was chosen from (None: --iw_chunk given) and the peak it predicted
    "eval_memory_gib": s.eval_memory_gib,
    "eval_memory_predicted_gib": choice
    and round(choice.predicted_peak_bytes() / likelihood.GIB, 2),
    "eval_hosts": {
      h: sum(r.hosts.get(h, 0) for r in passes)  # {host: test-NLL batches}
      for h in host.merge_in_order(*(r.hosts for r in passes))
    },
  }


NLL_KEYS = (
  "nll",
  "nll_std_over_passes",
  "nll_sem",
  "neg_elbo",
  "bits_per_dim",
  "nll_passes",
  "test_examples",
  "test_subset",
  "num_iw_samples",
  "num_dims",
  "iw_chunk_used",
  "eval_memory_gib",
  "eval_memory_predicted_gib",
  "eval_hosts",
  "peak_rss_gib",  # of the process that evaluated it (kept when a rerun reuses the evaluation)
)


def previous_nll(
  logdir: str, s: RunSettings, *, steps: int, seed: int, test_subset: str = "all"
) -> dict | None:
  """The test NLL of <logdir>/results.json when it was made at the same step with the same K, test
  images, passes and seed, and its per-image values are beside it (a rerun of a finished run then
  skips the K = 1000 evaluation; one evaluated before they were kept is evaluated again, so that
  its page can publish them). `test_subset`: `Splits.test_subset`; a row without one was made on
  the first N images (all of them when its test_examples setting is 0)."""
  path = os.path.join(logdir, "results.json")
  if not os.path.exists(path):
    return None
  row = results.read_json(path)
  recorded = row.get(
    "test_subset", "all" if not row.get("settings", {}).get("test_examples") else "first N"
  )
  same = (
    row.get("steps") == steps
    and row.get("seed") == seed
    and recorded == test_subset
    and row.get("num_iw_samples") == s.num_iw_samples
    and len(row.get("nll_passes", [])) == s.num_test_passes
    and row.get("settings", {}).get("test_examples") == s.test_examples
    and row.get("settings", {}).get("dataset") == s.dataset
  )
  if not same:
    return None
  if not os.path.exists(os.path.join(logdir, results.PER_EXAMPLE_FILE)):
    print(
      f"the test NLL of step {steps} in {path} has no per-image values beside it "
      f"({results.PER_EXAMPLE_FILE}): evaluating it again to keep them",
      file=sys.stderr,
    )
    return None
  return {k: row[k] for k in NLL_KEYS if k in row}


def train_and_evaluate(
  s: RunSettings, config: harness.TrainConfig, *, strategy, data_dir=None, command: str = ""
) -> tuple[dict, Trained]:
  """Train (or resume), NLL (reused from results.json when nothing changed), sample grid,
  results.json; returns (results row, Trained)."""
  trained = train(s, config, strategy=strategy, data_dir=data_dir)
  model = trained.model
  steps = int(trained.trainer.step.numpy())
  nll = previous_nll(
    config.logdir, s, steps=steps, seed=config.seed, test_subset=trained.splits.test_subset
  )
  if nll is not None:
    print(
      f"test NLL of step {steps} reused from {os.path.join(config.logdir, 'results.json')} "
      "(same K, test images, passes and seed)",
      file=sys.stderr,
    )
  else:
    nll = evaluate_nll(
      s,
      model,
      trained.splits,
      seed=config.seed,
      progress=config.progress,
      resume_dir=config.logdir,
      checkpoint=f"step {steps}",
      per_example_path=os.path.join(config.logdir, results.PER_EXAMPLE_FILE),
      strategy=strategy,
    )
  if s.readjust_bn_steps:
    model.readjust_bn(num_iterations=s.readjust_bn_steps, temperature=s.temperature)
  samples = model.sample(NUM_GRID_IMAGES, temperature=s.temperature).numpy()
  chief = harness.is_chief(strategy)  # under several workers only the chief writes files
  if chief:
    save_grid(os.path.join(config.logdir, "samples.png"), samples)
    save_samples(os.path.join(config.logdir, "samples.npz"), samples)
  status = results.read_status(config.logdir) or {}
  row = {
    "script": "nvae_mnist",
    "command": command,
    "preset": s.preset,
    "dataset": trained.splits.dataset,
    "binarization": trained.splits.binarization,
    "spectral": s.model.spectral,
    "kl_warmup": s.kl_warmup,
    "num_flows": s.model.num_flows,
    "global_batch_size": config.batch_size,
    "epochs": config.epochs,
    "steps": steps,
    "epochs_reached": steps / trained.trainer.steps_per_epoch,
    "finished": steps >= trained.trainer.total_steps,
    "train_seconds": trained.train_seconds,
    # the CPUs that trained the row, then those of its test-NLL batches
    "cpus": host.merge_in_order(
      results.status_cpus(status) or [host.cpu_model()], nll.get("eval_hosts", {})
    ),
    "code_commits": status.get("code_commits", []),
    "parameters": model.count_params(),
    "precision_policy": keras.mixed_precision.global_policy().name,
    "seed": config.seed,
    "logdir": config.logdir,
    **nll,
    "validation": trained.validation,
    # this invocation's process, or the one that made a reused evaluation when that peaked higher
    "peak_rss_gib": max(host.peak_rss_gib(), nll.get("peak_rss_gib") or 0.0),
    "settings": jsonable(hparams(s)),
  }
  if chief:
    results.write_json(os.path.join(config.logdir, "results.json"), jsonable(row))
  print(
    f"test NLL {row['nll']:.2f} nats ({row['bits_per_dim']:.4f} bits/dim), -ELBO "
    f"{row['neg_elbo']:.2f}, K={s.num_iw_samples}, {row['test_examples']} images; "
    f"samples: {os.path.join(config.logdir, 'samples.png')}"
  )
  return row, trained


def restore_run(logdir: str, which: str, s: RunSettings, *, seed: int):
  """The run's NVAE with the weights (and BN statistics) of its latest / best checkpoint
  (`harness.restore_weights`: "latest" of a finished run kept as its weights alone reads final/)."""
  model = NVAE(s.model, seed=seed)
  return model, harness.restore_weights(model, logdir, which, settings_file="settings.json")


# ----------------------------------------------------------------------------- sample metrics


def unavailable(reason: str) -> str:
  return f"unavailable ({reason})"


def generate_samples(model, num_samples: int, *, temperature: float = 1.0) -> np.ndarray:
  """[N, H, W, C] Bernoulli means in [0, 1], drawn SAMPLE_BATCH at a time."""
  chunks = []
  for start in range(0, num_samples, SAMPLE_BATCH):
    chunks.append(
      model.sample(min(SAMPLE_BATCH, num_samples - start), temperature=temperature).numpy()
    )
  return np.concatenate(chunks)


def fid_from_features(
  network, samples, reference, *, label: str = "inception-2015", strategy=None
) -> dict:
  """FID between [N, H, W, C] images in [0, 1] through `network` ({'pool_3': [B, 2048]}), as
  `results.metric(value, protocol record of the samples)`. Under a `strategy` of several replicas
  or workers each takes its share of every feature batch (`features.extract`)."""
  from evaluation import features, fid

  fake, real, record = features.extract_samples_and_reference(
    network, samples, reference, label=label, feature="pool_3", progress=False, strategy=strategy
  )
  value = fid.frechet_distance(*fid.feature_statistics(fake), *fid.feature_statistics(real))
  return results.metric(value, record)


def precision_recall_from_features(
  network, samples, reference, *, label: str = "vgg16-keras", strategy=None
) -> tuple[dict, dict]:
  """Improved precision / recall (k = 3) of images in [0, 1] through `network` ({'fc2': ...}), each
  as `results.metric(value, protocol record)`; `strategy` as in `fid_from_features`."""
  from evaluation import features, precision_recall

  fake, real, record = features.extract_samples_and_reference(
    network, samples, reference, label=label, feature="fc2", progress=False, strategy=strategy
  )
  precision, recall = precision_recall.precision_recall(real, fake, k=3)
  return results.metric(precision, record), results.metric(recall, record)


def load_network(kind: str, *, path: str | None, download: bool, strategy=None):
  """(network, None) or (None, reason) for kind 'inception' / 'vgg16'; never fakes a network.
  With a `strategy` the network is built in its scope (its variables on every replica's device:
  `sample_metrics` then splits each feature batch over the replicas)."""
  from evaluation import networks

  loader = {"inception": networks.inception_network, "vgg16": networks.vgg16_network}[kind]
  scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
  try:
    with scope:
      return loader(path, download=download), None
  except networks.WeightsUnavailableError as e:
    return None, str(e)


def sample_metrics(
  model,
  reference: np.ndarray,
  *,
  num_samples: int,
  inception,
  vgg16,
  temperature: float = 1.0,
  strategy=None,
) -> dict:
  """FID / precision / recall of samples at `temperature` as `results.metric` values (with their
  protocol records), or 'unavailable (...)' strings (reasons: `load_network`). Under a `strategy`
  of several replicas or workers (the networks loaded in its scope: `load_network`) every worker
  draws the same samples and extracts its share of the features of each batch; the gathered
  features, so the values, are one process's."""
  inception_net, vgg_net = inception[0], vgg16[0]
  out = {"fid": unavailable("no Inception weights: pass --inception_path")}
  out["precision"] = out["recall"] = unavailable("no VGG-16 weights: pass --vgg16_path")
  if inception_net is None and vgg_net is None:
    return out
  samples = generate_samples(model, num_samples, temperature=temperature)
  reference = data.subset(reference, num_samples, seed=TEST_SUBSET_SEED)  # not a one-digit prefix
  if inception_net is not None:
    out["fid"] = fid_from_features(inception_net, samples, reference, strategy=strategy)
  if vgg_net is not None:
    out["precision"], out["recall"] = precision_recall_from_features(
      vgg_net, samples, reference, strategy=strategy
    )
  return out


# ----------------------------------------------------------------------------- ablation tables


# (KL warm-up clock, spectral method) of the Table 1 / Table 2 rows.
TABLE_ROWS = (
  (WarmupClock.STEP, Spectral.SN),
  (WarmupClock.STEP, Spectral.SR),
  (WarmupClock.EPOCH, Spectral.SN),
)
DEFAULT_TABLE_TEST_PASSES = 3


def row_name(kl_warmup: str, spectral: str) -> str:
  """'step_sr': the row's folder under the table's logdir, and its --table_rows name."""
  return f"{WarmupClock(kl_warmup).value}_{Spectral(spectral).value}"


def parse_table_rows(names) -> tuple[tuple[WarmupClock, Spectral], ...]:
  """['step_sr', 'epoch_sr'] -> ((STEP, SR), (EPOCH, SR)); ValueError on an unknown name."""
  rows = []
  for name in names:
    clock, _, spectral = name.partition("_")
    if clock not in tuple(WarmupClock) or spectral not in tuple(Spectral):
      raise ValueError(f"--table_rows: {name!r} is not <step|epoch>_<sr|sn|none>")
    rows.append((WarmupClock(clock), Spectral(spectral)))
  return tuple(rows)


def row_settings(base: RunSettings, kl_warmup: str, spectral: str) -> RunSettings:
  return dataclasses.replace(
    base, kl_warmup=kl_warmup, model=dataclasses.replace(base.model, spectral=spectral)
  )


def table_row_label(kl_warmup: str, spectral: str) -> str:
  return f"{WarmupClock(kl_warmup).value.capitalize()} + {Spectral(spectral).value.upper()}"


def validation_table(rows: list[dict]) -> str:
  """Markdown: validation NLL (K of the periodic validation) vs cumulative training minutes, per run."""
  lines = []
  for row in rows:
    history = row.get("validation") or []
    if not history:
      continue
    lines.append(
      f"**{row['row']}** (validation NLL with K = {row['settings']['val_num_iw_samples']} "
      f"on {row.get('test_examples') or 'all'} test images, training minutes excluding "
      "the validation passes):\n"
    )
    lines.append(
      results.markdown_table(
        [
          dict(
            epoch=h["epoch"],
            step=h["step"],
            nll=h["val_neg_log_p"],
            nelbo=h["val_nelbo"],
            minutes=None if h["train_seconds_no_val"] is None else h["train_seconds_no_val"] / 60.0,
          )
          for h in history
        ],
        [
          ("epoch", "Epoch"),
          ("step", "Step"),
          ("minutes", "Train time (min)"),
          ("nll", "Val NLL (nats)"),
          ("nelbo", "Val -ELBO (nats)"),
        ],
      )
    )
  return "\n".join(lines)


def validation_curves(rows: list[dict]) -> dict[str, dict[str, list]]:
  """{row label: {"step", "minutes", "nll"}}: each formatted row's validation history as columns
  (minutes: training minutes excluding the validation passes); rows without one are left out."""
  curves = {}
  for row in rows:
    history = [h for h in row.get("validation") or [] if h["train_seconds_no_val"] is not None]
    if history:
      curves[row["row"]] = dict(
        step=[h["step"] for h in history],
        minutes=[h["train_seconds_no_val"] / 60.0 for h in history],
        nll=[h["val_neg_log_p"] for h in history],
      )
  return curves


def plot_validation_curves(rows: list[dict], path: str) -> bool:
  """PNG at `path`: validation NLL against training minutes and against steps, one line per row
  (`validation_curves`); False (nothing written) when no row has a validation history."""
  curves = validation_curves(rows)
  if not curves:
    return False
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (by_time, by_step) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
  for label, c in curves.items():
    by_time.plot(c["minutes"], c["nll"], "o-", label=label)
    by_step.plot(c["step"], c["nll"], "o-", label=label)
  k = rows[0]["settings"]["val_num_iw_samples"]
  values = [v for c in curves.values() for v in c["nll"]]
  # An epoch-clock warm-up's first epoch (beta at its 1e-4 floor) can sit ~100x above the rest
  # (Epoch + SR, cpu preset: 7985 nats at epoch 1, 83 at epoch 16): a linear axis flattens the rest.
  log_scale = min(values) > 0 and max(values) / min(values) > 2
  if log_scale:
    by_time.set_yscale("log")
  by_time.set(
    xlabel="training minutes (wall clock, validation passes excluded)",
    ylabel=f"validation NLL, K = {k} (nats{', log scale' if log_scale else ''})",
  )
  by_step.set(xlabel="training step")
  by_time.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return True


def make_generator(model, *, temperature: float):
  """latents [B, D] (all groups' noise, flattened) -> images [B, H, W, C] in [0, 1]."""
  shapes = model.latent_shapes()
  sizes = [int(np.prod(s)) for s in shapes]

  @tf.function
  def generate(latents):
    parts = tf.split(latents, sizes, axis=1)
    noise = [tf.reshape(p, (-1,) + s) for p, s in zip(parts, shapes)]
    return model.probabilities(model.decode_noise(noise, temperature=temperature))

  def latent_sampler(n):
    return np.random.default_rng().standard_normal((n, sum(sizes))).astype(np.float32)

  return lambda z: generate(tf.convert_to_tensor(z)).numpy(), latent_sampler, sum(sizes)
