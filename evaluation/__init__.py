"""Evaluation metrics of the suite: likelihood (IWAE), FID, KID, IS, precision/recall, PPL."""

from common_tf import host as _host

_host.prefer_bfc_cpu_allocator()  # before any TensorFlow op of the CLI (common_tf/host.py)
