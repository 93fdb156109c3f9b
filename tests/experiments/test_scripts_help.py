"""Every experiment script documents every flag in --help."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_MODULES = {"__init__", "data", "flags", "harness", "images", "results"}
SCRIPTS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                 if os.path.basename(p)[:-3] not in SHARED_MODULES)

# One process per script: import it, list its flags whose help is missing or too short, print --help.
CHECK = """
import importlib, sys
from absl import flags
module = importlib.import_module("experiments." + sys.argv[1])
assert callable(getattr(module, "main", None)), "no main()"
module.define_flags()  # scripts define their flags when they run, not at import
by_module = flags.FLAGS.flags_by_module_dict()
bad = [f.name for m, fs in by_module.items() if m.startswith("experiments.") for f in fs
       if len((f.help or "").strip()) < 15]
print("UNDOCUMENTED:" + ",".join(bad))
print(flags.FLAGS.get_help(include_special_flags=False))
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_documents_every_flag(script):
  out = subprocess.run([sys.executable, "-c", CHECK, script], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  first, _, help_text = out.stdout.partition("\n")
  assert first == "UNDOCUMENTED:", f"flags without a real help string: {first}"
  for name in ("logdir", "data_dir", "seed", "preset", "strategy", "precision", "max_steps"):
    assert f"--{name}" in help_text, name
