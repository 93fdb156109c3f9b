"""Our VGG-16 fc2 network with torch-fidelity's weights (`--vgg=torch-fidelity`) vs torch-fidelity's
own `FeatureExtractorVGG16` (the precision/recall network): one random torchvision
`vgg16-397923af.pth`-format state dict, converted by `evaluation.networks`; fc2_relu features
within 1e-4 relative on uint8 images of several sizes (its TF1 resize to 224, RGB mean/std)."""

import numpy as np
import pytest

from evaluation import features, networks, vgg
from tests.reference import lazy, requires

pytestmark = requires("torch", "torchvision", "torch_fidelity")
torch = lazy("torch")
torchvision = lazy("torchvision")


def max_relative_difference(ours, theirs) -> float:
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
  return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def write_random_vgg16_pth(path, seed: int = 0) -> dict:
  """torchvision's VGG-16 layout with its init's distributions (conv kaiming-normal fan_out,
  linear N(0, 0.01)), drawn directly (the module is built on the meta device: no 138M-parameter
  init pass), and non-zero biases so that their conversion is checked too."""
  with torch.device("meta"):
    shapes = {k: v.shape for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}
  generator = torch.Generator().manual_seed(seed)
  state = {}
  for name, shape in shapes.items():
    if name.endswith("bias"):
      std = 0.05
    elif len(shape) == 4:  # [O, I, 3, 3]: torchvision kaiming_normal_(mode="fan_out", relu)
      std = (2.0 / (shape[0] * shape[2] * shape[3])) ** 0.5
    else:
      std = 0.01  # torchvision: nn.init.normal_(linear.weight, 0, 0.01)
    state[name] = std * torch.randn(shape, generator=generator)
  torch.save(state, path)
  return state


def torch_fidelity_features(extractor, images_nhwc: np.ndarray) -> np.ndarray:
  rgb = np.broadcast_to(images_nhwc, images_nhwc.shape[:3] + (3,))
  with torch.no_grad():
    (out,) = extractor(torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))))
  return out.numpy()


@pytest.fixture(scope="module")
def networks_pair(tmp_path_factory):
  """(ours, torch-fidelity's) built from one random file; our conversion cached in a temp dir."""
  from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16

  folder = tmp_path_factory.mktemp("vgg")
  path = folder / networks.VGG16_TORCH_FILE
  write_random_vgg16_pth(path)
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(networks.CACHE_DIR_ENV, str(folder / "cache"))
    ours = networks.vgg16_network(path, download=False, variant="torch-fidelity")
  theirs = FeatureExtractorVGG16(
    "vgg16-fc2", ["fc2_relu"], feature_extractor_weights_path=str(path)
  )
  return ours, theirs


@pytest.mark.parametrize("shape", [(3, 32, 48, 3), (2, 224, 224, 3), (2, 28, 28, 1)])
def test_fc2_relu_equals_torch_fidelity(networks_pair, shape):
  ours_net, theirs_net = networks_pair
  images = np.random.default_rng(sum(shape)).integers(0, 256, shape).astype(np.uint8)
  ours = features.extract(ours_net, images, batch_size=4, progress=False, jit_compile=False)[
    "fc2"
  ]  # the network, not XLA, is under test
  theirs = torch_fidelity_features(theirs_net, images)
  assert (theirs > 0).mean() > 0.2  # the ReLU output is not degenerate
  assert max_relative_difference(ours, theirs) <= 1e-4


def test_converter_permutes_fc1_to_nhwc_flatten_order():
  """Flattening an [H, W, C] map in Keras order times the converted kernel equals flattening the
  [C, H, W] map in PyTorch order times the original weight."""
  rng = np.random.default_rng(0)
  weight = rng.normal(size=(5, 8 * vgg.POOLED_SIZE * vgg.POOLED_SIZE))  # [O, C*7*7]
  chw = rng.normal(size=(8, vgg.POOLED_SIZE, vgg.POOLED_SIZE))
  torch_out = weight @ chw.reshape(-1)
  keras_out = chw.transpose(1, 2, 0).reshape(-1) @ vgg.torchvision_fc1_kernel(weight)
  np.testing.assert_allclose(keras_out, torch_out, rtol=1e-12)
