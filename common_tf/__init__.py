"""Small pieces shared below the scripts: replica-independent randomness for the model packages
(`random`, `layers`; nvae_tf, vampprior_tf, diffusion_tf) and preemption handling for the long loops
of `experiments.harness` and `evaluation.likelihood` (`preemption`), and the CPUs they ran on (`host`,
standard library only). Imports only TF / Keras."""
