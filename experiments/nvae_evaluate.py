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

from absl import flags
import numpy as np
import tensorflow as tf

from experiments import data
from experiments import flags as common
from experiments import nvae_mnist
from experiments import results
from experiments.images import save_grid, save_samples

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("official_checkpoint", None, "An official NVlabs/NVAE checkpoint.pt to evaluate "
                      "instead of --logdir (architecture from its saved args; needs torch).")
  flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "Which checkpoint of --logdir: the "
                    "latest, or the best one kept by early stopping.")
  flags.DEFINE_string("output_dir", None, "Folder for evaluate.json and the sample grids. Default: "
                      "<logdir>/evaluate, or evaluate/ next to --official_checkpoint.")
  flags.DEFINE_enum("dataset", "auto", ["auto", "mnist", "binarized_mnist"], "Test images: as in "
                    "experiments.nvae_mnist. Default: the run's data set (auto for official checkpoints).")
  flags.DEFINE_integer("num_iw_samples", 1000, "Importance samples K of the test NLL (official 1000); "
                       "0 = skip the NLL.")
  flags.DEFINE_integer("iw_chunk", 100, "Importance samples per network call (memory bound only).",
                       lower_bound=1)
  flags.DEFINE_integer("eval_batch_size", 50, "Test images per NLL batch.", lower_bound=1)
  flags.DEFINE_integer("test_examples", 0, "Evaluate on the first N test images (0 = all).", lower_bound=0)
  flags.DEFINE_integer("num_test_passes", 1, "Independent NLL passes (mean and std reported).",
                       lower_bound=1)
  flags.DEFINE_list("temperature", ["0.6", "0.8", "1.0"], "Sampling temperatures (comma-separated).")
  flags.DEFINE_integer("readjust_bn_steps", 500, "Sample batches of 16 used to re-estimate the BN "
                       "statistics at each temperature before sampling (official 500); 0 = keep the "
                       "training statistics.")
  flags.DEFINE_integer("num_grid_images", 64, "Images per sample grid.", lower_bound=1)
  flags.DEFINE_integer("fid_samples", 10_000, "Samples per temperature for FID / precision / recall "
                       "(at most the number of test images).", lower_bound=1)
  flags.DEFINE_string("inception_path", None, "Inception-2015 weights for FID (see evaluation/networks.py).")
  flags.DEFINE_string("vgg16_path", None, "VGG-16 Keras weights for precision / recall.")
  flags.DEFINE_bool("download_weights", False, "Try to download missing Inception / VGG-16 weights.")


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
    raise ValueError(f"--temperature must be comma-separated numbers, got {','.join(values)}") from e
  if not temps or any(not np.isfinite(t) or t <= 0 for t in temps):
    raise ValueError(f"--temperature values must be finite and > 0, got {','.join(values)}")
  return temps


# ----------------------------------------------------------------------------- models


def run_settings(logdir: str) -> nvae_mnist.RunSettings:
  """The RunSettings a nvae_mnist run recorded in <logdir>/settings.json."""
  from nvae_tf import NVAEConfig  # pylint: disable=g-import-not-at-top
  path = os.path.join(logdir, nvae_mnist.SETTINGS_FILE)
  older = os.path.join(logdir, "results.json")  # runs from before settings.json: flattened settings
  if os.path.exists(path):
    values = results.read_json(path)
  elif os.path.exists(older):
    flat = results.read_json(older)["settings"]
    values = {k: v for k, v in flat.items() if not k.startswith("model.")}
    values["model"] = {k[len("model."):]: v for k, v in flat.items() if k.startswith("model.")}
  else:
    raise FileNotFoundError(f"{path} not found: --logdir must be a run of experiments.nvae_mnist")
  fields = {f.name for f in dataclasses.fields(nvae_mnist.RunSettings)}
  values = {k: v for k, v in values.items() if k in fields}
  model_fields = {f.name for f in dataclasses.fields(NVAEConfig)}
  values["model"] = NVAEConfig(**{k: v for k, v in values["model"].items() if k in model_fields})
  return nvae_mnist.RunSettings(**values)


def restore_run(logdir: str, which: str, s: nvae_mnist.RunSettings, *, seed: int):
  """The run's NVAE with the weights (and BN statistics) of its latest / best checkpoint."""
  from nvae_tf import NVAE  # pylint: disable=g-import-not-at-top
  folder = os.path.join(logdir, "checkpoints" if which == "latest" else "best")
  path = tf.train.latest_checkpoint(folder)
  if not path:
    raise FileNotFoundError(f"no checkpoint in {folder}")
  model = NVAE(s.model, seed=seed)
  # The harness saves the ordered `model.variables` list as `model_variables`; restore only that.
  checkpoint = tf.train.Checkpoint(model_variables=[v.value for v in model.variables])
  try:
    checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ValueError(f"checkpoint {path} does not match the architecture in settings.json: "
                     f"{str(e).splitlines()[0][:300]}") from e
  return model, path


# ----------------------------------------------------------------------------- evaluation


def bn_statistics(model) -> list[tuple[np.ndarray, np.ndarray]]:
  return [(bn.moving_mean.numpy(), bn.moving_variance.numpy()) for bn in model.bn_layers]


def set_bn_statistics(model, stats) -> None:
  for bn, (mean, var) in zip(model.bn_layers, stats):
    bn.moving_mean.assign(mean)
    bn.moving_variance.assign(var)


def feature_networks():
  """((inception, None) or (None, reason), same for VGG-16); one line per missing network."""
  from evaluation import networks  # pylint: disable=g-import-not-at-top
  out = []
  for kind, path, loader in (("Inception", FLAGS.inception_path, networks.inception_network),
                             ("VGG-16", FLAGS.vgg16_path, networks.vgg16_network)):
    try:
      out.append((loader(path, download=FLAGS.download_weights), None))
    except networks.WeightsUnavailableError as e:
      print(f"note: {kind} weights unavailable, its metrics are marked unavailable: {e}", file=sys.stderr)
      out.append((None, str(e)))
  return tuple(out)


def evaluate(model, s: nvae_mnist.RunSettings, splits: nvae_mnist.Splits, settings: EvalSettings, *,
             output_dir: str, seed: int, networks=None, progress: bool = True) -> dict:
  """NLL (training BN statistics), then per temperature: BN re-estimation, grid, FID / PR."""
  from experiments import nvae_table1  # pylint: disable=g-import-not-at-top
  row = {}
  if settings.num_iw_samples:
    row.update(nvae_mnist.evaluate_nll(s, model, splits, seed=seed, progress=progress))
  trained_bn = bn_statistics(model)
  inception, vgg16 = networks if networks is not None else ((None, "not requested"),) * 2
  reference = splits.test  # as experiments.nvae_table1 (grey images when binarization is dynamic)
  per_temperature = {}
  for t in settings.temperatures:
    set_bn_statistics(model, trained_bn)
    if settings.readjust_bn_steps:
      model.readjust_bn(num_iterations=settings.readjust_bn_steps, temperature=t)
    samples = nvae_table1.generate_samples(model, settings.num_grid_images, temperature=t)
    stem = os.path.join(output_dir, f"samples_t{t:g}")
    save_grid(stem + ".png", samples)
    save_samples(stem + ".npz", samples)
    num = min(settings.fid_samples, len(reference))
    metrics = nvae_table1.sample_metrics(model, reference, num_samples=num, inception=inception,
                                         vgg16=vgg16, temperature=t)
    per_temperature[f"{t:g}"] = dict(metrics, samples=stem + ".png", fid_samples=num)
  set_bn_statistics(model, trained_bn)
  row["temperatures"] = per_temperature
  row["readjust_bn_steps"] = settings.readjust_bn_steps
  return row


def test_splits(dataset: str, test_examples: int, data_dir) -> nvae_mnist.Splits:
  name = nvae_mnist.resolve_dataset(dataset, data_dir)
  test, _ = data.load_arrays(name, "test", data_dir)
  if test_examples:
    test = test[:test_examples]
  return nvae_mnist.Splits(dataset=name, dynamic=name == "mnist", train=None, test=test)


def main(argv):
  del argv
  if bool(FLAGS.logdir) == bool(FLAGS.official_checkpoint):
    raise ValueError("pass exactly one of --logdir (a nvae_mnist run) and --official_checkpoint")
  settings = EvalSettings(temperatures=parse_temperatures(FLAGS.temperature),
                          num_iw_samples=FLAGS.num_iw_samples, readjust_bn_steps=FLAGS.readjust_bn_steps,
                          num_grid_images=FLAGS.num_grid_images, fid_samples=FLAGS.fid_samples)
  common.setup_runtime()
  if FLAGS.logdir:
    s = run_settings(FLAGS.logdir)
    model, source = restore_run(FLAGS.logdir, FLAGS.checkpoint, s, seed=FLAGS.seed)
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.logdir, "evaluate")
    dataset = s.dataset if not FLAGS["dataset"].present else FLAGS.dataset
  else:
    from nvae_tf import official  # pylint: disable=g-import-not-at-top
    try:
      model, info = official.load_checkpoint(FLAGS.official_checkpoint, seed=FLAGS.seed)
    except official.CheckpointError as e:
      raise ValueError(str(e)) from e
    s = nvae_mnist.RunSettings(model=model.config, preset="official")
    source = f"{FLAGS.official_checkpoint} (official, epoch {info['epoch']})"
    output_dir = FLAGS.output_dir or os.path.join(
        os.path.dirname(os.path.abspath(FLAGS.official_checkpoint)), "evaluate")
    dataset = FLAGS.dataset
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f"--output_dir {output_dir} is a file, not a directory")
  s = dataclasses.replace(s, num_iw_samples=max(FLAGS.num_iw_samples, 1), iw_chunk=FLAGS.iw_chunk,
                          eval_batch_size=FLAGS.eval_batch_size, num_test_passes=FLAGS.num_test_passes)
  splits = test_splits(dataset, FLAGS.test_examples, FLAGS.data_dir)
  row = evaluate(model, s, splits, settings, output_dir=output_dir, seed=FLAGS.seed,
                 networks=feature_networks(), progress=True)
  row.update(script="nvae_evaluate", command=common.command_line(), checkpoint=source,
             dataset=splits.dataset, test_examples=len(splits.test), seed=FLAGS.seed)
  results.write_json(os.path.join(output_dir, "evaluate.json"), row)
  if "nll" in row:
    print(f"test NLL {row['nll']:.2f} nats ({row['bits_per_dim']:.4f} bits/dim), -ELBO "
          f"{row['neg_elbo']:.2f}, K={s.num_iw_samples}, {row['test_examples']} images")
  for t, m in row["temperatures"].items():
    print(f"temperature {t}: FID {m['fid']}, precision {m['precision']}, recall {m['recall']}; "
          f"samples {m['samples']}")
  print(f"wrote {os.path.join(output_dir, 'evaluate.json')} (checkpoint: {source})")


if __name__ == "__main__":
  define_flags()
  common.run(main)
