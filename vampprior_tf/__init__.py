"""VAE with a VampPrior (Tomczak & Welling, AISTATS 2018) and its hierarchical variants, in Keras 3.

Modules: `distributions` (log-densities and observation models), `layers` (gated dense/conv and
masked-conv blocks), `priors` (standard, mixture of Gaussians, VampPrior, RealNVP flow prior) and
`model` (VAE, HVAE2Level, ConvHVAE2Level, PixelHVAE2Level).
"""
