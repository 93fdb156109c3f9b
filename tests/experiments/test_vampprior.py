"""experiments.vampprior: end-to-end tiny runs, AdamNormGrad, warm-up, presets, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from experiments import data
from experiments import harness
from experiments import vampprior

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_settings(**overrides):
  base = dict(model="vae", prior="vampprior", dataset="static_mnist", likelihood="bernoulli",
              num_components=10, learn_prior_weights=False, warmup=1, lr=3e-3, early_stopping=0,
              test_samples=30, train_examples=300, eval_examples=40, image_every=1, z1_dim=8,
              z2_dim=6, hidden_units=32, flow_couplings=2, flow_hidden_units=16,
              ll_batch_size=20, ll_chunk=15)
  base.update(overrides)
  return vampprior.RunSettings(**base)


def tiny_config(logdir, epochs=2, **overrides):
  return harness.TrainConfig(logdir=str(logdir), batch_size=50, epochs=epochs, seed=0,
                             progress=False, early_stopping_metric="val_loss", **overrides)


def test_vae_vampprior_static_mnist_end_to_end(tmp_path):
  row = vampprior.train_and_evaluate(tiny_settings(), tiny_config(tmp_path),
                                     strategy=tf.distribute.get_strategy())
  assert row["epochs_run"] == 2 and row["test_examples"] == 40
  # Trained: better than 784 fair coin flips.
  assert np.isfinite(row["test_nll"]) and 0 < row["test_nll"] < 784 * np.log(2)
  # IWAE >= ELBO  <=>  NLL <= -ELBO (same samples).
  assert row["test_nll"] <= row["test_negative_elbo"] + 1e-6
  saved = json.load(open(tmp_path / "results.json"))
  assert saved["test_nll"] == pytest.approx(row["test_nll"])
  assert (tmp_path / "samples.png").exists() and (tmp_path / "samples.npz").exists()
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
  assert row["best_checkpoint"] is not None


def test_hvae_flow_prior_frey_faces_grey_end_to_end(tmp_path):
  settings = tiny_settings(model="hvae_2level", prior="flow", dataset="frey_faces",
                           likelihood="discretized_logistic", train_examples=100, eval_examples=20,
                           test_samples=10, ll_chunk=10)
  row = vampprior.train_and_evaluate(settings, tiny_config(tmp_path, epochs=1),
                                     strategy=tf.distribute.get_strategy())
  # Discretized logistic on 560 pixels: a proper probability, so NLL >= 0 and finite.
  assert 0 < row["test_nll"] <= row["test_negative_elbo"] + 1e-6


def test_normalize_gradients_gives_unit_norm_tensors():
  grads = [tf.constant([3.0, 4.0]), tf.constant([[1e-3, 0.0], [0.0, 0.0]]), tf.constant(250.0)]
  out = vampprior.normalize_gradients(grads, [None] * 3)
  norms = np.array([5.0, 1e-3, 250.0])
  np.testing.assert_allclose([float(tf.norm(g)) for g in out], norms / (norms + 1e-7), rtol=1e-5)
  np.testing.assert_allclose(out[0].numpy(), [0.6, 0.8], rtol=1e-6)


def test_kl_warmup_beta_is_min_epoch_over_warmup_one():
  betas = [float(vampprior.kl_warmup_beta(e, 100)) for e in (0, 25, 100, 150)]
  assert betas == [0.0, 0.25, 1.0, 1.0]
  assert float(vampprior.kl_warmup_beta(3, 0)) == 1.0


def test_paper_preset_is_the_official_setting():
  p = vampprior.PRESETS["paper"]
  assert (p.batch_size, p.lr, p.warmup, p.early_stopping, p.num_components, p.test_samples) == (
      100, 5e-4, 100, 50, 500, 5000)
  assert (p.train_examples, p.eval_examples) == (None, None)
  assert vampprior.DATASETS["static_mnist"].pseudo_mean == 0.05
  assert vampprior.default_likelihood("frey_faces") == "discretized_logistic"


def test_dynamic_mnist_binarizes_eval_sets_once_and_needs_train_images(tmp_path):
  grey = np.random.RandomState(0).rand(50, 28, 28, 1).astype(np.float32)
  once = vampprior._binarize_once(grey, 777)
  np.testing.assert_array_equal(once, vampprior._binarize_once(grey, 777))
  assert set(np.unique(once)) <= {0.0, 1.0}
  with pytest.raises(data.DataError, match="train"):
    vampprior.load_splits("dynamic_mnist", data_dir=str(tmp_path))


def test_cli_reports_missing_data_in_one_line(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.vampprior", "--dataset=fashion_mnist",
       f"--data_dir={tmp_path}", f"--logdir={tmp_path / 'run'}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "fashion_mnist" in errors[0]
