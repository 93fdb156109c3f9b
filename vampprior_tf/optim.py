"""AdamNormGrad (official utils/optimizer.py): Adam on per-tensor L2-normalised gradients."""

from __future__ import annotations

import tensorflow as tf

# Official utils/optimizer.py: grad = grad / (torch.norm(grad, 2) + 1.e-7).
NORM_GRAD_EPSILON = 1e-7


def normalize_gradients(grads, variables=None):
  """g <- g / (||g||_2 + 1e-7) for every parameter tensor separately; Keras Adam then runs on the
  normalised gradients (the official AdamNormGrad step; a harness `grad_transform`)."""
  del variables
  return [g / (tf.norm(g) + NORM_GRAD_EPSILON) for g in grads]
