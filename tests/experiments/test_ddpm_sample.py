"""experiments.ddpm_sample on a tiny checkpoint in the official TF1 format.

The command line runs in this process (tests/scripts.py: its flags, main, the recorded command),
with a tiny official configuration registered and XLA off (compiling dominates otherwise). The
network is the smallest official one, a single level without attention outside the middle block:
tests/diffusion_tf/test_official_checkpoint.py checks the mapping of every official tensor kind;
here the CLI around it is under test.
"""

import functools
import json

import numpy as np
import pytest

from diffusion_tf import diffusion, layers
from diffusion_tf import official_checkpoint as oc
from tests import scripts
from tests.diffusion_tf import test_official_checkpoint as official

T = 6
CH_MULT, ATTN = (1,), ()  # one level: no down/upsampling, attention only in the middle block


@pytest.mark.slow
def test_samples_an_official_format_checkpoint(tmp_path, monkeypatch):
  spec = official.official_spec(CH_MULT, ATTN)
  official.write_official_checkpoint(
    tmp_path, official.random_weights(spec, 0), official.random_weights(spec, 1), step=7
  )
  monkeypatch.setitem(
    oc.OFFICIAL_CONFIGS,
    "tiny",
    oc.OfficialConfig(
      unet=layers.UNetConfig(
        channels=official.CH,
        channel_mult=CH_MULT,
        num_res_blocks=official.NUM_RES,
        attention_resolutions=ATTN,
        dropout=0.0,
        num_groups=32,
      ),
      image_size=official.SIZE,
      variance=diffusion.Variance.FIXED_SMALL,
      num_timesteps=T,
    ),
  )
  monkeypatch.setattr(
    oc, "build_official_ddpm", functools.partial(oc.build_official_ddpm, jit_sampling=False)
  )  # faster
  out = scripts.run_script(
    "ddpm_sample",
    [
      f"--official_checkpoint={tmp_path}",
      "--config=tiny",
      f"--output_dir={tmp_path / 'out'}",
      "--num_samples=4",
      "--sample_batch=2",
      "--ddim_steps=4",
      "--ddim_eta=0.5",
      "--ddim_clip_x0",
    ],
  )
  assert out.returncode == 0, out.stderr[-3000:]
  info = json.loads((tmp_path / "out" / "sample.json").read_text())
  assert info["checkpoint"].endswith("model.ckpt-7") and info["ema"] is True  # the folder's latest
  # uniform spacing: range(0, 6, 6 // 4) = 0 .. 5, six network calls for S = 4
  assert info["network_calls_per_sample"] == 6 and info["num_samples"] == 4
  assert info["ddim"] == {"steps": 4, "eta": 0.5, "spacing": "uniform", "clip_x0": True}
  assert (
    info["command"].startswith("python -m experiments.ddpm_sample ")
    and "--ddim_eta=0.5" in info["command"]
  )
  images = np.load(tmp_path / "out" / "samples.npz")["images"]
  assert images.shape == (4, official.SIZE, official.SIZE, 3) and images.dtype == np.uint8
  assert (tmp_path / "out" / "samples.png").exists()
