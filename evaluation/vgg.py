"""VGG-16 fc2 features (4096-d, after ReLU) for precision/recall, realism score and PPL.

Architecture and weights are Keras's `keras.applications.VGG16` (ImageNet, the VGG team's Caffe
weights converted by the Keras authors, file `vgg16_weights_tf_dim_ordering_tf_kernels.h5`); the
layer names are identical so that file loads by name. Input pipeline: grey -> RGB, TF1 bilinear
resize to 224x224 (the same kernel as the FID Inception input), then Keras's `caffe` preprocessing
(RGB -> BGR, subtract the ImageNet BGR mean [103.939, 116.779, 123.68], no scaling). The features
are the `fc2` activations after ReLU, as in Kynkaanniemi et al. 2019 -- not the pooled 512-d conv
features.

A second option (`preprocessing="torchvision"`, CLI `--vgg=torch-fidelity`): torch-fidelity's
reference VGG-16 (`torch_fidelity/feature_extractor_vgg16.py`), i.e. torchvision's
`vgg16-397923af.pth` weights, the same TF1 bilinear resize to 224, then torchvision's ImageNet
mean/std on RGB (no BGR swap), features `fc2_relu`. `convert_torchvision_state_dict` maps that
state dict onto this network (conv OIHW -> HWIO; fc1's input axis permuted from PyTorch's
NCHW flatten order to Keras' NHWC flatten order; fc kernels transposed).

How this differs from NVIDIA's `vgg16.pkl` / `vgg16.pt` (kynkaat/improved-precision-and-recall-metric,
stylegan2-ada): theirs is a torchvision-derived VGG-16 (different ImageNet training run, RGB input
normalised by the torchvision mean/std) with its own resize to 224. The layer is the same (fc2
after ReLU) but the weights and preprocessing are not, so absolute precision/recall values are
close to, not identical with, numbers computed with NVIDIA's network.
"""

from __future__ import annotations

from collections.abc import Mapping

import h5py
import keras
import numpy as np
import tensorflow as tf

from evaluation.resize import resize_bilinear_tf1

INPUT_SIZE = 224
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode="caffe"
BLOCK_WIDTHS = (64, 128, 256, 512, 512)
BLOCK_DEPTHS = (2, 2, 3, 3, 3)
FC_WIDTH = 4096
CLASSIFIER_LAYER = "predictions"  # in the weights file, not used for features
# torch_fidelity/feature_extractor_vgg16.py: normalize(x, 255 * mean, 255 * std) on RGB [0, 255]
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
PREPROCESSING = ("caffe", "torchvision")
POOLED_SIZE = 7  # 224 / 2^5; torchvision's AdaptiveAvgPool2d((7, 7)) is the identity at 224


class VGGInput(keras.layers.Layer):
  """Float [B, H, W, 1|3] in [0, 255] -> caffe-preprocessed BGR [B, 224, 224, 3] float32."""

  def call(self, images):
    images = tf.cast(images, tf.float32)
    images = tf.broadcast_to(images, tf.concat([tf.shape(images)[:-1], [3]], axis=0))
    images = tf.ensure_shape(images, images.shape[:-1].concatenate([3]))
    images = resize_bilinear_tf1(images, (INPUT_SIZE, INPUT_SIZE))
    bgr = images[..., ::-1]
    return bgr - tf.constant(CAFFE_BGR_MEAN, tf.float32)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], INPUT_SIZE, INPUT_SIZE, 3)


class TorchvisionInput(VGGInput):
  """Float [B, H, W, 1|3] in [0, 255] -> (x - 255 mean) / (255 std) RGB [B, 224, 224, 3].

  x' = (x - 255 m_c) / (255 s_c), m = (0.485, 0.456, 0.406), s = (0.229, 0.224, 0.225)
  (torch-fidelity's VGG-16 input: TF1 bilinear resize to 224, then torchvision normalize).
  """

  def call(self, images):
    images = tf.cast(images, tf.float32)
    images = tf.broadcast_to(images, tf.concat([tf.shape(images)[:-1], [3]], axis=0))
    images = tf.ensure_shape(images, images.shape[:-1].concatenate([3]))
    images = resize_bilinear_tf1(images, (INPUT_SIZE, INPUT_SIZE))
    mean = tf.constant([255.0 * m for m in TORCHVISION_MEAN], tf.float32)
    std = tf.constant([255.0 * s for s in TORCHVISION_STD], tf.float32)
    return (images - mean) / std


def build_vgg16_fc2(
  *, width_divisor: int = 1, dtype_policy: str | None = None, preprocessing: str = "caffe"
) -> keras.Model:
  """Builds the (randomly initialised) VGG-16 fc2 feature network.

  Args:
    width_divisor: 1 is VGG-16; larger values divide every width (narrow variant for tests).
    dtype_policy: Keras dtype policy of the layers (e.g. "mixed_bfloat16" on a GPU).
    preprocessing: "caffe" (Keras' weights: BGR, mean only) or "torchvision" (torch-fidelity's
      weights: RGB, mean/std).

  Returns:
    Keras model: float [B, H, W, 1|3] in [0, 255] -> {"fc2": [B, 4096] float32}.
  """
  if width_divisor < 1:
    raise ValueError(f"width_divisor must be >= 1, got {width_divisor}")
  if preprocessing not in PREPROCESSING:
    raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
  images = keras.Input(shape=(None, None, None), name="images")
  if preprocessing == "caffe":
    x = VGGInput(name="caffe_input")(images)  # [B, 224, 224, 3]
  else:
    x = TorchvisionInput(name="torchvision_input")(images)  # [B, 224, 224, 3]
  for block, (width, depth) in enumerate(zip(BLOCK_WIDTHS, BLOCK_DEPTHS), start=1):
    for i in range(1, depth + 1):
      x = keras.layers.Conv2D(
        max(1, width // width_divisor),
        3,
        padding="same",
        activation="relu",
        name=f"block{block}_conv{i}",
        dtype=dtype_policy,
      )(x)
    x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool", dtype=dtype_policy)(x)
  x = keras.layers.Flatten(name="flatten", dtype=dtype_policy)(x)  # [B, 7 * 7 * 512], NHWC order
  fc_width = max(1, FC_WIDTH // width_divisor)
  x = keras.layers.Dense(fc_width, activation="relu", name="fc1", dtype=dtype_policy)(x)
  x = keras.layers.Dense(fc_width, activation="relu", name="fc2", dtype=dtype_policy)(x)
  fc2 = keras.layers.Activation("linear", name="fc2_features", dtype="float32")(x)
  return keras.Model(images, {"fc2": fc2}, name="vgg16_fc2")


class WeightsFileMismatchError(ValueError):
  """The .h5 file does not hold VGG-16 weights of the expected shapes."""


def _decode(names) -> list[str]:
  return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]


def read_keras_h5_weights(path: str) -> dict[str, list[np.ndarray]]:
  """Reads a Keras (legacy, Keras 2 `save_weights`) HDF5 weights file: {layer name: [arrays]}.

  Layout: root (or `model_weights/`) attribute `layer_names`; one group per layer with
  attribute `weight_names`, the datasets in that order (kernel, bias).
  """
  with h5py.File(path, "r") as f:
    group = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in group.attrs:
      raise WeightsFileMismatchError(f"{path} is not a Keras HDF5 weights file (no layer_names)")
    weights = {}
    for layer in _decode(group.attrs["layer_names"]):
      names = _decode(group[layer].attrs["weight_names"])
      if names:
        weights[layer] = [np.asarray(group[layer][name]) for name in names]
  return weights


def load_vgg16_weights(
  model: keras.Model, weights: Mapping[str, list[np.ndarray]], *, source: str = "weights"
) -> None:
  """Assigns weights read by `read_keras_h5_weights` (the Keras VGG-16 file layout) by layer name.

  Every conv/dense layer of `model` must get its kernel and bias with matching shapes; the only
  file layer allowed to stay unused is the 1000-way classifier.
  """
  unused = set(weights) - {CLASSIFIER_LAYER}
  for layer in model.layers:
    if not layer.weights:
      continue
    if layer.name not in weights:
      raise WeightsFileMismatchError(f"{source} has no weights for layer {layer.name!r}")
    arrays = weights[layer.name]
    expected = [tuple(w.shape) for w in layer.weights]
    if [a.shape for a in arrays] != expected:
      raise WeightsFileMismatchError(
        f"{source}: layer {layer.name!r} has shapes "
        f"{[a.shape for a in arrays]}, expected {expected}"
      )
    layer.set_weights(arrays)
    unused.discard(layer.name)
  if unused:
    raise WeightsFileMismatchError(f"{source}: layers not in the model: {sorted(unused)}")


def torchvision_fc1_kernel(weight: np.ndarray) -> np.ndarray:
  """fc1 weight [O, C*7*7] (PyTorch flattens NCHW: index c*49 + h*7 + w) -> Keras kernel
  [7*7*C, O] (Keras flattens NHWC: index h*7*C + w*C + c)."""
  out_width, in_width = weight.shape
  channels = in_width // (POOLED_SIZE * POOLED_SIZE)
  if channels * POOLED_SIZE * POOLED_SIZE != in_width:
    raise WeightsFileMismatchError(
      f"classifier.0.weight has {in_width} inputs, not a multiple of {POOLED_SIZE}x{POOLED_SIZE}"
    )
  kernel = weight.reshape(out_width, channels, POOLED_SIZE, POOLED_SIZE)  # [O, C, H, W]
  return kernel.transpose(2, 3, 1, 0).reshape(in_width, out_width)  # [H, W, C, O] -> [HWC, O]


def convert_torchvision_state_dict(
  state: Mapping[str, np.ndarray], *, source: str = "state dict"
) -> dict[str, list[np.ndarray]]:
  """torchvision VGG-16 state dict (`vgg16-397923af.pth`, numpy values) -> {Keras layer: [kernel,
  bias]} in the layout of `read_keras_h5_weights`, for `load_vgg16_weights`.

  features.{j} (j = 0, 2, 5, ..., 28) -> block{b}_conv{i} (OIHW -> HWIO); classifier.0 -> fc1
  (NCHW -> NHWC flatten order, transposed); classifier.3 -> fc2 (transposed); classifier.6
  (the 1000-way head) -> predictions (transposed; unused by the fc2 features).
  """
  weights: dict[str, list[np.ndarray]] = {}
  names = [
    f"block{b}_conv{i}"
    for b, depth in enumerate(BLOCK_DEPTHS, start=1)
    for i in range(1, depth + 1)
  ]
  position, index = 0, 0
  for depth in BLOCK_DEPTHS:  # torchvision `features`: (Conv2d, ReLU) per conv, MaxPool per block
    for _ in range(depth):
      keys = (f"features.{position}.weight", f"features.{position}.bias")
      for key in keys:
        if key not in state:
          raise WeightsFileMismatchError(
            f"{source} has no {key!r} (is it torchvision's "
            f"vgg16-397923af.pth? keys start {sorted(state)[:3]})"
          )
      kernel = np.asarray(state[keys[0]], np.float32)
      if kernel.ndim != 4:
        raise WeightsFileMismatchError(
          f"{source}: {keys[0]} has shape {kernel.shape}, expected 4-d OIHW"
        )
      weights[names[index]] = [kernel.transpose(2, 3, 1, 0), np.asarray(state[keys[1]], np.float32)]
      position, index = position + 2, index + 1
    position += 1
  for layer, j in (("fc1", 0), ("fc2", 3), (CLASSIFIER_LAYER, 6)):
    key = f"classifier.{j}.weight"
    if key not in state or f"classifier.{j}.bias" not in state:
      raise WeightsFileMismatchError(f"{source} has no {key!r}")
    weight = np.asarray(state[key], np.float32)  # [O, I]
    kernel = torchvision_fc1_kernel(weight) if layer == "fc1" else weight.T
    weights[layer] = [kernel, np.asarray(state[f"classifier.{j}.bias"], np.float32)]
  return weights


def read_torchvision_weights(path: str) -> dict[str, list[np.ndarray]]:
  """Reads torchvision's `vgg16-397923af.pth` (needs PyTorch) and converts it."""
  from evaluation import torch_state

  return convert_torchvision_state_dict(torch_state.read_torch_state_dict(path), source=path)
