"""Experiment scripts (one per published table), the shared training harness and data loaders."""
