"""Experiment scripts (one per published table), the shared training harness and data loaders."""

from common_tf import host as _host

_host.prefer_bfc_cpu_allocator()  # before any TensorFlow op of a script (common_tf/host.py)
_host.mute_tensorflow_start_up()  # a bad flag is one `error:` line on stderr, not TF's logs first
