"""Maintainer check: the official NVlabs/NVAE `AutoEncoder` against `nvae_tf.official`.

Given a user's checkout of https://github.com/NVlabs/NVAE (never vendored here), this builds the
official model on the CPU with torch, saves its `state_dict()` in the official `checkpoint.pt`
format, loads that file with `nvae_tf.official.load_checkpoint`, feeds both models the same binary
images and the same posterior noise, and prints the largest differences of the decoder logits, the
per-group KL, log q and log p. With `--dump_keys` it also writes the official state-dict key names
and shapes as JSON (how tests/nvae_tf/official_state_dict_*.json were produced).

    python tools/check_official_nvae.py --official_path /path/to/NVAE --config tiny
    python tools/check_official_nvae.py --official_path /path/to/NVAE --config mnist \
        --dump_keys tests/nvae_tf/official_state_dict_mnist.json

The official code is written for CUDA; only this script patches it, at run time and on the CPU:
`torch.Tensor.cuda` returns the tensor itself, `tensorboardX` (imported by utils.py, unused here)
is a stub when missing, and `SyncBatchNormSwish.forward` (which refuses CPU tensors) is replaced by
batch norm in eval mode followed by swish, the same computation it falls back to on one process.
Posterior noise is drawn here and given to both models (`Normal.sample` of the official code and
`NVAE._noise` of ours are replaced). Needs torch (the `reference` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# `tiny`: tests/nvae_tf/official_tiny.py ARGS. `mnist`: the MNIST command of the official README
# (train.py --dataset mnist --num_latent_scales 2 --num_groups_per_scale 10 ... --num_nf 0
# --ada_groups --use_se --res_dist), with train.py's defaults for the arguments it does not give.
MNIST_README_ARGS = dict(
  dataset="mnist",
  arch_instance="res_mbconv",
  num_channels_enc=32,
  num_channels_dec=32,
  num_preprocess_blocks=2,
  num_preprocess_cells=3,
  num_postprocess_blocks=2,
  num_postprocess_cells=3,
  num_latent_scales=2,
  num_groups_per_scale=10,
  ada_groups=True,
  min_groups_per_scale=1,
  num_latent_per_group=20,
  num_cell_per_cond_enc=2,
  num_cell_per_cond_dec=2,
  num_nf=0,
  use_se=True,
  res_dist=True,
  weight_decay_norm=1e-2,
  num_x_bits=8,
  num_mixture_dec=10,
  batch_size=200,
  epochs=400,
)


def config_args(name: str) -> dict:
  if name == "tiny":
    from tests.nvae_tf import official_tiny

    return dict(official_tiny.ARGS)
  if name == "mnist":
    return dict(MNIST_README_ARGS)
  raise ValueError(f"unknown --config {name!r} (tiny or mnist)")


def import_official(path: str):
  """Imports the official model.py / utils.py / distributions.py from `path`, patched for the CPU."""
  import torch
  import torch.nn.functional as F

  if not os.path.isfile(os.path.join(path, "model.py")):
    raise SystemExit(f"error: no NVlabs/NVAE model.py in {path}")
  sys.path.insert(0, os.path.abspath(path))
  try:
    import tensorboardX  # noqa: F401  # only whether it is installed (else the stub below)
  except ImportError:
    stub = types.ModuleType("tensorboardX")
    stub.SummaryWriter = object
    sys.modules["tensorboardX"] = stub
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  import distributions
  import model as official_model
  import utils
  from thirdparty import inplaced_sync_batchnorm

  def bn_swish_cpu(self, x):
    assert not self.training, "only eval mode is patched for the CPU"
    out = F.batch_norm(
      x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
    )
    return out * torch.sigmoid(out)

  inplaced_sync_batchnorm.SyncBatchNormSwish.forward = bn_swish_cpu
  return types.SimpleNamespace(model=official_model, utils=utils, distributions=distributions)


def build_official(official, args: dict, *, seed: int):
  """The official AutoEncoder as evaluate.py builds it, with random BN statistics and affines."""
  import torch

  torch.manual_seed(seed)
  namespace = argparse.Namespace(**args)
  model = official.model.AutoEncoder(
    namespace, None, official.utils.get_arch_cells(namespace.arch_instance)
  )
  with torch.no_grad():  # BN at init is the identity in eval mode: make it count
    for name, buf in model.state_dict().items():
      if name.endswith(("running_mean", "bias")) and buf.dim() == 1:
        buf.copy_(0.1 * torch.randn_like(buf))
      elif name.endswith("running_var"):
        buf.copy_(torch.empty_like(buf).uniform_(0.5, 1.5))
  return model.eval(), namespace


def official_commit(path: str) -> str:
  try:
    return subprocess.run(
      ["git", "-C", path, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown (not a git checkout)"


def write_key_shapes(path: str, state_dict, *, source: str, args: dict) -> None:
  """{"source", "args", "state_dict": {key: shape}} in state_dict() order, one key a line."""
  lines = [f"  {json.dumps(k)}: {json.dumps(list(v.shape))}" for k, v in state_dict.items()]
  with open(path, "w") as f:
    f.write(
      '{"source": '
      + json.dumps(source)
      + ',\n"args": '
      + json.dumps(args, sort_keys=True)
      + ',\n"state_dict": {\n'
      + ",\n".join(lines)
      + "\n}}\n"
    )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--official_path", required=True, help="a checkout of NVlabs/NVAE")
  parser.add_argument(
    "--config",
    default="tiny",
    choices=("tiny", "mnist"),
    help="tiny: tests/nvae_tf/official_tiny.py; mnist: the README MNIST command",
  )
  parser.add_argument("--batch", type=int, default=4, help="images in the compared forward pass")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--dump_keys",
    default=None,
    help="write the official state-dict key names and shapes to this JSON file",
  )
  flags = parser.parse_args(argv)

  import tensorflow as tf
  import torch

  from nvae_tf import official as ours

  official = import_official(flags.official_path)
  args = config_args(flags.config)
  model, namespace = build_official(official, args, seed=flags.seed)
  state = model.state_dict()
  aliases = [k for k in state if k.endswith(".weight_normalized")]
  n_params = sum(p.numel() for p in model.parameters())
  print(
    f"official AutoEncoder ({flags.config}): {len(state)} state-dict keys "
    f"({len(aliases)} weight_normalized aliases), {n_params:,} parameters"
  )
  if flags.dump_keys:
    write_key_shapes(
      flags.dump_keys,
      state,
      source=(
        f"NVlabs/NVAE@{official_commit(flags.official_path)} AutoEncoder(args, None, "
        f"get_arch_cells(args.arch_instance)).state_dict() on the CPU with torch {torch.__version__}, "
        f"written by tools/check_official_nvae.py --config {flags.config} --dump_keys"
      ),
      args=args,
    )
    print(f"wrote {flags.dump_keys}")

  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "checkpoint.pt")
    torch.save({"epoch": 0, "global_step": 0, "state_dict": state, "args": namespace}, path)
    mine, _ = ours.load_checkpoint(path)

  rng = np.random.RandomState(flags.seed)
  x = (rng.uniform(size=(flags.batch, 28, 28, 1)) < 0.3).astype(np.float32)
  x32 = np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)])  # official mnist transform: Pad(2)

  noises = []  # posterior eps in the official sampling order, NCHW

  def sample(self):
    eps = torch.randn(self.mu.shape, generator=generator)
    noises.append(eps.numpy())
    return eps * self.sigma + self.mu, eps

  generator = torch.Generator().manual_seed(flags.seed)
  official.distributions.Normal.sample = sample
  with torch.no_grad():
    logits, log_q, log_p, kl_all, _ = model(torch.from_numpy(np.transpose(x32, (0, 3, 1, 2))))
  queue = [np.transpose(n, (0, 2, 3, 1)) for n in noises]
  mine._noise = lambda like: tf.constant(queue.pop(0))
  out = mine(tf.constant(x), training=False)
  assert not queue, "our model drew fewer noises than the official one"

  diffs = {
    "decoder logits": np.abs(np.transpose(logits.numpy(), (0, 2, 3, 1)) - out.logits.numpy()),
    "per-group KL": np.abs(torch.stack(kl_all, 1).numpy() - out.kl.numpy()),
    "log q": np.abs(log_q.numpy() - out.log_q.numpy()),
    "log p": np.abs(log_p.numpy() - out.log_p.numpy()),
  }
  magnitudes = {
    "decoder logits": logits.abs().max(),
    "per-group KL": torch.stack(kl_all).abs().max(),
    "log q": log_q.abs().max(),
    "log p": log_p.abs().max(),
  }
  print(
    f"forward pass on {flags.batch} random binary images, {len(kl_all)} groups, "
    f"{sum(int(np.prod(n.shape[1:])) for n in noises)} latent elements per image:"
  )
  for name, d in diffs.items():
    print(
      f"  max |official - ours| {name}: {d.max():.3g} (max |official| "
      f"{float(magnitudes[name]):.4g})"
    )


if __name__ == "__main__":
  main()
