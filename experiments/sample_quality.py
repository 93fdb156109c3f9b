"""Sample quality of the third model family on MNIST: a VAE with a RealNVP prior, a RealNVP image
flow and a DDPM (ancestral and DDIM sampling), with FID/KID against held-out MNIST and bits/dim.

  python -m experiments.sample_quality --models=vae,flow,ddpm --preset=quick

Each model trains with the shared harness under <logdir>/<model> (checkpoints, resumable;
TensorBoard scalars and sample images), or is loaded when its checkpoint already reached the target.
Writes `results/sample_quality.md` (the table and how it was made), one sample-grid PNG per model
and sampler in `results/`, samples as .npz and `results.json` in the logdir.

Data. `quick`: the only grey MNIST images available offline are the 10,000 test images, so quick
trains on test[:9000] and evaluates on the held-out test[9000:] (1,000 images). `paper`: trains on
the 60,000 MNIST train images and evaluates on the 10,000 test images (needs the train file).

FID/KID need the Inception-2015 weights (`--inception_path`, $GENMODELS_INCEPTION_PATH or
`--download_inception`); without them the table says "unavailable (...)", never a number.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from absl import flags
import keras
import numpy as np
import tensorflow as tf

from diffusion_tf import diffusion as diffusion_lib
from diffusion_tf import distributions
from diffusion_tf import layers
from diffusion_tf import model as models
from diffusion_tf import optim
from evaluation import fid
from evaluation import features
from evaluation import kid
from evaluation import likelihood
from evaluation import networks
from experiments import data
from experiments import flags as common
from experiments import harness
from experiments import results
from experiments.images import save_grid

MODELS = ("vae", "flow", "ddpm")

def define_flags():
  """Defines this script's flags: called when it runs (not at import, so experiment modules
  with flags of the same name can be imported together, e.g. by the tests)."""
  flags.DEFINE_list("models", list(MODELS), f"Models to train/evaluate, any of {MODELS}.")
  flags.DEFINE_string("inception_path", None, "Inception-2015 weights for FID/KID "
                      "(classify_image_graph_def.pb, the TTUR .tgz, or a folder with either). "
                      "Default: $GENMODELS_INCEPTION_PATH, then the cache.")
  flags.DEFINE_bool("download_inception", False, "Download the Inception weights if not found "
                    "(needs a network).")
  flags.DEFINE_integer("fid_samples", None, "Generated samples per model and sampler for FID/KID "
                       "against the evaluation images. Default: the preset's (paper: 10000).", lower_bound=1)
  flags.DEFINE_integer("grid_samples", 64, "Samples in each PNG grid.", lower_bound=1)
  flags.DEFINE_integer("num_timesteps", diffusion_lib.NUM_TIMESTEPS, "DDPM diffusion steps T "
                       "(DDPM: 1000; smaller only for smoke tests).", lower_bound=1)
  flags.DEFINE_enum("beta_schedule", "linear", ["linear", "cosine"], "DDPM noise schedule: linear "
                    "1e-4..0.02 (DDPM) or cosine (Nichol & Dhariwal 2021).")
  flags.DEFINE_integer("ddim_steps", 50, "DDIM respaced steps S.", lower_bound=1)
  flags.DEFINE_float("ddim_eta", 0.0, "DDIM eta (0: deterministic; 1: ancestral-like variances).", lower_bound=0.0)
  flags.DEFINE_enum("ddim_spacing", "uniform", list(diffusion_lib.DDIM_SPACINGS),
                    "DDIM timesteps: uniform = official DDIM range(0, T, T // S) (more than S steps "
                    "when T // S does not divide T); leading / trailing / linspace = diffusers' "
                    "timestep_spacing options (see docs/diffusion.md).")
  flags.DEFINE_bool("ddim_clip_x0", False, "Clip DDIM's x0 prediction to [-1, 1] (diffusers' "
                    "clip_sample); the official DDIM sampler does not.")
  flags.DEFINE_bool("ddpm_dequantize", False, "Train the DDPM on uniformly dequantized (k + u)/256 "
                    "data; default: k/127.5 - 1 without noise, as the official code.")
  flags.DEFINE_integer("vlb_examples", None, "Held-out images for the DDPM variational bound "
                       "(T network calls each). Default: all evaluation images.", lower_bound=1)
  flags.DEFINE_bool("vlb_unclipped", False, "Also report the DDPM bound without clipping x0_hat "
                    "(the official calc_bpd_loop clips; this doubles the bound's cost).")
  flags.DEFINE_integer("iw_samples", None, "Importance samples per image for the VAE's log p(x). "
                       "Default: the preset's.", lower_bound=1)

FLAGS = flags.FLAGS

# The seed's small-sample protocol: FID/KID between 256 generated and 256 real images.
SMALL_PROTOCOL = 256
QUICK_TRAIN_IMAGES = 9000  # quick: MNIST test[:9000] trains, test[9000:] is held out
EVAL_BATCH = 100


@dataclasses.dataclass(frozen=True)
class FlowPreset:
  batch_size: int
  epochs: int
  learning_rate: float
  num_couplings: int = 20   # seed configuration
  hidden_units: int = 256


@dataclasses.dataclass(frozen=True)
class VAEPreset:
  batch_size: int
  epochs: int
  learning_rate: float
  latent_dim: int
  hidden_units: tuple[int, ...]
  prior_couplings: int
  prior_hidden_units: int
  iw_samples: int


@dataclasses.dataclass(frozen=True)
class DDPMPreset:
  batch_size: int
  epochs: int
  learning_rate: float
  warmup_steps: int
  ema_decay: float
  unet: layers.UNetConfig
  vlb_examples: int | None = None  # None: all evaluation images
  grad_clip_norm: float = 1.0  # DDPM official: clip the global gradient norm at 1


@dataclasses.dataclass(frozen=True)
class Preset:
  flow: FlowPreset
  vae: VAEPreset
  ddpm: DDPMPreset
  fid_samples: int
  data: str  # what the preset trains and evaluates on, for the results page


PRESETS = {
    "quick": Preset(
        flow=FlowPreset(batch_size=64, epochs=3, learning_rate=1e-4),
        vae=VAEPreset(batch_size=64, epochs=6, learning_rate=1e-3, latent_dim=16,
                      hidden_units=(512, 256), prior_couplings=4, prior_hidden_units=128,
                      iw_samples=100),
        ddpm=DDPMPreset(batch_size=64, epochs=2, learning_rate=5e-4, warmup_steps=50,
                        ema_decay=0.99,
                        unet=layers.UNetConfig(channels=16, channel_mult=(1, 2, 2, 2),
                                               num_res_blocks=1, attention_resolutions=(8,),
                                               dropout=0.1, num_groups=8)),
        fid_samples=1000,
        data=(f"grey MNIST test images: train on test[:{QUICK_TRAIN_IMAGES}], evaluate on the "
              f"held-out test[{QUICK_TRAIN_IMAGES}:] (1,000 images); the MNIST train images are "
              "not available offline")),
    # DDPM: the paper's CIFAR-10 network and optimisation (Appendix B: ch 128, (1,2,2,2), 2 res
    # blocks, attention at 16, dropout 0.1, Adam 2e-4, batch 128, warm-up 5000, EMA 0.9999); the
    # MNIST training length is ours (the paper has no MNIST run). Flow: seed configuration with
    # MAF's MNIST optimiser (Adam 1e-4). VAE: our choice of sizes.
    "paper": Preset(
        flow=FlowPreset(batch_size=100, epochs=100, learning_rate=1e-4),
        vae=VAEPreset(batch_size=100, epochs=200, learning_rate=5e-4, latent_dim=32,
                      hidden_units=(512, 256), prior_couplings=8, prior_hidden_units=256,
                      iw_samples=5000),
        ddpm=DDPMPreset(batch_size=128, epochs=200, learning_rate=2e-4, warmup_steps=5000,
                        ema_decay=models.DDPM_EMA_DECAY, unet=layers.UNetConfig()),
        fid_samples=10000,
        data="MNIST train (60,000 grey images) for training, the 10,000 test images for evaluation"),
}


# ============================================================================= data


def load_images(preset_name: str, data_dir: str | None):
  """(train images [N, 28, 28, 1] in [0, 1], evaluation images) as NumPy arrays."""
  test, _ = data.load_arrays("mnist", "test", data_dir)
  if preset_name == "quick":
    return test[:QUICK_TRAIN_IMAGES], test[QUICK_TRAIN_IMAGES:]
  train, _ = data.load_arrays("mnist", "train", data_dir)
  return train, test


# ============================================================================= training


def clip_by_global_norm(max_norm: float):
  def transform(grads, variables):
    del variables
    return tf.clip_by_global_norm(grads, max_norm)[0]
  return transform


def train(name: str, *, model, optimizer, loss_fn, train_images, batch_size: int, epochs: int,
          strategy, logdir: str, hparams: dict, epoch_end_fn=None, grad_transform=None):
  # Each model has its own folder under the run's logdir.
  config = dataclasses.replace(common.train_config(logdir=logdir, batch_size=batch_size,
                                                   epochs=epochs, hparams=dict(hparams, model=name)),
                               logdir=logdir)
  trainer = harness.Trainer(
      config=config, strategy=strategy, model=model, optimizer=optimizer, loss_fn=loss_fn,
      train_data=tf.data.Dataset.from_tensor_slices(train_images), epoch_end_fn=epoch_end_fn,
      grad_transform=grad_transform)
  start = time.perf_counter()
  last = trainer.fit()
  print(f"[{name}] trained to step {int(trainer.step.numpy())} in "
        f"{time.perf_counter() - start:.0f} s; last scalars {last}", file=sys.stderr)
  return trainer


def image_summaries(sample_fn):
  """epoch_end_fn writing 16 samples to TensorBoard."""
  def epoch_end_fn(model, epoch):
    del model, epoch
    tf.summary.image("samples", sample_fn(16), max_outputs=16)
    return {}
  return epoch_end_fn


# ============================================================================= per model


def run_flow(p: FlowPreset, *, strategy, train_images, eval_images, logdir):
  with strategy.scope():
    model = models.FlowModel(image_shape=(28, 28, 1), num_couplings=p.num_couplings,
                             hidden_units=p.hidden_units, seed=FLAGS.seed)
    optimizer = keras.optimizers.Adam(p.learning_rate)

  def loss_fn(m, x, ctx):
    terms = m.loss_terms(x, training=True)
    return harness.LossOutput(per_example=terms.nll,
                              metrics={"bits_per_dim": tf.reduce_mean(terms.bits_per_dim)})
  trainer = train("flow", model=model, optimizer=optimizer, loss_fn=loss_fn,
                  train_images=train_images, batch_size=p.batch_size, epochs=p.epochs,
                  strategy=strategy, logdir=logdir, hparams=dataclasses.asdict(p),
                  epoch_end_fn=image_summaries(lambda n: model.sample(n)))
  # Held-out bits/dim: one dequantization draw per image (fixed seed), + 8 bits for 8-bit data.
  x = distributions.uniform_dequantize(eval_images, seed=FLAGS.seed + 7).numpy()
  log_prob = tf.function(lambda b: model.log_prob(b).log_prob)
  nll = -np.concatenate([log_prob(tf.constant(x[i:i + EVAL_BATCH])).numpy()
                         for i in range(0, len(x), EVAL_BATCH)])
  bpd = float(likelihood.bits_per_dim(nll.mean(), 784, offset_bits=8.0))
  return {"flow": lambda n, seed: model.sample(n, seed=seed)}, {
      "bits_per_dim": bpd, "bits_per_dim_kind": "exact flow NLL of dequantized data, +8",
      "train_steps": int(trainer.step.numpy())}


def run_vae(p: VAEPreset, *, strategy, train_images, eval_images, logdir):
  with strategy.scope():
    model = models.FlowPriorVAE(image_shape=(28, 28, 1), latent_dim=p.latent_dim,
                                hidden_units=p.hidden_units, prior_couplings=p.prior_couplings,
                                prior_hidden_units=p.prior_hidden_units, seed=FLAGS.seed)
    optimizer = keras.optimizers.Adam(p.learning_rate)

  def loss_fn(m, x, ctx):
    lv = m.loss_terms(x, training=True)
    return harness.LossOutput(per_example=lv.negative_elbo,
                              metrics={"reconstruction": tf.reduce_mean(lv.reconstruction),
                                       "kl": tf.reduce_mean(lv.kl)})
  trainer = train("vae", model=model, optimizer=optimizer, loss_fn=loss_fn,
                  train_images=train_images, batch_size=p.batch_size, epochs=p.epochs,
                  strategy=strategy, logdir=logdir, hparams=dataclasses.asdict(p),
                  epoch_end_fn=image_summaries(lambda n: model.sample(n)))
  x = distributions.uniform_dequantize(eval_images, seed=FLAGS.seed + 8).numpy().reshape(-1, 784)
  iw = FLAGS.iw_samples or p.iw_samples
  summary = likelihood.evaluate_log_likelihood(
      lambda xb, k: model.log_weights(xb, k), [x[i:i + EVAL_BATCH] for i in range(0, len(x), EVAL_BATCH)],
      num_samples=iw, num_dims=784, chunk_size=min(iw, 50), progress=False)
  bpd = float(likelihood.bits_per_dim(summary.nll, 784, offset_bits=8.0))
  return {"vae": lambda n, seed: model.sample(n, seed=seed)}, {
      "bits_per_dim": bpd, "bits_per_dim_kind": f"IWAE (K={iw}) of dequantized data, +8",
      "train_steps": int(trainer.step.numpy())}


def run_ddpm(p: DDPMPreset, *, strategy, train_images, eval_images, logdir):
  schedule = (diffusion_lib.linear_beta_schedule if FLAGS.beta_schedule == "linear"
              else diffusion_lib.cosine_beta_schedule)
  gd = diffusion_lib.GaussianDiffusion(betas=schedule(FLAGS.num_timesteps))
  with strategy.scope():
    model = models.DDPM(image_shape=(28, 28, 1), unet=p.unet, diffusion=gd, padded_size=32,
                        seed=FLAGS.seed, dequantize=FLAGS.ddpm_dequantize)
    # Official: Adam (epsilon 1e-8), lr * min(step / warmup, 1), EMA of the weights.
    optimizer = optim.ddpm_adam(learning_rate=p.learning_rate, warmup_steps=p.warmup_steps,
                                ema_decay=p.ema_decay)
  loss_fn = lambda m, x, ctx: harness.LossOutput(per_example=m.loss_terms(x, training=True).simple)

  ddim_steps = min(FLAGS.ddim_steps, gd.num_timesteps)
  ddim_kwargs = dict(num_steps=ddim_steps, eta=FLAGS.ddim_eta, spacing=FLAGS.ddim_spacing,
                     clip_denoised=FLAGS.ddim_clip_x0)

  def ema_samples(n):
    with models.ema_weights(optimizer, model.trainable_variables):
      return model.sample_ddim(n, seed=0, **ddim_kwargs)
  trainer = train("ddpm", model=model, optimizer=optimizer, loss_fn=loss_fn,
                  train_images=train_images, batch_size=p.batch_size, epochs=p.epochs,
                  strategy=strategy, logdir=logdir,
                  hparams=dict(dataclasses.asdict(p), num_timesteps=gd.num_timesteps,
                               beta_schedule=FLAGS.beta_schedule,
                               dequantize=FLAGS.ddpm_dequantize),
                  epoch_end_fn=image_summaries(ema_samples),
                  grad_transform=clip_by_global_norm(p.grad_clip_norm))
  n_vlb = min(common.flag_or("vlb_examples", p.vlb_examples or len(eval_images)), len(eval_images))
  vlb = {clip: vlb_bits_per_dim(model, optimizer, eval_images[:n_vlb], clip_denoised=clip)
         for clip in ([True, False] if FLAGS.vlb_unclipped else [True])}
  bpd, se = vlb[True]
  unclipped = (f"; without clipping x0_hat {vlb[False][0]:.4f} ± {vlb[False][1]:.4f}"
               if False in vlb else "")
  def sampler(kind):
    def fn(n, seed):
      with models.ema_weights(optimizer, model.trainable_variables):
        if kind == "ancestral":
          return model.sample(n, seed=seed)
        return model.sample_ddim(n, seed=seed, **ddim_kwargs)
    return fn
  # Named by the steps actually taken (uniform spacing can take more than --ddim_steps).
  ddim_name = (f"ddim{len(gd.ddim_timesteps(ddim_steps, spacing=FLAGS.ddim_spacing))}"
               f"_eta{FLAGS.ddim_eta:g}")
  info = {
      "bits_per_dim": bpd, "bits_per_dim_se": se, "vlb_images": n_vlb,
      "bits_per_dim_kind": f"VLB (all {gd.num_timesteps} terms, x0_hat clipped as official, EMA "
                           f"weights), ± {se:.4f} standard error over {n_vlb} held-out images"
                           f"{unclipped}; upper bound per real pixel",
      "train_steps": int(trainer.step.numpy())}
  if False in vlb:
    info.update(bits_per_dim_unclipped=vlb[False][0], bits_per_dim_unclipped_se=vlb[False][1])
  return {f"ddpm_ancestral{gd.num_timesteps}": sampler("ancestral"),
          f"ddpm_{ddim_name}": sampler("ddim")}, info


def vlb_bits_per_dim(model, optimizer, images, *, clip_denoised: bool) -> tuple[float, float]:
  """(mean, standard error over images) of the DDPM bound in bits per real pixel, EMA weights.

  The bound is over the padded 32x32 image; the padding is known, so it also bounds
  -log p(28x28 crop | padding): per real pixel (784 dims). No +8 offset: the decoder is discrete
  over 8-bit bins. Each batch of EVAL_BATCH images draws its own x_t noise.
  """
  with models.ema_weights(optimizer, model.trainable_variables):
    nats = np.concatenate([
        model.variational_bound(images[i:i + EVAL_BATCH], seed=FLAGS.seed * 100_003 + i,
                                clip_denoised=clip_denoised).total.numpy()
        for i in range(0, len(images), EVAL_BATCH)])
  bits = np.asarray(likelihood.bits_per_dim(nats, 784), np.float64)
  se = float(bits.std(ddof=1) / np.sqrt(len(bits))) if len(bits) > 1 else float("nan")
  return float(bits.mean()), se


RUNNERS = {"flow": run_flow, "vae": run_vae, "ddpm": run_ddpm}


# ============================================================================= FID / KID


def inception_or_reason():
  """(network, None) or (None, why FID/KID are unavailable)."""
  try:
    return networks.inception_network(FLAGS.inception_path, download=FLAGS.download_inception), None
  except networks.WeightsUnavailableError as e:
    return None, f"unavailable (no Inception weights: {str(e).split('. ')[0]})"


def generate(sample_fn, total: int, *, batch: int = 500) -> np.ndarray:
  chunks = []
  for i, start in enumerate(range(0, total, batch)):
    chunks.append(np.asarray(sample_fn(min(batch, total - start), seed=FLAGS.seed * 1000 + i)))
  return np.concatenate(chunks)


def fid_kid(network, generated, reference, *, seed: int = 0) -> dict:
  """FID and KID of `generated` against `reference` (all images, and the first 256 of each)."""
  feats_g = features.extract(network, generated, progress=False)["pool_3"]
  feats_r = features.extract(network, reference, progress=False)["pool_3"]
  mu_g, s_g = fid.feature_statistics(feats_g)
  mu_r, s_r = fid.feature_statistics(feats_r)
  small_g, small_r = feats_g[:SMALL_PROTOCOL], feats_r[:SMALL_PROTOCOL]
  return {
      "fid": fid.frechet_distance(mu_g, s_g, mu_r, s_r),
      "kid": kid.kernel_inception_distance(feats_r, feats_g, seed=seed),
      "fid_256": fid.frechet_distance(*fid.feature_statistics(small_g),
                                      *fid.feature_statistics(small_r)),
      "kid_256": kid.kernel_inception_distance(small_r, small_g, subset_size=SMALL_PROTOCOL,
                                               seed=seed),
  }


# ============================================================================= main


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.models) - set(MODELS))
  if unknown or not FLAGS.models:
    raise ValueError(f"--models must be a non-empty subset of {MODELS}, got {FLAGS.models}")
  preset = PRESETS[FLAGS.preset]
  keras.utils.set_random_seed(FLAGS.seed)  # weight initialisation
  strategy = common.setup_runtime()
  train_images, eval_images = load_images(FLAGS.preset, FLAGS.data_dir)
  base_logdir = FLAGS.logdir or common.default_logdir("sample_quality", preset=FLAGS.preset,
                                                      seed=FLAGS.seed)
  out_dir = common.results_dir(base_logdir)  # results/, or <logdir>/results for smoke runs
  network, unavailable = inception_or_reason()
  fid_n = FLAGS.fid_samples or preset.fid_samples
  rows = []
  for name in FLAGS.models:
    logdir = os.path.join(base_logdir, name)
    samplers, info = RUNNERS[name](getattr(preset, name), strategy=strategy,
                                   train_images=train_images, eval_images=eval_images,
                                   logdir=logdir)
    for sampler_name, sample_fn in samplers.items():
      start = time.perf_counter()
      grid = np.asarray(sample_fn(FLAGS.grid_samples, seed=FLAGS.seed))
      grid_seconds = time.perf_counter() - start
      png = os.path.join(out_dir, f"sample_quality_{sampler_name}.png")
      save_grid(png, grid)
      row = dict(info, model=name, sampler=sampler_name, grid=png,
                 grid_seconds=round(grid_seconds, 1))
      if network is None:
        row.update(fid=unavailable, kid=unavailable, fid_256=unavailable, kid_256=unavailable)
        np.savez_compressed(os.path.join(logdir, f"samples_{sampler_name}.npz"), samples=grid)
      else:
        generated = generate(sample_fn, max(fid_n, SMALL_PROTOCOL))
        np.savez_compressed(os.path.join(logdir, f"samples_{sampler_name}.npz"), samples=generated)
        row.update(fid_kid(network, generated, eval_images, seed=FLAGS.seed))
      print(f"[{sampler_name}] {row}", file=sys.stderr)
      rows.append(row)
  results.write_json(os.path.join(base_logdir, "results.json"), rows)
  write_page(rows, preset=preset, fid_n=fid_n, num_eval=len(eval_images),
             fid_available=network is not None, out_dir=out_dir)
  return 0


def write_page(rows, *, preset: Preset, fid_n: int, num_eval: int, fid_available: bool,
               out_dir: str):
  columns = [("model", "model"), ("sampler", "sampler"), ("bits_per_dim", "bits/dim"),
             ("bits_per_dim_kind", "bits/dim: what"),
             ("fid", f"FID ({fid_n} gen. vs {num_eval} eval.)"), ("kid", "KID (mean ± std)"),
             ("fid_256", "FID 256 vs 256 (seed protocol)"), ("kid_256", "KID 256 vs 256"),
             ("train_steps", "train steps"), ("grid_seconds", f"s for {FLAGS.grid_samples} samples"),
             ("grid", "sample grid")]
  table = results.markdown_table(rows, columns, digits=3)
  notes = f"""
Data: {preset.data}. Pixels are 8-bit values; flow and VAE model uniformly dequantized data
(x = (k + u) / 256), so their bits/dim are NLL / (784 ln 2) + 8 (an upper bound on the discrete
NLL). The DDPM number is its variational bound with the discretized Gaussian decoder (no offset),
over the padded 32x32 image and divided by the 784 real pixels: the padding (-1) is fixed, so this
bounds -log p(28x28 image | padding). The DDPM is sampled with its EMA weights, both by the
{FLAGS.num_timesteps}-step ancestral sampler (one compiled XLA while loop) and by DDIM.
Settings: flow {dataclasses.asdict(preset.flow)}; VAE {dataclasses.asdict(preset.vae)};
DDPM {dataclasses.asdict(preset.ddpm)}, T = {FLAGS.num_timesteps}, {FLAGS.beta_schedule} betas.
"""
  if not fid_available:
    notes += ("\nFID/KID: the Inception-2015 weights are not available on this machine, so no FID "
              "or KID was computed (none is shown). Rerun with --inception_path to fill them in.\n")
  results.write_markdown(os.path.join(out_dir, "sample_quality.md"),
                         title=f"Sample quality on MNIST ({FLAGS.preset} preset)",
                         command=common.command_line(), table=table, notes=notes)


if __name__ == "__main__":
  define_flags()
  common.run(main)
