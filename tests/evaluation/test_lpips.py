"""LPIPS-VGG: against an independent NumPy implementation of the official forward pass (torch
layouts, NCHW), metric properties, the .npz loader and converter, and PPL with the LPIPS distance.

No real weights exist here: random weights in PyTorch's layouts, narrow (widths / 16)."""

import sys
import types

import numpy as np
import pytest

from evaluation import lpips, networks, ppl

DIVISOR = 16
TORCH_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision vgg16.features


@pytest.fixture(autouse=True)
def _no_env_weights(monkeypatch):
  monkeypatch.delenv(lpips.LPIPS_PATH_ENV, raising=False)


def torch_state_dicts(seed=0, *, width_divisor=DIVISOR, positive=False):
  """(lin_state, vgg_state) with random weights, laid out as the official PyTorch files.

  positive: non-negative conv kernels (with positive biases and positive inputs no ReLU is ever
  inactive, so no feature vector is 0 and LPIPS is smooth; see the PPL test)."""
  rng = np.random.default_rng(seed)
  vgg_state, channels, i = {}, 3, 0
  for width, depth in zip(lpips.tap_widths(width_divisor), lpips.BLOCK_DEPTHS):
    for _ in range(depth):
      j = TORCH_CONV_INDICES[i]
      shape = (width, channels, 3, 3)
      kernel = (
        rng.uniform(0, 2 / (9 * channels), shape)
        if positive
        else rng.normal(0, np.sqrt(2 / (9 * channels)), shape)
      )
      vgg_state[f"features.{j}.weight"] = kernel.astype(np.float32)
      vgg_state[f"features.{j}.bias"] = rng.uniform(0.05, 0.2, width).astype(np.float32)
      channels, i = width, i + 1
  vgg_state["classifier.0.weight"] = np.zeros((2, 2), np.float32)  # ignored by the converter
  lin_state = {
    f"lin{k}.model.1.weight": rng.uniform(0, 1, (1, c, 1, 1)).astype(np.float32)
    for k, c in enumerate(lpips.tap_widths(width_divisor))
  }
  return lin_state, vgg_state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
  lin_state, vgg_state = torch_state_dicts()
  path = tmp_path_factory.mktemp("lpips") / "lpips_vgg.npz"
  lpips.save_weights(path, lpips.convert_state_dicts(lin_state, vgg_state))
  return path, lin_state, vgg_state


@pytest.fixture(scope="module")
def network(weights_file):
  return lpips.lpips_vgg_network(weights_file[0])


# ---- independent reference: the official LPIPS.forward written in NumPy, NCHW / OIHW, float64


def _conv3x3_relu(x, weight, bias):  # x [B, I, H, W], weight [O, I, 3, 3], padding 1
  h, w = x.shape[2:]
  padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
  out = np.zeros((x.shape[0], weight.shape[0], h, w))
  for dy in range(3):
    for dx in range(3):
      out += np.einsum(
        "bihw,oi->bohw", padded[:, :, dy : dy + h, dx : dx + w], weight[:, :, dy, dx]
      )
  return np.maximum(out + bias[None, :, None, None], 0.0)


def _max_pool(x):  # 2x2 stride 2, floor
  b, c, h, w = x.shape
  return x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def numpy_lpips(images_a, images_b, lin_state, vgg_state):
  """images float [B, H, W, 1|3] in [0, 1] -> [B]; follows lpips/lpips.py line by line."""

  def taps(images):
    x = np.broadcast_to(images, images.shape[:3] + (3,)).astype(np.float64).transpose(0, 3, 1, 2)
    x = 2 * x - 1  # normalize=True
    x = (x - np.array([-0.030, -0.088, -0.188])[None, :, None, None]) / np.array(
      [0.458, 0.448, 0.450]
    )[None, :, None, None]
    out, layer = [], 0
    for block, depth in enumerate((2, 2, 3, 3, 3)):
      if block:
        x = _max_pool(x)
      for _ in range(depth):
        j = TORCH_CONV_INDICES[layer]
        x = _conv3x3_relu(
          x,
          vgg_state[f"features.{j}.weight"].astype(np.float64),
          vgg_state[f"features.{j}.bias"].astype(np.float64),
        )
        layer += 1
      out.append(x)
    return out

  total = 0.0
  for k, (fa, fb) in enumerate(zip(taps(images_a), taps(images_b))):
    fa = fa / (np.sqrt((fa**2).sum(1, keepdims=True)) + 1e-10)
    fb = fb / (np.sqrt((fb**2).sum(1, keepdims=True)) + 1e-10)
    w = lin_state[f"lin{k}.model.1.weight"].astype(np.float64)[0, :, 0, 0]
    total = total + np.einsum("bchw,c->bhw", (fa - fb) ** 2, w).mean(axis=(1, 2))
  return total


def _images(seed, shape=(3, 20, 24, 3)):
  return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def test_constants_and_layout():
  assert lpips.torchvision_conv_indices() == TORCH_CONV_INDICES
  assert lpips.tap_widths() == (64, 128, 256, 512, 512)
  shapes = lpips.weight_shapes()
  assert shapes["conv0_kernel"] == (3, 3, 3, 64) and shapes["conv12_kernel"] == (3, 3, 512, 512)
  assert len(shapes) == 13 * 2 + 5


def test_matches_the_numpy_reference_of_the_official_forward(network, weights_file):
  _, lin_state, vgg_state = weights_file
  a, b = _images(0), _images(1)  # 20x24: floor pooling 20->10->5->2->1, 24->12->6->3->1
  got = ppl.lpips_distance(network)(a, b)
  want = numpy_lpips(a, b, lin_state, vgg_state)
  assert got.shape == (3,) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=2e-4)
  # Per-tap outputs too: relu1_2 at full resolution, relu5_3 after four pools.
  taps = network.taps(np.concatenate([a, b]))
  assert [tuple(t.shape[1:3]) for t in taps] == [(20, 24), (10, 12), (5, 6), (2, 3), (1, 1)]
  assert [t.shape[-1] for t in taps] == list(lpips.tap_widths(DIVISOR))
  # Grey input is replicated to RGB.
  grey_a, grey_b = _images(2, (2, 16, 16, 1)), _images(3, (2, 16, 16, 1))
  np.testing.assert_allclose(
    network((grey_a, grey_b)).numpy(), numpy_lpips(grey_a, grey_b, lin_state, vgg_state), rtol=2e-4
  )


def test_metric_properties(network):
  a, b = _images(4), _images(5)
  distance = ppl.lpips_distance(network)
  np.testing.assert_allclose(distance(a, a), 0.0, atol=1e-7)
  d_ab, d_ba = distance(a, b), distance(b, a)
  np.testing.assert_allclose(d_ab, d_ba, rtol=1e-5)
  assert (d_ab > 0).all()
  # Non-negative for any pair, including nearby ones.
  np.testing.assert_array_less(-1e-12, distance(a, np.clip(a + 1e-3 * _images(6), 0, 1)))
  with pytest.raises(ValueError, match="at least 16x16"):
    network((_images(0, (1, 12, 30, 3)), _images(1, (1, 12, 30, 3))))


def test_loader_maps_every_tensor(network, weights_file):
  _, lin_state, vgg_state = weights_file
  convs = [conv for block in network.block_convs for conv in block]
  assert len(convs) == 13 and len(network.weights) == 13 * 2 + 5
  for conv, j in zip(convs, TORCH_CONV_INDICES):
    np.testing.assert_array_equal(
      conv.kernel.numpy(), vgg_state[f"features.{j}.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(conv.bias.numpy(), vgg_state[f"features.{j}.bias"])
  for k, variable in enumerate(network.lin_weights):
    np.testing.assert_array_equal(variable.numpy(), lin_state[f"lin{k}.model.1.weight"].ravel())


def _edit(key, value):
  def edit(weights):
    if value is None:
      del weights[key]
    else:
      weights[key] = value

  return edit


@pytest.mark.parametrize(
  "edit, message",
  [
    (_edit("conv5_kernel", np.zeros((3, 3, 8, 17), np.float32)), r"conv5_kernel has shape"),
    (_edit("lin3", np.zeros(31, np.float32)), r"lin3 has shape"),
    (_edit("conv12_bias", None), r"missing keys \['conv12_bias'\]"),
    (_edit("lin5", np.zeros(4, np.float32)), r"unexpected keys \['lin5'\]"),
    (_edit("lin0", -np.ones(4, np.float32)), "negative"),
    (_edit("conv3_bias", np.full(8, np.nan, np.float32)), "finite"),
    (_edit("conv0_kernel", np.zeros((3, 3, 3, 5), np.float32)), "conv0_kernel"),
  ],
)
def test_malformed_weights_are_a_clear_error(tmp_path, weights_file, edit, message):
  weights, _ = lpips.read_weights(weights_file[0])
  edit(weights)
  path = tmp_path / "bad.npz"
  np.savez(path, format=np.str_(lpips.FORMAT), **weights)
  with pytest.raises(lpips.LPIPSWeightsError, match=message):
    lpips.lpips_vgg_network(path)
  with pytest.raises(lpips.LPIPSWeightsError):
    lpips.save_weights(tmp_path / "never.npz", weights)
  assert not (tmp_path / "never.npz").exists()


def test_corrupt_or_foreign_files_are_a_clear_error(tmp_path, weights_file):
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(b"PK\x03\x04 not really a zip")
  with pytest.raises(lpips.LPIPSWeightsError, match="not a readable .npz"):
    lpips.lpips_vgg_network(corrupt)
  foreign = tmp_path / "foreign.npz"
  weights, _ = lpips.read_weights(weights_file[0])
  np.savez(foreign, **weights)  # no format entry: e.g. some other .npz
  with pytest.raises(lpips.LPIPSWeightsError, match="not an LPIPS-VGG weights file"):
    lpips.lpips_vgg_network(foreign)


def test_missing_weights_raise_weights_unavailable(tmp_path, monkeypatch, weights_file):
  with pytest.raises(networks.WeightsUnavailableError) as error:
    lpips.lpips_vgg_network()
  for hint in (lpips.LPIPS_PATH_ENV, "--lpips_path", lpips.CONVERT_COMMAND, "vgg16-397923af.pth"):
    assert hint in str(error.value)
  monkeypatch.setenv(lpips.LPIPS_PATH_ENV, str(tmp_path / "nowhere.npz"))
  with pytest.raises(networks.WeightsUnavailableError, match="nowhere.npz"):
    lpips.lpips_vgg_network()
  monkeypatch.setenv(lpips.LPIPS_PATH_ENV, str(weights_file[0]))  # the variable is honoured
  assert lpips.lpips_vgg_network().width_divisor == DIVISOR


def test_converter_command(tmp_path, monkeypatch, capsys, weights_file):
  _, lin_state, vgg_state = weights_file
  files = {"vgg.pth": lin_state, "vgg16-397923af.pth": vgg_state}
  argv = [
    "--convert",
    "--lin_weights",
    "vgg.pth",
    "--vgg_weights",
    "vgg16-397923af.pth",
    "--out",
    str(tmp_path / "out.npz"),
  ]
  # Without PyTorch: one clear line, exit code 2, nothing written.
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
  assert lpips.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:") and "PyTorch" in err[0]
  assert not (tmp_path / "out.npz").exists()
  # With a stand-in for torch.load (returns the state dicts): the CLI writes a loadable file.
  monkeypatch.chdir(tmp_path)
  for name in files:
    (tmp_path / name).write_bytes(b"")
  fake = types.SimpleNamespace(load=lambda path, map_location, weights_only: files[path])
  monkeypatch.setitem(sys.modules, "torch", fake)
  assert lpips.main(argv) == 0
  written, divisor = lpips.read_weights(tmp_path / "out.npz")
  reference, _ = lpips.read_weights(weights_file[0])
  assert divisor == DIVISOR and written.keys() == reference.keys()
  for key in reference:
    np.testing.assert_array_equal(written[key], reference[key])
  # Swapped files: the state dicts are recognised and the mistake is named.
  swapped = argv[:2] + ["vgg16-397923af.pth", "--vgg_weights", "vgg.pth"] + argv[5:]
  assert lpips.main(swapped) == 2
  assert "features.0.weight" in capsys.readouterr().err


def _linear_path(seed):
  """A linear generator G(z) = z A + 0.75 ([B, 16, 16, 1], values within about [0.6, 0.9]: after
  LPIPS' scaling layer every input is positive) and a recording latent sampler."""
  rng = np.random.default_rng(seed)
  a = rng.normal(0, 0.02, (4, 16 * 16)).astype(np.float32)
  drawn = []

  def sampler(n):
    drawn.append(rng.normal(size=(n, 4)))
    return drawn[-1]

  return (lambda z: (np.asarray(z, np.float32) @ a + 0.75).reshape(-1, 16, 16, 1)), sampler, drawn


def test_ppl_with_lpips_is_finite_and_uses_lpips_over_eps_squared(tmp_path):
  # LPIPS is not smooth where a tap's feature vector is 0 (f / (|f| + 1e-10) jumps): with random
  # narrow weights such ReLU-dead positions are common, so this test uses non-negative kernels and
  # positive inputs, where every feature is > 0 and LPIPS is quadratic in small image changes.
  lin_state, vgg_state = torch_state_dicts(1, positive=True)
  lpips.save_weights(tmp_path / "smooth.npz", lpips.convert_state_dicts(lin_state, vgg_state))
  distance = ppl.lpips_distance(lpips.lpips_vgg_network(tmp_path / "smooth.npz"))
  eps = 1e-2
  generate, sampler, drawn = _linear_path(0)
  values = ppl.path_length_samples(
    generate,
    latent_sampler=sampler,
    num_samples=6,
    distance=distance,
    epsilon=eps,
    interpolation="lerp",
    seed=3,
  )
  assert values.shape == (6,) and np.isfinite(values).all() and (values > 0).all()
  assert np.isfinite(ppl.filtered_mean(values))
  # Exactly LPIPS(G(z(t)), G(z(t + eps))) / eps^2: the LPIPS value, not squared again (StyleGAN).
  z0, z1 = drawn
  t = np.random.default_rng(3).uniform(0, 1, 6)
  want = (
    numpy_lpips(
      generate(ppl.lerp(z0, z1, t)), generate(ppl.lerp(z0, z1, t + eps)), lin_state, vgg_state
    )
    / eps**2
  )
  np.testing.assert_allclose(values, want, rtol=2e-3)
  # LPIPS is quadratic in a small image change, so LPIPS / eps^2 hardly depends on eps (its
  # square root would scale as 1/eps, squaring it again as eps^2). Same latents and t, eps / 4:
  generate, sampler, _ = _linear_path(0)
  smaller = ppl.path_length_samples(
    generate,
    latent_sampler=sampler,
    num_samples=6,
    distance=distance,
    epsilon=eps / 4,
    interpolation="lerp",
    seed=3,
  )
  np.testing.assert_allclose(smaller, values, rtol=0.05)
