"""What the CPU's vector instructions alone are worth here: AVX-512 vs AVX2 on one host.

The hosts this suite runs on differ by about 4x (AVX-512 vs AVX2 machines). TensorFlow's pip wheel
compiles its own kernels (Eigen) for one baseline; only oneDNN (convolutions, matrix products)
chooses AVX-512 at run time, and `ONEDNN_MAX_CPU_ISA=AVX2` caps it. So one run on an AVX-512 host
measures how much of the difference is the instruction set, and how much is the host:

  python bench/bench_isa.py                          # NVAE quick training + a slice of the tests
  python bench/bench_isa.py --workloads=nvae --steps=20

Every workload runs in a fresh process per setting (oneDNN reads the cap once, at start-up); the
ISA oneDNN reports (`ONEDNN_VERBOSE`) is printed beside it, and the ratios are formed from numbers
measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {"default": None, "AVX2": "AVX2"}
_PROBE = (
  "import tensorflow as tf; tf.nn.conv2d(tf.ones([1, 8, 8, 4]), tf.ones([3, 3, 4, 4]), 1, 'SAME')"
)


def _env(isa: str | None, **extra: str) -> dict[str, str]:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, **extra)
  env.pop("ONEDNN_MAX_CPU_ISA", None)
  if isa is not None:
    env["ONEDNN_MAX_CPU_ISA"] = isa
  return env


def onednn_isa(isa: str | None) -> str:
  """The instruction set oneDNN reports it uses under this setting."""
  out = subprocess.run(
    [sys.executable, "-c", _PROBE],
    env=_env(isa, ONEDNN_VERBOSE="1"),
    capture_output=True,
    text=True,
    check=True,
  )
  match = re.search(r"info,cpu,isa:(.*)", out.stdout + out.stderr)
  return match.group(1).strip() if match else "not reported"


def nvae_examples_per_s(isa: str | None, steps: int) -> float:
  """examples/s of the NVAE quick preset's harness train step (bench_nvae.py, float32, XLA off)."""
  cmd = [
    sys.executable,
    os.path.join(ROOT, "bench", "bench_nvae.py"),
    "--configs=quick",
    f"--steps={steps}",
    "--xla=off",
    "--precisions=float32",
  ]
  out = subprocess.run(cmd, env=_env(isa), capture_output=True, text=True, check=True).stdout
  row = next(line for line in out.splitlines() if re.match(r"quick\s+\d+\s", line))
  return float(row.split()[4])  # config, batch, xla, precision, examples/s, wall s


def tests_seconds(isa: str | None, paths: list[str]) -> float:
  """Wall seconds of `pytest <paths>` in one process."""
  start = time.perf_counter()
  subprocess.run(
    [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider"],
    env=_env(isa),
    cwd=ROOT,
    capture_output=True,
    check=True,
  )
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workloads", default="nvae,tests", help="comma list of: nvae, tests")
  parser.add_argument(
    "--steps", type=int, default=20, help="NVAE: timed steps (after as many to trace)"
  )
  parser.add_argument(
    "--tests",
    default="tests/nvae_tf/test_layers.py,tests/vampprior_tf,tests/diffusion_tf/test_diffusion.py",
    help="comma list of test paths for the 'tests' workload",
  )
  args = parser.parse_args()
  workloads = args.workloads.split(",")
  unknown = set(workloads) - {"nvae", "tests"}
  if unknown:
    parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")

  cpu = (
    subprocess.run(
      ["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True
    ).stdout.strip()
    or "unknown"
  )
  print(f"CPU: {cpu}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
  results: dict[str, dict[str, float]] = {}
  for name, isa in SETTINGS.items():
    print(f"{name:8s} oneDNN ISA: {onednn_isa(isa)}")
    results[name] = {}
    if "nvae" in workloads:
      results[name]["nvae examples/s"] = nvae_examples_per_s(isa, args.steps)
    if "tests" in workloads:
      results[name]["tests wall s"] = tests_seconds(isa, args.tests.split(","))
  print(f"{'measure':18s} {'default':>10s} {'AVX2':>10s} {'AVX2 / default':>15s}")
  for measure in results["default"]:
    a, b = results["default"][measure], results["AVX2"][measure]
    print(f"{measure:18s} {a:10.1f} {b:10.1f} {b / a:15.2f}")


if __name__ == "__main__":
  main()
