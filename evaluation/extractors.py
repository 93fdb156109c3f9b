"""Feature extractors of your own (your network, CLIP-like features) for FID, KID and precision/recall.

    from evaluation import api, features

    def build():  # -> keras.Model: float32 images [B, H, W, C] in [0, 255] -> [B, D]
      return my_keras_network()

    features.register_extractor("my-net", build, input_size=224, dims=512)
    api.compute_fid(samples, reference=real_images, features="my-net")

    # the commands: a module (dotted name or .py file) that calls register_extractor on import
    python -m evaluation.fid --extractor_module my_features.py --features my-net --samples ...

The network receives float32 images in [0, 255] at their own size (`--resize tf1`, the default:
no host resize, the network does its own), or resized on the host to `input_size` with
`--resize clean`. It returns one [B, D] tensor (the output `features`) or a dict of them (name
the one to use with `feature=`). It is built once per process by `build_fn()`.

Comparability: the protocol record of every value names the extractor (`network=<name>`) and the
SHA-256 of its weights, and the reference-feature cache key holds both, so features and
statistics from different extractors (or from other weights under the same name) are refused
as a protocol mismatch, never compared. This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pathlib
import re
import sys
from collections.abc import Callable

# Names of the built-in networks (protocol labels and the commands' network names): reserved.
BUILTIN_NAMES = (
  "inception",
  "inception-2015",
  "vgg16",
  "vgg16-keras",
  "vgg16-torch-fidelity",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class UnknownExtractorError(ValueError):
  """No feature extractor of that name is registered."""


@dataclasses.dataclass(frozen=True)
class Extractor:
  """A registered feature extractor (see `register_extractor`)."""

  name: str
  build_fn: Callable
  input_size: int | None
  dims: int | None
  feature: str


_REGISTRY: dict[str, Extractor] = {}


def register_extractor(
  name: str,
  build_fn: Callable,
  *,
  input_size: int | None = None,
  dims: int | None = None,
  feature: str = "features",
  replace: bool = False,
) -> Extractor:
  """Registers `build_fn` (no arguments -> a Keras model) as the feature extractor `name`.

  Args:
    name: the name given as `features=` / `--features`; recorded as the protocol's network
      (letters, digits, `.`, `_`, `-`; not a built-in network's name).
    build_fn: `build_fn() -> keras.Model` mapping float32 images [B, H, W, C] in [0, 255] to a
      [B, D] tensor or a dict of such tensors. Called once per process, on first use.
    input_size: side of the square input the network expects, for `--resize clean` (None: the
      network takes images at any size; the clean resize is then refused).
    dims: D, checked against the extracted features (None: not checked).
    feature: the output used by the metrics when the network returns a dict ("features", the
      name of a single-tensor output, otherwise).
    replace: allow registering a name again (otherwise a second registration with another
      function or settings is an error; the same one again is a no-op).

  Returns:
    The registered `Extractor`.
  """
  if not isinstance(name, str) or not _NAME.match(name):
    raise ValueError(
      f"feature extractor name {name!r} must be letters, digits, '.', '_' or '-' "
      "(starting with a letter or digit)"
    )
  if name in BUILTIN_NAMES:
    raise ValueError(f"feature extractor name {name!r} is a built-in network's name")
  if not callable(build_fn):
    raise ValueError(f"feature extractor {name!r}: build_fn must be callable")
  for key, value in (("input_size", input_size), ("dims", dims)):
    if value is not None and (not isinstance(value, int) or value < 1):
      raise ValueError(f"feature extractor {name!r}: {key} must be a positive int, got {value!r}")
  extractor = Extractor(name, build_fn, input_size, dims, feature)
  old = _REGISTRY.get(name)
  if old is not None and old != extractor and not replace:
    raise ValueError(
      f"feature extractor {name!r} is already registered (pass replace=True to replace it)"
    )
  _REGISTRY[name] = extractor
  if old is not None and old != extractor:
    _BUILT.pop(name, None)
  return extractor


def registered() -> list[str]:
  """The names registered so far, sorted."""
  return sorted(_REGISTRY)


def get_extractor(name: str) -> Extractor:
  """The extractor registered as `name`; UnknownExtractorError (one line) otherwise."""
  try:
    return _REGISTRY[name]
  except KeyError:
    known = ", ".join(registered()) or "none"
    raise UnknownExtractorError(
      f"unknown feature extractor {name!r} (registered: {known}); register it with "
      "evaluation.features.register_extractor (commands: in a module given as "
      "--extractor_module)"
    ) from None


def load_module(spec: str) -> None:
  """Imports `spec` (a dotted module name, or a path to a .py file) so that its
  `register_extractor` calls run; a file already loaded is not run again."""
  path = pathlib.Path(spec)
  if spec.endswith(".py"):
    if not path.is_file():
      raise ValueError(f"--extractor_module {spec}: no such file")
    resolved = path.resolve()
    module_name = "evaluation_extractor_" + re.sub(r"\W", "_", str(resolved))
    if module_name in sys.modules:
      return
    module_spec = importlib.util.spec_from_file_location(module_name, resolved)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
      module_spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[module_name]
      raise
    return
  try:
    importlib.import_module(spec)
  except ModuleNotFoundError as e:
    raise ValueError(f"--extractor_module {spec}: cannot import it ({e})") from e


_BUILT: dict[str, object] = {}


def build(extractor: Extractor):
  """The extractor's model, built on first use and kept for the process."""
  model = _BUILT.get(extractor.name)
  if model is None:
    model = extractor.build_fn()
    if not callable(model) or not hasattr(model, "weights"):
      raise ValueError(
        f"feature extractor {extractor.name!r}: build_fn returned {type(model).__name__}, "
        "not a Keras model"
      )
    _BUILT[extractor.name] = model
  return model


def select(extractor: Extractor, outputs: dict) -> dict:
  """Checks the extracted `outputs` ({name: [N, D]}) against the registration."""
  if extractor.feature not in outputs:
    raise ValueError(
      f"feature extractor {extractor.name!r} returned outputs {sorted(outputs)}, "
      f"not {extractor.feature!r} (set feature= when registering)"
    )
  value = outputs[extractor.feature]
  if value.ndim != 2:
    raise ValueError(
      f"feature extractor {extractor.name!r}: output {extractor.feature!r} must be [N, D], "
      f"got shape {tuple(value.shape)}"
    )
  if extractor.dims is not None and value.shape[1] != extractor.dims:
    raise ValueError(
      f"feature extractor {extractor.name!r} returned {value.shape[1]}-dimensional features, "
      f"registered with dims={extractor.dims}"
    )
  return outputs
