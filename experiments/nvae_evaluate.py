"""Evaluate a trained NVAE like the official NVlabs/NVAE evaluate.py: test NLL, sample grids and
(when the Inception / VGG-16 weights exist) FID and precision / recall per sampling temperature.

  python -m experiments.nvae_evaluate --logdir RUN --num_iw_samples 1000 \\
      --temperature 0.6,0.8,1.0 --readjust_bn_steps 500
  python -m experiments.nvae_evaluate --official_checkpoint checkpoint.pt ...   # needs torch

`--logdir` is a run of experiments.nvae_mnist (its settings.json gives the architecture, its
latest -- or `--checkpoint=best` -- checkpoint the weights); `--official_checkpoint` is an official
PyTorch `checkpoint.pt`, whose saved args give the architecture (nvae_tf.official).

The NLL uses the training BN statistics (official `--eval_mode=evaluate`). For samples, BN
statistics are re-estimated at each temperature from `--readjust_bn_steps` batches of 16 samples
in training mode (official `set_bn(..., num_samples=16, iter=500)` with --readjust_bn) and put
back afterwards. Writes to --output_dir (default <logdir>/evaluate, or evaluate/ next to the
official checkpoint): evaluate.json, samples_t<T>.png / .npz per temperature.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
from absl import flags

from evaluation import protocol
from experiments import flags as common
from experiments import nvae_train, results
from experiments.images import save_grid, save_samples

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string(
    "official_checkpoint",
    None,
    "An official NVlabs/NVAE checkpoint.pt to evaluate "
    "instead of --logdir (architecture from its saved args; needs torch).",
  )
  flags.DEFINE_enum(
    "checkpoint",
    "latest",
    ["latest", "best"],
    "Which checkpoint of --logdir: the latest, or the best one kept by early stopping.",
  )
  flags.DEFINE_string(
    "output_dir",
    None,
    "Folder for evaluate.json and the sample grids. Default: "
    "<logdir>/evaluate, or evaluate/ next to --official_checkpoint.",
  )
  flags.DEFINE_enum(
    "dataset",
    "auto",
    list(nvae_train.DATASETS),
    "Test images and their "
    "binarization, as in experiments.nvae_mnist (mnist: grey, a fresh Bernoulli draw "
    "per pass; binarized_mnist: static). Default: the run's data set (auto for "
    "official checkpoints).",
  )
  flags.DEFINE_integer(
    "num_iw_samples",
    1000,
    "Importance samples K of the test NLL (official 1000); 0 = skip the NLL.",
  )
  flags.DEFINE_integer(
    "iw_chunk",
    None,
    "Importance samples per network call (memory only: the estimate does not depend on it). "
    "Default: chosen from --eval_memory_gib.",
    lower_bound=1,
  )
  common.define_eval_memory_flag(chunk_flag="iw_chunk")
  flags.DEFINE_integer("eval_batch_size", 50, "Test images per NLL batch.", lower_bound=1)
  flags.DEFINE_integer(
    "test_examples",
    0,
    "Evaluate on a fixed random subset of N test images (0 = all).",
    lower_bound=0,
  )
  flags.DEFINE_integer(
    "num_test_passes", 1, "Independent NLL passes (mean and std reported).", lower_bound=1
  )
  flags.DEFINE_list(
    "temperature", ["0.6", "0.8", "1.0"], "Sampling temperatures (comma-separated)."
  )
  flags.DEFINE_integer(
    "readjust_bn_steps",
    500,
    "Sample batches of 16 used to re-estimate the BN "
    "statistics at each temperature before sampling (official 500); 0 = keep the "
    "training statistics.",
  )
  flags.DEFINE_integer("num_grid_images", 64, "Images per sample grid.", lower_bound=1)
  flags.DEFINE_integer(
    "fid_samples",
    10_000,
    "Samples per temperature for FID / precision / recall (at most the number of test images).",
    lower_bound=1,
  )
  flags.DEFINE_string(
    "inception_path", None, "Inception-2015 weights for FID (see evaluation/networks.py)."
  )
  flags.DEFINE_string("vgg16_path", None, "VGG-16 Keras weights for precision / recall.")
  flags.DEFINE_bool(
    "download_weights", False, "Try to download missing Inception / VGG-16 weights."
  )


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSettings:
  temperatures: tuple[float, ...]
  num_iw_samples: int
  readjust_bn_steps: int
  num_grid_images: int
  fid_samples: int


def parse_temperatures(values) -> tuple[float, ...]:
  try:
    temps = tuple(float(v) for v in values)
  except ValueError as e:
    raise ValueError(
      f"--temperature must be comma-separated numbers, got {','.join(values)}"
    ) from e
  if not temps or any(not np.isfinite(t) or t <= 0 for t in temps):
    raise ValueError(f"--temperature values must be finite and > 0, got {','.join(values)}")
  return temps


# ----------------------------------------------------------------------------- evaluation


def bn_statistics(model) -> list[tuple[np.ndarray, np.ndarray]]:
  return [(bn.moving_mean.numpy(), bn.moving_variance.numpy()) for bn in model.bn_layers]


def set_bn_statistics(model, stats) -> None:
  for bn, (mean, var) in zip(model.bn_layers, stats):
    bn.moving_mean.assign(mean)
    bn.moving_variance.assign(var)


def feature_networks(*, inception_path: str | None, vgg16_path: str | None, download: bool):
  """((inception, None) or (None, reason), same for VGG-16); one line per missing network."""
  out = []
  for kind, name, path in (
    ("inception", "Inception", inception_path),
    ("vgg16", "VGG-16", vgg16_path),
  ):
    network, reason = nvae_train.load_network(kind, path=path, download=download)
    if network is None:
      print(
        f"note: {name} weights unavailable, its metrics are marked unavailable: {reason}",
        file=sys.stderr,
      )
    out.append((network, reason))
  return tuple(out)


def evaluate(
  model,
  s: nvae_train.RunSettings,
  splits: nvae_train.Splits,
  settings: EvalSettings,
  *,
  output_dir: str,
  seed: int,
  networks=None,
  progress: bool = True,
) -> dict:
  """NLL (training BN statistics), then per temperature: BN re-estimation, grid, FID / PR."""
  row = {}
  if settings.num_iw_samples:
    row.update(nvae_train.evaluate_nll(s, model, splits, seed=seed, progress=progress))
  trained_bn = bn_statistics(model)
  inception, vgg16 = networks if networks is not None else ((None, "not requested"),) * 2
  reference = splits.test  # as experiments.nvae_table1 (grey images when binarization is dynamic)
  per_temperature = {}
  for t in settings.temperatures:
    set_bn_statistics(model, trained_bn)
    if settings.readjust_bn_steps:
      model.readjust_bn(num_iterations=settings.readjust_bn_steps, temperature=t)
    samples = nvae_train.generate_samples(model, settings.num_grid_images, temperature=t)
    stem = os.path.join(output_dir, f"samples_t{t:g}")
    save_grid(stem + ".png", samples)
    save_samples(stem + ".npz", samples)
    num = min(settings.fid_samples, len(reference))
    metrics = nvae_train.sample_metrics(
      model, reference, num_samples=num, inception=inception, vgg16=vgg16, temperature=t
    )
    per_temperature[f"{t:g}"] = dict(metrics, samples=stem + ".png", fid_samples=num)
  set_bn_statistics(model, trained_bn)
  row["temperatures"] = per_temperature
  row["readjust_bn_steps"] = settings.readjust_bn_steps
  return row


def main(argv):
  del argv
  if bool(FLAGS.logdir) == bool(FLAGS.official_checkpoint):
    raise ValueError("pass exactly one of --logdir (a nvae_mnist run) and --official_checkpoint")
  settings = EvalSettings(
    temperatures=parse_temperatures(FLAGS.temperature),
    num_iw_samples=FLAGS.num_iw_samples,
    readjust_bn_steps=FLAGS.readjust_bn_steps,
    num_grid_images=FLAGS.num_grid_images,
    fid_samples=FLAGS.fid_samples,
  )
  common.setup_runtime()
  if FLAGS.logdir:
    s = nvae_train.load_run_settings(FLAGS.logdir)
    model, source = nvae_train.restore_run(FLAGS.logdir, FLAGS.checkpoint, s, seed=FLAGS.seed)
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.logdir, "evaluate")
    dataset = s.dataset if not FLAGS["dataset"].present else FLAGS.dataset
  else:
    from nvae_tf import official

    try:
      model, info = official.load_checkpoint(FLAGS.official_checkpoint, seed=FLAGS.seed)
    except official.CheckpointError as e:
      raise ValueError(str(e)) from e
    s = nvae_train.RunSettings(model=model.config, preset="official")
    source = f"{FLAGS.official_checkpoint} (official, epoch {info['epoch']})"
    output_dir = FLAGS.output_dir or os.path.join(
      os.path.dirname(os.path.abspath(FLAGS.official_checkpoint)), "evaluate"
    )
    dataset = FLAGS.dataset
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f"--output_dir {output_dir} is a file, not a directory")
  s = dataclasses.replace(
    s,
    num_iw_samples=max(FLAGS.num_iw_samples, 1),
    iw_chunk=FLAGS.iw_chunk or s.iw_chunk,
    eval_memory_gib=None if FLAGS.iw_chunk is not None else FLAGS.eval_memory_gib,
    eval_batch_size=FLAGS.eval_batch_size,
    num_test_passes=FLAGS.num_test_passes,
  )
  splits = nvae_train.test_splits(dataset, FLAGS.test_examples, FLAGS.data_dir)
  networks = feature_networks(
    inception_path=FLAGS.inception_path,
    vgg16_path=FLAGS.vgg16_path,
    download=FLAGS.download_weights,
  )
  row = evaluate(
    model,
    s,
    splits,
    settings,
    output_dir=output_dir,
    seed=FLAGS.seed,
    networks=networks,
    progress=True,
  )
  row.update(
    script="nvae_evaluate",
    command=common.command_line(),
    checkpoint=source,
    dataset=splits.dataset,
    binarization=splits.binarization,
    test_examples=len(splits.test),
    seed=FLAGS.seed,
  )
  results.write_json(os.path.join(output_dir, "evaluate.json"), row)
  if "nll" in row:
    print(
      f"test NLL {row['nll']:.2f} nats ({row['bits_per_dim']:.4f} bits/dim), -ELBO "
      f"{row['neg_elbo']:.2f}, K={s.num_iw_samples}, {row['test_examples']} images of "
      f"{nvae_train.data_description(splits.dataset)}"
    )
  for t, m in row["temperatures"].items():
    fid, precision, recall = (results.format_value(m[k], 4) for k in ("fid", "precision", "recall"))
    print(
      f"temperature {t}: FID {fid}, precision {precision}, recall {recall}; samples {m['samples']}"
    )
    for k in ("fid", "precision"):
      if results.is_metric(m[k]):
        print(f"  {k} {protocol.describe_record(m[k]['protocol'])}")
  print(f"wrote {os.path.join(output_dir, 'evaluate.json')} (checkpoint: {source})")


if __name__ == "__main__":
  define_flags()
  common.run(main)
