"""The official DDPM optimizer: lr warm-up step / warmup, Adam epsilon 1e-8 (TF1 AdamOptimizer form)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from diffusion_tf import optim


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
