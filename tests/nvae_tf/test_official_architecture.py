"""The NVAE architecture against the official one written out by hand (tests/nvae_tf/official_tiny.py):
parameter names and shapes, the combiner pairing in the forward pass, and the set of convs that
spectral regularisation / normalisation act on."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from nvae_tf import NVAE
from nvae_tf import layers as L
from nvae_tf import official
from tests.nvae_tf import official_tiny


def tiny_model(**changes):
  config = official.config_from_args(official_tiny.args())
  import dataclasses  # pylint: disable=g-import-not-at-top
  return NVAE(dataclasses.replace(config, **changes), seed=0)


def test_every_official_parameter_has_a_variable_of_the_same_size():
  model = tiny_model()
  expected = {k: v for k, v in official_tiny.state_dict_shapes().items()
              if not k.endswith("num_batches_tracked")}
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
  by_kernel = {id(p.variable): key[:-len(".weight")]
               for key, p in official.official_parameters(model).items() if key.endswith(".weight")}
  return lambda convs: sorted(by_kernel[id(c.kernel)] for c in convs)


def test_spectral_regularisation_covers_the_official_conv_set_grouped_by_matrix_shape():
  model = tiny_model(spectral="sr")
  names = _conv_names(model)
  expected = official_tiny.conv_layer_names()
  assert names(model.spectral_convs()) == expected
  # One power-iteration stack per matrix shape (official `weight.view(C_out, -1)` grouping).
  shapes = official_tiny.state_dict_shapes()
  want = collections.Counter((s[0], int(np.prod(s[1:]))) for s in
                             (shapes[f"{n}.weight"] for n in expected))
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
  assert _conv_names(sn_all)([c for c in sn_all.conv_layers if c.spectral_state is not None]) == \
      official_tiny.conv_layer_names()


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
