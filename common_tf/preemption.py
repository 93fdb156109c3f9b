"""SIGTERM / SIGINT as a request to stop at the next safe point (preemption of long runs).

A cluster scheduler (or Ctrl-C) sends SIGTERM / SIGINT. Python's defaults end the process at once
(SIGTERM) or raise `KeyboardInterrupt` wherever the main thread happens to be (SIGINT). Long loops
that can resume (the training loop of `experiments.harness`, the resumable likelihood evaluation of
`evaluation.likelihood`) instead note the signal, finish the unit of work in hand, save it, and
raise `Preempted`; the scripts print its one line and exit with 128 + the signal number.

    with preemption.deferred_signals() as request:
      for unit in work:
        do_and_save(unit)
        if request.signum is not None:
          raise preemption.Preempted(f"... {request.name} ...; rerun to resume", request.signum)

Only the first signal is deferred: the handlers in place before are reinstalled as soon as it
arrives, so a second Ctrl-C / SIGTERM acts as it would have (useful when the unit of work is long).
Python runs signal handlers between bytecodes of the main thread, so a signal that arrives during a
long TensorFlow call is seen when that call returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from typing import Iterator


class Preempted(RuntimeError):
  """SIGTERM/SIGINT arrived; the work done so far was saved. Rerun the command to resume."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


@dataclasses.dataclass
class StopRequest:
  """Which signal asked to stop (None until one arrives)."""
  signum: int | None = None

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum is not None else ""


@contextlib.contextmanager
def deferred_signals(signals=(signal.SIGTERM, signal.SIGINT)) -> Iterator[StopRequest]:
  """In the block the first of `signals` only sets `request.signum`; old handlers come back after.

  Outside the main thread (where Python cannot install handlers) the block runs unchanged and
  `request.signum` stays None.
  """
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request
    return
  previous = {}

  def restore():
    for s, h in previous.items():
      signal.signal(s, h)

  def handler(signum, frame):  # pylint: disable=unused-argument
    request.signum = signum
    restore()  # a second signal acts as it did before the block

  previous.update({s: signal.signal(s, handler) for s in signals})
  try:
    yield request
  finally:
    restore()
