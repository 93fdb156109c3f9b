"""The 2-D latent priors study as a library (no flags): presets, run settings, data, model, training,
test IWAE / ELBO with per-image values, the aggregate-posterior plots and the results page.

A VAE (2 hidden layers of 512, ReLU, Bernoulli decoder, 2-D latent) is trained with a Gaussian, a
mixture of 16 Gaussians, a RealNVP flow (10 couplings, 8 hidden units) and a VampPrior (16
pseudo-inputs, learnable weights), several seeds each. Every (prior, seed) run lives in
<logdir>/<prior>-seed<seed>: the harness's checkpoints and status.json, then `test_per_example.npz`
(`results.PER_EXAMPLE_FILE`: the test IWAE and ELBO of every test image, nats), `row.json` (its
evaluated numbers) and `aggregate_posterior.npz` (the plot's data). The page copies each run's
per-image values beside it (<page stem>/<prior>-seed<seed>.npz) and prints the numbers they give.

The script `experiments.priors_2d` (its docstring has the commands and the data options) defines
the flags (`experiments.priors_2d_flags`), reads them once into a frozen `StudySettings` and calls
`run`.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from common_tf import host
from experiments import data, harness, results
from vampprior_tf import distributions, likelihood, priors
from vampprior_tf import model as models

PRIORS = ("standard", "mog", "flow", "vampprior")  # names of vampprior_tf.priors.PRIORS
DATASETS = ("binarized_mnist", "mnist_test")

LATENT_DIM = 2
IMAGE_SHAPE = data.image_shape("binarized_mnist")  # both data sets are 28x28 MNIST digits
HIDDEN_UNITS, NUM_HIDDEN_LAYERS = 512, 2
NUM_COMPONENTS = 16  # MoG components and VampPrior pseudo-inputs
FLOW_COUPLINGS, FLOW_HIDDEN_UNITS = 10, 8
PSEUDO_MEAN, PSEUDO_STD = 0.05, 0.01  # official MNIST pseudo-input initialisation
NUM_TRAIN, NUM_TEST = 8000, 2000  # mnist_test: of MNIST's 10k labelled test images
SPLIT_SEED, TEST_BINARIZATION_SEED = 2018, 777
PLOT_SAMPLES_PER_IMAGE = 5  # z ~ q(z|x) drawn per test image for the plots
PLOT_GRID = 200  # prior density grid points per axis
HIST_BINS = 50  # aggregate-posterior histogram bins per axis
EVAL_BATCH, EVAL_CHUNK = 100, 200  # test images per IWAE batch, samples per chunk
ROW_FILE, PLOT_FILE = "row.json", "aggregate_posterior.npz"


@dataclasses.dataclass(frozen=True)
class Preset:
  dataset: str
  epochs: int
  batch_size: int
  lr: float
  iw_samples: int
  seeds: int


PRESETS = {
  # The report's protocol: full static MNIST, 20 epochs, batch 128, lr 1e-3, 10 seeds,
  # IWAE with K = 1000.
  "paper": Preset(
    dataset="binarized_mnist", epochs=20, batch_size=128, lr=1e-3, iw_samples=1000, seeds=10
  ),
  "quick": Preset(
    dataset="mnist_test", epochs=10, batch_size=128, lr=1e-3, iw_samples=200, seeds=2
  ),
}


@dataclasses.dataclass(frozen=True)
class Settings:
  """What one (prior, seed) run depends on; a stored row is reused only when all of it matches."""

  prior: str
  seed: int
  dataset: str
  epochs: int
  batch_size: int
  lr: float
  iw_samples: int
  train_examples: int | None = None
  test_examples: int | None = None


@dataclasses.dataclass(frozen=True)
class StudyData:
  train: np.ndarray  # [N, 28, 28, 1] in [0, 1]
  test: np.ndarray  # [M, 28, 28, 1] binary
  test_labels: np.ndarray | None
  binary_train: bool  # True: static binary training images (no re-binarization)


def load_split(data_dir=None):
  """mnist_test: (train images [8000, 28, 28, 1] grey, test images binarized [2000, ...], test
  labels)."""
  images, labels = data.load_arrays("mnist", "test", data_dir)
  order = np.random.RandomState(SPLIT_SEED).permutation(len(images))
  train, test = order[:NUM_TRAIN], order[NUM_TRAIN : NUM_TRAIN + NUM_TEST]
  return (
    images[train],
    data.binarize_once(images[test], seed=TEST_BINARIZATION_SEED),
    labels[test],
  )


def _subset(images, labels, n):
  """A fixed random subset of `n` (all when None; the offline static MNIST is grouped by class,
  so a prefix would hold one digit)."""
  keep = data.subset(np.arange(len(images)), n, seed=SPLIT_SEED)
  return images[keep], (labels[keep] if labels is not None else None)


def load_study_data(
  dataset: str, data_dir=None, *, train_examples=None, test_examples=None
) -> StudyData:
  if dataset == "binarized_mnist":
    train, _ = data.load_arrays("binarized_mnist", "train", data_dir)
    test, _ = data.load_arrays("binarized_mnist", "test", data_dir)
    labels, binary = None, True
  elif dataset == "mnist_test":
    train, test, labels = load_split(data_dir)
    binary = False
  else:
    raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
  train, _ = _subset(train, None, train_examples)
  test, labels = _subset(test, labels, test_examples)
  return StudyData(train=train, test=test, test_labels=labels, binary_train=binary)


def build_prior(name: str):
  return priors.build_prior(
    name,
    latent_dim=LATENT_DIM,
    image_shape=IMAGE_SHAPE,
    num_components=NUM_COMPONENTS,
    pseudo_mean=PSEUDO_MEAN,
    pseudo_std=PSEUDO_STD,
    learn_weights=True,
    flow_couplings=FLOW_COUPLINGS,
    flow_hidden_units=FLOW_HIDDEN_UNITS,
  )


def relu_dense(units):
  return keras.layers.Dense(units, activation="relu")


def build_model(prior_name: str, *, seed: int):
  """784-512-512-2 encoder, 2-512-512-784 Bernoulli decoder, unclamped log-variance."""
  return models.VAE(
    image_shape=IMAGE_SHAPE,
    observation=distributions.Bernoulli(),
    prior=build_prior(prior_name),
    latent_dim=LATENT_DIM,
    hidden_units=HIDDEN_UNITS,
    num_hidden_layers=NUM_HIDDEN_LAYERS,
    hidden_block=relu_dense,
    log_var_range=None,
    seed=seed,
  )


# Not converted by AutoGraph (nothing here branches on tensors): AutoGraph re-reads the source file
# when it traces, so a long run would break if this file were edited while it runs.
@tf.autograph.experimental.do_not_convert
def loss_fn(model, batch, ctx):
  """-ELBO(x) = -E_q[log p(x|z)] + KL(q(z|x) || p(z)) (single-sample), no KL warm-up."""
  del ctx
  terms = model(batch, training=True)
  return harness.LossOutput(
    per_example=terms.loss(1.0),
    metrics={"log_px": tf.reduce_mean(terms.log_px), "kl": tf.reduce_mean(terms.kl)},
  )


def run_logdir(base_logdir: str, prior: str, seed: int) -> str:
  return os.path.join(base_logdir, f"{prior}-seed{seed}")


# ----------------------------------------------------------------------------- one run


def finished_row(logdir: str, s: Settings) -> dict | None:
  """The run's stored row when its training finished and it was evaluated with these settings."""
  row_path, status = os.path.join(logdir, ROW_FILE), results.read_status(logdir)
  if not (os.path.exists(row_path) and status):
    return None
  row = results.read_json(row_path)
  same = all(row.get(k) == v for k, v in dataclasses.asdict(s).items())
  return row if status.get("finished") and row.get("status") == "finished" and same else None


def unfinished_row(logdir: str, s: Settings) -> dict:
  """How far an unfinished run got (from the harness's status.json); no test numbers."""
  row = dict(dataclasses.asdict(s), status="not started", epochs_run=0)
  status = results.read_status(logdir)
  if status:
    done = "trained, not evaluated yet" if status.get("finished") else "training"
    row.update(
      status=f"{done}: epoch {status['epoch']:.1f} of {status['total_epochs']}",
      epochs_run=status["epoch"],
      train_seconds=status["train_seconds"],
      cpus=host.merge_in_order(
        results.status_cpus(status), results.partial_evaluation_hosts(logdir)
      ),
    )
  return row


def aggregate_posterior_data(model, images, labels, *, seed: int) -> dict:
  """The plot's arrays: z ~ q(z|x), PLOT_SAMPLES_PER_IMAGE per test image; prior samples; the
  window covering both; log p(z) on a PLOT_GRID x PLOT_GRID grid of that window."""
  means, log_vars = [], []
  for i in range(0, len(images), 500):
    m, lv = model.encode_top(tf.constant(images[i : i + 500]))
    means.append(m.numpy())
    log_vars.append(lv.numpy())
  means, log_vars = np.concatenate(means), np.concatenate(log_vars)
  rng = np.random.RandomState(seed)
  eps = rng.standard_normal((PLOT_SAMPLES_PER_IMAGE,) + means.shape)
  z = (means + np.exp(0.5 * log_vars) * eps).reshape(-1, LATENT_DIM).astype(np.float32)
  z_prior = model.prior.sample(
    len(z), encoder=model.encode_top, seed=keras.random.SeedGenerator(seed)
  ).numpy()
  lo, hi = plot_window(z, z_prior)
  axes = [np.linspace(lo[d], hi[d], PLOT_GRID + 1) for d in range(LATENT_DIM)]  # cell edges
  centres = [0.5 * (a[1:] + a[:-1]) for a in axes]
  u, v = np.meshgrid(*centres, indexing="ij")
  grid = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float32)
  log_p = np.concatenate(
    [model.log_prior(tf.constant(grid[i : i + 10000])).numpy() for i in range(0, len(grid), 10000)]
  ).reshape(u.shape)
  out = dict(z=z, edges_x=axes[0], edges_y=axes[1], log_prior=log_p)
  if labels is not None:
    out["labels"] = np.tile(labels, PLOT_SAMPLES_PER_IMAGE)  # z is sample-major
  return out


def plot_window(*point_sets, coverage=99.5, pad=0.1):
  """(lo [2], hi [2]): the central `coverage` % of every point set, padded by `pad` of the span."""
  points = [np.asarray(p) for p in point_sets]
  lo = np.min([np.percentile(p, 100 - coverage, axis=0) for p in points], axis=0)
  hi = np.max([np.percentile(p, coverage, axis=0) for p in points], axis=0)
  span = np.maximum(hi - lo, 1e-3)
  return lo - pad * span, hi + pad * span


def train_and_evaluate(
  s: Settings,
  *,
  study: StudyData,
  logdir: str,
  strategy,
  max_steps: int | None = None,
  jit_compile: bool = False,
  log_every: int = 50,
) -> dict:
  """Trains (resuming) and evaluates one run; writes its plot data and row into `logdir`."""
  config = harness.TrainConfig(
    logdir=logdir,
    batch_size=s.batch_size,
    epochs=s.epochs,
    max_steps=max_steps,
    seed=s.seed,
    jit_compile=jit_compile,
    log_every=log_every,
    progress=False,
  )
  keras.utils.set_random_seed(s.seed)
  with strategy.scope():
    model = build_model(s.prior, seed=s.seed)
    model(tf.constant(study.test[:2]))
    optimizer = keras.optimizers.Adam(s.lr)
  trainer = harness.Trainer(
    config=config,
    strategy=strategy,
    model=model,
    optimizer=optimizer,
    loss_fn=loss_fn,
    train_data=tf.data.Dataset.from_tensor_slices(study.train),
    # Static binarized MNIST is already 0/1; grey images are binarized afresh every epoch.
    epoch_transform=(
      None if study.binary_train else lambda ds, seed: data.dynamic_binarization(ds, seed=seed)
    ),
  )
  trainer.fit()
  chief = harness.is_chief(strategy)  # under several workers only the chief writes files
  # How far training got, from the trainer (the same on every worker; the chief's status.json,
  # read for its record of CPUs, may not be written yet when another worker gets here).
  step = int(trainer.step.numpy())
  status = (results.read_status(logdir) if chief else None) or {}
  counted = likelihood.evaluate_nll(
    model,
    study.test,
    num_samples=s.iw_samples,
    batch_size=EVAL_BATCH,
    chunk_size=min(s.iw_samples, EVAL_CHUNK),
    resume_path=os.path.join(logdir, "nll_partial.npz"),
    resume_key=dict(
      checkpoint=f"step {step}",
      num_samples=s.iw_samples,
      test_examples=len(study.test),
      seed=s.seed,
    ),
    strategy=strategy,  # each batch split over the workers
    chief=chief,
  )
  eval_seconds = counted.summary.seconds  # summed over resumed invocations
  if chief:
    results.write_per_example(
      os.path.join(logdir, results.PER_EXAMPLE_FILE),
      log_likelihood=counted.summary.per_example_log_likelihood,
      elbo=counted.summary.per_example_elbo,
      what="test IWAE_K (log_likelihood) and ELBO (elbo) of every test image, nats",
      num_samples=s.iw_samples,
      checkpoint=status.get("checkpoint"),
      prior=s.prior,
      seed=s.seed,
      dataset=s.dataset,
      test_examples=len(study.test),
    )
    np.savez_compressed(
      os.path.join(logdir, PLOT_FILE),
      **aggregate_posterior_data(model, study.test, study.test_labels, seed=s.seed),
    )
  summary = counted.summary
  finished = step >= trainer.total_steps
  epochs_run = step / trainer.steps_per_epoch
  row = dict(
    dataclasses.asdict(s),
    status="finished"
    if finished
    else f"smoke: stopped at epoch {epochs_run:.2f} of {s.epochs} (--max_steps)",
    elbo=-summary.negative_elbo,
    iwae=-summary.nll,
    iwae_sem=summary.nll_sem,
    iw_samples_used=counted.importance_samples,
    test_images=len(study.test),
    train_images=len(study.train),
    epochs_run=epochs_run,
    train_seconds=float(trainer.train_seconds.numpy()),
    eval_seconds=eval_seconds,
    cpus=host.merge_in_order(results.status_cpus(status), summary.hosts),
    git_commit=harness.code_commit() or "unknown",
    evaluated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
  )
  if chief:
    results.write_json(os.path.join(logdir, ROW_FILE), row)  # last: a row implies its plot data
  print(
    f"{s.prior} seed {s.seed}: ELBO {row['elbo']:.2f} IWAE {row['iwae']:.2f} "
    f"(train {row['train_seconds']:.0f} s, eval {eval_seconds:.0f} s)",
    file=sys.stderr,
    flush=True,
  )
  return row


def run_study(
  settings: list[Settings],
  *,
  base_logdir: str,
  data_fn,
  strategy,
  report_only: bool = False,
  earlier_rows: list[dict] = (),
  **train_kwargs,
) -> list[dict]:
  """Rows of every run in `settings` order: a finished, evaluated run's stored row; else, for a
  run with no folder on this machine, its finished row from `earlier_rows` (the page's own JSON,
  `results.kept_row`: its status says so); else (with `report_only`) how far it got; else it is
  trained (resuming) and evaluated (`train_kwargs`: max_steps, jit_compile, log_every).
  `data_fn()` loads the data once, only when a run needs it."""
  rows, study = [], None
  for s in settings:
    logdir = run_logdir(base_logdir, s.prior, s.seed)
    row = finished_row(logdir, s) or results.kept_row(earlier_rows, logdir, dataclasses.asdict(s))
    if row is None and report_only:
      row = unfinished_row(logdir, s)
    elif row is None:
      print(f"== {s.prior} seed {s.seed}", file=sys.stderr, flush=True)
      study = study or data_fn()
      row = train_and_evaluate(s, study=study, logdir=logdir, strategy=strategy, **train_kwargs)
    rows.append(row)
  return rows


# ----------------------------------------------------------------------------- the page


def run_id(row: dict) -> str:
  """The name of a run's per-image values beside the page: <prior>-seed<seed>."""
  return os.path.basename(run_logdir("", row["prior"], row["seed"]))


def with_per_example_numbers(rows: list[dict], *, page: str, base_logdir: str) -> list[dict]:
  """Each evaluated row with its per-image values published beside the page
  (`results.publish_per_example`, from the run's folder when it has them) and its test ELBO, IWAE
  and standard error as those values give them; a row without values (evaluated before they were
  kept) keeps its recorded numbers and says they were not kept."""
  out = []
  for row in rows:
    if row.get("iwae") is None:
      out.append(row)
      continue
    results.publish_per_example(
      run_logdir(base_logdir, row["prior"], row["seed"]), page, run_id(row)
    )
    row = results.with_per_example_numbers(row, page, run_id(row))
    if row["per_example"]:
      row.update(
        iwae=-row["nll"],
        iwae_sem=row["nll_sem"],
        elbo=-row["neg_elbo"],
        test_images=row["test_examples"],
      )
      for key in ("nll", "nll_sem", "neg_elbo", "nll_passes", "test_examples"):
        row.pop(key)
    out.append(row)
  return out


def summarize(rows, prior_names):
  """Per prior: mean ± std (ddof 1) of ELBO and IWAE over its FINISHED runs only (those kept from
  the page's JSON included; the rows' numbers: from their per-image values when kept,
  `with_per_example_numbers`)."""
  table = []
  for name in prior_names:
    r = [row for row in rows if row["prior"] == name and results.is_finished(row)]
    all_runs = [row for row in rows if row["prior"] == name]
    elbo, iwae = np.array([x["elbo"] for x in r]), np.array([x["iwae"] for x in r])
    mean = lambda a: float(a.mean()) if len(a) else None
    std = lambda a: float(a.std(ddof=1)) if len(a) > 1 else None
    table.append(
      {
        "prior": name,
        "elbo": (mean(elbo), std(elbo)) if len(r) > 1 else mean(elbo),
        "iwae": (mean(iwae), std(iwae)) if len(r) > 1 else mean(iwae),
        "seeds": f"{len(r)} of {len(all_runs)}",
        "iw_samples": ",".join(str(k) for k in sorted({x["iw_samples_used"] for x in r})) or None,
        "per_image": per_image_note(r),
        "train_s": mean(np.array([x["train_seconds"] for x in r])),
        "eval_s": mean(np.array([x["eval_seconds"] for x in r])),
      }
    )
  return table


def per_image_note(finished: list[dict]) -> str | None:
  """What the summary says of its runs' per-image values: how many were kept."""
  if not finished:
    return None
  kept = sum(1 for r in finished if r.get("per_example"))
  if kept == len(finished):
    return f"kept ({kept} runs)"
  return "per-image values not kept" if not kept else f"kept for {kept} of {len(finished)} runs"


def density_images(plot: dict):
  """(prior density exp(log p(z)) on the PLOT_GRID grid, aggregate-posterior density q(z) on a
  HIST_BINS grid of the same window). q(z) = (1/N) sum_n q(z | x_n) is estimated by the 2-D
  histogram of the N z ~ q(z|x) samples, normalised by ALL samples and the cell area, so both
  integrate to their mass inside the window. Arrays are indexed [x, y]."""
  window = [np.linspace(e[0], e[-1], HIST_BINS + 1) for e in (plot["edges_x"], plot["edges_y"])]
  counts, _, _ = np.histogram2d(plot["z"][:, 0], plot["z"][:, 1], bins=window)
  area = np.diff(window[0])[:, None] * np.diff(window[1])[None, :]
  return np.exp(plot["log_prior"]), counts / (len(plot["z"]) * area)


def write_aggregate_posterior_png(plot: dict, path: str, title: str) -> int:
  """Prior density | aggregate posterior density (same axes, same log colour scale, prior contours
  over the posterior) [| the samples coloured by digit, when labels exist]. Returns the panels."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib import colors

  prior, posterior = density_images(plot)
  labels = plot.get("labels")
  panels = 3 if labels is not None else 2
  vmax = max(prior.max(), posterior.max())
  floor = vmax * 1e-4  # 4 decades of density shown
  norm = colors.LogNorm(vmin=floor, vmax=vmax)
  extent = (plot["edges_x"][0], plot["edges_x"][-1], plot["edges_y"][0], plot["edges_y"][-1])
  fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels + 1.0, 4.6), squeeze=False)
  axes = axes[0]
  for ax, img in ((axes[0], prior), (axes[1], posterior)):
    image = ax.imshow(
      np.maximum(img, floor).T,
      origin="lower",
      extent=extent,
      norm=norm,
      cmap="viridis",
      aspect="auto",
      interpolation="nearest",
    )
  axes[0].set_title("prior p(z)", fontsize=10)
  centres = [0.5 * (e[1:] + e[:-1]) for e in (plot["edges_x"], plot["edges_y"])]
  log_p = plot["log_prior"]
  axes[1].contour(
    centres[0],
    centres[1],
    log_p.T,
    levels=sorted(log_p.max() - np.array([6.0, 3.0, 1.0])),
    colors="white",
    linewidths=0.6,
  )
  axes[1].set_title(
    f"aggregate posterior q(z): histogram of\n{len(plot['z'])} z ~ q(z|x) over the "
    "test set\n(white: p(z) contours 1, 3, 6 nats below its peak)",
    fontsize=8,
  )
  if labels is not None:
    points = axes[2].scatter(
      plot["z"][:, 0],
      plot["z"][:, 1],
      c=labels,
      cmap="tab10",
      s=1,
      alpha=0.4,
      vmin=-0.5,
      vmax=9.5,
      rasterized=True,
    )
    axes[2].set(xlim=extent[:2], ylim=extent[2:])
    axes[2].set_title("the same samples, by digit", fontsize=10)
    fig.colorbar(points, ax=axes[2], ticks=range(10), label="digit")
  for ax in axes:
    ax.set(xlabel="z1", ylabel="z2")
  fig.suptitle(title, fontsize=11)
  fig.tight_layout(rect=(0, 0, 1, 0.95))
  fig.colorbar(image, ax=axes[:2].tolist(), label="density (log scale)", shrink=0.85, pad=0.02)
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return panels


SUMMARY_COLUMNS = [
  ("prior", "prior"),
  ("elbo", "test ELBO"),
  ("iwae", "test IWAE"),
  ("iw_samples", "K used"),
  ("seeds", "finished seeds"),
  ("per_image", "per-image values"),
  ("train_s", "train s / seed"),
  ("eval_s", "eval s / seed"),
]
RUN_COLUMNS = [
  ("prior", "prior"),
  ("seed", "seed"),
  ("status", "status"),
  ("epochs_run", "epochs"),
  ("elbo", "test ELBO"),
  ("iwae", "test IWAE"),
  ("iwae_sem", "± s.e."),
  ("iw_samples_used", "K used"),
  ("train_seconds", "train s"),
  ("eval_seconds", "eval s"),
  ("per_example_cell", "per-image values"),
]


def write_page(
  rows,
  *,
  output: str,
  command: str,
  train_command: str | None,
  prior_names,
  settings: list[Settings],
  base_logdir: str,
) -> list[str]:
  """The results page, its JSON rows and one PNG per prior (from the lowest finished seed whose run
  folder is on this machine; a prior whose finished runs are all kept from the page's JSON keeps
  its PNG as drawn; a prior without a finished run gets no PNG, and a stale one is removed).
  Returns the PNGs written or kept."""
  stem = os.path.splitext(output)[0]
  os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
  results.write_json(stem + ".json", rows)
  s0 = settings[0]
  finished = [r for r in rows if results.is_finished(r)]
  kept = [r for r in rows if r.get("status") == results.KEPT_STATUS]
  pngs, plotted = [], []
  for name in prior_names:
    path = f"{stem}_{name}.png"
    done = sorted((r for r in finished if r["prior"] == name), key=lambda r: r["seed"])
    plot_files = [os.path.join(run_logdir(base_logdir, name, r["seed"]), PLOT_FILE) for r in done]
    local = [(r, f) for r, f in zip(done, plot_files) if os.path.exists(f)]
    if local:
      (r, plot_file), *_ = local
      write_aggregate_posterior_png(
        dict(np.load(plot_file)), path, f"{name} prior (seed {r['seed']}), {s0.dataset} test set"
      )
      pngs.append(path)
      plotted.append(f"`{os.path.basename(path)}` (seed {r['seed']})")
    elif done and os.path.exists(path):  # the runs are kept rows: the PNG stays as drawn
      pngs.append(path)
      plotted.append(
        f"`{os.path.basename(path)}` (seed {done[0]['seed']}; kept as drawn, the run folder is "
        "not on this machine)"
      )
    elif done:
      plotted.append(f"{name}: no plot (its run folders are not on this machine)")
    elif os.path.exists(path):
      os.remove(path)

  epochs = [float(r.get("epochs_run") or 0) for r in rows]
  train_total = sum(float(r.get("train_seconds") or 0) for r in rows)
  eval_total = sum(float(r.get("eval_seconds") or 0) for r in rows)
  cpus = results.row_cpus(rows)
  commits = sorted({r["git_commit"] for r in finished if r.get("git_commit")})
  state = f"**{len(finished)} of {len(rows)} runs finished and evaluated**" + (
    ""
    if len(finished) == len(rows)
    else " — a partial study: the means are over the finished seeds only (their number is in "
    "the table), and the unfinished runs are listed below with the epochs they reached. "
    "Rerunning the training command resumes them from their newest checkpoints"
  )
  if s0.dataset == "binarized_mnist":
    data_note = (
      "Data: static binarized MNIST (Larochelle & Murray 2011, the offline copy "
      "`binarized_mnist_{train,test}.amat`): "
      f"{finished[0]['train_images'] if finished else s0.train_examples or 50000} training images "
      "(fixed 0/1 images, shuffled every epoch), "
      f"{finished[0]['test_images'] if finished else s0.test_examples or 10000} test images; the "
      "10,000 validation images are not used (fixed epoch budget, no early stopping). This data "
      "set has **no labels**, so the plots cannot be coloured by digit."
    )
  else:
    data_note = (
      f"Data: only MNIST's 10,000 labelled grey test images exist offline, so {NUM_TRAIN} of them "
      f"(fixed permutation, seed {SPLIT_SEED}) train the models (binarized afresh each epoch) and "
      f"the other {NUM_TEST} (binarized once, seed {TEST_BINARIZATION_SEED}) are the test set. "
      "The numbers are not comparable with the static-MNIST literature."
    )
  if s0.train_examples or s0.test_examples:
    data_note += (
      f" Subsets used: {s0.train_examples or 'all'} training, "
      f"{s0.test_examples or 'all'} test images."
    )
  notes = "\n\n".join(
    part
    for part in [
      state + ".",
      f"Protocol: 2-D latent VAE, encoder 784-512-512-(2+2), decoder 2-512-512-784 (ReLU, "
      f"Bernoulli), {s0.epochs} epochs, batch {s0.batch_size} (the last partial batch of each "
      f"epoch dropped), Adam lr {s0.lr}, no KL warm-up, {len(settings) // max(len(prior_names), 1)} "
      f"seeds ({settings[0].seed}..{settings[-1].seed}) per prior, run seed by seed. Priors: "
      f"standard N(0, I); mog: {NUM_COMPONENTS} learnable Gaussians; flow: RealNVP "
      f"({FLOW_COUPLINGS} couplings, {FLOW_HIDDEN_UNITS} hidden units, diffusion_tf.flows) on "
      f"N(0, I); vampprior: {NUM_COMPONENTS} pseudo-inputs, learnable weights. Test IWAE = "
      f"log-mean-exp of K = {s0.iw_samples} importance weights per test image; test ELBO = the "
      "mean of the same K log-weights; both in nats per test image, mean ± std (ddof 1) over the "
      "finished seeds; 'K used' is counted from the log-weights the estimator drew; '± s.e.' "
      "(per run) is the standard error over test images. Every evaluated run keeps the IWAE and "
      "ELBO of each test image (nats, `results.write_per_example`) beside this page, "
      f"`{os.path.basename(stem)}/<prior>-seed<seed>.npz`; the numbers of the table are computed "
      "from those arrays (a run evaluated before they were kept shows its recorded numbers and "
      "says 'per-image values not kept').",
      data_note,
      "Differences from the report's protocol: "
      + (
        "none in data, epochs, batch, learning rate, seeds, priors or K. "
        if s0.dataset == "binarized_mnist" and not (s0.train_examples or s0.test_examples)
        else "**the data differ** (see Data). "
      )
      + "Choices the protocol leaves open: Adam; the ELBO is the mean of the K log-weights (not a "
      "single-sample estimate); each epoch drops its last partial batch (a different remainder "
      "every epoch, as the order is reshuffled); the plots show the lowest finished seed only"
      + ("; no digit colours, since the data have no labels" if labels_missing(s0) else "")
      + ". "
      "FID, KID, precision/recall and PPL are not applicable here (a likelihood study of 2-D "
      "latents; besides, no Inception/VGG weights are available offline).",
      "Aggregate posteriors: for every test image, "
      f"{PLOT_SAMPLES_PER_IMAGE} samples "
      "z ~ q(z|x); their 2-D histogram (normalised to a density) is drawn beside the prior's "
      "density p(z) on the same axes and the same logarithmic colour scale (4 decades), with "
      "p(z) contours over the posterior. "
      + (", ".join(plotted) if plotted else "No run has finished yet: no plots")
      + ".",
      f"Compute: CPU {'; '.join(cpus) or host.cpu_model()}; wall time so far {train_total / 3600:.2f} "
      f"h training (summed over resumed sessions) + {eval_total / 3600:.2f} h evaluation; epochs "
      f"reached per run: min {min(epochs):.1f}, max {max(epochs):.1f} of {s0.epochs}.",
      f"Code: git commit {harness.code_commit() or 'unknown'} when this page was written"
      + (f"; the finished runs were evaluated at {', '.join(commits)}" if commits else "")
      + ".",
      (
        f"{len(kept)} of the finished runs say '{results.KEPT_STATUS}': they were trained "
        "and evaluated on another machine or in an earlier session whose run folders are gone "
        "(the CPU and commits above include theirs); their rows are kept from this page's JSON "
        "with the numbers they were evaluated with, their per-image values are not on this "
        "machine, and the command does not train them again "
        "(a local run of the same settings replaces its kept row; to redo one, remove its row "
        "from the JSON)."
        if kept
        else ""
      ),
      (
        "Training command (resumes unfinished runs; finished ones are reused, not redone):\n\n"
        f"```\n{train_command}\n```"
        if train_command
        else ""
      ),
    ]
    if part
  )
  shown = [
    dict(
      r,
      per_example_cell=(
        f"[{r['per_example']}]({r['per_example']})"
        if r.get("per_example")
        else "per-image values not kept"
        if r.get("iwae") is not None
        else None
      ),
    )
    for r in rows
  ]
  table = (
    results.markdown_table(summarize(rows, prior_names), SUMMARY_COLUMNS)
    + "\nPer run:\n\n"
    + results.markdown_table(shown, RUN_COLUMNS)
  )
  partial = "" if len(finished) == len(rows) else f" — PARTIAL, {len(finished)} of {len(rows)} runs"
  results.write_markdown(
    output,
    title=f"Priors for a 2-D latent VAE ({s0.dataset}){partial}",
    command=command,
    table=table,
    notes=notes,
  )
  return pngs


def labels_missing(s: Settings) -> bool:
  return s.dataset == "binarized_mnist"


# ----------------------------------------------------------------------------- the study


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudySettings:
  """Everything a study needs, read from the flags once (`experiments.priors_2d_flags`)."""

  runs: tuple[Settings, ...]  # every (prior, seed) run, seed-major (`study_runs`)
  prior_names: tuple[str, ...]
  base_logdir: str  # one sub-folder per run (`run_logdir`)
  report_only: bool
  data_dir: str | None
  output: str  # the Markdown page (JSON rows, PNGs and per-image values beside it)
  command: str  # the command line, for the page
  max_steps: int | None = None
  jit_compile: bool = False
  log_every: int = 50


def study_runs(
  preset: Preset,
  *,
  prior_names,
  first_seed: int,
  seeds: int,
  dataset: str | None,
  epochs: int,
  batch_size: int,
  iw_samples: int,
  train_examples: int | None,
  test_examples: int | None,
) -> tuple[Settings, ...]:
  """Every (prior, seed) run, seed-major: all priors of the first seed come first."""
  if seeds < 1:
    raise ValueError(f"--seeds must be >= 1, got {seeds}")
  for name in prior_names:
    priors.check_prior_name(name)
  return tuple(
    Settings(
      prior=name,
      seed=seed,
      dataset=dataset or preset.dataset,
      epochs=epochs,
      batch_size=batch_size,
      lr=preset.lr,
      iw_samples=iw_samples,
      train_examples=train_examples,
      test_examples=test_examples,
    )
    for seed in range(first_seed, first_seed + seeds)
    for name in prior_names
  )


def training_command(command: str) -> str:
  """The training command of a page written with `command` when the logdir does not hold the one
  that trained it (its command.txt): `command` without --report_only."""
  report_only = ("--report_only", "--report_only=true", "--report_only=True")
  return shlex.join(a for a in shlex.split(command) if a not in report_only)


def run(study: StudySettings, *, strategy) -> list[dict]:
  """Trains and evaluates the runs still to do (none with `report_only`; none whose run folder is
  not on this machine but whose finished row is in the page's JSON: that row is kept), then
  writes the page from every run's row, its numbers from the runs' per-image values; returns the
  page's rows. Under several workers only the chief writes (the others return the rows)."""
  base = study.base_logdir
  command_path = os.path.join(base, "command.txt")
  chief = harness.is_chief(strategy)  # under several workers only the chief writes files
  if not study.report_only and chief:
    os.makedirs(base, exist_ok=True)
    with open(command_path, "w") as f:
      f.write(study.command + "\n")
  train_command = (
    open(command_path).read().strip()
    if os.path.exists(command_path)
    else training_command(study.command)
  )
  s0 = study.runs[0]
  data_fn = lambda: load_study_data(
    s0.dataset, study.data_dir, train_examples=s0.train_examples, test_examples=s0.test_examples
  )
  rows = run_study(
    list(study.runs),
    base_logdir=base,
    data_fn=data_fn,
    strategy=strategy,
    report_only=study.report_only,
    earlier_rows=results.read_rows(study.output),
    max_steps=study.max_steps,
    jit_compile=study.jit_compile,
    log_every=study.log_every,
  )
  if not chief:
    return rows
  rows = with_per_example_numbers(rows, page=study.output, base_logdir=base)
  write_page(
    rows,
    output=study.output,
    command=study.command,
    train_command=train_command,
    prior_names=study.prior_names,
    settings=list(study.runs),
    base_logdir=base,
  )
  print(f"wrote {study.output}", file=sys.stderr)
  return rows
