"""The whole FID command-line path (image folders -> FID) of ours vs pytorch-fid, same folders,
one run.

    python bench/bench_fid_cli.py [--num_images 50] [--size 32] [--batch_size 50] [--repeats 2]

Needs the `reference` extra (torch, torchvision, pytorch-fid). Both sides get the same random
Inception-2015 weights (a random state dict in pytorch-fid's .pth layout; nothing is downloaded):
  * ours: `evaluation.fid.main(["--samples", A, "--reference", B, "--inception_path", PTH,
    "--nocache", ...])` -- parallel PNG decoding, prefetch, XLA feature step, statistics, FID;
  * pytorch-fid: `pytorch_fid.fid_score.calculate_fid_given_paths([A, B], ...)` (its command's
    function: DataLoader PNG decoding with `--workers` processes, torchvision-style InceptionV3
    port, statistics, FID), its weight-loading call pointed at the same local file.
Each side runs `--repeats` times in turn; the first run of each is "cold" (includes building /
converting the network and compiling), the best later run is "warm". Prints img/s (images of
both folders per second) and ours / pytorch-fid.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from evaluation import cli

cli.import_tensorflow_quietly()
from evaluation import fid, networks
from tests.reference import comparisons  # hides Triton, imports torch


def write_folder(path: pathlib.Path, count: int, size: int, seed: int) -> None:
  path.mkdir(parents=True)
  images = np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
  for i, image in enumerate(images):
    Image.fromarray(image).save(path / f"{i:05d}.png")


def ours(a, b, pth, batch_size, workers) -> float:
  argv = [
    "--samples",
    str(a),
    "--reference",
    str(b),
    "--inception_path",
    str(pth),
    "--nocache",
    "--noprogress",
    "--batch_size",
    str(batch_size),
    "--workers",
    str(workers),
  ]
  start = time.perf_counter()
  if fid.main(argv) != 0:
    raise SystemExit("our FID command failed")
  return time.perf_counter() - start


def pytorch_fid(a, b, pth, batch_size, workers) -> float:
  from pytorch_fid import fid_score

  start = time.perf_counter()
  with comparisons.pytorch_fid_with_weights(pth):
    value = fid_score.calculate_fid_given_paths(
      [str(a), str(b)], batch_size, "cpu", 2048, num_workers=workers
    )
  print(f"pytorch-fid FID: {value:.6f}")
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=50, help="images per folder")
  parser.add_argument("--size", type=int, default=32, help="image side (resized to 299 inside)")
  parser.add_argument("--batch_size", type=int, default=50)
  parser.add_argument(
    "--workers",
    type=int,
    default=min(8, os.cpu_count() or 1),
    help="decoding threads (ours) / DataLoader workers (pytorch-fid)",
  )
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  import torch

  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    os.environ[networks.CACHE_DIR_ENV] = str(tmp / "cache")
    a, b = tmp / "samples", tmp / "reference"
    write_folder(a, args.num_images, args.size, seed=0)
    write_folder(b, args.num_images, args.size, seed=1)
    pth = tmp / networks.INCEPTION_TORCH_FILES[0]
    comparisons.write_inception_pth(pth)
    total = 2 * args.num_images
    times = {"ours": [], "pytorch-fid": []}
    for _ in range(args.repeats):
      times["ours"].append(ours(a, b, pth, args.batch_size, args.workers))
      times["pytorch-fid"].append(pytorch_fid(a, b, pth, args.batch_size, args.workers))
  print(
    f"\n2 folders x {args.num_images} PNGs {args.size}x{args.size}x3, batch {args.batch_size}, "
    f"workers {args.workers}, {os.cpu_count()} CPUs (torch threads {torch.get_num_threads()})"
  )
  rates = {}
  for name, values in times.items():
    cold = total / values[0]
    warm = total / min(values[1:]) if len(values) > 1 else float("nan")
    rates[name] = (cold, warm)
    print(f"  {name:12s} cold {cold:6.2f} img/s | warm {warm:6.2f} img/s")
  print(
    f"  ours / pytorch-fid: cold x{rates['ours'][0] / rates['pytorch-fid'][0]:.2f} | "
    f"warm x{rates['ours'][1] / rates['pytorch-fid'][1]:.2f}"
  )


if __name__ == "__main__":
  main()
