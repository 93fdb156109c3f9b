"""Test-session setup: two logical CPU devices (for MirroredStrategy tests) and the offline data."""

import functools
import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_SHARED_DATA = os.path.abspath(
  os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
)
if "GENMODELS_DATA_DIR" not in os.environ and os.path.isdir(_SHARED_DATA):
  os.environ["GENMODELS_DATA_DIR"] = _SHARED_DATA

from common_tf import host

host.prefer_bfc_cpu_allocator()  # TensorFlow's BFC host allocator, as the scripts use

import tensorflow as tf

# Must run before TensorFlow initialises its devices, hence here, at collection time.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
  _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

# One TensorFlow thread pool per core: pytest-xdist runs several worker processes, and pools as
# wide as the machine in each of them spin-wait for each other (whole suite, 2 workers on 2 cores:
# 261 s -> 211 s with 1 intra-op thread per worker).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
  tf.config.threading.set_intra_op_parallelism_threads(max(1, (os.cpu_count() or 1) // _WORKERS))

# Grappler (TF's graph optimiser) off: the tests check what graphs compute, and optimising every
# traced train step, sampler and estimator is a large part of their time (an HVAE end-to-end test:
# 29 s -> 15 s on a loaded 2-core host). Runs and bench/ keep the default. GENMODELS_TEST_GRAPPLER=1
# runs the suite with it.
if os.environ.get("GENMODELS_TEST_GRAPPLER") != "1":
  tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


@functools.cache
def two_cpu_strategy() -> tf.distribute.MirroredStrategy:
  """THE MirroredStrategy over the two logical CPUs, shared by every test of the session: two
  strategies on the same devices in one process collide in their collective instance keys."""
  devices = tf.config.list_logical_devices("CPU")
  assert len(devices) >= 2, "conftest must create two logical CPUs"
  return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


def pytest_collection_modifyitems(config, items):
  """Files holding a test marked `slow` are collected first, the rest keep their order.

  pytest-xdist (`--dist loadfile`) hands whole files to its workers in collection order; a long
  file handed out last keeps one worker busy while the other has nothing left (measured: one
  worker had no file left at 180 s while the other ran test_distributed.py from 188 s to 216 s).
  Longest first is the usual fix for that.
  """
  slow_files = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in slow_files)  # stable: ties keep their order


def pytest_collection_finish(session):
  """Python's cyclic GC, tuned for a process that builds and traces hundreds of models.

  After collection TensorFlow, Keras and every test module are imported (PyTorch only later, by
  the reference tier): `gc.freeze()` moves those objects out of the collector's generations, so a
  collection no longer scans them, and a higher first threshold runs collections less often while
  tracing allocates millions of short-lived objects. Garbage cycles are still collected, later.
  Whole suite, 2 workers, background paused, time inside the collector read with `gc.callbacks`:
  22.7 s -> 10.9 s summed over both workers (~3 % of the suite's CPU time; whole-suite wall times,
  184-197 s either way, differ by less than their run-to-run spread).
  """
  gc.collect()
  gc.freeze()
  gc.set_threshold(100_000, 50, 1000)
