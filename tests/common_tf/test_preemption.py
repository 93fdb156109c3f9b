"""SIGTERM / SIGINT deferred to the next safe point of a long loop (`common_tf.preemption`)."""

import os
import signal

import pytest

from common_tf import preemption


def test_only_the_first_signal_is_deferred():
  with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C stops a long batch at once
    with preemption.deferred_signals() as request:
      os.kill(os.getpid(), signal.SIGINT)
      assert request.signum == signal.SIGINT and request.name == "SIGINT"
      os.kill(os.getpid(), signal.SIGINT)
      for _ in range(100):  # the handler runs between bytecodes
        pass
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
