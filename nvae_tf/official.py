"""Load NVlabs/NVAE checkpoints (`checkpoint.pt`) into `nvae_tf.NVAE`.

The official `train.py` saves `torch.save({'state_dict': model.state_dict(), 'args': args, 'epoch',
...})`. `config_from_args` rebuilds the architecture from the saved `args`; `official_parameters`
names every variable of an `NVAE` with the key its counterpart has in the official state dict
(module names of the official `AutoEncoder`: `stem`, `pre_process.i`, `enc_tower.i` (cells,
`EncCombinerCell`s and down cells in one flat list), `enc0.1`, `enc_sampler.i`, `dec_sampler.i.1`,
`nf_cells.i`, `dec_tower.i` (cells, `DecCombinerCell`s and up cells), `post_process.i`,
`image_conditional.1`), with the layout conversion from PyTorch (NCHW, OIHW kernels) to Keras.
Reading `.pt` files needs torch (the `reference` extra); it is imported only by `read_checkpoint`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from nvae_tf import layers as L
from nvae_tf.model import NVAE, NVAEConfig

SUPPORTED_DATASETS = ("mnist", "omniglot")  # Bernoulli decoder, 28x28 padded to 32 (official crop)
SUPPORTED_ARCH = "res_mbconv"  # BN-Swish encoder cells, mconv_e6k5g0 / e3k5g0 decoder
IGNORED_SUFFIXES = (".num_batches_tracked",)  # PyTorch BN step counters (no Keras counterpart)
# The official Conv2D (neural_operations.py) assigns `self.weight_normalized = self.normalize_weight()`
# in __init__; without weight norm that is the `weight` Parameter itself, so `state_dict()` holds it
# a second time as `<conv>.weight_normalized` (why the official evaluate.py loads with strict=False).
ALIAS_SUFFIX = ".weight_normalized"
ALIAS_RTOL, ALIAS_ATOL = 1e-5, 1e-6  # float32 recomputation of the weight norm


class CheckpointError(ValueError):
  """An official checkpoint that cannot be loaded into nvae_tf (unsupported args, missing keys...)."""


@dataclasses.dataclass(frozen=True)
class Parameter:
  """One official state-dict entry: its Keras variable and the PyTorch -> Keras conversion."""

  variable: Any
  convert: Callable[[np.ndarray], np.ndarray]
  torch_shape: tuple[int, ...]


def _arg(args, name, default=None):
  if isinstance(args, Mapping):
    return args.get(name, default)
  return getattr(args, name, default)


def config_from_args(args) -> NVAEConfig:
  """NVAEConfig from the official training `args` (argparse.Namespace or dict).

  Defaults for arguments that older checkpoints lack follow the official evaluate.py
  (ada_groups False, min_groups_per_scale 1). The SR/SN setting is not part of the architecture:
  the loaded model uses spectral='none' (the official SR u/v are not saved in checkpoint.pt).
  """
  dataset = _arg(args, "dataset")
  if dataset not in SUPPORTED_DATASETS:
    raise CheckpointError(
      f"dataset {dataset!r} is not supported (nvae_tf has the Bernoulli decoder of "
      f"{SUPPORTED_DATASETS} only)"
    )
  arch = _arg(args, "arch_instance", SUPPORTED_ARCH)
  if arch != SUPPORTED_ARCH:
    raise CheckpointError(f"arch_instance {arch!r} is not supported (only {SUPPORTED_ARCH!r})")
  try:
    return NVAEConfig(
      num_channels_enc=int(_arg(args, "num_channels_enc")),
      num_channels_dec=int(_arg(args, "num_channels_dec")),
      num_preprocess_blocks=int(_arg(args, "num_preprocess_blocks")),
      num_preprocess_cells=int(_arg(args, "num_preprocess_cells")),
      num_postprocess_blocks=int(_arg(args, "num_postprocess_blocks")),
      num_postprocess_cells=int(_arg(args, "num_postprocess_cells")),
      num_latent_scales=int(_arg(args, "num_latent_scales")),
      num_groups_per_scale=int(_arg(args, "num_groups_per_scale")),
      ada_groups=bool(_arg(args, "ada_groups", False)),
      min_groups_per_scale=int(_arg(args, "min_groups_per_scale", 1)),
      num_latent_per_group=int(_arg(args, "num_latent_per_group")),
      num_cell_per_cond_enc=int(_arg(args, "num_cell_per_cond_enc")),
      num_cell_per_cond_dec=int(_arg(args, "num_cell_per_cond_dec")),
      num_flows=int(_arg(args, "num_nf", 0)),
      use_se=bool(_arg(args, "use_se", False)),
      residual_posterior=bool(_arg(args, "res_dist", False)),
      spectral="none",
    )
  except TypeError as e:  # int(None): an argument is missing
    raise CheckpointError(f"checkpoint args lack an architecture argument: {e}") from e


# ----------------------------------------------------------------------------- conversions


def _conv_kernel(depthwise: bool):
  if depthwise:  # torch [C, 1, kh, kw] -> Keras depthwise [kh, kw, C, 1]
    return lambda w: np.transpose(w, (2, 3, 0, 1))
  return lambda w: np.transpose(w, (2, 3, 1, 0))  # torch [O, I, kh, kw] -> Keras [kh, kw, I, O]


def _identity(w):
  return w


def _torch_kernel_shape(conv: L.Conv2D) -> tuple[int, ...]:
  k = conv.kernel_size
  if conv.depthwise:
    return (conv.out_channels, 1, k, k)
  return (conv.out_channels, conv.in_channels, k, k)


def _conv(prefix: str, conv: L.Conv2D) -> dict[str, Parameter]:
  out = {
    f"{prefix}.weight": Parameter(
      conv.kernel, _conv_kernel(conv.depthwise), _torch_kernel_shape(conv)
    )
  }
  if conv.bias is not None:
    out[f"{prefix}.bias"] = Parameter(conv.bias, _identity, (conv.out_channels,))
  if conv.log_weight_norm is not None:  # official shape [C_out, 1, 1, 1]
    out[f"{prefix}.log_weight_norm"] = Parameter(
      conv.log_weight_norm, lambda w: w.reshape(-1), (conv.out_channels, 1, 1, 1)
    )
  return out


def _bn(prefix: str, bn: keras.layers.BatchNormalization) -> dict[str, Parameter]:
  c = (int(bn.gamma.shape[0]),)
  return {
    f"{prefix}.weight": Parameter(bn.gamma, _identity, c),
    f"{prefix}.bias": Parameter(bn.beta, _identity, c),
    f"{prefix}.running_mean": Parameter(bn.moving_mean, _identity, c),
    f"{prefix}.running_var": Parameter(bn.moving_variance, _identity, c),
  }


def _dense(prefix: str, dense: keras.layers.Dense) -> dict[str, Parameter]:
  n_in, n_out = dense.kernel.shape
  return {
    f"{prefix}.weight": Parameter(dense.kernel, np.transpose, (int(n_out), int(n_in))),
    f"{prefix}.bias": Parameter(dense.bias, _identity, (int(n_out),)),
  }


def _cell(prefix: str, cell: L.Cell) -> dict[str, Parameter]:
  """Official `Cell`: `_ops.i` (BNSwishConv: bn_act, conv_0 / InvertedResidual: conv.j), `skip`, `se.se`."""
  out = {}
  op0 = cell.ops[0]
  if isinstance(op0, L.BNSwishConv):
    for i, op in enumerate(cell.ops):
      out.update(_bn(f"{prefix}._ops.{i}.bn_act", op.bn))
      out.update(_conv(f"{prefix}._ops.{i}.conv_0", op.conv))
  elif isinstance(op0, L.InvertedResidual):
    # nn.Sequential([UpsamplingNearest2d]?, BN, ConvBNSwish(1x1), ConvBNSwish(dw), Conv2D(1x1), BN)
    base, o = f"{prefix}._ops.0.conv", 1 if op0.upsample else 0
    out.update(_bn(f"{base}.{o}.bn", op0.bn_in))  # get_batchnorm -> SyncBatchNorm.bn
    out.update(_conv(f"{base}.{o + 1}.conv.0", op0.expand))
    out.update(_bn(f"{base}.{o + 1}.conv.1", op0.bn_expand))  # SyncBatchNormSwish
    out.update(_conv(f"{base}.{o + 2}.conv.0", op0.depthwise))
    out.update(_bn(f"{base}.{o + 2}.conv.1", op0.bn_depthwise))
    out.update(_conv(f"{base}.{o + 3}", op0.project))
    out.update(_bn(f"{base}.{o + 4}.bn", op0.bn_out))
  else:
    raise TypeError(f"unknown cell op {type(op0).__name__}")
  if isinstance(cell.skip, L.FactorizedReduce):
    for j, conv in enumerate(cell.skip.convs):
      out.update(_conv(f"{prefix}.skip.conv_{j + 1}", conv))
  elif isinstance(cell.skip, L.UpsampleSkip):  # nn.Sequential(UpSample(), Conv2D)
    out.update(_conv(f"{prefix}.skip.1", cell.skip.conv))
  if cell.se is not None:  # nn.Sequential(Linear, ReLU, Linear, Sigmoid)
    out.update(_dense(f"{prefix}.se.se.0", cell.se.fc1))
    out.update(_dense(f"{prefix}.se.se.2", cell.se.fc2))
  return out


def _flow(prefix: str, flow: L.PairedAutoregressiveFlow) -> dict[str, Parameter]:
  """Official `PairedCellAR`: cell1 / cell2, each `conv.convz.0` (3x3), `conv.convz.2` (dw), `mu.conv_0`."""
  out = {}
  for name, cell in (("cell1", flow.forward_cell), ("cell2", flow.mirrored_cell)):
    out.update(_conv(f"{prefix}.{name}.conv.convz.0", cell.conv_in))
    out.update(_conv(f"{prefix}.{name}.conv.convz.2", cell.conv_dw))
    out.update(_conv(f"{prefix}.{name}.mu.conv_0", cell.conv_mu))
  return out


def official_modules(model: NVAE) -> list[tuple[str, Any]]:
  """(official module name, our layer) for every top-level module, in official construction order."""
  cfg = model.config
  mods = [("stem", model.stem)]
  mods += [(f"pre_process.{i}", cell) for i, cell in enumerate(model.preprocess)]
  t, group, combiner = 0, 0, 0
  last_scale = len(model.groups_enc) - 1
  for s, num_groups in enumerate(model.groups_enc):  # official init_encoder_tower
    for g in range(num_groups):
      for cell in model.encoder_cells[group]:
        mods.append((f"enc_tower.{t}", cell))
        t += 1
      if not (s == last_scale and g == num_groups - 1):
        mods.append((f"enc_tower.{t}", model.encoder_combiners[combiner]))
        t, combiner = t + 1, combiner + 1
      group += 1
    if s < last_scale:
      mods.append((f"enc_tower.{t}", model.encoder_down[s]))
      t += 1
  mods.append(("enc0.1", model.enc0))  # nn.Sequential(ELU, Conv2D, ELU)
  mods += [(f"enc_sampler.{i}", conv) for i, conv in enumerate(model.encoder_samplers)]
  mods += [(f"dec_sampler.{i}.1", conv) for i, conv in enumerate(model.decoder_samplers)]
  mods += [
    (f"nf_cells.{g * cfg.num_flows + n}", flow)
    for g, flows in enumerate(model.flows)
    for n, flow in enumerate(flows)
  ]
  t, group = 0, 0
  for s, num_groups in enumerate(model.groups_dec):  # official init_decoder_tower
    for _ in range(num_groups):
      for cell in model.decoder_cells[group]:
        mods.append((f"dec_tower.{t}", cell))
        t += 1
      mods.append((f"dec_tower.{t}", model.decoder_combiners[group]))
      t, group = t + 1, group + 1
    if s < len(model.groups_dec) - 1:
      mods.append((f"dec_tower.{t}", model.decoder_up[s]))
      t += 1
  mods += [(f"post_process.{i}", cell) for i, cell in enumerate(model.postprocess)]
  mods.append(("image_conditional.1", model.image_head))  # nn.Sequential(ELU, Conv2D)
  return mods


def official_parameters(model: NVAE) -> dict[str, Parameter]:
  """Official state-dict key -> Parameter for every weight of `model` (BN running stats included)."""
  c, h, w = (
    int(model.prior_ftr0.shape[2]),
    int(model.prior_ftr0.shape[0]),
    int(model.prior_ftr0.shape[1]),
  )
  out = {"prior_ftr0": Parameter(model.prior_ftr0, lambda v: np.transpose(v, (1, 2, 0)), (c, h, w))}
  for name, layer in official_modules(model):
    if isinstance(layer, L.Cell):
      out.update(_cell(name, layer))
    elif isinstance(layer, (L.EncoderCombiner, L.DecoderCombiner)):
      out.update(_conv(f"{name}.conv", layer.conv))
    elif isinstance(layer, L.ELUConv):
      out.update(_conv(name, layer.conv))
    elif isinstance(layer, L.Conv2D):
      out.update(_conv(name, layer))
    elif isinstance(layer, L.PairedAutoregressiveFlow):
      out.update(_flow(name, layer))
    else:
      raise TypeError(f"no official naming for {name}: {type(layer).__name__}")
  return out


def normalized_weight(weight: np.ndarray, log_weight_norm: np.ndarray | None) -> np.ndarray:
  """Official `normalize_weight`: exp(log_n) * w / (||w|| + 1e-5) per output channel; w without norm."""
  if log_weight_norm is None:
    return weight
  norm = np.sqrt(np.sum(weight * weight, axis=(1, 2, 3), keepdims=True))
  return np.exp(log_weight_norm.reshape(-1, 1, 1, 1)) * weight / (norm + 1e-5)


def _check_aliases(aliases: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]) -> None:
  """Each `<conv>.weight_normalized` must equal the normalised `<conv>.weight` it aliases."""
  for key, value in aliases.items():
    conv = key[: -len(ALIAS_SUFFIX)]
    weight = state[f"{conv}.weight"].astype(np.float32)
    log_norm = state.get(f"{conv}.log_weight_norm")
    expected = normalized_weight(weight, None if log_norm is None else log_norm.astype(np.float32))
    if tuple(value.shape) != tuple(expected.shape):
      raise CheckpointError(
        f"{key}: shape {tuple(value.shape)}, but {conv}.weight has {tuple(expected.shape)}"
      )
    if not np.allclose(value, expected, rtol=ALIAS_RTOL, atol=ALIAS_ATOL):
      diff = float(np.max(np.abs(value.astype(np.float64) - expected)))
      raise CheckpointError(
        f"{key} is not the normalised {conv}.weight it aliases (max difference {diff:.3g})"
      )


def load_state_dict(model: NVAE, state_dict: Mapping[str, Any]) -> None:
  """Assigns an official state dict (name -> array / tensor) to `model`; every key must match.

  The official `<conv>.weight_normalized` aliases (see ALIAS_SUFFIX) are accepted beside a conv
  weight when they equal its weight-normalised value; they carry no weight of their own.
  Raises CheckpointError listing missing / unexpected keys, a shape mismatch or a wrong alias.
  """
  params = official_parameters(model)
  state, aliases = {}, {}
  for key, value in state_dict.items():
    key = key[len("module.") :] if key.startswith("module.") else key
    if key.endswith(IGNORED_SUFFIXES):
      continue
    value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    conv_weight = f"{key[: -len(ALIAS_SUFFIX)]}.weight"
    if (
      key.endswith(ALIAS_SUFFIX)
      and conv_weight in params
      and len(params[conv_weight].torch_shape) == 4
    ):
      aliases[key] = value
    else:
      state[key] = value
  missing = sorted(set(params) - set(state))
  unexpected = sorted(set(state) - set(params))
  if missing or unexpected:
    raise CheckpointError(
      f"state dict does not match the architecture from args: "
      f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
      f"(e.g. {unexpected[:3]})"
    )
  for key, param in params.items():
    value = state[key]
    if tuple(value.shape) != param.torch_shape:
      raise CheckpointError(
        f"{key}: shape {tuple(value.shape)} in the checkpoint, {param.torch_shape} expected"
      )
  _check_aliases(aliases, state)
  for key, param in params.items():
    param.variable.assign(param.convert(state[key].astype(np.float32)))


def read_checkpoint(path: str) -> dict:
  """torch.load of an official checkpoint.pt on the CPU (needs torch, imported here).

  Loaded with `weights_only=True`, allowing only `argparse.Namespace` (the saved `args`) besides
  tensors and plain containers, so a checkpoint cannot run code while loading.
  """
  try:
    import torch
  except ImportError as e:
    raise CheckpointError(
      "reading an official checkpoint.pt needs torch (pip install -e .[reference])"
    ) from e
  try:
    with torch.serialization.safe_globals([argparse.Namespace]):
      checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError as e:
    raise CheckpointError(f"no checkpoint at {path}") from e
  except Exception as e:
    raise CheckpointError(
      f"cannot read {path} as an official NVAE checkpoint: {str(e)[:300]}"
    ) from e
  if (
    not isinstance(checkpoint, Mapping)
    or "state_dict" not in checkpoint
    or "args" not in checkpoint
  ):
    raise CheckpointError(f"{path} is not an official NVAE checkpoint (no 'state_dict' / 'args')")
  return checkpoint


def load_checkpoint(path: str, *, seed: int = 0) -> tuple[NVAE, dict]:
  """An NVAE built from the checkpoint's args with its weights; returns (model, info)."""
  checkpoint = read_checkpoint(path)
  config = config_from_args(checkpoint["args"])
  model = NVAE(config, seed=seed)
  load_state_dict(model, checkpoint["state_dict"])
  info = {
    "epoch": checkpoint.get("epoch"),
    "global_step": checkpoint.get("global_step"),
    "config": dataclasses.asdict(config),
  }
  return model, info
