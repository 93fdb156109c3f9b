"""Data loaders: the standard file formats (written here), clear errors, and the real offline files."""

import gzip
import os
import struct

import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from experiments import data

RNG = np.random.RandomState(0)


def write_idx(path, array, magic):
  header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def data_dir(tmp_path):
  mnist = tmp_path / "mnist"
  mnist.mkdir()
  for split, n in (("train", 12), ("t10k", 5)):
    write_idx(mnist / f"{split}-images-idx3-ubyte.gz", RNG.randint(0, 256, (n, 28, 28)), 2051)
    write_idx(mnist / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10, 2049)
  binarized = tmp_path / "binarized_mnist"
  binarized.mkdir()
  for split, n in (("train", 6), ("valid", 3), ("test", 2)):
    rows = RNG.randint(0, 2, (n, 784))
    (binarized / f"binarized_mnist_{split}.amat").write_text(
      "\n".join(" ".join(map(str, r)) for r in rows) + "\n"
    )
  frey = tmp_path / "frey_faces"
  frey.mkdir()
  scipy.io.savemat(
    frey / "frey_rawface.mat", {"ff": RNG.randint(8, 239, (560, 40)).astype(np.uint8)}
  )
  return tmp_path


def as_array(ds):
  return np.stack([x.numpy() for x in ds])


def test_mnist_idx(data_dir):
  images = as_array(data.load("mnist", "train", data_dir=str(data_dir)))
  assert images.shape == (12, 28, 28, 1) and images.dtype == np.float32
  assert 0.0 <= images.min() and images.max() <= 1.0
  raw = np.frombuffer(
    gzip.open(data_dir / "mnist" / "train-images-idx3-ubyte.gz").read()[16:], np.uint8
  )
  np.testing.assert_allclose(images.reshape(-1), raw / 255.0, atol=1e-7)
  pairs = list(data.load("mnist", "test", data_dir=str(data_dir), with_labels=True))
  assert len(pairs) == 5 and [int(l) for _, l in pairs] == [0, 1, 2, 3, 4]


def test_binarized_mnist_amat(data_dir):
  for split, n in (("train", 6), ("valid", 3), ("test", 2)):
    images = as_array(data.load("binarized_mnist", split, data_dir=str(data_dir)))
    assert images.shape == (n, 28, 28, 1)
    assert set(np.unique(images)) <= {0.0, 1.0}
  with pytest.raises(data.DataError, match="no labels"):
    data.load("binarized_mnist", "train", data_dir=str(data_dir), with_labels=True)


def test_amat_reader_values_and_layouts(data_dir, tmp_path):
  """The vectorised reader against NumPy's text parser, and the other layouts it hands over to
  the line reader (multi-character values, CRLF line ends, a missing final newline)."""
  path = data_dir / "binarized_mnist" / "binarized_mnist_train.amat"
  expected = np.loadtxt(path, dtype=np.float32).reshape(-1, 28, 28, 1)
  np.testing.assert_array_equal(data.read_amat(str(path)), expected)
  text = path.read_text()
  for name, variant in (
    ("crlf", text.replace("\n", "\r\n")),
    ("no_final_newline", text.rstrip()),
    ("floats", text.replace("1", "1.0")),
  ):
    (tmp_path / name).write_text(variant)
    np.testing.assert_array_equal(data.read_amat(str(tmp_path / name)), expected, err_msg=name)
  (tmp_path / "two").write_text(text.replace("1", "2"))
  with pytest.raises(data.DataError, match="values other than 0 and 1"):
    data.read_amat(str(tmp_path / "two"))
  lines = text.splitlines()
  (tmp_path / "short").write_text("\n".join([lines[0][:-2]] + lines[1:] + [lines[0][-1]]))
  with pytest.raises(data.DataError, match="line 1 has 783 values"):
    data.read_amat(str(tmp_path / "short"))


def test_frey_faces_fixed_split(data_dir):
  splits = {
    s: as_array(data.load("frey_faces", s, data_dir=str(data_dir)))
    for s in ("train", "valid", "test")
  }
  assert sum(len(v) for v in splits.values()) == 40
  assert splits["train"].shape[1:] == (28, 20, 1)
  faces = scipy.io.loadmat(data_dir / "frey_faces" / "frey_rawface.mat")["ff"].T.astype(int)
  # Disjoint and complete: every face appears in exactly one split.
  found = np.concatenate([v.reshape(len(v), -1) for v in splits.values()])
  found = np.round(found * 255).astype(int)
  assert sorted(map(tuple, found)) == sorted(map(tuple, faces))
  again = as_array(data.load("frey_faces", "test", data_dir=str(data_dir)))
  np.testing.assert_array_equal(again, splits["test"])


def test_subset_is_a_fixed_random_choice_in_file_order():
  images = np.arange(100).reshape(100, 1, 1, 1)  # sorted, as the binarized MNIST test file is
  chosen = data.subset(images, 10, seed=3).ravel()
  assert len(set(chosen)) == 10 and np.all(np.diff(chosen) > 0)  # distinct, in file order
  assert chosen.max() >= 50 and chosen.tolist() != list(range(10))  # not the first ten
  np.testing.assert_array_equal(data.subset(images, 10, seed=3).ravel(), chosen)
  assert data.subset(images, 10, seed=4).ravel().tolist() != chosen.tolist()
  for everything in (None, 0, 100, 500):
    assert data.subset(images, everything, seed=3) is images


def test_dynamic_binarization_fresh_and_reproducible():
  images = tf.data.Dataset.from_tensor_slices(np.full((200, 4, 4, 1), 0.3, np.float32))
  a = as_array(data.dynamic_binarization(images, seed=1))
  b = as_array(data.dynamic_binarization(images, seed=1))
  c = as_array(data.dynamic_binarization(images, seed=2))
  np.testing.assert_array_equal(a, b)
  assert set(np.unique(a)) == {0.0, 1.0}
  assert not np.array_equal(a, c)
  assert abs(a.mean() - 0.3) < 0.03  # Bernoulli(0.3)
  pairs = data.dynamic_binarization(
    tf.data.Dataset.from_tensor_slices((np.ones((3, 2, 2, 1), np.float32), np.arange(3))), seed=0
  )
  assert [int(l) for _, l in pairs] == [0, 1, 2]


def test_missing_and_corrupt_files(data_dir, tmp_path, monkeypatch):
  with pytest.raises(data.DataError, match="does not exist"):
    data.load("mnist", "train", data_dir=str(tmp_path / "nowhere"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte.gz.*GENMODELS_DATA_DIR"):
    data.load("mnist", "train", data_dir=str(empty))
  monkeypatch.setenv(data.DATA_DIR_ENV, str(empty))
  with pytest.raises(data.DataError, match=str(empty)):
    data.load("binarized_mnist", "test")
  with pytest.raises(data.DataError, match="unknown data set"):
    data.load("cifar10", "train", data_dir=str(data_dir))
  with pytest.raises(data.DataError, match="splits"):
    data.load("mnist", "valid", data_dir=str(data_dir))
  write_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)), 2049)
  with pytest.raises(data.DataError, match="magic number"):
    data.load("mnist", "test", data_dir=str(data_dir))
  with gzip.open(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", "wb") as f:
    f.write(struct.pack(">IIII", 2051, 3, 28, 28) + bytes(100))
  with pytest.raises(data.DataError, match="header says"):
    data.load("mnist", "test", data_dir=str(data_dir))
  with gzip.open(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", "wb") as f:
    f.write(struct.pack(">III", 2051, 3, 28))  # cut inside the header
  path = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"
  with pytest.raises(data.DataError) as error:
    data.load("mnist", "test", data_dir=str(data_dir))
  assert str(error.value) == (
    f"corrupt IDX file {path}: only 12 bytes, the header of a 3-dimensional array needs 16"
  )
  (data_dir / "binarized_mnist" / "binarized_mnist_test.amat").write_text("0 1 0\n")
  with pytest.raises(data.DataError, match="line 1 has 3 values"):
    data.load("binarized_mnist", "test", data_dir=str(data_dir))


SHARED = os.environ.get(data.DATA_DIR_ENV)


@pytest.mark.skipif(
  not SHARED or not os.path.isdir(os.path.join(SHARED or "", "binarized_mnist")),
  reason="offline data copy not present (set GENMODELS_DATA_DIR)",
)
def test_real_offline_files():
  counts = {"train": 50_000, "valid": 10_000, "test": 10_000}
  for split, n in counts.items():
    images, labels = data.load_arrays("binarized_mnist", split)
    assert images.shape == (n, 28, 28, 1) and labels is None
    assert set(np.unique(images[:100])) == {0.0, 1.0}
  images, labels = data.load_arrays("mnist", "test")
  assert images.shape == (10_000, 28, 28, 1) and labels.shape == (10_000,)
  assert len(np.unique(images)) > 2 and set(np.unique(labels)) == set(range(10))
  for split, n in (("train", 1565), ("valid", 200), ("test", 200)):
    faces, _ = data.load_arrays("frey_faces", split)
    assert faces.shape == (n, 28, 20, 1)
    assert 8 / 255 - 1e-6 <= faces.min() and faces.max() <= 238 / 255 + 1e-6
  with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz"):
    data.load("mnist", "train")  # not in the offline copy: clear error


@pytest.mark.skipif(
  not SHARED
  or not os.path.isdir(os.path.join(SHARED or "", "binarized_mnist"))
  or not os.path.isdir(os.path.join(SHARED or "", "mnist")),
  reason="offline data copy not present (set GENMODELS_DATA_DIR)",
)
def test_binarized_mnist_test_file_is_sorted_by_class():
  """Why test subsets are random (`data.subset`), never the first N: the label of every 100th image
  of the static binarized MNIST test file, read off its nearest grey MNIST test image (Hamming
  distance after thresholding at 0.5), never decreases, and its classes start where MNIST's class
  counts say. The first 500 images are all zeros; a random 500 hold every digit."""
  binary, _ = data.load_arrays("binarized_mnist", "test")
  grey, labels = data.load_arrays("mnist", "test")
  grey = grey.reshape(len(grey), -1) > 0.5

  def label(image):
    return int(labels[np.argmin((grey != (image.ravel() > 0.5)).sum(axis=1))])

  every_100th = [label(binary[i]) for i in range(0, 10_000, 100)]
  assert every_100th == sorted(every_100th)
  starts = np.concatenate([[0], np.cumsum(np.bincount(labels))[:-1]])  # 0, 980, 2115, ...
  assert [label(binary[i]) for i in starts] == list(range(10))
  assert {label(x) for x in binary[:500:25]} == {0}
  random_500 = data.subset(binary, 500, seed=2020)
  assert {label(x) for x in random_500[::5]} == set(range(10))


def test_named_reference_reads_the_loaders_files(data_dir, monkeypatch):
  """`--reference tfds:mnist/test` (evaluation.references) finds and reads the same files as the
  training loader, with the same reader: same images, also unzipped, same error messages."""
  from evaluation import image_io, references

  assert references.DATA_DIR_ENV == data.DATA_DIR_ENV == "GENMODELS_DATA_DIR"
  monkeypatch.setenv(data.DATA_DIR_ENV, str(data_dir))
  images, _ = data.load_arrays("mnist", "test")
  named = references.NamedReference("tfds:mnist/test").load(download=False)
  assert named.dtype == np.uint8 and named.shape == (5, 28, 28, 1)
  np.testing.assert_array_equal(named, np.round(images * 255))
  gz = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"
  (data_dir / "mnist" / "t10k-images-idx3-ubyte").write_bytes(gzip.open(gz).read())
  gz.unlink()
  np.testing.assert_array_equal(
    references.NamedReference("tfds:mnist/test").load(download=False), named
  )
  np.testing.assert_array_equal(data.load_arrays("mnist", "test")[0], images)
  labels_header = struct.pack(">II", 2049, 3)  # a labels file under the images file's name
  (data_dir / "mnist" / "t10k-images-idx3-ubyte").write_bytes(labels_header + bytes(3))
  with pytest.raises(data.DataError) as from_loader:
    data.load_arrays("mnist", "test")
  with pytest.raises(image_io.ImageInputError) as from_reference:
    references.NamedReference("tfds:mnist/test").load(download=False)
  assert (
    str(from_reference.value)
    == str(from_loader.value)
    == (
      f"corrupt IDX file {data_dir / 'mnist' / 't10k-images-idx3-ubyte'}: magic number "
      "0x00000801, expected 0x00000803"
    )
  )
