"""NVAE: a deep hierarchical VAE (Vahdat & Kautz 2020), MNIST configuration of NVlabs/NVAE.

Generative model p(z_1) prod_l p(z_l | z_<l) p(x | z) with groups z_l of 20 channels at two scales
(top 4x4, then 8x8); the posterior q(z_l | x, z_<l) shares the top-down decoder path and is a
residual Normal around the prior (NVAE eq. 2). Data flow (paper config, B images 28x28x1):

  x -> pad 32x32 -> stem(2x - 1) [32,32,32] -> preprocess [8,8,128] -> encoder tower
    (10 groups at 8x8x128, down, 5 groups at 4x4x256) -> enc0 -> q(z_1) [4,4,20]
  decoder: learned h0 [4,4,256] -> (cells, combiner with z_l) x 5 -> up -> x 10 at [8,8,128]
    -> postprocess [32,32,32] -> ELU, conv3x3 -> Bernoulli logits [32,32,1], cropped to 28x28.

Reconstruction and KL terms are returned as `NVAEOutput`; `NVAE.loss_terms` assembles the objective
(KL balancing, spectral and BN regularisers) from `nvae_tf.losses` for a given warm-up beta.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import keras
import numpy as np
import tensorflow as tf

from common_tf import random as common_random
from nvae_tf import distributions as dists
from nvae_tf import layers as L
from nvae_tf import losses, spectral

CHANNEL_MULT = 2  # NVAE official: channels double at every down-sampling
READJUST_BN_BATCH = 16  # NVAE official evaluate.py: set_bn(model, ..., num_samples=16, iter=500)


class Spectral(enum.StrEnum):
  """sr: spectral regularisation (a loss term, official); sn: spectral normalisation; none."""

  SR = "sr"
  SN = "sn"
  NONE = "none"


class SpectralScope(enum.StrEnum):
  """Which convs SR regularises / SN normalises. ALL: every conv (official `all_conv_layers`: every
  Conv2D and ARConv2d, samplers, combiners, skips, stem, image head and IAF included); CELLS: only
  the convs inside the residual cells' ops (the official model.py's commented-out alternative
  `if isinstance(layer, Conv2D) and '_ops' in n:  # only chose those in cell`)."""

  ALL = "all"
  CELLS = "cells"


SPECTRAL_MODES = tuple(m.value for m in Spectral)
SPECTRAL_SCOPES = tuple(m.value for m in SpectralScope)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NVAEConfig:
  """Architecture; the defaults are the official MNIST command of NVlabs/NVAE's README."""

  num_channels_enc: int = 32
  num_channels_dec: int = 32
  num_preprocess_blocks: int = 2
  num_preprocess_cells: int = 3
  num_postprocess_blocks: int = 2
  num_postprocess_cells: int = 3
  num_latent_scales: int = 2
  num_groups_per_scale: int = 10
  ada_groups: bool = True  # halve the groups at each coarser scale: [10, 5]
  min_groups_per_scale: int = 1
  num_latent_per_group: int = 20
  num_cell_per_cond_enc: int = 2
  num_cell_per_cond_dec: int = 2
  num_flows: int = 0  # paired IAF cells per group (official --num_nf); 0 for MNIST
  use_se: bool = True
  residual_posterior: bool = True  # official --res_dist
  spectral: Spectral = Spectral.SR  # sr: regulariser (loss term); sn: normalisation; none
  spectral_scope: SpectralScope = SpectralScope.ALL  # the convs SR / SN act on (official: all)
  decoder_expansion: int = 6  # official arch 'res_mbconv': mconv_e6k5g0 decoder cells
  postprocess_expansion: int = 3  # mconv_e3k5g0 postprocess cells
  image_size: int = 28
  padded_size: int = 32  # official get_input_size('mnist') = 32, crop 2:30
  image_channels: int = 1

  def __post_init__(self):
    if self.spectral not in SPECTRAL_MODES:
      raise ValueError(f"spectral must be one of {SPECTRAL_MODES}, got {self.spectral!r}")
    if self.spectral_scope not in SPECTRAL_SCOPES:
      raise ValueError(
        f"spectral_scope must be one of {SPECTRAL_SCOPES}, got {self.spectral_scope!r}"
      )
    # Plain strings (flags, settings.json) become the enums; frozen, hence object.__setattr__.
    object.__setattr__(self, "spectral", Spectral(self.spectral))
    object.__setattr__(self, "spectral_scope", SpectralScope(self.spectral_scope))
    reduction = 2 ** (self.num_preprocess_blocks + self.num_latent_scales - 1)
    if self.padded_size % reduction:
      raise ValueError(f"padded size {self.padded_size} is not divisible by {reduction}")
    if (self.padded_size - self.image_size) % 2 or self.padded_size < self.image_size:
      raise ValueError(f"cannot centre {self.image_size} in {self.padded_size}")
    for name in (
      "num_channels_enc",
      "num_channels_dec",
      "num_latent_scales",
      "num_groups_per_scale",
      "num_latent_per_group",
      "num_preprocess_cells",
      "num_postprocess_cells",
      "num_preprocess_blocks",
      "num_postprocess_blocks",
    ):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.num_flows < 0:
      raise ValueError(f"num_flows must be >= 0, got {self.num_flows}")
    if self.num_channels_enc % 2:
      raise ValueError("num_channels_enc must be even (factorized-reduce skip)")


def groups_per_scale(config: NVAEConfig) -> list[int]:
  """Groups per latent scale in encoder order (finest first): official `groups_per_scale`, e.g. [10, 5]."""
  groups, n = [], config.num_groups_per_scale
  for _ in range(config.num_latent_scales):
    groups.append(n)
    if config.ada_groups:
      n = max(config.min_groups_per_scale, n // 2)
  return groups


@dataclasses.dataclass(frozen=True)
class NVAEOutput:
  """One forward pass (single posterior sample per example)."""

  logits: tf.Tensor  # [B, padded, padded, 1] Bernoulli logits of the decoder
  recon_log_prob: tf.Tensor  # [B] log p(x | z) on the cropped 28x28 region (nats)
  kl: tf.Tensor  # [B, G] KL per group: analytic, or log q - log p with flows
  kl_per_channel: tf.Tensor  # [B, G, C_z] the same summed over space only (active units)
  log_q: tf.Tensor  # [B] log q(z | x) of the sample (flows' log-det included)
  log_p: tf.Tensor  # [B] log p(z) of the sample

  @property
  def log_weight(self) -> tf.Tensor:
    """log w = log p(x | z) + log p(z) - log q(z | x): [B]."""
    return self.recon_log_prob + self.log_p - self.log_q


class NVAE(keras.Model):
  """NVAE with Bernoulli output for binary images [B, 28, 28, 1] in {0, 1}.

  Args:
    config: the architecture.
    seed: seed of the model's `keras.random.SeedGenerator` (posterior / prior sampling noise).
  """

  def __init__(self, config: NVAEConfig = NVAEConfig(), *, seed: int = 0, name="nvae"):
    super().__init__(name=name)
    self.config = cfg = config
    sn = cfg.spectral == Spectral.SN
    sn_all = sn and cfg.spectral_scope == SpectralScope.ALL  # convs outside the cells' ops
    self.seed_generator = keras.random.SeedGenerator(seed)
    self.groups_enc = groups_per_scale(cfg)  # encoder order (finest first)
    self.groups_dec = list(reversed(self.groups_enc))  # decoder order (coarsest first)
    self.num_groups = sum(self.groups_enc)
    cz = cfg.num_latent_per_group

    self.stem = L.Conv2D(cfg.image_channels, cfg.num_channels_enc, 3, spectral_norm=sn_all)
    mult = 1
    pre = []
    for _ in range(cfg.num_preprocess_blocks):
      for c in range(cfg.num_preprocess_cells):
        down = c == cfg.num_preprocess_cells - 1
        pre.append(
          L.residual_cell(
            cfg.num_channels_enc * mult,
            downsample=down,
            use_se=cfg.use_se,
            spectral_norm=sn,
            skip_spectral_norm=sn_all,
          )
        )
        mult *= CHANNEL_MULT if down else 1
    self.preprocess = pre

    # Encoder tower: per scale, per group: cells, then a combiner (but for the very last group).
    enc_cells, enc_combiners, enc_down = [], [], []
    for s, num_groups in enumerate(self.groups_enc):
      for g in range(num_groups):
        enc_cells.append(
          [
            L.residual_cell(
              cfg.num_channels_enc * mult,
              use_se=cfg.use_se,
              spectral_norm=sn,
              skip_spectral_norm=sn_all,
            )
            for _ in range(cfg.num_cell_per_cond_enc)
          ]
        )
        if not (s == cfg.num_latent_scales - 1 and g == num_groups - 1):
          enc_combiners.append(
            L.EncoderCombiner(
              cfg.num_channels_enc * mult, cfg.num_channels_dec * mult, spectral_norm=sn_all
            )
          )
      if s < cfg.num_latent_scales - 1:
        enc_down.append(
          L.residual_cell(
            cfg.num_channels_enc * mult,
            downsample=True,
            use_se=cfg.use_se,
            spectral_norm=sn,
            skip_spectral_norm=sn_all,
          )
        )
        mult *= CHANNEL_MULT
    self.encoder_cells = enc_cells
    self.encoder_combiners = enc_combiners
    self.encoder_down = enc_down
    self.top_channels_enc = cfg.num_channels_enc * mult

    self.enc0 = L.ELUConv(self.top_channels_enc, self.top_channels_enc, 1, spectral_norm=sn_all)

    # Samplers and flows, in decoder order.
    enc_samplers, dec_samplers, flows = [], [], []
    dec_mult = mult
    for s, num_groups in enumerate(self.groups_dec):
      for g in range(num_groups):
        enc_samplers.append(
          L.Conv2D(cfg.num_channels_enc * dec_mult, 2 * cz, 3, spectral_norm=sn_all)
        )
        flows.append(
          [L.PairedAutoregressiveFlow(cz, spectral_norm=sn_all) for _ in range(cfg.num_flows)]
        )
        if not (s == 0 and g == 0):
          dec_samplers.append(
            L.ELUConv(cfg.num_channels_dec * dec_mult, 2 * cz, 1, spectral_norm=sn_all)
          )
      dec_mult //= CHANNEL_MULT
    self.encoder_samplers = enc_samplers
    self.decoder_samplers = dec_samplers
    self.flows = flows

    # Decoder tower.
    top_size = cfg.padded_size // 2 ** (cfg.num_preprocess_blocks + cfg.num_latent_scales - 1)
    self.top_shape = (top_size, top_size)
    prior_channels = cfg.num_channels_dec * mult
    self.prior_ftr0 = self.add_weight(
      shape=(top_size, top_size, prior_channels),
      initializer=keras.initializers.RandomUniform(0.0, 1.0),
      name="prior_ftr0",
      autocast=False,
    )  # official: torch.rand
    dec_cells, dec_combiners, dec_up = [], [], []
    for s, num_groups in enumerate(self.groups_dec):
      c = cfg.num_channels_dec * mult
      for g in range(num_groups):
        first = s == 0 and g == 0
        dec_cells.append(
          []
          if first
          else [
            L.inverted_residual_cell(
              c,
              expansion=cfg.decoder_expansion,
              use_se=cfg.use_se,
              spectral_norm=sn,
              skip_spectral_norm=sn_all,
            )
            for _ in range(cfg.num_cell_per_cond_dec)
          ]
        )
        dec_combiners.append(L.DecoderCombiner(c, cz, spectral_norm=sn_all))
      if s < cfg.num_latent_scales - 1:
        dec_up.append(
          L.inverted_residual_cell(
            c,
            expansion=cfg.decoder_expansion,
            upsample=True,
            use_se=cfg.use_se,
            spectral_norm=sn,
            skip_spectral_norm=sn_all,
          )
        )
        mult //= CHANNEL_MULT
    self.decoder_cells = dec_cells
    self.decoder_combiners = dec_combiners
    self.decoder_up = dec_up

    post = []
    for _ in range(cfg.num_postprocess_blocks):
      for c in range(cfg.num_postprocess_cells):
        up = c == 0
        post.append(
          L.inverted_residual_cell(
            cfg.num_channels_dec * mult,
            expansion=cfg.postprocess_expansion,
            upsample=up,
            use_se=cfg.use_se,
            spectral_norm=sn,
            skip_spectral_norm=sn_all,
          )
        )
        mult //= CHANNEL_MULT if up else 1
    self.postprocess = post
    self.image_head = L.ELUConv(
      cfg.num_channels_dec * mult, cfg.image_channels, 3, spectral_norm=sn_all
    )

    self.conv_layers = [
      l for l in self._flatten_layers(include_self=False) if isinstance(l, L.Conv2D)
    ]
    self.bn_layers = [
      l
      for l in self._flatten_layers(include_self=False)
      if isinstance(l, keras.layers.BatchNormalization)
    ]
    # Spectral regularisation: one persistent (u, v) stack per weight-matrix shape, as the
    # official `spectral_norm_parallel` (warm-started with 40 iterations on the initial weights).
    self._sr_groups = []
    if cfg.spectral == Spectral.SR:
      by_shape = {}
      for conv in self.spectral_convs():
        by_shape.setdefault(tuple(conv.matrix().shape), []).append(conv)
      self._sr_groups = [
        (
          convs,
          spectral.PowerIterationState(tf.stack([c.matrix() for c in convs]), name=f"sr_state_{i}"),
        )
        for i, convs in enumerate(by_shape.values())
      ]
      self.sr_states = [state for _, state in self._sr_groups]
    self.built = True

  def cells(self) -> list:
    """Every residual cell (pre/post-process, encoder, decoder, down/up), in construction order."""
    return [l for l in self._flatten_layers(include_self=False) if isinstance(l, L.Cell)]

  def spectral_convs(self) -> list:
    """The convs SR regularises / SN normalises: all of them, or those in the cells' ops."""
    if self.config.spectral_scope == SpectralScope.ALL:
      return list(self.conv_layers)
    inside = {
      id(c)
      for cell in self.cells()
      for op in cell.ops
      for c in op._flatten_layers(include_self=True)
      if isinstance(c, L.Conv2D)
    }
    return [c for c in self.conv_layers if id(c) in inside]

  # --------------------------------------------------------------------------- shapes

  def latent_shapes(self) -> list[tuple[int, int, int]]:
    """[h, w, C_z] of every group in decoder order (coarsest first)."""
    shapes, size = [], self.top_shape[0]
    for num_groups in self.groups_dec:
      shapes += [(size, size, self.config.num_latent_per_group)] * num_groups
      size *= 2
    return shapes

  def _pad(self, x):
    """[B, 28, 28, C] -> [B, 32, 32, C], zeros around (torchvision Pad(2))."""
    p = (self.config.padded_size - self.config.image_size) // 2
    return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])

  def _crop(self, y):
    p = (self.config.padded_size - self.config.image_size) // 2
    return y[:, p : p + self.config.image_size, p : p + self.config.image_size, :]

  def _noise(self, like):
    """eps ~ N(0, 1) shaped like `like`: [B, ...]; under n replicas every example gets the noise
    one device would give it (`common_tf.random`), so the replica count does not change the result."""
    return common_random.normal(tf.shape(like), seed=self.seed_generator)

  # --------------------------------------------------------------------------- inference

  def _encode(self, x, training):
    """Bottom-up pass: returns (top feature, encoder features for the combiners, decoder order)."""
    h = tf.cast(self._pad(x), self.compute_dtype)
    h = self.stem(2.0 * h - 1.0, training=training)
    for cell in self.preprocess:
      h = cell(h, training=training)
    features, group = [], 0
    for s, num_groups in enumerate(self.groups_enc):
      for _ in range(num_groups):
        for cell in self.encoder_cells[group]:
          h = cell(h, training=training)
        group += 1
        if group < self.num_groups:
          features.append(h)
      if s < len(self.encoder_down):
        h = self.encoder_down[s](h, training=training)
    return h, features[::-1]

  def _split(self, param):
    mu, log_sigma = tf.split(tf.cast(param, tf.float32), 2, axis=-1)
    return mu, log_sigma

  def _posterior_sample(self, q, group, training):
    """z ~ q, then the group's IAF cells; returns (z, log q(z) per element)."""
    z = dists.sample(q, self._noise(q.loc))
    log_q = q.log_prob(z)
    for flow in self.flows[group]:
      z, log_det = flow(z, training=training)
      log_q -= tf.cast(log_det, tf.float32)
    return z, log_q

  def call(self, x, training=False) -> NVAEOutput:
    """x: [B, 28, 28, 1] binary images -> NVAEOutput with one posterior sample per example."""
    top, features = self._encode(x, training)
    return self._top_down(x, top, features, training)

  def _top_down(self, x, top, features, training) -> NVAEOutput:
    """Top-down pass from the bottom-up pass's outputs (`_encode` of x): posterior samples group
    by group, the decoder, and the terms of the bound for x [B, 28, 28, 1]."""
    cfg = self.config
    ftr = self.enc0(top, training=training)
    ftr = tf.nn.elu(ftr)
    q = dists.normal(*self._split(self.encoder_samplers[0](ftr, training=training)))
    z, log_q = self._posterior_sample(q, 0, training)
    p = dists.standard_prior(tf.shape(z))
    kls, log_qs, log_ps = [], [log_q], [p.log_prob(z)]
    kls.append(log_qs[0] - log_ps[0] if cfg.num_flows else dists.analytic_kl(q, p))

    batch = tf.shape(x)[0]
    s = tf.cast(
      tf.broadcast_to(self.prior_ftr0, tf.concat([[batch], self.prior_ftr0.shape], 0)),
      self.compute_dtype,
    )
    up_index = 0
    group = 0
    for scale, num_groups in enumerate(self.groups_dec):
      for _ in range(num_groups):
        if group > 0:
          for cell in self.decoder_cells[group]:
            s = cell(s, training=training)
          mu_p, log_sigma_p = self._split(self.decoder_samplers[group - 1](s, training=training))
          combiner = self.encoder_combiners[len(self.encoder_combiners) - group]  # reverse order
          ftr = combiner(features[group - 1], s, training=training)
          mu_q, log_sigma_q = self._split(self.encoder_samplers[group](ftr, training=training))
          if cfg.residual_posterior:
            q = dists.residual_normal(mu_p, log_sigma_p, mu_q, log_sigma_q)
          else:
            q = dists.normal(mu_q, log_sigma_q)
          p = dists.normal(mu_p, log_sigma_p)
          z, log_q = self._posterior_sample(q, group, training)
          log_p = p.log_prob(z)
          log_qs.append(log_q)
          log_ps.append(log_p)
          kls.append(log_q - log_p if cfg.num_flows else dists.analytic_kl(q, p))
        s = self.decoder_combiners[group](s, z, training=training)
        group += 1
      if scale < len(self.decoder_up):
        s = self.decoder_up[up_index](s, training=training)
        up_index += 1
    logits = self._decode_tail(s, training)

    kl_per_channel = tf.stack([tf.reduce_sum(k, axis=[1, 2]) for k in kls], axis=1)  # [B, G, Cz]
    recon = tf.reduce_sum(
      self._crop(dists.bernoulli_log_prob(logits, self._pad(x))), axis=[1, 2, 3]
    )
    return NVAEOutput(
      logits=logits,
      recon_log_prob=recon,
      kl=tf.reduce_sum(kl_per_channel, axis=-1),
      kl_per_channel=kl_per_channel,
      log_q=tf.add_n([tf.reduce_sum(v, axis=[1, 2, 3]) for v in log_qs]),
      log_p=tf.add_n([tf.reduce_sum(v, axis=[1, 2, 3]) for v in log_ps]),
    )

  def _decode_tail(self, s, training):
    for cell in self.postprocess:
      s = cell(s, training=training)
    return tf.cast(self.image_head(s, training=training), tf.float32)

  def log_weights(self, x, num_samples: int):
    """log w_k = log p(x, z_k) - log q(z_k | x), z_k ~ q(z | x): [K, B] (inference-mode BN).

    The bottom-up pass is deterministic in inference mode: it runs once per image and its outputs
    are tiled; the K copies of the top-down pass go through the network as one batch of K * B,
    sample-major. The same as `self(tf.tile(x, [K, 1, 1, 1]))` with the same noise, 1.33x faster
    for the cpu preset, 1.45x for the paper architecture (bench/bench_log_weights.py).
    """
    batch = tf.shape(x)[0]
    top, features = self._encode(x, training=False)
    tile = lambda t: tf.tile(t, [num_samples, 1, 1, 1])  # [B, h, w, c] -> [K * B, h, w, c]
    out = self._top_down(tile(x), tile(top), [tile(f) for f in features], training=False)  # K * B
    return tf.reshape(out.log_weight, [num_samples, batch])

  # --------------------------------------------------------------------------- generation

  def decode_noise(self, noise, *, temperature: float = 1.0, training=False):
    """Ancestral sampling from given standard-normal noise, one [N, h, w, C_z] per group.

    z_l = mu_p + temperature * sigma_p * noise_l; returns the Bernoulli logits [N, 32, 32, 1].
    """
    if len(noise) != self.num_groups:
      raise ValueError(f"expected noise for {self.num_groups} groups, got {len(noise)}")
    n = tf.shape(noise[0])[0]
    z = dists.sample(dists.standard_prior(tf.shape(noise[0]), temperature=temperature), noise[0])
    s = tf.cast(
      tf.broadcast_to(self.prior_ftr0, tf.concat([[n], self.prior_ftr0.shape], 0)),
      self.compute_dtype,
    )
    group, up_index = 0, 0
    for scale, num_groups in enumerate(self.groups_dec):
      for _ in range(num_groups):
        if group > 0:
          for cell in self.decoder_cells[group]:
            s = cell(s, training=training)
          p = dists.normal(
            *self._split(self.decoder_samplers[group - 1](s, training=training)),
            temperature=temperature,
          )
          z = dists.sample(p, noise[group])
        s = self.decoder_combiners[group](s, z, training=training)
        group += 1
      if scale < len(self.decoder_up):
        s = self.decoder_up[up_index](s, training=training)
        up_index += 1
    return self._decode_tail(s, training)

  def sample_noise(self, num_samples: int):
    return [
      keras.random.normal((num_samples,) + shape, seed=self.seed_generator)
      for shape in self.latent_shapes()
    ]

  def sample(self, num_samples: int, *, temperature: float = 1.0, training=False):
    """Images [N, 28, 28, 1] in [0, 1]: the Bernoulli means of ancestral samples (as official)."""
    logits = self.decode_noise(
      self.sample_noise(num_samples), temperature=temperature, training=training
    )
    return self.probabilities(logits)

  def probabilities(self, logits):
    """Bernoulli means on the 28x28 region: [N, 28, 28, 1]."""
    return tf.sigmoid(self._crop(logits))

  def readjust_bn(
    self, *, num_iterations: int, temperature: float, batch_size: int = READJUST_BN_BATCH
  ):
    """Re-estimates BN moving statistics from samples (official `set_bn`, --readjust_bn):
    `num_iterations` sampling passes of `batch_size` images in training mode."""
    step = tf.function(lambda: self.sample(batch_size, temperature=temperature, training=True))
    for _ in range(num_iterations):
      step()

  # --------------------------------------------------------------------------- regularisers

  def spectral_loss(self, *, training: bool):
    """L_SR = sum over every conv of its top singular value (official `spectral_norm_parallel`).

    In training the persistent power iteration advances 4 steps; only when `spectral == 'sr'`.
    """
    if self.config.spectral != "sr":
      raise ValueError("spectral_loss is defined for spectral='sr' only")
    total = 0.0
    for convs, state in self._sr_groups:
      w = tf.stack([c.matrix() for c in convs])  # [N, R, C]
      sigma = state.update(w) if training else state.sigma(w)
      total += tf.reduce_sum(sigma)
    return total

  def batchnorm_loss(self):
    """L_BN = sum over BN layers of max |gamma| (official `batchnorm_loss`)."""
    return tf.add_n([tf.reduce_max(tf.abs(bn.gamma)) for bn in self.bn_layers])

  def loss_terms(
    self, x, *, beta, spectral_lambda: float = losses.SPECTRAL_LAMBDA, training: bool = True
  ) -> losses.LossTerms:
    """The NVAE objective (paper eq. 1 with the official warm-up, balancing and regularisers):

        loss = recon + beta * sum_l gamma_l KL_l   (per example)   + lambda (L_SR + L_BN)

    gamma_l = `losses.kl_balance` while beta < 1 (else 1), statistics over the global batch;
    L_SR only when `config.spectral == 'sr'` (its power iteration advances when `training`);
    L_BN = sum of max |gamma| over BN layers. x: [B, 28, 28, 1] binary.
    """
    out = self(x, training=training)
    beta = tf.cast(beta, tf.float32)
    weighted_kl, gammas = losses.balanced_kl(out.kl, tf.constant(self.kl_balance_alphas()), beta)
    recon = -out.recon_log_prob
    l_bn = self.batchnorm_loss()
    l_sr = self.spectral_loss(training=training) if self.config.spectral == Spectral.SR else None
    regularizer = spectral_lambda * (l_bn if l_sr is None else l_sr + l_bn)
    return losses.LossTerms(
      per_example=recon + weighted_kl,
      regularizer=regularizer,
      recon=recon,
      kl=out.kl,
      gammas=gammas,
      beta=beta,
      spectral_lambda=spectral_lambda,
      l_sr=l_sr,
      l_bn=l_bn,
      active_units=losses.active_units(out.kl_per_channel),
      output=out,
    )

  def kl_balance_alphas(self) -> np.ndarray:
    """KL-balancing alpha_l of this model's groups (decoder order), see `losses.kl_balance_alphas`."""
    return losses.kl_balance_alphas(self.groups_dec)

  def count_params(self) -> int:
    return int(sum(math.prod(v.shape) for v in self.trainable_variables))
