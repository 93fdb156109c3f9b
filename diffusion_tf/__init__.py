"""Flow, diffusion and VAE-with-flow-prior models of the suite (TF2 / Keras 3 + TFP).

- `flows`: the one RealNVP affine-coupling flow (`RealNVPFlow`, `checkerboard_masks`), shared with
  `vampprior_tf`'s flow prior.
- `diffusion`: `GaussianDiffusion` (DDPM forward/reverse process, losses, VLB, ancestral and DDIM
  samplers as compiled while loops).
- `layers`: the DDPM U-Net and its blocks.
- `distributions`: Gaussian KL, discretized Gaussian decoder, uniform dequantization.
- `model`: `DDPM`, `FlowModel`, `FlowPriorVAE`, and `ema_weights`.
- `optim`: the official DDPM optimizer (Adam epsilon 1e-8, `LinearWarmup` step / warmup).
- `official_checkpoint`: loads the official DDPM TF1 checkpoints (`model.ckpt-*`) into the U-Net;
  `OFFICIAL_CONFIGS` (cifar10, celebahq, lsun).
"""

from diffusion_tf.flows import RealNVPFlow, alternating_masks, checkerboard_masks, logit_bijector

__all__ = ["RealNVPFlow", "alternating_masks", "checkerboard_masks", "logit_bijector"]
