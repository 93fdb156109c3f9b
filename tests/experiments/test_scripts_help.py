"""Every experiment script documents every flag in --help."""

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_MODULES = {"__init__", "data", "ddim_flags", "flags", "harness", "images", "nvae_flags",
                  "nvae_train", "results", "vampprior_flags", "vampprior_train"}
SCRIPTS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                 if os.path.basename(p)[:-3] not in SHARED_MODULES)

# One process for all scripts (one TensorFlow import instead of one per script): for each script,
# import it, define its flags, list those whose help is missing or too short, keep its --help text,
# then delete the flags it added so the next script starts from the same common flags.
CHECK = """
import importlib, inspect, json, sys, traceback
from absl import flags
import experiments.flags  # the common flags every training script shares
out = {}
for script in sys.argv[1:]:
  before = set(flags.FLAGS)
  try:
    module = importlib.import_module("experiments." + script)
    assert callable(getattr(module, "main", None)), "no main()"
    # Scripts define their flags when they run, not at import: on the global FLAGS (training
    # scripts, with the common flags), or on their own FlagValues (evaluation commands such as ppl).
    own = bool(inspect.signature(module.define_flags).parameters)
    fv = flags.FlagValues() if own else flags.FLAGS
    module.define_flags(fv) if own else module.define_flags()
    by_module = fv.flags_by_module_dict()
    bad = [f.name for m, fs in by_module.items() if m.startswith("experiments.") for f in fs
           if len((f.help or "").strip()) < 15]
    out[script] = {"undocumented": bad, "own": own,
                   "help": fv.get_help(include_special_flags=False)}
  except Exception:  # reported by that script's test
    out[script] = {"error": traceback.format_exc()}
  for name in set(flags.FLAGS) - before:
    delattr(flags.FLAGS, name)
print("RESULTS:" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps():
  out = subprocess.run([sys.executable, "-c", CHECK, *SCRIPTS], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.split("RESULTS:", 1)[1])


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_documents_every_flag(script, helps):
  result = helps[script]
  assert "error" not in result, result.get("error")
  assert result["undocumented"] == [], f"flags without a real help string: {result['undocumented']}"
  help_text = result["help"]
  assert "--logdir" in help_text
  if not result["own"]:  # a training script: the common flags of experiments.flags
    for name in ("data_dir", "seed", "preset", "strategy", "precision", "max_steps"):
      assert f"--{name}" in help_text, name
