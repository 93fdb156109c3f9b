"""evaluation.resume_cache.BatchCache: the resume file of the per-batch evaluations (the test NLL of
`evaluation.likelihood`, the DDPM bound of `experiments.sample_quality_train`). Their own resume
tests run the whole evaluations; these pin the file itself, with NumPy stand-ins for the batches."""

import os

import numpy as np
import pytest

from evaluation import resume_cache


class Counter:
  """A stand-in for a generator's state variable (`assign`, `numpy`)."""

  def __init__(self, value=0):
    self.value = np.int64(value)

  def assign(self, value):
    self.value = np.int64(value)

  def numpy(self):
    return self.value


def evaluate(path, batches, *, key="k", keep=False, stop_before=None, counter=None, **kwargs):
  """Draws one normal per example from a generator seeded by `counter`, which each batch advances
  (the random stream a resumed evaluation must continue); stops (KeyboardInterrupt) before batch
  `stop_before`. Returns (values, batches computed by this call)."""
  counter = counter or Counter()
  cache = resume_cache.BatchCache(path, key=key, rng_variables=[counter], keep=keep, **kwargs)
  done = cache.restore(len(batches))
  computed = 0
  for i, x in enumerate(batches):
    if i < done:
      continue
    if i == stop_before:
      raise KeyboardInterrupt
    noise = np.random.default_rng(int(counter.numpy())).normal(size=len(x))
    counter.assign(counter.numpy() + 1)
    cache.add(seconds=1.0, values=x + noise)
    computed += 1
  cache.complete()
  return cache.array("values"), computed


BATCHES = [np.arange(i, i + 4, dtype=np.float64) for i in range(0, 12, 4)]
# Batch i draws from the generator seeded i: the uninterrupted values, computed independently.
EXPECTED = np.concatenate(
  [x + np.random.default_rng(i).normal(size=4) for i, x in enumerate(BATCHES)]
)


def test_the_file_after_each_batch_and_an_exact_resume(tmp_path, capsys):
  path = str(tmp_path / "partial.npz")
  with pytest.raises(KeyboardInterrupt):
    evaluate(path, BATCHES, stop_before=2)
  with np.load(path) as f:  # the layout evaluation.likelihood's resume files always had
    assert sorted(f.files) == [
      "batches_done",
      "hosts",
      "key",
      "num_rng",
      "rng_0",
      "seconds",
      "values",
    ]
    assert (int(f["batches_done"]), int(f["rng_0"]), float(f["seconds"])) == (2, 2, 2.0)
    assert str(f["key"]) == '"k"'
    np.testing.assert_array_equal(f["values"], EXPECTED[:8])
  assert resume_cache.resume_file_hosts(path) == [resume_cache.host.cpu_model()]
  values, computed = evaluate(path, BATCHES)  # a fresh generator: restored from the file
  np.testing.assert_array_equal(values, EXPECTED)
  assert computed == 1 and not os.path.exists(path)  # deleted once complete
  assert "Resumed the evaluation from" in capsys.readouterr().out


def test_a_kept_file_makes_a_rerun_compute_nothing_and_another_key_starts_afresh(tmp_path, capsys):
  path = str(tmp_path / "bound.npz")
  assert evaluate(path, BATCHES, keep=True)[1] == 3
  values, computed = evaluate(path, BATCHES, keep=True)
  np.testing.assert_array_equal(values, EXPECTED)
  assert computed == 0 and os.path.exists(path)
  values, computed = evaluate(path, BATCHES, key={"step": 8}, keep=True)
  assert computed == 3 and "belongs to another evaluation" in capsys.readouterr().out
  np.testing.assert_array_equal(values, EXPECTED)


def test_a_file_with_other_generator_states_is_not_used(tmp_path):
  path = str(tmp_path / "partial.npz")
  with pytest.raises(KeyboardInterrupt):
    evaluate(path, BATCHES, stop_before=2)
  cache = resume_cache.BatchCache(path, key="k")  # no generator states to restore
  assert cache.restore() == 0 and cache.num_examples == 0


def test_a_file_without_its_batch_count_resumes_from_its_length(tmp_path, capsys):
  """The DDPM bound's files of before this module held the key and the values only: 8 values in
  batches of 4 are 2 batches; 9 would be 3 (the last one short). Without `examples_per_batch` such
  a file cannot be read and the evaluation starts afresh."""
  path = str(tmp_path / "old.npz")
  np.savez(path, key='"k"', values=EXPECTED[:8])
  cache = resume_cache.BatchCache(path, key="k", examples_per_batch=4)
  assert cache.restore() == 2
  np.testing.assert_array_equal(cache.array("values"), EXPECTED[:8])
  assert cache.hosts == {resume_cache.UNRECORDED_HOST: 2} and cache.seconds == 0.0
  np.savez(path, key='"k"', values=EXPECTED[:9])
  assert resume_cache.BatchCache(path, key="k", examples_per_batch=4).restore() == 3
  assert resume_cache.BatchCache(path, key="k").restore() == 0
  assert "belongs to another evaluation" in capsys.readouterr().out


def test_bookkeeping_names_are_refused():
  cache = resume_cache.BatchCache(None, key="k")
  for name in ("hosts", "key", "rng_0"):
    with pytest.raises(ValueError, match=name):
      cache.add(**{name: np.zeros(2)})
  assert cache.batches_done == 0
