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

Only the first signal is deferred. Python runs signal handlers between bytecodes of the main
thread, so a signal that arrives during a long TensorFlow call (an NVAE test-NLL batch: minutes) is
seen when that call returns; the first one is meant to wait for it. A second one stops the process
at once, also in the middle of such a call: Python's C-level handler writes every signal number to
the wakeup file descriptor (`signal.set_wakeup_fd`) whatever the main thread is doing, and a
watcher thread that reads it ends the process with `os._exit(128 + signal)` on the second. Nothing
saved is lost:
checkpoints and resume files are written atomically, and the interrupted unit is done again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Iterator


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
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  watched = {int(s) for s in signals}
  watching = []  # [the wakeup fd in place before the block] while the watcher runs

  def restore():
    """Handlers and wakeup fd as before the block; ends the watcher (main thread only)."""
    if watching:
      signal.set_wakeup_fd(watching.pop())
      os.write(write_fd, b"\0")
    for s, h in previous.items():
      signal.signal(s, h)

  def handler(signum, frame):
    request.signum = signum
    restore()  # handled between two units of work: a second signal acts as before the block

  def watch():  # sees each signal as it arrives, even while the main thread is inside a C call
    seen = 0
    while True:
      data = os.read(read_fd, 64)
      if not data or 0 in data:  # `restore` ran
        return
      for signum in data:
        seen += signum in watched
        if seen == 2:  # the first is still pending behind a long C call: stop now
          os._exit(128 + signum)

  previous.update({s: signal.signal(s, handler) for s in signals})
  watching.append(signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False))
  watcher = threading.Thread(target=watch, name="second-signal-watcher", daemon=True)
  watcher.start()
  try:
    yield request
  finally:
    restore()
    watcher.join()
    os.close(read_fd)
    os.close(write_fd)
