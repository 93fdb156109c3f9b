"""Priors study with a 2-D latent: a VAE (2 hidden layers of 512, ReLU, Bernoulli decoder) trained
with a Gaussian, a mixture of 16 Gaussians, a RealNVP flow (10 couplings, 8 hidden units) and a
VampPrior (16 pseudo-inputs, learnable weights); test ELBO and IWAE (mean ± std over seeds) and,
per prior, the aggregate posterior of the test set coloured by digit over the prior's density.

  python -m experiments.priors_2d --seeds=10 --preset=paper
  python -m experiments.priors_2d --seeds=2 --preset=quick

Data (offline): only MNIST's 10,000 grey TEST images carry labels here, so the study uses them:
a fixed permutation (seed 2018) gives 8,000 training and 2,000 test images; training images are
binarized afresh every epoch, test images once (seed 777).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from absl import flags
import keras
import numpy as np
import tensorflow as tf

from experiments import data
from experiments import flags as common
from experiments import harness
from experiments import results
from vampprior_tf import distributions
from vampprior_tf import likelihood
from vampprior_tf import model as models
from vampprior_tf import priors

PRIORS = ("standard", "mog", "flow", "vampprior")  # names of vampprior_tf.priors.PRIORS

def define_flags():
  """Defines this script's flags: called when it runs (not at import, so experiment modules
  with flags of the same name can be imported together, e.g. by the tests)."""
  flags.DEFINE_integer("seeds", 10, "Number of seeds (0 .. seeds-1, offset by --seed) per prior.")
  flags.DEFINE_list("compare_priors", list(PRIORS), f"Priors to compare ({', '.join(PRIORS)}).")
  flags.DEFINE_integer("iw_samples", None, "Importance samples for the test IWAE. Default: the "
                       "preset's (paper 1000, quick 200).")
  flags.DEFINE_string("study_output", "results/priors_2d.md", "Markdown results page; PNGs "
                      "(<output stem>_<prior>.png) and JSON rows go beside it.")

FLAGS = flags.FLAGS

LATENT_DIM = 2
HIDDEN_UNITS, NUM_HIDDEN_LAYERS = 512, 2
NUM_COMPONENTS = 16                          # MoG components and VampPrior pseudo-inputs
FLOW_COUPLINGS, FLOW_HIDDEN_UNITS = 10, 8
PSEUDO_MEAN, PSEUDO_STD = 0.05, 0.01         # official MNIST pseudo-input initialisation
NUM_TRAIN, NUM_TEST = 8000, 2000             # of MNIST's 10k labelled test images
SPLIT_SEED, TEST_BINARIZATION_SEED = 2018, 777


@dataclasses.dataclass(frozen=True)
class Preset:
  epochs: int
  batch_size: int
  lr: float
  iw_samples: int


PRESETS = {
    "paper": Preset(epochs=20, batch_size=128, lr=1e-3, iw_samples=1000),
    "quick": Preset(epochs=10, batch_size=128, lr=1e-3, iw_samples=200),
}


def load_split(data_dir=None):
  """(train images [8000, 28, 28, 1] grey, test images binarized [2000, ...], test labels)."""
  images, labels = data.load_arrays("mnist", "test", data_dir)
  order = np.random.RandomState(SPLIT_SEED).permutation(len(images))
  train, test = order[:NUM_TRAIN], order[NUM_TRAIN:NUM_TRAIN + NUM_TEST]
  return (images[train], data.binarize_once(images[test], seed=TEST_BINARIZATION_SEED),
          labels[test])


def build_prior(name: str):
  return priors.build_prior(name, latent_dim=LATENT_DIM, image_shape=(28, 28, 1),
                            num_components=NUM_COMPONENTS, pseudo_mean=PSEUDO_MEAN,
                            pseudo_std=PSEUDO_STD, learn_weights=True,
                            flow_couplings=FLOW_COUPLINGS, flow_hidden_units=FLOW_HIDDEN_UNITS)


def relu_dense(units):
  return keras.layers.Dense(units, activation="relu")


def build_model(prior_name: str, *, seed: int):
  """784-512-512-2 encoder, 2-512-512-784 Bernoulli decoder, unclamped log-variance."""
  return models.VAE(image_shape=(28, 28, 1), observation=distributions.Bernoulli(),
                    prior=build_prior(prior_name), latent_dim=LATENT_DIM,
                    hidden_units=HIDDEN_UNITS, num_hidden_layers=NUM_HIDDEN_LAYERS,
                    hidden_block=relu_dense, log_var_range=None, seed=seed)


def loss_fn(model, batch, ctx):
  del ctx  # no warm-up: the plain negative ELBO
  terms = model(batch, training=True)
  return harness.LossOutput(per_example=terms.loss(1.0),
                            metrics={"log_px": tf.reduce_mean(terms.log_px),
                                     "kl": tf.reduce_mean(terms.kl)})


def train_one(prior_name: str, seed: int, *, train, test, preset: Preset, base_logdir: str,
              strategy, iw_samples: int) -> tuple[dict, keras.Model]:
  config = harness.TrainConfig(
      logdir=os.path.join(base_logdir, f"{prior_name}-seed{seed}"),
      batch_size=FLAGS.batch_size or preset.batch_size, epochs=FLAGS.epochs or preset.epochs,
      max_steps=FLAGS.max_steps, seed=seed, jit_compile=FLAGS.jit_compile,
      log_every=FLAGS.log_every, progress=False)
  keras.utils.set_random_seed(seed)
  with strategy.scope():
    model = build_model(prior_name, seed=seed)
    model(tf.constant(test[:2]))
    optimizer = keras.optimizers.Adam(preset.lr)
  trainer = harness.Trainer(
      config=config, strategy=strategy, model=model, optimizer=optimizer, loss_fn=loss_fn,
      train_data=tf.data.Dataset.from_tensor_slices(train),
      epoch_transform=lambda ds, s: data.dynamic_binarization(ds, seed=s))
  start = time.perf_counter()
  trainer.fit()
  train_time = time.perf_counter() - start
  counted = likelihood.evaluate_nll(model, test, num_samples=iw_samples, batch_size=100,
                                    chunk_size=min(iw_samples, 200))
  summary = counted.summary
  row = {"prior": prior_name, "seed": seed, "elbo": -summary.negative_elbo,
         "iwae": -summary.nll, "iw_samples": counted.importance_samples,
         "train_time_s": train_time}
  print(f"{prior_name} seed {seed}: ELBO {row['elbo']:.2f} IWAE {row['iwae']:.2f} "
        f"({train_time:.0f} s)", file=sys.stderr)
  return row, model


def plot_aggregate_posterior(model, images, labels, path: str, title: str):
  """Posterior means of `images` coloured by label over the prior's log-density (shaded: the top
  10 nats of log p(z) on the plotted window)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  means = np.concatenate([model.encode_top(tf.constant(images[i:i + 500]))[0].numpy()
                          for i in range(0, len(images), 500)])
  lo, hi = np.percentile(means, 0.5, axis=0), np.percentile(means, 99.5, axis=0)
  pad = 0.25 * (hi - lo)
  lo, hi = lo - pad, hi + pad
  u, v = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
  grid = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float32)
  log_p = model.log_prior(tf.constant(grid)).numpy().reshape(u.shape)
  fig, ax = plt.subplots(figsize=(6, 5.4))
  ax.contourf(u, v, np.maximum(log_p, log_p.max() - 10.0), levels=20, cmap="Greys")
  points = ax.scatter(means[:, 0], means[:, 1], c=labels, cmap="tab10", s=3, vmin=-0.5,
                      vmax=9.5)
  fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
  ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel="z1", ylabel="z2", title=title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def summarize(rows, prior_names):
  table = []
  for name in prior_names:
    r = [row for row in rows if row["prior"] == name]
    elbo, iwae = np.array([x["elbo"] for x in r]), np.array([x["iwae"] for x in r])
    std = lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0  # noqa: E731
    table.append({"prior": name, "elbo": (float(elbo.mean()), std(elbo)),
                  "iwae": (float(iwae.mean()), std(iwae)), "seeds": len(r),
                  "iw_samples": ",".join(str(k) for k in sorted({x["iw_samples"] for x in r})),
                  "train_time_s": float(np.mean([x["train_time_s"] for x in r]))})
  return table


def main(argv):
  del argv
  for name in FLAGS.compare_priors:
    priors.check_prior_name(name)
  if FLAGS.seeds < 1:
    raise ValueError(f"--seeds must be >= 1, got {FLAGS.seeds}")
  preset = PRESETS[FLAGS.preset]
  iw_samples = FLAGS.iw_samples or preset.iw_samples
  strategy = common.setup_runtime()
  train, test, labels = load_split(FLAGS.data_dir)
  base = FLAGS.logdir or common.default_logdir("priors_2d", preset=FLAGS.preset)
  output = common.results_file("study_output", logdir=base)  # smoke runs: under the logdir
  stem = os.path.splitext(output)[0]
  os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
  rows = []
  for name in FLAGS.compare_priors:
    for seed in range(FLAGS.seed, FLAGS.seed + FLAGS.seeds):
      row, model = train_one(name, seed, train=train, test=test, preset=preset, base_logdir=base,
                             strategy=strategy, iw_samples=iw_samples)
      rows.append(row)
      if seed == FLAGS.seed:
        plot_aggregate_posterior(model, test, labels, f"{stem}_{name}.png",
                                 f"{name} prior (seed {seed}): test posterior means")
  results.write_json(stem + ".json", rows)
  table = results.markdown_table(
      summarize(rows, FLAGS.compare_priors),
      [("prior", "prior"), ("elbo", "test ELBO"), ("iwae", f"test IWAE (K={iw_samples})"),
       ("iw_samples", "K used"), ("seeds", "seeds"), ("train_time_s", "train s / seed")])
  epochs = FLAGS.epochs or preset.epochs
  notes = (
      f"2-D latent VAE: encoder 784-512-512-(2+2), decoder 2-512-512-784 (ReLU, Bernoulli), "
      f"{epochs} epochs, batch {FLAGS.batch_size or preset.batch_size}, Adam lr {preset.lr}, no "
      f"KL warm-up. Priors: standard N(0, I); mog: {NUM_COMPONENTS} learnable Gaussians; flow: "
      f"RealNVP ({FLOW_COUPLINGS} couplings, {FLOW_HIDDEN_UNITS} hidden units, "
      f"diffusion_tf.flows); vampprior: {NUM_COMPONENTS} pseudo-inputs, learnable weights. "
      "Values in nats per test image, mean ± std over seeds.\n\n"
      f"Data: only MNIST's 10,000 labelled grey test images exist offline, so {NUM_TRAIN} of them "
      f"(fixed permutation, seed {SPLIT_SEED}) train the models (binarized afresh each epoch) and "
      f"the other {NUM_TEST} (binarized once, seed {TEST_BINARIZATION_SEED}) are the test set. "
      "The numbers are therefore not comparable with the 60k-image MNIST literature.\n\n"
      "Aggregate posteriors (seed " f"{FLAGS.seed}; test posterior means coloured by digit over "
      "the prior's log-density, shaded over its top 10 nats): " + ", ".join(f"`{os.path.basename(stem)}_{n}.png`"
                                         for n in FLAGS.compare_priors) + ".")
  results.write_markdown(output, title="Priors for a 2-D latent VAE (MNIST)",
                         command=common.command_line(), table=table, notes=notes)
  print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
  define_flags()
  common.run(main)
