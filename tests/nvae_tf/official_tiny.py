"""A tiny NVlabs/NVAE MNIST architecture written out by hand from the official code.

Parameter names and PyTorch shapes follow model.py / neural_operations.py / neural_ar_operations.py
of NVlabs/NVAE for the `args` below (1 latent scale with 3 groups, 4 channels at 32x32, 1
preprocess / postprocess block of 1 cell, 1 cell per group, 2 latents per group, 1 paired IAF
cell per group, SE, residual posterior, arch 'res_mbconv'). Nothing here is derived from nvae_tf.

The key set and shapes equal those of the official `state_dict()` (the `weight_normalized` aliases
included), which tests/nvae_tf/official_state_dict_tiny.json records: that file was written by
running the official code, `python tools/check_official_nvae.py --official_path <NVlabs/NVAE
checkout at 9fc1a28> --config tiny --dump_keys tests/nvae_tf/official_state_dict_tiny.json`
(its "source" field says so), and test_official_architecture.py compares the two.
"""

import argparse

ARGS = dict(
  dataset="mnist",
  arch_instance="res_mbconv",
  num_channels_enc=4,
  num_channels_dec=4,
  num_preprocess_blocks=1,
  num_preprocess_cells=1,
  num_postprocess_blocks=1,
  num_postprocess_cells=1,
  num_latent_scales=1,
  num_groups_per_scale=3,
  ada_groups=True,
  min_groups_per_scale=1,
  num_latent_per_group=2,
  num_cell_per_cond_enc=1,
  num_cell_per_cond_dec=1,
  num_nf=1,
  use_se=True,
  res_dist=True,
  weight_decay_norm=1e-2,
  num_x_bits=8,
  num_mixture_dec=10,
  batch_size=4,
  epochs=1,
)


def args() -> argparse.Namespace:
  return argparse.Namespace(**ARGS)


def conv(name, c_out, c_in, k, *, bias=True, weight_norm=True, groups=1):
  """Official Conv2D / ARConv2d: weight [O, I / groups, k, k], bias [O], log_weight_norm [O, 1, 1, 1].

  A Conv2D without weight norm also has `weight_normalized`: its __init__ assigns
  `self.weight_normalized = self.normalize_weight()`, which is then the `weight` Parameter itself,
  registered a second time under that name.
  """
  out = {f"{name}.weight": (c_out, c_in // groups, k, k)}
  if bias:
    out[f"{name}.bias"] = (c_out,)
  if weight_norm:
    out[f"{name}.log_weight_norm"] = (c_out, 1, 1, 1)
  else:
    out[f"{name}.weight_normalized"] = out[f"{name}.weight"]
  return out


def bn(name, c):
  """nn.BatchNorm2d / SyncBatchNorm / SyncBatchNormSwish buffers and affine parameters."""
  return {
    f"{name}.weight": (c,),
    f"{name}.bias": (c,),
    f"{name}.running_mean": (c,),
    f"{name}.running_var": (c,),
    f"{name}.num_batches_tracked": (),
  }


def se(name, c):
  """SE(C, C): Linear(C, max(C // 16, 4)), ReLU, Linear(., C), Sigmoid."""
  h = max(c // 16, 4)
  return {
    f"{name}.se.se.0.weight": (h, c),
    f"{name}.se.se.0.bias": (h,),
    f"{name}.se.se.2.weight": (c, h),
    f"{name}.se.se.2.bias": (c,),
  }


def res_bnswish_cell(name, c_in, c_out, *, down):
  """Cell with arch ['res_bnswish', 'res_bnswish'] (BNSwishConv: bn_act, conv_0), FactorizedReduce skip."""
  out = {}
  out.update(bn(f"{name}._ops.0.bn_act", c_in))
  out.update(conv(f"{name}._ops.0.conv_0", c_out, c_in, 3))
  out.update(bn(f"{name}._ops.1.bn_act", c_out))
  out.update(conv(f"{name}._ops.1.conv_0", c_out, c_out, 3))
  if down:
    q = c_out // 4
    for j, cj in enumerate([q, q, q, c_out - 3 * q]):
      out.update(conv(f"{name}.skip.conv_{j + 1}", cj, c_in, 1))
  out.update(se(name, c_out))
  return out


def mbconv_cell(name, c_in, c_out, *, ex, up):
  """Cell with arch ['mconv_e{ex}k5g0']: InvertedResidual's nn.Sequential `conv`; up: UpSample + 1x1 skip."""
  out, o, hid = {}, 1 if up else 0, c_in * ex
  base = f"{name}._ops.0.conv"
  out.update(bn(f"{base}.{o}.bn", c_in))  # get_batchnorm -> SyncBatchNorm
  out.update(conv(f"{base}.{o + 1}.conv.0", hid, c_in, 1, bias=False, weight_norm=False))
  out.update(bn(f"{base}.{o + 1}.conv.1", hid))  # SyncBatchNormSwish
  out.update(conv(f"{base}.{o + 2}.conv.0", hid, hid, 5, bias=False, weight_norm=False, groups=hid))
  out.update(bn(f"{base}.{o + 2}.conv.1", hid))
  out.update(conv(f"{base}.{o + 3}", c_out, hid, 1, bias=False, weight_norm=False))
  out.update(bn(f"{base}.{o + 4}.bn", c_out))
  if up:
    out.update(conv(f"{name}.skip.1", c_out, c_in, 1, bias=False))
  out.update(se(name, c_out))
  return out


def paired_ar_cell(name, z):
  """PairedCellAR(num_z): cell1 / cell2 = ARInvertedResidual(ex 6) convz.0 (3x3), convz.2 (dw 5x5), mu."""
  out, hid = {}, 6 * z
  for cell in ("cell1", "cell2"):
    out.update(conv(f"{name}.{cell}.conv.convz.0", hid, z, 3, bias=False))
    out.update(conv(f"{name}.{cell}.conv.convz.2", hid, hid, 5, bias=False, groups=hid))
    out.update(conv(f"{name}.{cell}.mu.conv_0", z, hid, 1))
  return out


def state_dict_shapes() -> dict[str, tuple]:
  """Every key of the official AutoEncoder.state_dict() for ARGS, with its shape."""
  c, z = 8, 2  # channels after the one preprocess down cell (4 -> 8), latents per group
  out = {"prior_ftr0": (c, 16, 16)}
  out.update(conv("stem", 4, 1, 3))
  out.update(res_bnswish_cell("pre_process.0", 4, 8, down=True))
  # enc_tower: [cell g0, combiner, cell g1, combiner, cell g2] (no combiner after the last group)
  out.update(res_bnswish_cell("enc_tower.0", c, c, down=False))
  out.update(conv("enc_tower.1.conv", c, c, 1))
  out.update(res_bnswish_cell("enc_tower.2", c, c, down=False))
  out.update(conv("enc_tower.3.conv", c, c, 1))
  out.update(res_bnswish_cell("enc_tower.4", c, c, down=False))
  out.update(conv("enc0.1", c, c, 1))
  for i in range(3):
    out.update(conv(f"enc_sampler.{i}", 2 * z, c, 3))
    out.update(paired_ar_cell(f"nf_cells.{i}", z))
  for i in range(2):
    out.update(conv(f"dec_sampler.{i}.1", 2 * z, c, 1))
  # dec_tower: [combiner g0, cell, combiner g1, cell, combiner g2]
  out.update(conv("dec_tower.0.conv", c, c + z, 1))
  out.update(mbconv_cell("dec_tower.1", c, c, ex=6, up=False))
  out.update(conv("dec_tower.2.conv", c, c + z, 1))
  out.update(mbconv_cell("dec_tower.3", c, c, ex=6, up=False))
  out.update(conv("dec_tower.4.conv", c, c + z, 1))
  out.update(mbconv_cell("post_process.0", c, 4, ex=3, up=True))
  out.update(conv("image_conditional.1", 1, 4, 3))
  return out


def conv_layer_names() -> list[str]:
  """Official `all_conv_layers` (every Conv2D and ARConv2d module) for ARGS: the set L_SR covers."""
  return sorted(
    k[: -len(".weight")]
    for k, shape in state_dict_shapes().items()
    if k.endswith(".weight") and len(shape) == 4
  )


# Official forward() call order of the top-level modules (encoder, then the top-down pass with the
# encoder combiners taken in reverse: decoder group 1 uses enc_tower.3 on the output of enc_tower.2,
# group 2 uses enc_tower.1 on the output of enc_tower.0).
FORWARD_ORDER = [
  "stem",
  "pre_process.0",
  "enc_tower.0",
  "enc_tower.2",
  "enc_tower.4",
  "enc0.1",
  "enc_sampler.0",
  "nf_cells.0",
  "dec_tower.0",
  "dec_tower.1",
  "dec_sampler.0.1",
  "enc_tower.3",
  "enc_sampler.1",
  "nf_cells.1",
  "dec_tower.2",
  "dec_tower.3",
  "dec_sampler.1.1",
  "enc_tower.1",
  "enc_sampler.2",
  "nf_cells.2",
  "dec_tower.4",
  "post_process.0",
  "image_conditional.1",
]
# (combiner, the encoder module whose output it combines)
COMBINER_INPUTS = {"enc_tower.3": "enc_tower.2", "enc_tower.1": "enc_tower.0"}
