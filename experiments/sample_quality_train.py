"""Sample quality of the third model family on MNIST as a library (no flags): presets, data, the
training of a VAE with a RealNVP prior, a RealNVP image flow and a DDPM, their held-out likelihoods
(kept per image), FID/KID and the results page.

The script `experiments.sample_quality` (its docstring has the commands and the data) defines the
flags (`experiments.sample_quality_flags`), reads them once into a frozen `Settings` and calls `run`.

Per-image values: each model keeps the held-out log-likelihood of every evaluation image in its
folder, <logdir>/<model>/test_per_example.npz (`results.PER_EXAMPLE_FILE`; the DDPM's bound without
clipping x0_hat in <logdir>/ddpm/unclipped/), in nats: the flow's exact log-density and the VAE's
IWAE_K of the dequantized image in [0, 1]^D (bits/dim = -value / (D ln 2) + 8), the DDPM's -VLB
(bits/dim = -value / (D ln 2)); the description stored with them says which, with D and the offset.
The page copies them beside it (results/sample_quality/<model>.npz) and prints the bits/dim and
standard errors they give. A rerun of a finished model reuses its stored values (same checkpoint
step, images and settings) rather than evaluating again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from common_tf import host
from diffusion_tf import diffusion as diffusion_lib
from diffusion_tf import distributions, layers, optim
from diffusion_tf import model as models
from evaluation import features, fid, kid, likelihood, networks, resume_cache
from experiments import data, ddim_flags, harness, results
from experiments.images import save_grid

MODELS = ("vae", "flow", "ddpm")
BETA_SCHEDULES = {
  "linear": diffusion_lib.linear_beta_schedule,
  "cosine": diffusion_lib.cosine_beta_schedule,
}


# The seed's small-sample protocol: FID/KID between 256 generated and 256 real images.
SMALL_PROTOCOL = 256
OFFLINE_TRAIN_IMAGES = 9000  # quick / cpu: MNIST test[:9000] trains, test[9000:] is held out
EVAL_BATCH = 100


@dataclasses.dataclass(frozen=True)
class FlowPreset:
  batch_size: int
  epochs: int
  learning_rate: float
  num_couplings: int = 20  # seed configuration
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
  num_timesteps: int = diffusion_lib.NUM_TIMESTEPS
  beta_schedule: str = "linear"
  dequantize: bool = False  # official: k / 127.5 - 1, no noise
  random_flip: bool = False  # official CIFAR-10 randflip=1; off for MNIST digits
  padded_size: int = 32  # MNIST 28 -> 32: four U-Net levels need a side divisible by 8


@dataclasses.dataclass(frozen=True)
class Preset:
  flow: FlowPreset
  vae: VAEPreset
  ddpm: DDPMPreset
  fid_samples: int
  data: str  # what the preset trains and evaluates on, for the results page
  offline_split: bool  # True: train on MNIST test[:9000], evaluate on test[9000:]


OFFLINE_DATA = (
  f"grey MNIST test images: train on test[:{OFFLINE_TRAIN_IMAGES}], evaluate on the "
  f"held-out test[{OFFLINE_TRAIN_IMAGES}:] (1,000 images); the MNIST train images "
  "are not available offline"
)

QUICK = Preset(
  flow=FlowPreset(batch_size=64, epochs=3, learning_rate=1e-4),
  vae=VAEPreset(
    batch_size=64,
    epochs=6,
    learning_rate=1e-3,
    latent_dim=16,
    hidden_units=(512, 256),
    prior_couplings=4,
    prior_hidden_units=128,
    iw_samples=100,
  ),
  ddpm=DDPMPreset(
    batch_size=64,
    epochs=2,
    learning_rate=5e-4,
    warmup_steps=50,
    ema_decay=0.99,
    unet=layers.UNetConfig(
      channels=16,
      channel_mult=(1, 2, 2, 2),
      num_res_blocks=1,
      attention_resolutions=(8,),
      dropout=0.1,
      num_groups=8,
    ),
  ),
  fid_samples=1000,
  data=OFFLINE_DATA,
  offline_split=True,
)

PRESETS = {
  "quick": QUICK,
  # The quick models trained for about two CPU-hours in total on the 2-core AVX-512 host
  # (process CPU time from 20-step measurements, docs/diffusion.md): DDPM 8,960 steps x 0.67 s
  # = 1.67 h, flow 4,200 x 0.18 s = 0.21 h, VAE 14,000 x 0.024 s = 0.09 h. The DDPM keeps the
  # 16-channel U-Net: the T = 1000 bound over 1,000 images costs 10,000 batch-100 forward passes
  # (0.7 CPU-h at 16 channels, 2.1 at 32). EMA 0.999 averages over ~1,000 of the 8,960 steps
  # (0.9999 would span the whole run); Adam 2e-4 as DDPM (Appendix B). The paper has no MNIST run.
  "cpu": dataclasses.replace(
    QUICK,
    flow=dataclasses.replace(QUICK.flow, epochs=30),
    vae=dataclasses.replace(QUICK.vae, epochs=100, iw_samples=1000),
    ddpm=dataclasses.replace(
      QUICK.ddpm, epochs=64, learning_rate=2e-4, warmup_steps=500, ema_decay=0.999
    ),
  ),
  # DDPM: the paper's CIFAR-10 network and optimisation (Appendix B: ch 128, (1,2,2,2), 2 res
  # blocks, attention at 16, dropout 0.1, Adam 2e-4, batch 128, warm-up 5000, EMA 0.9999); the
  # MNIST training length is ours (the paper has no MNIST run). Flow: seed configuration with
  # MAF's MNIST optimiser (Adam 1e-4). VAE: our choice of sizes.
  "paper": Preset(
    flow=FlowPreset(batch_size=100, epochs=100, learning_rate=1e-4),
    vae=VAEPreset(
      batch_size=100,
      epochs=200,
      learning_rate=5e-4,
      latent_dim=32,
      hidden_units=(512, 256),
      prior_couplings=8,
      prior_hidden_units=256,
      iw_samples=5000,
    ),
    ddpm=DDPMPreset(
      batch_size=128,
      epochs=200,
      learning_rate=2e-4,
      warmup_steps=5000,
      ema_decay=models.DDPM_EMA_DECAY,
      unet=layers.UNetConfig(),
    ),
    fid_samples=10000,
    offline_split=False,
    data="MNIST train (60,000 grey images) for training, the 10,000 test images for evaluation",
  ),
}


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything one run needs, read from the flags once in `main` and passed down."""

  preset_name: str
  preset: (
    Preset  # with the flag overrides applied (--fid_samples, --iw_samples, --num_timesteps, ...)
  )
  models: tuple[str, ...]
  train: Mapping[str, harness.TrainConfig]  # per model: its folder, batch, epochs, max_steps, ...
  seed: int
  data_dir: str | None
  logdir: str  # the run's folder; model m trains in train[m].logdir = <logdir>/<m>
  results_dir: str  # results/, or <logdir>/results for --max_steps smoke runs
  ddim: ddim_flags.DDIMSettings
  vlb_unclipped: bool
  grid_samples: int
  inception_path: str | None
  download_inception: bool
  command: str  # for the results page


# ============================================================================= data


def load_images(preset: Preset, data_dir: str | None):
  """(train images [N, H, W, C] in [0, 1], evaluation images) as NumPy arrays."""
  test, _ = data.load_arrays("mnist", "test", data_dir)
  if preset.offline_split:
    return test[:OFFLINE_TRAIN_IMAGES], test[OFFLINE_TRAIN_IMAGES:]
  train, _ = data.load_arrays("mnist", "train", data_dir)
  return train, test


def batches(x: np.ndarray, size: int = EVAL_BATCH) -> list[np.ndarray]:
  return [x[i : i + size] for i in range(0, len(x), size)]


# ============================================================================= per-image values


UNCLIPPED_DIR = "unclipped"  # <logdir>/ddpm/unclipped/test_per_example.npz: the bound unclipped


def stored_per_example(run_dir: str, key: Mapping) -> dict | None:
  """The per-image values in `run_dir` (`results.PER_EXAMPLE_FILE`) when they were made under
  `key` (checkpoint step, images, K, seed...), else None: a finished model is not evaluated again
  to rewrite its page."""
  path = os.path.join(run_dir, results.PER_EXAMPLE_FILE)
  if not os.path.exists(path):
    return None
  values = results.read_per_example(path)
  if values["description"].get("key") != json.loads(json.dumps(dict(key))):
    return None
  print(f"The held-out values come from {path}", file=sys.stderr)
  return values


def write_per_example(
  run_dir: str,
  *,
  strategy,
  log_likelihood,
  key: Mapping,
  what: str,
  num_dims: int,
  offset_bits: float,
  elbo=None,
) -> None:
  """Keeps the per-image values (nats) of one model in `run_dir`, with what they are, D and the
  bits/dim offset (bits/dim = -value / (D ln 2) + offset_bits). Under several workers only the
  chief of `strategy` writes."""
  if not harness.is_chief(strategy):
    return
  results.write_per_example(
    os.path.join(run_dir, results.PER_EXAMPLE_FILE),
    log_likelihood=log_likelihood,
    elbo=elbo,
    what=what,
    unit="nats",
    num_dims=num_dims,
    offset_bits=offset_bits,
    key=dict(key),
  )


def per_example_bits(path: str) -> tuple[float, float | None, int]:
  """(bits/dim, its standard error over the images, images) that a per-image file gives."""
  numbers = results.per_example_numbers(path)
  description = results.read_per_example(path)["description"]
  scale = description["num_dims"] * math.log(2.0)
  sem = numbers["nll_sem"] / scale if numbers["nll_sem"] is not None else None
  return (numbers["nll"] / scale + description["offset_bits"], sem, numbers["test_examples"])


def row_id(row: Mapping) -> str:
  """The name of a row's per-image values beside the page: the model (the DDPM's two samplers
  share one bound)."""
  return row["model"]


def with_per_example_numbers(
  rows: list[dict], *, page: str, run_dirs: Mapping[str, str]
) -> list[dict]:
  """Each row with a bits/dim gets its model's per-image values published beside the page
  (`results.publish_per_example`) and its bits/dim, standard error (and the DDPM's unclipped
  bound) as those values give them; a row without values keeps its recorded numbers and says they
  were not kept."""
  out = []
  for row in rows:
    row = dict(row)
    if row.get("bits_per_dim") is None:
      out.append(row)
      continue
    name, run_dir = row_id(row), run_dirs[row["model"]]
    path = results.publish_per_example(run_dir, page, name)
    if path is None and os.path.exists(results.published_per_example_path(page, name)):
      path = results.published_per_example_path(page, name)
    if path is None:
      out.append(dict(row, per_example=None))
      continue
    row["bits_per_dim"], row["bits_per_dim_se"], row["eval_images"] = per_example_bits(path)
    row["per_example"] = os.path.relpath(path, os.path.dirname(page) or ".")
    if "bits_per_dim_unclipped" in row:
      unclipped = results.publish_per_example(
        os.path.join(run_dir, UNCLIPPED_DIR), page, name + "_" + UNCLIPPED_DIR
      )
      if unclipped is not None:
        row["bits_per_dim_unclipped"], row["bits_per_dim_unclipped_se"], _ = per_example_bits(
          unclipped
        )
    out.append(row)
  return out


# ============================================================================= training


def clip_by_global_norm(max_norm: float):
  def transform(grads, variables):
    del variables
    return tf.clip_by_global_norm(grads, max_norm)[0]

  return transform


def train(
  name: str,
  *,
  model,
  optimizer,
  loss_fn,
  train_images,
  config: harness.TrainConfig,
  strategy,
  hparams: dict,
  epoch_end_fn=None,
  grad_transform=None,
) -> dict:
  """Trains (or resumes, or finds finished) one model; returns steps, epochs and training seconds."""
  trainer = harness.Trainer(
    config=dataclasses.replace(config, hparams=dict(hparams, model=name)),
    strategy=strategy,
    model=model,
    optimizer=optimizer,
    loss_fn=loss_fn,
    train_data=tf.data.Dataset.from_tensor_slices(train_images),
    epoch_end_fn=epoch_end_fn,
    grad_transform=grad_transform,
  )
  start = time.perf_counter()
  last = trainer.fit()
  steps = int(trainer.step.numpy())
  print(
    f"[{name}] trained to step {steps} in {time.perf_counter() - start:.0f} s; last scalars {last}",
    file=sys.stderr,
  )
  return {
    "train_steps": steps,
    "train_epochs": round(steps / trainer.steps_per_epoch, 2),
    "train_seconds": round(float(trainer.train_seconds.numpy())),
  }


def image_summaries(sample_fn):
  """epoch_end_fn writing 16 samples to TensorBoard."""

  def epoch_end_fn(model, epoch):
    del model, epoch
    tf.summary.image("samples", sample_fn(16), max_outputs=16)
    return {}

  return epoch_end_fn


# ============================================================================= per model


def run_flow(p: FlowPreset, *, settings: Settings, strategy, train_images, eval_images):
  image_shape = tuple(train_images.shape[1:])
  with strategy.scope():
    model = models.FlowModel(
      image_shape=image_shape,
      num_couplings=p.num_couplings,
      hidden_units=p.hidden_units,
      seed=settings.seed,
    )
    optimizer = keras.optimizers.Adam(p.learning_rate)

  def loss_fn(m, x, ctx):
    terms = m.loss_terms(x, training=True)
    return harness.LossOutput(
      per_example=terms.nll, metrics={"bits_per_dim": tf.reduce_mean(terms.bits_per_dim)}
    )

  trained = train(
    "flow",
    model=model,
    optimizer=optimizer,
    loss_fn=loss_fn,
    train_images=train_images,
    config=settings.train["flow"],
    strategy=strategy,
    hparams=dataclasses.asdict(p),
    epoch_end_fn=image_summaries(lambda n: model.sample(n)),
  )
  # Held-out bits/dim: one dequantization draw per image (fixed seed), + 8 bits for 8-bit data.
  run_dir, num_dims = settings.train["flow"].logdir, int(np.prod(image_shape))
  key = dict(
    step=trained["train_steps"], images=len(eval_images), dequantize_seed=settings.seed + 7
  )
  stored = stored_per_example(run_dir, key)
  if stored is None:
    x = distributions.uniform_dequantize(eval_images, seed=settings.seed + 7).numpy()
    log_prob = tf.function(lambda b: model.log_prob(b).log_prob)
    log_px = np.concatenate([log_prob(tf.constant(b)).numpy() for b in batches(x)])
    write_per_example(
      run_dir,
      strategy=strategy,
      log_likelihood=log_px,
      key=key,
      num_dims=num_dims,
      offset_bits=8.0,
      what="exact flow log-density of each dequantized held-out image in [0, 1]^D",
    )
  else:
    log_px = stored["log_likelihood"]
  bpd = float(
    likelihood.bits_per_dim(-np.mean(log_px, dtype=np.float64), num_dims, offset_bits=8.0)
  )
  return {"flow": lambda n, seed: model.sample(n, seed=seed)}, dict(
    trained, bits_per_dim=bpd, bits_per_dim_kind="exact flow NLL of dequantized data, +8"
  )


def run_vae(p: VAEPreset, *, settings: Settings, strategy, train_images, eval_images):
  image_shape = tuple(train_images.shape[1:])
  num_dims = int(np.prod(image_shape))
  with strategy.scope():
    model = models.FlowPriorVAE(
      image_shape=image_shape,
      latent_dim=p.latent_dim,
      hidden_units=p.hidden_units,
      prior_couplings=p.prior_couplings,
      prior_hidden_units=p.prior_hidden_units,
      seed=settings.seed,
    )
    optimizer = keras.optimizers.Adam(p.learning_rate)

  def loss_fn(m, x, ctx):
    lv = m.loss_terms(x, training=True)
    return harness.LossOutput(
      per_example=lv.negative_elbo,
      metrics={"reconstruction": tf.reduce_mean(lv.reconstruction), "kl": tf.reduce_mean(lv.kl)},
    )

  trained = train(
    "vae",
    model=model,
    optimizer=optimizer,
    loss_fn=loss_fn,
    train_images=train_images,
    config=settings.train["vae"],
    strategy=strategy,
    hparams=dataclasses.asdict(p),
    epoch_end_fn=image_summaries(lambda n: model.sample(n)),
  )
  run_dir = settings.train["vae"].logdir
  key = dict(
    step=trained["train_steps"],
    images=len(eval_images),
    dequantize_seed=settings.seed + 8,
    num_samples=p.iw_samples,
  )
  stored = stored_per_example(run_dir, key)
  if stored is None:
    x = distributions.uniform_dequantize(eval_images, seed=settings.seed + 8).numpy()
    summary = likelihood.evaluate_log_likelihood(
      lambda xb, k: model.log_weights(xb, k),
      batches(x.reshape(len(x), num_dims)),
      num_samples=p.iw_samples,
      num_dims=num_dims,
      chunk_size=min(p.iw_samples, 50),
      progress=False,
    )
    log_px = summary.per_example_log_likelihood
    write_per_example(
      run_dir,
      strategy=strategy,
      log_likelihood=log_px,
      elbo=summary.per_example_elbo,
      key=key,
      num_dims=num_dims,
      offset_bits=8.0,
      what=f"IWAE (K={p.iw_samples}, log_likelihood) and ELBO (elbo) of each "
      "dequantized held-out image in [0, 1]^D",
    )
  else:
    log_px = stored["log_likelihood"]
  bpd = float(
    likelihood.bits_per_dim(-np.mean(log_px, dtype=np.float64), num_dims, offset_bits=8.0)
  )
  return {"vae": lambda n, seed: model.sample(n, seed=seed)}, dict(
    trained, bits_per_dim=bpd, bits_per_dim_kind=f"IWAE (K={p.iw_samples}) of dequantized data, +8"
  )


def run_ddpm(p: DDPMPreset, *, settings: Settings, strategy, train_images, eval_images):
  gd = diffusion_lib.GaussianDiffusion(betas=BETA_SCHEDULES[p.beta_schedule](p.num_timesteps))
  with strategy.scope():
    model = models.DDPM(
      image_shape=tuple(train_images.shape[1:]),
      unet=p.unet,
      diffusion=gd,
      padded_size=p.padded_size,
      seed=settings.seed,
      dequantize=p.dequantize,
      random_flip=p.random_flip,
    )
    # Official: Adam (epsilon 1e-8), lr * min(step / warmup, 1), EMA of the weights.
    optimizer = optim.ddpm_adam(
      learning_rate=p.learning_rate, warmup_steps=p.warmup_steps, ema_decay=p.ema_decay
    )
  loss_fn = lambda m, x, ctx: harness.LossOutput(per_example=m.loss_terms(x, training=True).simple)
  ddim = settings.ddim.clamped(gd.num_timesteps)

  def sampler(kind):
    def fn(n, seed):
      with models.ema_weights(optimizer, model.trainable_variables):
        if kind == "ancestral":
          return model.sample(n, seed=seed)
        return model.sample_ddim(n, seed=seed, **ddim.sampler_kwargs())

    return fn

  trained = train(
    "ddpm",
    model=model,
    optimizer=optimizer,
    loss_fn=loss_fn,
    train_images=train_images,
    config=settings.train["ddpm"],
    strategy=strategy,
    hparams=dataclasses.asdict(p),
    epoch_end_fn=image_summaries(lambda n: sampler("ddim")(n, seed=0)),
    grad_transform=clip_by_global_norm(p.grad_clip_norm),
  )
  n_vlb = min(p.vlb_examples or len(eval_images), len(eval_images))
  run_dir = settings.train["ddpm"].logdir
  num_dims = int(np.prod(eval_images.shape[1:]))
  vlb = {}
  for clip in [True, False] if settings.vlb_unclipped else [True]:
    key = {"step": trained["train_steps"], "num_timesteps": gd.num_timesteps}
    nats = vlb_nats(
      model,
      optimizer,
      eval_images[:n_vlb],
      clip_denoised=clip,
      seed=settings.seed,
      cache_path=os.path.join(run_dir, f"vlb_clip{int(clip)}.npz"),
      cache_key=key,
      writer=harness.is_chief(strategy),
    )
    write_per_example(
      run_dir if clip else os.path.join(run_dir, UNCLIPPED_DIR),
      strategy=strategy,
      log_likelihood=-nats,
      key=dict(key, clip_denoised=clip, seed=settings.seed, images=n_vlb),
      num_dims=num_dims,
      offset_bits=0.0,
      what=f"-VLB (all {gd.num_timesteps} terms, x0_hat "
      f"{'clipped' if clip else 'not clipped'}, EMA weights) of each held-out image: a lower "
      "bound on log p(image | padding)",
    )
    vlb[clip] = bits_mean_and_se(nats, num_dims)
  bpd, se = vlb[True]
  info = dict(
    trained,
    bits_per_dim=bpd,
    bits_per_dim_se=se,
    vlb_images=n_vlb,
    bits_per_dim_kind=(
      f"VLB (all {gd.num_timesteps} terms, x0_hat clipped as official, EMA "
      f"weights) over {n_vlb} held-out images"
      f"{'; also without clipping x0_hat' if False in vlb else ''}; upper "
      "bound per real pixel"
    ),
  )
  if False in vlb:
    info.update(bits_per_dim_unclipped=vlb[False][0], bits_per_dim_unclipped_se=vlb[False][1])
  # Named by the steps actually taken (uniform spacing can take more than --ddim_steps).
  return {
    f"ddpm_ancestral{gd.num_timesteps}": sampler("ancestral"),
    f"ddpm_ddim{ddim.network_calls(gd)}_eta{ddim.eta:g}": sampler("ddim"),
  }, info


def vlb_bits_per_dim(
  model,
  optimizer,
  images,
  *,
  clip_denoised: bool,
  seed: int,
  progress: bool = True,
  cache_path: str | None = None,
  cache_key: dict | None = None,
) -> tuple[float, float]:
  """(mean, standard error over images) of the DDPM bound in bits per real pixel (`vlb_nats`,
  `bits_mean_and_se`)."""
  nats = vlb_nats(
    model,
    optimizer,
    images,
    clip_denoised=clip_denoised,
    seed=seed,
    progress=progress,
    cache_path=cache_path,
    cache_key=cache_key,
  )
  return bits_mean_and_se(nats, int(np.prod(images.shape[1:])))


def bits_mean_and_se(nats, num_dims: int) -> tuple[float, float]:
  """(mean, standard error over images) in bits per dimension of per-image bounds in nats."""
  bits = np.asarray(likelihood.bits_per_dim(np.asarray(nats, np.float64), num_dims), np.float64)
  se = float(bits.std(ddof=1) / np.sqrt(len(bits))) if len(bits) > 1 else float("nan")
  return float(bits.mean()), se


def vlb_nats(
  model,
  optimizer,
  images,
  *,
  clip_denoised: bool,
  seed: int,
  progress: bool = True,
  cache_path: str | None = None,
  cache_key: dict | None = None,
  writer: bool = True,
) -> np.ndarray:
  """The DDPM bound of every image in nats [N], EMA weights; in bits per real pixel:

      bits/dim = L_vlb / (D ln 2),  SE = std_images(bits/dim) / sqrt(N),  D = H W C real pixels.

  The bound is over the padded image; the padding is known, so it also bounds
  -log p(H x W crop | padding): per real pixel. No +8 offset: the decoder is discrete
  over 8-bit bins. Each batch of EVAL_BATCH images draws its own x_t noise, from `seed` and the
  batch's index only. `progress`: a bar over the images (each batch runs all T terms: minutes
  per batch on a CPU).

  `cache_path`: the per-image bounds (nats) of the finished batches are written there after
  every batch, under `cache_key` (JSON-able: checkpoint step, clipping, seed, images...), and kept
  when the bound is complete (`evaluation.resume_cache.BatchCache` with keep=True). A call with the
  same key computes only the batches still missing, so an interrupted bound resumes and rerunning
  a finished run (to rewrite its page) costs nothing; since a batch's noise depends only on its
  index, the numbers equal an uninterrupted call's. A file with another key is replaced; only a
  `writer` writes the file (under several workers: the chief; the others read it). With a
  cache, SIGTERM / SIGINT finish and save the batch in hand, then raise
  `common_tf.preemption.Preempted` (the script prints one line and exits with 128 + the signal).
  """
  key = dict(
    cache_key or {},
    clip_denoised=bool(clip_denoised),
    seed=seed,
    num_images=len(images),
    eval_batch=EVAL_BATCH,
  )
  cache = resume_cache.BatchCache(
    cache_path,
    key=key,
    keep=True,
    what="the DDPM bound",
    examples_per_batch=EVAL_BATCH,
    writer=writer,
  )
  todo = batches(images)
  done = cache.restore(len(todo))
  bar = (
    keras.utils.Progbar(len(images), unit_name="image") if progress and done < len(todo) else None
  )
  with models.ema_weights(optimizer, model.trainable_variables), cache.stop_requests() as stop:
    for i, b in enumerate(todo):
      if i < done:
        continue
      cache.stop_if_requested(stop, i)
      start = time.perf_counter()
      nats = model.variational_bound(
        b, seed=seed * 100_003 + i * EVAL_BATCH, clip_denoised=clip_denoised
      ).total.numpy()
      cache.add(seconds=time.perf_counter() - start, nats=nats)
      if bar is not None:
        bar.update(min((i + 1) * EVAL_BATCH, len(images)))
  cache.complete()
  return cache.array("nats")


RUNNERS = {"flow": run_flow, "vae": run_vae, "ddpm": run_ddpm}


# ============================================================================= FID / KID


def inception_or_reason(path: str | None, *, download: bool, strategy=None):
  """(network, None) or (None, why FID/KID are unavailable). With a `strategy` the network is
  built in its scope (its variables on every replica's device: `fid_kid` splits each feature
  batch over the replicas)."""
  scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
  try:
    with scope:
      return networks.inception_network(path, download=download), None
  except networks.WeightsUnavailableError as e:
    return None, f"unavailable (no Inception weights: {str(e).split('. ')[0]})"


def generate(sample_fn, total: int, *, seed: int, batch: int = 500) -> np.ndarray:
  chunks = []
  for i, start in enumerate(range(0, total, batch)):
    chunks.append(np.asarray(sample_fn(min(batch, total - start), seed=seed * 1000 + i)))
  return np.concatenate(chunks)


def fid_kid(network, generated, reference, *, seed: int = 0, strategy=None) -> dict:
  """FID and KID (mean, std) of `generated` against `reference` (all images, and the first 256 of
  each), every value as `results.metric(value, protocol record of the generated images)`. Under a
  `strategy` of several replicas or workers each takes its share of every feature batch and the
  features are gathered (`features.extract`): the values of one process."""
  feats_g, feats_r, record = features.extract_samples_and_reference(
    network,
    generated,
    reference,
    label="inception-2015",
    feature="pool_3",
    progress=False,
    strategy=strategy,
  )
  small = dict(record, image_count=min(SMALL_PROTOCOL, len(feats_g)))
  small_g, small_r = feats_g[:SMALL_PROTOCOL], feats_r[:SMALL_PROTOCOL]
  kid_all = kid.kernel_inception_distance(feats_r, feats_g, seed=seed)
  kid_small = kid.kernel_inception_distance(small_r, small_g, subset_size=SMALL_PROTOCOL, seed=seed)
  return {
    "fid": results.metric(
      fid.frechet_distance(*fid.feature_statistics(feats_g), *fid.feature_statistics(feats_r)),
      record,
    ),
    "kid": results.metric(kid_all[0], record),
    "kid_std": results.metric(kid_all[1], record),
    "fid_256": results.metric(
      fid.frechet_distance(*fid.feature_statistics(small_g), *fid.feature_statistics(small_r)),
      small,
    ),
    "kid_256": results.metric(kid_small[0], small),
    "kid_256_std": results.metric(kid_small[1], small),
  }


# ============================================================================= the run and its page


def page_path(settings: Settings) -> str:
  return os.path.join(settings.results_dir, "sample_quality.md")


def run(settings: Settings, *, strategy) -> list[dict]:
  """Trains/evaluates `settings.models`, writes results.json and the results page (its bits/dim
  from the models' per-image values, published beside it); returns the rows. Under several
  workers only the chief writes files (the others return their rows)."""
  chief = harness.is_chief(strategy)
  keras.utils.set_random_seed(settings.seed)  # weight initialisation
  preset = settings.preset
  train_images, eval_images = load_images(preset, settings.data_dir)
  network, unavailable = inception_or_reason(
    settings.inception_path, download=settings.download_inception, strategy=strategy
  )
  rows, grids = [], {}
  for name in settings.models:
    logdir = settings.train[name].logdir
    samplers, info = RUNNERS[name](
      getattr(preset, name),
      settings=settings,
      strategy=strategy,
      train_images=train_images,
      eval_images=eval_images,
    )
    for sampler_name, sample_fn in samplers.items():
      start = time.perf_counter()
      grid = np.asarray(sample_fn(settings.grid_samples, seed=settings.seed))
      grid_seconds = time.perf_counter() - start
      png = os.path.join(settings.results_dir, f"sample_quality_{sampler_name}.png")
      grids[png] = grid  # written with the page, so an interrupted run leaves results/ as it was
      row = dict(
        info, model=name, sampler=sampler_name, grid=png, grid_seconds=round(grid_seconds, 1)
      )
      samples_path = os.path.join(logdir, f"samples_{sampler_name}.npz")
      if network is None:
        row.update(fid=unavailable, kid=unavailable, fid_256=unavailable, kid_256=unavailable)
        if chief:
          np.savez_compressed(samples_path, samples=grid)
      else:
        generated = generate(sample_fn, max(preset.fid_samples, SMALL_PROTOCOL), seed=settings.seed)
        if chief:
          np.savez_compressed(samples_path, samples=generated)
        row.update(fid_kid(network, generated, eval_images, seed=settings.seed, strategy=strategy))
      print(f"[{sampler_name}] {row}", file=sys.stderr)
      rows.append(row)
  if not chief:
    return rows
  for png, grid in grids.items():
    save_grid(png, grid)
  rows = with_per_example_numbers(
    rows,
    page=page_path(settings),
    run_dirs={name: settings.train[name].logdir for name in settings.models},
  )
  results.write_json(os.path.join(settings.logdir, "results.json"), rows)
  write_page(
    rows,
    settings=settings,
    num_eval=len(eval_images),
    num_dims=int(np.prod(eval_images.shape[1:])),
    fid_unavailable=unavailable,
  )
  return rows


def write_page(
  rows, *, settings: Settings, num_eval: int, num_dims: int, fid_unavailable: str | None
):
  """The results page; without Inception weights the FID/KID columns are left out and the page
  says why once."""
  preset = settings.preset
  fid_columns = [
    ("fid", f"FID ({preset.fid_samples} gen. vs {num_eval} eval.)"),
    ("kid", "KID mean"),
    ("kid_std", "KID std"),
    ("fid_256", "FID 256 vs 256 (seed protocol)"),
    ("kid_256", "KID 256 vs 256"),
    ("kid_256_std", "KID 256 std"),
  ]
  unclipped = (
    [
      ("bits_per_dim_unclipped", "bits/dim, x0_hat not clipped"),
      ("bits_per_dim_unclipped_se", "± s.e. (not clipped)"),
    ]
    if any("bits_per_dim_unclipped" in r for r in rows)
    else []
  )
  columns = (
    [
      ("model", "model"),
      ("sampler", "sampler"),
      ("bits_per_dim", "bits/dim"),
      ("bits_per_dim_se", "± s.e."),
      ("bits_per_dim_kind", "bits/dim: what"),
    ]
    + unclipped
    + [("per_example_cell", "per-image values")]
    + (fid_columns if fid_unavailable is None else [])
    + [
      ("train_steps", "train steps"),
      ("train_epochs", "epochs"),
      ("train_seconds", "train s"),
      ("grid_seconds", f"s for {settings.grid_samples} samples"),
      ("grid", "sample grid"),
    ]
  )
  shown = [
    dict(
      r,
      per_example_cell=(
        f"[{r['per_example']}]({r['per_example']})"
        if r.get("per_example")
        else "per-image values not kept"
        if r.get("bits_per_dim") is not None
        else None
      ),
    )
    for r in rows
  ]
  table = results.markdown_table(shown, columns, digits=3)
  ddpm = preset.ddpm
  notes = f"""
Data: {preset.data}. Pixels are 8-bit values; flow and VAE model uniformly dequantized data
(x = (k + u) / 256), so their bits/dim are NLL / (D ln 2) + 8 with D = {num_dims} pixels (an
upper bound on the discrete NLL). The DDPM number is its variational bound with the discretized Gaussian decoder (no offset),
over the padded {ddpm.padded_size}x{ddpm.padded_size} image and divided by the D real pixels: the
padding (-1) is fixed, so this bounds -log p(image | padding). The DDPM is sampled with its EMA
weights, both by the {ddpm.num_timesteps}-step ancestral sampler (one compiled XLA while loop)
and by DDIM ({dataclasses.asdict(settings.ddim)}).
Per-image values: each model's held-out log-likelihood of every evaluation image (nats: the
flow's exact log-density and the VAE's IWAE of the dequantized image, the DDPM's -VLB; the file's
description says which, with D and the bits/dim offset) is kept beside this page in
`{os.path.splitext(os.path.basename(page_path(settings)))[0]}/<model>.npz`; the bits/dim and
their standard errors over the images (`± s.e.`) are computed from those arrays.
Settings: flow {dataclasses.asdict(preset.flow)}; VAE {dataclasses.asdict(preset.vae)};
DDPM {dataclasses.asdict(ddpm)}.
Training: `train s` is the training wall time summed over resumed sessions; CPU: {host.cpu_model()};
code commit: {harness.code_commit() or "unknown"}.
"""
  if fid_unavailable is not None:
    notes += (
      f"\nFID/KID: {fid_unavailable}; none was computed and the table has no FID/KID "
      "columns. Rerun with --inception_path to fill them in.\n"
    )
  results.write_markdown(
    page_path(settings),
    title=f"Sample quality on MNIST ({settings.preset_name} preset)",
    command=settings.command,
    table=table,
    notes=notes,
  )
