"""Table 1 of the reproduced NVAE ablation: KL warm-up clock x spectral method on binary MNIST.

  python -m experiments.nvae_table1 --preset=quick        # CPU, minutes: results/nvae_table1.md
  python -m experiments.nvae_table1 --preset=paper --strategy=mirrored

Trains Step+SN, Step+SR and Epoch+SN with `experiments.nvae_mnist` (each run resumable in
`<table_logdir>/<warmup>_<spectral>`), then reports per run: test NLL (mean +- std over
`--num_test_passes` passes, nats and bits/dim), FID of `--fid_samples` samples at temperature 1
against the test set (Inception-2015), improved precision / recall (VGG-16 fc2, k = 3) and the
training time. Metrics whose network weights are not on the machine are written as
"unavailable (...)" with the way to provide them; nothing is estimated without them.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags
import numpy as np

from experiments import flags as common
from experiments import harness
from experiments import nvae_mnist
from experiments import results

# (KL warm-up clock, spectral method) of the table's rows.
CONFIGS = (("step", "sn"), ("step", "sr"), ("epoch", "sn"))
DEFAULT_TEST_PASSES = 3
FID_SAMPLES = {"paper": 10_000, "quick": 500}  # paper: 10k samples at temperature 1
SAMPLE_BATCH = 100

FLAGS = flags.FLAGS


def define_flags():
  nvae_mnist.define_flags()
  flags.DEFINE_string("table_logdir", None, "Root of the runs of the table (one sub-folder per row; "
                      "reused, i.e. resumed, by nvae_table2). Default: runs/nvae_table1/<preset>.")
  flags.DEFINE_integer("fid_samples", None, "Samples for FID / precision / recall. Default: 10000 "
                       "(paper), 500 (quick).", lower_bound=1)
  flags.DEFINE_string("inception_path", None, "Inception-2015 weights (classify_image_graph_def.pb "
                      "or inception-2015-12-05.tgz) for FID; see evaluation/networks.py.")
  flags.DEFINE_string("vgg16_path", None, "VGG-16 Keras weights (vgg16_weights_tf_dim_ordering_tf_"
                      "kernels.h5) for precision / recall and PPL.")
  flags.DEFINE_bool("download_weights", False, "Try to download missing Inception / VGG-16 weights "
                    "(needs a network).")
  flags.DEFINE_string("table_output", "results/nvae_table1.md", "Markdown page to write.")


def table_logdir() -> str:
  return FLAGS.table_logdir or os.path.join("runs", "nvae_table1", FLAGS.preset)


def run_logdir(kl_warmup: str, spectral: str) -> str:
  return os.path.join(table_logdir(), f"{kl_warmup}_{spectral}")


def row_settings(kl_warmup: str, spectral: str) -> nvae_mnist.RunSettings:
  passes = FLAGS.num_test_passes if FLAGS["num_test_passes"].present else DEFAULT_TEST_PASSES
  return nvae_mnist.settings_from_flags(kl_warmup=kl_warmup, spectral=spectral,
                                        num_test_passes=passes)


def row_config(s: nvae_mnist.RunSettings) -> harness.TrainConfig:
  preset = nvae_mnist.PRESETS[FLAGS.preset]
  return dataclasses.replace(
      common.train_config(logdir="", batch_size=preset.batch_size, epochs=preset.epochs,
                          hparams=nvae_mnist._hparams(s)),  # pylint: disable=protected-access
      logdir=run_logdir(s.kl_warmup, s.model.spectral))


def unavailable(reason: str) -> str:
  return f"unavailable ({reason})"


def generate_samples(model, num_samples: int, *, temperature: float = 1.0) -> np.ndarray:
  """[N, 28, 28, 1] Bernoulli means in [0, 1], drawn SAMPLE_BATCH at a time."""
  chunks = []
  for start in range(0, num_samples, SAMPLE_BATCH):
    chunks.append(model.sample(min(SAMPLE_BATCH, num_samples - start),
                               temperature=temperature).numpy())
  return np.concatenate(chunks)


def fid_from_features(network, samples, reference) -> float:
  """FID between [N, H, W, C] images in [0, 1] through `network` ({'pool_3': [B, 2048]})."""
  from evaluation import features, fid  # pylint: disable=g-import-not-at-top
  fake = features.extract(network, samples, progress=False)["pool_3"]
  real = features.extract(network, reference, progress=False)["pool_3"]
  return fid.frechet_distance(*fid.feature_statistics(fake), *fid.feature_statistics(real))


def precision_recall_from_features(network, samples, reference) -> tuple[float, float]:
  """Improved precision / recall (k = 3) of images in [0, 1] through `network` ({'fc2': ...})."""
  from evaluation import features, precision_recall  # pylint: disable=g-import-not-at-top
  fake = features.extract(network, samples, progress=False)["fc2"]
  real = features.extract(network, reference, progress=False)["fc2"]
  return precision_recall.precision_recall(real, fake, k=3)


def load_network(kind: str):
  """(network, None) or (None, reason) for kind 'inception' / 'vgg16'; never fakes a network."""
  from evaluation import networks  # pylint: disable=g-import-not-at-top
  try:
    if kind == "inception":
      return networks.inception_network(FLAGS.inception_path, download=FLAGS.download_weights), None
    return networks.vgg16_network(FLAGS.vgg16_path, download=FLAGS.download_weights), None
  except networks.WeightsUnavailableError as e:
    return None, str(e)


def sample_metrics(model, reference: np.ndarray, *, num_samples: int, inception, vgg16,
                   temperature: float = 1.0) -> dict:
  """FID / precision / recall of samples at `temperature` as floats, or 'unavailable (...)' strings
  (reasons: `load_network`)."""
  inception_net, vgg_net = inception[0], vgg16[0]
  out = {"fid": unavailable("no Inception weights: pass --inception_path")}
  out["precision"] = out["recall"] = unavailable("no VGG-16 weights: pass --vgg16_path")
  if inception_net is None and vgg_net is None:
    return out
  samples = generate_samples(model, num_samples, temperature=temperature)
  reference = reference[:num_samples]
  if inception_net is not None:
    out["fid"] = fid_from_features(inception_net, samples, reference)
  if vgg_net is not None:
    out["precision"], out["recall"] = precision_recall_from_features(vgg_net, samples, reference)
  return out


COLUMNS = [("row", "Warm-up + spectral"), ("nll_mean_std", "NLL (nats), mean ± std over passes"),
           ("bits_per_dim", "bits/dim"), ("neg_elbo", "-ELBO (nats)"), ("fid", "FID"),
           ("precision", "Precision"), ("recall", "Recall"), ("train_minutes", "Train time (min)"),
           ("steps", "Steps")]


def table_notes(rows: list[dict], preset: str, missing: list[str]) -> str:
  r = rows[0]
  lines = [
      f"**{preset} preset.**" + (" These are quick-preset numbers from a small CPU run (a reduced "
                                 "architecture, a few hundred steps, a test subset and few importance "
                                 "samples): they check the pipeline and are not comparable with the "
                                 "paper." if preset == "quick" else ""),
      f"- Data: {r['dataset']} ({r['binarization']} binarization); global batch "
      f"{r['global_batch_size']}, {r['epochs']} epochs, {r['parameters']:,} parameters; precision "
      f"{r['precision_policy']}.",
      f"- NLL: importance-weighted bound with K = {r['num_iw_samples']} on {r['test_examples']} test "
      f"images, {len(r['nll_passes'])} independent passes (mean ± std over passes); bits/dim = "
      "nats / (784 ln 2), no offset (binary data).",
      f"- FID / precision / recall: {r['fid_samples']} samples at temperature 1 against the same "
      "number of test images. A metric shown as unavailable could not be computed because its "
      "network weights are not on this machine; pass --inception_path / --vgg16_path (or set "
      "GENMODELS_INCEPTION_PATH / GENMODELS_VGG16_PATH, or --download_weights with a network).",
      "- Train time: wall-clock of training only (this machine's CPU/GPU, shared with other jobs "
      "when run here).",
  ] + [f"- {reason}" for reason in missing]
  return "\n".join(lines) + "\n"


def format_row(row: dict) -> dict:
  out = dict(row)
  out["row"] = f"{row['kl_warmup'].capitalize()} + {row['spectral'].upper()}"
  out["nll_mean_std"] = (row["nll"], row["nll_std_over_passes"])
  out["train_minutes"] = row["train_seconds"] / 60.0
  out["bits_per_dim"] = f"{row['bits_per_dim']:.4f}"
  return out


def main(argv):
  del argv
  strategy = common.setup_runtime()
  num_fid = FLAGS.fid_samples or FID_SAMPLES[FLAGS.preset]
  inception, vgg16 = load_network("inception"), load_network("vgg16")
  for name, (net, reason) in (("Inception", inception), ("VGG-16", vgg16)):
    if net is None:
      print(f"note: {name} weights unavailable, its metrics will be marked so: {reason}",
            file=sys.stderr)
  rows = []
  for kl_warmup, spectral in CONFIGS:
    s = row_settings(kl_warmup, spectral)
    row, trained = nvae_mnist.train_and_evaluate(s, row_config(s), strategy=strategy,
                                                 data_dir=FLAGS.data_dir)
    reference = trained.splits.test
    row.update(sample_metrics(trained.model, reference, num_samples=min(num_fid, len(reference)),
                              inception=inception, vgg16=vgg16))
    row["fid_samples"] = min(num_fid, len(reference))
    results.write_json(os.path.join(run_logdir(kl_warmup, spectral), "table1_row.json"), row)
    rows.append(row)
  results.write_json(os.path.join(table_logdir(), "table1.json"), rows)
  output = common.results_file("table_output", logdir=table_logdir())
  results.write_markdown(
      output, title=f"NVAE on binary MNIST: warm-up x spectral ablation ({FLAGS.preset} preset)",
      command=common.command_line(),
      table=results.markdown_table([format_row(r) for r in rows], COLUMNS),
      notes=table_notes(rows, FLAGS.preset, [r for net, r in (inception, vgg16) if net is None]))
  print(f"wrote {output}")


if __name__ == "__main__":
  define_flags()
  common.run(main)
