"""Training-step time of the VampPrior models (batch 100, binary 28x28 images, K = 500
pseudo-inputs, AdamNormGrad), ours against the official PyTorch code (jmtomczak/vae_vampprior).

  python bench/bench_vampprior.py --official_path=PATH/TO/vae_vampprior [--cores=0] [--threads=1]
  GENMODELS_VAMPPRIOR_OFFICIAL=PATH/TO/vae_vampprior make bench

Ours is the harness's compiled train step, the one `experiments.vampprior` trains with (its loss,
AdamNormGrad, the step counter), called on a fixed batch. The peer is the official model class and
its AdamNormGrad (`utils/optimizer.py`), built from a checkout the user gives (never vendored),
stepped as its `utils/training.py` does (zero_grad, calculate_loss(average=True), backward, step).
Each runs in its own process, pinned to the same cores and thread counts, alternately (bench/peer.py); the
ratio ours / peer is printed in wall and CPU time. Without --official_path only our times print.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer  # noqa: E402

BATCH, COMPONENTS = 100, 500  # official experiment.py: batch 100, K = 500 pseudo-inputs
# The official model modules (all define `class VAE(Model)`) of the table's models.
OFFICIAL_MODULES = {"vae": "VAE", "hvae_2level": "HVAE_2level"}


def batch():
  import numpy as np

  return (np.random.RandomState(0).rand(BATCH, 28, 28) > 0.8).astype(np.float32)


def ours(model_name: str, threads: int):
  """A no-argument function running one of our training steps, as `experiments.vampprior`
  trains (the harness's compiled step with the loss and AdamNormGrad of vampprior_train)."""
  del threads  # TensorFlow's: set by peer.pin through the environment
  images = batch()
  import tempfile

  import keras
  import tensorflow as tf

  from experiments import harness, vampprior_train
  from vampprior_tf import optim

  settings = vampprior_train.RunSettings(
    model=model_name,
    prior="vampprior",
    dataset="static_mnist",
    likelihood="bernoulli",
    num_components=COMPONENTS,
    learn_prior_weights=False,
    warmup=100,
    lr=5e-4,
    early_stopping=50,
    test_samples=5000,
    train_examples=None,
    eval_examples=None,
    image_every=10,
  )
  keras.utils.set_random_seed(0)
  model = vampprior_train.build_model(settings, image_shape=(28, 28, 1), seed=0)
  x = tf.constant(images.reshape(-1, 28, 28, 1))
  model(x[:2])
  logdir = tempfile.mkdtemp()
  trainer = harness.Trainer(
    config=harness.TrainConfig(logdir=logdir, batch_size=BATCH, epochs=1000, progress=False),
    strategy=tf.distribute.get_strategy(),
    model=model,
    optimizer=keras.optimizers.Adam(settings.lr, epsilon=vampprior_train.ADAM_EPSILON),
    loss_fn=vampprior_train.make_loss_fn(settings.warmup),
    train_data=tf.data.Dataset.from_tensor_slices(images[:BATCH]),
    grad_transform=optim.normalize_gradients,
  )
  return lambda: trainer._train_step(x)["loss"].numpy()


def official_args(model_name: str = "vae"):
  """The official experiment.py arguments for static MNIST + VampPrior (its defaults), as the
  `args` namespace its model classes take."""
  del model_name  # the same namespace for both models (the VAE reads z1_size only)
  return argparse.Namespace(
    input_size=[1, 28, 28],
    z1_size=40,
    z2_size=40,
    prior="vampprior",
    number_components=COMPONENTS,
    input_type="binary",
    cuda=False,
    use_training_data_init=False,
    pseudoinputs_mean=0.05,
    pseudoinputs_std=0.01,
  )


def import_official(path: str, model_name: str):
  """The official model module of `model_name` (vae, hvae_2level) from a checkout at `path`.

  The official code imports scipy.misc.logsumexp (moved to scipy.special in SciPy 1.0) and
  matplotlib plots (utils/visual_evaluation.py); both are shimmed here, at run time: logsumexp
  is SciPy's, the plots do nothing."""
  import importlib

  import scipy.misc
  import scipy.special

  scipy.misc.logsumexp = scipy.special.logsumexp
  sys.modules.setdefault(
    "utils.visual_evaluation",
    types.SimpleNamespace(plot_histogram=lambda *a, **k: None, plot_images=lambda *a, **k: None),
  )
  if path not in sys.path:
    sys.path[:0] = [path, os.path.join(path, "models")]  # HVAE_2level.py: `from Model import Model`
  return importlib.import_module(f"models.{OFFICIAL_MODULES[model_name]}")


def official(model_name: str, threads: int, path: str):
  """One step of the official code from a checkout at `path`: its model and AdamNormGrad."""
  images = batch()
  import importlib

  import torch

  module = import_official(path, model_name)
  optimizer_module = importlib.import_module("utils.optimizer")
  args = official_args(model_name)
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = module.VAE(args)
  model.train()
  optimizer = optimizer_module.AdamNormGrad(model.parameters(), lr=5e-4)
  x = torch.from_numpy(images.reshape(len(images), -1))
  warnings.filterwarnings("ignore", category=UserWarning)  # its deprecated Tensor.add_ overload

  def step():
    optimizer.zero_grad()
    loss, _, _ = model.calculate_loss(x, 0.5, average=True)
    loss.backward()
    optimizer.step()
    return float(loss)

  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--official_path",
    default=os.environ.get("GENMODELS_VAMPPRIOR_OFFICIAL"),
    help="a checkout of github.com/jmtomczak/vae_vampprior (needs torch; "
    "default $GENMODELS_VAMPPRIOR_OFFICIAL); without it only our step is timed",
  )
  parser.add_argument(
    "--models", default="vae,hvae_2level", help="comma-separated: vae, hvae_2level"
  )
  peer.add_timing_flags(parser, steps=20, rounds=5, warmup=10)
  args = parser.parse_args()
  cores = peer.cores_from(args)
  print(
    f"batch {BATCH}, K = {COMPONENTS} pseudo-inputs, static MNIST shapes, {args.rounds} rounds "
    f"of {args.steps} steps per side after {args.warmup} warm-up steps, each side in its own "
    "process"
  )
  for name in args.models.split(","):
    sides = {f"ours ({name})": (ours, (name, args.threads))}
    if args.official_path:
      sides[f"official PyTorch ({name})"] = (official, (name, args.threads, args.official_path))
    timings = peer.alternate(
      sides,
      cores=cores,
      threads=args.threads,
      steps=args.steps,
      rounds=args.rounds,
      warmup=args.warmup,
    )
    if args.official_path:
      print(
        peer.report(
          f"{name} + VampPrior train step",
          timings,
          ours=f"ours ({name})",
          peer=f"official PyTorch ({name})",
        ),
        flush=True,
      )
    else:
      wall, cpu = timings[f"ours ({name})"].median_ms()
      print(
        f"{name} + VampPrior train step: wall {wall:.1f} ms/step, CPU {cpu:.1f} ms/step", flush=True
      )


if __name__ == "__main__":
  main()
