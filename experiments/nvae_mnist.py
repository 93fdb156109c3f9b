"""Train NVAE on binary MNIST and estimate its test NLL (Vahdat & Kautz 2020; NVlabs/NVAE MNIST setup).

  python -m experiments.nvae_mnist --spectral=sr --kl_warmup=step --preset=quick
  python -m experiments.nvae_mnist --preset=paper --strategy=mirrored   # the official run

Data (`--dataset`): `mnist` = grey MNIST with dynamic binarization (a fresh Bernoulli draw of every
image each epoch; the official setup); `binarized_mnist` = the fixed binarization of Larochelle &
Murray (static, 50k train / 10k test); `auto` (default) = `mnist` when its training images can be
read, else `binarized_mnist` (the case offline here). The choice is printed and recorded.

Writes to --logdir: checkpoints (resumable), TensorBoard (loss, recon, KL total and per group,
beta, gammas, lambda, L_SR, L_BN, lr, grad norm, active units per group, sample grids at
temperatures 0.7 / 1.0 and reconstructions each epoch), and at the end the importance-weighted NLL
(`--num_iw_samples`, 1000 in the paper preset as official) in nats and bits/dim, `samples.png` /
`samples.npz`, and `results.json` (one row).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from absl import flags
import keras
import numpy as np
import tensorflow as tf

from evaluation import likelihood
from experiments import data
from experiments import flags as common
from experiments import harness
from experiments import results
from experiments.images import save_grid, save_samples
from nvae_tf import losses
from nvae_tf import optim
from nvae_tf.model import NVAE, NVAEConfig

IMAGE_DIMS = 28 * 28
SAMPLE_TEMPERATURES = (0.7, 1.0)  # official train.py logs grids at 0.7, 0.8, 0.9, 1.0
NUM_GRID_IMAGES = 64
SETTINGS_FILE = "settings.json"  # RunSettings of a run (read by experiments.nvae_evaluate)

def define_flags():
  """Defines this script's flags (called when it runs, or by the table scripts that reuse it).

  Not at import, so tests and other scripts can import this module next to other experiment
  modules that define flags of the same name (e.g. --dataset).
  """
  flags.DEFINE_enum("spectral", "sr", ["sr", "sn", "none"],
                    "sr: spectral regularisation lambda * sum of top singular values (official); "
                    "sn: spectral normalisation of every conv; none: neither (L_BN is kept).")
  flags.DEFINE_enum("spectral_scope", "all", ["all", "cells"],
                    "Convs that --spectral=sr|sn acts on: all (every conv, the official SR set: "
                    "samplers, combiners, skips, stem, image head and IAF included) or cells (only "
                    "the convs inside the residual cells' ops; the official code's commented-out "
                    "alternative). See docs/nvae.md.")
  flags.DEFINE_enum("kl_warmup", "step", ["step", "epoch"],
                    "KL warm-up clock: beta = max(min((t - 1e-4 T) / (0.3 T), 1), 1e-4) on the step "
                    "counter (official) or on the epoch counter (constant within an epoch).")
  flags.DEFINE_enum("dataset", "auto", ["auto", "mnist", "binarized_mnist"],
                    "mnist: dynamic binarization of grey MNIST (official); binarized_mnist: static "
                    "Larochelle-Murray binarization; auto: mnist if its training images are "
                    "available, else binarized_mnist.")
  flags.DEFINE_integer("num_flows", None, "Paired IAF cells per latent group (official --num_nf); "
                       "the KL becomes a single-sample estimate when > 0. Default: preset's (0).", lower_bound=0)
  flags.DEFINE_integer("num_channels", None, "Channels of the encoder/decoder at 32x32 (official 32). "
                       "Default: the preset's.", lower_bound=1)
  flags.DEFINE_integer("num_groups_per_scale", None, "Latent groups at the finest latent scale; "
                       "halved at the coarser one (official 10 -> [10, 5]). Default: preset's.", lower_bound=1)
  flags.DEFINE_integer("num_cells", None, "Residual cells per latent group in encoder and decoder "
                       "(official 2). Default: the preset's.", lower_bound=1)
  flags.DEFINE_integer("warmup_epochs", None, "Epochs of linear learning-rate warm-up before the "
                       "cosine decay (official 5). Default: the preset's.", lower_bound=0)
  flags.DEFINE_integer("train_examples", None, "Use only the first N training images (0 = all). "
                       "Default: the preset's.", lower_bound=0)
  flags.DEFINE_integer("test_examples", None, "Evaluate the NLL on the first N test images (0 = all "
                       "10,000). Default: the preset's.", lower_bound=0)
  flags.DEFINE_integer("num_iw_samples", None, "Importance samples K of the test NLL "
                       "(official 1000). Default: the preset's.", lower_bound=1)
  flags.DEFINE_integer("iw_chunk", None, "Importance samples drawn per network call (memory bound; "
                       "does not change the estimate). Default: the preset's.", lower_bound=1)
  flags.DEFINE_integer("eval_batch_size", None, "Test images per NLL batch. Default: the preset's.", lower_bound=1)
  flags.DEFINE_integer("num_test_passes", 1, "Independent NLL passes over the test set (fresh "
                       "importance samples, and a fresh binarization for --dataset=mnist); the mean "
                       "and std over passes are reported.", lower_bound=1)
  flags.DEFINE_float("temperature", 1.0, "Temperature of the saved sample grid (scales prior sigmas).", lower_bound=0.0)
  flags.DEFINE_integer("val_every_epochs", None, "Validation NLL (K = --val_num_iw_samples importance "
                       "samples on the test images) every this many epochs and after the last one, "
                       "logged to TensorBoard as epoch/val_neg_log_p, epoch/val_nelbo, "
                       "epoch/val_bpd_log_p. Default: the official rule, 1 if epochs <= 50 else 20; "
                       "0 = off.", lower_bound=0)
  flags.DEFINE_integer("val_num_iw_samples", 10, "Importance samples of the periodic validation NLL "
                       "(official train.py: 10).", lower_bound=1)
  flags.DEFINE_integer("readjust_bn_steps", 0, "Before saving samples, re-estimate BN statistics from "
                       "this many sample batches in training mode (official --readjust_bn uses 500); "
                       "0 = off. Done after the NLL, which uses the training statistics.", lower_bound=0)


FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
  model: NVAEConfig
  batch_size: int       # global batch
  epochs: int
  warmup_epochs: int
  train_examples: int   # 0 = all
  test_examples: int    # 0 = all
  num_iw_samples: int
  iw_chunk: int
  eval_batch_size: int


PRESETS = {
    # NVlabs/NVAE README, MNIST: batch 200 per GPU on 2 GPUs (global 400), 400 epochs, 2 scales,
    # 10 groups (ada: [10, 5]), 20 latents/group, 2 cells per group, 32 channels, lambda 1e-2.
    "paper": Preset(model=NVAEConfig(), batch_size=400, epochs=400, warmup_epochs=5,
                    train_examples=0, test_examples=0, num_iw_samples=1000, iw_chunk=100,
                    eval_batch_size=50),
    # CPU-sized: the paper's two latent scales (4x4 then 8x8) with 2 + 1 groups, 1 cell per group,
    # 1 pre/post cell per block, 8 channels; 10 epochs of 4k images (400 steps, so that the per-epoch
    # warm-up takes 3 epochs to reach beta = 1, as the per-step one takes 120 steps), NLL with K = 50
    # on 500 test images.
    "quick": Preset(model=NVAEConfig(num_channels_enc=8, num_channels_dec=8, num_groups_per_scale=2,
                                     num_cell_per_cond_enc=1, num_cell_per_cond_dec=1,
                                     num_preprocess_cells=1, num_postprocess_cells=1),
                    batch_size=100, epochs=10, warmup_epochs=1, train_examples=4_000,
                    test_examples=500, num_iw_samples=50, iw_chunk=50, eval_batch_size=50),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSettings:
  """Everything that defines one run besides the common TrainConfig."""
  model: NVAEConfig
  preset: str = "custom"
  kl_warmup: str = "step"
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
  val_num_iw_samples: int = 10         # official train.py: test(..., num_samples=10)

  def __post_init__(self):
    if self.kl_warmup not in ("step", "epoch"):
      raise ValueError(f"kl_warmup must be 'step' or 'epoch', got {self.kl_warmup!r}")
    for name in ("num_iw_samples", "iw_chunk", "eval_batch_size", "num_test_passes"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.val_num_iw_samples < 1:
      raise ValueError(f"--val_num_iw_samples must be >= 1, got {self.val_num_iw_samples}")
    if self.val_every_epochs is not None and self.val_every_epochs < 0:
      raise ValueError(f"--val_every_epochs must be >= 0, got {self.val_every_epochs}")
    if self.temperature <= 0:
      raise ValueError(f"--temperature must be > 0, got {self.temperature}")


def settings_from_flags(**overrides) -> RunSettings:
  """RunSettings from the flags and the preset; `overrides` (e.g. spectral=, kl_warmup=) win."""
  preset = PRESETS[FLAGS.preset]
  pick = lambda flag, default: default if flag is None else flag  # pylint: disable=g-long-lambda
  model_changes = {}
  if FLAGS.num_channels is not None:
    model_changes.update(num_channels_enc=FLAGS.num_channels, num_channels_dec=FLAGS.num_channels)
  if FLAGS.num_groups_per_scale is not None:
    model_changes["num_groups_per_scale"] = FLAGS.num_groups_per_scale
  if FLAGS.num_cells is not None:
    model_changes.update(num_cell_per_cond_enc=FLAGS.num_cells, num_cell_per_cond_dec=FLAGS.num_cells)
  if FLAGS.num_flows is not None:
    model_changes["num_flows"] = FLAGS.num_flows
  model_changes["spectral"] = overrides.pop("spectral", FLAGS.spectral)
  model_changes["spectral_scope"] = FLAGS.spectral_scope
  values = dict(
      model=dataclasses.replace(preset.model, **model_changes), preset=FLAGS.preset,
      kl_warmup=FLAGS.kl_warmup,
      dataset=FLAGS.dataset, warmup_epochs=pick(FLAGS.warmup_epochs, preset.warmup_epochs),
      train_examples=pick(FLAGS.train_examples, preset.train_examples),
      test_examples=pick(FLAGS.test_examples, preset.test_examples),
      num_iw_samples=pick(FLAGS.num_iw_samples, preset.num_iw_samples),
      iw_chunk=pick(FLAGS.iw_chunk, preset.iw_chunk),
      eval_batch_size=pick(FLAGS.eval_batch_size, preset.eval_batch_size),
      num_test_passes=FLAGS.num_test_passes, temperature=FLAGS.temperature,
      readjust_bn_steps=FLAGS.readjust_bn_steps, val_every_epochs=FLAGS.val_every_epochs,
      val_num_iw_samples=FLAGS.val_num_iw_samples)
  values.update(overrides)
  return RunSettings(**values)


def train_config(s: RunSettings, *, script: str = "nvae_mnist", **logdir_settings) -> harness.TrainConfig:
  preset = PRESETS[FLAGS.preset]
  logdir = common.default_logdir(script, preset=FLAGS.preset, spectral=s.model.spectral,
                                 kl_warmup=s.kl_warmup, **logdir_settings)
  return common.train_config(logdir=logdir, batch_size=preset.batch_size, epochs=preset.epochs,
                             hparams=_hparams(s))


def _hparams(s: RunSettings) -> dict:
  flat = {f"model.{k}": v for k, v in dataclasses.asdict(s.model).items()}
  flat.update({k: v for k, v in dataclasses.asdict(s).items() if k != "model"})
  return flat


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Splits:
  dataset: str                  # the data set actually used (auto resolved)
  dynamic: bool                 # dynamic binarization of grey images
  train: tf.data.Dataset | None  # unbatched [28, 28, 1] float32 in [0, 1]; None: evaluation only
  test: np.ndarray              # [N, 28, 28, 1] grey (dynamic) or binary (static)

  def epoch_transform(self):
    return (lambda ds, seed: data.dynamic_binarization(ds, seed=seed)) if self.dynamic else None

  def binary_test(self, seed: int) -> np.ndarray:
    """The test images as {0, 1}: a fresh binarization per seed when dynamic."""
    if not self.dynamic:
      return self.test
    return data.binarize_once(self.test, seed=seed)


def resolve_dataset(name: str, data_dir=None) -> str:
  """'auto' -> 'mnist' when grey MNIST training images load, else 'binarized_mnist'."""
  if name != "auto":
    return name
  try:
    data.load_arrays("mnist", "train", data_dir)
    return "mnist"
  except data.DataError as e:
    print(f"--dataset=auto: grey MNIST training images unavailable ({str(e)[:120]}...); using the "
          "static binarized_mnist (Larochelle & Murray) instead of dynamic binarization.",
          file=sys.stderr)
    return "binarized_mnist"


def load_splits(s: RunSettings, data_dir=None) -> Splits:
  name = resolve_dataset(s.dataset, data_dir)
  train, _ = data.load_arrays(name, "train", data_dir)
  test, _ = data.load_arrays(name, "test", data_dir)
  if s.train_examples:
    train = train[:s.train_examples]
  if s.test_examples:
    test = test[:s.test_examples]
  print(f"data: {name} ({'dynamic' if name == 'mnist' else 'static'} binarization), "
        f"{len(train)} train / {len(test)} test images", file=sys.stderr)
  return Splits(dataset=name, dynamic=name == "mnist", train=tf.data.Dataset.from_tensor_slices(train),
                test=test)


# ----------------------------------------------------------------------------- model and loss


def build(s: RunSettings, *, strategy, steps_per_epoch: int, epochs: int, seed: int):
  """(model, optimizer) built inside `strategy.scope()` (model called once on a dummy batch)."""
  keras.utils.set_random_seed(seed)
  with strategy.scope():
    model = NVAE(s.model, seed=seed)
    model(tf.zeros((1, 28, 28, 1)), training=False)
    schedule = optim.WarmupCosine(steps_per_epoch=steps_per_epoch, epochs=epochs,
                                  warmup_epochs=s.warmup_epochs)
    optimizer = optim.CoupledAdamax(schedule)  # the harness does float16 loss scaling itself
  return model, optimizer


def make_loss_fn(s: RunSettings, model: NVAE):
  """Wires the harness to `NVAE.loss_terms` (the objective lives in nvae_tf) with the warm-up clock."""
  del model  # the harness passes the model to every call

  def loss_fn(model, batch, ctx: harness.StepContext) -> harness.LossOutput:
    beta = losses.kl_warmup_beta_on_clock(s.kl_warmup, step=ctx.step, total_steps=ctx.total_steps,
                                          epoch=ctx.epoch, total_epochs=ctx.total_epochs)
    terms = model.loss_terms(batch, beta=beta)
    return harness.LossOutput(per_example=terms.per_example, regularizer=terms.regularizer,
                              metrics=terms.metrics())
  return loss_fn


# ----------------------------------------------------------------------------- images


def validation_period(s: RunSettings, epochs: int) -> int:
  """Epochs between validation NLLs: the flag, else official train.py's `1 if epochs <= 50 else 20`."""
  if s.val_every_epochs is not None:
    return s.val_every_epochs
  return 1 if epochs <= 50 else 20


def make_epoch_end_fn(test_batch: np.ndarray, *, val_images: np.ndarray | None = None,
                      val_every: int = 0, val_num_iw_samples: int = 10, epochs: int = 1,
                      eval_batch_size: int = 50):
  """Per epoch: sample grids, reconstructions of fixed test images, -ELBO on them (BN in eval);
  every `val_every` epochs and after the last one, the IW validation NLL with K = `val_num_iw_samples`
  (official train.py: `test(valid_queue, num_samples=10)` logged as val/neg_log_p, val/nelbo)."""
  def epoch_end_fn(model, epoch):
    for t in SAMPLE_TEMPERATURES:
      tf.summary.image(f"samples/temperature_{t:.1f}", model.sample(16, temperature=t), max_outputs=16)
    out = model(test_batch, training=False)
    pairs = tf.concat([tf.constant(test_batch), model.probabilities(out.logits)], axis=2)
    tf.summary.image("reconstructions", pairs, max_outputs=8)
    neg_elbo = -tf.reduce_mean(out.recon_log_prob) + tf.reduce_mean(tf.reduce_sum(out.kl, axis=1))
    values = {"test_batch_neg_elbo": float(neg_elbo)}
    if val_images is not None and val_every and (epoch % val_every == 0 or epoch == epochs - 1):
      batches = tf.data.Dataset.from_tensor_slices(val_images).batch(eval_batch_size)
      r = likelihood.evaluate_log_likelihood(model.log_weights, batches, num_samples=val_num_iw_samples,
                                             num_dims=IMAGE_DIMS, progress=False)
      values.update(val_neg_log_p=float(r.nll), val_nelbo=float(r.negative_elbo),
                    val_bpd_log_p=float(likelihood.bits_per_dim(r.nll, IMAGE_DIMS)))
    return values
  return epoch_end_fn


# ----------------------------------------------------------------------------- run


@dataclasses.dataclass
class Trained:
  model: NVAE
  splits: Splits
  trainer: harness.Trainer
  train_seconds: float  # cumulative over resumed invocations


def train(s: RunSettings, config: harness.TrainConfig, *, strategy, data_dir=None) -> Trained:
  """Builds the model and trains it (resuming from config.logdir when checkpoints exist)."""
  splits = load_splits(s, data_dir)
  num_train = data.num_examples(splits.train)
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"{num_train} training images are fewer than one batch of {config.batch_size}")
  model, optimizer = build(s, strategy=strategy, steps_per_epoch=steps_per_epoch,
                           epochs=config.epochs, seed=config.seed)
  test_images = splits.binary_test(config.seed)
  test_batch = test_images[:8]
  results.write_json(os.path.join(config.logdir, SETTINGS_FILE),
                     json.loads(json.dumps(dataclasses.asdict(s), default=str)))
  trainer = harness.Trainer(config=config, strategy=strategy, model=model, optimizer=optimizer,
                            loss_fn=make_loss_fn(s, model), train_data=splits.train,
                            epoch_transform=splits.epoch_transform(),
                            epoch_end_fn=make_epoch_end_fn(
                                test_batch, val_images=test_images,
                                val_every=validation_period(s, config.epochs),
                                val_num_iw_samples=s.val_num_iw_samples, epochs=config.epochs,
                                eval_batch_size=s.eval_batch_size))
  time_file = os.path.join(config.logdir, "train_time.json")
  previous = results.read_json(time_file)["seconds"] if os.path.exists(time_file) else 0.0
  start = time.perf_counter()
  trainer.fit()
  total = previous + time.perf_counter() - start
  results.write_json(time_file, {"seconds": total, "step": int(trainer.step.numpy())})
  return Trained(model=model, splits=splits, trainer=trainer, train_seconds=total)


def evaluate_nll(s: RunSettings, model: NVAE, splits: Splits, *, seed: int, progress: bool = True):
  """Importance-weighted test NLL (evaluation.likelihood), `num_test_passes` independent passes."""
  passes = []
  for p in range(s.num_test_passes):
    images = splits.binary_test(seed * 1000 + p)
    batches = tf.data.Dataset.from_tensor_slices(images).batch(s.eval_batch_size)
    passes.append(likelihood.evaluate_log_likelihood(
        model.log_weights, batches, num_samples=s.num_iw_samples, num_dims=IMAGE_DIMS,
        chunk_size=s.iw_chunk, progress=progress))
  nll = np.array([r.nll for r in passes])
  return {
      "nll": float(nll.mean()),
      "nll_std_over_passes": float(nll.std(ddof=1)) if len(nll) > 1 else 0.0,
      "nll_sem": float(np.mean([r.nll_sem for r in passes])),
      "neg_elbo": float(np.mean([r.negative_elbo for r in passes])),
      "bits_per_dim": float(likelihood.bits_per_dim(nll.mean(), IMAGE_DIMS)),
      "nll_passes": nll.tolist(), "test_examples": passes[0].num_examples,
      "num_iw_samples": s.num_iw_samples,
  }


def train_and_evaluate(s: RunSettings, config: harness.TrainConfig, *, strategy,
                       data_dir=None) -> tuple[dict, Trained]:
  """Train (or resume), NLL, sample grid, results.json; returns (results row, Trained)."""
  trained = train(s, config, strategy=strategy, data_dir=data_dir)
  model = trained.model
  nll = evaluate_nll(s, model, trained.splits, seed=config.seed, progress=config.progress)
  if s.readjust_bn_steps:
    model.readjust_bn(num_iterations=s.readjust_bn_steps, temperature=s.temperature)
  samples = model.sample(NUM_GRID_IMAGES, temperature=s.temperature).numpy()
  save_grid(os.path.join(config.logdir, "samples.png"), samples)
  save_samples(os.path.join(config.logdir, "samples.npz"), samples)
  row = {
      "script": "nvae_mnist", "command": common.command_line(), "preset": s.preset,
      "dataset": trained.splits.dataset,
      "binarization": "dynamic" if trained.splits.dynamic else "static",
      "spectral": s.model.spectral, "kl_warmup": s.kl_warmup, "num_flows": s.model.num_flows,
      "global_batch_size": config.batch_size, "epochs": config.epochs,
      "steps": int(trained.trainer.step.numpy()), "train_seconds": trained.train_seconds,
      "parameters": model.count_params(), "precision_policy": keras.mixed_precision.global_policy().name,
      "seed": config.seed, "logdir": config.logdir, **nll,
      "settings": json.loads(json.dumps(_hparams(s), default=str)),
  }
  results.write_json(os.path.join(config.logdir, "results.json"), row)
  print(f"test NLL {row['nll']:.2f} nats ({row['bits_per_dim']:.4f} bits/dim), -ELBO "
        f"{row['neg_elbo']:.2f}, K={s.num_iw_samples}, {row['test_examples']} images; "
        f"samples: {os.path.join(config.logdir, 'samples.png')}")
  return row, trained


def main(argv):
  del argv
  strategy = common.setup_runtime()
  s = settings_from_flags()
  train_and_evaluate(s, train_config(s), strategy=strategy, data_dir=FLAGS.data_dir)


if __name__ == "__main__":
  define_flags()
  common.run(main)
