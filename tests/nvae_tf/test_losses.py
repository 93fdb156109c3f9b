"""KL warm-up (step and epoch clocks), KL balancing, active units, lr schedule, coupled Adamax."""

import math

import numpy as np
import pytest
import tensorflow as tf

from nvae_tf import losses, optim


@pytest.mark.parametrize("total", [10_000, 150 * 400])
def test_step_warmup_reaches_one_at_30_percent_and_respects_the_floor(total):
  values = losses.kl_warmup_beta(np.arange(total), total).numpy()
  assert values[0] == pytest.approx(1e-4) and values[1] == pytest.approx(1e-4)  # the floor
  first_one = int(np.argmax(values >= 1.0))
  assert first_one == round(0.3001 * total)  # t - 1e-4 T = 0.3 T: 30.01% of training
  assert values[first_one - 1] < 1.0 and values[-1] == 1.0
  assert np.all(np.diff(values) >= 0)
  t = total // 10
  assert values[t] == pytest.approx((t - 1e-4 * total) / (0.3 * total), rel=1e-5)


@pytest.mark.parametrize("epochs,first_one", [(100, 31), (400, 121), (10, 4)])
def test_epoch_warmup_reaches_one(epochs, first_one):
  """Epoch clock: the same formula on (epoch, total epochs); an earlier port divided epochs by
  the total *steps* and never passed beta = 0.008 -- this one reaches 1 after ~30% of the epochs."""
  values = losses.kl_warmup_beta(np.arange(epochs), epochs).numpy()
  assert values[0] == pytest.approx(1e-4)
  assert int(np.argmax(values >= 1.0)) == first_one
  assert values[-1] == 1.0
  assert np.all(np.diff(values) >= 0)


def test_kl_balance_gammas_mean_one_proportional_and_without_gradient():
  kl = tf.constant([[1.0, 5.0, 0.0], [3.0, 7.0, 0.0]])  # [B=2, G=3]
  alphas = tf.constant([1.0, 1.0, 2.0])
  with tf.GradientTape() as tape:
    tape.watch(kl)
    gammas = losses.kl_balance(kl, alphas)
    total = tf.reduce_sum(gammas)
  np.testing.assert_allclose(gammas.numpy().mean(), 1.0, rtol=1e-6)
  raw = (np.array([2.0, 6.0, 0.0]) + 0.01) / np.array([1.0, 1.0, 2.0])
  np.testing.assert_allclose(gammas.numpy(), raw / raw.mean(), rtol=1e-5)
  assert tape.gradient(total, kl) is None


def test_balanced_kl_uses_gammas_only_during_warmup():
  kl = tf.constant([[1.0, 5.0], [3.0, 7.0]])
  alphas = tf.constant([1.0, 2.0])
  weighted, gammas = losses.balanced_kl(kl, alphas, tf.constant(0.5))
  np.testing.assert_allclose(
    weighted.numpy(), 0.5 * (kl.numpy() * gammas.numpy()).sum(1), rtol=1e-6
  )
  weighted, gammas = losses.balanced_kl(kl, alphas, tf.constant(1.0))
  np.testing.assert_allclose(gammas.numpy(), [1.0, 1.0])
  np.testing.assert_allclose(weighted.numpy(), kl.numpy().sum(1))


def test_alphas_of_the_official_mnist_groups():
  """Official kl_balancer_coeff('square') with [5 groups at 4x4, 10 groups at 8x8]."""
  np.testing.assert_allclose(losses.kl_balance_alphas([5, 10]), [1.0] * 5 + [2.0] * 10)


def test_active_units():
  kl = np.zeros((4, 2, 3), np.float32)
  kl[:, 0, 0] = 0.5  # active
  kl[:, 1, 2] = 0.05  # below 0.1: inactive
  kl[0, 1, 1] = 1.0  # batch mean 0.25: active
  np.testing.assert_array_equal(losses.active_units(tf.constant(kl)).numpy(), [1.0, 1.0])


def test_learning_rate_warmup_then_cosine_to_minimum():
  lr = optim.WarmupCosine(steps_per_epoch=10, epochs=20, warmup_epochs=5)
  value = lambda step: float(lr(step))
  assert value(0) == 0.0
  assert value(25) == pytest.approx(0.5e-2)
  assert value(50) == pytest.approx(1e-2)  # first epoch after warm-up
  assert value(60) == value(69) < 1e-2  # constant within an epoch
  k = 7 - 5
  assert value(70) == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi * k / 14)))
  assert value(199) == pytest.approx(1e-4)  # last epoch: eta_min


def test_coupled_adamax_matches_the_pytorch_update():
  var = tf.Variable([1.0, -2.0, 0.5])
  opt = optim.CoupledAdamax(learning_rate=0.1, l2_weight_decay=0.01, epsilon=1e-3)
  grads = [np.array([0.3, -0.1, 0.0]), np.array([-0.2, 0.4, 1e-4]), np.array([0.1, 0.1, -0.3])]
  theta, m, u = var.numpy().astype(np.float64), np.zeros(3), np.zeros(3)
  for t, g in enumerate(grads, 1):
    opt.apply_gradients([(tf.constant(g, tf.float32), var)])
    g = g + 0.01 * theta
    m = 0.9 * m + 0.1 * g
    u = np.maximum(0.999 * u, np.abs(g) + 1e-3)
    theta = theta - 0.1 / (1 - 0.9**t) * m / u
  np.testing.assert_allclose(var.numpy(), theta, rtol=1e-5)
