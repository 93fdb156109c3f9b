"""The NVAE architecture against the official one written out by hand (tests/nvae_tf/official_tiny.py)
and against the key names and shapes of the official `state_dict()` (official_state_dict_*.json,
produced by running NVlabs/NVAE with tools/check_official_nvae.py --dump_keys): parameter names and
shapes, the `weight_normalized` aliases the loader accepts, the combiner pairing in the forward
pass, and the set of convs that spectral regularisation / normalisation act on."""

import collections
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from nvae_tf import NVAE, official
from nvae_tf import layers as L
from tests.nvae_tf import official_tiny

ALIAS = official.ALIAS_SUFFIX


def tiny_model(**changes):
  config = official.config_from_args(official_tiny.args())
  return NVAE(dataclasses.replace(config, **changes), seed=0)


def official_state_dict(name):
  """{"source", "args", "state_dict": {key: shape}} dumped from the official AutoEncoder."""
  with open(os.path.join(os.path.dirname(__file__), f"official_state_dict_{name}.json")) as f:
    out = json.load(f)
  out["state_dict"] = {k: tuple(v) for k, v in out["state_dict"].items()}
  return out


def test_hand_written_tiny_state_dict_is_the_official_one():
  dumped = official_state_dict("tiny")
  assert dumped["args"] == official_tiny.ARGS
  assert official_tiny.state_dict_shapes() == dumped["state_dict"]
  assert sum(k.endswith(ALIAS) for k in dumped["state_dict"]) == 9  # 3 convs x 3 mbconv cells


def test_readme_mnist_model_names_every_official_key_and_aliases_only_plain_convs():
  dumped = official_state_dict("mnist")
  model = NVAE(official.config_from_args(dumped["args"]), seed=0)
  params = official.official_parameters(model)
  weights = {
    k: v
    for k, v in dumped["state_dict"].items()
    if not k.endswith(official.IGNORED_SUFFIXES + (ALIAS,))
  }
  assert {k: p.torch_shape for k, p in params.items()} == weights
  aliases = [k[: -len(ALIAS)] for k in dumped["state_dict"] if k.endswith(ALIAS)]
  assert len(aliases) == 105 and len(dumped["state_dict"]) == 2016
  for conv in aliases:  # the convs without weight norm, whose alias is the weight Parameter itself
    assert dumped["state_dict"][f"{conv}{ALIAS}"] == weights[f"{conv}.weight"]
    assert f"{conv}.log_weight_norm" not in weights


def test_every_official_parameter_has_a_variable_of_the_same_size():
  model = tiny_model()
  expected = {
    k: v
    for k, v in official_tiny.state_dict_shapes().items()
    if not k.endswith(("num_batches_tracked", ALIAS))
  }
  params = official.official_parameters(model)
  assert sorted(params) == sorted(expected)
  for key, shape in expected.items():
    assert params[key].torch_shape == shape, key
    assert int(np.prod(params[key].variable.shape)) == int(np.prod(shape)), key
  # Every weight of the model is named exactly once (BN moving stats included; SR/SN vectors aside).
  named = collections.Counter(id(p.variable) for p in params.values())
  assert max(named.values()) == 1
  assert len(named) == len(model.variables) - 1  # the SeedGenerator state


def test_forward_pass_visits_modules_in_official_order_with_official_combiner_pairing(digits):
  """Records the calls of the top-level modules during one forward pass of the real model."""
  model = tiny_model()
  names = {id(layer): name for name, layer in official.official_modules(model)}
  calls, outputs, combiner_inputs = [], {}, {}
  for name, layer in official.official_modules(model):
    original = layer.call

    def recorder(*args, _name=name, _original=original, **kwargs):
      calls.append(_name)
      if _name in official_tiny.COMBINER_INPUTS:
        combiner_inputs[_name] = args[0]
      out = _original(*args, **kwargs)
      outputs[_name] = out
      return out

    layer.call = recorder
  model(tf.constant(digits[:2]), training=False)
  assert calls == official_tiny.FORWARD_ORDER
  for combiner, source in official_tiny.COMBINER_INPUTS.items():
    assert combiner_inputs[combiner] is outputs[source], (combiner, source)
  assert len(names) == len(official.official_modules(model))


def _conv_names(model):
  by_kernel = {
    id(p.variable): key[: -len(".weight")]
    for key, p in official.official_parameters(model).items()
    if key.endswith(".weight")
  }
  return lambda convs: sorted(by_kernel[id(c.kernel)] for c in convs)


def test_spectral_regularisation_covers_the_official_conv_set_grouped_by_matrix_shape():
  model = tiny_model(spectral="sr")
  names = _conv_names(model)
  expected = official_tiny.conv_layer_names()
  assert names(model.spectral_convs()) == expected
  # One power-iteration stack per matrix shape (official `weight.view(C_out, -1)` grouping).
  shapes = official_tiny.state_dict_shapes()
  want = collections.Counter(
    (s[0], int(np.prod(s[1:]))) for s in (shapes[f"{n}.weight"] for n in expected)
  )
  got = collections.Counter()
  for state in model.sr_states:
    n, r = state.u.shape
    got[(int(r), int(state.v.shape[1]))] += int(n)
  assert got == want


def test_cells_scope_keeps_only_the_convs_of_the_cells_ops():
  """spectral_scope='cells': the official commented-out `'_ops' in n` choice (no samplers, head...)."""
  model = tiny_model(spectral="sr", spectral_scope="cells")
  expected = [n for n in official_tiny.conv_layer_names() if "._ops." in n]
  assert _conv_names(model)(model.spectral_convs()) == expected
  sn = tiny_model(spectral="sn", spectral_scope="cells")
  normalised = [c for c in sn.conv_layers if c.spectral_state is not None]
  assert _conv_names(sn)(normalised) == expected
  sn_all = tiny_model(spectral="sn")
  assert (
    _conv_names(sn_all)([c for c in sn_all.conv_layers if c.spectral_state is not None])
    == official_tiny.conv_layer_names()
  )


def test_config_from_args_rejects_unsupported_checkpoints():
  with pytest.raises(official.CheckpointError, match="dataset 'cifar10'"):
    official.config_from_args(dict(official_tiny.ARGS, dataset="cifar10"))
  with pytest.raises(official.CheckpointError, match="arch_instance"):
    official.config_from_args(dict(official_tiny.ARGS, arch_instance="res_elu"))
  args = dict(official_tiny.ARGS)
  del args["num_channels_dec"]
  with pytest.raises(official.CheckpointError, match="lack"):
    official.config_from_args(args)
  assert isinstance(tiny_model().image_head, L.ELUConv)


def numpy_state_dict(seed=0):
  """Random official state dict for the tiny args; each alias is its weight, as in the official one."""
  rng = np.random.RandomState(seed)
  out = {}
  for key, shape in official_tiny.state_dict_shapes().items():
    if key.endswith(ALIAS):
      out[key] = out[key[: -len(ALIAS)] + ".weight"]
    elif key.endswith("running_var"):
      out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    else:
      out[key] = rng.normal(0.0, 0.5, shape).astype(np.float32)
  return out


def test_loader_accepts_the_official_aliases_and_refuses_any_other():
  state = numpy_state_dict()
  model = tiny_model()
  official.load_state_dict(model, state)
  conv = "dec_tower.1._ops.0.conv.1.conv.0"
  kernel = official.official_parameters(model)[f"{conv}.weight"].variable.numpy()
  np.testing.assert_array_equal(kernel, np.transpose(state[f"{conv}.weight"], (2, 3, 1, 0)))

  def refused(match, **changes):
    with pytest.raises(official.CheckpointError, match=match):
      official.load_state_dict(tiny_model(), {**state, **changes})

  refused(
    f"{conv}{ALIAS} is not the normalised {conv}.weight",
    **{f"{conv}{ALIAS}": state[f"{conv}.weight"] + 1e-4},
  )
  refused(
    rf"{conv}{ALIAS}: shape \(48, 8\)", **{f"{conv}{ALIAS}": state[f"{conv}.weight"][..., 0, 0]}
  )
  # Beside a weight-normalised conv an alias must be exp(log_n) w / (||w|| + 1e-5) (official
  # normalize_weight_jit), not the raw weight.
  w, log_n = state["stem.weight"], state["stem.log_weight_norm"]
  normalised = np.exp(log_n) * w / (np.sqrt((w**2).sum(axis=(1, 2, 3), keepdims=True)) + 1e-5)
  official.load_state_dict(tiny_model(), {**state, f"stem{ALIAS}": normalised})
  refused(f"stem{ALIAS} is not the normalised stem.weight", **{f"stem{ALIAS}": w})
  # Not an alias of a conv weight: unexpected, as any unknown key.
  refused(
    r"1 unexpected \(e.g. \['enc_tower.0.se.se.0.weight_normalized'\]\)",
    **{f"enc_tower.0.se.se.0{ALIAS}": state["enc_tower.0.se.se.0.weight"]},
  )
  refused(r"1 unexpected \(e.g. \['stem.conv.weight_normalized'\]\)", **{f"stem.conv{ALIAS}": w})
