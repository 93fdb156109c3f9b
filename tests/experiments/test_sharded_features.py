"""The scripts' sample metrics under a strategy of two replicas: every feature batch is split over
the replicas (the feature network runs in a replica context of two) and the FID, KID, precision
and recall are those of one device. Small stand-in networks (`feature_stand_ins`) take the place of the
weights files and are loaded by the scripts' own loaders, in the strategy's scope (never used for
reported numbers). Loaded outside it, the compiled feature step fails on the second device:
"Trying to access resource ... located in device CPU:0 from device CPU:1"."""

import numpy as np
import pytest

from evaluation import likelihood, networks
from experiments import nvae_train
from experiments import sample_quality_train as sq
from nvae_tf import NVAE
from tests.conftest import two_cpu_strategy
from tests.experiments.feature_stand_ins import stand_in
from tests.nvae_tf.conftest import one_scale_config


def values(metrics: dict) -> dict:
  return {k: v["value"] for k, v in metrics.items()}


def test_nvae_sample_metrics_split_every_feature_batch_and_equal_one_device(monkeypatch):
  strategy = two_cpu_strategy()
  monkeypatch.setattr(networks, "inception_network", lambda path, download: stand_in("pool_3"))
  monkeypatch.setattr(networks, "vgg16_network", lambda path, download: stand_in("fc2"))
  inception, vgg16 = (
    nvae_train.load_network(kind, path=None, download=False, strategy=strategy)
    for kind in ("inception", "vgg16")
  )
  model = NVAE(one_scale_config(), seed=0)
  # Half other samples of the same model, half noise: recall is neither 0 nor 1.
  noise = np.random.RandomState(0).uniform(size=(20, 28, 28, 1)).astype(np.float32)
  reference = np.concatenate([nvae_train.generate_samples(model, 20), noise])
  states = likelihood.seed_generator_states(model)
  start = [v.numpy() for v in states]

  def metrics(strategy):
    for v, value in zip(states, start):  # the same samples in both calls
      v.assign(value)
    return nvae_train.sample_metrics(
      model, reference, num_samples=30, inception=inception, vgg16=vgg16, strategy=strategy
    )

  one = metrics(None)
  assert set(inception[0].replicas) == set(vgg16[0].replicas) == {1}
  traced = len(inception[0].replicas), len(vgg16[0].replicas)
  two = metrics(strategy)
  assert set(inception[0].replicas[traced[0] :]) == set(vgg16[0].replicas[traced[1] :]) == {2}
  assert values(one).keys() == {"fid", "precision", "recall"}
  assert values(one)["precision"] > 0 and 0 < values(one)["recall"] < 1, values(one)
  for name, value in values(two).items():
    assert value == pytest.approx(values(one)[name], rel=1e-5, abs=1e-6), name
  assert two["fid"]["protocol"] == one["fid"]["protocol"]


def test_sample_quality_fid_kid_split_every_feature_batch_and_equal_one_device(monkeypatch):
  strategy = two_cpu_strategy()
  monkeypatch.setattr(networks, "inception_network", lambda path, download: stand_in("pool_3"))
  network, unavailable = sq.inception_or_reason(None, download=False, strategy=strategy)
  assert unavailable is None
  rng = np.random.default_rng(0)
  real = rng.uniform(size=(300, 28, 28, 1)).astype(np.float32)
  generated = np.clip(real[::-1] + 0.2 * rng.uniform(size=real.shape), 0, 1).astype(np.float32)
  one = sq.fid_kid(network, generated, real)
  assert set(network.replicas) == {1}
  traced = len(network.replicas)
  two = sq.fid_kid(network, generated, real, strategy=strategy)
  assert set(network.replicas[traced:]) == {2}
  for name, value in values(two).items():
    assert value == pytest.approx(values(one)[name], rel=1e-5, abs=1e-6), name
