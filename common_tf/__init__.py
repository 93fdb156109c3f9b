"""Small pieces shared below the scripts: replica-independent randomness for the model packages
(`random`, `layers`; nvae_tf, vampprior_tf, diffusion_tf) and preemption handling for the long loops
of `experiments.harness` and `evaluation.likelihood` (`preemption`), the CPUs they ran on (`host`,
standard library only), and the local data folder with its IDX reader that `experiments.data` and
`evaluation.references` share (`data_files`, NumPy only). Imports only TF / Keras / NumPy."""
