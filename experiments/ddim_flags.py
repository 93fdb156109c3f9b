"""The DDIM sampler flags, defined once for every script that samples a DDPM with DDIM
(experiments.sample_quality, experiments.ddpm_sample), and the frozen settings they resolve to.

A script calls `define_ddim_flags()` in its `define_flags()` and `DDIMSettings.from_flags(FLAGS)`
once in `main`; helpers receive the `DDIMSettings`.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from diffusion_tf import diffusion as diffusion_lib

DEFAULT_STEPS = (
  50  # one of the DDIM paper's budgets (Song et al. 2021, Table 1: S = 10, 20, 50, 100)
)


@dataclasses.dataclass(frozen=True)
class DDIMSettings:
  """DDIM sampling (Song et al. 2021, eq. 12) over S respaced steps.

  steps: S; spacing: how the S timesteps are laid out (`diffusion_lib.DDIM_SPACINGS`); eta: 0 is
  deterministic, 1 gives DDPM-like variances; clip_x0: clip the x0 prediction to [-1, 1]
  (diffusers' clip_sample; the official DDIM sampler does not).
  """

  steps: int = DEFAULT_STEPS
  eta: float = 0.0
  spacing: str = "uniform"
  clip_x0: bool = False

  @classmethod
  def from_flags(cls, flag_values: flags.FlagValues) -> DDIMSettings:
    """The settings from the flags `define_ddim_flags` defined (call once, in `main`)."""
    return cls(
      steps=flag_values.ddim_steps,
      eta=flag_values.ddim_eta,
      spacing=flag_values.ddim_spacing,
      clip_x0=flag_values.ddim_clip_x0,
    )

  def clamped(self, num_timesteps: int) -> DDIMSettings:
    """At most T steps (S > T is meaningless; sample_quality's smoke runs use a small T)."""
    return dataclasses.replace(self, steps=min(self.steps, num_timesteps))

  def sampler_kwargs(self) -> dict:
    """Keyword arguments of `diffusion_tf.model.DDPM.sample_ddim`."""
    return dict(
      num_steps=self.steps, eta=self.eta, spacing=self.spacing, clip_denoised=self.clip_x0
    )

  def network_calls(self, diffusion: diffusion_lib.GaussianDiffusion) -> int:
    """Steps actually taken: `uniform` takes more than S when T // S does not divide T."""
    return len(diffusion.ddim_timesteps(self.steps, spacing=self.spacing))


def define_ddim_flags():
  """--ddim_steps, --ddim_eta, --ddim_spacing, --ddim_clip_x0 (defaults: the official DDIM sampler)."""
  defaults = DDIMSettings()
  flags.DEFINE_integer("ddim_steps", defaults.steps, "DDIM respaced steps S.", lower_bound=1)
  flags.DEFINE_float(
    "ddim_eta",
    defaults.eta,
    "DDIM eta (0: deterministic; 1: DDPM-like variances).",
    lower_bound=0.0,
  )
  flags.DEFINE_enum(
    "ddim_spacing",
    defaults.spacing,
    list(diffusion_lib.DDIM_SPACINGS),
    "DDIM timesteps: uniform = official DDIM range(0, T, T // S) (more than S steps "
    "when T // S does not divide T); quad = official DDIM skip_type 'quad', "
    "int(linspace(0, sqrt(0.8 T), S)^2), S steps from 0 to 0.8 T dense near the "
    "data (early steps may repeat, as in the official list); leading / trailing / "
    "linspace = diffusers' timestep_spacing options (see docs/diffusion.md).",
  )
  flags.DEFINE_bool(
    "ddim_clip_x0",
    defaults.clip_x0,
    "Clip DDIM's x0 prediction to [-1, 1] "
    "(diffusers' clip_sample); the official DDIM sampler does not.",
  )
