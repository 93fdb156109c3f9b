"""Experiment scripts (one per published table), the shared training harness and data loaders."""

import os as _os

from common_tf import host as _host

if "TF_CONFIG" in _os.environ:
  # A worker of a multi-worker cluster: when a peer is lost, TensorFlow's collectives log their
  # abort as C++ ERROR lines on every survivor; the harness reports it as one line instead
  # (`harness.WorkerLost`). Set TF_CPP_MIN_LOG_LEVEL yourself to see them.
  _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_host.prefer_bfc_cpu_allocator()  # before any TensorFlow op of a script (common_tf/host.py)
_host.mute_tensorflow_start_up()  # a bad flag is one `error:` line on stderr, not TF's logs first
