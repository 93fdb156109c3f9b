"""The cross-family likelihood page: its numbers are what the published per-image arrays give."""

import json
import os
import re

import numpy as np

from experiments import likelihood_table, results
from tests import scripts

N = likelihood_table.STATIC_MNIST_TEST_IMAGES


def _write(results_dir, page, row_id, log_likelihood, **description):
  path = results.published_per_example_path(os.path.join(results_dir, page), row_id)
  results.write_per_example(
    path, log_likelihood=log_likelihood, elbo=log_likelihood - 3.0, **description
  )
  return path


def _synthetic_results(results_dir):
  """Per-image arrays as the three families write them: VAE / HVAE standard (VampPrior suite),
  NVAE step / epoch + SR (one pass, [1, N]), two seeds of the priors study's standard prior and
  one vampprior seed on the quick preset's other test set. Returns {name: log_likelihood}."""
  rng = np.random.default_rng(0)
  base = -rng.gamma(9.0, 10.0, N).astype(np.float32)  # per-image log p(x), shared difficulty
  ll = {
    "vae": base - 2.0 + rng.normal(0, 1, N).astype(np.float32),
    "hvae": base + rng.normal(0, 1, N).astype(np.float32),
    "step_sr": (base + 5.0 + rng.normal(0, 1, N).astype(np.float32))[None],
    "epoch_sr": (base + 4.0 + rng.normal(0, 1, N).astype(np.float32))[None],
    "standard0": base - 50.0 + rng.normal(0, 2, N).astype(np.float32),
    "standard1": base - 49.0 + rng.normal(0, 2, N).astype(np.float32),
    "vampprior0": -rng.gamma(9.0, 15.0, 2000).astype(np.float32),
  }
  vp = dict(
    what="test log p(x) (IWAE_K) and ELBO, nats per example",
    num_samples=5000,
    dataset="static_mnist",
    test_examples=N,
  )
  _write(results_dir, "vampprior_paper.md", "static_mnist-vae-standard", ll["vae"], **vp)
  _write(results_dir, "vampprior_paper.md", "static_mnist-hvae_2level-standard", ll["hvae"], **vp)
  nv = dict(
    what="NVAE test log p(x) (IWAE_K) and ELBO, nats per image",
    num_iw_samples=1000,
    test_subset="all",
    dataset="binarized_mnist",
    binarization="static",
  )
  _write(results_dir, "nvae_cpu.md", "step_sr", ll["step_sr"], **nv)
  _write(results_dir, "nvae_cpu.md", "epoch_sr", ll["epoch_sr"], **nv)
  pr = dict(
    what="test IWAE_K (log_likelihood) and ELBO (elbo) of every test image, nats",
    num_samples=1000,
    prior="standard",
    dataset="binarized_mnist",
    test_examples=N,
  )
  _write(results_dir, "priors_2d.md", "standard-seed0", ll["standard0"], seed=0, **pr)
  _write(results_dir, "priors_2d.md", "standard-seed1", ll["standard1"], seed=1, **pr)
  _write(
    results_dir,
    "priors_2d.md",
    "vampprior-seed0",
    ll["vampprior0"],
    **dict(pr, prior="vampprior", dataset="mnist_test", test_examples=2000, seed=0),
  )
  return ll


def _nll_sem(ll):
  v = -np.asarray(ll, np.float64).ravel()
  return v.mean(), v.std(ddof=1) / np.sqrt(len(v))


def _page_row(text, model):
  return next(
    line for line in text.splitlines() if line.startswith("| ") and f"| {model} |" in line
  )


def _run(tmp_path):
  out = tmp_path / "page" / "ll.md"
  done = scripts.run_script(
    "likelihood_table", [f"--results_dir={tmp_path / 'results'}", f"--output={out}"]
  )
  assert done.returncode == 0, done.stderr
  return out.read_text(), json.loads((tmp_path / "page" / "ll.json").read_text())


def test_page_numbers_are_what_the_arrays_give(tmp_path):
  ll = _synthetic_results(str(tmp_path / "results"))
  text, data = _run(tmp_path)
  assert (tmp_path / "page" / "ll.png").stat().st_size > 0
  rows = {r["key"]: r for r in data["rows"]}

  for key, model, values in (
    ("vae_standard", "VAE, standard prior", ll["vae"]),
    ("hvae_standard", "HVAE (2-level), standard prior", ll["hvae"]),
    ("nvae_step_sr", "NVAE, per-step warm-up + SR", ll["step_sr"]),
    ("nvae_epoch_sr", "NVAE, per-epoch warm-up + SR", ll["epoch_sr"]),
  ):
    nll, sem = _nll_sem(values)
    np.testing.assert_allclose([rows[key]["nll"], rows[key]["nll_sem"]], [nll, sem], rtol=1e-6)
    line = _page_row(text, model)
    assert f"| {nll:.2f} | {sem:.2f} | [{nll - 1.96 * sem:.2f}, {nll + 1.96 * sem:.2f}] |" in line
    assert f"| {-(np.asarray(values, np.float64) - 3.0).mean():.2f} |" in line  # -ELBO
    assert f"| {N:,} |" in line

  # The priors study: the best seed is the one with the lower mean NLL; the seed on the quick
  # preset's 2,000 images is another test set: shown, never paired.
  best = min((0, 1), key=lambda s: _nll_sem(ll[f"standard{s}"])[0])
  assert rows["priors_standard"]["seed"] == best
  assert f"standard-seed{best}.npz" in _page_row(text, "2-D latent VAE, prior standard (best seed)")
  assert rows["priors_vampprior"]["test_set"] is None
  assert "excluded" in _page_row(text, "2-D latent VAE, prior vampprior (best seed)")

  # Rows without arrays name the file and the command that makes it.
  line = _page_row(text, "VAE, VampPrior")
  assert (
    "missing: `" + str(tmp_path / "results" / "vampprior_paper" / "static_mnist-vae-vampprior.npz")
    in line
  )
  assert "python -m experiments.vampprior_table --preset=paper" in line

  diffs = {d["what"]: d for d in data["differences"]}
  for what, a, b in (
    ("HVAE - VAE, standard prior", ll["hvae"], ll["vae"]),
    ("per-step - per-epoch warm-up, SR (NVAE)", ll["step_sr"], ll["epoch_sr"]),
    ("NVAE (per-step + SR) - HVAE, standard prior", ll["step_sr"], ll["hvae"]),
  ):
    per_image = (-np.asarray(a, np.float64).ravel()) - (-np.asarray(b, np.float64).ravel())
    d, se = per_image.mean(), per_image.std(ddof=1) / np.sqrt(N)
    np.testing.assert_allclose([diffs[what]["difference"], diffs[what]["sem"]], [d, se], rtol=1e-6)
    line = _page_row(text, what)
    assert f"| {d:+.2f} | {se:.2f} | [{d - 1.96 * se:+.2f}, {d + 1.96 * se:+.2f}] |" in line
  assert diffs["VampPrior - standard prior, VAE"]["status"].startswith("no per-image values")
  assert diffs["VampPrior - standard prior, 2-D latent VAE (best seeds)"]["status"].startswith(
    "no per-image values on the static MNIST test set"
  )


def test_altering_one_value_changes_the_page(tmp_path):
  ll = _synthetic_results(str(tmp_path / "results"))
  before, _ = _run(tmp_path)
  changed = ll["hvae"].copy()
  changed[123] -= 500.0  # one image 500 nats less likely: NLL +0.05
  _write(
    str(tmp_path / "results"),
    "vampprior_paper.md",
    "static_mnist-hvae_2level-standard",
    changed,
    dataset="static_mnist",
    test_examples=N,
    num_samples=5000,
  )
  after, data = _run(tmp_path)
  assert after != before
  nll, sem = _nll_sem(changed)
  row = _page_row(after, "HVAE (2-level), standard prior")
  assert f"| {nll:.2f} | {sem:.2f} |" in row
  assert row != _page_row(before, "HVAE (2-level), standard prior")
  assert _page_row(after, "HVAE - VAE, standard prior") != _page_row(
    before, "HVAE - VAE, standard prior"
  )


def test_rows_on_different_test_images_are_not_paired(tmp_path):
  ll = _synthetic_results(str(tmp_path / "results"))
  # A VAE evaluated on a 500-image subset: same data file, other images.
  _write(
    str(tmp_path / "results"),
    "vampprior_paper.md",
    "static_mnist-vae-standard",
    ll["vae"][:500],
    dataset="static_mnist",
    test_examples=500,
    num_samples=5000,
  )
  text, data = _run(tmp_path)
  diffs = {d["what"]: d for d in data["differences"]}
  assert diffs["HVAE - VAE, standard prior"]["status"].startswith("not paired")
  assert "difference" not in diffs["HVAE - VAE, standard prior"]
  assert re.search(r"\| HVAE - VAE, standard prior \| n/a \|", text)
