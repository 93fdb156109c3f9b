"""Timing ours against the code users would otherwise run, as every peer bench prints it.

Each side runs in a child process of its own (TensorFlow and PyTorch in one process can crash
each other's native libraries), both pinned to the same cores with the same thread counts; the
parent makes them run alternately (A B A B ...: a slow phase of a shared host hits both) and
each round is timed in wall time and in the child's CPU time. The ratio printed is ours / peer
of the median per-step time: below 1 means ours is faster.

A side is a function returning a no-argument step function; it is called in the child after the
child is pinned (`pin`: before TensorFlow or PyTorch is imported, so the threads they create
inherit the affinity and TensorFlow reads its thread counts from the environment).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common_tf import host  # noqa: E402  (stdlib only)


def pin(cores: list[int] | None, threads: int) -> None:
  """Restricts this process to `cores` (None: as it is) and sets TensorFlow's intra- and
  inter-op thread counts to `threads`, via the environment, before TensorFlow is imported."""
  if "tensorflow" in sys.modules:
    raise RuntimeError("bench.peer.pin must run before TensorFlow is imported")
  if cores:
    os.sched_setaffinity(0, cores)
  os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
  os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def header(threads: int) -> str:
  """One line: CPU model, the cores this process may run on, thread counts, load average."""
  torch = sys.modules.get("torch")
  torch_threads = f", torch threads {torch.get_num_threads()}" if torch is not None else ""
  return (
    f"CPU: {host.cpu_model()}; affinity {sorted(os.sched_getaffinity(0))} "
    f"({len(os.sched_getaffinity(0))} of {os.cpu_count()} cores); TensorFlow intra/inter-op "
    f"threads {threads}/{threads}{torch_threads}; load average {os.getloadavg()[0]:.1f}"
  )


@dataclasses.dataclass
class Timing:
  """Per-step seconds of each timed round."""

  wall: list[float] = dataclasses.field(default_factory=list)
  cpu: list[float] = dataclasses.field(default_factory=list)

  def median_ms(self) -> tuple[float, float]:
    return 1e3 * statistics.median(self.wall), 1e3 * statistics.median(self.cpu)


def _serve(conn, factory, args, cores, threads):
  """Child process: pin, build the side's step, then run `n` steps per request, replying with
  (wall, CPU) seconds per step; None ends it."""
  pin(cores, threads)
  step = factory(*args)
  conn.send(header(threads))
  while (n := conn.recv()) is not None:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
      step()
    conn.send(((time.perf_counter() - wall) / n, (time.process_time() - cpu) / n))


def alternate(
  sides: dict[str, tuple[Callable, tuple]],
  *,
  cores: list[int] | None,
  threads: int,
  steps: int,
  rounds: int,
  warmup: int,
) -> dict[str, Timing]:
  """Starts one child per side (`{name: (factory, args)}`), runs each side's step `warmup` times
  (compilation, allocator), then `rounds` rounds of `steps` steps per side, the sides
  alternating; returns the per-step times of every round. Prints each child's `header`."""
  context = multiprocessing.get_context("spawn")
  children = {}
  try:
    for name, (factory, args) in sides.items():
      parent, child = context.Pipe()
      process = context.Process(
        target=_serve, args=(child, factory, args, cores, threads), daemon=True
      )
      process.start()
      children[name] = (process, parent)
      print(f"  {name}: {parent.recv()}", flush=True)  # built: its host line
    for _, conn in children.values():
      conn.send(warmup)
      conn.recv()
    timings = {name: Timing() for name in sides}
    for _ in range(rounds):
      for name, (_, conn) in children.items():
        conn.send(steps)
        wall, cpu = conn.recv()
        timings[name].wall.append(wall)
        timings[name].cpu.append(cpu)
    return timings
  finally:
    for process, conn in children.values():
      if process.is_alive():
        conn.send(None)
        process.join(timeout=30)


def op_time_by_kind(step: Callable, kind: Callable[[str, str], str], *, calls: int) -> dict:
  """`calls` calls of `step` (already traced and warmed up) under the TensorFlow profiler:
  {kind: share of the traced op time}, `kind(op name, op type)` naming each op's kind, largest
  first. The step's own spans and the executor's are left out, so the shares are of single ops."""
  import collections
  import glob
  import tempfile

  import tensorflow as tf
  from tensorflow.tsl.profiler.protobuf import xplane_pb2

  logdir = tempfile.mkdtemp()
  tf.profiler.experimental.start(logdir)
  for _ in range(calls):
    step()
  tf.profiler.experimental.stop()
  space = xplane_pb2.XSpace()
  with open(sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1], "rb") as f:
    space.ParseFromString(f.read())
  kinds = collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      for event in line.events:
        label = plane.event_metadata[event.metadata_id].name
        if ":" not in label or "::" in label or label.startswith(("__inference", "Eager")):
          continue  # the step's and the executor's own spans, not single ops
        name, op_type = label.rsplit(":", 1)
        kinds[kind(name, op_type)] += event.duration_ps
  total = sum(kinds.values())
  return {k: ps / total for k, ps in kinds.most_common()}


def report(title: str, timings: dict[str, Timing], *, ours: str, peer: str) -> str:
  """Lines: each side's median wall and CPU ms per step (with the rounds' range), then the
  ratios ours / peer."""
  lines = [title]
  for name, t in timings.items():
    wall, cpu = t.median_ms()
    lines.append(
      f"  {name:34s} wall {wall:8.1f} ms/step ({1e3 * min(t.wall):.1f}-"
      f"{1e3 * max(t.wall):.1f})   CPU {cpu:8.1f} ms/step ({1e3 * min(t.cpu):.1f}-"
      f"{1e3 * max(t.cpu):.1f})"
    )
  (ow, oc), (pw, pc) = timings[ours].median_ms(), timings[peer].median_ms()
  lines.append(f"  ours / peer: wall {ow / pw:.2f}x, CPU {oc / pc:.2f}x")
  return "\n".join(lines)


def add_timing_flags(
  parser: argparse.ArgumentParser, *, steps: int, rounds: int, warmup: int
) -> None:
  """The flags every peer bench takes: --cores, --threads, --steps, --rounds, --warmup."""
  parser.add_argument(
    "--cores",
    default="0",
    help="cores to pin both sides to, e.g. 0 or 0,1; 'all' leaves the affinity as it is",
  )
  parser.add_argument(
    "--threads",
    type=int,
    default=1,
    help="threads of each side (TensorFlow intra/inter-op, torch.set_num_threads)",
  )
  parser.add_argument("--steps", type=int, default=steps, help="steps per timed round")
  parser.add_argument(
    "--rounds", type=int, default=rounds, help="timed rounds per side (alternating)"
  )
  parser.add_argument("--warmup", type=int, default=warmup, help="untimed steps per side first")


def cores_from(args: argparse.Namespace) -> list[int] | None:
  """--cores as a list of core numbers (None for 'all': the affinity as it is)."""
  return None if args.cores == "all" else [int(c) for c in args.cores.split(",")]
