"""NVAE under MirroredStrategy on 2 logical CPUs == one device on the same global batch: the real
objective (KL balancing while beta < 1, L_SR + L_BN), one SGD step through experiments.harness.Trainer.
Covers SyncBN, global-batch KL-balancing statistics, power iterations and sampling noise.

The model is the smallest NVAE that still has every part this concerns: one latent scale with two
groups (so the balancing coefficients differ), residual cells with BN and SE, combiners, samplers,
SR power-iteration state; 2 channels, 2 latents per group, 8x8 digit crops padded to 12x12. The
cost is tracing (two replica graphs), not arithmetic (grappler is off in the tests: tests/conftest.py)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import harness
from nvae_tf import NVAE
from tests.conftest import two_cpu_strategy
from tests.nvae_tf.conftest import one_scale_config

GLOBAL_BATCH = 8
BETA = 0.5  # inside the warm-up, so the balancing coefficients gamma_l are used


def loss_fn(model, batch, ctx):
  del ctx
  terms = model.loss_terms(batch, beta=BETA)
  return harness.LossOutput(
    per_example=terms.per_example,
    regularizer=terms.regularizer,
    metrics={"gamma_0": terms.gammas[0], "l_sr": terms.l_sr},
  )


CONFIG = dataclasses.replace(
  one_scale_config(spectral="sr", num_channels_enc=2, num_channels_dec=2, num_latent_per_group=2),
  image_size=8,
  padded_size=12,
)


def train_one_step(tmp_path, strategy, images, initial):
  config = CONFIG
  with strategy.scope():
    model = NVAE(config, seed=0)
    optimizer = keras.optimizers.SGD(
      learning_rate=0.01
    )  # float32 roundoff of the gradient x lr << 1e-5
  if initial is not None:
    for v, value in zip(model.variables, initial):
      v.assign(value)
  trainer = harness.Trainer(
    config=harness.TrainConfig(
      logdir=str(tmp_path), batch_size=GLOBAL_BATCH, epochs=1, seed=0, log_every=1, progress=False
    ),
    strategy=strategy,
    model=model,
    optimizer=optimizer,
    loss_fn=loss_fn,
    train_data=tf.data.Dataset.from_tensor_slices(images),
  )
  before = [v.numpy() for v in model.variables]
  out = trainer.fit()
  return model, before, out


@pytest.mark.slow
def test_two_replicas_equal_one_device(tmp_path, digits):
  images = digits[:GLOBAL_BATCH, 10:18, 10:18]  # the digits' centres: 8x8, binary
  one, initial, out_one = train_one_step(
    tmp_path / "one", tf.distribute.get_strategy(), images, None
  )
  two, before_two, out_two = train_one_step(tmp_path / "two", two_cpu_strategy(), images, initial)
  for a, b in zip(initial, before_two):
    np.testing.assert_array_equal(a, b)
  for key in ("loss", "gamma_0", "l_sr", "grad_norm"):
    np.testing.assert_allclose(out_one[key], out_two[key], rtol=1e-5, err_msg=key)
  moved = 0
  for v1, v2, v0 in zip(one.variables, two.variables, initial):
    np.testing.assert_allclose(v1.numpy(), v2.numpy(), atol=1e-5, rtol=1e-5, err_msg=v1.path)
    moved += int(not np.array_equal(v1.numpy(), v0))
  assert moved > len(one.trainable_variables)  # weights, BN statistics and SR vectors all moved


def test_kl_balancing_and_active_units_use_global_batch_statistics():
  """Shards with very different KLs: every replica gets the gammas of the whole batch."""
  from nvae_tf import losses

  kl = np.array([[1.0, 5.0, 0.0], [3.0, 7.0, 0.0], [40.0, 0.0, 2.0], [20.0, 1.0, 6.0]], np.float32)
  alphas = tf.constant([1.0, 1.0, 2.0])
  per_channel = np.stack([kl, kl / 100.0], axis=-1)  # [B, G, 2]: second channel below 0.1 nats
  strategy = two_cpu_strategy()
  shards = strategy.experimental_distribute_values_from_function(
    lambda ctx: (
      kl[2 * ctx.replica_id_in_sync_group : 2 * ctx.replica_id_in_sync_group + 2],
      per_channel[2 * ctx.replica_id_in_sync_group : 2 * ctx.replica_id_in_sync_group + 2],
    )
  )
  gammas, active = strategy.run(
    lambda x: (losses.kl_balance(x[0], alphas), losses.active_units(x[1])), args=(shards,)
  )
  raw = (np.abs(kl).mean(axis=0) + 0.01) / np.array([1.0, 1.0, 2.0])
  for g in strategy.experimental_local_results(gammas):
    np.testing.assert_allclose(g.numpy(), raw / raw.mean(), rtol=1e-6)
  for a in strategy.experimental_local_results(active):  # channel means over all 4 examples
    np.testing.assert_array_equal(a.numpy(), [2.0, 1.0, 1.0])  # group 0: 0.16 > 0.1 (shard 0: 0.02)
