"""VAE with a VampPrior (Tomczak & Welling, AISTATS 2018) and its hierarchical variants, in Keras 3.

Modules: `distributions` (log-densities and observation models), `layers` (gated dense/conv and
masked-conv blocks), `priors` (standard, mixture of Gaussians, VampPrior, RealNVP flow prior, and
the one prior registry `PRIORS` / `build_prior`), `model` (VAE, HVAE2Level, ConvHVAE2Level,
PixelHVAE2Level), `losses` (KL warm-up objective, official early-stopping rule), `optim`
(AdamNormGrad's gradient normalisation) and `likelihood` (test NLL with the importance samples
counted).
"""
