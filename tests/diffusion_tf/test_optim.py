"""The official DDPM optimizer: lr warm-up step / warmup, Adam epsilon 1e-8 (TF1 AdamOptimizer form)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from diffusion_tf import optim
from tests.conftest import two_cpu_strategy


def test_linear_warmup_values():
  schedule = optim.LinearWarmup(2e-4, 5000)
  got = [float(schedule(tf.constant(s))) for s in (0, 1, 2500, 4999, 5000, 10**6)]
  # Official get_warmed_up_lr: max_lr * min(global_step / warmup, 1); the first update has lr 0.
  np.testing.assert_allclose(
    got, [0.0, 2e-4 / 5000, 1e-4, 2e-4 * 4999 / 5000, 2e-4, 2e-4], rtol=1e-6
  )
  assert float(optim.LinearWarmup(3e-4, 0)(tf.constant(0))) == pytest.approx(3e-4)
  with pytest.raises(ValueError):
    optim.LinearWarmup(1e-4, -1)


def test_ddpm_adam_two_steps_equal_tf1_adam_with_epsilon_1e8():
  """Two updates with a constant tiny gradient g = 1e-7 (where epsilon matters: 1e-8 vs Keras'
  default 1e-7 changes the step by 1.8x). TF1 AdamOptimizer: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),
  w -= lr_t m_t / (sqrt(v_t) + eps)."""
  lr, warmup, g = 1e-2, 4, 1e-7
  opt = optim.ddpm_adam(learning_rate=lr, warmup_steps=warmup)
  w = tf.Variable([1.0, -1.0])
  for _ in range(2):
    opt.apply_gradients([(tf.constant([g, g]), w)])
  b1, b2, eps = 0.9, 0.999, 1e-8
  m, v, expected = 0.0, 0.0, 1.0
  for step in range(2):
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    t = step + 1
    lr_step = lr * min(step / warmup, 1.0)  # warm-up on the step count before the update
    expected -= lr_step * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (math.sqrt(v) + eps)
  np.testing.assert_allclose(w.numpy()[0], expected, rtol=1e-6)
  assert abs(w.numpy()[0] - 1.0) > 1e-4  # the second update moved the weight
  assert opt.epsilon == 1e-8 and not opt.use_ema
  assert optim.ddpm_adam(learning_rate=lr, warmup_steps=1, ema_decay=0.9999).use_ema


def _adam_steps(optimizer_cls, strategy, steps=3):
  """`steps` updates of a Dense layer's kernel [5, 3] and bias [3] by `optimizer_cls` (Adam
  settings of the DDPM paper, EMA 0.5 so the average moves visibly), under `strategy` as the
  harness applies them (inside `strategy.run`). Returns the weights, the Adam moments and the
  EMA after the
  last step, the starting weights and the gradients."""
  with strategy.scope():
    layer = keras.layers.Dense(3)
    layer.build((None, 5))
    optimizer = optimizer_cls(learning_rate=0.1, epsilon=1e-8, use_ema=True, ema_momentum=0.5)
    optimizer.build(layer.trainable_variables)
  rng = np.random.default_rng(0)
  for v in layer.trainable_variables:
    v.assign(rng.standard_normal(v.shape).astype(np.float32))
  grads = [
    [tf.constant(rng.standard_normal(v.shape), tf.float32) for v in layer.trainable_variables]
    for _ in range(steps)
  ]

  @tf.function
  def apply(g):
    # Each replica holds the (already summed) global gradient, as in the harness.
    strategy.run(lambda: optimizer.apply([tf.identity(x) for x in g], layer.trainable_variables))

  start = [v.numpy() for v in layer.trainable_variables]
  for g in grads:
    apply(tuple(g))
  return (
    {
      "weights": [v.numpy() for v in layer.trainable_variables],
      "m": [v.numpy() for v in optimizer._momentums],
      "v": [v.numpy() for v in optimizer._velocities],
      "average": [v.numpy() for v in optimizer._model_variables_moving_average],
    },
    start,
    grads,
  )


def _numpy_adam(weights, grads, *, lr, eps, ema, beta_1, beta_2):
  """Adam (Kingma & Ba, Algorithm 1, with eps outside the square root as TF's AdamOptimizer) and
  the weight EMA (the first average = the weights after step 1), float64."""
  w = [x.astype(np.float64) for x in weights]
  m, v, avg = [np.zeros_like(x) for x in w], [np.zeros_like(x) for x in w], None
  for t, g_t in enumerate(grads, start=1):
    alpha = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
    for i, g in enumerate(g_t):
      g = g.numpy().astype(np.float64)
      m[i] += (g - m[i]) * (1 - beta_1)
      v[i] += (g * g - v[i]) * (1 - beta_2)
      w[i] -= alpha * m[i] / (np.sqrt(v[i]) + eps)
    avg = (
      [x.copy() for x in w] if avg is None else [ema * a + (1 - ema) * x for a, x in zip(avg, w)]
    )
  return {"weights": w, "m": m, "v": v, "average": avg}


@pytest.mark.parametrize("replicas", [1, 2])
def test_fused_adam_and_ema_equal_numpy_and_keras_adam(replicas):
  """FusedAdam's one-kernel updates after three steps of random gradients, on one device and on
  two replicas (each replica updates its copy of the slots): weights, both moments and the EMA
  equal NumPy's Adam with the betas as float32 numbers (the fused kernel forms 1 - beta in float32,
  as TF1's AdamOptimizer did), and keras.optimizers.Adam (1 - beta in float64, then rounded) up to
  that rounding: 1 - float32(0.999) is 4.7e-5 relatively away from float32(0.001)."""
  strategy = two_cpu_strategy() if replicas == 2 else tf.distribute.get_strategy()
  ours, start, grads = _adam_steps(optim.FusedAdam, strategy)
  keras_adam, _, _ = _adam_steps(keras.optimizers.Adam, strategy)
  # Keras' `apply` inside `strategy.run` sums the replicas' gradients: each replica's update sees
  # `replicas` times the gradient given.
  reference = _numpy_adam(
    start,
    [[replicas * g for g in step] for step in grads],
    lr=0.1,
    eps=1e-8,
    ema=0.5,
    beta_1=float(np.float32(0.9)),
    beta_2=float(np.float32(0.999)),
  )
  for key in ours:
    for a, b, c in zip(ours[key], reference[key], keras_adam[key]):
      np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7, err_msg=key)
      np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6, err_msg=key)
  # The weights moved by about lr per step (Adam's normalised step); the EMA lags behind.
  assert np.abs(ours["weights"][0] - start[0]).max() > 0.1
  assert np.abs(ours["weights"][0] - ours["average"][0]).max() > 0.01
  assert isinstance(optim.ddpm_adam(learning_rate=1e-4, warmup_steps=1), optim.FusedAdam)
