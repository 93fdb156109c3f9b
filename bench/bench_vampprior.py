"""Training-step speed of the VampPrior models (batch 100, 28x28 binary images, AdamNormGrad).

Prints seconds per step, the implied epoch time on static MNIST (50,000 images = 500 steps) and
each configuration's ratio to VAE + standard prior, all measured in this one run:

  python bench/bench_vampprior.py [--steps=20] [--configs=vae:standard,hvae_2level:vampprior,...] [--jit]
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from experiments import harness  # noqa: E402
from experiments import vampprior_train  # noqa: E402
from vampprior_tf import optim  # noqa: E402

flags.DEFINE_integer("steps", 20, "Timed steps per configuration (after as many untimed steps, which include compilation).")
flags.DEFINE_list("configs", ["vae:standard", "vae:vampprior", "hvae_2level:vampprior",
                              "convhvae_2level:vampprior", "pixelhvae_2level:vampprior"],
                  "model:prior pairs to time.")
flags.DEFINE_bool("jit", False, "Compile the step with XLA.")
FLAGS = flags.FLAGS

BATCH, STEPS_PER_EPOCH = 100, 500  # static MNIST: 50,000 training images, batch 100 (official)


def time_config(model_name, prior, images):
  """Seconds per step of the harness's compiled train step (the one experiments.vampprior trains
  with: its loss_fn and AdamNormGrad), over the last `--steps` steps (compilation excluded)."""
  settings = vampprior_train.RunSettings(
      model=model_name, prior=prior, dataset="static_mnist", likelihood="bernoulli",
      num_components=500, learn_prior_weights=False, warmup=100, lr=5e-4, early_stopping=50,
      test_samples=5000, train_examples=None, eval_examples=None, image_every=10)
  keras.utils.set_random_seed(0)
  strategy = tf.distribute.get_strategy()
  with strategy.scope():
    model = vampprior_train.build_model(settings, image_shape=(28, 28, 1), seed=0)
    model(images[:2])
    optimizer = keras.optimizers.Adam(settings.lr)
  with tempfile.TemporaryDirectory() as logdir:
    config = harness.TrainConfig(logdir=logdir, batch_size=BATCH, epochs=1000,
                                 max_steps=2 * FLAGS.steps, jit_compile=FLAGS.jit,
                                 log_every=FLAGS.steps, progress=False)
    trainer = harness.Trainer(config=config, strategy=strategy, model=model, optimizer=optimizer,
                              loss_fn=vampprior_train.make_loss_fn(settings.warmup),
                              train_data=tf.data.Dataset.from_tensor_slices(images),
                              grad_transform=optim.normalize_gradients)
    last = trainer.fit()
  return BATCH / last["examples_per_s"]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # keep TF's checkpoint INFO lines out of the table
  # 20 batches of random binary images: one epoch of the harness pipeline spans 20 steps.
  images = (np.random.RandomState(0).rand(20 * BATCH, 28, 28, 1) > 0.8).astype(np.float32)
  print(f"TF {tf.__version__}, devices: {[d.device_type for d in tf.config.list_logical_devices()]}"
        f", {FLAGS.steps} timed steps, batch {BATCH}, K = 500 pseudo-inputs")
  base = None
  for config in FLAGS.configs:
    model_name, prior = config.split(":")
    seconds = time_config(model_name, prior, images)
    base = base or seconds
    print(f"{model_name:18s} {prior:10s} {seconds * 1e3:8.1f} ms/step  "
          f"epoch (500 steps) {seconds * STEPS_PER_EPOCH:7.1f} s  x{seconds / base:5.2f} vs first",
          flush=True)


if __name__ == "__main__":
  app.run(main)
