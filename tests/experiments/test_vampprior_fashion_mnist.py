"""Fashion-MNIST for a user who has the files: the official distribution's four gzipped IDX files
in <data_dir>/fashion_mnist/, and the paper-preset VampPrior command run end to end on them through
the real script entry (shrunk by flags), as docs/data.md and docs/vampprior.md tell the user."""

import gzip
import json
import re
import struct

import numpy as np

from experiments import vampprior_train
from tests import scripts

# zalandoresearch/fashion-mnist, data/fashion: the file names of the official distribution.
FILES = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The experiment keeps the last 10,000 training images for validation (as the official code does
# for MNIST), so a training file needs more than that; 60,000 in the real one.
NUM_TRAIN = vampprior_train.MNIST_NUM_VALID + 200
NUM_TEST = 100


def write_idx(path, array, magic):
  with gzip.open(path, "wb") as f:
    f.write(
      struct.pack(">I", magic)
      + struct.pack(f">{array.ndim}I", *array.shape)
      + array.astype(np.uint8).tobytes()
    )


def write_fashion_mnist(data_dir):
  """A small Fashion-MNIST in the official format: 28x28 uint8 images (a bright 'garment' block on
  a dark background, one size per class), labels 0..9."""
  folder = data_dir / "fashion_mnist"
  folder.mkdir(parents=True)
  rng = np.random.RandomState(0)
  for split, n in (("train", NUM_TRAIN), ("test", NUM_TEST)):
    labels = np.arange(n) % 10
    images = rng.randint(0, 30, (n, 28, 28))
    for i, label in enumerate(labels):
      images[i, 4 : 6 + 2 * label, 6:22] = rng.randint(150, 256, (2 + 2 * label, 16))
    write_idx(folder / FILES[split][0], images, 2051)
    write_idx(folder / FILES[split][1], labels, 2049)
  return data_dir


def test_paper_preset_on_fashion_mnist_through_the_cli(tmp_path, monkeypatch):
  data_dir = write_fashion_mnist(tmp_path / "data")
  monkeypatch.chdir(tmp_path)  # the script appends its row to runs/vampprior/results.json
  logdir = tmp_path / "run"
  proc = scripts.run_script(
    "vampprior",
    [
      "--dataset=fashion_mnist",
      "--preset=paper",
      f"--data_dir={data_dir}",
      f"--logdir={logdir}",
      # The paper preset, shrunk: 3 steps of 100 (one epoch of 200 examples and one step), K = 10
      # pseudo-inputs, 8 importance samples on 20 test examples, a narrow network.
      "--max_steps=3",
      "--train_examples=200",
      "--eval_examples=20",
      "--test_samples=8",
      "--ll_chunk=8",
      "--num_components=10",
      "--hidden_units=16",
      "--z1_dim=4",
    ],
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "error" not in proc.stderr.lower(), proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert re.fullmatch(
    r"fashion_mnist vae vampprior: test NLL [0-9.]+ \+- [0-9.]+ nats \(K=8\), "
    r"test -ELBO [0-9.]+, 1 epochs",
    last,
  ), proc.stderr[-3000:]

  row = json.load(open(logdir / "results.json"))
  assert (row["dataset"], row["model"], row["prior"]) == ("fashion_mnist", "vae", "vampprior")
  # Grey images: the discretized logistic decoder; the paper preset's schedule, shrunk by flags.
  assert row["likelihood"] == "discretized_logistic"
  assert (row["batch_size"], row["epochs"], row["warmup"], row["early_stopping"], row["lr"]) == (
    100,
    2000,
    100,
    50,
    5e-4,
  )
  assert (row["num_components"], row["train_examples"], row["eval_examples"]) == (10, 200, 20)
  assert row["test_examples"] == 20 and row["importance_samples"] == row["test_samples"] == 8
  assert row["epochs_run"] == 1 and row["best_checkpoint"] is not None
  assert np.isfinite(row["test_nll"]) and row["test_nll"] > 0  # 3 steps: far from trained
  assert f"test NLL {row['test_nll']:.2f} " in last
  assert row["logdir"] == str(logdir)

  appended = json.load(open(tmp_path / "runs" / "vampprior" / "results.json"))
  assert len(appended) == 1 and appended[0]["dataset"] == "fashion_mnist"
  assert appended[0]["test_nll"] == row["test_nll"]
  assert appended[0]["command"].startswith(
    "python -m experiments.vampprior --dataset=fashion_mnist --preset=paper"
  )
  hparams = json.load(open(logdir / "hparams.json"))
  assert hparams["dataset"] == "fashion_mnist" and hparams["likelihood"] == "discretized_logistic"
  with np.load(logdir / "samples.npz") as samples:
    images = samples[samples.files[0]]
  assert images.shape[0] == vampprior_train.NUM_SAMPLE_IMAGES and images.shape[1:3] == (28, 28)
  assert (logdir / "samples.png").stat().st_size > 0
  assert (logdir / "checkpoints").is_dir()


def test_files_in_the_wrong_folder_are_one_error_line(tmp_path, monkeypatch):
  """The official repository keeps the files in data/fashion/: copied as that folder, they are not
  found, and the one line says where they must go."""
  data_dir = write_fashion_mnist(tmp_path / "data")
  (data_dir / "fashion_mnist").rename(data_dir / "fashion")
  monkeypatch.chdir(tmp_path)
  proc = scripts.run_script(
    "vampprior",
    [
      "--dataset=fashion_mnist",
      "--preset=paper",
      f"--data_dir={data_dir}",
      f"--logdir={tmp_path / 'run'}",
    ],
  )
  assert proc.returncode == 2
  assert proc.stderr == (
    "error: data set 'fashion_mnist' split 'train' not found: expected "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz; looked in "
    f"{data_dir / 'fashion_mnist'} and {data_dir}. Put the standard files in "
    "<dir>/fashion_mnist/ and pass --data_dir=<dir> or set GENMODELS_DATA_DIR\n"
  )
  assert proc.stdout == "" and not (tmp_path / "runs").exists()
