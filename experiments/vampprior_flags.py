"""The flags of the VampPrior scripts and the one place they are read into settings.

`define_run_flags` (experiments.vampprior; the table reuses them for every cell) and
`define_table_flags` (experiments.vampprior_table) define flags when a script runs, not at import, so
tests and other scripts can import this module next to other experiment modules that define flags of
the same name (e.g. --dataset). Each script's `main` calls `settings_from_flags` /
`table_settings_from_flags` once and passes the frozen result down to
`experiments.vampprior_train`, which reads no flags.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from experiments import flags as common
from experiments import harness, vampprior_train
from vampprior_tf import distributions

FLAGS = flags.FLAGS


def define_run_flags():
  """Flags of one VampPrior run (experiments.vampprior; the table reuses them for every cell)."""
  common.define_preset_flag(vampprior_train.PRESETS, help=common.QUICK_AND_PAPER)
  flags.DEFINE_enum(
    "model",
    "vae",
    list(vampprior_train.MODELS),
    "vae: 2 gated layers of 300, one latent of 40; hvae_2level: two latents (z1, "
    "z2), the prior on z2; convhvae_2level: gated convolutions; pixelhvae_2level: "
    "convolutional encoder + PixelCNN decoder.",
  )
  flags.DEFINE_enum(
    "prior",
    "vampprior",
    list(vampprior_train.PRIORS),
    "Prior over the (top) latent: standard N(0, I); mog (learnable mixture of "
    "--num_components Gaussians); vampprior (--num_components pseudo-inputs); flow "
    "(RealNVP coupling flow).",
  )
  flags.DEFINE_enum(
    "dataset",
    "static_mnist",
    list(vampprior_train.DATASETS),
    "static_mnist: Larochelle's binarized MNIST (50k/10k/10k); dynamic_mnist: grey "
    "MNIST binarized afresh each epoch (train 50k / valid 10k of the train set); "
    "frey_faces: 1565/200/200 fixed-seed split, grey; fashion_mnist: grey.",
  )
  flags.DEFINE_enum(
    "likelihood",
    None,
    list(distributions.OBSERVATION_MODELS),
    "Decoder distribution. Default: bernoulli for binary sets, discretized_logistic "
    "(256 bins) for grey ones; continuous_bernoulli is an option for grey data.",
  )
  flags.DEFINE_enum(
    "logistic_edges",
    "official",
    list(distributions.LOGISTIC_EDGES),
    "discretized_logistic edge bins: official (as log_Logistic_256: the mass below "
    "pixel 0 and above 255 belongs to no bin, + 1e-7 inside the log; use for paper "
    "comparisons) or normalised (bins 0 / 255 take the tails, probabilities sum to 1).",
  )
  flags.DEFINE_integer(
    "num_components",
    None,
    "K: pseudo-inputs (vampprior) or Gaussians (mog). "
    "Default: the preset's (paper: 500, official default).",
    lower_bound=1,
  )
  flags.DEFINE_bool(
    "learn_prior_weights", False, "VampPrior: learn the mixture weights (official: uniform 1/K)."
  )
  flags.DEFINE_integer(
    "warmup",
    None,
    "KL warm-up epochs: beta = min(epoch / warmup, 1) for "
    "epoch = 1, 2, ... (official: the first epoch has beta = 1 / warmup); 0 = no "
    "warm-up. Default: the preset's (paper: 100).",
    lower_bound=0,
  )
  flags.DEFINE_float(
    "lr", None, "AdamNormGrad learning rate. Default: the preset's (paper: 5e-4).", lower_bound=0.0
  )
  flags.DEFINE_integer(
    "early_stopping",
    None,
    "Patience in epochs on the validation -ELBO: stop "
    "after MORE than this many consecutive epochs without improvement, counted "
    "from epoch --warmup on (official rule); 0 disables. Default: the preset's "
    "(paper: 50).",
    lower_bound=0,
  )
  flags.DEFINE_integer(
    "test_samples",
    None,
    "Importance samples per test example for log p(x). Default: the preset's (paper: 5000).",
    lower_bound=1,
  )
  flags.DEFINE_integer(
    "train_examples",
    None,
    "Use a random subset of this many training examples (default: the preset's; paper: all).",
    lower_bound=1,
  )
  flags.DEFINE_integer(
    "eval_examples",
    None,
    "Use random subsets of this many validation and test "
    "examples (default: the preset's; paper: all).",
    lower_bound=1,
  )
  flags.DEFINE_integer("z1_dim", 40, "Size of z1 (the only latent of the VAE).", lower_bound=1)
  flags.DEFINE_integer("z2_dim", 40, "Size of z2 (HVAEs; the prior acts on it).", lower_bound=1)
  flags.DEFINE_integer("hidden_units", 300, "Width of the gated dense layers.", lower_bound=1)
  flags.DEFINE_integer(
    "flow_couplings", 8, "Flow prior: number of RealNVP couplings.", lower_bound=1
  )
  flags.DEFINE_integer(
    "flow_hidden_units", 128, "Flow prior: hidden units of each coupling net.", lower_bound=1
  )
  flags.DEFINE_integer(
    "ll_batch_size", 20, "Test examples per compiled likelihood call.", lower_bound=1
  )
  flags.DEFINE_integer(
    "ll_chunk",
    250,
    "Importance samples drawn at once per example (memory), when given; by default "
    "experiments.vampprior chooses them from --eval_memory_gib.",
    lower_bound=1,
  )
  common.define_eval_memory_flag(chunk_flag="ll_chunk")


def settings_from_flags(*, model=None, prior=None, dataset=None) -> vampprior_train.RunSettings:
  """RunSettings from the flags and the preset (`experiments.flags.flag_or`); explicit arguments
  override the flags."""
  preset = vampprior_train.PRESETS[FLAGS.preset]
  dataset = dataset or FLAGS.dataset
  return vampprior_train.RunSettings(
    model=model or FLAGS.model,
    prior=prior or FLAGS.prior,
    dataset=dataset,
    likelihood=FLAGS.likelihood or vampprior_train.default_likelihood(dataset),
    num_components=common.flag_or("num_components", preset.num_components),
    learn_prior_weights=FLAGS.learn_prior_weights,
    warmup=common.flag_or("warmup", preset.warmup),
    lr=common.flag_or("lr", preset.lr),
    early_stopping=common.flag_or("early_stopping", preset.early_stopping),
    test_samples=common.flag_or("test_samples", preset.test_samples),
    train_examples=common.flag_or("train_examples", preset.train_examples),
    eval_examples=common.flag_or("eval_examples", preset.eval_examples),
    image_every=preset.image_every,
    z1_dim=FLAGS.z1_dim,
    z2_dim=FLAGS.z2_dim,
    hidden_units=FLAGS.hidden_units,
    flow_couplings=FLAGS.flow_couplings,
    flow_hidden_units=FLAGS.flow_hidden_units,
    ll_batch_size=FLAGS.ll_batch_size,
    ll_chunk=FLAGS.ll_chunk,
    logistic_edges=FLAGS.logistic_edges,
  )


def run_config(s: vampprior_train.RunSettings, logdir: str | None = None) -> harness.TrainConfig:
  """The harness config of a run from the common flags and the preset (batch size, epochs), with
  the official early stopping (`vampprior_train.stopping_config`).

  logdir: used when --logdir is not given; default runs/vampprior/<dataset, model, prior, preset,
  seed>.
  """
  preset = vampprior_train.PRESETS[FLAGS.preset]
  logdir = logdir or common.default_logdir(
    "vampprior",
    dataset=s.dataset,
    model=s.model,
    prior=s.prior,
    preset=FLAGS.preset,
    seed=FLAGS.seed,
  )
  return common.train_config(
    logdir=logdir,
    batch_size=preset.batch_size,
    epochs=preset.epochs,
    hparams=dataclasses.asdict(s),
    **vampprior_train.stopping_config(s),
  )


# ----------------------------------------------------------------------------- the table


def define_table_flags():
  """Flags of the table (experiments.vampprior_table) on top of the run flags."""
  define_run_flags()
  flags.DEFINE_list(
    "datasets",
    None,
    "Data sets of the grid. Default: quick static_mnist,frey_faces; "
    "paper static_mnist,dynamic_mnist,frey_faces.",
  )
  flags.DEFINE_list(
    "models",
    None,
    "Models of the grid. Default: quick vae,hvae_2level; paper all "
    f"four ({','.join(vampprior_train.MODELS)}).",
  )
  flags.DEFINE_list(
    "priors", None, f"Priors of the grid. Default: all ({','.join(vampprior_train.PRIORS)})."
  )
  flags.DEFINE_bool(
    "report_only",
    False,
    "Train nothing: write the table from what the cells' "
    "logdirs hold (evaluated rows, or how far an unfinished cell's training got, "
    "from its status.json). For long runs that span several sessions.",
  )
  flags.DEFINE_string(
    "table_output",
    "results/vampprior_table.md",
    "Markdown table to write; the JSON rows go to the same path with .json.",
  )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TableSettings:
  preset: str
  cells: tuple  # ((RunSettings, TrainConfig with the cell's logdir), ...) in grid order
  base_logdir: str  # one sub-folder per cell
  report_only: bool
  data_dir: str | None
  output: str  # the Markdown page (its JSON rows beside it)
  eval_memory_gib: float | None  # the test NLL's memory budget (None: --ll_chunk given)


def _grid_names(flag: str, default, known) -> tuple:
  names = tuple(FLAGS[flag].value or default)
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f"--{flag}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
  return names


def table_settings_from_flags() -> TableSettings:
  """Every cell's settings and TrainConfig ((datasets, models, priors) from the flags, else the
  preset's grid), resolved before any cell trains."""
  datasets, models, priors = vampprior_train.GRIDS[FLAGS.preset]
  datasets = _grid_names("datasets", datasets, vampprior_train.DATASETS)
  models = _grid_names("models", models, vampprior_train.MODELS)
  priors = _grid_names("priors", priors, vampprior_train.PRIORS)
  base = FLAGS.logdir or common.default_logdir(
    "vampprior_table", preset=FLAGS.preset, seed=FLAGS.seed
  )
  cells = []
  for dataset in datasets:
    for model in models:
      for prior in priors:
        s = settings_from_flags(model=model, prior=prior, dataset=dataset)
        config = dataclasses.replace(
          run_config(s, base), logdir=vampprior_train.cell_logdir(base, dataset, model, prior)
        )
        cells.append((s, config))
  return TableSettings(
    preset=FLAGS.preset,
    cells=tuple(cells),
    base_logdir=base,
    report_only=FLAGS.report_only,
    data_dir=FLAGS.data_dir,
    # smoke runs (--max_steps): the page goes under the logdir
    output=common.results_file("table_output", logdir=base),
    eval_memory_gib=None if FLAGS["ll_chunk"].present else FLAGS.eval_memory_gib,
  )
