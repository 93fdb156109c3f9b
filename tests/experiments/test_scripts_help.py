"""Every experiment script documents every flag in --help, and its --preset offers exactly its own
presets."""

import glob
import importlib
import inspect
import os

import pytest
from absl import flags

from experiments import flags as common  # noqa: F401  (the common flags every training script shares)
from experiments import nvae_train, priors_2d_train, sample_quality_train, vampprior_train
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
# {script: its presets}; a training script not named here has no --preset.
PRESETS = {
  "nvae_mnist": nvae_train.PRESETS,
  "nvae_table1": nvae_train.PRESETS,
  "nvae_table2": nvae_train.PRESETS,
  "priors_2d": priors_2d_train.PRESETS,
  "sample_quality": sample_quality_train.PRESETS,
  "vampprior": vampprior_train.PRESETS,
  "vampprior_table": vampprior_train.PRESETS,
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
    presets = list(fv["preset"].parser.enum_values) if "preset" in fv else None
    key_flags = {f.name for f in fv.get_key_flags_for_module(module.__name__)}
    return dict(_describe(fv, own=False), presets=presets, key_flags=key_flags)


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
    for name in ("data_dir", "seed", "strategy", "precision", "max_steps"):
      assert f"--{name}" in help_text, name
    # Its own --preset, or none; listed in its --help (absl shows the main module's key flags).
    want = list(PRESETS[script]) if script in PRESETS else None
    assert result["presets"] == want
    if want:
      assert f"--preset: <{'|'.join(want)}>" in help_text and "preset" in result["key_flags"]


def test_preset_flags_of_two_scripts_do_not_mix():
  """Defined one after the other in one process (as the tests do): each script's --preset takes its
  own names only, and is deleted with the script's other flags."""
  sample_quality = importlib.import_module("experiments.sample_quality")
  vampprior = importlib.import_module("experiments.vampprior")
  with scripts.defined_flags(sample_quality.define_flags) as fv:
    fv(["prog", "--preset=cpu"])
    assert fv.preset == "cpu"
  assert "preset" not in flags.FLAGS
  with scripts.defined_flags(vampprior.define_flags) as fv:
    with pytest.raises(flags.IllegalFlagValueError, match="--preset=cpu"):
      fv(["prog", "--preset=cpu"])
    fv.unparse_flags()
    fv(["prog", "--preset=paper"])
    assert fv.preset == "paper"
  assert "preset" not in flags.FLAGS


def test_define_preset_flag_takes_frozen_dataclass_presets_only():
  import dataclasses

  @dataclasses.dataclass
  class Mutable:
    epochs: int = 1

  @dataclasses.dataclass(frozen=True)
  class Frozen:
    epochs: int = 1

  for presets in ({"quick": Mutable()}, {"quick": Frozen}, {"quick": {"epochs": 1}}):
    with pytest.raises(TypeError, match="frozen dataclass instance"):
      common.define_preset_flag(presets, help="Which preset.")
  with pytest.raises(ValueError, match="default preset 'quick'"):
    common.define_preset_flag({"paper": Frozen()}, help="Which preset.")
  assert "preset" not in flags.FLAGS
