"""SIGTERM / SIGINT deferred to the next safe point of a long loop (`common_tf.preemption`)."""

import os
import signal

import pytest

from common_tf import preemption


def test_only_the_first_signal_is_deferred():
  # A script's SIGINT handler (Python's default); under pytest-xdist the worker process may hold
  # another when this test starts, and "as before the block" would then not raise.
  before = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C stops a long batch at once
      with preemption.deferred_signals() as request:
        os.kill(os.getpid(), signal.SIGINT)
        assert request.signum == signal.SIGINT and request.name == "SIGINT"
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # the handler runs between bytecodes
          pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, before)


CHILD = """
import sys
import tensorflow as tf
from common_tf import preemption

@tf.function
def spin(n):  # one long call into TensorFlow's C++ runtime: Python runs no handler until it returns
  return tf.while_loop(lambda i, x: i < n, lambda i, x: (i + 1, tf.tanh(x @ x)),
                       (tf.constant(0), tf.eye(32) * 0.5))[1]

spin(tf.constant(2))  # traced before the block
with preemption.deferred_signals() as request:
  print("ready", flush=True)
  spin(tf.constant(int(sys.argv[1])))
print("returned", request.signum, flush=True)
"""


def run_child(iterations: int, signals: int) -> tuple[int, str, float]:
  """The child's exit code, output and seconds from the first signal to its exit."""
  import subprocess
  import sys
  import time

  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  child = subprocess.Popen(
    [sys.executable, "-c", CHILD, str(iterations)],
    cwd=root,
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
  )
  try:
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # inside the long call
    start = time.perf_counter()
    for _ in range(signals):
      child.send_signal(signal.SIGTERM)
      time.sleep(0.5)
    code = child.wait(timeout=60)
    return code, child.stdout.read(), time.perf_counter() - start
  finally:
    child.kill()


def test_a_second_sigterm_stops_a_long_tensorflow_call_at_once():
  """The first SIGTERM waits for the call in hand (it returns; the loop would then save and stop);
  a second one during the same call ends the process at once with 128 + 15 (until 2026-12-02 it
  waited for the call too: an NVAE test-NLL batch, minutes). 10^8 iterations: far more than a
  minute on these CPUs."""
  code, out, seconds = run_child(10**8, signals=2)
  assert code == 128 + signal.SIGTERM and "returned" not in out and seconds < 10, (
    code,
    out,
    seconds,
  )
  code, out, _ = run_child(2 * 10**5, signals=1)  # ~1 s of work after the signal, then returns
  assert code == 0 and out.split() == ["returned", str(int(signal.SIGTERM))], (code, out)
