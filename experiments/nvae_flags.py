"""The flags of the NVAE scripts and the one place they are read into settings.

`define_run_flags` (experiments.nvae_mnist and the tables) and `define_table_flags` (nvae_table1,
nvae_table2) define flags when a script runs, not at import, so tests and other scripts can import
this module next to other experiment modules that define flags of the same name (e.g. --dataset).
Each script's `main` calls `settings_from_flags` / `table_settings_from_flags` once and passes the
frozen result down to `experiments.nvae_train`, which reads no flags.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

from experiments import flags as common
from experiments import harness, nvae_train
from nvae_tf import Spectral, SpectralScope, WarmupClock

FLAGS = flags.FLAGS


def define_run_flags():
  """Flags of one NVAE run (experiments.nvae_mnist; the tables reuse them for every row)."""
  common.define_preset_flag(
    nvae_train.PRESETS,
    help=f"{common.QUICK_AND_PAPER} 'cpu' is 16 epochs on the full static binarized MNIST, "
    "4-5 h of training on a 2-core CPU (results/nvae_cpu.md, Train time).",
  )
  flags.DEFINE_enum(
    "spectral",
    Spectral.SR.value,
    [m.value for m in Spectral],
    "sr: spectral regularisation lambda * sum of top singular values (official); "
    "sn: spectral normalisation of every conv; none: neither (L_BN is kept).",
  )
  flags.DEFINE_enum(
    "spectral_scope",
    SpectralScope.ALL.value,
    [m.value for m in SpectralScope],
    "Convs that --spectral=sr|sn acts on: all (every conv, the official SR set: "
    "samplers, combiners, skips, stem, image head and IAF included) or cells (only "
    "the convs inside the residual cells' ops; the official code's commented-out "
    "alternative). See docs/nvae.md.",
  )
  flags.DEFINE_enum(
    "kl_warmup",
    WarmupClock.STEP.value,
    [c.value for c in WarmupClock],
    "KL warm-up clock: beta = max(min((t - 1e-4 T) / (0.3 T), 1), 1e-4) on the step "
    "counter (official) or on the epoch counter (constant within an epoch).",
  )
  flags.DEFINE_enum(
    "dataset",
    "auto",
    list(nvae_train.DATASETS),
    "Data set, which fixes the binarization (recorded in every results row and "
    "page): mnist = grey MNIST binarized dynamically, a fresh Bernoulli draw of each "
    "training image every epoch and of the test images every evaluation pass "
    "(official datasets.py); binarized_mnist = the static Larochelle-Murray "
    "binarization; auto = mnist if the grey MNIST training images are available, "
    "else binarized_mnist.",
  )
  flags.DEFINE_integer(
    "num_flows",
    None,
    "Paired IAF cells per latent group (official --num_nf); "
    "the KL becomes a single-sample estimate when > 0. Default: preset's (0).",
    lower_bound=0,
  )
  flags.DEFINE_integer(
    "num_channels",
    None,
    "Channels of the encoder/decoder at 32x32 (official 32). Default: the preset's.",
    lower_bound=1,
  )
  flags.DEFINE_integer(
    "num_groups_per_scale",
    None,
    "Latent groups at the finest latent scale; "
    "halved at the coarser one (official 10 -> [10, 5]). Default: preset's.",
    lower_bound=1,
  )
  flags.DEFINE_integer(
    "num_cells",
    None,
    "Residual cells per latent group in encoder and decoder (official 2). Default: the preset's.",
    lower_bound=1,
  )
  flags.DEFINE_integer(
    "warmup_epochs",
    None,
    "Epochs of linear learning-rate warm-up before the "
    "cosine decay (official 5). Default: the preset's.",
    lower_bound=0,
  )
  flags.DEFINE_integer(
    "train_examples",
    None,
    "Use only the first N training images (0 = all). Default: the preset's.",
    lower_bound=0,
  )
  flags.DEFINE_integer(
    "test_examples",
    None,
    "Evaluate the NLL on a fixed random subset of N test images "
    "(0 = all 10,000). Default: the preset's.",
    lower_bound=0,
  )
  flags.DEFINE_integer(
    "num_iw_samples",
    None,
    "Importance samples K of the test NLL (official 1000). Default: the preset's.",
    lower_bound=1,
  )
  flags.DEFINE_integer(
    "iw_chunk",
    None,
    "Importance samples drawn per network call (memory bound; "
    "does not change the estimate). Default: the preset's.",
    lower_bound=1,
  )
  flags.DEFINE_integer(
    "eval_batch_size", None, "Test images per NLL batch. Default: the preset's.", lower_bound=1
  )
  common.define_eval_memory_flag(chunk_flag="iw_chunk")
  flags.DEFINE_integer(
    "num_test_passes",
    1,
    "Independent NLL passes over the test set (fresh "
    "importance samples, and a fresh binarization for --dataset=mnist); the mean "
    "and std over passes are reported.",
    lower_bound=1,
  )
  flags.DEFINE_float(
    "temperature",
    1.0,
    "Temperature of the saved sample grid (scales prior sigmas).",
    lower_bound=0.0,
  )
  flags.DEFINE_integer(
    "val_every_epochs",
    None,
    "Validation NLL (K = --val_num_iw_samples importance "
    "samples on the test images) every this many epochs and after the last one, "
    "logged to TensorBoard as epoch/val_neg_log_p, epoch/val_nelbo, "
    "epoch/val_bpd_log_p and with the training time to <logdir>/validation.json. "
    "Default: the preset's (cpu: 2), else the official rule, 1 if epochs <= 50 "
    "else 20; 0 = off.",
    lower_bound=0,
  )
  flags.DEFINE_integer(
    "val_num_iw_samples",
    10,
    "Importance samples of the periodic validation NLL (official train.py: 10).",
    lower_bound=1,
  )
  flags.DEFINE_integer(
    "readjust_bn_steps",
    0,
    "Before saving samples, re-estimate BN statistics from "
    "this many sample batches in training mode (official --readjust_bn uses 500); "
    "0 = off. Done after the NLL, which uses the training statistics.",
    lower_bound=0,
  )


def settings_from_flags(**overrides) -> nvae_train.RunSettings:
  """RunSettings from the flags and the preset (`experiments.flags.flag_or`); `overrides` win."""
  preset = nvae_train.PRESETS[FLAGS.preset]
  model_changes = dict(spectral=FLAGS.spectral, spectral_scope=FLAGS.spectral_scope)
  if FLAGS.num_channels is not None:
    model_changes.update(num_channels_enc=FLAGS.num_channels, num_channels_dec=FLAGS.num_channels)
  if FLAGS.num_groups_per_scale is not None:
    model_changes["num_groups_per_scale"] = FLAGS.num_groups_per_scale
  if FLAGS.num_cells is not None:
    model_changes.update(
      num_cell_per_cond_enc=FLAGS.num_cells, num_cell_per_cond_dec=FLAGS.num_cells
    )
  if FLAGS.num_flows is not None:
    model_changes["num_flows"] = FLAGS.num_flows
  values = dict(
    model=dataclasses.replace(preset.model, **model_changes),
    preset=FLAGS.preset,
    kl_warmup=FLAGS.kl_warmup,
    dataset=FLAGS.dataset,
    warmup_epochs=common.flag_or("warmup_epochs", preset.warmup_epochs),
    train_examples=common.flag_or("train_examples", preset.train_examples),
    test_examples=common.flag_or("test_examples", preset.test_examples),
    num_iw_samples=common.flag_or("num_iw_samples", preset.num_iw_samples),
    iw_chunk=common.flag_or("iw_chunk", preset.iw_chunk),
    eval_batch_size=common.flag_or("eval_batch_size", preset.eval_batch_size),
    num_test_passes=FLAGS.num_test_passes,
    temperature=FLAGS.temperature,
    readjust_bn_steps=FLAGS.readjust_bn_steps,
    val_every_epochs=common.flag_or("val_every_epochs", preset.val_every_epochs),
    val_num_iw_samples=FLAGS.val_num_iw_samples,
    eval_memory_gib=None if FLAGS.iw_chunk is not None else FLAGS.eval_memory_gib,
  )
  values.update(overrides)
  return nvae_train.RunSettings(**values)


def train_config(s: nvae_train.RunSettings, *, logdir: str | None = None) -> harness.TrainConfig:
  """The common TrainConfig (batch size and epochs: the preset's unless the flags are set).

  logdir: used when --logdir is not given; default runs/nvae_mnist/<preset, spectral, warm-up>.
  """
  preset = nvae_train.PRESETS[s.preset]
  logdir = logdir or common.default_logdir(
    "nvae_mnist", preset=s.preset, spectral=s.model.spectral, kl_warmup=s.kl_warmup
  )
  return common.train_config(
    logdir=logdir, batch_size=preset.batch_size, epochs=preset.epochs, hparams=nvae_train.hparams(s)
  )


# ----------------------------------------------------------------------------- tables

FID_SAMPLES = {"paper": 10_000, "quick": 500, "cpu": 1_000}  # paper: 10k samples at temperature 1


def define_table_flags():
  """Flags of the ablation tables (nvae_table1, nvae_table2) on top of the run flags."""
  define_run_flags()
  flags.DEFINE_string(
    "table_logdir",
    None,
    "Root of the runs of the table (one sub-folder per row, "
    "e.g. step_sr; reused, i.e. resumed, by nvae_table1 and nvae_table2). "
    "Default: runs/nvae_table1/<preset>.",
  )
  flags.DEFINE_list(
    "table_rows",
    [nvae_train.row_name(*r) for r in nvae_train.TABLE_ROWS],
    "Rows to train and report, each <step|epoch>_<sr|sn|none> (KL warm-up clock and "
    "spectral method); e.g. step_sr,epoch_sr compares the warm-up clocks.",
  )
  flags.DEFINE_integer(
    "fid_samples",
    None,
    "Samples for FID / precision / recall. Default: 10000 (paper), 1000 (cpu), 500 (quick).",
    lower_bound=1,
  )
  flags.DEFINE_string(
    "inception_path",
    None,
    "Inception-2015 weights (classify_image_graph_def.pb "
    "or inception-2015-12-05.tgz) for FID; see evaluation/networks.py.",
  )
  flags.DEFINE_string(
    "vgg16_path",
    None,
    "VGG-16 Keras weights (vgg16_weights_tf_dim_ordering_tf_"
    "kernels.h5) for precision / recall and PPL.",
  )
  flags.DEFINE_bool(
    "download_weights",
    False,
    "Try to download missing Inception / VGG-16 weights (needs a network).",
  )
  flags.DEFINE_string("table_output", "results/nvae_table1.md", "Markdown page to write.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TableSettings:
  base: nvae_train.RunSettings  # the run flags; each row replaces kl_warmup and spectral
  rows: tuple  # ((WarmupClock, Spectral), ...)
  root: str  # one sub-folder per row
  fid_samples: int
  inception_path: str | None
  vgg16_path: str | None
  download_weights: bool
  output: str  # the Markdown page
  report_only: bool = False  # write the page from the rows' folders; train nothing

  def row(self, kl_warmup, spectral) -> tuple[nvae_train.RunSettings, harness.TrainConfig]:
    """(settings, TrainConfig with logdir <root>/<warmup>_<spectral>) of one table row."""
    s = nvae_train.row_settings(self.base, kl_warmup, spectral)
    config = dataclasses.replace(
      train_config(s), logdir=os.path.join(self.root, nvae_train.row_name(kl_warmup, spectral))
    )
    return s, config


def table_settings_from_flags() -> TableSettings:
  root = FLAGS.table_logdir or os.path.join("runs", "nvae_table1", FLAGS.preset)
  passes = (
    FLAGS.num_test_passes
    if FLAGS["num_test_passes"].present
    else nvae_train.DEFAULT_TABLE_TEST_PASSES
  )
  return TableSettings(
    base=settings_from_flags(num_test_passes=passes),
    rows=nvae_train.parse_table_rows(FLAGS.table_rows),
    root=root,
    fid_samples=FLAGS.fid_samples or FID_SAMPLES[FLAGS.preset],
    inception_path=FLAGS.inception_path,
    vgg16_path=FLAGS.vgg16_path,
    download_weights=FLAGS.download_weights,
    output=common.results_file("table_output", logdir=root),
    report_only="report_only" in FLAGS and FLAGS.report_only,
  )  # nvae_table1 only
