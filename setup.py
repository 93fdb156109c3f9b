"""Install: pip install -e .[test,reference]   (GPU: pip install -e .[gpu])."""

from setuptools import find_packages, setup

setup(
  name="genmodels-tf",
  version="0.1.0",
  description="NVAE, VampPrior/HVAE, RealNVP, DDPM and their evaluation metrics in TensorFlow 2 / Keras 3",
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  packages=find_packages(
    include=[
      "common_tf*",
      "nvae_tf*",
      "vampprior_tf*",
      "diffusion_tf*",
      "evaluation*",
      "experiments*",
    ]
  ),
  install_requires=[
    "tensorflow>=2.16",  # Keras 3
    "tensorflow-probability>=0.24",
    "tf-keras>=2.16",  # only because `import tensorflow_probability` needs it with TF >= 2.16
    "tensorboard",  # TensorBoard summaries (hparams plugin); not a TF dependency since 2.20
    "tensorflow-datasets",
    # tensorflow_datasets' download path imports etils.epath, which needs it; not always
    # installed with tensorflow-datasets (`tfds:mnist/test` then failed to download).
    "importlib_resources",
    "numpy",
    "scipy",
    "absl-py",
    "pillow",
    "h5py",  # VGG-16 weights file (Keras .h5)
    "matplotlib",
  ],
  extras_require={
    # ruff: `make lint` (run first by `make test`); pinned to a minor release so that its
    # formatter style and rule set do not change under the tree.
    "test": ["pytest", "pytest-xdist", "ruff>=0.17.6,<0.18"],
    # The reference tier of the tests: the field's own packages, run side by side with ours
    # (imported, never copied). torchvision must match torch; on CPU both work from the
    # standard wheels.
    "reference": [
      "torch>=2.9",
      "torchvision>=0.24",
      "pytorch-fid",
      "lpips",
      "clean-fid",
      "torch-fidelity",
      "diffusers",
    ],
    "gpu": ["tensorflow[and-cuda]>=2.16"],
  },
)
