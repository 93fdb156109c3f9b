"""Perceptual path length (Karras et al. 2019) of a trained run, from the command line.

    python -m experiments.ppl --logdir RUN --lpips_path lpips_vgg.npz            # StyleGAN's distance
    python -m experiments.ppl --logdir RUN --distance vgg16 --vgg16_path vgg16.h5 --space w --sampling end

RUN is a run directory of `experiments.nvae_mnist` (settings.json + checkpoints; the model is
rebuilt with `experiments.nvae_train.load_run_settings` / `restore_run`, as nvae_evaluate does)
or a finished one-level `experiments.vampprior --model=vae` run (results.json + best/).

The path protocol is StyleGAN's (NVlabs/stylegan metrics/perceptual_path_length.py, defaults from
its run_metrics.py `ppl_zfull`): epsilon 1e-4, space z (slerp) or w (lerp), sampling full
(t ~ U(0, 1)) or end (t = 0), 100k path segments, 1st-99th percentile filtered mean, LPIPS-VGG as
the distance (`--distance vgg16`: squared VGG-16 fc2 distance instead). The latent:
  * NVAE: the standard-normal noise of all latent groups, flattened (as experiments.nvae_table2),
    images = Bernoulli means at --temperature with the training BN statistics;
  * VAE: z of the decoder p(x | z), drawn from the run's prior (standard, MoG, VampPrior, flow);
    images = the observation model's mean.
Neither model has StyleGAN's mapping network, so the decoder's input plays both Z and W: `--space w`
interpolates the same latent linearly (StyleGAN's treatment of W), `--space z` spherically.

Prints `PPL: value` and the protocol line; `--output FILE` appends the row (value and protocol
record, `experiments.results.metric`) to a JSON list. Bad input (no run, missing weights offline,
bad flags) -> one `error:` line on stderr, exit code 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from absl import flags

from evaluation import cli, networks, ppl
from evaluation import protocol as protocol_lib
from experiments import results

DISTANCES = ("lpips", "vgg16")
NETWORK_LABELS = {"lpips": "lpips-vgg-v0.1", "vgg16": "vgg16-{vgg}"}
FEATURES = {"lpips": "lpips", "vgg16": "fc2"}


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string(
    "logdir",
    None,
    "Run directory of experiments.nvae_mnist or of a "
    "one-level experiments.vampprior --model=vae run.",
    flag_values=fv,
  )
  flags.DEFINE_enum(
    "checkpoint",
    "auto",
    ["auto", "latest", "best"],
    "Which checkpoint: auto = "
    "latest for NVAE (as nvae_evaluate), best for VampPrior (the one its results "
    "report).",
    flag_values=fv,
  )
  flags.DEFINE_enum(
    "distance",
    "lpips",
    list(DISTANCES),
    "lpips: LPIPS-VGG v0.1 (StyleGAN's "
    "distance, LPIPS / eps^2); vgg16: squared VGG-16 fc2 feature distance / eps^2.",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "lpips_path",
    None,
    "LPIPS-VGG v0.1 weights .npz (made by `python -m "
    "evaluation.lpips --convert`); default $GENMODELS_LPIPS_PATH.",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "vgg16_path",
    None,
    "VGG-16 weights for --distance vgg16 (Keras .h5, or "
    "torchvision's vgg16-397923af.pth with --vgg torch-fidelity); default "
    f"${networks.VGG16_PATH_ENV}, then the caches, then a download.",
    flag_values=fv,
  )
  flags.DEFINE_enum(
    "vgg",
    "keras",
    list(networks.VGG_VARIANTS),
    "VGG-16 variant of --distance vgg16.",
    flag_values=fv,
  )
  flags.DEFINE_bool(
    "download",
    True,
    "Download missing VGG-16 weights (LPIPS weights are never downloaded).",
    flag_values=fv,
  )
  flags.DEFINE_float(
    "epsilon",
    ppl.STYLEGAN_EPSILON,
    "Step along the path (StyleGAN 1e-4).",
    lower_bound=1e-12,
    flag_values=fv,
  )
  flags.DEFINE_enum(
    "space",
    "z",
    list(ppl.SPACE_INTERPOLATION),
    "z: slerp; w: lerp (StyleGAN's "
    "treatment of Z and W; see the module doc for what the latent is).",
    flag_values=fv,
  )
  flags.DEFINE_enum(
    "sampling", "full", list(ppl.SAMPLINGS), "full: t ~ U(0, 1); end: t = 0.", flag_values=fv
  )
  flags.DEFINE_bool(
    "crop", False, "StyleGAN's FFHQ face crop before the distance (faces only).", flag_values=fv
  )
  flags.DEFINE_integer(
    "num_samples",
    ppl.STYLEGAN_NUM_SAMPLES,
    "Path segments (StyleGAN 100k).",
    lower_bound=1,
    flag_values=fv,
  )
  flags.DEFINE_integer(
    "batch_size",
    ppl.STYLEGAN_BATCH_SIZE,
    "Path segments per generator call (StyleGAN 16 per GPU); does not change the result.",
    lower_bound=1,
    flag_values=fv,
  )
  flags.DEFINE_integer("seed", 0, "Seed of the latents and of t.", lower_bound=0, flag_values=fv)
  flags.DEFINE_float(
    "temperature", 1.0, "NVAE sampling temperature.", lower_bound=1e-6, flag_values=fv
  )
  flags.DEFINE_string(
    "output",
    None,
    "Append the row (value + protocol record) to this JSON list file.",
    flag_values=fv,
  )


@dataclasses.dataclass
class Generator:
  """A run's decoder as PPL needs it."""

  kind: str  # "nvae" | "vae"
  generate: Callable  # latents [B, D] -> images [B, H, W, C] in [0, 1]
  latent_sampler: Callable  # n -> latents [n, D]
  checkpoint: str


def nvae_generator(logdir: str, which: str, *, seed: int, temperature: float) -> Generator:
  """NVAE of an experiments.nvae_mnist run; latent = all groups' standard-normal noise."""
  from experiments import nvae_train

  s = nvae_train.load_run_settings(logdir)
  model, path = nvae_train.restore_run(logdir, "latest" if which == "auto" else which, s, seed=seed)
  generate, _, dim = nvae_train.make_generator(model, temperature=temperature)
  rng = np.random.default_rng([seed, 1])  # t uses default_rng(seed) in evaluation.ppl
  return Generator(
    "nvae", generate, lambda n: rng.standard_normal((n, dim)).astype(np.float32), path
  )


def vae_generator(logdir: str, s, which: str, *, seed: int) -> Generator:
  """One-level VAE of an experiments.vampprior run (settings `s`); latent = z, drawn from the
  run's prior."""
  import keras
  import tensorflow as tf

  from experiments import vampprior_train

  if s.model != "vae":
    raise ValueError(
      f"--logdir {logdir} is a {s.model} run: PPL needs a decoder of one latent "
      "(--model=vae); the hierarchical models draw z1 given z2 at random"
    )
  _, model, path = vampprior_train.restore_run(
    logdir, "best" if which in ("auto", "best") else "latest", seed=seed
  )
  seeds = keras.random.SeedGenerator(seed)
  decode = tf.function(lambda z: model.observation.mean(model.decode(z)))
  return Generator(
    "vae",
    lambda z: decode(tf.convert_to_tensor(z, tf.float32)).numpy(),
    lambda n: model.prior.sample(n, encoder=model.encode_top, seed=seeds).numpy(),
    path,
  )


def load_generator(fv) -> Generator:
  logdir = fv.logdir
  if not os.path.isdir(logdir):
    raise FileNotFoundError(f"--logdir {logdir} is not a directory")
  from experiments import nvae_train, vampprior_train

  row_file = os.path.join(logdir, "results.json")
  row = results.read_json(row_file) if os.path.exists(row_file) else {}
  if os.path.exists(os.path.join(logdir, nvae_train.SETTINGS_FILE)) or "settings" in row:
    return nvae_generator(logdir, fv.checkpoint, seed=fv.seed, temperature=fv.temperature)
  try:
    s = vampprior_train.run_settings(logdir)
  except FileNotFoundError:
    raise FileNotFoundError(
      f"--logdir {logdir} holds neither settings.json (experiments.nvae_mnist) "
      "nor the hparams.json of an experiments.vampprior run"
    ) from None
  return vae_generator(logdir, s, fv.checkpoint, seed=fv.seed)


def resolve_weights(fv):
  """The weights file of the distance; WeightsUnavailableError (before any model is restored)
  when it is missing."""
  if fv.distance == "lpips":
    from evaluation import lpips

    return lpips.resolve_weights_path(fv.lpips_path)
  if fv.vgg == "torch-fidelity":
    return networks.resolve_vgg16_torch_weights(fv.vgg16_path, download=fv.download)
  return networks.resolve_vgg16_weights(fv.vgg16_path, download=fv.download)


def distance_network(fv, weights) -> tuple:
  """(network, compiled distance) of the weights file, kept for later calls in this process
  (the Python API, tests) with the same file, as `evaluation.cli` keeps its feature network."""
  stat = weights.stat()
  key = (fv.distance, fv.vgg, str(weights.resolve()), stat.st_size, stat.st_mtime_ns)
  if key not in _BUILT:
    if fv.distance == "lpips":
      from evaluation import lpips

      network = lpips.lpips_vgg_network(weights)
      built = network, ppl.lpips_distance(network)
    else:
      network = networks.vgg16_network(weights, download=False, variant=fv.vgg)
      built = network, ppl.vgg16_feature_distance(network)
    _BUILT.clear()  # one network alive at a time (VGG-16 is 0.5 GB)
    _BUILT[key] = built
  return _BUILT[key]


_BUILT: dict = {}


def measure(fv) -> dict:
  """The results row {"ppl": results.metric(value, record), ...} of the flags `fv`."""
  weights = resolve_weights(fv)
  generator = load_generator(fv)
  network, distance = distance_network(fv, weights)
  interpolation = ppl.SPACE_INTERPOLATION[fv.space]
  shape = {}

  def generate(latents):  # records the scored image shape for the protocol record
    images = generator.generate(latents)
    shape.setdefault("hwc", np.shape(ppl.crop_face(images) if fv.crop else images)[1:])
    return images

  value = ppl.perceptual_path_length(
    generate,
    latent_sampler=generator.latent_sampler,
    num_samples=fv.num_samples,
    distance=distance,
    epsilon=fv.epsilon,
    interpolation=interpolation,
    crop=fv.crop,
    batch_size=fv.batch_size,
    seed=fv.seed,
    sampling=fv.sampling,
  )
  record = protocol_lib.ppl_record(
    network=NETWORK_LABELS[fv.distance].format(vgg=fv.vgg),
    weights_sha=protocol_lib.weights_sha256(network),
    feature=FEATURES[fv.distance],
    image_shape=shape["hwc"],
    epsilon=fv.epsilon,
    space=fv.space,
    interpolation=interpolation,
    sampling=fv.sampling,
    crop=fv.crop,
    num_samples=fv.num_samples,
    seed=fv.seed,
  )
  return {
    "logdir": fv.logdir,
    "model": generator.kind,
    "checkpoint": generator.checkpoint,
    "temperature": fv.temperature if generator.kind == "nvae" else None,
    "ppl": results.metric(value, record),
  }


def main(argv: list[str] | None = None) -> int:
  """`python -m experiments.ppl ...`; returns the exit code (2 on bad input)."""
  fv, _, code = cli.parse_command(
    argv, doc=__doc__, define_flags=define_flags, required=("logdir",)
  )
  if code is not None:
    return code
  try:
    cli.check_output_path(fv.output)
  except ValueError as e:
    return cli.fail(e)
  cli.import_tensorflow_quietly()
  import tensorflow as tf

  try:
    row = measure(fv)
  except (ValueError, OSError, RuntimeError, tf.errors.OpError) as e:  # incl. WeightsUnavailable
    return cli.fail(e)
  value = row["ppl"]
  print(f"PPL: {value['value']:.7g}")
  print(protocol_lib.describe_record(value["protocol"]))
  if fv.output:
    results.append_row(fv.output, row)
  return 0


if __name__ == "__main__":
  sys.exit(main())
