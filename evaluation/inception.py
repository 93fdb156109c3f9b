"""The FID Inception network of TTUR (the 2015-12-05 graph) in Keras, and its GraphDef reader.

TTUR (bioinf-jku/TTUR `fid.py`) and the original Inception Score code (openai/improved-gan) run
`classify_image_graph_def.pb` from `inception-2015-12-05.tgz`: input `ExpandDims:0` (float images
in [0, 255], any size) -> `ResizeBilinear` to 299x299 (TF1 semantics) -> `Sub` 128 -> `Mul` 1/128
-> 94 conv + batch-norm + ReLU units in 11 `mixed*` blocks -> `pool_3` (8x8 average, 2048-d, the
FID/KID features) -> `softmax/logits/MatMul` with `softmax/weights` [2048, 1008]. The Inception
Score uses `pool_3 @ softmax/weights` *without* the bias (improved-gan `inception_score/model.py`),
so `logits` here has no bias either.

Quirks of this graph that a torchvision/Keras InceptionV3 does not have (and that we reproduce):
  * the 3x3 average pools of the branches exclude the zero padding from the average (TF `SAME`
    average pooling), and
  * the pool branch of the last block (`mixed_10/tower_2/pool`) is a *max* pool.

`STEM`, `BLOCKS` and `POOL3` list every unit by its GraphDef scope; `build_inception_2015` builds the Keras
model from it (layer names are the scopes with '/' -> '.'); `read_graph_def_weights` parses the
.pb with TensorFlow's own `tf.compat.v1.GraphDef` parser and checks the file against the
architecture (shapes, strides, paddings, pool types, concat order, batch-norm epsilon, input
scaling) before a single weight is used, so a mismatch fails loudly instead of giving wrong FIDs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from evaluation.resize import resize_bilinear_tf1

INPUT_SIZE = 299  # ResizeBilinear/size of the 2015 graph
INPUT_SHIFT = 128.0  # Sub/y
INPUT_SCALE = 1.0 / 128.0  # Mul/y: (x - 128) / 128 maps [0, 255] to [-1, 1)
BATCHNORM_EPSILON = 0.001  # variance_epsilon of every BatchNormWithGlobalNormalization node
NUM_LOGITS = 1008  # softmax/weights is [2048, 1008] (1000 ImageNet classes + 8 unused)
POOL3_DIM = 2048


@dataclasses.dataclass(frozen=True)
class Conv:
  """One `<scope>/conv2d_params` + `<scope>/batchnorm` + ReLU unit of the graph."""

  scope: str
  filters: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: str = "SAME"


@dataclasses.dataclass(frozen=True)
class Pool:
  """A `MaxPool` / `AvgPool` node (3x3 unless stated)."""

  scope: str
  kind: str  # "max" | "avg"
  size: int = 3
  strides: int = 1
  padding: str = "SAME"


# A branch is a chain of units; a chain may end in a split ("mixed" inside a tower of the
# 8x8 blocks) whose outputs are concatenated along channels.
@dataclasses.dataclass(frozen=True)
class Split:
  scope: str  # the concat node name, e.g. "mixed_9/tower/mixed"
  parts: tuple[Conv, ...]


@dataclasses.dataclass(frozen=True)
class Block:
  """A `mixed*` block: branches concatenated in order by `<scope>/join`."""

  scope: str
  branches: tuple[tuple[Conv | Pool | Split, ...], ...]


def _block_a(scope: str, pool_features: int) -> Block:  # 35x35 blocks (torchvision InceptionA)
  return Block(
    scope,
    (
      (Conv(f"{scope}/conv", 64, (1, 1)),),
      (Conv(f"{scope}/tower/conv", 48, (1, 1)), Conv(f"{scope}/tower/conv_1", 64, (5, 5))),
      (
        Conv(f"{scope}/tower_1/conv", 64, (1, 1)),
        Conv(f"{scope}/tower_1/conv_1", 96, (3, 3)),
        Conv(f"{scope}/tower_1/conv_2", 96, (3, 3)),
      ),
      (Pool(f"{scope}/tower_2/pool", "avg"), Conv(f"{scope}/tower_2/conv", pool_features, (1, 1))),
    ),
  )


def _block_c(scope: str, c7: int) -> Block:  # 17x17 blocks (InceptionC)
  return Block(
    scope,
    (
      (Conv(f"{scope}/conv", 192, (1, 1)),),
      (
        Conv(f"{scope}/tower/conv", c7, (1, 1)),
        Conv(f"{scope}/tower/conv_1", c7, (1, 7)),
        Conv(f"{scope}/tower/conv_2", 192, (7, 1)),
      ),
      (
        Conv(f"{scope}/tower_1/conv", c7, (1, 1)),
        Conv(f"{scope}/tower_1/conv_1", c7, (7, 1)),
        Conv(f"{scope}/tower_1/conv_2", c7, (1, 7)),
        Conv(f"{scope}/tower_1/conv_3", c7, (7, 1)),
        Conv(f"{scope}/tower_1/conv_4", 192, (1, 7)),
      ),
      (Pool(f"{scope}/tower_2/pool", "avg"), Conv(f"{scope}/tower_2/conv", 192, (1, 1))),
    ),
  )


def _block_e(scope: str, pool_kind: str) -> Block:  # 8x8 blocks (InceptionE)
  return Block(
    scope,
    (
      (Conv(f"{scope}/conv", 320, (1, 1)),),
      (
        Conv(f"{scope}/tower/conv", 384, (1, 1)),
        Split(
          f"{scope}/tower/mixed",
          (
            Conv(f"{scope}/tower/mixed/conv", 384, (1, 3)),
            Conv(f"{scope}/tower/mixed/conv_1", 384, (3, 1)),
          ),
        ),
      ),
      (
        Conv(f"{scope}/tower_1/conv", 448, (1, 1)),
        Conv(f"{scope}/tower_1/conv_1", 384, (3, 3)),
        Split(
          f"{scope}/tower_1/mixed",
          (
            Conv(f"{scope}/tower_1/mixed/conv", 384, (1, 3)),
            Conv(f"{scope}/tower_1/mixed/conv_1", 384, (3, 1)),
          ),
        ),
      ),
      (Pool(f"{scope}/tower_2/pool", pool_kind), Conv(f"{scope}/tower_2/conv", 192, (1, 1))),
    ),
  )


STEM: tuple[Conv | Pool, ...] = (
  Conv("conv", 32, (3, 3), strides=2, padding="VALID"),
  Conv("conv_1", 32, (3, 3), padding="VALID"),
  Conv("conv_2", 64, (3, 3)),
  Pool("pool", "max", strides=2, padding="VALID"),
  Conv("conv_3", 80, (1, 1), padding="VALID"),
  Conv("conv_4", 192, (3, 3), padding="VALID"),
  Pool("pool_1", "max", strides=2, padding="VALID"),
)

BLOCKS: tuple[Block, ...] = (
  _block_a("mixed", 32),
  _block_a("mixed_1", 64),
  _block_a("mixed_2", 64),
  Block(
    "mixed_3",
    (  # 35 -> 17 reduction (InceptionB)
      (Conv("mixed_3/conv", 384, (3, 3), strides=2, padding="VALID"),),
      (
        Conv("mixed_3/tower/conv", 64, (1, 1)),
        Conv("mixed_3/tower/conv_1", 96, (3, 3)),
        Conv("mixed_3/tower/conv_2", 96, (3, 3), strides=2, padding="VALID"),
      ),
      (Pool("mixed_3/pool", "max", strides=2, padding="VALID"),),
    ),
  ),
  _block_c("mixed_4", 128),
  _block_c("mixed_5", 160),
  _block_c("mixed_6", 160),
  _block_c("mixed_7", 192),
  Block(
    "mixed_8",
    (  # 17 -> 8 reduction (InceptionD)
      (
        Conv("mixed_8/tower/conv", 192, (1, 1)),
        Conv("mixed_8/tower/conv_1", 320, (3, 3), strides=2, padding="VALID"),
      ),
      (
        Conv("mixed_8/tower_1/conv", 192, (1, 1)),
        Conv("mixed_8/tower_1/conv_1", 192, (1, 7)),
        Conv("mixed_8/tower_1/conv_2", 192, (7, 1)),
        Conv("mixed_8/tower_1/conv_3", 192, (3, 3), strides=2, padding="VALID"),
      ),
      (Pool("mixed_8/pool", "max", strides=2, padding="VALID"),),
    ),
  ),
  _block_e("mixed_9", "avg"),
  _block_e("mixed_10", "max"),  # TTUR graph quirk: max pool in the last block's pool branch
)

POOL3 = Pool("pool_3", "avg", size=8, padding="VALID")
SOFTMAX_WEIGHTS = "softmax/weights"


def conv_units() -> list[Conv]:
  """All 94 conv units in graph order."""
  units: list[Conv] = [u for u in STEM if isinstance(u, Conv)]
  for block in BLOCKS:
    for branch in block.branches:
      for unit in branch:
        if isinstance(unit, Conv):
          units.append(unit)
        elif isinstance(unit, Split):
          units.extend(unit.parts)
  return units


def pool_units() -> list[Pool]:
  units: list[Pool] = [u for u in STEM if isinstance(u, Pool)]
  for block in BLOCKS:
    units.extend(u for branch in block.branches for u in branch if isinstance(u, Pool))
  return units + [POOL3]


def layer_name(scope: str) -> str:
  """Keras layer name of a graph scope (Keras 3 forbids '/')."""
  return scope.replace("/", ".")


# ----------------------------------------------------------------------------------------------
# Keras model


class InceptionInput(keras.layers.Layer):
  """`ExpandDims:0` -> `Mul:0` of the graph: grey -> RGB, TF1 bilinear resize to 299, (x-128)/128.

  Input: float [B, H, W, 1 or 3] in [0, 255]. Output: float32 [B, 299, 299, 3].
  """

  def call(self, images):
    images = tf.cast(images, tf.float32)
    rgb_shape = tf.concat([tf.shape(images)[:-1], [3]], axis=0)
    images = tf.broadcast_to(images, rgb_shape)  # grey [.., 1] replicated; RGB unchanged
    images = tf.ensure_shape(images, images.shape[:-1].concatenate([3]))
    images = resize_bilinear_tf1(images, (INPUT_SIZE, INPUT_SIZE))
    return (images - INPUT_SHIFT) * INPUT_SCALE

  def compute_output_shape(self, input_shape):
    return (input_shape[0], INPUT_SIZE, INPUT_SIZE, 3)


def _scaled(filters: int, width_divisor: int) -> int:
  return max(1, filters // width_divisor)


def _apply_conv(x, unit: Conv, width_divisor: int, dtype):
  name = layer_name(unit.scope)
  x = keras.layers.Conv2D(
    _scaled(unit.filters, width_divisor),
    unit.kernel,
    strides=unit.strides,
    padding=unit.padding.lower(),
    use_bias=False,
    name=name + ".conv",
    dtype=dtype,
  )(x)
  x = keras.layers.BatchNormalization(
    epsilon=BATCHNORM_EPSILON, name=name + ".batchnorm", dtype=dtype
  )(x)
  return keras.layers.ReLU(name=name, dtype=dtype)(x)


def _apply_pool(x, unit: Pool, dtype):
  pool_cls = keras.layers.MaxPooling2D if unit.kind == "max" else keras.layers.AveragePooling2D
  # Keras/TF 'same' average pooling divides by the number of *valid* inputs, as the 2015 graph.
  return pool_cls(
    unit.size,
    strides=unit.strides,
    padding=unit.padding.lower(),
    name=layer_name(unit.scope),
    dtype=dtype,
  )(x)


def _apply_chain(x, chain, width_divisor: int, dtype):
  for unit in chain:
    if isinstance(unit, Conv):
      x = _apply_conv(x, unit, width_divisor, dtype)
    elif isinstance(unit, Pool):
      x = _apply_pool(x, unit, dtype)
    else:
      parts = [_apply_conv(x, part, width_divisor, dtype) for part in unit.parts]
      x = keras.layers.Concatenate(axis=-1, name=layer_name(unit.scope), dtype=dtype)(parts)
  return x


def build_inception_2015(*, width_divisor: int = 1, dtype_policy: str | None = None) -> keras.Model:
  """Builds the (randomly initialised) Keras FID Inception network.

  Args:
    width_divisor: 1 gives the published network. Larger values divide every conv's filter count
      (same topology, narrow variant; tests and smoke runs use it with small weight files).
    dtype_policy: Keras dtype policy of the layers, e.g. "mixed_bfloat16" on a GPU; outputs are
      cast to float32 either way.

  Returns:
    A Keras model: float [B, H, W, 1|3] in [0, 255] (any H, W) -> {"pool_3": [B, 2048] float32,
    "logits": [B, 1008] float32, and pytorch-fid's `--dims` features "block_64", "block_192",
    "block_768": spatial means [B, 64|192|768]} (the widths scale with `width_divisor`).
  """
  if width_divisor < 1:
    raise ValueError(f"width_divisor must be >= 1, got {width_divisor}")
  images = keras.Input(shape=(None, None, None), name="ExpandDims")
  x = InceptionInput(name="Mul")(images)  # [B, 299, 299, 3]
  blocks = {}
  # pytorch-fid's `--dims` features: the spatial mean of the outputs of its blocks 0, 1 and 2
  # (after the stem's first and second max pool, and after Mixed_6e = mixed_7).
  mean = lambda name, t: keras.layers.GlobalAveragePooling2D(name=name, dtype="float32")(t)
  x = _apply_chain(x, STEM[:4], width_divisor, dtype_policy)
  blocks["block_64"] = mean("block_64", x)
  x = _apply_chain(x, STEM[4:], width_divisor, dtype_policy)
  blocks["block_192"] = mean("block_192", x)
  for block in BLOCKS:
    outputs = [_apply_chain(x, branch, width_divisor, dtype_policy) for branch in block.branches]
    x = keras.layers.Concatenate(
      axis=-1, name=layer_name(block.scope + "/join"), dtype=dtype_policy
    )(outputs)
    if block.scope == "mixed_7":
      blocks["block_768"] = mean("block_768", x)
  x = _apply_pool(x, POOL3, dtype_policy)  # [B, 1, 1, 2048]
  pool3 = keras.layers.Flatten(name="pool_3._reshape", dtype="float32")(x)  # [B, 2048]
  logits = keras.layers.Dense(NUM_LOGITS, use_bias=False, name="softmax.logits", dtype="float32")(
    pool3
  )  # [B, 1008] = pool_3 @ W, no bias
  return keras.Model(images, {"pool_3": pool3, "logits": logits, **blocks}, name="inception_2015")


# ----------------------------------------------------------------------------------------------
# GraphDef reading


class GraphDefMismatchError(ValueError):
  """The .pb file is not the 2015 Inception graph this module reproduces."""


def _attr_ints(node, key) -> list[int]:
  return list(node.attr[key].list.i)


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise GraphDefMismatchError(message)


def _non_const_inputs(node, nodes) -> list[str]:
  names = [name.split(":")[0].lstrip("^") for name in node.input]
  return [name for name in names if nodes.get(name) is None or nodes[name].op != "Const"]


def _check_join(join_name: str, branch_prefixes: list[str], nodes) -> None:
  """The concat `join_name` must take its inputs from the branches in `branch_prefixes` order."""
  if join_name not in nodes:
    return
  inputs = _non_const_inputs(nodes[join_name], nodes)
  _check(
    len(inputs) == len(branch_prefixes),
    f"{join_name} concatenates {len(inputs)} tensors, expected {len(branch_prefixes)}",
  )
  for got, prefix in zip(inputs, branch_prefixes):
    _check(
      got == prefix or got.startswith(prefix + "/"),
      f"{join_name}: input {got!r} where the branch {prefix!r} was expected (concat order)",
    )


def _branch_head(branch) -> str:
  """The scope that names a branch's output in the graph, e.g. "mixed/tower" or "mixed/conv"."""
  first = branch[0]
  scope = first.scope
  parts = scope.split("/")
  return "/".join(parts[:2]) if len(parts) > 2 else scope


def read_graph_def_weights(
  path: str, *, width_divisor: int | None = None
) -> tuple[dict[str, np.ndarray], int]:
  """Reads and checks the weights of `classify_image_graph_def.pb`.

  The file is parsed with `tf.compat.v1.GraphDef` (TensorFlow's protobuf parser). Every
  `Const` tensor the architecture needs must be there with the right shape; strides, paddings,
  pool types, the concat order of every block, `variance_epsilon`, `scale_after_normalization`,
  the input resize size and the (x - 128) / 128 constants are compared with `STEM`/`BLOCKS` where
  the file holds those nodes.

  Args:
    path: the .pb file.
    width_divisor: expected narrowing; None reads it from the first conv (32 filters / divisor).

  Returns:
    ({graph tensor name: array}, width_divisor) with the tensors of all conv units
    (`<scope>/conv2d_params`, `<scope>/batchnorm/{beta,gamma,moving_mean,moving_variance}`) and
    `softmax/weights`.

  Raises:
    GraphDefMismatchError: the file is not this graph (message names the first difference).
    OSError / google.protobuf.message.DecodeError: unreadable file.
  """
  with tf.io.gfile.GFile(path, "rb") as f:
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(f.read())
  nodes = {node.name: node for node in graph_def.node}
  consts = {name: node for name, node in nodes.items() if node.op == "Const"}

  def tensor(name: str) -> np.ndarray:
    _check(name in consts, f"tensor {name!r} is missing from {path}")
    return tf.make_ndarray(consts[name].attr["value"].tensor)

  first = tensor("conv/conv2d_params")
  if width_divisor is None:
    _check(
      first.ndim == 4 and first.shape[-1] >= 1 and 32 % first.shape[-1] == 0,
      f"conv/conv2d_params has shape {first.shape}, expected [3, 3, 3, 32]",
    )
    width_divisor = 32 // first.shape[-1]

  weights: dict[str, np.ndarray] = {}
  for unit in conv_units():
    kernel = tensor(unit.scope + "/conv2d_params")
    filters = _scaled(unit.filters, width_divisor)
    _check(
      kernel.ndim == 4 and tuple(kernel.shape[:2]) == unit.kernel and kernel.shape[3] == filters,
      f"{unit.scope}/conv2d_params has shape {kernel.shape}, expected "
      f"[{unit.kernel[0]}, {unit.kernel[1]}, C_in, {filters}]",
    )
    weights[unit.scope + "/conv2d_params"] = kernel.astype(np.float32)
    for part in ("beta", "gamma", "moving_mean", "moving_variance"):
      name = f"{unit.scope}/batchnorm/{part}"
      value = tensor(name)
      _check(value.shape == (filters,), f"{name} has shape {value.shape}, expected ({filters},)")
      weights[name] = value.astype(np.float32)
    conv_node = nodes.get(unit.scope + "/Conv2D")
    if conv_node is not None:
      _check(
        _attr_ints(conv_node, "strides") == [1, unit.strides, unit.strides, 1],
        f"{unit.scope}/Conv2D strides {_attr_ints(conv_node, 'strides')} != stride {unit.strides}",
      )
      padding = conv_node.attr["padding"].s.decode()
      _check(padding == unit.padding, f"{unit.scope}/Conv2D padding {padding} != {unit.padding}")
    bn_node = nodes.get(unit.scope + "/batchnorm")
    if bn_node is not None:
      eps = bn_node.attr["variance_epsilon"].f
      _check(
        abs(eps - BATCHNORM_EPSILON) < 1e-9,
        f"{unit.scope}/batchnorm variance_epsilon {eps} != {BATCHNORM_EPSILON}",
      )
      _check(
        bn_node.attr["scale_after_normalization"].b,
        f"{unit.scope}/batchnorm does not apply gamma (scale_after_normalization=False)",
      )

  for unit in pool_units():
    node = nodes.get(unit.scope)
    if node is None:
      continue
    expected_op = "MaxPool" if unit.kind == "max" else "AvgPool"
    _check(node.op == expected_op, f"{unit.scope} is {node.op}, expected {expected_op}")
    _check(
      _attr_ints(node, "ksize") == [1, unit.size, unit.size, 1]
      and _attr_ints(node, "strides") == [1, unit.strides, unit.strides, 1]
      and node.attr["padding"].s.decode() == unit.padding,
      f"{unit.scope}: ksize/strides/padding differ from {unit}",
    )

  for block in BLOCKS:
    _check_join(block.scope + "/join", [_branch_head(branch) for branch in block.branches], nodes)
    for branch in block.branches:
      for unit in branch:
        if isinstance(unit, Split):
          _check_join(unit.scope, [part.scope for part in unit.parts], nodes)

  softmax = tensor(SOFTMAX_WEIGHTS)
  pool3_dim = _scaled(POOL3_DIM, width_divisor)
  _check(
    softmax.shape == (pool3_dim, NUM_LOGITS),
    f"{SOFTMAX_WEIGHTS} has shape {softmax.shape}, expected ({pool3_dim}, {NUM_LOGITS})",
  )
  weights[SOFTMAX_WEIGHTS] = softmax.astype(np.float32)

  for name, expected in (("Sub/y", INPUT_SHIFT), ("Mul/y", INPUT_SCALE)):
    if name in consts:
      value = float(np.asarray(tensor(name)).reshape(-1)[0])
      _check(abs(value - expected) < 1e-7, f"{name} = {value}, expected {expected}")
  if "ResizeBilinear/size" in consts:
    size = tensor("ResizeBilinear/size").tolist()
    _check(size == [INPUT_SIZE, INPUT_SIZE], f"ResizeBilinear/size = {size}, expected [299, 299]")
  if "ResizeBilinear" in nodes:
    _check(not nodes["ResizeBilinear"].attr["align_corners"].b, "ResizeBilinear has align_corners")
  return weights, width_divisor


def assign_weights(model: keras.Model, weights: Mapping[str, np.ndarray]) -> None:
  """Copies graph tensors (as returned by `read_graph_def_weights`) into the Keras model.

  Every conv, batch-norm and the logits layer must receive a tensor and every tensor must be used.
  """
  unused = set(weights)
  for unit in conv_units():
    name = layer_name(unit.scope)
    kernel_name = unit.scope + "/conv2d_params"
    model.get_layer(name + ".conv").set_weights([weights[kernel_name]])
    bn = [
      weights[f"{unit.scope}/batchnorm/{part}"]
      for part in ("gamma", "beta", "moving_mean", "moving_variance")
    ]  # Keras order
    model.get_layer(name + ".batchnorm").set_weights(bn)
    unused -= {
      kernel_name,
      *(f"{unit.scope}/batchnorm/{p}" for p in ("gamma", "beta", "moving_mean", "moving_variance")),
    }
  model.get_layer("softmax.logits").set_weights([weights[SOFTMAX_WEIGHTS]])
  unused.discard(SOFTMAX_WEIGHTS)
  if unused:
    raise GraphDefMismatchError(f"tensors not used by the Keras model: {sorted(unused)[:5]}")


# ----------------------------------------------------------------------------------------------
# PyTorch state dicts: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` and torch-fidelity's
# `weights-inception-2015-12-05-6726825d.pth` (the same 2015 graph, ported; torchvision
# `Inception3` module names: `Mixed_5b.branch1x1.conv.weight`, `...bn.running_var`, `fc.weight`).

# Graph block scope -> torchvision module (pytorch_fid/inception.py `fid_inception_v3`).
_TORCH_BLOCKS = {
  "mixed": "Mixed_5b",
  "mixed_1": "Mixed_5c",
  "mixed_2": "Mixed_5d",
  "mixed_3": "Mixed_6a",
  "mixed_4": "Mixed_6b",
  "mixed_5": "Mixed_6c",
  "mixed_6": "Mixed_6d",
  "mixed_7": "Mixed_6e",
  "mixed_8": "Mixed_7a",
  "mixed_9": "Mixed_7b",
  "mixed_10": "Mixed_7c",
}
_TORCH_STEM = {
  "conv": "Conv2d_1a_3x3",
  "conv_1": "Conv2d_2a_3x3",
  "conv_2": "Conv2d_2b_3x3",
  "conv_3": "Conv2d_3b_1x1",
  "conv_4": "Conv2d_4a_3x3",
}
# Unit scope inside a block -> torchvision branch, per block kind (torchvision InceptionA..E).
_TORCH_BRANCHES = {
  "A": {
    "conv": "branch1x1",
    "tower/conv": "branch5x5_1",
    "tower/conv_1": "branch5x5_2",
    "tower_1/conv": "branch3x3dbl_1",
    "tower_1/conv_1": "branch3x3dbl_2",
    "tower_1/conv_2": "branch3x3dbl_3",
    "tower_2/conv": "branch_pool",
  },
  "B": {
    "conv": "branch3x3",
    "tower/conv": "branch3x3dbl_1",
    "tower/conv_1": "branch3x3dbl_2",
    "tower/conv_2": "branch3x3dbl_3",
  },
  "C": {
    "conv": "branch1x1",
    "tower/conv": "branch7x7_1",
    "tower/conv_1": "branch7x7_2",
    "tower/conv_2": "branch7x7_3",
    "tower_1/conv": "branch7x7dbl_1",
    "tower_1/conv_1": "branch7x7dbl_2",
    "tower_1/conv_2": "branch7x7dbl_3",
    "tower_1/conv_3": "branch7x7dbl_4",
    "tower_1/conv_4": "branch7x7dbl_5",
    "tower_2/conv": "branch_pool",
  },
  "D": {
    "tower/conv": "branch3x3_1",
    "tower/conv_1": "branch3x3_2",
    "tower_1/conv": "branch7x7x3_1",
    "tower_1/conv_1": "branch7x7x3_2",
    "tower_1/conv_2": "branch7x7x3_3",
    "tower_1/conv_3": "branch7x7x3_4",
  },
  "E": {
    "conv": "branch1x1",
    "tower/conv": "branch3x3_1",
    "tower/mixed/conv": "branch3x3_2a",
    "tower/mixed/conv_1": "branch3x3_2b",
    "tower_1/conv": "branch3x3dbl_1",
    "tower_1/conv_1": "branch3x3dbl_2",
    "tower_1/mixed/conv": "branch3x3dbl_3a",
    "tower_1/mixed/conv_1": "branch3x3dbl_3b",
    "tower_2/conv": "branch_pool",
  },
}
_BLOCK_KIND = {
  "mixed": "A",
  "mixed_1": "A",
  "mixed_2": "A",
  "mixed_3": "B",
  "mixed_4": "C",
  "mixed_5": "C",
  "mixed_6": "C",
  "mixed_7": "C",
  "mixed_8": "D",
  "mixed_9": "E",
  "mixed_10": "E",
}
# Entries of the state dict that the features and the 1008 logits (no bias) do not use.
_TORCH_UNUSED = ("fc.bias",)


def torch_module_name(scope: str) -> str:
  """torchvision `Inception3` module of a graph conv unit, e.g. "mixed_4/tower/conv_1" ->
  "Mixed_6b.branch7x7_2"."""
  if scope in _TORCH_STEM:
    return _TORCH_STEM[scope]
  block, _, unit = scope.partition("/")
  return f"{_TORCH_BLOCKS[block]}.{_TORCH_BRANCHES[_BLOCK_KIND[block]][unit]}"


def convert_torch_state_dict(
  state: Mapping[str, np.ndarray], *, source: str = "state dict"
) -> tuple[dict[str, np.ndarray], int]:
  """pytorch-fid / torch-fidelity Inception state dict (numpy arrays) -> graph tensors.

  Per conv unit: `<module>.conv.weight` [O, I, kh, kw] -> `<scope>/conv2d_params` [kh, kw, I, O];
  `<module>.bn.{weight, bias, running_mean, running_var}` -> `<scope>/batchnorm/{gamma, beta,
  moving_mean, moving_variance}`; `fc.weight` [1008, 2048] -> `softmax/weights` [2048, 1008].
  `fc.bias` and `*.num_batches_tracked` are not used (the logits of the 2015 graph's IS are
  `pool_3 @ W`, no bias, as torch-fidelity's `logits_unbiased`). Every other entry must be used
  and every shape must match the architecture (a narrow file gives a narrow network).

  Returns:
    ({graph tensor name: float32 array}, width_divisor), for `assign_weights`.

  Raises:
    GraphDefMismatchError: missing/unexpected entries or wrong shapes (the message names one).
  """
  first = state.get("Conv2d_1a_3x3.conv.weight")
  _check(
    first is not None and np.ndim(first) == 4 and first.shape[0] >= 1 and 32 % first.shape[0] == 0,
    f"{source} has no Conv2d_1a_3x3.conv.weight [32, 3, 3, 3]: not a pytorch-fid / "
    f"torch-fidelity Inception state dict (keys start {sorted(state)[:3]})",
  )
  width_divisor = 32 // first.shape[0]
  weights: dict[str, np.ndarray] = {}
  used = set(_TORCH_UNUSED)
  for unit in conv_units():
    module = torch_module_name(unit.scope)
    filters = _scaled(unit.filters, width_divisor)
    key = module + ".conv.weight"
    _check(key in state, f"{source} has no {key!r}")
    kernel = np.asarray(state[key], np.float32)
    _check(
      kernel.ndim == 4 and kernel.shape[0] == filters and tuple(kernel.shape[2:]) == unit.kernel,
      f"{source}: {key} has shape {kernel.shape}, expected [{filters}, C_in, "
      f"{unit.kernel[0]}, {unit.kernel[1]}]",
    )
    weights[unit.scope + "/conv2d_params"] = kernel.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    used.add(key)
    for ours, theirs in (
      ("gamma", "weight"),
      ("beta", "bias"),
      ("moving_mean", "running_mean"),
      ("moving_variance", "running_var"),
    ):
      key = f"{module}.bn.{theirs}"
      _check(key in state, f"{source} has no {key!r}")
      value = np.asarray(state[key], np.float32)
      _check(
        value.shape == (filters,), f"{source}: {key} has shape {value.shape}, expected ({filters},)"
      )
      weights[f"{unit.scope}/batchnorm/{ours}"] = value
      used.add(key)
  _check("fc.weight" in state, f"{source} has no 'fc.weight' (the 1008-way head)")
  fc = np.asarray(state["fc.weight"], np.float32)
  pool3_dim = _scaled(POOL3_DIM, width_divisor)
  _check(
    fc.shape == (NUM_LOGITS, pool3_dim),
    f"{source}: fc.weight has shape {fc.shape}, expected ({NUM_LOGITS}, {pool3_dim})",
  )
  weights[SOFTMAX_WEIGHTS] = fc.T.copy()
  used.add("fc.weight")
  unexpected = sorted(k for k in state if k not in used and not k.endswith(".num_batches_tracked"))
  _check(not unexpected, f"{source}: entries not in the FID Inception network: {unexpected[:5]}")
  return weights, width_divisor


def read_torch_weights(path: str) -> tuple[dict[str, np.ndarray], int]:
  """Graph tensors of a pytorch-fid / torch-fidelity `.pth` file (needs PyTorch, imported here)."""
  try:
    import torch
  except ImportError as e:
    raise GraphDefMismatchError(
      f"{path} is a PyTorch file; reading it needs PyTorch (pip install torch --index-url "
      "https://download.pytorch.org/whl/cpu), or pass TTUR's classify_image_graph_def.pb"
    ) from e
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises pickle/zip/runtime errors
    raise GraphDefMismatchError(f"cannot read {path} with torch.load: {e}") from e
  if not isinstance(state, Mapping):
    raise GraphDefMismatchError(f"{path} does not hold a state dict (got {type(state).__name__})")
  state = {
    k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
    for k, v in state.items()
  }
  return convert_torch_state_dict(state, source=path)
