"""experiments.ddpm_sample on a tiny checkpoint in the official TF1 format.

The script runs in a subprocess (its flags share names with experiments.sample_quality's, which
other tests define in-process); a driver registers a tiny official configuration first.
"""

import pytest
import json
import os
import subprocess
import sys

import numpy as np

from tests.diffusion_tf import test_official_checkpoint as official

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DRIVER = """
import sys
from diffusion_tf import diffusion, layers, official_checkpoint as oc
oc.OFFICIAL_CONFIGS["tiny"] = oc.OfficialConfig(
    unet=layers.UNetConfig(channels=32, channel_mult=(1, 2), num_res_blocks=1,
                           attention_resolutions=(4,), dropout=0.0, num_groups=32),
    image_size=8, variance=diffusion.Variance.FIXED_SMALL, num_timesteps=6)
from experiments import ddpm_sample, flags as common
ddpm_sample.define_flags()
common.run(ddpm_sample.main)
"""


@pytest.mark.slow
def test_samples_an_official_format_checkpoint(tmp_path):
  spec = official.official_spec()
  official.write_official_checkpoint(tmp_path / "ckpt", official.random_weights(spec, 0),
                                     official.random_weights(spec, 1), step=7)
  out = subprocess.run(
      [sys.executable, "-c", DRIVER, f"--official_checkpoint={tmp_path / 'ckpt'}", "--config=tiny",
       f"--output_dir={tmp_path / 'out'}", "--num_samples=4", "--sample_batch=2", "--ddim_steps=3"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  info = json.loads((tmp_path / "out" / "sample.json").read_text())
  assert info["checkpoint"].endswith("model.ckpt-7") and info["ema"] is True
  assert info["network_calls_per_sample"] == 3 and info["num_samples"] == 4
  images = np.load(tmp_path / "out" / "samples.npz")["images"]
  assert images.shape == (4, official.SIZE, official.SIZE, 3) and images.dtype == np.uint8
  assert (tmp_path / "out" / "samples.png").exists()
