"""Maintainer check: the official hojonathanho/diffusion U-Net (TF1) against `diffusion_tf`.

Given a user's checkout of https://github.com/hojonathanho/diffusion (never vendored here), this
builds the official `diffusion_tf/models/unet.py` `model(...)` in a `tf.compat.v1` graph, adds the
training-time variables the official `tpu_utils.run_training` creates (global step, the Adam slots
of `utils.make_optimizer`, the `ExponentialMovingAverage` shadows of `tpu_utils.make_ema`), gives
every U-Net weight a random value, saves a `model.ckpt-N` with `tf.compat.v1.train.Saver`, loads it
with `diffusion_tf.official_checkpoint.load_into_unet` (raw and EMA weights), and compares the
official graph's output with our U-Net's on the same inputs. With `--dump_names` it writes every
checkpoint variable name and shape as JSON (how tests/diffusion_tf/official_variables_*.json were
produced).

    python tools/check_official_ddpm.py --official_path /path/to/diffusion --config cifar10
    python tools/check_official_ddpm.py --official_path /path/to/diffusion --config tiny \
        --dump_names tests/diffusion_tf/official_variables_tiny.json

The official code is TF 1.15 code; only this script adapts it, at run time: `tensorflow.contrib`
(gone in TF 2) is a stub whose `layers.group_norm` is written here after TF 1.15's documented
behaviour (32 groups over the last axis, statistics over H, W and the channels of a group, epsilon
1e-6, per-channel `beta` / `gamma` variables in the given scope), and the official package is
imported under another name (`official_diffusion_tf`) so that it does not shadow ours. So the
names and shapes are the official code's own; the GroupNorm arithmetic is this stub's.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# tiny: tests/diffusion_tf/test_official_checkpoint.py's TINY U-Net on 8x8 images.
# cifar10: scripts/run_cifar.py model 'unet2d16b2' (ch 128, ch_mult (1, 2, 2, 2), 2 res blocks,
# attention at 16x16) on 32x32 images.
CONFIGS = {
  "tiny": dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), size=8),
  "cifar10": dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), size=32),
}
EMA_DECAY = 0.9999  # tpu_utils.run_training default
ADAM_LR, ADAM_EPSILON = 2e-4, 1e-8  # run_cifar.train lr, utils.make_optimizer epsilon


def _group_norm_stub(tf):
  """tf.contrib.layers.group_norm(x, scope=name) for NHWC x with its defaults."""

  def group_norm(inputs, groups=32, epsilon=1e-6, scope=None, **unused):
    if unused:
      raise NotImplementedError(f"group_norm stub: {sorted(unused)}")
    with tf.variable_scope(scope, "GroupNorm"):
      c = int(inputs.shape[-1])
      beta = tf.get_variable("beta", [c], initializer=tf.zeros_initializer())
      gamma = tf.get_variable("gamma", [c], initializer=tf.ones_initializer())
      b, h, w = (int(d) for d in inputs.shape[:3])
      x = tf.reshape(inputs, [b, h, w, groups, c // groups])
      mean, var = tf.nn.moments(x, [1, 2, 4], keepdims=True)
      x = tf.reshape((x - mean) * tf.math.rsqrt(var + epsilon), [b, h, w, c])
      return x * gamma + beta

  return group_norm


def import_official_unet(path: str):
  """The official diffusion_tf.models.unet, imported as official_diffusion_tf.models.unet."""
  import tensorflow.compat.v1 as tf

  package_dir = os.path.join(os.path.abspath(path), "diffusion_tf")
  if not os.path.isfile(os.path.join(package_dir, "models", "unet.py")):
    raise SystemExit(f"error: no hojonathanho/diffusion diffusion_tf/models/unet.py in {path}")
  contrib = types.ModuleType("tensorflow.contrib")
  contrib.layers = types.SimpleNamespace(group_norm=_group_norm_stub(tf))
  sys.modules["tensorflow.contrib"] = contrib
  spec = importlib.util.spec_from_file_location(
    "official_diffusion_tf",
    os.path.join(package_dir, "__init__.py"),
    submodule_search_locations=[package_dir],
  )
  package = importlib.util.module_from_spec(spec)
  sys.modules["official_diffusion_tf"] = package
  spec.loader.exec_module(package)
  return importlib.import_module("official_diffusion_tf.models.unet")


def official_commit(path: str) -> str:
  try:
    return subprocess.run(
      ["git", "-C", path, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown (not a git checkout)"


def build_graph(unet, cfg: dict, batch: int):
  """The official model graph plus the training variables, as run_training creates them."""
  import tensorflow.compat.v1 as tf

  s = cfg["size"]
  x = tf.placeholder(tf.float32, [batch, s, s, 3])
  t = tf.placeholder(tf.int32, [batch])
  out = unet.model(
    x,
    t=t,
    y=None,
    name="model",
    num_classes=1,
    ch=cfg["ch"],
    out_ch=3,
    ch_mult=cfg["ch_mult"],
    num_res_blocks=cfg["num_res_blocks"],
    attn_resolutions=cfg["attn_resolutions"],
    dropout=0.0,
  )
  weights = tf.trainable_variables()
  global_step = tf.train.get_or_create_global_step()
  # utils.make_optimizer: AdamOptimizer(lr, epsilon=1e-8).apply_gradients; zero gradients stand in
  # for the loss's (the variables it creates do not depend on them).
  tf.train.AdamOptimizer(learning_rate=ADAM_LR, epsilon=ADAM_EPSILON).apply_gradients(
    [(tf.zeros_like(v), v) for v in weights], global_step=global_step
  )
  # tpu_utils.make_ema
  ema = tf.train.ExponentialMovingAverage(decay=tf.where(tf.less(global_step, 1), 1e-10, EMA_DECAY))
  ema.apply(weights)
  return x, t, out, weights, ema


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--official_path", required=True, help="a checkout of hojonathanho/diffusion")
  parser.add_argument(
    "--config",
    default="tiny",
    choices=sorted(CONFIGS),
    help="tiny: the test's U-Net; cifar10: run_cifar.py 'unet2d16b2'",
  )
  parser.add_argument("--batch", type=int, default=2, help="images in the compared forward pass")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--dump_names",
    default=None,
    help="write every checkpoint variable name and shape to this JSON file",
  )
  flags = parser.parse_args(argv)

  import tensorflow as tf2
  import tensorflow.compat.v1 as tf

  from diffusion_tf import layers
  from diffusion_tf import official_checkpoint as oc

  cfg = CONFIGS[flags.config]
  unet = import_official_unet(flags.official_path)
  rng = np.random.default_rng(flags.seed)
  s = cfg["size"]
  x_value = rng.standard_normal((flags.batch, s, s, 3)).astype(np.float32)
  t_value = rng.integers(0, 1000, flags.batch).astype(np.int32)

  with tempfile.TemporaryDirectory() as tmp:
    with tf2.Graph().as_default():
      x, t, out, weights, ema = build_graph(unet, cfg, flags.batch)
      n_params = sum(int(np.prod(v.shape.as_list())) for v in weights)
      raw = {}
      for (
        v
      ) in weights:  # fan-in scaled weights, GroupNorm near identity (conv2 / proj_out start at 0)
        shape, name = v.shape.as_list(), v.op.name
        if name.endswith("/W"):
          raw[name] = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        elif name.endswith("/gamma"):
          raw[name] = 1.0 + 0.2 * rng.standard_normal(shape)
        else:
          raw[name] = 0.2 * rng.standard_normal(shape)
      shadow = {n: 0.5 * w + 0.1 * rng.standard_normal(w.shape) for n, w in raw.items()}
      assigns = [v.assign(raw[v.op.name].astype(np.float32)) for v in weights]
      assigns += [ema.average(v).assign(shadow[v.op.name].astype(np.float32)) for v in weights]
      config = tf.ConfigProto()
      config.graph_options.rewrite_options.disable_meta_optimizer = True
      with tf.Session(config=config) as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(assigns)
        official = {False: sess.run(out, {x: x_value, t: t_value})}
        prefix = tf.train.Saver().save(sess, os.path.join(tmp, "model.ckpt"), global_step=1234)
        # The official output with the EMA weights (what the paper samples with).
        sess.run([v.assign(shadow[v.op.name].astype(np.float32)) for v in weights])
        official[True] = sess.run(out, {x: x_value, t: t_value})
    names = dict(tf2.train.list_variables(prefix))
    print(
      f"official {flags.config} U-Net: {len(weights)} weights, {n_params:,} parameters; "
      f"{len(names)} checkpoint variables"
    )
    if flags.dump_names:
      source = (
        f"hojonathanho/diffusion@{official_commit(flags.official_path)} "
        f"diffusion_tf/models/unet.py model(..., name='model') in a tf.compat.v1 graph "
        f"(TF {tf2.__version__}) with run_training's global step, Adam slots and EMA; "
        f"tf.train.list_variables of its Saver checkpoint (sorted), written by "
        f"tools/check_official_ddpm.py --config {flags.config} --dump_names"
      )
      lines = [f"  {json.dumps(k)}: {json.dumps(list(v))}" for k, v in sorted(names.items())]
      with open(flags.dump_names, "w") as f:
        f.write(
          '{"source": '
          + json.dumps(source)
          + ',\n"config": '
          + json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()})
          + ',\n"variables": {\n'
          + ",\n".join(lines)
          + "\n}}\n"
        )
      print(f"wrote {flags.dump_names}")

    # Eager, outside the v1 graph: our U-Net loads the saved checkpoint.
    ours = layers.UNet(
      config=layers.UNetConfig(
        channels=cfg["ch"],
        channel_mult=tuple(cfg["ch_mult"]),
        num_res_blocks=cfg["num_res_blocks"],
        attention_resolutions=tuple(cfg["attn_resolutions"]),
        dropout=0.0,
        num_groups=32,
      ),
      image_size=s,
      out_channels=3,
      name="unet",
    )
    ours(tf2.zeros([1, s, s, 3]), tf2.zeros([1], tf2.int32))
    print(f"forward pass on {flags.batch} N(0, 1) images, t = {t_value.tolist()}:")
    for use_ema in (False, True):
      report = oc.load_into_unet(ours, prefix, ema=use_ema)
      mine = ours(tf2.constant(x_value), tf2.constant(t_value)).numpy()
      diff = np.abs(mine - official[use_ema]).max()
      print(
        f"  {'EMA' if use_ema else 'raw'} weights ({len(report.keys)} tensors): max |official - "
        f"ours| {diff:.3g} (max |official| {np.abs(official[use_ema]).max():.3g})"
      )


if __name__ == "__main__":
  main()
