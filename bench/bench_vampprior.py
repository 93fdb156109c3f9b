"""Training-step speed of the VampPrior models (batch 100, 28x28 binary images, AdamNormGrad).

Prints seconds per step, the implied epoch time on static MNIST (50,000 images = 500 steps) and
each configuration's ratio to VAE + standard prior, all measured in this one run:

  python bench/bench_vampprior.py [--steps=20] [--configs=vae:standard,hvae_2level:vampprior,...] [--jit]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from experiments import vampprior  # noqa: E402

flags.DEFINE_integer("steps", 20, "Timed steps per configuration (after 3 warm-up steps).")
flags.DEFINE_list("configs", ["vae:standard", "vae:vampprior", "hvae_2level:vampprior",
                              "convhvae_2level:vampprior", "pixelhvae_2level:vampprior"],
                  "model:prior pairs to time.")
flags.DEFINE_bool("jit", False, "Compile the step with XLA.")
FLAGS = flags.FLAGS

BATCH, STEPS_PER_EPOCH = 100, 500  # static MNIST: 50,000 training images, batch 100 (official)


def time_config(model_name, prior, images):
  settings = vampprior.RunSettings(
      model=model_name, prior=prior, dataset="static_mnist", likelihood="bernoulli",
      num_components=500, learn_prior_weights=False, warmup=100, lr=5e-4, early_stopping=50,
      test_samples=5000, train_examples=None, eval_examples=None, image_every=10)
  keras.utils.set_random_seed(0)
  model = vampprior.build_model(settings, image_shape=(28, 28, 1), seed=0)
  model(images[:2])
  optimizer = keras.optimizers.Adam(5e-4)

  @tf.function(jit_compile=FLAGS.jit)
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(model(x, training=True).loss(0.5))
    grads = vampprior.normalize_gradients(tape.gradient(loss, model.trainable_variables), None)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  for _ in range(3):
    step(images).numpy()
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    loss = step(images)
  loss.numpy()
  return (time.perf_counter() - start) / FLAGS.steps


def main(argv):
  del argv
  images = tf.constant((np.random.RandomState(0).rand(BATCH, 28, 28, 1) > 0.8).astype(np.float32))
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
