"""The shared importance-weighted estimator on a linear-Gaussian model with a closed-form p(x).

Model: z ~ N(0, 1), x | z ~ N(z, s^2)  =>  p(x) = N(0, 1 + s^2),
posterior p(z | x) = N(x / (1 + s^2), s^2 / (1 + s^2)).
"""

import math
import re

import numpy as np
import pytest
import tensorflow as tf

from evaluation import likelihood

S2 = 0.5  # observation variance s^2


def log_normal(x, mean, var):
  return -0.5 * (tf.math.log(2 * math.pi * var) + tf.square(x - mean) / var)


def exact_log_px(x):
  return log_normal(x, 0.0, 1.0 + S2)


def make_log_weight_fn(q_mean_fn, q_var, seed=0):
  gen = tf.random.Generator.from_seed(seed)

  def log_weight_fn(x, k):  # x: [B] -> [k, B]
    mean = q_mean_fn(x)
    z = mean + tf.sqrt(q_var) * gen.normal([k, tf.shape(x)[0]])
    return log_normal(z, 0.0, 1.0) + log_normal(x, z, S2) - log_normal(z, mean, q_var)

  return log_weight_fn


X = tf.constant(np.linspace(-2.5, 2.5, 64), tf.float32)


def test_exact_when_proposal_is_true_posterior():
  fn = make_log_weight_fn(lambda x: x / (1 + S2), S2 / (1 + S2))
  for k in (1, 7, 100):
    est = likelihood.importance_weighted_log_likelihood(fn, X, num_samples=k, chunk_size=3)
    np.testing.assert_allclose(est.log_likelihood.numpy(), exact_log_px(X).numpy(), atol=1e-5)
    np.testing.assert_allclose(est.elbo.numpy(), exact_log_px(X).numpy(), atol=1e-5)


def prior_proposal_elbo(x):
  """ELBO with q(z|x) = p(z) = N(0, 1): KL = 0 and E_z[log N(x; z, s^2)] =
  -log(2 pi s^2) / 2 - (x^2 + 1) / (2 s^2)  (x - z ~ N(x, 1))."""
  return -0.5 * np.log(2 * np.pi * S2) - (x**2 + 1) / (2 * S2)


def test_elbo_and_iwae_values_with_the_prior_as_proposal():
  fn = make_log_weight_fn(lambda x: 0.0 * x, 1.0)  # prior as proposal: loose ELBO
  x = X.numpy().astype(np.float64)
  # The ELBO field is the mean of log w over K samples: the closed form within 5 standard errors
  # (var log w = var((x - z)^2) / (4 s^4) = (2 + 4 x^2) / (4 s^4)).
  est = likelihood.importance_weighted_log_likelihood(fn, X, num_samples=1000, chunk_size=64)
  standard_error = np.sqrt((2 + 4 * x**2) / (4 * S2**2) / 1000)
  np.testing.assert_array_less(
    np.abs(est.elbo.numpy() - prior_proposal_elbo(x)), 5 * standard_error
  )
  # IWAE_1000 is within 0.25 nats of the exact log p(x) at every point, while the ELBO is >= 0.45
  # nats below it (the gap KL(p(z) || p(z|x)) = (3 - 1 - ln 3) / 2 = 0.45 nats at x = 0 and grows
  # with |x|).
  exact = exact_log_px(X).numpy()
  np.testing.assert_allclose(est.log_likelihood.numpy(), exact, atol=0.25)
  assert np.all(exact - prior_proposal_elbo(x) > 0.45)
  fn = make_log_weight_fn(lambda x: 0.0 * x, 1.0)  # a fresh stream
  means = {}
  for k in (1, 10, 100, 1000):
    est = likelihood.importance_weighted_log_likelihood(fn, X, num_samples=k, chunk_size=64)
    means[k] = float(tf.reduce_mean(est.log_likelihood))
  assert means[1] < means[10] < means[100] < means[1000]
  assert means[1000] <= float(tf.reduce_mean(exact_log_px(X))) + 0.02
  assert means[1000] == pytest.approx(float(tf.reduce_mean(exact_log_px(X))), abs=0.05)


def test_chunking_equals_one_pass_for_the_same_samples():
  # A log-weight stream whose values depend only on how many samples were drawn so far.
  def stream(seed):
    counter = tf.Variable(0)

    def fn(x, k):
      rows = tf.range(counter, counter + k)
      counter.assign_add(k)
      return tf.sin(tf.cast(rows, tf.float32)[:, None] * 7.0 + x[None, :]) * 40.0 + seed

    return fn

  one = likelihood.importance_weighted_log_likelihood(stream(0), X, num_samples=50)
  chunked = likelihood.importance_weighted_log_likelihood(
    stream(0), X, num_samples=50, chunk_size=8
  )
  np.testing.assert_allclose(one.log_likelihood.numpy(), chunked.log_likelihood.numpy(), rtol=1e-10)
  np.testing.assert_allclose(one.elbo.numpy(), chunked.elbo.numpy(), rtol=1e-10)
  direct = likelihood.iwae_bound(stream(0)(X, 50))
  np.testing.assert_allclose(one.log_likelihood.numpy(), direct.numpy(), rtol=1e-5)


def test_logsumexp_is_over_samples_not_batch():
  log_w = tf.constant([[0.0, -10.0], [math.log(3.0), -10.0]])  # [K=2, B=2]
  np.testing.assert_allclose(
    likelihood.iwae_bound(log_w).numpy(), [math.log(2.0), -10.0], atol=1e-6
  )


def test_evaluate_over_batches_and_compiled():
  fn = make_log_weight_fn(lambda x: x / (1 + S2), S2 / (1 + S2))
  batches = tf.data.Dataset.from_tensor_slices(X).batch(16)
  summary = likelihood.evaluate_log_likelihood(
    fn, batches, num_samples=20, chunk_size=6, num_dims=1, progress=False
  )
  assert summary.num_examples == 64
  assert summary.nll == pytest.approx(-float(tf.reduce_mean(exact_log_px(X))), abs=1e-4)
  assert summary.negative_elbo == pytest.approx(summary.nll, abs=1e-4)
  assert summary.bits_per_dim == pytest.approx(summary.nll / math.log(2), rel=1e-9)
  again = likelihood.evaluate_log_likelihood(
    fn, batches, num_samples=20, chunk_size=6, num_dims=1, progress=False
  )
  assert again.nll == pytest.approx(summary.nll, abs=1e-4)
  compiled = likelihood._compiled_estimator(fn, 20, 6, False)
  assert compiled.experimental_get_tracing_count() == 1  # the second pass reused the first trace


def test_bits_per_dim_and_errors():
  assert likelihood.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
  assert likelihood.bits_per_dim(0.0, 10, offset_bits=8.0) == 8.0
  with pytest.raises(ValueError):
    likelihood.importance_weighted_log_likelihood(lambda x, k: x, X, num_samples=0)
  with pytest.raises(ValueError, match="no data"):
    likelihood.evaluate_log_likelihood(
      lambda x, k: x[None], [], num_samples=1, num_dims=1, progress=False
    )


def test_interrupted_evaluation_resumes_to_the_uninterrupted_numbers(tmp_path, capsys):
  """resume_path: per-example results and the generator state are saved after every batch; a
  rerun with the same key skips the finished batches and draws what an uninterrupted run draws."""

  def run(batches, path=None, key="k1", progress=False):
    gen = tf.random.Generator.from_seed(3)  # a fresh model: the generator starts from its seed

    def log_weight_fn(x, k):  # the prior as proposal: every draw changes the estimate
      z = gen.normal([k, tf.shape(x)[0]])
      return log_normal(x, z, S2)

    return likelihood.evaluate_log_likelihood(
      log_weight_fn,
      batches,
      num_samples=5,
      num_dims=1,
      progress=progress,
      resume_path=path,
      resume_key=key,
      rng_variables=[gen.state],
    )

  batches = [X[i : i + 16] for i in range(0, 64, 16)]
  full = run(batches).per_example_log_likelihood

  path = str(tmp_path / "nll_partial.npz")
  savez = np.savez

  def interrupt_at_third_save(monkeypatch):  # e.g. the session ends during the third batch
    calls = []

    def save(*args, **kwargs):
      calls.append(1)
      if len(calls) == 3:
        raise KeyboardInterrupt
      savez(*args, **kwargs)

    monkeypatch.setattr(np, "savez", save)

  with pytest.MonkeyPatch.context() as mp:
    interrupt_at_third_save(mp)
    with pytest.raises(KeyboardInterrupt):
      run(batches, path)
  with np.load(path) as f:
    assert int(f["batches_done"]) == 2 and f["log_px"].shape == (32,)
  resumed = run(batches, path, progress=True).per_example_log_likelihood
  out = capsys.readouterr().out
  assert (
    "Resumed the likelihood evaluation" in out and "2 batches (32 examples) done, 2 to go" in out
  )
  np.testing.assert_array_equal(resumed, full)
  # The bar counts the 2 batches computed now, not 4: its time per batch is elapsed / count.
  counts = re.findall(r"(\d+)/(\d+)\b", re.sub(r"\x1b\[[0-9;]*m", "", out))
  assert counts and counts[-1] == ("2", "2"), counts
  # The progress bar's nll is the running mean over all 64 examples, the 32 resumed ones included.
  shown = re.findall(r"nll: (-?[0-9.]+)", out)
  assert shown and float(shown[-1]) == pytest.approx(-full.mean(), abs=1e-4), (shown, -full.mean())
  assert not (tmp_path / "nll_partial.npz").exists()  # removed once complete

  # Partial results of another evaluation (other checkpoint / K / data) are never mixed in.
  with pytest.MonkeyPatch.context() as mp:
    interrupt_at_third_save(mp)
    with pytest.raises(KeyboardInterrupt):
      run(batches, path, key="other checkpoint")
  again = run(batches, path).per_example_log_likelihood
  assert "belongs to another evaluation" in capsys.readouterr().out
  np.testing.assert_array_equal(again, full)


def test_sigterm_finishes_and_saves_the_batch_in_hand_then_resumes_exactly(tmp_path, monkeypatch):
  """A scheduler's SIGTERM during batch 3 of 4: that batch is completed and written, the call raises
  `Preempted` (the scripts' one line, exit 143) instead of dying, and the rerun gives the
  uninterrupted numbers. The evaluation time is summed over the two calls (a clock that advances
  1 s per reading: 1 s per batch)."""
  import itertools
  import os
  import signal
  import types

  from common_tf import preemption

  clock = itertools.count()
  monkeypatch.setattr(likelihood, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))

  def run(path=None, kill_at_call=None):
    gen = tf.random.Generator.from_seed(3)
    calls = []

    def maybe_kill(x):
      calls.append(1)
      if len(calls) == kill_at_call:  # inside the compiled call of that batch
        os.kill(os.getpid(), signal.SIGTERM)
      return x

    def log_weight_fn(x, k):
      x = tf.py_function(maybe_kill, [x], tf.float32)
      z = gen.normal([k, 16])
      return log_normal(x, z, S2)

    return likelihood.evaluate_log_likelihood(
      log_weight_fn,
      batches,
      num_samples=5,
      num_dims=1,
      progress=False,
      resume_path=path,
      resume_key="k",
      rng_variables=[gen.state],
    )

  batches = [X[i : i + 16] for i in range(0, 64, 16)]
  uninterrupted = run()
  full = uninterrupted.per_example_log_likelihood
  assert uninterrupted.seconds == 4.0
  path = str(tmp_path / "nll_partial.npz")
  with pytest.raises(preemption.Preempted, match="SIGTERM after 3 batches .*48 examples") as caught:
    run(path, kill_at_call=3)
  assert caught.value.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was removed
  with np.load(path) as f:
    assert int(f["batches_done"]) == 3 and f["log_px"].shape == (48,) and float(f["seconds"]) == 3.0
  resumed = run(path)
  np.testing.assert_array_equal(resumed.per_example_log_likelihood, full)
  assert resumed.batches_evaluated == 1 and resumed.seconds == 4.0  # 3 s before the signal + 1 s
  assert not os.path.exists(path)


def test_resumed_evaluation_names_the_host_of_every_batch(tmp_path, monkeypatch):
  """Batches computed on one machine and resumed on another (a carried resume file): the summary
  counts the batches of each host, also through a second resume; a resume file written before
  hosts were recorded counts its batches under `UNRECORDED_HOST`."""
  from common_tf import host

  batches = [X[i : i + 16] for i in range(0, 64, 16)]
  path = str(tmp_path / "nll_partial.npz")

  def run(cpu, stop_after=None):
    monkeypatch.setattr(host, "cpu_model", lambda: cpu)
    calls = []

    def log_weight_fn(x, k):
      calls.append(1)
      if len(calls) == stop_after:  # eager (py_function), once per batch: the session ends here
        raise ValueError("stop")
      return log_normal(x, tf.zeros([k, tf.shape(x)[0]]), S2)

    return likelihood.evaluate_log_likelihood(
      lambda x, k: tf.py_function(lambda x: log_weight_fn(x, k), [x], tf.float32),
      batches,
      num_samples=5,
      num_dims=1,
      progress=False,
      resume_path=path,
      resume_key="k",
    )

  with pytest.raises(Exception, match="stop"):
    run("Xeon, AVX-512", stop_after=2)
  assert likelihood.resume_file_hosts(path) == ["Xeon, AVX-512"]
  with pytest.raises(Exception, match="stop"):
    run("EPYC, AVX2", stop_after=2)
  assert likelihood.resume_file_hosts(path) == ["Xeon, AVX-512", "EPYC, AVX2"]
  summary = run("Xeon, AVX-512")
  assert summary.hosts == {"Xeon, AVX-512": 3, "EPYC, AVX2": 1} and summary.batches_evaluated == 2
  assert run("EPYC, AVX2").hosts == {"EPYC, AVX2": 4}  # no resume file: all batches here

  with pytest.raises(Exception, match="stop"):
    run("Xeon, AVX-512", stop_after=3)
  with np.load(path) as f:  # rewritten as a file of before 2026-12-02: no host record
    old = {k: f[k] for k in f.files if k != "hosts"}
  np.savez(path, **old)
  assert likelihood.resume_file_hosts(path) == [likelihood.UNRECORDED_HOST]
  assert run("EPYC, AVX2").hosts == {likelihood.UNRECORDED_HOST: 2, "EPYC, AVX2": 2}
