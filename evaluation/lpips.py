"""LPIPS-VGG v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric"), the distance of StyleGAN's perceptual path length.

    net = lpips_vgg_network("lpips_vgg.npz")           # or $GENMODELS_LPIPS_PATH
    d = net((images_a, images_b))                       # [B] float32, images float [0, 1]
    ppl.perceptual_path_length(..., distance=ppl.lpips_distance(net))

Pipeline (richzhang/PerceptualSimilarity `lpips/lpips.py`, `LPIPS.forward`, version '0.1', net 'vgg',
with `normalize=True` because our images are in [0, 1]):
  1. grey -> RGB, x in [0, 1] -> 2x - 1 in [-1, 1]                        (`signed_range`)
  2. ScalingLayer: (x - shift) / scale                                    (`scaling_layer`)
  3. torchvision VGG-16 `features`, taps after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
     (`lpips/pretrained_networks.py`, class vgg16: slices [0,4), [4,9), [9,16), [16,23), [23,30))
  4. per tap, unit-normalise over channels: f / (sqrt(sum_c f^2) + 1e-10)  (`unit_normalize`)
  5. d = sum_k mean_{h,w} sum_c w_{k,c} (f_a - f_b)^2 with the non-negative "lin" weights w_k
     (1x1 conv without bias; its dropout is off at inference)          (`lpips_from_taps`)
No resizing happens here: the distance runs at the input resolution (>= 16x16, four 2x2 pools).
Cropping / resizing for PPL is `evaluation.ppl`'s business.

Weights. The lin layers were calibrated on torchvision's VGG-16 (`vgg16-397923af.pth`), so BOTH
that network and the lin weights are needed. The Keras/Caffe VGG-16 of `evaluation.vgg` is a
different ImageNet training run with BGR / mean-only preprocessing: its features are not the
ones the lin weights were fitted to, so it is never substituted.

The `.npz` weights format (written by `save_weights`, read by `read_weights`):
  format         str  "genmodels-lpips-vgg-v0.1"
  conv{i}_kernel [3, 3, C_in, C_out] float, Keras HWIO layout, i = 0..12 in network order
                 (torchvision `features.{j}.weight` [C_out, C_in, 3, 3] transposed (2, 3, 1, 0),
                 j = 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
  conv{i}_bias   [C_out] float
  lin{k}         [C_k] float >= 0, k = 0..4, C = (64, 128, 256, 512, 512)
                 (LPIPS `lin{k}.model.1.weight` [1, C_k, 1, 1] flattened)
Make it once, on any machine with PyTorch, from the two official files:
    python -m evaluation.lpips --convert --lin_weights vgg.pth \\
        --vgg_weights vgg16-397923af.pth --out lpips_vgg.npz
(`vgg.pth`: PerceptualSimilarity `lpips/weights/v0.1/vgg.pth`; `vgg16-397923af.pth`:
https://download.pytorch.org/models/vgg16-397923af.pth). PyTorch is imported only by the converter.
"""

from __future__ import annotations

import os
import pathlib
import sys
import zipfile
from collections.abc import Mapping, Sequence

if __name__ == "__main__":  # the converter command: keep TensorFlow's start-up lines off stderr
  from evaluation import quiet_tf

  quiet_tf.import_tensorflow_quietly()

import keras
import numpy as np
import tensorflow as tf

from evaluation.networks import WeightsUnavailableError
from evaluation.torch_state import read_torch_state_dict
from evaluation.vgg import BLOCK_DEPTHS, BLOCK_WIDTHS

# (VGG-16 configuration "D": the same widths and depths in Keras and torchvision.)

LPIPS_PATH_ENV = "GENMODELS_LPIPS_PATH"
FORMAT = "genmodels-lpips-vgg-v0.1"
# lpips/lpips.py, class ScalingLayer (v0.1): shift and scale buffers, per RGB channel.
SCALING_SHIFT = (-0.030, -0.088, -0.188)
SCALING_SCALE = (0.458, 0.448, 0.450)
NORMALIZE_EPS = 1e-10  # lpips/__init__.py, normalize_tensor(in_feat, eps=1e-10)
TAP_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")  # pretrained_networks.vgg16
NUM_CONVS = sum(BLOCK_DEPTHS)  # 13
MIN_SIZE = 2 ** (len(BLOCK_DEPTHS) - 1)  # four 2x2/2 max pools before relu5_3
LIN_WEIGHTS_URL = (
  "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
)
VGG_WEIGHTS_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"  # torchvision vgg16
CONVERT_COMMAND = (
  "python -m evaluation.lpips --convert --lin_weights vgg.pth "
  "--vgg_weights vgg16-397923af.pth --out lpips_vgg.npz"
)


class LPIPSWeightsError(ValueError):
  """The file is not a complete, well-formed LPIPS-VGG weights .npz."""


# ------------------------------------------------------------------------------------ equations


def signed_range(images: tf.Tensor) -> tf.Tensor:
  """x' = 2 x - 1: [0, 1] -> [-1, 1] (LPIPS.forward with normalize=True); grey -> RGB first.

  images: float [B, H, W, 1|3] -> float32 [B, H, W, 3].
  """
  images = tf.cast(images, tf.float32)
  rgb = tf.broadcast_to(images, tf.concat([tf.shape(images)[:-1], [3]], axis=0))
  rgb = tf.ensure_shape(rgb, images.shape[:-1].concatenate([3]))
  return 2.0 * rgb - 1.0


def scaling_layer(images: tf.Tensor) -> tf.Tensor:
  """LPIPS v0.1 ScalingLayer: (x - shift) / scale per RGB channel; [B, H, W, 3] -> same."""
  return (images - tf.constant(SCALING_SHIFT, images.dtype)) / tf.constant(
    SCALING_SCALE, images.dtype
  )


def unit_normalize(features: tf.Tensor) -> tf.Tensor:
  """f_hat = f / (sqrt(sum_c f_c^2) + 1e-10) over the channel axis; [B, h, w, C] -> same."""
  norm = tf.sqrt(tf.reduce_sum(tf.square(features), axis=-1, keepdims=True))  # [B, h, w, 1]
  return features / (norm + NORMALIZE_EPS)


def lpips_from_taps(
  taps_a: Sequence[tf.Tensor], taps_b: Sequence[tf.Tensor], lin_weights: Sequence[tf.Tensor]
) -> tf.Tensor:
  """d(a, b) = sum_k 1/(h_k w_k) sum_{h,w} sum_c w_{k,c} (f_hat^k_a - f_hat^k_b)^2  -> [B].

  Zhang et al. 2018, Eq. 1, in the form of the official code: the lin layer (1x1 conv, no bias)
  multiplies the *squared* difference, so the code's w equals the paper's w^2 (the file stores
  the code's weights, clamped >= 0 during training). taps_*: [B, h_k, w_k, C_k] float32;
  lin_weights: [C_k].
  """
  total = 0.0
  for tap_a, tap_b, weights in zip(taps_a, taps_b, lin_weights, strict=True):
    squared = tf.square(unit_normalize(tap_a) - unit_normalize(tap_b))  # [B, h, w, C]
    weighted = tf.tensordot(squared, weights, axes=[[3], [0]])  # [B, h, w]
    total += tf.reduce_mean(weighted, axis=[1, 2])  # [B]
  return total


# ------------------------------------------------------------------------------------ network


def torchvision_conv_indices() -> tuple[int, ...]:
  """Indices of the conv layers in torchvision's `vgg16().features` (conv, ReLU per conv, one
  max pool after each block): (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)."""
  indices, position = [], 0
  for depth in BLOCK_DEPTHS:
    for _ in range(depth):
      indices.append(position)
      position += 2  # Conv2d, ReLU
    position += 1  # MaxPool2d
  return tuple(indices)


def tap_widths(width_divisor: int = 1) -> tuple[int, ...]:
  """Channels of the five taps (= of the lin layers): (64, 128, 256, 512, 512) / divisor."""
  if width_divisor < 1:
    raise ValueError(f"width_divisor must be >= 1, got {width_divisor}")
  return tuple(max(1, w // width_divisor) for w in BLOCK_WIDTHS)


def weight_shapes(width_divisor: int = 1) -> dict[str, tuple[int, ...]]:
  """{key: shape} of the .npz format (module docstring) for a (narrow) network."""
  shapes, channels, i = {}, 3, 0
  for width, depth in zip(tap_widths(width_divisor), BLOCK_DEPTHS):
    for _ in range(depth):
      shapes[f"conv{i}_kernel"] = (3, 3, channels, width)
      shapes[f"conv{i}_bias"] = (width,)
      channels, i = width, i + 1
  for k, width in enumerate(tap_widths(width_divisor)):
    shapes[f"lin{k}"] = (width,)
  return shapes


class LPIPSVGG(keras.Model):
  """LPIPS-VGG v0.1: (images_a, images_b) float [B, H, W, 1|3] in [0, 1] -> distance [B] float32.

  Built with zero weights; `lpips_vgg_network` loads the real ones. H, W >= 16, no resizing.
  """

  def __init__(
    self,
    *,
    width_divisor: int = 1,
    dtype_policy: str | None = None,
    name: str = "lpips_vgg",
    **kwargs,
  ):
    super().__init__(name=name, **kwargs)
    self.width_divisor = width_divisor
    self.block_convs = []  # per block, its Conv2D layers (torchvision: conv3x3, padding 1, ReLU)
    channels, i = 3, 0
    for width, depth in zip(tap_widths(width_divisor), BLOCK_DEPTHS):
      block = []
      for _ in range(depth):
        conv = keras.layers.Conv2D(
          width, 3, padding="same", activation="relu", name=f"conv{i}", dtype=dtype_policy
        )
        conv.build((None, None, None, channels))
        block.append(conv)
        channels, i = width, i + 1
      self.block_convs.append(block)
    # torchvision MaxPool2d(kernel_size=2, stride=2): floor mode, no padding.
    self.pool = keras.layers.MaxPooling2D(2, strides=2, padding="valid", dtype=dtype_policy)
    self.lin_weights = [
      self.add_weight(
        shape=(width,), initializer="zeros", trainable=False, name=f"lin{k}", dtype="float32"
      )
      for k, width in enumerate(tap_widths(width_divisor))
    ]

  def taps(self, images: tf.Tensor, *, training: bool = False) -> list[tf.Tensor]:
    """The five VGG-16 taps of images in [0, 1]: [B, H / 2^k, W / 2^k, C_k] float32, k = 0..4."""
    height, width = images.shape[1], images.shape[2]
    if height is not None and width is not None and min(height, width) < MIN_SIZE:
      raise ValueError(
        f"LPIPS-VGG needs images of at least {MIN_SIZE}x{MIN_SIZE} (relu5_3 comes "
        f"after four 2x2 pools), got {height}x{width}; it never resizes"
      )
    x = scaling_layer(signed_range(images))  # [B, H, W, 3]
    taps = []
    for b, block in enumerate(self.block_convs):
      if b > 0:
        x = self.pool(x)
      for conv in block:
        x = conv(x, training=training)
      taps.append(tf.cast(x, tf.float32))  # normalised in float32 under mixed precision
    return taps

  def call(self, inputs, training: bool = False):
    images_a, images_b = (tf.cast(tf.convert_to_tensor(x), tf.float32) for x in inputs)
    shape_a, shape_b = tuple(images_a.shape[1:]), tuple(images_b.shape[1:])
    if shape_a != shape_b and None not in shape_a + shape_b:
      raise ValueError(
        f"LPIPS compares images of one shape, got {images_a.shape} and {images_b.shape}"
      )
    both = tf.concat([images_a, images_b], axis=0)  # [2B, H, W, C]
    taps = self.taps(both, training=training)  # one pass for both: [2B, h, w, C] each
    halves = [tf.split(t, 2, axis=0) for t in taps]
    return lpips_from_taps([a for a, _ in halves], [b for _, b in halves], self.lin_weights)


# ------------------------------------------------------------------------------------ weights


def check_weights(weights: Mapping[str, np.ndarray], *, source: str = "weights") -> int:
  """Validates a {key: array} dict against the .npz format; returns its width divisor.

  Raises LPIPSWeightsError naming the first problem: a missing or unexpected key, a wrong
  shape, a non-float or non-finite array, a negative lin weight.
  """
  first = weights.get("conv0_kernel")
  if (
    first is None or np.ndim(first) != 4 or first.shape[-1] < 1 or BLOCK_WIDTHS[0] % first.shape[-1]
  ):
    raise LPIPSWeightsError(
      f"{source}: no valid conv0_kernel [3, 3, 3, 64] (not an LPIPS-VGG "
      f"weights file; make one with `{CONVERT_COMMAND}`)"
    )
  width_divisor = BLOCK_WIDTHS[0] // first.shape[-1]
  expected = weight_shapes(width_divisor)
  missing = [k for k in expected if k not in weights]
  unexpected = sorted(set(weights) - set(expected))
  if missing or unexpected:
    raise LPIPSWeightsError(f"{source}: missing keys {missing}, unexpected keys {unexpected}")
  for key, shape in expected.items():
    array = weights[key]
    if tuple(array.shape) != shape:
      raise LPIPSWeightsError(f"{source}: {key} has shape {tuple(array.shape)}, expected {shape}")
    if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
      raise LPIPSWeightsError(f"{source}: {key} must be finite floats, got dtype {array.dtype}")
    if key.startswith("lin") and np.any(array < 0):
      raise LPIPSWeightsError(
        f"{source}: {key} has negative weights (LPIPS lin weights are clamped >= 0 in training)"
      )
  return width_divisor


def save_weights(path: str | os.PathLike, weights: Mapping[str, np.ndarray]) -> None:
  """Writes checked weights (float32) in the .npz format, atomically."""
  check_weights(weights, source="weights to save")
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(
    tmp, format=np.str_(FORMAT), **{k: np.asarray(v, np.float32) for k, v in weights.items()}
  )
  os.replace(tmp, path)


def read_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], int]:
  """({key: array}, width divisor) of a checked .npz file (LPIPSWeightsError if malformed)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {key: data[key] for key in data.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise LPIPSWeightsError(
      f"{path} is not a readable .npz file ({e}); make one with `{CONVERT_COMMAND}`"
    ) from e
  if str(arrays.pop("format", "")) != FORMAT:
    raise LPIPSWeightsError(
      f"{path} is not an LPIPS-VGG weights file (its 'format' entry is not "
      f"{FORMAT!r}); make one with `{CONVERT_COMMAND}`"
    )
  return arrays, check_weights(arrays, source=str(path))


def assign_weights(model: LPIPSVGG, weights: Mapping[str, np.ndarray]) -> None:
  """Sets every conv kernel/bias and lin weight of `model` from checked arrays."""
  convs = [conv for block in model.block_convs for conv in block]
  for i, conv in enumerate(convs):
    conv.set_weights([weights[f"conv{i}_kernel"], weights[f"conv{i}_bias"]])
  for k, variable in enumerate(model.lin_weights):
    variable.assign(weights[f"lin{k}"])


def resolve_weights_path(weights_path: str | os.PathLike | None = None) -> pathlib.Path:
  """The argument, else $GENMODELS_LPIPS_PATH; WeightsUnavailableError if neither is a file."""
  given = weights_path or os.environ.get(LPIPS_PATH_ENV)
  how = (
    f"Make lpips_vgg.npz once where PyTorch is installed: `{CONVERT_COMMAND}` (vgg.pth = "
    f"{LIN_WEIGHTS_URL}, vgg16-397923af.pth = {VGG_WEIGHTS_URL}), then pass its path "
    f"(--lpips_path) or set ${LPIPS_PATH_ENV}"
  )
  if not given:
    raise WeightsUnavailableError(f"LPIPS-VGG weights unavailable. {how}.")
  path = pathlib.Path(given).expanduser()
  if not path.is_file():
    raise WeightsUnavailableError(f"LPIPS-VGG weights not found at {path}. {how}.")
  return path


def lpips_vgg_network(
  weights_path: str | os.PathLike | None = None, *, dtype_policy: str | None = None
) -> LPIPSVGG:
  """LPIPS-VGG v0.1 with its weights from the .npz (argument or $GENMODELS_LPIPS_PATH).

  Raises WeightsUnavailableError (no file) or LPIPSWeightsError (malformed file). A narrow file
  (tests) gives the matching narrow network, announced on stderr.
  """
  path = resolve_weights_path(weights_path)
  weights, width_divisor = read_weights(path)
  if width_divisor != 1:
    print(
      f"note: {path} is a narrow (1/{width_divisor}) LPIPS-VGG variant; its distances are not "
      "LPIPS values.",
      file=sys.stderr,
    )
  model = LPIPSVGG(width_divisor=width_divisor, dtype_policy=dtype_policy)
  assign_weights(model, weights)
  return model


# ------------------------------------------------------------------------------------ converter


def convert_state_dicts(
  lin_state: Mapping[str, np.ndarray], vgg_state: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
  """Official PyTorch state dicts (as numpy) -> the .npz format's {key: array}.

  lin_state: LPIPS `lin{k}.model.1.weight` [1, C_k, 1, 1] (`model.0` when saved without dropout).
  vgg_state: torchvision VGG-16 `features.{j}.weight` [C_out, C_in, 3, 3] and `.bias` [C_out]
  (classifier entries are ignored). Conv kernels OIHW -> HWIO.
  """
  weights = {}
  for i, j in enumerate(torchvision_conv_indices()):
    for part in ("weight", "bias"):
      key = f"features.{j}.{part}"
      if key not in vgg_state:
        raise LPIPSWeightsError(
          f"VGG-16 state dict has no {key!r} (is it torchvision's "
          f"vgg16-397923af.pth? keys start {sorted(vgg_state)[:3]})"
        )
    kernel = np.asarray(vgg_state[f"features.{j}.weight"])
    if kernel.ndim != 4:
      raise LPIPSWeightsError(f"features.{j}.weight has shape {kernel.shape}, expected 4-d OIHW")
    weights[f"conv{i}_kernel"] = kernel.transpose(2, 3, 1, 0)  # [O, I, H, W] -> [H, W, I, O]
    weights[f"conv{i}_bias"] = np.asarray(vgg_state[f"features.{j}.bias"])
  for k in range(len(TAP_NAMES)):
    key = next(
      (key for key in (f"lin{k}.model.1.weight", f"lin{k}.model.0.weight") if key in lin_state),
      None,
    )
    if key is None:
      raise LPIPSWeightsError(
        f"LPIPS state dict has no lin{k}.model.1.weight (is it "
        f"lpips/weights/v0.1/vgg.pth? keys start {sorted(lin_state)[:3]})"
      )
    weights[f"lin{k}"] = np.asarray(lin_state[key]).reshape(-1)  # [1, C, 1, 1] -> [C]
  check_weights(weights, source="converted weights")
  return weights


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m evaluation.lpips --convert ...`: writes the .npz; errors -> one line, exit 2."""
  from absl import flags

  fv = flags.FlagValues()
  flags.DEFINE_bool(
    "convert",
    False,
    "Convert the official PyTorch files into the .npz format "
    "read by lpips_vgg_network (needs PyTorch).",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "lin_weights",
    None,
    "LPIPS v0.1 lin weights: PerceptualSimilarity's "
    f"lpips/weights/v0.1/vgg.pth ({LIN_WEIGHTS_URL}).",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "vgg_weights",
    None,
    f"torchvision's ImageNet VGG-16 state dict vgg16-397923af.pth ({VGG_WEIGHTS_URL}).",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "out",
    "lpips_vgg.npz",
    f"Output .npz; point --lpips_path or ${LPIPS_PATH_ENV} at it.",
    flag_values=fv,
  )
  args = list(sys.argv[1:] if argv is None else argv)
  if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in args):
    print(__doc__.strip() + "\n\nFlags:\n" + fv.get_help(include_special_flags=False))
    return 0
  try:
    extra = fv(["evaluation.lpips"] + args)[1:]
    if extra:
      raise ValueError(f"unexpected positional arguments {extra}")
    if not fv.convert or not fv.lin_weights or not fv.vgg_weights:
      raise ValueError("usage: " + CONVERT_COMMAND)
    weights = convert_state_dicts(
      read_torch_state_dict(fv.lin_weights), read_torch_state_dict(fv.vgg_weights)
    )
    save_weights(fv.out, weights)
  except (flags.Error, ValueError, OSError, RuntimeError) as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return 2
  print(f"wrote {fv.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
