"""common_tf.host: the CPU description the pages record, and the host allocator the scripts use."""

import os
import subprocess
import sys

import pytest

from common_tf import host

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# In a fresh process: import a package, run one op, say whether TensorFlow's host allocator keeps
# statistics (only its BFC allocator does; malloc's raises "Allocator stats not available"), and
# the variable as the import left it.
PROBE = """
import os, {package}, tensorflow as tf
tf.zeros([256, 256]).numpy()
try:
  tf.config.experimental.get_memory_info("CPU:0")
  allocator = "bfc"
except ValueError:
  allocator = "malloc"
print(allocator, os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"))
"""


def allocator_after_import(package: str, env_value: str | None) -> tuple[str, str]:
  env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
  if env_value is not None:
    env["TF_CPU_ALLOCATOR_USE_BFC"] = env_value
  out = subprocess.run(
    [sys.executable, "-c", PROBE.format(package=package)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=True,
  )
  allocator, variable = out.stdout.split()[-2:]
  return allocator, variable


def test_scripts_and_the_evaluation_cli_use_the_bfc_host_allocator_unless_told_otherwise():
  assert allocator_after_import("experiments", None) == ("bfc", "true")
  assert allocator_after_import("evaluation", None) == ("bfc", "true")
  # The user's setting stands. (What TensorFlow then uses depends on the host: malloc on the AVX2
  # "AMD EPYC", an allocator with statistics on an AVX-512 Xeon, so only the variable is checked.)
  assert allocator_after_import("experiments", "false")[1] == "false"


def test_merge_keeps_first_appearances_once():
  assert host.merge_in_order(["a", "b"], [None, "b", "c", ""], ["a"]) == ["a", "b", "c"]


def test_peak_rss_is_the_kernels_high_water_mark():
  """host.peak_rss_gib (getrusage) against /proc/self/status VmHWM, read independently."""
  block = bytearray(64 * 2**20)  # touch 64 MiB so the peak is well above the interpreter's
  block[::4096] = b"x" * len(block[::4096])
  with open("/proc/self/status") as f:
    vm_hwm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
  assert host.peak_rss_gib() == pytest.approx(vm_hwm_kib / 2**20, rel=0.02)
