"""Inception-2015 feature extraction (FID's pool_3), ours against pytorch-fid's `InceptionV3`
with the same random weights: images/s and CPU time per batch.

  python bench/bench_inception_peer.py [--cores=0] [--threads=1] [--batch=50] [--sizes=299,28]

Ours: `evaluation.features.extract` (its defaults: the TTUR protocol, resize inside the compiled
XLA step) on our Keras network of `evaluation.inception`, its weights converted from a random
state dict in pytorch-fid's `.pth` layout (`tests/reference/comparisons.random_inception_state_dict`,
as the reference tests make it; no real weights are needed: speed does not depend on their values).
Peer: pytorch-fid's `InceptionV3([3])` (block 3 = pool_3, 2048 features; its FID weights file
replaced by that same state dict, as `comparisons.pytorch_fid_with_weights` does) called as its
`get_activations` does: uint8 -> float x / 255, its own bilinear resize to 299 and 2x - 1 scaling,
under no_grad. Sizes below 299 are upsampled by each side, as users run them (28: grey MNIST-sized
images; pytorch-fid gets them replicated to RGB, ours takes them as [B, 28, 28, 1]). Each side in its
own pinned process, alternating (bench/peer.py). Without torch or pytorch-fid only our times print.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def images(batch: int, size: int):
  import numpy as np

  channels = 1 if size <= 28 else 3  # 28: grey (MNIST), otherwise RGB
  return np.random.default_rng(size).integers(0, 256, (batch, size, size, channels), dtype=np.uint8)


def write_weights(directory: str) -> None:
  """The random state dict of the reference tests as a pytorch-fid `.pth` (for the peer) and as
  numpy arrays (`.npz`, for ours: its process then never imports torch). Run in a process of its
  own (it imports TensorFlow and torch)."""
  sys.path.insert(0, ROOT)
  import numpy as np
  import torch

  from tests.reference import comparisons

  state = comparisons.write_inception_pth(os.path.join(directory, "inception.pth"), seed=0)
  np.savez(
    os.path.join(directory, "inception.npz"),
    **{k: v.numpy() for k, v in state.items() if v.dtype == torch.float32},
  )


def ours(batch: int, size: int, directory: str):
  sys.path.insert(0, ROOT)
  import numpy as np

  from evaluation import features, inception

  with np.load(os.path.join(directory, "inception.npz")) as data:
    weights, width_divisor = inception.convert_torch_state_dict(dict(data))
  network = inception.build_inception_2015(width_divisor=width_divisor)
  inception.assign_weights(network, weights)
  x = images(batch, size)
  return lambda: features.extract(network, x, batch_size=batch, progress=False)["pool_3"]


def pytorch_fid(batch: int, size: int, directory: str, threads: int):
  import numpy as np
  import pytorch_fid.inception as pf
  import torch

  torch.set_num_threads(threads)
  original = pf.load_state_dict_from_url  # as comparisons.pytorch_fid_with_weights (no download)
  pf.load_state_dict_from_url = lambda url, progress=True: torch.load(
    os.path.join(directory, "inception.pth"), weights_only=True
  )
  try:
    model = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
  finally:
    pf.load_state_dict_from_url = original
  x = images(batch, size)
  x = np.ascontiguousarray(np.broadcast_to(x, x.shape[:3] + (3,)).transpose(0, 3, 1, 2))

  @torch.no_grad()
  def step():  # pytorch_fid.fid_score.get_activations, one batch
    return model(torch.from_numpy(x).float() / 255.0)[0].squeeze(3).squeeze(2).numpy()

  return step


def have_peer() -> bool:
  return all(
    importlib.util.find_spec(m) is not None for m in ("torch", "torchvision", "pytorch_fid")
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  peer.add_timing_flags(parser, steps=1, rounds=3, warmup=1)  # steps: batches of --batch images
  parser.add_argument(
    "--batch", type=int, default=50, help="images per batch (pytorch-fid's default --batch-size)"
  )
  parser.add_argument("--sizes", default="299,28", help="image sides; 28 is grey, others RGB")
  args = parser.parse_args()
  cores = peer.cores_from(args)
  with_peer = have_peer()
  print(
    f"Inception-2015 pool_3, batch {args.batch}, random weights, {args.rounds} rounds of "
    f"{args.steps} batches per side after {args.warmup} warm-up batches, each side in its own "
    "process" + ("" if with_peer else "; torch / pytorch-fid missing: ours only")
  )
  with tempfile.TemporaryDirectory() as directory:
    if with_peer:
      writer = multiprocessing.get_context("spawn").Process(target=write_weights, args=(directory,))
      writer.start()
      writer.join()
      if writer.exitcode:
        raise SystemExit(f"writing the random weights failed (exit code {writer.exitcode})")
    else:  # our network with its own random initial weights: the same speed
      directory = None
    for size in [int(s) for s in args.sizes.split(",")]:
      shape = images(1, size).shape[1:]
      sides = (
        {"ours": (ours, (args.batch, size, directory))}
        if directory
        else {"ours": (ours_random, (args.batch, size))}
      )
      if with_peer:
        sides["pytorch-fid"] = (pytorch_fid, (args.batch, size, directory, args.threads))
      timings = peer.alternate(
        sides,
        cores=cores,
        threads=args.threads,
        steps=args.steps,
        rounds=args.rounds,
        warmup=args.warmup,
      )
      title = f"Inception-2015 pool_3 of {args.batch} images {'x'.join(map(str, shape))} per batch"
      if with_peer:
        print(peer.report(title, timings, ours="ours", peer="pytorch-fid"), flush=True)
      for name, t in timings.items():
        wall, cpu = t.median_ms()
        print(
          f"  {name}: {1e3 * args.batch / wall:.1f} images/s (wall), "
          f"{1e3 * args.batch / cpu:.1f} images per CPU second, CPU {cpu / 1e3:.2f} s per batch",
          flush=True,
        )


def ours_random(batch: int, size: int):
  """Ours without a weights file (no torch here): the network's initial random weights."""
  sys.path.insert(0, ROOT)
  from evaluation import features, inception

  network = inception.build_inception_2015()
  x = images(batch, size)
  return lambda: features.extract(network, x, batch_size=batch, progress=False)["pool_3"]


if __name__ == "__main__":
  main()
