"""Every experiment script documents every flag in --help."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_MODULES = {"__init__", "data", "ddim_flags", "flags", "harness", "images", "nvae_flags",
                  "nvae_train", "results", "vampprior_flags", "vampprior_train"}
SCRIPTS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                 if os.path.basename(p)[:-3] not in SHARED_MODULES)

# One process per script: import it, list its flags whose help is missing or too short, print --help.
CHECK = """
import importlib, inspect, sys
from absl import flags
module = importlib.import_module("experiments." + sys.argv[1])
assert callable(getattr(module, "main", None)), "no main()"
# Scripts define their flags when they run, not at import: on the global FLAGS (training
# scripts, with the common flags), or on their own FlagValues (evaluation commands such as ppl).
own = bool(inspect.signature(module.define_flags).parameters)
fv = flags.FlagValues() if own else flags.FLAGS
module.define_flags(fv) if own else module.define_flags()
by_module = fv.flags_by_module_dict()
bad = [f.name for m, fs in by_module.items() if m.startswith("experiments.") for f in fs
       if len((f.help or "").strip()) < 15]
print("UNDOCUMENTED:" + ",".join(bad))
print("OWN_FLAGS" if own else "COMMON_FLAGS")
print(fv.get_help(include_special_flags=False))
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_documents_every_flag(script):
  out = subprocess.run([sys.executable, "-c", CHECK, script], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  first, kind, help_text = out.stdout.split("\n", 2)
  assert first == "UNDOCUMENTED:", f"flags without a real help string: {first}"
  assert "--logdir" in help_text
  if kind == "COMMON_FLAGS":  # a training script: the common flags of experiments.flags
    for name in ("data_dir", "seed", "preset", "strategy", "precision", "max_steps"):
      assert f"--{name}" in help_text, name
