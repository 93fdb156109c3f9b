"""The VampPrior experiment as a library (no flags): presets, run settings, data splits, model and
loss wiring, training with the official warm-up / early stopping / AdamNormGrad, and the test
log-likelihood (Tomczak & Welling 2018, official code jmtomczak/vae_vampprior).

The scripts (`experiments.vampprior`, `experiments.vampprior_table`) read their flags once into a
frozen `RunSettings` (`experiments.vampprior_flags`) and call into this module, as flax examples
split `main.py` (flags) from `train.py` (the work). `experiments.ppl` and
`bench/bench_vampprior.py` import it too.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from common_tf import host
from evaluation import likelihood as evaluation_likelihood
from experiments import data, harness, results
from experiments.images import save_grid, save_samples
from vampprior_tf import distributions, likelihood, losses, optim, priors
from vampprior_tf import model as models

MODELS = {
  "vae": models.VAE,
  "hvae_2level": models.HVAE2Level,
  "convhvae_2level": models.ConvHVAE2Level,
  "pixelhvae_2level": models.PixelHVAE2Level,
}
PRIORS = priors.PRIORS


# The table's grids (experiments.vampprior_table): (datasets, models, priors) per preset.
GRIDS = {
  "quick": (("static_mnist", "frey_faces"), ("vae", "hvae_2level"), PRIORS),
  "paper": (("static_mnist", "dynamic_mnist", "frey_faces"), tuple(MODELS), PRIORS),
}


def cell_logdir(base_logdir: str, dataset: str, model: str, prior: str) -> str:
  """--logdir names the table's folder, not one run's: each cell gets its own sub-folder."""
  return os.path.join(base_logdir, f"{dataset}-{model}-{prior}")


# Official experiment.py: batch 100, lr 5e-4, warm-up 100 epochs, early stopping 50, K = 500
# pseudo-inputs, 5000 importance samples, up to 2000 epochs.
NUM_SAMPLE_IMAGES = 64


@dataclasses.dataclass(frozen=True)
class Preset:
  epochs: int
  batch_size: int
  lr: float
  warmup: int
  early_stopping: int  # 0 = off
  num_components: int
  test_samples: int
  train_examples: int | None  # None = all
  eval_examples: int | None
  image_every: int  # epochs between TensorBoard images


PRESETS = {
  "paper": Preset(
    epochs=2000,
    batch_size=100,
    lr=5e-4,
    warmup=100,
    early_stopping=50,
    num_components=500,
    test_samples=5000,
    train_examples=None,
    eval_examples=None,
    image_every=10,
  ),
  # CPU in about a minute per model: a 10k-example subset, 5 epochs, short warm-up.
  "quick": Preset(
    epochs=5,
    batch_size=100,
    lr=5e-4,
    warmup=2,
    early_stopping=0,
    num_components=100,
    test_samples=500,
    train_examples=10000,
    eval_examples=500,
    image_every=1000,
  ),
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  source: str  # experiments.data name
  binary: bool  # binary data (Bernoulli decoder by default)
  dynamic: bool  # binarize the grey training images afresh every epoch
  pseudo_mean: float  # VampPrior pseudo-input initialisation N(mean, std^2)
  pseudo_std: float


DATASETS = {
  # Official load_data.py: static / dynamic MNIST pseudo-inputs N(0.05, 0.01^2).
  "static_mnist": DatasetSpec("binarized_mnist", True, False, 0.05, 0.01),
  "dynamic_mnist": DatasetSpec("mnist", True, True, 0.05, 0.01),
  # Frey Faces N(0.5, 0.02^2): official load_data.py at HEAD (since 7384e9e, 2017-10-13; earlier
  # 0.8/0.01 from 9377c5a, and 0.2/0.05 from aa909ef, the oldest). Fashion-MNIST is not in the
  # official code: same as Frey.
  "frey_faces": DatasetSpec("frey_faces", False, False, 0.5, 0.02),
  "fashion_mnist": DatasetSpec("fashion_mnist", False, False, 0.5, 0.02),
}
# Adam's epsilon: the official AdamNormGrad (utils/optimizer.py) defaults to eps=1e-8, as
# torch.optim.Adam, with the same denominator sqrt(v) + eps as Keras. Runs whose hparams.json was
# written before the suite recorded it were trained with Keras's default, 1e-7, and keep it when
# resumed so that they continue exactly (`adam_epsilon`).
ADAM_EPSILON = 1e-8
KERAS_DEFAULT_ADAM_EPSILON = 1e-7
DYNAMIC_EVAL_SEED = 777  # official: np.random.seed(777) before binarizing valid / test
MNIST_NUM_VALID = 10000  # official: the last 10k training images are the validation set
SUBSET_SEED = 1234  # fixed choice of the quick preset's example subsets


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """Everything that defines one run besides the harness `TrainConfig`."""

  model: str
  prior: str
  dataset: str
  likelihood: str
  num_components: int
  learn_prior_weights: bool
  warmup: int
  lr: float
  early_stopping: int
  test_samples: int
  train_examples: int | None
  eval_examples: int | None
  image_every: int
  z1_dim: int = 40
  z2_dim: int = 40
  hidden_units: int = 300
  flow_couplings: int = 8
  flow_hidden_units: int = 128
  ll_batch_size: int = 20
  ll_chunk: int = 250
  logistic_edges: str = "official"


def default_likelihood(dataset: str) -> str:
  return "bernoulli" if DATASETS[dataset].binary else "discretized_logistic"


# ----------------------------------------------------------------------------- data


def load_splits(dataset: str, *, data_dir=None, train_examples=None, eval_examples=None):
  """(train tf.data of images, valid array, test array, epoch_transform or None)."""
  spec = DATASETS[dataset]
  if spec.source in ("mnist", "fashion_mnist"):
    train_all, _ = data.load_arrays(spec.source, "train", data_dir)
    train, valid = train_all[:-MNIST_NUM_VALID], train_all[-MNIST_NUM_VALID:]
    test, _ = data.load_arrays(spec.source, "test", data_dir)
  else:
    train = data.load_arrays(spec.source, "train", data_dir)[0]
    valid = data.load_arrays(spec.source, "valid", data_dir)[0]
    test = data.load_arrays(spec.source, "test", data_dir)[0]
  train = data.subset(train, train_examples, seed=SUBSET_SEED)
  valid = data.subset(valid, eval_examples, seed=SUBSET_SEED + 1)
  test = data.subset(test, eval_examples, seed=SUBSET_SEED + 2)
  epoch_transform = None
  if spec.dynamic:
    valid = data.binarize_once(valid, seed=DYNAMIC_EVAL_SEED)
    test = data.binarize_once(test, seed=DYNAMIC_EVAL_SEED + 1)
    epoch_transform = lambda ds, seed: data.dynamic_binarization(ds, seed=seed)
  return tf.data.Dataset.from_tensor_slices(train), valid, test, epoch_transform


# ----------------------------------------------------------------------------- model and loss


def build_prior(s: RunSettings, *, latent_dim: int, image_shape):
  spec = DATASETS[s.dataset]
  return priors.build_prior(
    s.prior,
    latent_dim=latent_dim,
    image_shape=image_shape,
    num_components=s.num_components,
    pseudo_mean=spec.pseudo_mean,
    pseudo_std=spec.pseudo_std,
    learn_weights=s.learn_prior_weights,
    flow_couplings=s.flow_couplings,
    flow_hidden_units=s.flow_hidden_units,
  )


def build_model(s: RunSettings, *, image_shape, seed: int):
  if s.likelihood == "discretized_logistic":
    observation = distributions.DiscretizedLogistic(edges=s.logistic_edges)
  else:
    observation = distributions.OBSERVATION_MODELS[s.likelihood]()
  if s.model == "vae":
    prior = build_prior(s, latent_dim=s.z1_dim, image_shape=image_shape)
    return models.VAE(
      image_shape=image_shape,
      observation=observation,
      prior=prior,
      latent_dim=s.z1_dim,
      hidden_units=s.hidden_units,
      seed=seed,
    )
  if s.model not in MODELS:
    raise ValueError(f"unknown model {s.model!r}; known: {', '.join(MODELS)}")
  prior = build_prior(s, latent_dim=s.z2_dim, image_shape=image_shape)
  return MODELS[s.model](
    image_shape=image_shape,
    observation=observation,
    prior=prior,
    z1_dim=s.z1_dim,
    z2_dim=s.z2_dim,
    hidden_units=s.hidden_units,
    seed=seed,
  )


def make_loss_fn(warmup: int):
  """The harness loss: `vampprior_tf.losses.warmup_objective` at the step's epoch."""

  def loss_fn(model, batch, ctx: harness.StepContext) -> harness.LossOutput:
    per_example, metrics = losses.warmup_objective(model, batch, epoch=ctx.epoch, warmup=warmup)
    return harness.LossOutput(per_example=per_example, metrics=metrics)

  return loss_fn


def negative_elbo_fn(model):
  """Compiled x -> -ELBO(x) [B] at beta = 1 with one posterior sample (official lower bound)."""
  return tf.function(lambda x: -model(x, training=False).elbo, reduce_retracing=True)


def negative_elbo(fn, images, batch_size: int = 500) -> float:
  """Mean over `images` of `fn` = `negative_elbo_fn(model)`."""
  values = [
    fn(tf.constant(images[i : i + batch_size])).numpy() for i in range(0, len(images), batch_size)
  ]
  return float(np.mean(np.concatenate(values)))


def make_epoch_end_fn(s: RunSettings, valid, total_epochs: int):
  """Validation -ELBO (beta = 1) each epoch; images every `image_every` epochs and at the end."""
  compiled = {}

  def epoch_end_fn(model, epoch):
    if "fn" not in compiled:
      compiled["fn"] = negative_elbo_fn(model)
    val = negative_elbo(compiled["fn"], valid)
    if (epoch + 1) % s.image_every == 0 or epoch + 1 == total_epochs:
      tf.summary.image("samples", model.sample(16), max_outputs=16)
      tf.summary.image("reconstructions", model.reconstruct(valid[:16]), max_outputs=16)
      if isinstance(model.prior, priors.VampPrior):
        tf.summary.image("pseudo_inputs", model.prior.pseudo_inputs()[:16], max_outputs=16)
    return {"val_loss": val}

  return epoch_end_fn


# ----------------------------------------------------------------------------- one run


def train_and_evaluate(
  s: RunSettings,
  config: harness.TrainConfig,
  *,
  strategy,
  data_dir=None,
  eval_memory_gib: float | None = None,
) -> dict:
  """Trains (resuming from config.logdir), restores the best checkpoint, estimates test log p(x).

  The test NLL draws `s.ll_chunk` importance samples per call, or with `eval_memory_gib` the
  largest chunk that fits that peak resident memory (`evaluation.likelihood.choose_chunk`); the
  numbers do not depend on it. Under several workers the test NLL is split over them and only the
  chief writes files (results.json, the per-example values, the partial file, samples)."""
  train, valid, test, epoch_transform = load_splits(
    s.dataset, data_dir=data_dir, train_examples=s.train_examples, eval_examples=s.eval_examples
  )
  image_shape = valid.shape[1:]
  epsilon = adam_epsilon(config.logdir)
  config = dataclasses.replace(config, hparams=dict(config.hparams, adam_epsilon=epsilon))
  keras.utils.set_random_seed(config.seed)
  with strategy.scope():
    model = build_model(s, image_shape=image_shape, seed=config.seed)
    model(tf.constant(valid[:2]))
    optimizer = keras.optimizers.Adam(s.lr, epsilon=epsilon)
  trainer = harness.Trainer(
    config=config,
    strategy=strategy,
    model=model,
    optimizer=optimizer,
    loss_fn=make_loss_fn(s.warmup),
    train_data=train,
    epoch_transform=epoch_transform,
    epoch_end_fn=make_epoch_end_fn(s, valid, config.epochs),
    grad_transform=optim.normalize_gradients,
  )
  trainer.fit()
  best = trainer.restore_best()
  if best is None:
    # The best-validation checkpoint is the one the protocol evaluates; only a smoke run cut
    # short by --max_steps before its first validation may fall back to its last weights.
    if config.max_steps is None:
      raise ValueError(
        f"{config.logdir}: training ended without a best-validation checkpoint "
        f"(best/ is empty), so there are no weights the protocol evaluates"
      )
    print(
      f"warning: --max_steps={config.max_steps} stopped before the first validation; "
      "evaluating the last weights (no best-validation checkpoint)",
      file=sys.stderr,
    )
  # The epochs behind the evaluated weights: the best checkpoint's step (ckpt-<step>).
  epochs_run = (
    int(best.rsplit("-", 1)[1]) if best else int(trainer.step.numpy())
  ) // trainer.steps_per_epoch

  chief = harness.is_chief(strategy)
  chunk, choice = s.ll_chunk, None
  if eval_memory_gib is not None:
    choice = evaluation_likelihood.choose_chunk(
      lambda x, k: model.log_weights(x, k, training=False),
      test[: s.ll_batch_size],
      num_samples=s.test_samples,
      memory_gib=eval_memory_gib,
      rng_variables=evaluation_likelihood.seed_generator_states(model),
      replicas=strategy.num_replicas_in_sync,
    )
    chunk = choice.chunk
    print(choice.describe(), file=sys.stderr)
  counted = likelihood.evaluate_nll(
    model,
    test,
    num_samples=s.test_samples,
    batch_size=s.ll_batch_size,
    chunk_size=chunk,
    strategy=strategy,
    chief=chief,
    progress=config.progress and chief,
    resume_path=os.path.join(config.logdir, "nll_partial.npz"),
    resume_key=dict(
      checkpoint=best,
      num_samples=s.test_samples,
      test_examples=len(test),
      seed=config.seed,
      batch_size=s.ll_batch_size,
    ),
  )
  summary = counted.summary
  samples = model.sample(NUM_SAMPLE_IMAGES).numpy()
  row = dict(
    dataclasses.asdict(s),
    epochs_run=epochs_run,
    best_checkpoint=best,
    best_val_negative_elbo=float(trainer.best_metric.numpy()),
    test_nll=summary.nll,
    test_nll_sem=summary.nll_sem,
    test_negative_elbo=summary.negative_elbo,
    test_examples=summary.num_examples,
    importance_samples=counted.importance_samples,
    ll_chunk_used=chunk,  # memory only: the numbers do not depend on it
    eval_memory_gib=eval_memory_gib,  # the budget it was chosen from (None: ll_chunk)
    eval_time_s=summary.seconds,  # summed over resumed invocations
    seed=config.seed,
    adam_epsilon=epsilon,
    peak_rss_gib=host.peak_rss_gib(),  # this invocation's process
    train_seconds_total=float(trainer.train_seconds.numpy()),
    cpus=host.merge_in_order(
      results.status_cpus(results.read_status(config.logdir)), summary.hosts
    ),  # trained on, then evaluated on
    batch_size=config.batch_size,
    epochs=config.epochs,
    logdir=config.logdir,
  )
  if not chief:  # under several workers only the chief writes files
    return row
  results.write_per_example(
    os.path.join(config.logdir, results.PER_EXAMPLE_FILE),
    log_likelihood=summary.per_example_log_likelihood,
    elbo=summary.per_example_elbo,
    what="test log p(x) (IWAE_K) and ELBO, nats per example",
    num_samples=s.test_samples,
    checkpoint=best,
    dataset=s.dataset,
    test_examples=len(test),
  )
  save_samples(os.path.join(config.logdir, "samples.npz"), samples)
  save_grid(os.path.join(config.logdir, "samples.png"), samples)
  results.write_json(os.path.join(config.logdir, "results.json"), row)
  return row


def adam_epsilon(logdir: str) -> float:
  """Adam's epsilon for the run in `logdir`: `ADAM_EPSILON` (the official code's), except for a
  run started before the suite recorded it (an hparams.json without `adam_epsilon`), which keeps
  the Keras default it was trained with so that it resumes exactly."""
  path = os.path.join(logdir, "hparams.json")
  if os.path.exists(path) and "adam_epsilon" not in results.read_json(path):
    return KERAS_DEFAULT_ADAM_EPSILON
  return ADAM_EPSILON


def stopping_config(s: RunSettings) -> dict:
  """The harness `TrainConfig` fields of the official early stopping on the validation -ELBO
  (`vampprior_tf.losses.EarlyStopping.official`: patience counted from epoch `warmup` on)."""
  stopping = losses.EarlyStopping.official(patience=s.early_stopping, warmup=s.warmup)
  return dict(
    early_stopping_metric="val_loss",
    early_stopping_patience=stopping.harness_patience,
    early_stopping_start_epoch=stopping.start_epoch,
  )


def settings_from_row(row: dict) -> RunSettings:
  """The RunSettings of a run from its results.json row (which holds every field)."""
  fields = {f.name for f in dataclasses.fields(RunSettings)}
  return RunSettings(**{k: v for k, v in row.items() if k in fields})


def run_settings(logdir: str) -> RunSettings:
  """The RunSettings a run was trained with: from its hparams.json (written when training starts,
  None as "None"; the scripts put the settings there), else from its results.json (a finished
  run's row). FileNotFoundError when neither holds them (not an experiments.vampprior run)."""
  required = {f.name for f in dataclasses.fields(RunSettings) if f.default is dataclasses.MISSING}
  for name in ("hparams.json", "results.json"):
    path = os.path.join(logdir, name)
    row = results.read_json(path) if os.path.exists(path) else {}
    if required <= row.keys():
      return settings_from_row({k: (None if v == "None" else v) for k, v in row.items()})
  raise FileNotFoundError(
    f"{logdir} is not an experiments.vampprior run: no settings in hparams.json or results.json"
  )


def restore_run(logdir: str, which: str = "best", *, seed: int = 0):
  """(settings, model, checkpoint path): the run's model built from its settings (`run_settings`)
  with the weights of its best-validation checkpoint (`which="best"`, what the test NLL evaluates) or its
  latest (`harness.restore_weights`; a finished run kept as its weights alone has best/ or final/).

    s, model, path = vampprior_train.restore_run("carry/vampprior_paper/static_mnist-vae-vampprior")
  """
  s = run_settings(logdir)
  shape = data.image_shape(DATASETS[s.dataset].source)
  model = build_model(s, image_shape=shape, seed=seed)
  model(tf.zeros([2, *shape]))  # creates every variable (the harness checkpoints them in order)
  return s, model, harness.restore_weights(model, logdir, which, settings_file="its settings")
