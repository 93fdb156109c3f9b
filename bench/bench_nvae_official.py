"""NVAE training-step time at the cpu preset (batch 100, binary 28x28 images), ours against the
official PyTorch code (NVlabs/NVAE) with the same architecture and parameter count.

  python bench/bench_nvae_official.py --official_path=PATH/TO/NVAE [--cores=0] [--threads=1]
  GENMODELS_NVAE_OFFICIAL=PATH/TO/NVAE make bench

Ours is the harness's compiled train step as `experiments.nvae_train` builds it (`build`: the NVAE
of the cpu preset and CoupledAdamax with the warm-up cosine schedule; `make_loss_fn`: recon + KL
with the per-step warm-up and KL balancing, spectral regularisation and the BN loss), called on a
fixed batch. The peer is the official `AutoEncoder` with the same architecture (the README's MNIST
command with the cpu preset's sizes), built from a checkout the user gives (never vendored) with
tools/check_official_nvae.py's CPU patches, and stepped as its train.py `train` does at fp32:
lr warm-up, zero_grad, forward, `kl_coeff`, `reconstruction_loss`, `kl_balancer` with the
'square' alpha, `spectral_norm_parallel()` and `batchnorm_loss()` times `--weight_decay_norm`,
backward, the README's `--fast_adamax` (thirdparty Adamax, weight decay 3e-4, eps 1e-3); no
gradient clipping (train.py has none). train.py's `GradScaler` and `autocast` are CUDA's and are off
on a CPU, so its step there is this fp32 one. Two more run-time patches, for training on the CPU:
`SyncBatchNormSwish.forward` runs the fallback it takes on one process (F.batch_norm in training mode
then swish), and `neural_operations.SYNC_BN` is False (its own switch to nn.BatchNorm2d, the same
computation on one process). Each side in its own pinned process, alternating (bench/peer.py);
without --official_path only our times print.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = "cpu"
BATCH = 100  # the cpu preset's batch
STEPS_PER_EPOCH = 500  # the cpu preset: 50k images / 100
EPOCHS = 16


def batch():
  import numpy as np

  return (np.random.RandomState(0).uniform(size=(BATCH, 28, 28, 1)) < 0.2).astype(np.float32)


def ours(threads: int):
  """A no-argument function running one of our training steps (experiments.nvae_train's)."""
  del threads  # TensorFlow's: set by peer.pin through the environment
  sys.path.insert(0, ROOT)
  import tempfile

  import tensorflow as tf

  from experiments import harness, nvae_train

  images = batch()
  preset = nvae_train.PRESETS[PRESET]
  check_preset_args(preset.model)
  s = nvae_train.RunSettings(model=preset.model, preset=PRESET, warmup_epochs=preset.warmup_epochs)
  strategy = tf.distribute.get_strategy()
  model, optimizer = nvae_train.build(
    s,
    strategy=strategy,
    steps_per_epoch=STEPS_PER_EPOCH,
    epochs=EPOCHS,
    seed=0,
    image_shape=images.shape[1:],
  )
  print(f"    ours: {model.count_params():,} parameters", flush=True)
  trainer = harness.Trainer(
    config=harness.TrainConfig(
      logdir=tempfile.mkdtemp(), batch_size=BATCH, epochs=EPOCHS, progress=False
    ),
    strategy=strategy,
    model=model,
    optimizer=optimizer,
    loss_fn=nvae_train.make_loss_fn(s),
    train_data=tf.data.Dataset.from_tensor_slices(images),
  )
  x = tf.constant(images)
  return lambda: trainer._train_step(x)["loss"].numpy()


# The cpu preset's architecture (experiments.nvae_train.PRESETS["cpu"].model) in the official
# argument names; written out because the official side's process must not import TensorFlow
# (`ours` checks that the preset still matches).
CPU_PRESET_ARGS = dict(
  num_channels_enc=16,
  num_channels_dec=16,
  num_preprocess_blocks=2,
  num_preprocess_cells=1,
  num_postprocess_blocks=2,
  num_postprocess_cells=1,
  num_latent_scales=2,
  num_groups_per_scale=4,
  ada_groups=True,
  min_groups_per_scale=1,
  num_latent_per_group=20,
  num_cell_per_cond_enc=1,
  num_cell_per_cond_dec=1,
  use_se=True,
  num_nf=0,
  res_dist=True,
)


def check_preset_args(config) -> None:
  """Raises if the cpu preset's `NVAEConfig` differs from CPU_PRESET_ARGS."""
  names = {"num_nf": "num_flows", "res_dist": "residual_posterior"}
  differ = {
    k: (v, getattr(config, names.get(k, k)))
    for k, v in CPU_PRESET_ARGS.items()
    if getattr(config, names.get(k, k)) != v
  }
  if differ:
    raise SystemExit(f"bench_nvae_official.CPU_PRESET_ARGS is out of date: {differ}")


def official_args() -> dict:
  """The README's MNIST command with the cpu preset's sizes (and train.py's step settings)."""
  sys.path.insert(0, ROOT)
  from tools import check_official_nvae

  args = dict(check_official_nvae.MNIST_README_ARGS)
  args.update(
    CPU_PRESET_ARGS,
    batch_size=BATCH,
    epochs=EPOCHS,
    # train.py's defaults (the README command does not set them)
    learning_rate=1e-2,
    weight_decay=3e-4,
    warmup_epochs=5,
    kl_anneal_portion=0.3,
    kl_const_portion=1e-4,
    kl_const_coeff=1e-4,
    weight_decay_norm_anneal=False,
  )
  return args


def official(threads: int, path: str):
  """One step of the official train.py `train` loop (fp32, CPU) from a checkout at `path`."""
  sys.path.insert(0, ROOT)
  import numpy as np
  import torch
  import torch.nn.functional as F

  from tools import check_official_nvae

  torch.set_num_threads(threads)
  official = check_official_nvae.import_official(path)
  import neural_operations  # the checkout's, on sys.path now
  from thirdparty import inplaced_sync_batchnorm, swish
  from thirdparty.adamax import Adamax

  neural_operations.SYNC_BN = False

  def bn_swish_train(self, x):  # its one-process fallback, without the is_cuda refusal
    factor = self.momentum
    if self.training and self.track_running_stats:
      self.num_batches_tracked = self.num_batches_tracked + 1
    out = F.batch_norm(
      x,
      self.running_mean,
      self.running_var,
      self.weight,
      self.bias,
      self.training or not self.track_running_stats,
      factor,
      self.eps,
    )
    return swish.Swish.apply(out)

  inplaced_sync_batchnorm.SyncBatchNormSwish.forward = bn_swish_train

  args = official_args()
  model, namespace = check_official_nvae.build_official(official, args, seed=0)
  model.train()
  utils = official.utils
  print(
    f"    official NVlabs/NVAE@{check_official_nvae.official_commit(path)[:12]}: "
    f"{sum(p.numel() for p in model.parameters()):,} parameters",
    flush=True,
  )
  optimizer = Adamax(
    model.parameters(), namespace.learning_rate, weight_decay=namespace.weight_decay, eps=1e-3
  )  # --fast_adamax
  num_total_iter = STEPS_PER_EPOCH * namespace.epochs
  warmup_iters = STEPS_PER_EPOCH * namespace.warmup_epochs
  alpha_i = utils.kl_balancer_coeff(
    num_scales=model.num_latent_scales, groups_per_scale=model.groups_per_scale, fun="square"
  )
  x28 = np.transpose(batch(), (0, 3, 1, 2))
  x = utils.pre_process(
    torch.from_numpy(np.pad(x28, [(0, 0), (0, 0), (2, 2), (2, 2)])), namespace.num_x_bits
  )  # official mnist transform: Pad(2)
  global_step = [0]

  def step():
    if global_step[0] < warmup_iters:
      for group in optimizer.param_groups:
        group["lr"] = namespace.learning_rate * float(global_step[0]) / warmup_iters
    optimizer.zero_grad()
    logits, _, _, kl_all, _ = model(x)
    output = model.decoder_output(logits)
    kl_coeff = utils.kl_coeff(
      global_step[0],
      namespace.kl_anneal_portion * num_total_iter,
      namespace.kl_const_portion * num_total_iter,
      namespace.kl_const_coeff,
    )
    recon_loss = utils.reconstruction_loss(output, x, crop=model.crop_output)
    balanced_kl, _, _ = utils.kl_balancer(kl_all, kl_coeff, kl_balance=True, alpha_i=alpha_i)
    loss = torch.mean(recon_loss + balanced_kl)
    norm_loss = model.spectral_norm_parallel()
    bn_loss = model.batchnorm_loss()
    loss = loss + norm_loss * namespace.weight_decay_norm + bn_loss * namespace.weight_decay_norm
    loss.backward()
    optimizer.step()
    global_step[0] += 1
    return loss.item()

  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--official_path",
    default=os.environ.get("GENMODELS_NVAE_OFFICIAL"),
    help="a checkout of github.com/NVlabs/NVAE (needs torch; default "
    "$GENMODELS_NVAE_OFFICIAL); without it only our step is timed",
  )
  peer.add_timing_flags(parser, steps=3, rounds=4, warmup=2)
  args = parser.parse_args()
  cores = peer.cores_from(args)
  print(
    f"NVAE {PRESET} preset, batch {BATCH}, binary 28x28 images, float32, {args.rounds} rounds "
    f"of {args.steps} steps per side after {args.warmup} warm-up steps, each side in its own "
    "process"
  )
  sides = {"ours": (ours, (args.threads,))}
  if args.official_path:
    sides["official NVAE"] = (official, (args.threads, args.official_path))
  timings = peer.alternate(
    sides,
    cores=cores,
    threads=args.threads,
    steps=args.steps,
    rounds=args.rounds,
    warmup=args.warmup,
  )
  if args.official_path:
    print(
      peer.report(f"NVAE {PRESET}-preset train step", timings, ours="ours", peer="official NVAE"),
      flush=True,
    )
  else:
    wall, cpu = timings["ours"].median_ms()
    print(
      f"NVAE {PRESET}-preset train step: wall {wall:.1f} ms/step, CPU {cpu:.1f} ms/step", flush=True
    )


if __name__ == "__main__":
  main()
