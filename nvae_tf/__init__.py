"""NVAE (Vahdat & Kautz, NeurIPS 2020) in TF2 / Keras 3, following NVlabs/NVAE's MNIST configuration.

Modules: `distributions` (soft-clamped Normal, residual posterior, KL), `spectral` (the one power
iteration serving spectral regularisation and spectral normalisation), `layers` (cells), `model`
(the `NVAE` Keras model and its config), `losses` (KL warm-up, KL balancing), `optim` (Adamax with
the official coupled L2 decay, learning-rate warm-up + cosine).
"""

from nvae_tf.losses import WarmupClock
from nvae_tf.model import NVAE, NVAEConfig, NVAEOutput, Spectral, SpectralScope, groups_per_scale

__all__ = [
  "NVAE",
  "NVAEConfig",
  "NVAEOutput",
  "Spectral",
  "SpectralScope",
  "WarmupClock",
  "groups_per_scale",
]
