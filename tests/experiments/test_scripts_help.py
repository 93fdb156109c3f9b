"""Every experiment script documents every flag in --help."""

import glob
import importlib
import inspect
import os

import pytest
from absl import flags

from experiments import flags as common  # noqa: F401  (the common flags every training script shares)
from tests import scripts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_MODULES = {
  "__init__",
  "data",
  "ddim_flags",
  "flags",
  "harness",
  "images",
  "nvae_flags",
  "nvae_train",
  "priors_2d_flags",
  "priors_2d_train",
  "results",
  "sample_quality_flags",
  "sample_quality_train",
  "vampprior_flags",
  "vampprior_train",
}
SCRIPTS = sorted(
  os.path.basename(p)[:-3]
  for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
  if os.path.basename(p)[:-3] not in SHARED_MODULES
)


def script_help(script: str) -> dict:
  """Imports a script, defines its flags, lists those whose help is missing or too short and keeps
  its --help text; the flags it added are deleted again (tests.scripts.defined_flags)."""
  module = importlib.import_module("experiments." + script)
  assert callable(getattr(module, "main", None)), "no main()"
  # Scripts define their flags when they run, not at import: on the global FLAGS (training
  # scripts, with the common flags), or on their own FlagValues (evaluation commands such as ppl).
  own = bool(inspect.signature(module.define_flags).parameters)
  if own:
    fv = flags.FlagValues()
    module.define_flags(fv)
    return _describe(fv, own=True)
  with scripts.defined_flags(module.define_flags) as fv:
    return _describe(fv, own=False)


def _describe(fv, *, own: bool) -> dict:
  bad = [
    f.name
    for m, fs in fv.flags_by_module_dict().items()
    if m.startswith("experiments.")
    for f in fs
    if len((f.help or "").strip()) < 15
  ]
  return {"undocumented": bad, "own": own, "help": fv.get_help(include_special_flags=False)}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_documents_every_flag(script):
  result = script_help(script)
  assert result["undocumented"] == [], f"flags without a real help string: {result['undocumented']}"
  help_text = result["help"]
  assert "--logdir" in help_text
  if not result["own"]:  # a training script: the common flags of experiments.flags
    for name in ("data_dir", "seed", "preset", "strategy", "precision", "max_steps"):
      assert f"--{name}" in help_text, name
