"""Small pieces shared by the model packages (nvae_tf, vampprior_tf, diffusion_tf)."""
