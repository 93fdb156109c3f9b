"""Shared plumbing of the `python -m evaluation.<metric>` commands.

Every command: parse flags (absl, into a private `FlagValues` so the metric modules can be imported
by experiments without defining global flags), open and check every input *before* computing
anything, resolve the feature network only if some input still needs features, extract, compute,
and write outputs (reference-feature cache, --save_stats) only after everything succeeded.
Bad input -> one line `error: ...` on stderr and exit code 2.

Reference features are cached in $GENMODELS_CACHE_DIR/reference_features/<key>.npz (default
~/.cache/genmodels), the key hashing the network's weights file (path, size, mtime), the VGG
variant, resize mode and precision, the feature name and the reference's files (names, sizes,
mtimes) or its data-set name, so a test set is processed once. The cache entry holds the
protocol record (`evaluation.protocol`) next to the features.

Every command prints its value(s), then `protocol: ...` (network, weights SHA-256, layer, resize,
precision, image count and size per input, package version); inputs carrying records made under
different protocols are refused (`--nostrict_protocol` turns that into a warning).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import sys
import zipfile
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ logs off stderr

import numpy as np
from absl import flags

from evaluation import extractors, image_io, networks, references
from evaluation import protocol as protocol_lib
from evaluation.quiet_tf import import_tensorflow_quietly  # also cli.import_tensorflow_quietly

EXIT_BAD_INPUT = 2
FEATURE_KIND = {"inception": ("pool_3", "logits"), "vgg16": ("fc2",)}
PRECISIONS = {"float32": None, "bfloat16": "mixed_bfloat16"}  # --precision -> Keras dtype policy
CACHE_VERSION = "2"  # bump when the cached content changes (2: protocol record, resize, precision)


@dataclasses.dataclass
class Options:
  """The settings of a feature extraction (the common flags; the Python API builds one)."""

  inception_path: str | None = None
  vgg16_path: str | None = None
  vgg: str = "keras"
  download: bool = True
  cache: bool = True
  batch_size: int = 50
  progress: bool = False
  jit_compile: bool = True
  resize: str = "tf1"
  precision: str = "float32"
  device: str | None = None
  workers: int = image_io.DEFAULT_WORKERS
  strict_protocol: bool = True
  subsamples: int = 0
  subsample_rate: float = 0.5
  subsample_seed: int = 0
  confidence: float = 0.95
  json: bool = False
  features: str | None = None  # a registered feature extractor (`evaluation.extractors`)
  extractor_module: str | None = None


def define_common_flags(fv: flags.FlagValues, *, network: str, reference: bool) -> None:
  """--samples, --reference, --batch_size, weights, cache, progress flags."""
  flags.DEFINE_string(
    "samples",
    None,
    "Generated images: a folder (searched recursively) or a "
    ".zip of PNG/JPEG/WebP/BMP/TIFF files, a .npy array "
    "or a .npz holding one array ('images'); uint8 [N,H,W,C] or float in [0,1], "
    "C in {1,3}. A .npz of precomputed features (key 'pool_3', 'logits' or 'fc2' "
    "as the metric needs) is accepted too.",
    flag_values=fv,
  )
  if reference:
    flags.DEFINE_string(
      "reference",
      None,
      "Real images, same formats as --samples, or a data "
      "set by name (tfds:mnist/test), or cached features / statistics. Their "
      "features are cached, see --cache.",
      flag_values=fv,
    )
    flags.DEFINE_bool(
      "cache",
      True,
      "Cache the reference features under "
      "$GENMODELS_CACHE_DIR/reference_features (default ~/.cache/genmodels).",
      flag_values=fv,
    )
  flags.DEFINE_integer(
    "batch_size",
    50,
    "Images per XLA-compiled feature step (memory bound; does not change the result).",
    lower_bound=1,
    flag_values=fv,
  )
  if network in ("inception", "both"):
    flags.DEFINE_string(
      "inception_path",
      None,
      "TTUR's classify_image_graph_def.pb or "
      "inception-2015-12-05.tgz, or pytorch-fid's pt_inception-2015-12-05-"
      "6726825d.pth / torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
      "(needs PyTorch once), or a folder with one. Default: "
      f"${networks.INCEPTION_PATH_ENV}, then the cache folder, then a download.",
      flag_values=fv,
    )
  if network in ("vgg16", "both"):
    flags.DEFINE_string(
      "vgg16_path",
      None,
      "Keras's vgg16_weights_tf_dim_ordering_tf_kernels.h5 "
      f"(or its folder). Default: ${networks.VGG16_PATH_ENV}, then "
      "~/.keras/models, then a download.",
      flag_values=fv,
    )
  flags.DEFINE_bool(
    "download", True, "Download missing weights (needs a network connection).", flag_values=fv
  )
  flags.DEFINE_bool(
    "progress", True, "Show a progress bar while extracting features.", flag_values=fv
  )
  flags.DEFINE_bool("jit_compile", True, "Compile the feature step with XLA.", flag_values=fv)
  if network in ("vgg16", "both"):
    flags.DEFINE_enum(
      "vgg",
      "keras",
      list(networks.VGG_VARIANTS),
      "VGG-16 for the features: "
      "'keras' (Keras' Caffe VGG-16 .h5, BGR mean-only input) or 'torch-fidelity' "
      "(torchvision's vgg16-397923af.pth as torch-fidelity uses it, RGB mean/std; "
      "PyTorch needed once to convert it). --vgg16_path points at the file of "
      "the chosen variant.",
      flag_values=fv,
    )
  flags.DEFINE_enum(
    "resize",
    "tf1",
    ["tf1", "clean", "pytorch-fid"],
    "Resize to the network's "
    "input size: 'tf1' (TF1 legacy bilinear, as TTUR / torch-fidelity; default), "
    "'clean' (PIL bicubic antialias, as clean-fid) or 'pytorch-fid' (pytorch-fid's "
    "own pipeline: x / 255, half-pixel bilinear to 299, 2 x - 1; Inception only).",
    flag_values=fv,
  )
  flags.DEFINE_enum(
    "precision",
    "float32",
    list(PRECISIONS),
    "Compute dtype of the network "
    "('bfloat16' = Keras mixed_bfloat16; values differ from float32 ones and are "
    "recorded as such).",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "device",
    None,
    "TensorFlow device for the network, e.g. 'cpu', 'gpu:0' (default: TensorFlow's choice).",
    flag_values=fv,
  )
  flags.DEFINE_integer(
    "workers", image_io.DEFAULT_WORKERS, "Threads decoding images.", lower_bound=1, flag_values=fv
  )
  flags.DEFINE_bool(
    "strict_protocol",
    True,
    "Refuse to compare inputs whose protocol records "
    "differ (network, weights, layer, resize, precision, image size).",
    flag_values=fv,
  )
  flags.DEFINE_integer(
    "subsamples",
    0,
    "Replicates of a confidence interval for the population "
    "value (0: none), printed as `value [lo, hi]`: each replicate recomputes the "
    "metric on round(rate * n) distinct rows of every set (subsampling without "
    "replacement, Politis-Romano-Wolf interval with finite-population factor "
    "sqrt(rate / (1 - rate)); valid for biased metrics such as FID, whose "
    "interval may lie below the finite-sample value; precision/recall: the expected value at "
    "the given set sizes). See docs/evaluation.md.",
    lower_bound=0,
    flag_values=fv,
  )
  flags.DEFINE_float(
    "subsample_rate",
    0.5,
    "Fraction of every set drawn per subsample replicate "
    "(0.5, half-sampling, also removes FID's O(1/n) bias; other rates are valid "
    "for unbiased metrics such as KID).",
    lower_bound=0.05,
    upper_bound=0.95,
    flag_values=fv,
  )
  flags.DEFINE_integer("subsample_seed", 0, "Seed of the subsample draws.", flag_values=fv)
  flags.DEFINE_float(
    "confidence",
    0.95,
    "Confidence level of the --subsamples interval.",
    lower_bound=0.5,
    upper_bound=0.999,
    flag_values=fv,
  )
  flags.DEFINE_integer(
    "bootstrap",
    None,
    "Removed: resampling with replacement biases FID and KID; use --subsamples N.",
    flag_values=fv,
  )
  flags.DEFINE_integer("bootstrap_seed", None, "Removed: use --subsample_seed.", flag_values=fv)
  flags.DEFINE_bool(
    "json",
    False,
    "Print one JSON object (values, intervals, protocol records) instead of the text lines.",
    flag_values=fv,
  )


def define_extractor_flags(fv: flags.FlagValues) -> None:
  """--features NAME and --extractor_module MODULE (FID, KID, precision/recall)."""
  flags.DEFINE_string(
    "features",
    None,
    "A feature extractor registered with evaluation.features.register_extractor, used "
    "instead of the built-in network (recorded as the protocol's network).",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "extractor_module",
    None,
    "A module (dotted name, or a .py file) imported first; its register_extractor calls "
    "make --features names available.",
    flag_values=fv,
  )


def extractor_of(fv) -> extractors.Extractor | None:
  """The registered extractor named by --features / features= (loading --extractor_module
  first), None when the built-in network is used. UnknownExtractorError for an unknown name."""
  module = getattr(fv, "extractor_module", None)
  name = getattr(fv, "features", None)
  if module and not name:
    raise ValueError("--extractor_module is given without --features NAME")
  if not name:
    return None
  if module:
    extractors.load_module(module)
  return extractors.get_extractor(name)


def feature_kind(fv, default: str) -> str:
  """The output a metric reads: the registered extractor's (--features), else `default`."""
  extractor = extractor_of(fv)
  return default if extractor is None else extractor.feature


REMOVED_FLAGS = {
  "bootstrap": "--bootstrap was removed: resampling with replacement duplicates images, which "
  "inflates FID and breaks KID's unbiased estimate; use --subsamples N "
  "(subsampling without replacement, see docs/evaluation.md)",
  "bootstrap_seed": "--bootstrap_seed was removed; use --subsample_seed",
}


def check_removed_flags(fv) -> None:
  """ValueError naming the replacement when a removed flag was given."""
  for name, message in REMOVED_FLAGS.items():
    if name in fv and fv[name].present:
      raise ValueError(message)


def run(
  argv: list[str] | None,
  *,
  doc: str,
  network: str,
  define_flags: Callable,
  body: Callable,
  reference: bool,
) -> int:
  """Parses `argv` (without the program name), runs `body(flag_values)`, maps errors to exit 2."""

  def define_all(fv):
    define_common_flags(fv, network=network, reference=reference)
    define_flags(fv)

  fv, _, code = parse_command(
    argv,
    doc=doc,
    define_flags=define_all,
    required=("samples", "reference") if reference else ("samples",),
  )
  if code is not None:
    return code
  try:
    check_removed_flags(fv)
  except ValueError as e:
    return fail(e)
  import_tensorflow_quietly()
  from google.protobuf.message import DecodeError

  try:
    body(fv)
  except (ValueError, OSError, RuntimeError, DecodeError) as e:  # incl. WeightsUnavailableError
    return fail(e)
  return 0


def parse_command(
  argv: list[str] | None, *, doc: str, define_flags: Callable, required: tuple[str, ...] = ()
) -> tuple[flags.FlagValues, list[str], int | None]:
  """A command's flags: `define_flags(fv)` on fresh FlagValues, parsed from `argv` (None:
  sys.argv[1:]). Returns (the flag values, the arguments, `parse_args`'s code: None to run)."""
  args = list(sys.argv[1:] if argv is None else argv)
  fv = flags.FlagValues()
  define_flags(fv)
  return fv, args, parse_args(fv, args, doc=doc, required=required)


def parse_args(
  fv: flags.FlagValues, args: list[str], *, doc: str, required: tuple[str, ...] = ()
) -> int | None:
  """Parses `args` into `fv`. Returns 0 after printing the help (-h/--help), 2 after one `error:`
  line (bad or missing flags), None when the command should run."""
  if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in args):
    print(doc.strip() + "\n\nFlags:\n" + fv.get_help(include_special_flags=False))
    return 0
  try:
    extra = fv(["evaluation"] + args)[1:]
    if extra:
      raise flags.Error(f"unexpected positional arguments {extra}")
    for name in required:
      if not fv[name].value:
        raise flags.Error(f"--{name} is required")
  except flags.Error as e:
    return fail(e)
  return None


def fail(error: Exception) -> int:
  """Prints `error: <message>` (one line) on stderr; returns the exit code for bad input."""
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
  protocol: dict | None = None  # how its features / statistics were made
  num_samples: int | None = None  # for a generator function
  outputs: dict | None = None  # every output of the network, once extracted here

  def sibling(self, kind: str) -> Source:
    """The same input read for another output of the same network (e.g. logits next to
    pool_3): shares the images; `features_of` on either fills both (`share_outputs`)."""
    return dataclasses.replace(
      self, kind=kind, features=None, stats=None, cache_file=None, protocol=None, outputs=None
    )

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


def open_source(
  path: str,
  flag: str,
  *,
  kind: str,
  min_count: int,
  allow_stats: bool = False,
  cacheable: bool = False,
) -> Source:
  """Opens and checks an input: images, a features .npz (key `kind`) or TTUR statistics."""
  if isinstance(path, str) and path.startswith(references.PREFIX):
    source = Source(
      flag=flag, kind=kind, images=references.NamedReference(path), fingerprint=f"name|{path}"
    )
    return source
  file = pathlib.Path(path)
  source = Source(flag=flag, kind=kind)
  # An .npz is a zip archive: recognised by content, so statistics saved under any name load.
  if file.is_file() and (file.suffix == ".npz" or zipfile.is_zipfile(file)):
    try:
      with np.load(file, allow_pickle=False) as data:
        keys = set(data.files)
        if {"mu", "sigma"} <= keys:
          if not allow_stats:
            raise image_io.ImageInputError(
              f"{flag} {file} holds FID statistics (mu, sigma); this "
              "metric needs images or features"
            )
          source.stats = (data["mu"], data["sigma"])
          source.protocol = protocol_lib.from_npz(data)
          return source
        if kind in keys:
          features = np.asarray(data[kind], np.float32)
          if features.ndim != 2:
            raise image_io.ImageInputError(
              f"{flag} {file}: features '{kind}' must be [N, D], got shape {features.shape}"
            )
          source.features = features
          source.protocol = protocol_lib.with_feature(protocol_lib.from_npz(data), kind)
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


def source_from_object(
  obj,
  flag: str,
  *,
  kind: str,
  min_count: int,
  allow_stats: bool = False,
  num_samples: int | None = None,
  cacheable: bool = False,
) -> Source:
  """A Source for the Python API: a path or `tfds:` name (as `open_source`), an image array, a
  `tf.data.Dataset`, a generator function `fn(n) -> images` (with `num_samples`), or FID
  statistics given as a (mu, sigma) tuple."""
  if isinstance(obj, (str, os.PathLike)):
    return open_source(
      str(obj), flag, kind=kind, min_count=min_count, allow_stats=allow_stats, cacheable=cacheable
    )
  if isinstance(obj, tuple) and len(obj) == 2 and allow_stats:
    return Source(flag=flag, kind=kind, stats=(np.asarray(obj[0]), np.asarray(obj[1])))
  if callable(obj) and not hasattr(obj, "element_spec"):
    if num_samples is None or num_samples < min_count:
      raise image_io.ImageInputError(
        f"{flag}: a generator function needs num_samples >= {min_count}, got {num_samples}"
      )
    return Source(flag=flag, kind=kind, images=obj, num_samples=num_samples)
  if hasattr(obj, "element_spec"):  # tf.data.Dataset (count known after extraction)
    return Source(flag=flag, kind=kind, images=obj)
  array = image_io.check_image_array(obj, what=flag)
  if len(array) < min_count:
    raise image_io.ImageInputError(f"{flag}: {len(array)} image(s), at least {min_count} needed")
  return Source(flag=flag, kind=kind, images=array)


@dataclasses.dataclass
class Network:
  name: str
  model: object | None
  pending_cache: list[tuple[pathlib.Path, dict[str, np.ndarray]]]
  label: str = ""  # protocol name, e.g. "inception-2015", "vgg16-torch-fidelity"
  options: object | None = None
  extractor: extractors.Extractor | None = None  # a registered extractor (--features)

  def resize_name(self, mode: str) -> str:
    """The protocol's resize: a registered extractor takes the images as given under "tf1"."""
    from evaluation import resize as resize_lib

    if self.extractor is not None and mode == "tf1":
      return "none"
    return resize_lib.describe_resize(mode)


def network_label(name: str, fv) -> str:
  return "inception-2015" if name == "inception" else f"vgg16-{getattr(fv, 'vgg', 'keras')}"


def _device_scope(device: str | None):
  """tf.device(device) after checking that such a device exists (ValueError otherwise)."""
  import contextlib

  import tensorflow as tf

  if not device:
    return contextlib.nullcontext()
  wanted = device.strip("/").lower().replace("device:", "")
  kind, _, index = wanted.partition(":")
  names = [d.name for d in tf.config.list_logical_devices()]
  for name in names:
    have = name.lower().split("device:")[-1]
    have_kind, _, have_index = have.partition(":")
    if have_kind == kind and (not index or index == have_index):
      return tf.device(name)
  raise ValueError(f"--device {device}: no such device here (available: {', '.join(names)})")


def feature_network(fv, name: str, sources: list[Source]) -> Network:
  """Resolves weights (raising `WeightsUnavailableError`) only if an input still needs features.

  Also looks the cacheable sources up in the reference-feature cache. With --features NAME the
  registered extractor replaces the built-in network `name`.
  """
  extractor = extractor_of(fv)
  if extractor is not None:
    return _extractor_network(fv, extractor, sources)
  network = Network(
    name=name, model=None, pending_cache=[], label=network_label(name, fv), options=fv
  )
  needing = [s for s in sources if s.needs_network]
  if not needing:
    return network
  variant = getattr(fv, "vgg", "keras")
  if name == "inception":
    weights = networks.resolve_inception_graph_def(fv.inception_path, download=fv.download)
  elif variant == "torch-fidelity":
    weights = networks.resolve_vgg16_torch_weights(fv.vgg16_path, download=fv.download)
  else:
    weights = networks.resolve_vgg16_weights(fv.vgg16_path, download=fv.download)
  stat = weights.stat()
  weights_file = f"{network.label}|{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
  _look_up_cache(fv, f"v{CACHE_VERSION}|{weights_file}|{fv.resize}|{fv.precision}", needing)
  for source in needing:  # a named reference not cached must be loadable before any work
    if source.needs_network and isinstance(source.images, references.NamedReference):
      source.images.check(download=fv.download)
  if any(s.needs_network for s in needing):
    policy = PRECISIONS[fv.precision]
    device = getattr(fv, "device", None)
    key = (weights_file, policy, device)  # the resize mode does not change the network
    network.model = _BUILT.get(key)
    if network.model is None:
      with _device_scope(device):
        if name == "inception":
          network.model = networks.inception_network(weights, download=False, dtype_policy=policy)
        else:
          network.model = networks.vgg16_network(
            weights, download=False, dtype_policy=policy, variant=variant
          )
      _BUILT.clear()  # keep one network alive (VGG-16 is 0.5 GB)
      _BUILT[key] = network.model
  return network


def _look_up_cache(fv, weights_id: str, needing: list[Source]) -> None:
  """Reads the cached features of the cacheable sources (key: weights_id, kind, files)."""
  if not getattr(fv, "cache", False):
    return
  for source in needing:
    if source.fingerprint is None:
      continue
    key = hashlib.sha256(f"{weights_id}|{source.kind}|{source.fingerprint}".encode()).hexdigest()
    source.cache_file = networks.cache_dir() / "reference_features" / f"{key[:32]}.npz"
    if source.cache_file.exists():
      with np.load(source.cache_file) as data:
        if source.kind in data.files:
          source.features = data[source.kind]
          source.protocol = protocol_lib.with_feature(protocol_lib.from_npz(data), source.kind)


def _extractor_network(fv, extractor: extractors.Extractor, sources: list[Source]) -> Network:
  """`feature_network` for a registered extractor: built (once per process) when an input needs
  features; the cache key holds the extractor's name and the SHA-256 of its weights."""
  if fv.precision != "float32":
    raise ValueError(
      f"--precision {fv.precision}: a registered feature extractor runs in its own dtype "
      "(build it with the dtype policy you want); leave --precision at float32"
    )
  if fv.resize == "pytorch-fid":
    raise ValueError("--resize pytorch-fid is for the Inception network, not --features")
  if fv.resize == "clean" and extractor.input_size is None:
    raise ValueError(
      f"--resize clean needs the input size of feature extractor {extractor.name!r} "
      "(register it with input_size=)"
    )
  network = Network(
    name=extractor.name,
    model=None,
    pending_cache=[],
    label=extractor.name,
    options=fv,
    extractor=extractor,
  )
  needing = [s for s in sources if s.needs_network]
  if not needing:
    return network
  with _device_scope(getattr(fv, "device", None)):
    network.model = extractors.build(extractor)
  sha = protocol_lib.weights_sha256(network.model)
  _look_up_cache(
    fv, f"v{CACHE_VERSION}|extractor|{extractor.name}|{sha}|{fv.resize}|{fv.precision}", needing
  )
  for source in needing:
    if source.needs_network and isinstance(source.images, references.NamedReference):
      source.images.check(download=fv.download)
  return network


# The last network built, by (label + weights file identity, dtype policy, device): repeated calls
# in one process (the Python API, tests) reuse it and its compiled step.
_BUILT: dict = {}


def features_of(source: Source, network: Network, fv) -> np.ndarray:
  """The source's `kind` features: given, cached, or extracted now (cache written at commit)."""
  if source.features is not None:
    return source.features
  from evaluation import features as features_lib

  images = source.images
  if isinstance(images, references.NamedReference):
    images = images.load(download=fv.download)
  info: dict = {}
  with _device_scope(getattr(fv, "device", None)):
    outputs = features_lib.extract(
      network.model,
      images,
      batch_size=fv.batch_size,
      progress=fv.progress,
      jit_compile=fv.jit_compile,
      num_samples=source.num_samples,
      resize=fv.resize,
      workers=getattr(fv, "workers", image_io.DEFAULT_WORKERS),
      info=info,
      input_size=None if network.extractor is None else network.extractor.input_size,
    )
  if network.extractor is not None:
    extractors.select(network.extractor, outputs)
  record = protocol_lib.record(
    network=network.label,
    weights_sha=protocol_lib.weights_sha256(network.model),
    feature=source.kind,
    resize=network.resize_name(fv.resize),
    precision=fv.precision,
    info=info,
  )
  source.features = outputs[source.kind]
  source.protocol = record
  source.outputs = outputs
  if source.cache_file is not None:
    network.pending_cache.append(
      (
        source.cache_file,
        {
          **outputs,
          protocol_lib.NPZ_KEY: np.str_(
            protocol_lib.to_json({k: v for k, v in record.items() if k != "feature"})
          ),
        },
      )
    )
  return source.features


def share_outputs(source: Source, sibling: Source) -> None:
  """Fills `sibling` (same input, another output kind) from the outputs `source` extracted."""
  if sibling.needs_network and source.outputs is not None:
    sibling.features = source.outputs[sibling.kind]
    sibling.protocol = protocol_lib.with_feature(source.protocol, sibling.kind)


def check_protocols(first: Source, second: Source, fv) -> None:
  protocol_lib.check_compatible(
    first.protocol,
    second.protocol,
    names=(first.flag, second.flag),
    strict=getattr(fv, "strict_protocol", True),
  )


def expected_protocol(source: Source, network: Network, fv) -> dict | None:
  """The record `source` has or will have once `features_of` extracts it (the fields known before
  extraction: network, weights, feature, resize, precision); None if unknown."""
  if source.protocol is not None or not source.needs_network:
    return source.protocol
  if network.model is None:
    return None
  return {
    "network": network.label,
    "weights_sha256": protocol_lib.weights_sha256(network.model),
    "feature": source.kind,
    "resize": network.resize_name(fv.resize),
    "precision": fv.precision,
  }


def check_protocols_early(first: Source, second: Source, network: Network, fv) -> None:
  """Before any extraction: raises ProtocolMismatchError if the records known now (given
  statistics / features / cached reference) and the record extraction would write differ in a
  field both know. `check_protocols` after extraction still checks the image sizes."""
  a, b = expected_protocol(first, network, fv), expected_protocol(second, network, fv)
  if a is None or b is None:
    return
  if not (first.needs_network or second.needs_network):
    return  # both complete: check_protocols decides (and prints its notes once)
  common = set(a) & set(b)
  if any(a.get(key) != b.get(key) for key in protocol_lib.COMPARED if key in common):
    if getattr(fv, "strict_protocol", True):
      protocol_lib.check_compatible(
        {k: a[k] for k in common},
        {k: b[k] for k in common},
        names=(first.flag, second.flag),
        strict=True,
      )


def warn_singular(features: np.ndarray, flag: str, *, what: str = "FID") -> None:
  """`warning:` on stderr when fewer rows than feature dimensions (singular covariance: FID is
  then dominated by rounding in the null space; pytorch-fid warns too)."""
  n, d = features.shape
  if n < d:
    print(
      f"warning: {flag.lstrip('-')} has {n} feature vectors for {d} dimensions: the covariance "
      f"is singular and {what} unreliable (two identical sets can give a small negative "
      f"value); use at least {d} images",
      file=sys.stderr,
    )


def print_protocol(*sources: Source) -> None:
  print(protocol_lib.describe({s.flag.lstrip("-"): s.protocol for s in sources}))


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


@dataclasses.dataclass
class Value:
  """One printed metric value: `name: value [lo, hi] +- std` (interval, std optional)."""

  name: str  # as printed, e.g. "FID", "precision"
  key: str  # JSON key, e.g. "fid"
  value: float
  interval: tuple | None = None
  std: float | None = None
  digits: str = ".6f"
  extra: dict = dataclasses.field(default_factory=dict)

  def text(self) -> str:
    from evaluation import subsampling

    line = f"{self.name}: {subsampling.format_value(self.value, self.interval, digits=self.digits)}"
    if self.std is not None:
      line += f" +- {self.std:{self.digits}}"
    return line

  def as_json(self) -> dict:
    out = {
      "value": float(self.value),
      "interval": None if self.interval is None else [float(v) for v in self.interval],
    }
    if self.std is not None:
      out["std"] = float(self.std)
    out.update(self.extra)
    return out


def interval_record(fv, keys=()) -> dict | None:
  """How the intervals (of the metrics `keys`) were made (JSON), None without --subsamples."""
  from evaluation import subsampling

  if not getattr(fv, "subsamples", 0):
    return None
  return {
    "method": "subsampling without replacement (Politis-Romano-Wolf interval, "
    "finite-population factor sqrt(rate / (1 - rate)))",
    "target": subsampling.target(keys),
    "replicates": int(fv.subsamples),
    "rate": float(fv.subsample_rate),
    "seed": int(fv.subsample_seed),
    "confidence": float(fv.confidence),
  }


def print_results(fv, values: list[Value], sources: list, *, by_kind: bool = False) -> None:
  """The metric lines, the `interval:` line (with --subsamples) and the protocol line; or, with
  --json, one JSON object {"metrics": {key: {...}}, "interval": ..., "protocol": {...}}.

  `sources`: the inputs, or (by_kind, as `python -m evaluation`) a list of groups of inputs, one
  per feature kind: then one protocol line per group, and "protocol" maps each group's feature
  kind to its records."""
  from evaluation import subsampling

  groups = sources if by_kind else [sources]
  records = lambda group: {s.flag.lstrip("-"): s.protocol for s in group}
  keys = [v.key for v in values if v.interval is not None]
  if getattr(fv, "json", False):
    import json

    payload = {
      "metrics": {v.key: v.as_json() for v in values},
      "interval": interval_record(fv, keys) if keys else None,
      "protocol": {group[0].kind: records(group) for group in groups}
      if by_kind
      else records(groups[0]),
    }
    print(json.dumps(payload, indent=2, sort_keys=True))
    return
  for v in values:
    print(v.text())
  line = subsampling.describe(fv, keys)
  if line and keys:
    print(line)
  for group in groups:
    print_protocol(*group)
