"""bench/bench_nvae_official.py writes the cpu preset's architecture out in the official argument
names (its official-side process must not import TensorFlow); they must stay the preset's."""

import importlib.util
import os

from experiments import nvae_train

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "bench_nvae_official.py")


def _bench():
  spec = importlib.util.spec_from_file_location("bench_nvae_official", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_cpu_preset_args_match_the_preset():
  bench = _bench()
  bench.check_preset_args(nvae_train.PRESETS[bench.PRESET].model)  # raises SystemExit if not
  assert bench.BATCH == nvae_train.PRESETS[bench.PRESET].batch_size
  assert bench.EPOCHS == nvae_train.PRESETS[bench.PRESET].epochs
