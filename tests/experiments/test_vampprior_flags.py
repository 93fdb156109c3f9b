"""experiments.vampprior_flags: the flags are read once into frozen settings (preset value unless the
flag is set, even to 0), every table cell resolved before training, unknown grid names rejected."""

import dataclasses
import os

import pytest

from experiments import vampprior_flags
from tests import scripts


def resolve(args):
  """Parses a vampprior_table command line; returns what it resolves to (cells, output, errors)."""
  with scripts.defined_flags(vampprior_flags.define_table_flags) as fv:
    fv(["prog", *args])
    t = vampprior_flags.table_settings_from_flags()
    cells = [
      dict(
        dataclasses.asdict(s),
        logdir=c.logdir,
        batch_size=c.batch_size,
        epochs=c.epochs,
        patience=c.early_stopping_patience,
        start=c.early_stopping_start_epoch,
        same_hparams=dict(c.hparams) == dataclasses.asdict(s),
      )
      for s, c in t.cells
    ]
    fv.priors = ["standard", "gaussian"]
    with pytest.raises(ValueError) as error:
      vampprior_flags.table_settings_from_flags()
  return dict(cells=cells, output=t.output, report_only=t.report_only, error=str(error.value))


def test_table_settings_resolve_every_cell_once_from_flags_and_preset(tmp_path):
  out = resolve(
    [
      "--preset=paper",
      "--datasets=static_mnist,frey_faces",
      "--models=vae",
      "--priors=standard,vampprior",
      "--early_stopping=0",
      "--warmup=7",
      "--likelihood=continuous_bernoulli",
      f"--logdir={tmp_path}",
      "--report_only",
    ]
  )
  cells = out["cells"]
  assert [(c["dataset"], c["prior"]) for c in cells] == [
    ("static_mnist", "standard"),
    ("static_mnist", "vampprior"),
    ("frey_faces", "standard"),
    ("frey_faces", "vampprior"),
  ]
  assert [c["logdir"] for c in cells] == [
    os.path.join(str(tmp_path), n)
    for n in (
      "static_mnist-vae-standard",
      "static_mnist-vae-vampprior",
      "frey_faces-vae-standard",
      "frey_faces-vae-vampprior",
    )
  ]
  first = cells[0]
  # Set flags win (early stopping 0 = off, not the preset's 50); unset ones take the paper preset.
  assert (first["early_stopping"], first["warmup"], first["likelihood"]) == (
    0,
    7,
    "continuous_bernoulli",
  )
  assert (
    first["num_components"],
    first["lr"],
    first["test_samples"],
    first["batch_size"],
    first["epochs"],
  ) == (500, 5e-4, 5000, 100, 2000)
  # Official early stopping off: no patience; the harness config records the settings.
  assert (first["patience"], first["start"]) == (None, 6) and all(c["same_hparams"] for c in cells)
  assert out["report_only"] is True
  assert out["output"] == os.path.join("results", "vampprior_table.md")
  assert out["error"] == "--priors: unknown gaussian; known: standard, mog, vampprior, flow"
