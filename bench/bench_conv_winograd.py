"""Would Winograd convolutions make the DDPM train step faster? A 3x3 convolution of the DDPM
CIFAR-10 U-Net's shapes, forward and backward, as TensorFlow runs it (`tf.nn.conv2d`: oneDNN's
direct convolution on a CPU) against the minimal-filtering algorithm F(2x2, 3x3) written in
TensorFlow ops (input, filter and output transforms around 16 batched matrix products; 2.25x fewer
multiplies; Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks", eq. 8-9).

  python bench/bench_conv_winograd.py --cores=0 --threads=1

3x3 convolutions are about three quarters of the DDPM step (docs/performance.md), so the
algorithm would need to be well under 1x of direct here to matter. Each is compiled with
tf.function (gradient of sum(y^2) with respect to x and the kernel), warmed up, then the two
alternate call by call; the medians of wall and CPU milliseconds per call are printed with the
CPU ratio Winograd / direct and the largest difference of the outputs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import peer  # noqa: E402

# (batch, height = width, input channels, output channels): the U-Net's 3x3 convolutions at its
# four resolutions (diffusers' google/ddpm-cifar10-32 configuration, batch 8 as in the DDPM bench).
SHAPES = ((8, 32, 128, 128), (8, 16, 256, 256), (8, 8, 256, 256), (8, 4, 256, 256))


def winograd_conv2d(x, kernel):
  """SAME 3x3 convolution, stride 1, of x [N, H, W, C] (H, W even) with kernel [3, 3, C, O] by
  F(2x2, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A on each 4x4 tile d (stride 2) of the padded x.

  The input transform is a depthwise convolution (16 fixed 4x4 filters per channel, stride 2), the
  output transform a 16 -> 4 linear map followed by depth_to_space; slicing the tiles out with
  strided slices instead was 3.2-6.1x slower than direct on this bench's shapes.
  """
  import numpy as np
  import tensorflow as tf

  n, h, w, c = x.shape
  o = kernel.shape[-1]
  bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
  at = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)
  g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
  b_filters = np.einsum("ai,bj->ijab", bt, bt).reshape(4, 4, 1, 16)  # tile (i, j) -> (a, b)
  a_map = np.einsum("ra,sb->abrs", at, at).reshape(16, 4)  # (a, b) -> output (r, s)
  xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
  d = tf.nn.depthwise_conv2d(xp, tf.tile(b_filters, [1, 1, c, 1]), [1, 2, 2, 1], "VALID")
  v = tf.transpose(tf.reshape(d, [-1, c, 16]), [2, 0, 1])  # [16, P, C], P = N H W / 4
  u = tf.reshape(tf.einsum("ai,ijco,bj->abco", g, kernel, g), [16, c, o])  # G g G^T
  m = tf.matmul(v, u)  # [16, P, O]
  y = tf.einsum("tpo,tq->pqo", m, a_map)  # [P, 4, O]
  return tf.nn.depth_to_space(tf.reshape(y, [n, h // 2, w // 2, 4 * o]), 2)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cores", default="", help="Comma list of cores to run on (default: all).")
  parser.add_argument(
    "--threads", type=int, default=0, help="TensorFlow intra/inter-op threads (0: its default)."
  )
  parser.add_argument("--repeats", type=int, default=3, help="Timed calls of each, alternated.")
  args = parser.parse_args()
  peer.pin([int(c) for c in args.cores.split(",") if c] or None, args.threads)
  if not args.threads:
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
      del os.environ[name]
  import numpy as np  # after pinning: TensorFlow reads the thread counts when imported
  import tensorflow as tf

  print(peer.header(args.threads or tf.config.threading.get_intra_op_parallelism_threads()))

  def step(conv):
    @tf.function
    def fn(x, kernel):
      with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = conv(x, kernel)
        loss = tf.reduce_sum(y * y)
      return tape.gradient(loss, [x, kernel])

    return fn

  methods = {
    "direct": step(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME")),
    "winograd": step(winograd_conv2d),
  }
  rng = np.random.default_rng(0)
  for n, s, c, o in SHAPES:
    x = tf.constant(rng.standard_normal((n, s, s, c)), tf.float32)
    kernel = tf.constant(rng.standard_normal((3, 3, c, o)) * 0.05, tf.float32)
    direct = tf.nn.conv2d(x, kernel, 1, "SAME")
    error = float(tf.reduce_max(tf.abs(winograd_conv2d(x, kernel) - direct)))
    wall = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    for fn in methods.values():
      fn(x, kernel)[0].numpy()  # trace and warm up
    for _ in range(args.repeats):
      for name, fn in methods.items():
        w, t = time.perf_counter(), time.process_time()
        fn(x, kernel)[0].numpy()
        wall[name].append(time.perf_counter() - w)
        cpu[name].append(time.process_time() - t)
    ms = {
      name: (statistics.median(wall[name]) * 1e3, statistics.median(cpu[name]) * 1e3)
      for name in methods
    }
    print(
      f"{n}x{s}x{s}x{c} -> {o}, forward + backward (medians of {args.repeats}): "
      + "; ".join(f"{name} {w:.1f} ms wall {t:.1f} ms CPU" for name, (w, t) in ms.items())
      + f"; CPU winograd / direct = {ms['winograd'][1] / ms['direct'][1]:.2f}; "
      f"max |difference| {error:.1e} (max |y| {float(tf.reduce_max(tf.abs(direct))):.1f})",
      flush=True,
    )


if __name__ == "__main__":
  main()
