"""Where the feature networks' weights come from, and the functions that return ready networks.

    inception_network(weights_path=None)  # FID / KID / IS: {"pool_3": [B, 2048], "logits": [B, 1008]}
    vgg16_network(weights_path=None)      # precision/recall, realism, PPL: {"fc2": [B, 4096]}

Lookup order for each network (first hit wins):
  1. the `weights_path` argument (CLI: --inception_path / --vgg16_path),
  2. the environment variable GENMODELS_INCEPTION_PATH / GENMODELS_VGG16_PATH,
  3. the cache: $GENMODELS_CACHE_DIR (default ~/.cache/genmodels) for Inception,
     Keras's cache (~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5) for VGG-16,
  4. a download (only with `download=True`): Inception from TTUR's URL, VGG-16 through
     `keras.utils.get_file` with Keras's MD5 check.
If none works, `WeightsUnavailableError` says where to put the file. Nothing is ever faked.

Inception: `weights_path` may be `classify_image_graph_def.pb`, `inception-2015-12-05.tgz`,
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` / torch-fidelity's
`weights-inception-2015-12-05-6726825d.pth` (the same graph ported to PyTorch; reading it needs
PyTorch), or a folder holding one. Step 3 also looks in PyTorch's hub cache
($TORCH_HOME/hub/checkpoints, default ~/.cache/torch), where pytorch-fid / torch-fidelity keep
their download. The file is parsed and checked once (see `evaluation.inception`), and its tensors
are cached as `inception_2015_<sha256[:16]>.npz` in the cache folder; later calls load that (so a
.pth needs PyTorch only the first time). The SHA-256 of the downloaded .tgz is compared with $GENMODELS_INCEPTION_SHA256 when set;
the structural check of `read_graph_def_weights` (every tensor, shape, stride, padding, pool type,
concat order, constant) runs on every .pb regardless.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # for the annotations only
  import keras

# TensorFlow/Keras and the network modules are imported inside the functions that build networks,
# so that resolving (or failing to find) weights does not import TensorFlow.

INCEPTION_PATH_ENV = "GENMODELS_INCEPTION_PATH"
VGG16_PATH_ENV = "GENMODELS_VGG16_PATH"
CACHE_DIR_ENV = "GENMODELS_CACHE_DIR"
INCEPTION_SHA256_ENV = "GENMODELS_INCEPTION_SHA256"
INCEPTION_URL = (
  "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"  # TTUR fid.py
)
INCEPTION_PB = "classify_image_graph_def.pb"
# pytorch_fid/inception.py FID_WEIGHTS_URL; torch_fidelity/feature_extractor_inceptionv3.py
INCEPTION_TORCH_FILES = (
  "pt_inception-2015-12-05-6726825d.pth",
  "weights-inception-2015-12-05-6726825d.pth",
)
TORCH_SUFFIXES = (".pth", ".pt")
VGG16_URL = (
  "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
  "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
)  # keras/src/applications/vgg16.py
VGG16_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
VGG16_MD5 = "64373286793e3c8b2b4e3219cbf3544b"  # file_hash in keras/src/applications/vgg16.py
# torch-fidelity's VGG-16 = torchvision's IMAGENET1K_V1 weights (torchvision/models/vgg.py)
VGG16_TORCH_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_TORCH_FILE = "vgg16-397923af.pth"
VGG16_TORCH_PATH_ENV = "GENMODELS_VGG16_TORCH_PATH"
VGG_VARIANTS = ("keras", "torch-fidelity")
_DOWNLOAD_TIMEOUT_S = 60


class WeightsUnavailableError(RuntimeError):
  """Pretrained weights are not on this machine and could not be downloaded."""


def cache_dir() -> pathlib.Path:
  return pathlib.Path(
    os.environ.get(CACHE_DIR_ENV) or pathlib.Path.home() / ".cache" / "genmodels"
  ).expanduser()


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _extract_pb(tgz: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
  with tarfile.open(tgz, mode="r:*") as archive:
    member = next((m for m in archive.getmembers() if m.name.endswith(INCEPTION_PB)), None)
    if member is None:
      raise WeightsUnavailableError(f"{tgz} does not contain {INCEPTION_PB}")
    out_dir.mkdir(parents=True, exist_ok=True)
    source = archive.extractfile(member)
    target = out_dir / INCEPTION_PB
    with open(target, "wb") as f:
      shutil.copyfileobj(source, f)
  return target


def _local_inception_pb(path: pathlib.Path) -> pathlib.Path:
  """A .pb for a user-given .pb / .tgz / folder path."""
  if not path.exists():
    raise WeightsUnavailableError(
      f"Inception weights not found at {path}: expected TTUR's {INCEPTION_PB} or "
      f"inception-2015-12-05.tgz (from {INCEPTION_URL}), or the PyTorch port "
      f"{' / '.join(INCEPTION_TORCH_FILES)} (pytorch-fid / torch-fidelity), or a folder "
      "holding one"
    )
  if path.is_dir():
    for candidate in (
      path / INCEPTION_PB,
      path / "inception-2015-12-05.tgz",
      *(path / name for name in INCEPTION_TORCH_FILES),
    ):
      if candidate.exists():
        return _local_inception_pb(candidate)
    raise WeightsUnavailableError(
      f"{path} holds neither {INCEPTION_PB}, inception-2015-12-05.tgz "
      f"nor {' / '.join(INCEPTION_TORCH_FILES)}"
    )
  if path.suffix in (".tgz", ".gz", ".tar"):
    return _extract_pb(path, cache_dir() / "inception-2015-12-05")
  return path


def torch_hub_checkpoints() -> pathlib.Path:
  """PyTorch's download cache: $TORCH_HOME/hub/checkpoints (torch.hub default ~/.cache/torch)."""
  torch_home = (
    os.environ.get("TORCH_HOME")
    or pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "torch"
  )
  return pathlib.Path(torch_home).expanduser() / "hub" / "checkpoints"


def _download_inception(target_dir: pathlib.Path) -> pathlib.Path:
  print(f"Downloading {INCEPTION_URL}", file=sys.stderr)
  with tempfile.TemporaryDirectory() as tmp:
    tgz = pathlib.Path(tmp) / "inception-2015-12-05.tgz"
    with (
      urllib.request.urlopen(INCEPTION_URL, timeout=_DOWNLOAD_TIMEOUT_S) as response,
      open(tgz, "wb") as f,
    ):
      shutil.copyfileobj(response, f)
    digest = _sha256(tgz)
    expected = os.environ.get(INCEPTION_SHA256_ENV)
    if expected and digest != expected.lower():
      raise WeightsUnavailableError(
        f"downloaded {INCEPTION_URL} has SHA-256 {digest}, expected "
        f"{expected} (${INCEPTION_SHA256_ENV})"
      )
    print(f"inception-2015-12-05.tgz SHA-256 {digest}", file=sys.stderr)
    return _extract_pb(tgz, target_dir)


def resolve_inception_graph_def(
  weights_path: str | os.PathLike | None = None, *, download: bool = True
) -> pathlib.Path:
  """Path of `classify_image_graph_def.pb`, following the lookup order of this module."""
  given = weights_path or os.environ.get(INCEPTION_PATH_ENV)
  if given:
    return _local_inception_pb(pathlib.Path(given).expanduser())
  cached = cache_dir() / "inception-2015-12-05" / INCEPTION_PB
  if cached.exists():
    return cached
  torch_hub = torch_hub_checkpoints()
  for name in INCEPTION_TORCH_FILES:
    if (torch_hub / name).exists():
      return torch_hub / name
  hint = (
    f"Put {INCEPTION_PB} (inside {INCEPTION_URL}) at {cached}, or set "
    f"${INCEPTION_PATH_ENV} / pass --inception_path to the .pb, .tgz or "
    f"{' / '.join(INCEPTION_TORCH_FILES)}"
  )
  if not download:
    raise WeightsUnavailableError(f"Inception-2015 weights unavailable offline. {hint}.")
  try:
    return _download_inception(cached.parent)
  except (OSError, tarfile.TarError) as e:  # URLError is an OSError
    raise WeightsUnavailableError(
      f"Inception-2015 weights unavailable (download failed: {e}). {hint}."
    ) from e


def load_inception_weights(pb_path: pathlib.Path) -> tuple[dict[str, np.ndarray], int]:
  """Checked graph tensors of a .pb (or a PyTorch .pth), converted once and cached as .npz."""
  from evaluation import inception

  digest = _sha256(pb_path)
  converted = cache_dir() / f"inception_2015_{digest[:16]}.npz"
  if converted.exists():
    with np.load(converted) as data:
      weights = {key: data[key] for key in data.files if key != "__width_divisor__"}
      return weights, int(data["__width_divisor__"])
  if pb_path.suffix in TORCH_SUFFIXES:
    weights, width_divisor = inception.read_torch_weights(str(pb_path))
  else:
    weights, width_divisor = inception.read_graph_def_weights(str(pb_path))
  try:
    converted.parent.mkdir(parents=True, exist_ok=True)
    tmp = converted.with_suffix(".tmp.npz")
    np.savez(tmp, __width_divisor__=np.int64(width_divisor), **weights)
    os.replace(tmp, converted)
  except OSError as e:  # a read-only cache only costs a re-parse next time
    print(f"note: could not cache converted Inception weights at {converted}: {e}", file=sys.stderr)
  return weights, width_divisor


def inception_network(
  weights_path: str | os.PathLike | None = None,
  *,
  download: bool = True,
  dtype_policy: str | None = None,
) -> keras.Model:
  """The FID Inception-2015 network with TTUR's weights, or `WeightsUnavailableError`.

  Returns the model of `evaluation.inception.build_inception_2015`: float [B, H, W, 1|3] in
  [0, 255] -> {"pool_3": [B, 2048], "logits": [B, 1008]}. A file holding a narrow variant of the
  graph (tests) gives the matching narrow network, announced on stderr.
  """
  from evaluation import inception

  pb_path = resolve_inception_graph_def(weights_path, download=download)
  weights, width_divisor = load_inception_weights(pb_path)
  if width_divisor != 1:
    print(
      f"note: {pb_path} is a narrow (1/{width_divisor}) variant of the Inception-2015 graph; "
      "its values are not comparable with published FID/KID/IS.",
      file=sys.stderr,
    )
  model = inception.build_inception_2015(width_divisor=width_divisor, dtype_policy=dtype_policy)
  inception.assign_weights(model, weights)
  return model


@dataclasses.dataclass(frozen=True)
class _WeightsFile:
  """One downloadable weights file and where it is looked for (see the module docstring)."""

  label: str  # "VGG-16", "VGG-16 (torch-fidelity)"
  file: str
  url: str
  env: str
  cached: Callable[[], pathlib.Path]  # the cache location (step 3)
  download: Callable[[pathlib.Path], pathlib.Path]  # cache location -> downloaded file


def _resolve_weights_file(spec: _WeightsFile, weights_path, *, download: bool) -> pathlib.Path:
  """The argument (a file or its folder), $env, the cache, then a download (if allowed)."""
  given = weights_path or os.environ.get(spec.env)
  if given:
    path = pathlib.Path(given).expanduser()
    if path.is_dir():
      path = path / spec.file
    if not path.exists():
      raise WeightsUnavailableError(
        f"{spec.label} weights not found at {path}: expected {spec.file} (from {spec.url})"
      )
    return path
  cached = spec.cached()
  if cached.exists():
    return cached
  hint = f"Put {spec.file} ({spec.url}) at {cached}, or set ${spec.env} / pass --vgg16_path"
  if not download:
    raise WeightsUnavailableError(f"{spec.label} weights unavailable offline. {hint}.")
  try:
    return spec.download(cached)
  except Exception as e:  # keras' get_file raises plain Exception
    raise WeightsUnavailableError(
      f"{spec.label} weights unavailable (download failed: {e}). {hint}."
    ) from e


def _keras_vgg16_cache() -> pathlib.Path:
  return (
    pathlib.Path(os.environ.get("KERAS_HOME", pathlib.Path.home() / ".keras"))
    / "models"
    / VGG16_FILE
  )


def _download_keras_vgg16(cached: pathlib.Path) -> pathlib.Path:
  del cached  # keras.utils.get_file keeps it in its own cache (the same place)
  import keras

  return pathlib.Path(
    keras.utils.get_file(VGG16_FILE, VGG16_URL, cache_subdir="models", file_hash=VGG16_MD5)
  )


def _download_url(url: str) -> Callable[[pathlib.Path], pathlib.Path]:
  def download(target: pathlib.Path) -> pathlib.Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as f:
      shutil.copyfileobj(response, f)
    os.replace(tmp, target)
    return target

  return download


_VGG16_KERAS = _WeightsFile(
  label="VGG-16",
  file=VGG16_FILE,
  url=VGG16_URL,
  env=VGG16_PATH_ENV,
  cached=_keras_vgg16_cache,
  download=_download_keras_vgg16,
)
_VGG16_TORCH = _WeightsFile(
  label="VGG-16 (torch-fidelity)",
  file=VGG16_TORCH_FILE,
  url=VGG16_TORCH_URL,
  env=VGG16_TORCH_PATH_ENV,
  cached=lambda: torch_hub_checkpoints() / VGG16_TORCH_FILE,
  download=_download_url(VGG16_TORCH_URL),
)


def resolve_vgg16_weights(
  weights_path: str | os.PathLike | None = None, *, download: bool = True
) -> pathlib.Path:
  """Path of `vgg16_weights_tf_dim_ordering_tf_kernels.h5`: the argument, $GENMODELS_VGG16_PATH,
  Keras' cache (~/.keras/models, $KERAS_HOME), then `keras.utils.get_file` with its MD5 check."""
  return _resolve_weights_file(_VGG16_KERAS, weights_path, download=download)


def resolve_vgg16_torch_weights(
  weights_path: str | os.PathLike | None = None, *, download: bool = True
) -> pathlib.Path:
  """Path of torchvision's `vgg16-397923af.pth` (torch-fidelity's VGG-16): the argument,
  $GENMODELS_VGG16_TORCH_PATH, PyTorch's hub cache, then a download."""
  return _resolve_weights_file(_VGG16_TORCH, weights_path, download=download)


def load_vgg16_torch_weights(path: pathlib.Path) -> dict[str, list[np.ndarray]]:
  """Converted torchvision VGG-16 weights (PyTorch needed once; cached as .npz by SHA-256)."""
  from evaluation import vgg

  converted = cache_dir() / f"vgg16_torchvision_{_sha256(path)[:16]}.npz"
  if converted.exists():
    with np.load(converted) as data:
      weights: dict[str, list[np.ndarray]] = {}
      for key in data.files:  # "<layer>/<index>"
        layer, index = key.rsplit("/", 1)
        weights.setdefault(layer, []).insert(int(index), data[key])
      return weights
  weights = vgg.read_torchvision_weights(str(path))
  try:
    converted.parent.mkdir(parents=True, exist_ok=True)
    tmp = converted.with_suffix(".tmp.npz")
    np.savez(
      tmp, **{f"{layer}/{i}": a for layer, arrays in weights.items() for i, a in enumerate(arrays)}
    )
    os.replace(tmp, converted)
  except OSError as e:
    print(f"note: could not cache converted VGG-16 weights at {converted}: {e}", file=sys.stderr)
  return weights


def vgg16_network(
  weights_path: str | os.PathLike | None = None,
  *,
  download: bool = True,
  dtype_policy: str | None = None,
  variant: str = "keras",
) -> keras.Model:
  """VGG-16 fc2 with ImageNet weights, or `WeightsUnavailableError`.

  variant "keras": Keras's Caffe VGG-16 (.h5; BGR, mean only); "torch-fidelity": torchvision's
  `vgg16-397923af.pth` as torch-fidelity uses it (RGB, mean/std; features fc2_relu).
  Float [B, H, W, 1|3] in [0, 255] -> {"fc2": [B, 4096]} (after ReLU).
  """
  from evaluation import vgg

  if variant not in VGG_VARIANTS:
    raise ValueError(f"VGG-16 variant must be one of {VGG_VARIANTS}, got {variant!r}")
  if variant == "torch-fidelity":
    path = resolve_vgg16_torch_weights(weights_path, download=download)
    weights = load_vgg16_torch_weights(path)
  else:
    path = resolve_vgg16_weights(weights_path, download=download)
    weights = vgg.read_keras_h5_weights(str(path))
  fc1 = weights.get("fc1")
  width_divisor = 1
  if fc1 is not None and fc1[0].shape[-1] != vgg.FC_WIDTH:
    width_divisor = vgg.FC_WIDTH // max(1, fc1[0].shape[-1])
    print(f"note: {path} is a narrow (1/{width_divisor}) VGG-16 variant.", file=sys.stderr)
  model = vgg.build_vgg16_fc2(
    width_divisor=width_divisor,
    dtype_policy=dtype_policy,
    preprocessing="caffe" if variant == "keras" else "torchvision",
  )
  vgg.load_vgg16_weights(model, weights, source=str(path))
  return model
