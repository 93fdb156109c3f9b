"""Feature-extraction throughput of the Inception-2015 and VGG-16 fc2 networks, XLA on vs off.

    python bench/bench_features.py [--num_images 64] [--batch_size 16] [--size 64]

Random weights (speed does not depend on weight values; real weights are not needed). Each
configuration is warmed up once (tracing/compilation excluded), then timed over --num_images
images of --size x --size x 3 (uint8), resized inside the network to 299 / 224. On a GPU, add
--bf16 to also time the mixed_bfloat16 networks. Prints images/s and the XLA speed-up.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from evaluation import features, inception, vgg


def images_per_second(network, images, batch_size, jit_compile):
  features.extract(
    network, images[:batch_size], batch_size=batch_size, progress=False, jit_compile=jit_compile
  )  # warm-up: trace + compile
  start = time.perf_counter()
  features.extract(network, images, batch_size=batch_size, progress=False, jit_compile=jit_compile)
  return len(images) / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=64, help="images timed per configuration")
  parser.add_argument("--batch_size", type=int, default=16, help="images per step")
  parser.add_argument("--size", type=int, default=64, help="input image side")
  parser.add_argument("--bf16", action="store_true", help="also time mixed_bfloat16 (GPU)")
  args = parser.parse_args()
  images = np.random.default_rng(0).integers(
    0, 256, (args.num_images, args.size, args.size, 3), dtype=np.uint8
  )
  builders = {
    "Inception-2015 (pool_3 + logits)": inception.build_inception_2015,
    "VGG-16 fc2": vgg.build_vgg16_fc2,
  }
  print(
    f"{args.num_images} images {args.size}x{args.size}, batch {args.batch_size}, "
    f"{os.cpu_count()} CPUs, random weights"
  )
  for name, build in builders.items():
    policies = [None, "mixed_bfloat16"] if args.bf16 else [None]
    for policy in policies:
      network = build(dtype_policy=policy)
      off = images_per_second(network, images, args.batch_size, jit_compile=False)
      on = images_per_second(network, images, args.batch_size, jit_compile=True)
      label = name + (" bf16" if policy else " fp32")
      print(f"  {label:40s} XLA off {off:7.2f} img/s | XLA on {on:7.2f} img/s | x{on / off:.2f}")


if __name__ == "__main__":
  main()
