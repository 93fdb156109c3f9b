"""experiments.vampprior_flags: the flags are read once into frozen settings (preset value unless the
flag is set, even to 0), every table cell resolved before training, unknown grid names rejected."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One process (the flags live on the global FLAGS): parse a command line, print what it resolves to.
RESOLVE = """
import dataclasses, json, sys
from absl import flags
from experiments import flags as common, vampprior_flags
vampprior_flags.define_table_flags()
flags.FLAGS(["prog"] + sys.argv[1:])
t = vampprior_flags.table_settings_from_flags()
cells = [dict(dataclasses.asdict(s), logdir=c.logdir, batch_size=c.batch_size, epochs=c.epochs,
              patience=c.early_stopping_patience, start=c.early_stopping_start_epoch,
              same_hparams=dict(c.hparams) == dataclasses.asdict(s)) for s, c in t.cells]
try:
  flags.FLAGS.priors = ["standard", "gaussian"]
  vampprior_flags.table_settings_from_flags()
  error = None
except ValueError as e:
  error = str(e)
print(json.dumps(dict(cells=cells, output=t.output, report_only=t.report_only, error=error)))
"""


def test_table_settings_resolve_every_cell_once_from_flags_and_preset(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-c", RESOLVE, "--preset=paper", "--datasets=static_mnist,frey_faces",
       "--models=vae", "--priors=standard,vampprior", "--early_stopping=0", "--warmup=7",
       "--likelihood=continuous_bernoulli", f"--logdir={tmp_path}", "--report_only"],
      cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True,
      timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.splitlines()[-1])
  cells = out["cells"]
  assert [(c["dataset"], c["prior"]) for c in cells] == [
      ("static_mnist", "standard"), ("static_mnist", "vampprior"),
      ("frey_faces", "standard"), ("frey_faces", "vampprior")]
  assert [c["logdir"] for c in cells] == [os.path.join(str(tmp_path), n) for n in (
      "static_mnist-vae-standard", "static_mnist-vae-vampprior", "frey_faces-vae-standard",
      "frey_faces-vae-vampprior")]
  first = cells[0]
  # Set flags win (early stopping 0 = off, not the preset's 50); unset ones take the paper preset.
  assert (first["early_stopping"], first["warmup"], first["likelihood"]) == (0, 7, "continuous_bernoulli")
  assert (first["num_components"], first["lr"], first["test_samples"], first["batch_size"],
          first["epochs"]) == (500, 5e-4, 5000, 100, 2000)
  # Official early stopping off: no patience; the harness config records the settings.
  assert (first["patience"], first["start"]) == (None, 6) and all(c["same_hparams"] for c in cells)
  assert out["report_only"] is True
  assert out["output"] == os.path.join("results", "vampprior_table.md")
  assert out["error"] == "--priors: unknown gaussian; known: standard, mog, vampprior, flow"
