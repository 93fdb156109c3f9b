"""Side-by-side runs of our evaluation code and the field's reference packages.

Shared by the `reference` test tier (tests/reference/test_*.py, which assert the tolerances) and
`bench/reference_report.py` (which prints the table of the docs). Every function returns plain
numbers: max relative differences `max|ours - theirs| / max|theirs|` over all outputs compared, or
exact-count differences. Only random weights are used (no download): the reference networks are
built by the reference packages themselves and handed a random state dict in their own file
format, which our converters read.

Needs torch, torchvision, pytorch-fid, torch-fidelity, clean-fid and lpips (imported here, never
by the `evaluation` package at import time).
"""

from __future__ import annotations

import contextlib
import io
import pathlib
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from tests.reference import lazy  # also hides Triton before torch loads (see there)

torch = lazy("torch")

INCEPTION_SIZES = (28, 64, 299)


def max_relative_difference(ours, theirs) -> float:
  """max |ours - theirs| / max |theirs| (relative to the output's scale, so near-zero entries of
  a feature vector do not blow the ratio up)."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
  return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def scalar_relative_difference(ours: float, theirs: float) -> float:
  return abs(float(ours) - float(theirs)) / max(abs(float(theirs)), 1e-300)


# ------------------------------------------------------------------------------ FID Inception


def random_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
  """A random state dict in pytorch-fid's `pt_inception-2015-12-05-*.pth` layout (torchvision
  `Inception3(num_classes=1008, aux_logits=False)` names), scaled so activations neither vanish
  nor explode through the 94 conv + batch-norm units."""
  import torchvision

  model = torchvision.models.inception_v3(
    weights=None, aux_logits=False, num_classes=1008, init_weights=False
  )
  generator = torch.Generator().manual_seed(seed)
  state = {}
  for name, value in model.state_dict().items():
    if name.endswith("num_batches_tracked"):
      state[name] = value
      continue
    shape = value.shape
    if name.endswith("conv.weight"):
      fan_in = shape[1] * shape[2] * shape[3]
      new = torch.randn(shape, generator=generator) * np.sqrt(2.0 / fan_in)
    elif name.endswith("bn.weight"):
      new = 0.5 + torch.rand(shape, generator=generator)
    elif name.endswith("bn.bias") or name.endswith("running_mean"):
      new = 0.1 * torch.randn(shape, generator=generator)
    elif name.endswith("running_var"):
      new = 0.5 + torch.rand(shape, generator=generator)
    elif name == "fc.weight":
      new = torch.randn(shape, generator=generator) / np.sqrt(shape[1])
    elif name == "fc.bias":
      new = torch.randn(shape, generator=generator)
    else:
      raise KeyError(name)
    state[name] = new.to(value.dtype)
  return state


def write_inception_pth(path, seed: int = 0) -> dict[str, torch.Tensor]:
  state = random_inception_state_dict(seed)
  torch.save(state, path)
  return state


@contextlib.contextmanager
def pytorch_fid_with_weights(path) -> Iterator[None]:
  """pytorch-fid's `fid_inception_v3` loads FID_WEIGHTS_URL through `load_state_dict_from_url`;
  this points that one call at a local file instead (no download)."""
  import pytorch_fid.inception as pf

  original = pf.load_state_dict_from_url
  pf.load_state_dict_from_url = lambda url, progress=True: torch.load(path, weights_only=True)
  try:
    yield
  finally:
    pf.load_state_dict_from_url = original


def inception_images(size: int, channels: int, count: int = 2, seed: int = 0) -> np.ndarray:
  return (
    np.random.default_rng(seed + size + channels)
    .integers(0, 256, (count, size, size, channels))
    .astype(np.uint8)
  )


def _nchw_rgb(images: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(
    np.broadcast_to(images, images.shape[:3] + (3,)).transpose(0, 3, 1, 2)
  )


def tf1_resize(images: np.ndarray, size: int) -> np.ndarray:
  """TensorFlow's own TF1 `ResizeBilinear` kernel (what TTUR's graph runs), float32 NHWC."""
  return tf.compat.v1.image.resize_bilinear(
    images.astype(np.float32), (size, size), align_corners=False, half_pixel_centers=False
  ).numpy()


def inception_cross_check(
  pth_path, *, sizes=INCEPTION_SIZES, count: int = 1, ours=None
) -> list[dict]:
  """Our Keras Inception (weights converted from the .pth) vs torch-fidelity's and pytorch-fid's.

  * torch-fidelity `FeatureExtractorInceptionV3` (its full TTUR protocol: uint8 in, TF1 resize,
    (x - 128) / 128): pool_3 ('2048') and the 1008 logits without bias ('logits_unbiased').
  * pytorch-fid `InceptionV3([3], resize_input=False, normalize_input=False)` fed the TTUR
    input (TF1-resized by TensorFlow's kernel, (x - 128) / 128): pool_3; the logits are
    `pool_3 @ fc.weight^T` of the same file. Its own resize and [0, 1] -> 2x - 1 scaling differ
    from TTUR's (see `pytorch_fid_protocol_difference`), so it is compared at equal input.
  Ours gets grey images as [B, H, W, 1] (it replicates them), the references get them as RGB.

  Returns rows {reference, size, channels, output, max_rel_diff}. `ours`: our network of
  `pth_path` when already built.
  """
  import pytorch_fid.inception as pf
  from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

  from evaluation import networks

  ours = ours or networks.inception_network(str(pth_path), download=False)
  fidelity = FeatureExtractorInceptionV3(
    "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(pth_path)
  )
  with pytorch_fid_with_weights(pth_path):
    pytorch_fid = pf.InceptionV3([3], resize_input=False, normalize_input=False).eval()
  fc_weight = torch.load(pth_path, weights_only=True)["fc.weight"].double().numpy()
  rows = []
  for size in sizes:
    grey, rgb = inception_images(size, 1, count), inception_images(size, 3, count)
    both = np.concatenate([np.repeat(grey, 3, axis=-1), rgb])  # one reference batch per size
    with torch.no_grad():
      pool3, logits = fidelity(torch.from_numpy(_nchw_rgb(both)))
      ttur_input = (tf1_resize(both, 299) - 128.0) / 128.0
      pf_pool3 = pytorch_fid(torch.from_numpy(ttur_input.transpose(0, 3, 1, 2).copy()))[0]
    pf_pool3 = pf_pool3.reshape(2 * count, -1).double().numpy()
    theirs = {
      ("torch-fidelity 0.4", "pool_3"): pool3.numpy(),
      ("torch-fidelity 0.4", "logits"): logits.numpy(),
      ("pytorch-fid 0.3", "pool_3"): pf_pool3,
      ("pytorch-fid 0.3", "logits"): pf_pool3 @ fc_weight.T,
    }
    for channels, images, part in ((1, grey, slice(0, count)), (3, rgb, slice(count, None))):
      got = {k: v.numpy() for k, v in ours(images.astype(np.float32)).items()}
      for (reference, output), value in theirs.items():
        rows.append(
          dict(
            reference=reference,
            size=size,
            channels=channels,
            output=output,
            max_rel_diff=max_relative_difference(got[output], value[part]),
          )
        )
  return rows


def pytorch_fid_protocol_difference(pth_path, *, size: int = 64, count: int = 2, ours=None) -> dict:
  """How far pytorch-fid's own input pipeline is from TTUR's (which ours reproduces).

  pytorch-fid: `F.interpolate(bilinear, align_corners=False)` = half-pixel centres, and
  x / 255 * 2 - 1. TTUR's graph: TF1 legacy `ResizeBilinear` (no half-pixel centres) and
  (x - 128) / 128. Returns max relative differences of the resized images and of pool_3.
  """
  import pytorch_fid.inception as pf
  import torch.nn.functional as F

  from evaluation import networks

  images = inception_images(size, 3, count)
  x = torch.from_numpy(_nchw_rgb(images)).float()
  theirs_resized = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
  theirs_resized = theirs_resized.numpy().transpose(0, 2, 3, 1)
  legacy = tf1_resize(images, 299)
  half_pixel = tf.compat.v1.image.resize_bilinear(
    images.astype(np.float32), (299, 299), half_pixel_centers=True
  ).numpy()
  with pytorch_fid_with_weights(pth_path):
    model = pf.InceptionV3([3]).eval()  # its defaults: resize_input=True, normalize_input=True
  with torch.no_grad():
    theirs = model(x / 255.0)[0].reshape(count, -1).numpy()
  ours = (ours or networks.inception_network(str(pth_path), download=False))(
    images.astype(np.float32)
  )
  return {
    "resize_vs_tf1_legacy": max_relative_difference(theirs_resized, legacy),
    "resize_vs_tf1_half_pixel": max_relative_difference(theirs_resized, half_pixel),
    "pool_3_vs_ours": max_relative_difference(ours["pool_3"].numpy(), theirs),
  }


# ------------------------------------------------------------------------------ LPIPS


def write_random_vgg16_pth(
  path, seed: int = 0, *, features_only: bool = False
) -> dict[str, torch.Tensor]:
  """torchvision `vgg16(weights=None)` with its default random init, saved like
  `vgg16-397923af.pth` (the file LPIPS and torch-fidelity load). features_only: only the conv
  part `features.*` (all LPIPS reads; 59 MB instead of 528 MB)."""
  import torchvision

  torch.manual_seed(seed)
  if features_only:
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])  # vgg16's
    state = {f"features.{k}": v for k, v in features.state_dict().items()}  # PyTorch default init
  else:
    state = torchvision.models.vgg16(weights=None).state_dict()
  torch.save(state, path)
  return state


def lpips_lin_weights_file() -> pathlib.Path:
  """The real LPIPS v0.1 VGG lin weights shipped inside the lpips wheel."""
  import lpips as lpips_package

  return pathlib.Path(lpips_package.__file__).parent / "weights" / "v0.1" / "vgg.pth"


def lpips_cross_check(tmp_dir, *, shape=(3, 32, 48, 3), seed: int = 0) -> dict:
  """Our LPIPS-VGG (weights made by our converter command from the lpips wheel's real v0.1 lin
  weights and a random torchvision VGG-16 file) vs `lpips.LPIPS(net='vgg', pnet_rand=True)` with
  the same VGG weights copied in. Images in [0, 1] (normalize=True). Returns rel diffs."""
  import lpips as lpips_package

  from evaluation import lpips as ours_lpips

  tmp_dir = pathlib.Path(tmp_dir)
  vgg_path = tmp_dir / "vgg16-random.pth"
  vgg_state = write_random_vgg16_pth(vgg_path, seed, features_only=True)
  out = tmp_dir / "lpips_vgg.npz"
  with contextlib.redirect_stdout(io.StringIO()):  # its "wrote <file>" line
    code = ours_lpips.main(
      [
        "--convert",
        "--lin_weights",
        str(lpips_lin_weights_file()),
        "--vgg_weights",
        str(vgg_path),
        "--out",
        str(out),
      ]
    )
  assert code == 0, "LPIPS converter command failed"
  network = ours_lpips.lpips_vgg_network(out)
  reference = lpips_package.LPIPS(
    net="vgg", version="0.1", pretrained=True, pnet_rand=True, verbose=False
  ).eval()
  # lpips' vgg16 slices keep torchvision's `features` indices as module names.
  slice_state = {}
  for key in reference.net.state_dict():
    index_and_param = key.split(".", 1)[1]  # "slice2.5.weight" -> "5.weight"
    slice_state[key] = vgg_state[f"features.{index_and_param}"]
  reference.net.load_state_dict(slice_state)
  rng = np.random.default_rng(seed)
  a = rng.uniform(0, 1, shape).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.2, shape), 0, 1).astype(np.float32)
  grey_a, grey_b = a[..., :1], b[..., :1]
  got = network((a, b)).numpy()
  got_grey = network((grey_a, grey_b)).numpy()
  with torch.no_grad():
    to_torch = lambda x: torch.from_numpy(_nchw_rgb(x))
    want = reference(to_torch(a), to_torch(b), normalize=True).reshape(-1).numpy()
    want_grey = reference(to_torch(grey_a), to_torch(grey_b), normalize=True).reshape(-1).numpy()
  return {
    "rgb": max_relative_difference(got, want),
    "grey": max_relative_difference(got_grey, want_grey),
  }


# ------------------------------------------------------------------------------ KID / IS / PR


def random_features(seed: int = 0, n_real: int = 120, n_fake: int = 100, dim: int = 64):
  rng = np.random.default_rng(seed)
  real = rng.normal(size=(n_real, dim)).astype(np.float32)
  fake = (rng.normal(size=(n_fake, dim)) * 1.2 + 0.3).astype(np.float32)
  return real, fake


def kid_cross_check(*, num_subsets: int = 10, subset_size: int = 50, seed: int = 2020) -> dict:
  """Our KID with the reference's own subset draws (same RandomState stream) vs clean-fid's
  `kernel_distance` and torch-fidelity's `kid_features_to_metric`."""
  from cleanfid import fid as cleanfid_fid
  from torch_fidelity import metric_kid

  from evaluation import kid

  real, fake = random_features(1)
  real, fake = real.astype(np.float64), fake.astype(np.float64)
  # torch-fidelity: input_1 = generated, input_2 = real; RandomState(rng_seed) draws 1 then 2.
  theirs = metric_kid.kid_features_to_metric(
    torch.from_numpy(fake),
    torch.from_numpy(real),
    kid_subsets=num_subsets,
    kid_subset_size=subset_size,
    rng_seed=seed,
    verbose=False,
  )
  ours = kid.kernel_inception_distance(
    fake, real, num_subsets=num_subsets, subset_size=subset_size, rng=np.random.RandomState(seed)
  )
  # clean-fid: kernel_distance(feats1, feats2) draws from feats2 first, then feats1, with the
  # global NumPy RandomState.
  np.random.seed(seed)
  clean = cleanfid_fid.kernel_distance(
    fake, real, num_subsets=num_subsets, max_subset_size=subset_size
  )
  ours_clean = kid.kernel_inception_distance(
    real, fake, num_subsets=num_subsets, subset_size=subset_size, rng=np.random.RandomState(seed)
  )
  return {
    "torch-fidelity mean": scalar_relative_difference(
      ours[0], theirs["kernel_inception_distance_mean"]
    ),
    "torch-fidelity std": scalar_relative_difference(
      ours[1], theirs["kernel_inception_distance_std"]
    ),
    "clean-fid mean": scalar_relative_difference(ours_clean[0], clean),
  }


def is_cross_check(*, n: int = 200, splits: int = 10, seed: int = 3) -> dict:
  """Our Inception Score vs torch-fidelity's `isc_features_to_metric` on the same logits:
  consecutive splits (shuffle=False), and its default shuffle with the permutation applied first."""
  from torch_fidelity import metric_isc

  from evaluation import inception_score

  logits = np.random.default_rng(seed).normal(0, 3, (n, 1008))
  theirs = metric_isc.isc_features_to_metric(torch.from_numpy(logits), splits=splits, shuffle=False)
  ours = inception_score.inception_score(logits, splits=splits)
  shuffled = metric_isc.isc_features_to_metric(
    torch.from_numpy(logits), splits=splits, shuffle=True, rng_seed=2020
  )
  ours_shuffled = inception_score.inception_score(
    logits[np.random.RandomState(2020).permutation(n)], splits=splits
  )
  return {
    "mean": scalar_relative_difference(ours[0], theirs["inception_score_mean"]),
    "std": scalar_relative_difference(ours[1], theirs["inception_score_std"]),
    "mean (shuffled)": scalar_relative_difference(
      ours_shuffled[0], shuffled["inception_score_mean"]
    ),
  }


def kynkaat_precision_recall_counts(real: np.ndarray, fake: np.ndarray, k: int = 3):
  """NumPy port of kynkaat/improved-precision-and-recall-metric `ManifoldEstimator`:
  radii = k-th smallest of each row of the within-set distance matrix *including* the zero self
  distance (`np.partition(d, k)[:, k]`), then `evaluate`: a sample counts when its distance to
  some manifold point is <= that point's radius. Squared distances in float64.
  Returns (#fake inside real manifold, #real inside fake manifold, min relative margin)."""

  def sq(a, b):
    return ((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1)

  def radii(x):
    return np.partition(sq(x, x), k, axis=1)[:, k]

  r_real, r_fake = radii(real), radii(fake)
  d = sq(fake, real)  # [M, N]
  precision_count = int((d <= r_real[None, :]).any(axis=1).sum())
  recall_count = int((d.T <= r_fake[None, :]).any(axis=1).sum())
  margin = min(
    np.abs(d - r_real[None, :]).min() / r_real.max(),
    np.abs(d - r_fake[:, None]).min() / r_fake.max(),
  )
  return precision_count, recall_count, float(margin)


def precision_recall_cross_check(*, k: int = 3) -> dict:
  """Counts of ours vs the kynkaat port and torch-fidelity's `prc_features_to_metric`."""
  from torch_fidelity import metric_prc

  from evaluation import precision_recall

  real, fake = random_features(2, n_real=150, n_fake=130, dim=16)
  precision, recall = precision_recall.precision_recall(real, fake, k=k)
  ours = (round(precision * len(fake)), round(recall * len(real)))
  p_count, r_count, margin = kynkaat_precision_recall_counts(real, fake, k)
  theirs = metric_prc.prc_features_to_metric(
    torch.from_numpy(fake),
    torch.from_numpy(real),
    prc_neighborhood=k,
    prc_batch_size=10000,
    save_cpu_ram=False,
    verbose=False,
  )
  fidelity = (round(theirs["precision"] * len(fake)), round(theirs["recall"] * len(real)))
  return {
    "ours": ours,
    "kynkaat port": (p_count, r_count),
    "torch-fidelity": fidelity,
    "margin": margin,
    "sizes": (len(fake), len(real)),
  }
