"""Small weight files in the real formats, and an independent evaluator of the Inception GraphDef.

`write_inception_graph_def` writes a GraphDef laid out like TTUR's classify_image_graph_def.pb
(same node names and op types: Conv2D -> BatchNormWithGlobalNormalization -> CheckNumerics -> Relu,
old-style Concat with concat_dim first, pool_3/_reshape, softmax/logits/MatMul + BiasAdd), with
random weights and every width divided by `width_divisor`.

`evaluate_graph_def` runs such a graph node by node with plain TensorFlow ops, following the
GraphDef's own edges (TensorFlow >= 2.x refuses to execute BatchNormWithGlobalNormalization, so
that one op is written out by its documented formula).

What this can and cannot check: the writer lays the graph out from `inception.STEM` / `BLOCKS`,
so comparing the Keras model with `evaluate_graph_def` checks the .pb reader and the weight
mapping (a swapped gamma/beta, a transposed kernel, a wrong concat order in the reader), NOT the
architecture itself -- a wrong kernel size or pool type in STEM/BLOCKS would be in both. The
architecture is checked independently in tests/reference/test_fid_inception.py against
pytorch-fid's and torch-fidelity's networks (written by other people), to 1e-4.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, graph_pb2

from evaluation import inception

_F32 = attr_value_pb2.AttrValue(type=tf.float32.as_datatype_enum)


class _Writer:
  def __init__(self):
    self.graph = graph_pb2.GraphDef()
    self.graph.versions.producer = 8  # the op set of the 2015 graph

  def const(self, name: str, value) -> str:
    value = np.asarray(value)
    node = self.graph.node.add(name=name, op="Const")
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
    return name

  def op(self, name: str, op: str, inputs, **attrs) -> str:
    node = self.graph.node.add(name=name, op=op)
    node.input.extend(inputs)
    for key, value in attrs.items():
      node.attr[key].CopyFrom(value)
    return name


def _ints(values):
  return attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(i=values))


def _str(value: str):
  return attr_value_pb2.AttrValue(s=value.encode())


def write_inception_graph_def(
  path, *, width_divisor: int = 16, seed: int = 0, mutate=None
) -> dict[str, np.ndarray]:
  """Writes the narrow graph; returns its Const tensors. `mutate(writer)` may edit it first."""
  rng = np.random.default_rng(seed)
  w = _Writer()
  w.op("ExpandDims", "Placeholder", [], dtype=_F32)
  size = w.const("ResizeBilinear/size", np.array([299, 299], np.int32))
  x = w.op(
    "ResizeBilinear",
    "ResizeBilinear",
    ["ExpandDims", size],
    T=_F32,
    align_corners=attr_value_pb2.AttrValue(b=False),
  )
  x = w.op("Sub", "Sub", [x, w.const("Sub/y", np.float32(128.0))], T=_F32)
  x = w.op("Mul", "Mul", [x, w.const("Mul/y", np.float32(1 / 128))], T=_F32)
  channels = {"Mul": 3}

  def conv(x, unit):
    filters = max(1, unit.filters // width_divisor)
    fan_in = unit.kernel[0] * unit.kernel[1] * channels[x]
    kernel = rng.normal(0, np.sqrt(2.0 / fan_in), unit.kernel + (channels[x], filters))
    s = unit.scope
    params = w.const(f"{s}/conv2d_params", kernel.astype(np.float32))
    y = w.op(
      f"{s}/Conv2D",
      "Conv2D",
      [x, params],
      T=_F32,
      strides=_ints([1, unit.strides, unit.strides, 1]),
      padding=_str(unit.padding),
    )
    bn = [
      w.const(f"{s}/batchnorm/{part}", value.astype(np.float32))
      for part, value in (
        ("moving_mean", rng.normal(0, 0.1, filters)),
        ("moving_variance", rng.uniform(0.5, 1.5, filters)),
        ("beta", rng.normal(0, 0.1, filters)),
        ("gamma", rng.uniform(0.5, 1.5, filters)),
      )
    ]
    y = w.op(
      f"{s}/batchnorm",
      "BatchNormWithGlobalNormalization",
      [y] + bn,
      T=_F32,
      variance_epsilon=attr_value_pb2.AttrValue(f=0.001),
      scale_after_normalization=attr_value_pb2.AttrValue(b=True),
    )
    y = w.op(f"{s}/CheckNumerics", "CheckNumerics", [y], T=_F32, message=_str("bad"))
    y = w.op(s, "Relu", [y], T=_F32)
    channels[y] = filters
    return y

  def pool(x, unit):
    y = w.op(
      unit.scope,
      "MaxPool" if unit.kind == "max" else "AvgPool",
      [x],
      T=_F32,
      ksize=_ints([1, unit.size, unit.size, 1]),
      strides=_ints([1, unit.strides, unit.strides, 1]),
      padding=_str(unit.padding),
    )
    channels[y] = channels[x]
    return y

  def concat(name, inputs):
    dim = w.const(f"{name}/concat_dim", np.int32(3))
    y = w.op(name, "Concat", [dim] + inputs, T=_F32, N=attr_value_pb2.AttrValue(i=len(inputs)))
    channels[y] = sum(channels[i] for i in inputs)
    return y

  def chain(x, units):
    for unit in units:
      if isinstance(unit, inception.Conv):
        x = conv(x, unit)
      elif isinstance(unit, inception.Pool):
        x = pool(x, unit)
      else:
        x = concat(unit.scope, [conv(x, part) for part in unit.parts])
    return x

  x = chain(x, inception.STEM)
  for block in inception.BLOCKS:
    x = concat(f"{block.scope}/join", [chain(x, branch) for branch in block.branches])
  x = pool(x, inception.POOL3)
  dim = channels[x]
  x = w.op(
    "pool_3/_reshape",
    "Reshape",
    [x, w.const("pool_3/_reshape/shape", np.array([-1, dim], np.int32))],
    T=_F32,
  )
  weights = w.const(
    "softmax/weights", rng.normal(0, 1 / np.sqrt(dim), (dim, 1008)).astype(np.float32)
  )
  logits = w.op("softmax/logits/MatMul", "MatMul", [x, weights], T=_F32)
  logits = w.op(
    "softmax/logits",
    "BiasAdd",
    [logits, w.const("softmax/biases", rng.normal(0, 1, 1008).astype(np.float32))],
    T=_F32,
  )
  w.op("softmax", "Softmax", [logits], T=_F32)
  if mutate is not None:
    mutate(w.graph)
  with open(path, "wb") as f:
    f.write(w.graph.SerializeToString())
  return {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in w.graph.node if n.op == "Const"}


def evaluate_graph_def(path, images: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
  """Runs the GraphDef on `images` (fed at ExpandDims) with plain TF ops, edge by edge."""
  graph = tf.compat.v1.GraphDef()
  with open(path, "rb") as f:
    graph.ParseFromString(f.read())
  nodes = {n.name: n for n in graph.node}
  cache = {"ExpandDims": tf.constant(images, tf.float32)}

  def ints(node, key):
    return list(node.attr[key].list.i)

  def value(name):
    name = name.split(":")[0]
    if name in cache:
      return cache[name]
    node = nodes[name]
    args = [value(i) for i in node.input]
    op = node.op
    if op == "Const":
      out = tf.constant(tf.make_ndarray(node.attr["value"].tensor))
    elif op == "ResizeBilinear":
      out = tf.compat.v1.image.resize_bilinear(
        args[0], args[1], align_corners=node.attr["align_corners"].b
      )
    elif op in ("Sub", "Mul", "MatMul", "BiasAdd", "Reshape", "Relu", "Softmax", "CheckNumerics"):
      fn = {
        "Sub": tf.subtract,
        "Mul": tf.multiply,
        "MatMul": tf.matmul,
        "BiasAdd": tf.add,
        "Reshape": tf.reshape,
        "Relu": tf.nn.relu,
        "Softmax": tf.nn.softmax,
        "CheckNumerics": tf.identity,
      }[op]
      out = fn(*args)
    elif op == "Conv2D":
      out = tf.nn.conv2d(args[0], args[1], ints(node, "strides"), node.attr["padding"].s.decode())
    elif op == "BatchNormWithGlobalNormalization":  # t, m, v, beta, gamma
      t, m, v, beta, gamma = args
      out = (t - m) * tf.math.rsqrt(v + node.attr["variance_epsilon"].f) * gamma + beta
    elif op in ("MaxPool", "AvgPool"):
      fn = tf.nn.max_pool2d if op == "MaxPool" else tf.nn.avg_pool2d
      out = fn(args[0], ints(node, "ksize"), ints(node, "strides"), node.attr["padding"].s.decode())
    elif op == "Concat":
      out = tf.concat(args[1:], axis=int(args[0]))
    else:
      raise NotImplementedError(op)
    cache[name] = out
    return out

  return [value(name).numpy() for name in outputs]
