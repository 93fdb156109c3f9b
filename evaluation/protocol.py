"""The protocol record stored and printed with every metric value.

A number such as an FID is only comparable with another one computed the same way: the same
feature network (and the same weights), the same layer, the same resize, the same precision. A
record is a flat dict of strings/ints:

  network         "inception-2015" | "vgg16-keras" | "vgg16-torch-fidelity"
  weights_sha256  SHA-256 of the network's float32 weights, in layer order (the tensors, not the
                  file: a .pb and its .pth port hash alike when their tensors are equal)
  feature         "pool_3" | "logits" | "fc2"
  resize          "tf1-legacy-bilinear" (TTUR, default) | "clean-pil-bicubic-antialias"
  precision       "float32" | "bfloat16"
  image_count, image_size ("HxWxC"), input_dtype ("uint8" | "float32" | ...)
  version         "genmodels-tf <version>"

A perceptual path length (`ppl_record`) carries, besides network / weights / feature / precision /
image size, its path protocol: `metric` "ppl", `epsilon`, `space` ("z" | "w"), `interpolation`,
`sampling` ("full" | "end"), `crop`, `num_samples`, `seed`; those are compared too.

It is stored in every statistics `.npz` (key "protocol", a JSON string) and in the reference
feature cache, and printed after the value (`protocol: key=value ...`). `check_compatible`
raises `ProtocolMismatchError` (a ValueError: one `error:` line, exit 2 on the command line)
when two records differ in a COMPARED field; image count and version are recorded, not compared.
Records missing (e.g. TTUR's published statistics files) are accepted with a note.
"""

from __future__ import annotations

import hashlib
import json
import sys
import weakref

import numpy as np

COMPARED = (
  "metric",
  "network",
  "weights_sha256",
  "feature",
  "resize",
  "precision",
  "image_size_hw",
  "epsilon",
  "space",
  "interpolation",
  "sampling",
  "crop",
)  # absent on both sides = equal
NPZ_KEY = "protocol"
_SHA_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class ProtocolMismatchError(ValueError):
  """Two numbers (or statistics) were made under different protocols."""


def package_version() -> str:
  try:
    from importlib import metadata

    return f"genmodels-tf=={metadata.version('genmodels-tf')}"
  except Exception:  # not installed as a distribution
    return "genmodels-tf==unknown"


def weights_sha256(model) -> str:
  """SHA-256 over the model's weights as float32 bytes, in `model.weights` order (cached)."""
  try:
    return _SHA_CACHE[model]
  except (KeyError, TypeError):
    pass
  digest = hashlib.sha256()
  for weight in model.weights:
    digest.update(np.ascontiguousarray(np.asarray(weight), np.float32).tobytes())
  value = digest.hexdigest()
  try:
    _SHA_CACHE[model] = value
  except TypeError:
    pass
  return value


def record(
  *, network: str, weights_sha: str, feature: str, resize: str, precision: str, info: dict
) -> dict:
  """A protocol record (module docstring) from the extraction `info` of `features.extract`."""
  return {
    "network": network,
    "weights_sha256": weights_sha,
    "feature": feature,
    "resize": resize,
    "precision": precision,
    "image_count": int(info["count"]),
    "image_size": f"{info['height']}x{info['width']}x{info['channels']}",
    "image_size_hw": f"{info['height']}x{info['width']}",
    "input_dtype": str(info.get("input_dtype", "unknown")),
    "version": package_version(),
  }


def ppl_record(
  *,
  network: str,
  weights_sha: str,
  feature: str,
  image_shape,
  epsilon: float,
  space: str,
  interpolation: str,
  sampling: str,
  crop: bool,
  num_samples: int,
  seed: int,
  precision: str = "float32",
) -> dict:
  """The record of a perceptual path length (`evaluation.ppl`); image_shape (H, W, C) as scored."""
  height, width, channels = (int(v) for v in image_shape)
  return {
    "metric": "ppl",
    "network": network,
    "weights_sha256": weights_sha,
    "feature": feature,
    "resize": "none",
    "precision": precision,
    "image_size": f"{height}x{width}x{channels}",
    "image_size_hw": f"{height}x{width}",
    "epsilon": float(epsilon),
    "space": space,
    "interpolation": interpolation,
    "sampling": sampling,
    "crop": bool(crop),
    "num_samples": int(num_samples),
    "seed": int(seed),
    "version": package_version(),
  }


def describe_record(protocol: dict | None) -> str:
  """One line `protocol: key=value ...` of a single record, every field (sorted), or unknown."""
  if not protocol:
    return "protocol: unknown"
  return "protocol: " + " ".join(
    f"{key}={protocol[key]}" for key in sorted(protocol) if key != "image_size_hw"
  )


def with_feature(protocol: dict | None, feature: str) -> dict | None:
  return None if protocol is None else {**protocol, "feature": feature}


def to_json(protocol: dict) -> str:
  return json.dumps(protocol, sort_keys=True)


def from_npz(data) -> dict | None:
  """The record stored in an open .npz (None when the file has none)."""
  if NPZ_KEY not in data.files:
    return None
  try:
    value = json.loads(str(data[NPZ_KEY]))
  except ValueError as e:
    raise ProtocolMismatchError(f"unreadable protocol record: {e}") from e
  if not isinstance(value, dict):
    raise ProtocolMismatchError("unreadable protocol record: not a JSON object")
  return value


def check_compatible(
  first: dict | None,
  second: dict | None,
  *,
  names=("--samples", "--reference"),
  strict: bool = True,
) -> None:
  """Raises ProtocolMismatchError if both records exist and differ in a COMPARED field."""
  if first is None or second is None:
    missing = names[0] if first is None else names[1]
    print(
      f"note: {missing} carries no protocol record; cannot check that both were made the same way",
      file=sys.stderr,
    )
    return
  differences = [
    f"{key} {first.get(key)} vs {second.get(key)}"
    for key in COMPARED
    if first.get(key) != second.get(key)
  ]
  if differences:
    message = f"{names[0]} and {names[1]} were made under different protocols: " + "; ".join(
      differences
    )
    if strict:
      raise ProtocolMismatchError(message + " (pass --nostrict_protocol to compare anyway)")
    print(f"warning: {message}", file=sys.stderr)


def describe(protocols: dict[str, dict | None]) -> str:
  """One line: shared fields once, then per-input count and size. protocols: {name: record}."""
  known = {name: p for name, p in protocols.items() if p is not None}
  if not known:
    return "protocol: unknown"
  first = next(iter(known.values()))
  shared = [
    f"{key}={first.get(key)}"
    for key in ("network", "weights_sha256", "feature", "resize", "precision", "version")
  ]
  per_input = [
    f"{name}={p.get('image_count')}x{p.get('image_size')}:{p.get('input_dtype')}"
    for name, p in known.items()
  ]
  unknown = [f"{name}=unknown" for name, p in protocols.items() if p is None]
  return "protocol: " + " ".join(shared + per_input + unknown)
