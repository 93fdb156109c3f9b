"""RealNVPFlow: round trip, log-det against an autodiff Jacobian, densities, masks, training."""

import numpy as np
import pytest
import tensorflow as tf

from diffusion_tf import flows


def _randomized_flow(event_dim=5, num_couplings=4, hidden_units=8, masks=None, seed=0):
  """A flow whose zero-initialised output layers are replaced by random weights (not identity)."""
  flow = flows.RealNVPFlow(
    event_dim=event_dim, num_couplings=num_couplings, hidden_units=hidden_units, masks=masks
  )
  rng = np.random.default_rng(seed)
  for v in flow.trainable_variables:
    v.assign(0.5 * rng.standard_normal(v.shape).astype(np.float32))
  return flow


def test_round_trip_x_to_z_to_x():
  flow = _randomized_flow()
  x = np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32)
  z, _ = flow.inverse(x)
  # Through NumPy, so TFP's bijector cache cannot hand back the input unchanged.
  x_back = flow.forward(tf.constant(z.numpy()))
  assert np.max(np.abs(z.numpy() - x)) > 1e-2  # the flow is not the identity
  np.testing.assert_allclose(x_back.numpy(), x, atol=1e-5)
  z2, _ = flow.inverse(tf.constant(x_back.numpy()))
  np.testing.assert_allclose(z2.numpy(), z.numpy(), atol=1e-5)


def test_log_det_matches_autodiff_jacobian():
  flow = _randomized_flow(event_dim=4, num_couplings=3)
  x = tf.constant(np.random.default_rng(2).standard_normal((3, 4)), tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(x)
    z, log_det = flow.inverse(x)
  jacobian = tape.batch_jacobian(z, x)  # [B, D, D] of dz/dx
  _, expected = np.linalg.slogdet(jacobian.numpy().astype(np.float64))
  np.testing.assert_allclose(log_det.numpy(), expected, atol=1e-4)
  assert np.all(np.abs(expected) > 1e-3)  # a non-trivial volume change was tested


def test_log_prob_is_base_density_plus_log_det():
  flow = _randomized_flow()
  x = np.random.default_rng(3).standard_normal((6, 5)).astype(np.float32)
  z, log_det = flow.inverse(x)
  base = -0.5 * np.sum(z.numpy() ** 2 + np.log(2 * np.pi), axis=-1)
  np.testing.assert_allclose(flow.log_prob(x).numpy(), base + log_det.numpy(), rtol=1e-5)
  np.testing.assert_allclose(flow(x).numpy(), flow.log_prob(x).numpy(), rtol=1e-6)


def test_fresh_flow_is_identity_with_standard_normal_density():
  flow = flows.RealNVPFlow(event_dim=3, num_couplings=2, hidden_units=4)
  x = np.random.default_rng(4).standard_normal((5, 3)).astype(np.float32)
  z, log_det = flow.inverse(x)
  np.testing.assert_allclose(z.numpy(), x, atol=1e-6)
  np.testing.assert_allclose(log_det.numpy(), 0.0, atol=1e-6)


def test_log_scales_are_bounded_by_the_learned_factor():
  flow = _randomized_flow(event_dim=4, num_couplings=1)
  for v in flow.nets[0].scale_out.trainable_variables:
    v.assign(100.0 * tf.ones_like(v))  # saturate tanh
  flow.nets[0].log_scale_bound.assign(tf.fill([2], 0.7))
  x = tf.constant(np.abs(np.random.default_rng(5).standard_normal((3, 4))) + 1.0, tf.float32)
  _, log_det = flow.inverse(x)
  # Two transformed dims, each |log-scale| <= 0.7.
  assert np.all(np.abs(log_det.numpy()) <= 2 * 0.7 + 1e-5)
  np.testing.assert_allclose(np.abs(log_det.numpy()), 1.4, atol=1e-3)


def test_sample_shape_seed_and_finiteness():
  flow = _randomized_flow()
  a, b = flow.sample(4, seed=11), flow.sample(4, seed=11)
  assert a.shape == (4, 5) and np.all(np.isfinite(a.numpy()))
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  c, d = flow.sample(4), flow.sample(4)  # layer-owned seed generator advances
  assert not np.allclose(c.numpy(), d.numpy())


def test_checkerboard_masks_alternate_and_cover_every_pixel():
  masks = flows.checkerboard_masks(4, 4, 2, 3)
  assert masks.shape == (3, 32)
  images = masks.reshape(3, 4, 4, 2)
  np.testing.assert_array_equal(images[0, :, :, 0], [[0, 1, 0, 1], [1, 0, 1, 0]] * 2)
  np.testing.assert_array_equal(images[..., 0], images[..., 1])  # same for every channel
  np.testing.assert_array_equal(masks[0] + masks[1], 1.0)  # consecutive layers complement
  np.testing.assert_array_equal(flows.alternating_masks(4, 2), [[0, 1, 0, 1], [1, 0, 1, 0]])


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="shape"):
    flows.RealNVPFlow(event_dim=4, num_couplings=2, hidden_units=3, masks=np.ones((3, 4)))
  with pytest.raises(ValueError, match="at least one"):
    flows.RealNVPFlow(event_dim=2, num_couplings=1, hidden_units=3, masks=np.ones((1, 2)))
  with pytest.raises(ValueError, match="only 0 and 1"):
    flows.RealNVPFlow(event_dim=2, num_couplings=1, hidden_units=3, masks=[[0.5, 1.0]])
  flow = flows.RealNVPFlow(event_dim=4, num_couplings=2, hidden_units=3)
  with pytest.raises(ValueError, match=r"\[B, 4\]"):
    flow.log_prob(np.zeros((2, 5), np.float32))


def test_every_variable_is_trainable_and_gets_a_gradient():
  flow = _randomized_flow(event_dim=6, num_couplings=3)
  x = tf.constant(np.random.default_rng(6).standard_normal((8, 6)), tf.float32)
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(flow.log_prob(x))
  grads = tape.gradient(loss, flow.trainable_variables)
  # 3 couplings x (4 dense kernels + 4 biases + 1 scale bound)
  assert len(flow.trainable_variables) == 27
  assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_logit_pre_transform_log_jacobian():
  alpha = 0.05
  bij = flows.logit_bijector(alpha)
  x = np.array([[0.1, 0.5, 0.93]], np.float32)
  y = bij.inverse(x).numpy()
  p = alpha + (1 - 2 * alpha) * x
  np.testing.assert_allclose(y, np.log(p / (1 - p)), rtol=1e-5)
  expected = np.sum(np.log((1 - 2 * alpha) / (p * (1 - p))))
  np.testing.assert_allclose(
    bij.inverse_log_det_jacobian(x, event_ndims=1).numpy(), [expected], rtol=1e-5
  )
  with pytest.raises(ValueError):
    flows.logit_bijector(0.5)
