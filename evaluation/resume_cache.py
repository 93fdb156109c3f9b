"""A resumable per-batch evaluation: the per-example results of the finished batches in one file.

Long evaluations (the test NLL at K = 1000-5000 importance samples, the DDPM bound's T = 1000 terms:
minutes per batch on a CPU) run batch by batch. `BatchCache` keeps what they computed so that a
rerun of the same command continues where an interrupted one stopped and gives its numbers:

    cache = BatchCache(path, key={"step": 7, "K": 1000}, rng_variables=model_seed_states)
    done = cache.restore()  # batches already in the file (0 without one)
    with cache.stop_requests() as stop:
      for i, x in enumerate(batches):
        if i < done:
          continue
        cache.stop_if_requested(stop, i)  # SIGTERM / SIGINT: raises Preempted before batch i
        cache.add(seconds=..., log_px=..., elbo=...)  # per-example arrays of batch i, then saved
    cache.complete()  # deletes the file, or keeps it (keep=True) so a rerun computes nothing
    cache.array("log_px")  # every batch's values, the restored ones first

What the file holds (one `.npz`, written to `<path>.tmp.npz` and renamed after every batch, so a
process killed at any point leaves the previous complete file): the key (JSON, compared as text),
the number of batches done, the caller's per-example arrays, the values of `rng_variables` (the
states of the random generators the evaluation consumes, e.g. a model's Keras `SeedGenerator`s, so
a resumed evaluation continues their streams), the wall time of the batches and {host: batches}.
A file with another key, or another number of generator states, is ignored and replaced. With a
path, the first SIGTERM / SIGINT lets the batch in hand finish and be written, then
`stop_if_requested` raises `common_tf.preemption.Preempted` (a second signal ends the process at
once, `common_tf.preemption.deferred_signals`). Without a path nothing is written and signals keep
their usual effect.

Used by `evaluation.likelihood.evaluate_log_likelihood` (files `nll_partial*.npz`, deleted on
completion) and `experiments.sample_quality_train.vlb_nats` (`vlb_clip*.npz`, kept).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from common_tf import host, preemption

# The host of batches read from a resume file written before hosts were recorded (2026-12-02).
UNRECORDED_HOST = "host not recorded (resume files of before 2026-12-02)"
# The entries of a file that are not per-example arrays (besides the generator states `rng_<i>`).
_BOOKKEEPING = frozenset({"key", "batches_done", "num_rng", "seconds", "hosts"})


def _read_hosts(f, batches_done: int) -> dict[str, int]:
  """{host: batches} of an open resume file."""
  if "hosts" in f.files:
    return json.loads(str(f["hosts"]))
  return {UNRECORDED_HOST: batches_done} if batches_done else {}


def resume_file_hosts(path: str) -> list[str]:
  """The hosts that computed the batches of a resume file, in the order they first worked on it."""
  with np.load(path) as f:
    return list(_read_hosts(f, int(f["batches_done"]) if "batches_done" in f.files else 0))


class BatchCache:
  """The per-example results of an evaluation's finished batches, kept in `path` (module doc).

  key: JSON-able description of the evaluation (checkpoint, K, data, seed...); a file is used only
    when its key is the same.
  rng_variables: variables holding random-generator states (saved after every batch, restored).
  keep: keep the file when the evaluation completes (a rerun then computes nothing); else delete it.
  what: the evaluation's name in the messages ("the likelihood evaluation").
  writer: whether this process writes and deletes the file (under several workers only the chief
    does; every worker reads it).
  examples_per_batch: for files that do not record their number of batches (the DDPM bound's of
    before 2026-12-05: key and values only), that number is ceil(examples / examples_per_batch).
  """

  def __init__(
    self,
    path: str | None,
    *,
    key: Any,
    rng_variables: Iterable = (),
    keep: bool = False,
    what: str = "the evaluation",
    examples_per_batch: int | None = None,
    writer: bool = True,
  ):
    self.path = path
    self.key = json.dumps(key, sort_keys=True, default=str)
    self.rng_variables = list(rng_variables)
    self.keep = keep
    self.what = what
    self.examples_per_batch = examples_per_batch
    self.writer = writer
    self.batches_done = 0  # batches restored + added
    self.seconds = 0.0  # wall time of those batches, over resumed calls too
    self.hosts: dict[str, int] = {}  # {host (`common_tf.host.cpu_model`): batches it computed}
    self._arrays: dict[str, list[np.ndarray]] = {}

  def restore(self, total_batches: int | None = None) -> int:
    """Reads the file if it holds this evaluation (same key): its arrays, time and hosts, and sets
    `rng_variables` to the saved states. Returns the number of batches done (0 without a usable
    file). `total_batches` (if known) goes into the message only."""
    if self.path is None or not os.path.exists(self.path):
      return 0
    with np.load(self.path) as f:
      done = self._batches_in(f)
      if str(f["key"]) != self.key or done is None:
        print(f"warning: {self.path} belongs to another evaluation; starting afresh")
        return 0
      self._arrays = {n: [f[n]] for n in self._example_names(f)}
      self.batches_done = done
      self.seconds = float(f["seconds"]) if "seconds" in f.files else 0.0  # before 2026-12-01
      self.hosts = _read_hosts(f, done)
      for i, v in enumerate(self.rng_variables):
        v.assign(f[f"rng_{i}"])
    left = (
      f", {total_batches - done} to go" if total_batches is not None and total_batches > 0 else ""
    )
    print(
      f"Resumed {self.what} from {self.path}: {done} batches ({self.num_examples} examples) "
      f"done{left}"
    )
    return done

  def _batches_in(self, f) -> int | None:
    """Batches done in an open file; None if its generator states do not fit `rng_variables`."""
    if (int(f["num_rng"]) if "num_rng" in f.files else 0) != len(self.rng_variables):
      return None
    if "batches_done" in f.files:
      return int(f["batches_done"])
    names = self._example_names(f)
    if self.examples_per_batch is None or not names:
      return None
    return math.ceil(len(f[names[0]]) / self.examples_per_batch)

  @staticmethod
  def _example_names(f) -> list[str]:
    """The names of the per-example arrays of an open file (every entry but the bookkeeping)."""
    return [n for n in f.files if n not in _BOOKKEEPING and not n.startswith("rng_")]

  def stop_requests(self):
    """With a path: `common_tf.preemption.deferred_signals()` (the first SIGTERM / SIGINT is
    noted, not acted on); without one: a request that never comes."""
    if self.path is None:
      return contextlib.nullcontext(preemption.StopRequest())
    return preemption.deferred_signals()

  def stop_if_requested(self, request: preemption.StopRequest, index: int) -> None:
    """Raises `Preempted` if a signal came; the batches before `index` are in the file."""
    if request.signum is not None:
      raise preemption.Preempted(
        f"preempted by {request.name} after {index} batches of {self.what} "
        f"({self.num_examples} examples): saved to {self.path}; rerun the same command to resume",
        request.signum,
      )

  def add(self, *, seconds: float = 0.0, **per_example: np.ndarray) -> None:
    """Appends one batch's per-example arrays (the same names every batch), counts it for this
    host, and writes the file atomically (with a path)."""
    clash = [n for n in per_example if n in _BOOKKEEPING or n.startswith("rng_")]
    if clash:
      raise ValueError(f"{clash}: names the resume file uses itself")
    for name, values in per_example.items():
      self._arrays.setdefault(name, []).append(np.asarray(values))
    self.batches_done += 1
    self.seconds += seconds
    this_host = host.cpu_model()
    self.hosts[this_host] = self.hosts.get(this_host, 0) + 1
    self._arrays = {n: [np.concatenate(a)] for n, a in self._arrays.items()}
    if self.path is None or not self.writer:
      return
    tmp = self.path + ".tmp.npz"
    np.savez(
      tmp,
      key=self.key,
      batches_done=self.batches_done,
      num_rng=len(self.rng_variables),
      seconds=self.seconds,
      hosts=json.dumps(self.hosts),
      **{n: a[0] for n, a in self._arrays.items()},
      **{f"rng_{j}": v.numpy() for j, v in enumerate(self.rng_variables)},
    )
    os.replace(tmp, self.path)

  def array(self, name: str) -> np.ndarray:
    """Every finished batch's values of `name`, in batch order (empty before the first)."""
    parts = self._arrays.get(name, [])
    return np.concatenate(parts) if parts else np.zeros([0])

  @property
  def num_examples(self) -> int:
    """Examples in the finished batches."""
    return sum(len(a) for a in next(iter(self._arrays.values()), []))

  def complete(self) -> None:
    """The evaluation is done: deletes the file, unless `keep`."""
    if self.path is not None and self.writer and not self.keep and os.path.exists(self.path):
      os.remove(self.path)
