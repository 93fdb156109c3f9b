"""Shared plumbing of the `python -m evaluation.<metric>` commands.

Every command: parse flags (absl, into a private `FlagValues` so the metric modules can be imported
by experiments without defining global flags), open and check every input *before* computing
anything, resolve the feature network only if some input still needs features, extract, compute,
and write outputs (reference-feature cache, --save_stats) only after everything succeeded.
Bad input -> one line `error: ...` on stderr and exit code 2.

Reference features are cached in $GENMODELS_CACHE_DIR/reference_features/<key>.npz (default
~/.cache/genmodels), the key hashing the network's weights file (path, size, mtime), the feature
name and the reference's files (names, sizes, mtimes), so a test set is processed once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import sys
import zipfile
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ logs off stderr

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from evaluation import image_io  # pylint: disable=g-import-not-at-top,wrong-import-position
from evaluation import networks  # pylint: disable=g-import-not-at-top,wrong-import-position

EXIT_BAD_INPUT = 2
FEATURE_KIND = {"inception": ("pool_3", "logits"), "vgg16": ("fc2",)}


def define_common_flags(fv: flags.FlagValues, *, network: str, reference: bool) -> None:
  """--samples, --reference, --batch_size, weights, cache, progress flags."""
  flags.DEFINE_string("samples", None, "Generated images: a folder of PNG/JPEG files, a .npy array "
                      "or a .npz holding one array ('images'); uint8 [N,H,W,C] or float in [0,1], "
                      "C in {1,3}. A .npz of precomputed features (key 'pool_3', 'logits' or 'fc2' "
                      "as the metric needs) is accepted too.", flag_values=fv)
  if reference:
    flags.DEFINE_string("reference", None, "Real images, same formats as --samples (or cached "
                        "features / statistics). Their features are cached, see --cache.",
                        flag_values=fv)
    flags.DEFINE_bool("cache", True, "Cache the reference features under "
                      "$GENMODELS_CACHE_DIR/reference_features (default ~/.cache/genmodels).",
                      flag_values=fv)
  flags.DEFINE_integer("batch_size", 50, "Images per XLA-compiled feature step (memory bound; does "
                       "not change the result).", lower_bound=1, flag_values=fv)
  if network == "inception":
    flags.DEFINE_string("inception_path", None, "TTUR's classify_image_graph_def.pb or "
                        "inception-2015-12-05.tgz, or pytorch-fid's pt_inception-2015-12-05-"
                        "6726825d.pth / torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
                        "(needs PyTorch once), or a folder with one. Default: "
                        f"${networks.INCEPTION_PATH_ENV}, then the cache folder, then a download.",
                        flag_values=fv)
  else:
    flags.DEFINE_string("vgg16_path", None, "Keras's vgg16_weights_tf_dim_ordering_tf_kernels.h5 "
                        f"(or its folder). Default: ${networks.VGG16_PATH_ENV}, then "
                        "~/.keras/models, then a download.", flag_values=fv)
  flags.DEFINE_bool("download", True, "Download missing weights (needs a network connection).",
                    flag_values=fv)
  flags.DEFINE_bool("progress", True, "Show a progress bar while extracting features.",
                    flag_values=fv)
  flags.DEFINE_bool("jit_compile", True, "Compile the feature step with XLA.", flag_values=fv)


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow and probes devices with stderr (fd 2) muted: TF >= 2.20 prints C++
  start-up lines (oneDNN, CUDA probing) that TF_CPP_MIN_LOG_LEVEL does not silence and that would
  bury our one-line errors."""
  if "tensorflow" in sys.modules:
    return
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    tensorflow.config.list_physical_devices()  # device probing logs (cuInit ...) happen here
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def run(argv: list[str] | None, *, doc: str, network: str, define_flags: Callable, body: Callable,
        reference: bool) -> int:
  """Parses `argv` (without the program name), runs `body(flag_values)`, maps errors to exit 2."""
  args = list(sys.argv[1:] if argv is None else argv)
  fv = flags.FlagValues()
  define_common_flags(fv, network=network, reference=reference)
  define_flags(fv)
  if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in args):
    print(doc.strip() + "\n\nFlags:\n" + fv.get_help(include_special_flags=False))
    return 0
  try:
    extra = fv(["evaluation"] + args)[1:]
    if extra:
      raise flags.Error(f"unexpected positional arguments {extra}")
    if not fv.samples:
      raise flags.Error("--samples is required")
    if reference and not fv.reference:
      raise flags.Error("--reference is required")
  except flags.Error as e:
    return _fail(e)
  import_tensorflow_quietly()
  from google.protobuf.message import DecodeError  # pylint: disable=g-import-not-at-top
  try:
    body(fv)
  except (ValueError, OSError, networks.WeightsUnavailableError, DecodeError) as e:
    return _fail(e)
  return 0


def _fail(error: Exception) -> int:
  message = " ".join(str(error).split()) or type(error).__name__
  print(f"error: {message}", file=sys.stderr)
  return EXIT_BAD_INPUT


def check_output_path(path: str | None) -> None:
  """An output file must be writable later: its folder must exist and it must not be a folder."""
  if not path:
    return
  target = pathlib.Path(path)
  if target.is_dir():
    raise ValueError(f"output {target} is a folder")
  if not target.parent.exists():
    raise ValueError(f"output folder {target.parent} does not exist")


@dataclasses.dataclass
class Source:
  """One --samples / --reference input after its checks."""
  flag: str
  kind: str
  images: image_io.ImageFolder | np.ndarray | None = None
  features: np.ndarray | None = None
  stats: tuple[np.ndarray, np.ndarray] | None = None
  fingerprint: str | None = None  # identifies the files, for the reference cache
  cache_file: pathlib.Path | None = None

  @property
  def needs_network(self) -> bool:
    return self.features is None and self.stats is None


def _files_fingerprint(path: pathlib.Path, source) -> str:
  digest = hashlib.sha256()
  files = source.files if isinstance(source, image_io.ImageFolder) else [path]
  for file in files:
    stat = file.stat()
    digest.update(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()


def open_source(path: str, flag: str, *, kind: str, min_count: int, allow_stats: bool = False,
                cacheable: bool = False) -> Source:
  """Opens and checks an input: images, a features .npz (key `kind`) or TTUR statistics."""
  file = pathlib.Path(path)
  source = Source(flag=flag, kind=kind)
  # An .npz is a zip archive: recognised by content, so statistics saved under any name load.
  if file.is_file() and (file.suffix == ".npz" or zipfile.is_zipfile(file)):
    try:
      with np.load(file, allow_pickle=False) as data:
        keys = set(data.files)
        if {"mu", "sigma"} <= keys:
          if not allow_stats:
            raise image_io.ImageInputError(f"{flag} {file} holds FID statistics (mu, sigma); this "
                                           "metric needs images or features")
          source.stats = (data["mu"], data["sigma"])
          return source
        if kind in keys:
          features = np.asarray(data[kind], np.float32)
          if features.ndim != 2:
            raise image_io.ImageInputError(f"{flag} {file}: features '{kind}' must be [N, D], got "
                                           f"shape {features.shape}")
          source.features = features
    except (OSError, ValueError) as e:
      if isinstance(e, image_io.ImageInputError):
        raise
      raise image_io.ImageInputError(f"cannot read {flag} {file}: {e}") from e
  if source.features is None:
    try:
      source.images = image_io.open_images(file)
    except image_io.ImageInputError as e:
      raise image_io.ImageInputError(f"{flag}: {e}") from e
    if cacheable:
      source.fingerprint = _files_fingerprint(file, source.images)
  count = len(source.features if source.features is not None else source.images)
  if count < min_count:
    raise image_io.ImageInputError(f"{flag} {file}: {count} image(s), at least {min_count} needed")
  return source


@dataclasses.dataclass
class Network:
  name: str
  model: object | None
  pending_cache: list[tuple[pathlib.Path, dict[str, np.ndarray]]]


def feature_network(fv, name: str, sources: list[Source]) -> Network:
  """Resolves weights (raising `WeightsUnavailableError`) only if an input still needs features.

  Also looks the cacheable sources up in the reference-feature cache.
  """
  network = Network(name=name, model=None, pending_cache=[])
  needing = [s for s in sources if s.needs_network]
  if not needing:
    return network
  if name == "inception":
    weights = networks.resolve_inception_graph_def(fv.inception_path, download=fv.download)
  else:
    weights = networks.resolve_vgg16_weights(fv.vgg16_path, download=fv.download)
  stat = weights.stat()
  weights_id = f"{name}|{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
  use_cache = getattr(fv, "cache", False)
  for source in needing:
    if use_cache and source.fingerprint is not None:
      key = hashlib.sha256(f"{weights_id}|{source.kind}|{source.fingerprint}".encode()).hexdigest()
      source.cache_file = networks.cache_dir() / "reference_features" / f"{key[:32]}.npz"
      if source.cache_file.exists():
        with np.load(source.cache_file) as data:
          if source.kind in data.files:
            source.features = data[source.kind]
  if any(s.needs_network for s in needing):
    if name == "inception":
      network.model = networks.inception_network(weights, download=False)
    else:
      network.model = networks.vgg16_network(weights, download=False)
  return network


def features_of(source: Source, network: Network, fv) -> np.ndarray:
  """The source's `kind` features: given, cached, or extracted now (cache written at commit)."""
  if source.features is not None:
    return source.features
  from evaluation import features as features_lib  # pylint: disable=g-import-not-at-top
  outputs = features_lib.extract(network.model, source.images, batch_size=fv.batch_size,
                                 progress=fv.progress, jit_compile=fv.jit_compile)
  source.features = outputs[source.kind]
  if source.cache_file is not None:
    network.pending_cache.append((source.cache_file, outputs))
  return source.features


def commit_cache(network: Network) -> None:
  """Writes the reference features extracted in this run (after the metric succeeded)."""
  for path, outputs in network.pending_cache:
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp = path.with_suffix(".tmp.npz")
      np.savez(tmp, **outputs)
      os.replace(tmp, path)
    except OSError as e:
      print(f"note: could not cache reference features at {path}: {e}", file=sys.stderr)
  network.pending_cache.clear()
