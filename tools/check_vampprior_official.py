"""Check a trained VAE / HVAE (2-level) + VampPrior run against the official PyTorch models.

Given a user's checkout of https://github.com/jmtomczak/vae_vampprior (never vendored here), this
builds the official `VAE` (models/VAE.py) or `HVAE_2level` model with the static MNIST arguments of
its experiment.py (z1 = z2 = 40, 500 pseudo-inputs, binary 1x28x28), copies the run's best weights
into it (every dense kernel transposed, the pseudo-inputs included; every official parameter must
be assigned and every weight of ours used), and prints

  1. on the first `--network_images` test images, the largest differences of: the encoder means /
     log-variances (and, for the HVAE, q(z1|x,z2) and p(z1|z2)), the decoder's Bernoulli means,
     log p(z) of the VampPrior at posterior samples, and the one-sample ELBO with the same
     posterior noise given to both models;
  2. on `--num_images` test images from `--first_image`, the official importance-sampled
     log-likelihood (`calculate_likelihood`, the call utils/evaluation.py makes, one image at a
     time so the values are per image) with `--num_samples` samples, against our per-image test log-likelihoods of the same images
     (`--ours_values`: the run's test_per_example.npz, or its nll_partial.npz while the evaluation
     is still running): the mean paired difference and its standard error.

    python tools/check_vampprior_official.py --official_path /path/to/vae_vampprior \
        --logdir ../runs/vampprior_paper/static_mnist-hvae_2level-vampprior \
        --ours_values ../runs/vampprior_paper/page_hvae_2level/static_mnist-hvae_2level-vampprior.npz \
        --num_images 60 --num_samples 5000

The official K = 5000 estimate took 3-4 s per image with one torch thread (VAE and HVAE alike) on
a 2-core AVX-512 Xeon shared with other work, several times that when other work took the cores; docs/vampprior.md ("Checking a trained run against the official code") has the
figures measured on the paper-protocol runs. The posterior noise of part 1 is drawn here (NumPy,
seed 0) and given to both models; part 2 draws the official code's own (torch seed 0).

The official code drops the -D/2 log(2 pi) of its Gaussian log-densities (ours keeps them), so
log p(z) is compared after adding it; in the ELBO it cancels. The official Bernoulli clamps its
probabilities to [1e-5, 1 - 1e-5] (utils/distributions.py), ours scores the logits unclamped: the
script counts the decoder means outside that range, the one place the two densities differ.
The official code is imported as bench/bench_vampprior.py does (SciPy's logsumexp, no plots).
Needs torch (the `reference` extra). Static MNIST runs only (binary Bernoulli decoder, MLP models).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

MODELS = ("vae", "hvae_2level")
CLAMP = 1e-5  # official utils/distributions.py min_epsilon / max_epsilon of log_Bernoulli


def load_ours(logdir: str, data_dir: str | None):
  """(settings, our model with the run's best weights, test images [N, 28, 28, 1], checkpoint)."""
  from experiments import vampprior_train

  s = vampprior_train.run_settings(logdir)
  if s.dataset != "static_mnist" or s.model not in MODELS or s.prior != "vampprior":
    raise SystemExit(
      f"{logdir}: a static_mnist run of {' / '.join(MODELS)} + vampprior is needed, "
      f"got {s.dataset} {s.model} {s.prior}"
    )
  _, _, test, _ = vampprior_train.load_splits(s.dataset, data_dir=data_dir)
  _, model, path = vampprior_train.restore_run(logdir, "best")
  return s, model, test, path


class WeightCopy:
  """Copies our Keras weights into the official torch modules and records what was assigned."""

  def __init__(self, official, ours):
    self.official, self.ours = official, ours
    self.assigned: set[int] = set()
    self.used: set[int] = set()

  def _put(self, param, value):
    import torch

    value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    if tuple(param.shape) != tuple(value.shape):
      raise ValueError(f"shape {tuple(value.shape)} for a parameter of shape {tuple(param.shape)}")
    with torch.no_grad():
      param.copy_(value)
    self.assigned.add(id(param))

  def dense(self, linear, layer):
    """torch nn.Linear (weight [out, in]) <- keras Dense (kernel [in, out])."""
    self._put(linear.weight, layer.kernel.numpy().T)
    self._put(linear.bias, layer.bias.numpy())
    self.used.update({id(layer.kernel), id(layer.bias)})

  def gated(self, gated, layer):
    self.dense(gated.h, layer.h)
    self.dense(gated.g, layer.g)

  def gaussian(self, mean, log_var, head):
    """official `*_mean` (Linear) and `*_logvar` (NonLinear + Hardtanh) <- our GaussianHead."""
    self.dense(mean, head.mean)
    self.dense(log_var.linear, head.log_var)

  def pseudo_inputs(self, prior):
    """official `means.linear.weight` [784, K] (identity idle input) <- our [K, 28, 28, 1]."""
    raw = prior.pseudo_inputs_raw.numpy()
    self._put(self.official.means.linear.weight, raw.reshape(raw.shape[0], -1).T)
    self.used.add(id(prior.pseudo_inputs_raw))
    logits = prior.logits.numpy()
    if prior.learn_weights or np.any(logits != 0):
      raise ValueError("the official VampPrior has uniform weights 1/K; this run learnt its own")

  def check(self):
    missing = [n for n, p in self.official.named_parameters() if id(p) not in self.assigned]
    unused = [
      v.path for v in self.ours.trainable_variables if id(v) not in self.used
    ]  # the VampPrior's (fixed) logits are not trainable
    if missing or unused:
      raise ValueError(f"official parameters not assigned: {missing}; our weights unused: {unused}")
    return len(self.assigned)


def copy_weights(official, ours, model_name: str) -> int:
  """All weights of `ours` into `official`; returns the number of official tensors assigned."""
  c = WeightCopy(official, ours)
  if model_name == "vae":
    for i, layer in enumerate(ours.encoder_layers):
      c.gated(official.q_z_layers[i], layer)
    c.gaussian(official.q_z_mean, official.q_z_logvar, ours.q_z)
    for i, layer in enumerate(ours.decoder_layers):
      c.gated(official.p_x_layers[i], layer)
  else:
    for i, layer in enumerate(ours.q_z2_features):
      c.gated(official.q_z2_layers[i], layer)
    c.gaussian(official.q_z2_mean, official.q_z2_logvar, ours.q_z2)
    c.gated(official.q_z1_layers_x[0], ours.q_z1_features[0])
    c.gated(official.q_z1_layers_z2[0], ours.q_z1_from_z2)
    c.gated(official.q_z1_layers_joint[0], ours.q_z1_joint)
    c.gaussian(official.q_z1_mean, official.q_z1_logvar, ours.q_z1)
    for i, layer in enumerate(ours.p_z1_layers):
      c.gated(official.p_z1_layers[i], layer)
    c.gaussian(official.p_z1_mean, official.p_z1_logvar, ours.p_z1)
    c.gated(official.p_x_layers_z1[0], ours.p_x_from_z1)
    c.gated(official.p_x_layers_z2[0], ours.p_x_from_z2)
    c.gated(official.p_x_layers_joint[0], ours.p_x_joint)
  c.dense(official.p_x_mean.linear, ours.p_x)
  c.pseudo_inputs(ours.prior)
  return c.check()


def build_official(path: str, model_name: str, ours):
  import bench_vampprior
  import torch

  module = bench_vampprior.import_official(path, model_name)
  torch.manual_seed(0)
  official = module.VAE(bench_vampprior.official_args(model_name))
  official.eval()
  return official, copy_weights(official, ours, model_name)


def max_abs(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def compare_networks(official, ours, model_name: str, images, *, seed: int = 0):
  """{quantity: (largest |ours - official|, largest |value|)} on `images` [B, 28, 28, 1]; and the
  count of decoder means outside the official clamp."""
  import tensorflow as tf
  import torch

  from vampprior_tf import model as model_module

  x_tf = tf.constant(images)
  x_t = torch.from_numpy(images.reshape(len(images), -1))
  rng = np.random.default_rng(seed)
  dims = [ours.latent_dim] if model_name == "vae" else [ours.z2_dim, ours.z1_dim]
  noise = [rng.standard_normal((len(images), d)).astype(np.float32) for d in dims]
  out = {}

  def pair(name, a, b):
    a, b = np.asarray(a), np.asarray(b)
    out[name] = (max_abs(a, b), float(np.max(np.abs(b))))

  # Both models draw the latents in the same order (VAE: z; HVAE: z2 then z1): the same noise.
  def ours_reparameterize(mean, log_var, seed):
    del seed
    return mean + tf.exp(0.5 * log_var) * tf.constant(next(ours_noise))

  def official_reparameterize(mean, log_var):
    return mean + torch.exp(0.5 * log_var) * torch.from_numpy(next(official_noise))

  saved = model_module.reparameterize
  model_module.reparameterize = ours_reparameterize
  official.reparameterize = official_reparameterize
  ours_noise, official_noise = iter(noise), iter(noise)
  try:
    terms = ours(x_tf, training=False)  # eager: the patched function draws
    with torch.no_grad():
      loss, re, kl = official.calculate_loss(x_t)
  finally:
    model_module.reparameterize = saved
    del official.reparameterize
  pair("ELBO, same noise", terms.elbo.numpy(), -loss.numpy())
  pair("log p(x|z), same noise", terms.log_px.numpy(), re.numpy())
  pair("KL (1 sample), same noise", terms.kl.numpy(), kl.numpy())

  with torch.no_grad():
    if model_name == "vae":
      mean, log_var = ours.encode_top(x_tf)
      mean_o, log_var_o = official.q_z(x_t)
      pair("q(z|x) mean", mean.numpy(), mean_o.numpy())
      pair("q(z|x) log-variance", log_var.numpy(), log_var_o.numpy())
      z = (mean + tf.exp(0.5 * log_var) * noise[0]).numpy()
      probs = tf.sigmoid(ours.decode(tf.constant(z))).numpy().reshape(len(z), -1)
      probs_o = official.p_x(torch.from_numpy(z))[0].numpy()
      log_prior_o = official.log_p_z(torch.from_numpy(z)).numpy()
    else:
      mean, log_var = ours.encode_top(x_tf)
      mean_o, log_var_o = official.q_z2(x_t)
      pair("q(z2|x) mean", mean.numpy(), mean_o.numpy())
      pair("q(z2|x) log-variance", log_var.numpy(), log_var_o.numpy())
      z = (mean + tf.exp(0.5 * log_var) * noise[0]).numpy()
      z_t = torch.from_numpy(z)
      m1, lv1 = ours.encode_z1(x_tf, tf.constant(z))
      m1_o, lv1_o = official.q_z1(x_t, z_t)
      pair("q(z1|x,z2) mean", m1.numpy(), m1_o.numpy())
      pair("q(z1|x,z2) log-variance", lv1.numpy(), lv1_o.numpy())
      pm, plv = ours.prior_z1(tf.constant(z))
      pm_o, plv_o = official.p_z1(z_t)
      pair("p(z1|z2) mean", pm.numpy(), pm_o.numpy())
      pair("p(z1|z2) log-variance", plv.numpy(), plv_o.numpy())
      z1 = (m1 + tf.exp(0.5 * lv1) * noise[1]).numpy()
      probs = tf.sigmoid(ours.decode(None, tf.constant(z1), tf.constant(z))).numpy()
      probs = probs.reshape(len(z), -1)
      probs_o = official.p_x(torch.from_numpy(z1), z_t)[0].numpy()
      log_prior_o = official.log_p_z2(z_t).numpy()
    pair("decoder Bernoulli means", probs, probs_o)
    # official log_Normal_diag leaves out -D/2 log(2 pi)
    log_prior_o = log_prior_o - 0.5 * z.shape[1] * math.log(2 * math.pi)
    pair("log p(z) VampPrior at z ~ q", ours.log_prior(tf.constant(z)).numpy(), log_prior_o)
  outside = int(np.sum((probs_o < CLAMP) | (probs_o > 1 - CLAMP)))
  return out, outside, probs_o.size


def official_log_likelihood(official, images, *, num_samples: int, mb: int, progress=True):
  """Per-image log p(x) of the official `calculate_likelihood(X, dir, S, MB)`: called on one image
  at a time (it returns the mean of -log p over its X), under torch.no_grad()."""
  import torch

  x = torch.from_numpy(images.reshape(len(images), -1))
  values = np.zeros(len(images))
  start = time.time()
  for i in range(len(images)):
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
      values[i] = -official.calculate_likelihood(x[i : i + 1], None, S=num_samples, MB=mb)
    if progress and ((i + 1) % 10 == 0 or i + 1 == len(images)):
      print(
        f"  official log p(x): {i + 1}/{len(images)} images, {time.time() - start:.0f} s",
        file=sys.stderr,
        flush=True,
      )
  return values, time.time() - start


def read_ours_values(path: str) -> np.ndarray:
  """Per-image test log p(x) of ours: a test_per_example.npz (log_likelihood) or the evaluation's
  nll_partial.npz (log_px, the images done so far, in test-set order)."""
  with np.load(path) as f:
    key = "log_likelihood" if "log_likelihood" in f.files else "log_px"
    return np.asarray(f[key], np.float64)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--official_path",
    default=os.environ.get("GENMODELS_VAMPPRIOR_OFFICIAL"),
    help="a checkout of github.com/jmtomczak/vae_vampprior (default $GENMODELS_VAMPPRIOR_OFFICIAL)",
  )
  parser.add_argument("--logdir", required=True, help="a static_mnist vae / hvae_2level run folder")
  parser.add_argument(
    "--ours_values",
    default=None,
    help="our per-image test values (default: the run's test_per_example.npz, else nll_partial.npz)",
  )
  parser.add_argument("--num_images", type=int, default=100, help="N test images")
  parser.add_argument(
    "--first_image", type=int, default=0, help="index of the first of them (default 0)"
  )
  parser.add_argument("--num_samples", type=int, default=5000, help="K importance samples")
  parser.add_argument(
    "--network_images", type=int, default=500, help="test images for the network comparison"
  )
  parser.add_argument(
    "--mb", type=int, default=500, help="official calculate_likelihood MB (samples per pass)"
  )
  parser.add_argument("--threads", type=int, default=1, help="torch threads")
  parser.add_argument(
    "--output", default=None, help="write the per-image values of both sides to this .npz"
  )
  parser.add_argument("--data_dir", default=None, help="default $GENMODELS_DATA_DIR")
  args = parser.parse_args()
  if not args.official_path:
    parser.error("--official_path (or $GENMODELS_VAMPPRIOR_OFFICIAL) is required")

  import torch

  torch.set_num_threads(args.threads)
  s, ours, test, checkpoint = load_ours(args.logdir, args.data_dir)
  official, assigned = build_official(args.official_path, s.model, ours)
  print(f"{s.model} + VampPrior, {checkpoint}")
  print(
    f"official {type(official).__module__}.VAE: all {assigned} parameter tensors assigned from "
    "ours (dense kernels transposed, pseudo-inputs included), every weight of ours used"
  )

  n = min(args.network_images, len(test))
  diffs, outside, total = compare_networks(official, ours, s.model, test[:n])
  print(f"\nnetworks on the first {n} test images: largest |ours - official| (largest |official|)")
  for name, (d, scale) in diffs.items():
    print(f"  {name:30s} {d:10.3g}   ({scale:.4g})")
  print(f"  decoder means outside the official clamp [1e-5, 1 - 1e-5]: {outside} of {total} pixels")

  path = args.ours_values
  if path is None:
    for name in ("test_per_example.npz", "nll_partial.npz"):
      if os.path.exists(os.path.join(args.logdir, name)):
        path = os.path.join(args.logdir, name)
        break
  if path is None:
    print("\nno per-image values of ours (--ours_values): the official log p(x) is not compared")
    return
  ours_ll = read_ours_values(path)
  a = args.first_image
  b = min(a + args.num_images, len(ours_ll))
  m = b - a
  print(
    f"\nofficial calculate_likelihood, K = {args.num_samples} (MB = {args.mb}), test images "
    f"{a} to {b - 1}, torch {torch.__version__}, {args.threads} thread(s):",
    flush=True,
  )
  off_ll, seconds = official_log_likelihood(
    official, test[a:b], num_samples=args.num_samples, mb=args.mb
  )
  ours_ll = ours_ll[a:b]
  diff = ours_ll - off_ll
  if args.output:
    np.savez(
      args.output, ours_log_likelihood=ours_ll, first_image=a, official_log_likelihood=off_ll
    )
  sem = lambda v: float(np.std(v, ddof=1) / np.sqrt(len(v)))  # noqa: E731
  print(f"  ours ({os.path.basename(path)}):  NLL {-ours_ll.mean():.3f} +- {sem(ours_ll):.3f}")
  print(f"  official:                NLL {-off_ll.mean():.3f} +- {sem(off_ll):.3f}")
  print(
    f"  paired log p(x) ours - official: {diff.mean():+.4f} +- {sem(diff):.4f} nats "
    f"(per-image sd {np.std(diff, ddof=1):.4f}); {seconds:.0f} s"
  )
  print(json.dumps({"model": s.model, "images": m, "paired_mean": diff.mean(), "sem": sem(diff)}))


if __name__ == "__main__":
  main()
