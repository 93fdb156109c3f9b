"""Load the official DDPM TF1 checkpoints (hojonathanho/diffusion, `model.ckpt-*`) into our U-Net.

Weights conversion only: reads the checkpoint with `tf.train.load_checkpoint` (no torch, no TF1
graph) and assigns each official tensor to the matching Keras variable.

Official parameter naming (diffusion_tf/models/unet.py and nn.py; the model scope is `model`):
  model/temb/dense{0,1}/{W,b}                  dense:  W [in, out], b [out]
  model/conv_in/{W,b}                          conv2d: W [3, 3, in, out], b [out]
  model/down_{i}/block_{j}/{norm1,norm2}/{gamma,beta}, .../{conv1,conv2,temb_proj,nin_shortcut}/{W,b}
  model/down_{i}/attn_{j}/norm/{gamma,beta}, .../{q,k,v,proj_out}/{W,b}     (nin: W [C, C])
  model/down_{i}/downsample/conv/{W,b}          (all levels but the last)
  model/mid/block_1, model/mid/attn_1, model/mid/block_2
  model/up_{i}/block_{j} (j = 0 .. num_res_blocks), model/up_{i}/attn_{j}, model/up_{i}/upsample/conv
  model/norm_out/{gamma,beta}, model/conv_out/{W,b}
GroupNorm is `tf.contrib.layers.group_norm` (32 groups, epsilon 1e-6, per-channel gamma/beta). The
weight EMA used for sampling is stored next to each weight as `<name>/ExponentialMovingAverage`
(`tf.train.ExponentialMovingAverage`, tpu_utils.make_ema).

The layouts equal Keras' (Conv2D kernel [kh, kw, in, out], Dense kernel [in, out]), so tensors are
copied without transposes. The official upsampling (nearest neighbour, align_corners=True, x2)
picks the same source pixels as our `repeat` (round(i (H-1)/(2H-1)) = floor(i/2)).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow as tf

from diffusion_tf import diffusion as diffusion_lib
from diffusion_tf import layers
from diffusion_tf import model as model_lib

EMA_SUFFIX = "/ExponentialMovingAverage"  # tf.train.ExponentialMovingAverage slot name
SCOPE = "model"  # official: unet.model(..., name='model')
OFFICIAL_NUM_GROUPS = 32  # tf.contrib.layers.group_norm default groups


@dataclasses.dataclass(frozen=True)
class OfficialConfig:
  """An official DDPM configuration: the U-Net, the image size and the reverse variance."""

  unet: layers.UNetConfig
  image_size: int
  variance: diffusion_lib.Variance
  num_timesteps: int = diffusion_lib.NUM_TIMESTEPS  # linear betas 1e-4 .. 0.02 in every script
  random_flip: bool = True  # randflip=1 in run_cifar.py, run_celebahq.py and run_lsun.py train()


# scripts/run_cifar.py (model 'unet2d16b2', GaussianDiffusion2 'fixedlarge', dropout 0.1);
# scripts/run_celebahq.py and run_lsun.py (model 'unet2d16b2c112244', diffusion_utils.GaussianDiffusion,
# whose reverse variance is the posterior variance = fixed small; dropout only matters in training).
OFFICIAL_CONFIGS = {
  "cifar10": OfficialConfig(
    unet=layers.UNetConfig(
      channels=128,
      channel_mult=(1, 2, 2, 2),
      num_res_blocks=2,
      attention_resolutions=(16,),
      dropout=0.1,
      num_groups=32,
    ),
    image_size=32,
    variance=diffusion_lib.Variance.FIXED_LARGE,
  ),
  "celebahq": OfficialConfig(
    unet=layers.UNetConfig(
      channels=128,
      channel_mult=(1, 1, 2, 2, 4, 4),
      num_res_blocks=2,
      attention_resolutions=(16,),
      dropout=0.0,
      num_groups=32,
    ),
    image_size=256,
    variance=diffusion_lib.Variance.FIXED_SMALL,
  ),
  "lsun": OfficialConfig(
    unet=layers.UNetConfig(
      channels=128,
      channel_mult=(1, 1, 2, 2, 4, 4),
      num_res_blocks=2,
      attention_resolutions=(16,),
      dropout=0.0,
      num_groups=32,
    ),
    image_size=256,
    variance=diffusion_lib.Variance.FIXED_SMALL,
  ),
}


def _dense(layer, name):
  return {f"{name}/W": layer.kernel, f"{name}/b": layer.bias}


def _norm(layer, name):
  return {f"{name}/gamma": layer.gamma, f"{name}/beta": layer.beta}


def _res_block(block: layers.ResBlock, name: str):
  out = {}
  out.update(_norm(block.norm1, f"{name}/norm1"))
  out.update(_dense(block.conv1, f"{name}/conv1"))
  out.update(_dense(block.temb_proj, f"{name}/temb_proj"))
  out.update(_norm(block.norm2, f"{name}/norm2"))
  out.update(_dense(block.conv2, f"{name}/conv2"))
  if block.skip is not None:
    out.update(_dense(block.skip, f"{name}/nin_shortcut"))
  return out


def _attn_block(block: layers.AttentionBlock, name: str):
  out = _norm(block.norm, f"{name}/norm")
  for part in ("q", "k", "v", "proj_out"):
    out.update(_dense(getattr(block, part), f"{name}/{part}"))
  return out


def variable_map(unet: layers.UNet) -> dict[str, tf.Variable]:
  """{official checkpoint name: our variable} for a built U-Net, covering every U-Net variable."""
  m = {}
  m.update(_dense(unet.temb_dense0, f"{SCOPE}/temb/dense0"))
  m.update(_dense(unet.temb_dense1, f"{SCOPE}/temb/dense1"))
  m.update(_dense(unet.conv_in, f"{SCOPE}/conv_in"))
  for layer in unet.down_blocks + unet.up_blocks:
    side, level, rest = re.fullmatch(r"(down|up)_(\d+)_(.+)", layer.name).groups()
    prefix = f"{SCOPE}/{side}_{level}"
    if isinstance(layer, layers.ResAttnBlock):
      b = re.fullmatch(r"block_(\d+)", rest).group(1)
      m.update(_res_block(layer.res, f"{prefix}/block_{b}"))
      if layer.attn is not None:
        m.update(_attn_block(layer.attn, f"{prefix}/attn_{b}"))
    else:  # Downsample / Upsample
      m.update(_dense(layer.conv, f"{prefix}/{rest}/conv"))
  m.update(_res_block(unet.mid1.res, f"{SCOPE}/mid/block_1"))
  m.update(_attn_block(unet.mid1.attn, f"{SCOPE}/mid/attn_1"))
  m.update(_res_block(unet.mid2.res, f"{SCOPE}/mid/block_2"))
  m.update(_norm(unet.norm_out, f"{SCOPE}/norm_out"))
  m.update(_dense(unet.conv_out, f"{SCOPE}/conv_out"))
  ours = {id(v) for v in unet.weights}
  mapped = {id(v) for v in m.values()}
  if ours != mapped:  # a layer added to the U-Net without a name here
    raise AssertionError(f"{len(ours - mapped)} U-Net variables have no official name")
  return m


@dataclasses.dataclass(frozen=True)
class LoadReport:
  """What `load_into_unet` did: the checkpoint keys read (in variable_map order), EMA or raw."""

  keys: tuple[str, ...]
  ema: bool


def load_into_unet(unet: layers.UNet, path: str, *, ema: bool | None = None) -> LoadReport:
  """Assigns the official checkpoint at `path` (a `model.ckpt-N` prefix or its folder) to `unet`.

  ema: True reads `<name>/ExponentialMovingAverage` (the weights the paper samples with), False the
  raw weights, None the EMA when the checkpoint has it. Raises ValueError on a missing tensor, a
  shape mismatch, or `model/` weights in the checkpoint that the U-Net has no place for (a
  different configuration).
  """
  if unet.config.num_groups != OFFICIAL_NUM_GROUPS:
    raise ValueError(
      f"official checkpoints use {OFFICIAL_NUM_GROUPS} GroupNorm groups, the U-Net "
      f"has {unet.config.num_groups}"
    )
  try:
    reader = tf.train.load_checkpoint(path)
  except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as e:
    raise ValueError(f"cannot read a TF checkpoint at {path!r}: {str(e).splitlines()[0]}") from e
  shapes = reader.get_variable_to_shape_map()
  mapping = variable_map(unet)
  if ema is None:
    ema = all(name + EMA_SUFFIX in shapes for name in mapping)
  keys = {name: name + EMA_SUFFIX if ema else name for name in mapping}
  missing = [k for k in keys.values() if k not in shapes]
  if missing:
    raw_complete = ema and all(name in shapes for name in mapping)
    hint = (
      "the checkpoint has no EMA weights: load the raw ones (ema=False, --noema)"
      if raw_complete
      else "a checkpoint of another configuration?"
    )
    raise ValueError(
      f"{len(missing)} tensors of this U-Net configuration are not in {path!r}, "
      f"e.g. {missing[:3]} ({hint})"
    )
  wrong = [
    (k, tuple(shapes[k]), tuple(v.shape))
    for n, v in mapping.items()
    for k in [keys[n]]
    if tuple(shapes[k]) != tuple(v.shape)
  ]
  if wrong:
    raise ValueError(
      f"shape mismatch (checkpoint, ours) for {len(wrong)} tensors, e.g. {wrong[:3]}"
    )
  weights = {
    n.removesuffix(EMA_SUFFIX)
    for n in shapes
    if n.startswith(SCOPE + "/") and not re.search(r"/(Adam|Adam_1|Momentum|RMSProp)(_\d+)?$", n)
  }
  extra = sorted(weights - set(mapping))
  if extra:
    raise ValueError(
      f"{len(extra)} U-Net weights in {path!r} have no place in this configuration, "
      f"e.g. {extra[:3]}"
    )
  for name, variable in mapping.items():
    variable.assign(reader.get_tensor(keys[name]).astype(np.float32))
  return LoadReport(keys=tuple(keys[n] for n in mapping), ema=ema)


def build_official_ddpm(
  path: str, *, config: str = "cifar10", ema: bool | None = None, jit_sampling: bool = True
) -> tuple[model_lib.DDPM, LoadReport]:
  """A `DDPM` with the official configuration `config` (key of OFFICIAL_CONFIGS) and the weights
  of the checkpoint at `path`; samples in [0, 1] with our ancestral and DDIM samplers."""
  if config not in OFFICIAL_CONFIGS:
    raise ValueError(f"unknown official config {config!r}; one of {sorted(OFFICIAL_CONFIGS)}")
  c = OFFICIAL_CONFIGS[config]
  gd = diffusion_lib.GaussianDiffusion(
    betas=diffusion_lib.linear_beta_schedule(c.num_timesteps), variance=c.variance
  )
  model = model_lib.DDPM(
    image_shape=(c.image_size, c.image_size, 3),
    unet=c.unet,
    diffusion=gd,
    padded_size=c.image_size,
    jit_sampling=jit_sampling,
    random_flip=c.random_flip,
  )
  return model, load_into_unet(model.unet, path, ema=ema)


__all__ = [
  "OFFICIAL_CONFIGS",
  "OfficialConfig",
  "LoadReport",
  "build_official_ddpm",
  "load_into_unet",
  "variable_map",
]
