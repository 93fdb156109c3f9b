"""Densities used by the diffusion_tf models (nats, elementwise unless stated).

Facts from the official DDPM code (hojonathanho/diffusion, diffusion_utils_2.py / utils.py):
the KL between diagonal Gaussians in mean/log-variance form, and the discretized Gaussian decoder
for 8-bit data rescaled to [-1, 1] (bins of width 2/255, open-ended edge bins).
"""

from __future__ import annotations

import math

import tensorflow as tf

from common_tf import random as common_random

# Official DDPM utils.py: 8-bit data in [-1, 1] have bins of half-width 1/255; the edge bins
# extend to -inf / +inf, detected with the thresholds +-0.999; probabilities floored at 1e-12.
HALF_BIN = 1.0 / 255.0
EDGE = 0.999
MIN_PROB = 1e-12


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise:

  0.5 * (-1 + logvar2 - logvar1 + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^-logvar2).
  """
  return 0.5 * (
    -1.0
    + logvar2
    - logvar1
    + tf.exp(logvar1 - logvar2)
    + tf.square(mean1 - mean2) * tf.exp(-logvar2)
  )


def approx_standard_normal_cdf(x):
  """Phi(x) ~= 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (the approximation the official code uses)."""
  return 0.5 * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
  """log P(x) of 8-bit data x in [-1, 1] under N(means, e^(2 log_scales)) integrated over x's bin:

      log [Phi((x + 1/255 - mu)/s) - Phi((x - 1/255 - mu)/s)],
  with the first bin's lower edge at -inf and the last bin's upper edge at +inf. Elementwise.
  """
  centered = x - means
  inv_std = tf.exp(-log_scales)
  cdf_plus = approx_standard_normal_cdf(inv_std * (centered + HALF_BIN))
  cdf_min = approx_standard_normal_cdf(inv_std * (centered - HALF_BIN))
  log_cdf_plus = tf.math.log(tf.maximum(cdf_plus, MIN_PROB))
  log_one_minus_cdf_min = tf.math.log(tf.maximum(1.0 - cdf_min, MIN_PROB))
  log_delta = tf.math.log(tf.maximum(cdf_plus - cdf_min, MIN_PROB))
  return tf.where(x < -EDGE, log_cdf_plus, tf.where(x > EDGE, log_one_minus_cdf_min, log_delta))


def sum_over_pixels(x):
  """Sum over all but the batch axis: [B, ...] -> [B]."""
  return tf.reduce_sum(x, axis=tf.range(1, tf.rank(x)))


# 8-bit data: 256 levels.
NUM_LEVELS = 256


def uniform_dequantize(x01, *, seed):
  """x = (k + u) / 256, u ~ U[0, 1)^D, for 8-bit images x01 = k / 255 in [0, 1]: a density on
  [0, 1]^D whose NLL in bits/dim + 8 bounds the discrete NLL (Theis et al. 2016). `seed`: a Keras
  SeedGenerator or int."""
  levels = tf.round(tf.cast(x01, tf.float32) * (NUM_LEVELS - 1))
  u = common_random.uniform(tf.shape(levels), dtype="float32", seed=seed)  # replica-independent
  return (levels + u) / NUM_LEVELS
