"""An official NVlabs/NVAE `checkpoint.pt` (torch.save of {'state_dict', 'args', ...}) built in the
test from the official parameter names (tests/nvae_tf/official_tiny.py) loads into nvae_tf: every
tensor lands in its variable, and layers of the loaded model equal a NumPy computation of the
official layers on the PyTorch-layout tensors (weight-normalised convs, BN in eval mode)."""

import argparse

import numpy as np
import pytest
import tensorflow as tf

from nvae_tf import official
from tests.nvae_tf import official_tiny
from tests.reference import lazy, requires

pytestmark = requires("torch")
torch = lazy("torch")

ATOL = 2e-5


def random_state_dict(seed=0):
  rng = np.random.RandomState(seed)
  out = {}
  for key, shape in official_tiny.state_dict_shapes().items():
    if key.endswith(official.ALIAS_SUFFIX):  # the official alias is the weight Parameter itself
      out[key] = out[key[: -len(official.ALIAS_SUFFIX)] + ".weight"]
    elif key.endswith("num_batches_tracked"):
      out[key] = torch.tensor(7, dtype=torch.int64)
    elif key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
      out[key] = torch.tensor(rng.uniform(0.5, 1.5, shape).astype(np.float32))  # BN var / gamma
    elif key.endswith("log_weight_norm"):
      out[key] = torch.tensor(rng.normal(0.0, 0.2, shape).astype(np.float32))
    else:
      out[key] = torch.tensor(rng.normal(0.0, 0.5, shape).astype(np.float32))
  return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  state = random_state_dict()
  path = tmp_path_factory.mktemp("official") / "checkpoint.pt"
  torch.save(
    {
      "epoch": 3,
      "global_step": 12,
      "state_dict": state,
      "args": official_tiny.args(),
      "arch_instance": {"normal_enc": ["res_bnswish", "res_bnswish"]},
      "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]},
    },
    str(path),
  )
  model, info = official.load_checkpoint(str(path))
  return path, {k: v.numpy() for k, v in state.items()}, model, info


# ----------------------------------------------------------------------------- NumPy references


def wn(weight, log_weight_norm):
  """Official normalize_weight: exp(log_n) * w / (||w|| + 1e-5), norm per output channel."""
  norm = np.sqrt((weight**2).sum(axis=(1, 2, 3), keepdims=True))
  return np.exp(log_weight_norm) * weight / (norm + 1e-5)


def conv_nhwc(x, weight, bias=None, *, stride=1, groups=1):
  """F.conv2d with padding (k - 1) // 2 on NHWC input x and a PyTorch OIHW weight."""
  out_c, in_per_group, k, _ = weight.shape
  p = (k - 1) // 2
  xp = np.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])
  h_out = (x.shape[1] + 2 * p - k) // stride + 1
  w_out = (x.shape[2] + 2 * p - k) // stride + 1
  y = np.zeros((x.shape[0], h_out, w_out, out_c), np.float64)
  for i in range(k):
    for j in range(k):
      patch = xp[:, i : i + stride * h_out : stride, j : j + stride * w_out : stride, :]
      if groups == 1:
        y += patch @ weight[:, :, i, j].T
      else:  # depthwise
        assert in_per_group == 1 and groups == out_c
        y += patch * weight[:, 0, i, j]
  return y if bias is None else y + bias


def bn_eval(x, sd, name):
  """BatchNorm2d in eval mode: (x - running_mean) / sqrt(running_var + 1e-5) * weight + bias."""
  return (x - sd[f"{name}.running_mean"]) / np.sqrt(sd[f"{name}.running_var"] + 1e-5) * sd[
    f"{name}.weight"
  ] + sd[f"{name}.bias"]


def swish(x):
  return x / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------- tests


def test_every_tensor_lands_in_its_variable(checkpoint):
  _, sd, model, info = checkpoint
  assert info["epoch"] == 3 and info["global_step"] == 12
  assert model.config.num_flows == 1 and model.groups_enc == [3]
  params = official.official_parameters(model)
  assert set(params) == {
    k for k in sd if not k.endswith(("num_batches_tracked", official.ALIAS_SUFFIX))
  }
  for key, p in params.items():
    np.testing.assert_array_equal(p.variable.numpy(), p.convert(sd[key]), err_msg=key)
  np.testing.assert_array_equal(model.prior_ftr0.numpy(), sd["prior_ftr0"].transpose(1, 2, 0))
  # Spot checks by our attribute names (independent of the mapping's own bookkeeping).
  np.testing.assert_array_equal(model.stem.kernel.numpy(), sd["stem.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
    model.encoder_combiners[1].conv.bias.numpy(), sd["enc_tower.3.conv.bias"]
  )
  np.testing.assert_array_equal(
    model.decoder_samplers[1].conv.log_weight_norm.numpy(),
    sd["dec_sampler.1.1.log_weight_norm"].reshape(-1),
  )
  np.testing.assert_array_equal(
    model.decoder_cells[1][0].ops[0].bn_depthwise.moving_variance.numpy(),
    sd["dec_tower.1._ops.0.conv.2.conv.1.running_var"],
  )


def test_stem_and_a_down_cell_op_equal_numpy(checkpoint):
  _, sd, model, _ = checkpoint
  rng = np.random.RandomState(1)
  x = rng.uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
  ours = model.stem(tf.constant(x), training=False).numpy()
  ref = conv_nhwc(x, wn(sd["stem.weight"], sd["stem.log_weight_norm"]), sd["stem.bias"])
  np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=1e-5)

  h = rng.normal(size=(2, 32, 32, 4)).astype(np.float32)
  op = model.preprocess[0].ops[0]  # BNSwishConv, stride 2
  ours = op(tf.constant(h), training=False).numpy()
  name = "pre_process.0._ops.0"
  ref = conv_nhwc(
    swish(bn_eval(h, sd, f"{name}.bn_act")),
    wn(sd[f"{name}.conv_0.weight"], sd[f"{name}.conv_0.log_weight_norm"]),
    sd[f"{name}.conv_0.bias"],
    stride=2,
  )
  assert ours.shape == (2, 16, 16, 8)
  np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=1e-5)


def test_inverted_residual_with_depthwise_conv_and_bn_equals_numpy(checkpoint):
  _, sd, model, _ = checkpoint
  h = np.random.RandomState(2).normal(size=(2, 16, 16, 8)).astype(np.float32)
  ours = model.decoder_cells[1][0].ops[0](tf.constant(h), training=False).numpy()
  b = "dec_tower.1._ops.0.conv"
  y = bn_eval(h, sd, f"{b}.0.bn")
  y = swish(bn_eval(conv_nhwc(y, sd[f"{b}.1.conv.0.weight"]), sd, f"{b}.1.conv.1"))
  y = swish(bn_eval(conv_nhwc(y, sd[f"{b}.2.conv.0.weight"], groups=48), sd, f"{b}.2.conv.1"))
  ref = bn_eval(conv_nhwc(y, sd[f"{b}.3.weight"]), sd, f"{b}.4.bn")
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_encoder_combiner_and_sampler_equal_numpy(checkpoint):
  """Decoder group 1's posterior parameters: enc_sampler.1(enc_tower.3(x_enc, s))."""
  _, sd, model, _ = checkpoint
  rng = np.random.RandomState(3)
  x_enc = rng.normal(size=(2, 16, 16, 8)).astype(np.float32)
  s = rng.normal(size=(2, 16, 16, 8)).astype(np.float32)
  ftr = model.encoder_combiners[len(model.encoder_combiners) - 1](x_enc, s, training=False)
  ours = model.encoder_samplers[1](ftr, training=False).numpy()
  c = "enc_tower.3.conv"
  ref = x_enc + conv_nhwc(s, wn(sd[f"{c}.weight"], sd[f"{c}.log_weight_norm"]), sd[f"{c}.bias"])
  ref = conv_nhwc(
    ref,
    wn(sd["enc_sampler.1.weight"], sd["enc_sampler.1.log_weight_norm"]),
    sd["enc_sampler.1.bias"],
  )
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-5)


def test_loaded_model_runs_and_bad_checkpoints_fail_clearly(checkpoint, tmp_path):
  path, _, model, _ = checkpoint
  x = tf.constant((np.random.RandomState(4).uniform(size=(2, 28, 28, 1)) < 0.5).astype(np.float32))
  assert np.all(np.isfinite(model.log_weights(x, 2).numpy()))
  bad = tmp_path / "bad.pt"
  state = random_state_dict()
  del state["enc_sampler.2.bias"]
  torch.save({"state_dict": state, "args": official_tiny.args()}, str(bad))
  with pytest.raises(official.CheckpointError, match="1 missing"):
    official.load_checkpoint(str(bad))
  state = random_state_dict()
  state["stem.bias"] = torch.zeros(5)
  torch.save({"state_dict": state, "args": official_tiny.args()}, str(bad))
  with pytest.raises(official.CheckpointError, match="stem.bias: shape"):
    official.load_checkpoint(str(bad))
  torch.save(
    {"state_dict": {}, "args": argparse.Namespace(**dict(official_tiny.ARGS, dataset="cifar10"))},
    str(bad),
  )
  with pytest.raises(official.CheckpointError, match="cifar10"):
    official.load_checkpoint(str(bad))
  with pytest.raises(official.CheckpointError, match="no checkpoint"):
    official.load_checkpoint(str(tmp_path / "missing.pt"))


def test_nvae_evaluate_runs_on_an_official_checkpoint(checkpoint, tmp_path):
  """The nvae_evaluate command line (in this process: tests/scripts.py) on the official file."""
  import json

  from tests import scripts

  path = checkpoint[0]
  out = tmp_path / "ev"
  proc = scripts.run_script(
    "nvae_evaluate",
    [
      f"--official_checkpoint={path}",
      "--num_iw_samples=2",
      "--iw_chunk=2",
      "--temperature=0.8,1.0",
      "--readjust_bn_steps=1",
      "--test_examples=4",
      "--eval_batch_size=4",
      "--num_grid_images=4",
      "--fid_samples=4",
      "--dataset=mnist",
      f"--output_dir={out}",
    ],
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  row = json.load(open(out / "evaluate.json"))
  # The official data: grey MNIST test images, a Bernoulli draw per pass (datasets.py Binarize).
  assert row["dataset"] == "mnist" and row["binarization"] == "dynamic"
  assert "4 images of mnist (dynamic binarization)" in proc.stdout
  assert row["checkpoint"].endswith("(official, epoch 3)") and row["test_examples"] == 4
  assert np.isfinite(row["nll"]) and sorted(row["temperatures"]) == ["0.8", "1"]
  assert (out / "samples_t0.8.png").exists() and (out / "samples_t1.npz").exists()
  assert proc.stderr.count("Inception weights unavailable") <= 1
