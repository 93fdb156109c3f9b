"""The power iteration that serves both spectral regularisation (SR) and spectral normalisation (SN).

A convolution kernel in Keras layout [kh, kw, C_in, C_out] is viewed as the matrix
W = transpose(kernel) reshaped to (C_out, kh * kw * C_in) (depthwise [kh, kw, C, 1] -> (C, kh * kw)),
as the official code's `weight.view(C_out, -1)` on PyTorch's (C_out, C_in, kh, kw) layout (the column
order differs, the singular values do not). Its largest singular value is estimated as

    v <- normalize(u^T W),  u <- normalize(W v),  sigma(W) ~= u^T W v          (Miyato et al. 2018)

with u, v persistent across steps (no gradient through them); the gradient of sigma w.r.t. W is u v^T.
"""

from __future__ import annotations

import keras
import tensorflow as tf

NUM_POWER_ITERATIONS = 4  # NVAE official: `self.num_power_iter = 4` per training step
NUM_INITIAL_POWER_ITERATIONS = 40  # NVAE official: 10 * num_power_iter on the first call
NORMALIZE_EPS = 1e-3  # NVAE official: F.normalize(..., eps=1e-3)


def kernel_matrix(kernel, *, depthwise: bool = False):
  """Keras kernel [kh, kw, C_in, C_out] -> [C_out, kh*kw*C_in]; depthwise [kh, kw, C, 1] -> [C, kh*kw]."""
  if depthwise:
    kh, kw, c, m = kernel.shape
    return tf.reshape(tf.transpose(kernel, [2, 3, 0, 1]), [c * m, kh * kw])
  kh, kw, c_in, c_out = kernel.shape
  return tf.reshape(tf.transpose(kernel, [3, 0, 1, 2]), [c_out, kh * kw * c_in])


def _normalize(x):
  """x / max(||x||, eps) along the last axis (PyTorch F.normalize)."""
  return x / tf.maximum(tf.norm(x, axis=-1, keepdims=True), NORMALIZE_EPS)


def power_iteration(w, u, *, num_iterations: int):
  """Batched power iteration on w [N, R, C] from left vectors u [N, R]; returns (u, v), no gradient."""
  w = tf.stop_gradient(tf.cast(w, tf.float32))
  v = None
  for _ in range(num_iterations):
    v = _normalize(tf.einsum("nr,nrc->nc", u, w))  # [N, C]
    u = _normalize(tf.einsum("nrc,nc->nr", w, v))  # [N, R]
  return tf.stop_gradient(u), tf.stop_gradient(v)


@tf.function(reduce_retracing=True)
def _warm_start(w, u):
  """The NUM_INITIAL_POWER_ITERATIONS steps of construction time as one graph call: run eagerly they
  cost a Python round trip per op, for every SN conv (a one-scale SN model: 1.0 s -> 0.3 s to build)."""
  return power_iteration(w, u, num_iterations=NUM_INITIAL_POWER_ITERATIONS)


def top_singular_value(w, u, v):
  """sigma = u^T W v for w [N, R, C], u [N, R], v [N, C] -> [N]; differentiable w.r.t. w only."""
  return tf.einsum("nr,nrc,nc->n", u, tf.cast(w, tf.float32), v)


class PowerIterationState(keras.layers.Layer):
  """Persistent (u, v) for N matrices of one shape [R, C]: non-trainable, checkpointed with the model.

  `update(w)` runs `NUM_POWER_ITERATIONS` steps from the stored u and stores the result;
  `sigma(w)` returns u^T W v with the stored vectors. The vectors are warm-started with
  `NUM_INITIAL_POWER_ITERATIONS` steps at construction (the official first call).
  """

  def __init__(self, initial_w, *, name=None):
    super().__init__(name=name)
    initial_w = tf.convert_to_tensor(initial_w, tf.float32)  # [N, R, C]
    n, r, c = initial_w.shape
    u0 = _normalize(tf.cast(keras.random.normal((n, r)), tf.float32))
    u0, v0 = _warm_start(initial_w, u0)
    self.u = self.add_weight(
      shape=(n, r),
      initializer=lambda shape, dtype=None: u0,
      trainable=False,
      name="u",
      aggregation="mean",
      autocast=False,
    )
    self.v = self.add_weight(
      shape=(n, c),
      initializer=lambda shape, dtype=None: v0,
      trainable=False,
      name="v",
      aggregation="mean",
      autocast=False,
    )
    self.built = True

  def update(self, w):
    """Power iteration from the stored u; stores and returns sigma(W) [N] (gradient through w)."""
    u, v = power_iteration(w, self.u, num_iterations=NUM_POWER_ITERATIONS)
    self.u.assign(u)
    self.v.assign(v)
    return top_singular_value(w, u, v)

  def sigma(self, w):
    return top_singular_value(w, self.u, self.v)
