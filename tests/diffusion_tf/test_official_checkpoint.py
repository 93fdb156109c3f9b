"""Official DDPM TF1 checkpoints (hojonathanho/diffusion) load into our U-Net.

The test writes a checkpoint in the official format with TF's own v1 machinery (variable scopes,
`tf.compat.v1.train.ExponentialMovingAverage`, Adam slots, `Saver`): names and shapes are spelled out
here from the official diffusion_tf/models/unet.py and nn.py, not taken from the importer, and are
checked against official_variables_{tiny,cifar10}.json, the variable list of a checkpoint of the
official graph itself (built by running the official `unet.model` under tf.compat.v1 with the
training variables of its `run_training`: `python tools/check_official_ddpm.py --official_path
<hojonathanho/diffusion checkout at 1e0dceb> --config {tiny,cifar10} --dump_names ...`; each file's
"source" field says so). Then every tensor must land in the Keras variable the test expects, and
the whole network's output must equal a NumPy float64 implementation of the official U-Net that
reads the checkpoint directly.
"""

import dataclasses
import json
import math
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from diffusion_tf import diffusion, layers
from diffusion_tf import official_checkpoint as oc

# Tiny official-format network: official GroupNorm has 32 groups, so ch >= 32.
CH, CH_MULT, NUM_RES, ATTN, SIZE, IN_CH = 32, (1, 2), 1, (4,), 8, 3
TINY = layers.UNetConfig(
  channels=CH,
  channel_mult=CH_MULT,
  num_res_blocks=NUM_RES,
  attention_resolutions=ATTN,
  dropout=0.0,
  num_groups=32,
)


def official_spec(ch_mult=CH_MULT, attn_resolutions=ATTN):
  """{official name: shape} following unet.model(x, ch, out_ch, ch_mult, num_res_blocks,
  attn_resolutions) with conv2d W [3, 3, in, out], dense/nin W [in, out], group_norm gamma/beta [C]."""
  spec = {}

  def dense(name, cin, cout):
    spec[f"{name}/W"], spec[f"{name}/b"] = (cin, cout), (cout,)

  def conv(name, cin, cout):
    spec[f"{name}/W"], spec[f"{name}/b"] = (3, 3, cin, cout), (cout,)

  def norm(name, c):
    spec[f"{name}/gamma"], spec[f"{name}/beta"] = (c,), (c,)

  def resnet(name, cin, cout):
    norm(f"{name}/norm1", cin)
    conv(f"{name}/conv1", cin, cout)
    dense(f"{name}/temb_proj", 4 * CH, cout)
    norm(f"{name}/norm2", cout)
    conv(f"{name}/conv2", cout, cout)
    if cin != cout:
      dense(f"{name}/nin_shortcut", cin, cout)

  def attn(name, c):
    norm(f"{name}/norm", c)
    for part in ("q", "k", "v", "proj_out"):
      dense(f"{name}/{part}", c, c)

  dense("model/temb/dense0", CH, 4 * CH)
  dense("model/temb/dense1", 4 * CH, 4 * CH)
  conv("model/conv_in", IN_CH, CH)
  skips, cur, res = [CH], CH, SIZE
  for i, mult in enumerate(ch_mult):
    for j in range(NUM_RES):
      resnet(f"model/down_{i}/block_{j}", cur, CH * mult)
      cur = CH * mult
      if res in attn_resolutions:
        attn(f"model/down_{i}/attn_{j}", cur)
      skips.append(cur)
    if i != len(ch_mult) - 1:
      conv(f"model/down_{i}/downsample/conv", cur, cur)
      skips.append(cur)
      res //= 2
  resnet("model/mid/block_1", cur, cur)
  attn("model/mid/attn_1", cur)
  resnet("model/mid/block_2", cur, cur)
  for i in reversed(range(len(ch_mult))):
    for j in range(NUM_RES + 1):
      resnet(f"model/up_{i}/block_{j}", cur + skips.pop(), CH * ch_mult[i])
      cur = CH * ch_mult[i]
      if res in attn_resolutions:
        attn(f"model/up_{i}/attn_{j}", cur)
    if i != 0:
      conv(f"model/up_{i}/upsample/conv", cur, cur)
      res *= 2
  assert not skips
  norm("model/norm_out", cur)
  conv("model/conv_out", cur, IN_CH)
  return spec


def official_variables(name):
  """{checkpoint variable: shape} of the official graph (official_variables_<name>.json) and its config."""
  with open(os.path.join(os.path.dirname(__file__), f"official_variables_{name}.json")) as f:
    dumped = json.load(f)
  return {k: tuple(v) for k, v in dumped["variables"].items()}, dumped["config"]


def official_weights(variables):
  """The U-Net weights among the checkpoint variables (no EMA shadows, optimizer slots, counters)."""
  return {
    k: v
    for k, v in variables.items()
    if k.startswith("model/") and not re.search(r"/(ExponentialMovingAverage|Adam|Adam_1)$", k)
  }


def random_weights(spec, seed):
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in spec.items():
    if name.endswith("/W"):
      fan_in = int(np.prod(shape[:-1]))
      out[name] = rng.standard_normal(shape) / math.sqrt(fan_in)
    elif name.endswith("/gamma"):
      out[name] = 1.0 + 0.2 * rng.standard_normal(shape)
    else:
      out[name] = 0.2 * rng.standard_normal(shape)
  return {k: v.astype(np.float32) for k, v in out.items()}


def write_official_checkpoint(directory, raw, ema, *, step=1234):
  """A TF1 `model.ckpt-<step>` as the official Estimator wrote it: the weights, their
  ExponentialMovingAverage shadows, Adam slots and the global step."""
  with tf.Graph().as_default():
    variables = []
    for name, value in raw.items():
      scope, leaf = name.rsplit("/", 1)
      with tf.compat.v1.variable_scope(scope):
        variables.append(tf.compat.v1.get_variable(leaf, initializer=tf.constant(value)))
    global_step = tf.compat.v1.train.get_or_create_global_step()
    ema_obj = tf.compat.v1.train.ExponentialMovingAverage(decay=0.9999)
    ema_obj.apply(variables)
    # The Adam slots and beta powers as minimize(loss) creates them; the update op is never run,
    # so zero gradients stand in for a gradient graph (the saved tensors are the same).
    tf.compat.v1.train.AdamOptimizer(2e-4, epsilon=1e-8).apply_gradients(
      [(tf.zeros_like(v), v) for v in variables], global_step=global_step
    )
    assigns = [ema_obj.average(v).assign(ema[v.op.name]) for v in variables]
    saver = tf.compat.v1.train.Saver()
    config = tf.compat.v1.ConfigProto()  # no Grappler passes over a graph run twice
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    with tf.compat.v1.Session(config=config) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      sess.run(assigns + [global_step.assign(step)])
      return saver.save(sess, str(directory / "model.ckpt"), global_step=step)


def our_path(official):
  """Where an official tensor must land in our U-Net (Keras variable path)."""
  name = official.removeprefix("model/")
  name = re.sub(r"/W$", "/kernel", re.sub(r"/b$", "/bias", name))
  name = re.sub(r"^temb/(dense\d)", r"temb_\1", name)
  name = re.sub(r"^mid/block_(\d)/", r"mid_\1/res/", name)
  name = re.sub(r"^mid/attn_1/", "mid_1/attn/", name)
  name = re.sub(r"^(down|up)_(\d+)/block_(\d+)/", r"\1_\2_block_\3/res/", name)
  name = re.sub(r"^(down|up)_(\d+)/attn_(\d+)/", r"\1_\2_block_\3/attn/", name)
  name = re.sub(r"^(down|up)_(\d+)/(downsample|upsample)/", r"\1_\2_\3/", name)
  return "unet/" + name


# ----------------------------------------------------------------------------- NumPy official U-Net


def np_group_norm(x, gamma, beta, groups=32, eps=1e-6):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * gamma + beta


def np_conv(x, w, b, stride=1):
  """tf.nn.conv2d(padding='SAME') for a 3x3 kernel."""
  _, h, wd, _ = x.shape
  k = w.shape[0]
  out_h, out_w = -(-h // stride), -(-wd // stride)
  pad_h = max((out_h - 1) * stride + k - h, 0)
  pad_w = max((out_w - 1) * stride + k - wd, 0)
  xp = np.pad(
    x, [(0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)]
  )
  out = np.zeros(x.shape[:1] + (out_h, out_w, w.shape[-1]))
  for i in range(k):
    for j in range(k):
      patch = xp[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :]
      out += patch @ w[i, j]
  return out + b


def swish(x):
  return x / (1.0 + np.exp(-x))


def np_upsample_nearest_align_corners(x):
  """tf.image.resize(NEAREST_NEIGHBOR, align_corners=True) to 2x: src = roundf(i (H-1)/(2H-1))."""
  h, w = x.shape[1:3]
  rows = np.minimum(np.floor(np.arange(2 * h) * (h - 1) / (2 * h - 1) + 0.5).astype(int), h - 1)
  cols = np.minimum(np.floor(np.arange(2 * w) * (w - 1) / (2 * w - 1) + 0.5).astype(int), w - 1)
  return x[:, rows][:, :, cols]


def np_official_unet(p, x, t):
  """Official unet.model(...) forward in float64 from the checkpoint tensors p[name]."""

  def dense(name, h):
    return h @ p[f"{name}/W"] + p[f"{name}/b"]

  def norm(name, h):
    return np_group_norm(h, p[f"{name}/gamma"], p[f"{name}/beta"])

  def resnet(name, h_in, temb):
    h = np_conv(swish(norm(f"{name}/norm1", h_in)), p[f"{name}/conv1/W"], p[f"{name}/conv1/b"])
    h = h + dense(f"{name}/temb_proj", swish(temb))[:, None, None, :]
    h = np_conv(swish(norm(f"{name}/norm2", h)), p[f"{name}/conv2/W"], p[f"{name}/conv2/b"])
    if f"{name}/nin_shortcut/W" in p:
      h_in = dense(f"{name}/nin_shortcut", h_in)
    return h_in + h

  def attn(name, h_in):
    b, hh, ww, c = h_in.shape
    h = norm(f"{name}/norm", h_in)
    q, k, v = (dense(f"{name}/{n}", h) for n in "qkv")
    w = np.einsum("bhwc,bHWc->bhwHW", q, k) * c**-0.5
    w = w.reshape(b, hh, ww, hh * ww)
    w = np.exp(w - w.max(-1, keepdims=True))
    w = (w / w.sum(-1, keepdims=True)).reshape(b, hh, ww, hh, ww)
    return h_in + dense(f"{name}/proj_out", np.einsum("bhwHW,bHWc->bhwc", w, v))

  half = CH // 2
  freqs = np.exp(-math.log(10000) / (half - 1) * np.arange(half))
  emb = t.astype(np.float64)[:, None] * freqs[None]
  temb = np.concatenate([np.sin(emb), np.cos(emb)], 1)
  temb = dense("model/temb/dense1", swish(dense("model/temb/dense0", temb)))
  hs = [np_conv(x, p["model/conv_in/W"], p["model/conv_in/b"])]
  for i in range(len(CH_MULT)):
    for j in range(NUM_RES):
      h = resnet(f"model/down_{i}/block_{j}", hs[-1], temb)
      if h.shape[1] in ATTN:
        h = attn(f"model/down_{i}/attn_{j}", h)
      hs.append(h)
    if i != len(CH_MULT) - 1:
      hs.append(
        np_conv(
          hs[-1],
          p[f"model/down_{i}/downsample/conv/W"],
          p[f"model/down_{i}/downsample/conv/b"],
          stride=2,
        )
      )
  h = resnet("model/mid/block_1", hs[-1], temb)
  h = attn("model/mid/attn_1", h)
  h = resnet("model/mid/block_2", h, temb)
  for i in reversed(range(len(CH_MULT))):
    for j in range(NUM_RES + 1):
      h = resnet(f"model/up_{i}/block_{j}", np.concatenate([h, hs.pop()], -1), temb)
      if h.shape[1] in ATTN:
        h = attn(f"model/up_{i}/attn_{j}", h)
    if i != 0:
      h = np_conv(
        np_upsample_nearest_align_corners(h),
        p[f"model/up_{i}/upsample/conv/W"],
        p[f"model/up_{i}/upsample/conv/b"],
      )
  h = swish(norm("model/norm_out", h))
  return np_conv(h, p["model/conv_out/W"], p["model/conv_out/b"])


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  spec = official_spec()
  raw, ema = random_weights(spec, 0), random_weights(spec, 1)
  path = write_official_checkpoint(tmp_path_factory.mktemp("official"), raw, ema)
  return path, raw, ema


def _unet():
  unet = layers.UNet(config=TINY, image_size=SIZE, out_channels=IN_CH, name="unet")
  unet(tf.zeros([1, SIZE, SIZE, IN_CH]), tf.zeros([1], tf.int32))
  return unet


@pytest.fixture(scope="module")
def built_unet():
  return _unet()


@pytest.fixture
def unet(built_unet):
  """One built U-Net for the module, its weights zeroed for each test: what a test reads after a
  load was written by that load, not left by an earlier test."""
  for v in built_unet.weights:
    v.assign(tf.zeros_like(v))
  return built_unet


def test_hand_written_names_are_the_official_graphs():
  variables, config = official_variables("tiny")
  assert config == dict(
    ch=CH, ch_mult=list(CH_MULT), num_res_blocks=NUM_RES, attn_resolutions=list(ATTN), size=SIZE
  )
  assert official_spec() == official_weights(variables)
  assert len(official_spec()) == 144


def test_checkpoint_has_the_official_layout(checkpoint):
  """Every variable of a checkpoint of the official training graph, no more: the weights, their
  EMA shadows, the Adam slots, beta1/2_power and global_step."""
  path, _, _ = checkpoint
  assert path.endswith("model.ckpt-1234")
  assert {k: tuple(v) for k, v in tf.train.list_variables(path)} == official_variables("tiny")[0]


def test_every_tensor_lands_in_its_place_ema_by_default(checkpoint, unet):
  path, raw, ema = checkpoint
  report = oc.load_into_unet(unet, path)
  assert report.ema and len(report.keys) == len(raw) == len(unet.weights)
  by_path = {v.path: v for v in unet.weights}
  assert sorted(by_path) == sorted(our_path(n) for n in raw)
  for name in raw:
    np.testing.assert_array_equal(by_path[our_path(name)].numpy(), ema[name], err_msg=name)
  oc.load_into_unet(unet, path, ema=False)
  for name in raw:
    np.testing.assert_array_equal(by_path[our_path(name)].numpy(), raw[name], err_msg=name)


@pytest.mark.parametrize("phases", [False, True])
def test_forward_pass_equals_numpy_official_unet(checkpoint, unet, monkeypatch, phases):
  """`phases`: the upsampling convolutions as four 2x2 phase convolutions (used on inputs of at
  least layers.UPSAMPLE_PHASES_MIN_PIXELS pixels; this tiny U-Net upsamples 4x4 inputs)."""
  if phases:
    monkeypatch.setattr(layers, "UPSAMPLE_PHASES_MIN_PIXELS", 1)
  path, _, ema = checkpoint
  oc.load_into_unet(unet, path, ema=True)
  rng = np.random.default_rng(3)
  x = rng.standard_normal((2, SIZE, SIZE, IN_CH)).astype(np.float32)
  t = np.array([3, 917], np.int32)
  ours = unet(tf.constant(x), tf.constant(t)).numpy()
  expected = np_official_unet(
    {k: v.astype(np.float64) for k, v in ema.items()}, x.astype(np.float64), t
  )
  assert np.abs(expected).mean() > 0.1  # a real signal, not zero-initialised output
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_official_ddpm_samples_with_our_sampler(checkpoint, monkeypatch):
  path, _, _ = checkpoint
  monkeypatch.setitem(
    oc.OFFICIAL_CONFIGS,
    "tiny",
    oc.OfficialConfig(
      unet=TINY, image_size=SIZE, variance=diffusion.Variance.FIXED_LARGE, num_timesteps=5
    ),
  )
  model, report = oc.build_official_ddpm(path, config="tiny", jit_sampling=False)
  assert report.ema and model.diffusion.variance is diffusion.Variance.FIXED_LARGE
  # Official scripts train with randflip=1 (run_cifar.py, run_celebahq.py, run_lsun.py).
  assert model.random_flip and all(c.random_flip for c in oc.OFFICIAL_CONFIGS.values())
  samples = model.sample_ddim(2, seed=1, num_steps=5).numpy()
  assert samples.shape == (2, SIZE, SIZE, IN_CH) and np.all(np.isfinite(samples))
  assert oc.OFFICIAL_CONFIGS["cifar10"].unet == layers.UNetConfig(
    channels=128,
    channel_mult=(1, 2, 2, 2),
    num_res_blocks=2,
    attention_resolutions=(16,),
    dropout=0.1,
    num_groups=32,
  )


def test_cifar10_preset_names_every_official_weight_with_its_shape():
  # The official CIFAR-10 model 'unet2d16b2' ("35.7M", scripts/run_cifar.py), from its graph.
  variables, config = official_variables("cifar10")
  weights = official_weights(variables)
  assert len(weights) == 328 and sum(int(np.prod(s)) for s in weights.values()) == 35_746_307
  assert all(variables[f"{k}/ExponentialMovingAverage"] == s for k, s in weights.items())
  c = oc.OFFICIAL_CONFIGS["cifar10"]
  assert c.image_size == config["size"] == 32
  unet = layers.UNet(config=c.unet, image_size=32, out_channels=3)  # attention placed for 32x32
  # Built by a forward pass on 8x8 (convolution kernels do not depend on the input size; 8 is
  # divisible by the 2^3 of the four levels): the weights of the 32x32 network, 1/16 of the work.
  unet(tf.zeros([1, 8, 8, 3]), tf.zeros([1], tf.int32))
  assert {k: tuple(v.shape) for k, v in oc.variable_map(unet).items()} == weights


def test_wrong_configuration_or_path_is_a_clear_error(checkpoint, unet, tmp_path):
  path, _, _ = checkpoint
  other = layers.UNet(
    config=layers.UNetConfig(
      channels=32,
      channel_mult=(1, 1),
      num_res_blocks=1,
      attention_resolutions=(4,),
      dropout=0.0,
      num_groups=32,
    ),
    image_size=SIZE,
    out_channels=IN_CH,
  )
  other(tf.zeros([1, SIZE, SIZE, IN_CH]), tf.zeros([1], tf.int32))
  with pytest.raises(ValueError, match="shape mismatch"):
    oc.load_into_unet(other, path)
  fewer = layers.UNet(
    config=dataclasses.replace(TINY, attention_resolutions=()), image_size=SIZE, out_channels=IN_CH
  )
  fewer(tf.zeros([1, SIZE, SIZE, IN_CH]), tf.zeros([1], tf.int32))
  with pytest.raises(ValueError, match="no place"):
    oc.load_into_unet(fewer, path)
  with pytest.raises(ValueError, match="cannot read"):
    oc.load_into_unet(unet, str(tmp_path / "nothing" / "model.ckpt-1"))


def test_checkpoint_without_ema_loads_raw_weights_on_request(checkpoint, unet, tmp_path):
  _, raw, _ = checkpoint
  prefix = str(tmp_path / "model.ckpt-5")
  tf.raw_ops.SaveV2(
    prefix=prefix,
    tensor_names=list(raw),
    shape_and_slices=[""] * len(raw),
    tensors=[tf.constant(v) for v in raw.values()],
  )
  with pytest.raises(ValueError, match="no EMA weights"):
    oc.load_into_unet(unet, prefix, ema=True)
  report = oc.load_into_unet(unet, prefix)  # ema=None: the EMA only when present
  assert not report.ema
  by_path = {v.path: v for v in unet.weights}
  np.testing.assert_array_equal(by_path["unet/conv_out/kernel"].numpy(), raw["model/conv_out/W"])
