"""--ddim_spacing accepts the official DDIM "quad" spacing and says what it is in --help."""

from experiments import ddim_flags
from tests import scripts


def test_quad_spacing_flag_parses_and_is_explained_in_help():
  with scripts.defined_flags(ddim_flags.define_ddim_flags) as fv:
    fv(["prog", "--ddim_spacing=quad", "--ddim_steps=10"])
    settings = ddim_flags.DDIMSettings.from_flags(fv)
    help_text = fv["ddim_spacing"].help
  assert settings == ddim_flags.DDIMSettings(steps=10, spacing="quad")
  assert "quad = official DDIM skip_type 'quad', int(linspace(0, sqrt(0.8 T), S)^2)" in help_text
