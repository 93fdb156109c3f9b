"""Test-session setup: two logical CPU devices (for MirroredStrategy tests) and the offline data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
if "GENMODELS_DATA_DIR" not in os.environ and os.path.isdir(_SHARED_DATA):
  os.environ["GENMODELS_DATA_DIR"] = _SHARED_DATA

import tensorflow as tf  # pylint: disable=g-import-not-at-top

# Must run before TensorFlow initialises its devices, hence here, at collection time.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
