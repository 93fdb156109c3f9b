"""The importance-weighted likelihood estimator shared by every VAE of the suite.

For a latent-variable model with proposal q(z|x), the importance weights are
w_k = p(x, z_k) / q(z_k | x), z_k ~ q(z | x), and (Burda et al. 2016, eq. 8)

    log p(x) >= IWAE_K(x) = E[ logsumexp_k(log w_k) - log K ] >= ELBO(x) = E[ log w_1 ],

with IWAE_K non-decreasing in K and tending to log p(x). The log-sum-exp is over the SAMPLE axis
(axis 0 of `log_weights`), never over the batch. With K = 1000 or 5000 the samples are drawn in
chunks and combined by a running log-sum-exp, so memory is bounded by the chunk size.

Everything is in nats per example, summed over data dimensions; `bits_per_dim` converts.
"""

from __future__ import annotations

import dataclasses
import math
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tensorflow as tf

from common_tf import random as common_random
from evaluation import resume_cache
from evaluation.resume_cache import UNRECORDED_HOST, resume_file_hosts  # noqa: F401  (re-exported)

# `log_weight_fn(x, k)` returns log p(x, z) - log q(z | x) for k fresh samples: [k, B].
LogWeightFn = Callable[[tf.Tensor, int], tf.Tensor]


def iwae_bound(log_weights: tf.Tensor) -> tf.Tensor:
  """IWAE_K = logsumexp_k(log w_k) - log K over axis 0 of `log_weights` [K, B] -> [B]."""
  log_weights = tf.convert_to_tensor(log_weights)
  num_samples = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
  return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(num_samples)


def bits_per_dim(nats, num_dims: int, *, offset_bits: float = 0.0):
  """bits/dim = nats / (D ln 2) + offset_bits.

  `offset_bits` is the change of the bits/dim caused by rescaling the data (e.g. +8 for a density
  on [0, 1] reported for 8-bit data: log2(256) per dimension); say so where it is reported.
  """
  return nats / (num_dims * math.log(2.0)) + offset_bits


@dataclasses.dataclass(frozen=True)
class LikelihoodEstimate:
  """Per-example estimates [B] for one batch, in nats."""

  log_likelihood: tf.Tensor  # IWAE_K, the importance-weighted estimate of log p(x)
  elbo: tf.Tensor  # mean over the K samples of log w_k (unbiased ELBO estimate)
  samples_drawn: tf.Tensor  # int32 scalar: how many log-weights `log_weight_fn` really returned


def importance_weighted_log_likelihood(
  log_weight_fn: LogWeightFn,
  x,
  *,
  num_samples: int,
  chunk_size: int | None = None,
  rng_variables: Iterable[tf.Variable] = (),
) -> LikelihoodEstimate:
  """log p(x) ~= logsumexp_k(log w_k) - log K, drawing the K samples `chunk_size` at a time.

  Chunks are combined with a running (max, sum of exp) pair: memory grows with `chunk_size`,
  not with `num_samples`. K in the formula is the number of log-weights actually returned
  (`samples_drawn`), which callers compare with what they asked for. Call inside a
  `tf.function` for speed; works eagerly too.

  With `rng_variables` (the state variables of the model's `SeedGenerator`s,
  `seed_generator_states`) the result does not depend on `chunk_size`: every chunk starts from the
  generator states of the first, and the draws of `common_tf.random` inside are keyed by the
  index of the importance sample (`common_tf.random.sample_indexed`), so sample j gets the same
  noise whether it is drawn in a chunk of 10 or of 1000. The states end where one call for all K
  samples would leave them.
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  chunk = min(chunk_size or num_samples, num_samples)
  full_chunks, remainder = divmod(num_samples, chunk)
  rng_variables = list(rng_variables)
  starts = [tf.identity(tf.convert_to_tensor(v)) for v in rng_variables]
  examples = tf.shape(x)[0]

  def draw(first, k):  # log-weights of samples first .. first + k - 1
    if not rng_variables:
      return log_weight_fn(x, k)
    for v, start in zip(rng_variables, starts):
      v.assign(start)
    with common_random.sample_indexed(first, examples):
      return log_weight_fn(x, k)

  def combine(state, log_w):  # log_w: [k, B]
    running_max, running_sum, sum_log_w, drawn = state
    log_w = tf.cast(log_w, tf.float64)
    new_max = tf.maximum(running_max, tf.reduce_max(log_w, axis=0))
    # Guard -inf - -inf; a -inf weight contributes exp(-inf) = 0.
    safe_max = tf.where(tf.math.is_finite(new_max), new_max, tf.zeros_like(new_max))
    running_sum = running_sum * tf.exp(running_max - safe_max) + tf.reduce_sum(
      tf.exp(log_w - safe_max), axis=0
    )
    return (
      safe_max,
      running_sum,
      sum_log_w + tf.reduce_sum(log_w, axis=0),
      drawn + tf.shape(log_w)[0],
    )

  first = tf.cast(draw(0, chunk), tf.float64)  # [chunk, B]
  batch = tf.shape(first)[1:]
  state = combine(
    (
      tf.fill(batch, tf.constant(-np.inf, tf.float64)),
      tf.zeros(batch, tf.float64),
      tf.zeros(batch, tf.float64),
      tf.constant(0, tf.int32),
    ),
    first,
  )
  for _ in tf.range(full_chunks - 1):
    state = combine(state, draw(state[3], chunk))
  if remainder:
    state = combine(state, draw(state[3], remainder))
  running_max, running_sum, sum_log_w, drawn = state
  k = tf.cast(drawn, tf.float64)
  log_likelihood = running_max + tf.math.log(running_sum) - tf.math.log(k)
  return LikelihoodEstimate(log_likelihood=log_likelihood, elbo=sum_log_w / k, samples_drawn=drawn)


@dataclasses.dataclass(frozen=True)
class LikelihoodSummary:
  """Test-set summary in nats per example (NLL = -log p(x))."""

  nll: float  # mean of -IWAE_K
  nll_sem: float  # standard error of that mean over examples
  negative_elbo: float  # mean of -ELBO
  bits_per_dim: float  # nll in bits/dim (no offset)
  num_examples: int
  num_samples: int  # K the estimator actually used (counted, equal to the request)
  per_example_log_likelihood: np.ndarray  # [N]
  per_example_elbo: np.ndarray | None = None  # [N]
  batches_evaluated: int = (
    0  # batches computed by this call (the others were read from a resume file)
  )
  seconds: float = 0.0  # wall time of the batches, over resumed calls too (in the resume file)
  # {host (`common_tf.host.cpu_model`): batches it computed}, over resumed calls too
  hosts: dict = dataclasses.field(default_factory=dict)


# Compiled estimators per owner of `log_weight_fn` (the model of a bound method): weakly keyed,
# so the cache never keeps a model alive, and repeated test passes do not retrace.
_ESTIMATORS: weakref.WeakKeyDictionary[Any, dict] = weakref.WeakKeyDictionary()


def _compiled_estimator(
  log_weight_fn: LogWeightFn,
  num_samples: int,
  chunk_size: int | None,
  jit_compile: bool,
  strategy: tf.distribute.Strategy | None = None,
  rng_variables: Iterable[tf.Variable] = (),
):
  """`x [B, ...] -> (log_likelihood [B], elbo [B], samples_drawn)`, compiled once per settings.

  Under a strategy with several replicas (or workers) each replica takes its contiguous slice of
  the batch (B must be a multiple of the replica count) and the results are gathered back in
  batch order, so they equal one device's whenever the log-weights do not depend on which device
  drew them.
  """
  owner = getattr(log_weight_fn, "__self__", None)
  if owner is None:
    owner, ref = log_weight_fn, weakref.ref(log_weight_fn)
  else:
    ref = weakref.WeakMethod(log_weight_fn)
  table = _ESTIMATORS.setdefault(owner, {})
  key = (
    getattr(log_weight_fn, "__func__", None),
    num_samples,
    chunk_size,
    jit_compile,
    id(strategy) if strategy is not None else None,
    tuple(id(v) for v in rng_variables),
  )
  if key in table:
    return table[key]
  rng_refs = [weakref.ref(v) for v in rng_variables]  # the cache keeps no model alive

  def estimate(x):
    result = importance_weighted_log_likelihood(
      ref(),
      x,
      num_samples=num_samples,
      chunk_size=chunk_size,
      rng_variables=[r() for r in rng_refs],
    )
    return result.log_likelihood, result.elbo, result.samples_drawn

  if strategy is None or strategy.num_replicas_in_sync == 1:
    compiled = tf.function(estimate, jit_compile=jit_compile)
  else:
    replicas = strategy.num_replicas_in_sync

    def replica_estimate(x):
      ctx = tf.distribute.get_replica_context()
      size = tf.shape(x)[0] // replicas
      return estimate(
        x[ctx.replica_id_in_sync_group * size : (ctx.replica_id_in_sync_group + 1) * size]
      )

    @tf.function
    def compiled(x):
      log_px, elbo, drawn = strategy.run(replica_estimate, args=(x,))
      return (
        strategy.gather(log_px, axis=0),
        strategy.gather(elbo, axis=0),
        strategy.experimental_local_results(drawn)[0],
      )

  table[key] = compiled
  return compiled


def seed_generator_states(model) -> list:
  """The state variables of the `keras.random.SeedGenerator`s a model owns: the `rng_variables` of
  `evaluate_log_likelihood`, so a resumed evaluation continues their random streams."""
  return [v for v in model.variables if "seed_generator_state" in v.path]


# How the importance samples are drawn (`importance_weighted_log_likelihood`): each keyed by its
# index, so that a resume file of another scheme is never continued with this one.
SAMPLING = "indexed"


def _resume_key(resume_key: Any, rng_variables: list) -> Any:
  """The caller's key, with the sampling scheme when the estimator draws from `rng_variables`."""
  return {"evaluation": resume_key, "sampling": SAMPLING} if rng_variables else resume_key


def evaluate_log_likelihood(
  log_weight_fn: LogWeightFn,
  batches: Iterable,
  *,
  num_samples: int,
  num_dims: int,
  chunk_size: int | None = None,
  progress: bool = True,
  jit_compile: bool = False,
  strategy: tf.distribute.Strategy | None = None,
  resume_path: str | None = None,
  resume_key: Any = None,
  rng_variables: Iterable[tf.Variable] = (),
  chief: bool = True,
) -> LikelihoodSummary:
  """Runs `importance_weighted_log_likelihood` over batches of x (a tf.data dataset or arrays).

  Each batch is one compiled call; `num_dims` is D of one example, for bits/dim. With a
  `strategy` of several replicas/workers each batch is split over them (padded with copies of
  its last example to a multiple of the replica count; the copies are dropped). Raises if
  `log_weight_fn` returned a different number of samples than `num_samples`.

  Resumable (for K = 1000-5000 over 10,000 images, hours on a CPU): with `resume_path`, the
  per-example results so far, the number of batches done, the values of `rng_variables` (the
  model's `SeedGenerator` states, whose draws the estimator consumes) and the time and host of the
  batches (`LikelihoodSummary.seconds`, `.hosts`) are written atomically after every batch. A
  later call with the same `resume_key` (JSON-able: checkpoint, K, data, seed...) skips the
  finished batches and restores the generator states, so an interrupted and resumed evaluation
  gives the uninterrupted one's numbers. A file with another key is ignored
  (and replaced); the file is deleted when the evaluation completes. With `resume_path`, SIGTERM /
  SIGINT finish the batch in hand (a second signal stops at once), write it and raise
  `common_tf.preemption.Preempted`: the scripts print one line and exit with 128 + the signal.
  The file is an `evaluation.resume_cache.BatchCache` (arrays `log_px`, `elbo`); its key names the
  sampling scheme too (`SAMPLING`), so a file written by an earlier scheme starts afresh.
  Under several workers every worker reads the resume file (in the shared run directory) and only
  the chief (`chief=True`) writes and deletes it; the others pass `chief=False`.

  With `rng_variables` the estimate does not depend on `chunk_size`
  (`importance_weighted_log_likelihood`), so a chunk chosen from a memory budget
  (`choose_chunk`) changes the memory, not the numbers.
  """
  rng_variables = list(rng_variables)
  estimate = _compiled_estimator(
    log_weight_fn, num_samples, chunk_size, jit_compile, strategy, rng_variables
  )
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  batches = list(batches) if not isinstance(batches, tf.data.Dataset) else batches
  total = len(batches) if isinstance(batches, list) else int(batches.cardinality())
  cache = resume_cache.BatchCache(
    resume_path,
    key=_resume_key(resume_key, rng_variables),
    rng_variables=rng_variables,
    what="the likelihood evaluation",
    writer=chief,
  )
  done, evaluated = cache.restore(total), 0
  bar = None
  if progress:
    import keras

    # The bar counts this call's batches only: Progbar's time per batch is its elapsed time over
    # its count, so counting the resumed batches too made it (and the ETA) look many times faster.
    # "nll" is the running -mean log p(x) over every example done, resumed ones included (as a
    # Progbar average it weighted the first batch after a resume by the batches skipped).
    bar = keras.utils.Progbar(
      total - done if total > 0 else None, unit_name="batch", stateful_metrics=["nll"]
    )
  # With a resume file: finish and save the batch in hand, then stop.
  with cache.stop_requests() as stop_request:
    for i, x in enumerate(batches):
      if i < done:
        continue
      cache.stop_if_requested(stop_request, i)  # the batches before i are in the resume file
      start = time.perf_counter()
      x = tf.convert_to_tensor(x)
      size = int(x.shape[0])
      if size % replicas:
        x = tf.concat([x, tf.repeat(x[-1:], replicas - size % replicas, axis=0)], axis=0)
      ll, e, drawn = estimate(x)
      if int(drawn) != num_samples:
        raise ValueError(
          f"the log-weight function returned {int(drawn)} importance samples per "
          f"example, not the {num_samples} asked for"
        )
      evaluated += 1
      seconds = time.perf_counter() - start
      cache.add(seconds=seconds, log_px=ll.numpy()[:size], elbo=e.numpy()[:size])
      if bar is not None:
        bar.update(i + 1 - done, [("nll", -float(np.mean(cache.array("log_px"))))])
  if not cache.batches_done:
    raise ValueError("no data to evaluate the likelihood on")
  log_px, elbo = cache.array("log_px"), cache.array("elbo")
  if not np.all(np.isfinite(log_px)):
    raise FloatingPointError(f"{int(np.sum(~np.isfinite(log_px)))} non-finite log-likelihoods")
  cache.complete()
  nll = float(-log_px.mean())
  return LikelihoodSummary(
    batches_evaluated=evaluated,
    seconds=cache.seconds,
    hosts=cache.hosts,
    nll=nll,
    nll_sem=float(log_px.std(ddof=1) / np.sqrt(len(log_px))) if len(log_px) > 1 else 0.0,
    negative_elbo=float(-elbo.mean()),
    bits_per_dim=float(bits_per_dim(nll, num_dims)),
    num_examples=len(log_px),
    num_samples=num_samples,
    per_example_log_likelihood=log_px,
    per_example_elbo=elbo,
  )


# ----------------------------------------------------------------------------- memory budget

GIB = 2**30
# Resident memory per byte the allocator has in use at the peak of a compiled call, beyond the
# resident memory before the evaluation: TensorFlow's BFC host allocator reserves regions in
# doubling sizes and keeps them, so the process holds more than its peak in use. Calibrated with
# bench/bench_nll_memory.py (docs/evaluation_api.md, "Memory budget"): the resident memory per
# sample was 1.2-1.5x the probe's bytes per sample for a VampPrior HVAE, 1.5-2.2x for NVAE.
POOL_FACTOR = 2.5
# Resident memory of the evaluation that the probe calls do not see (the compiled estimator's own
# buffers and loop, the first call's allocations): the measured peaks of small chunks were up to
# 0.3 GiB above resident + POOL_FACTOR x the probe's bytes.
RUNTIME_BYTES = GIB // 2
PROBE_CHUNKS = (4, 8)  # importance samples of the two probe calls


@dataclasses.dataclass(frozen=True)
class ChunkChoice:
  """The chunk `choose_chunk` picked and the measurements it came from (bytes)."""

  chunk: int
  budget_bytes: int
  resident_bytes: int  # the process's resident memory before the evaluation (VmRSS)
  fixed_bytes: float  # allocator bytes of a call besides the samples (the probes' intercept)
  per_sample_bytes: float  # allocator bytes per importance sample of the batch
  probe_bytes: tuple[int, ...] = ()  # the allocator's peak bytes of the probe calls (PROBE_CHUNKS)

  def predicted_peak_bytes(self, chunk: int | None = None) -> float:
    """resident + RUNTIME_BYTES + POOL_FACTOR * (fixed + chunk * per_sample): the peak RSS
    expected at `chunk`."""
    c = self.chunk if chunk is None else chunk
    return (
      self.resident_bytes
      + RUNTIME_BYTES
      + POOL_FACTOR * (self.fixed_bytes + c * self.per_sample_bytes)
    )

  def describe(self) -> str:
    """One line for the log: the chunk and the arithmetic behind it."""
    g = lambda b: f"{b / GIB:.2f} GiB"  # noqa: E731
    return (
      f"likelihood chunk {self.chunk} importance samples per call for a budget of "
      f"{g(self.budget_bytes)}: resident {g(self.resident_bytes)} + {g(RUNTIME_BYTES)} + "
      f"{POOL_FACTOR:g} x "
      f"({g(self.fixed_bytes)} + {self.chunk} x {self.per_sample_bytes / 2**20:.1f} MiB per sample) "
      f"= {g(self.predicted_peak_bytes())} predicted peak"
    )


def chunk_for_budget(
  *,
  budget_bytes: float,
  resident_bytes: float,
  fixed_bytes: float,
  per_sample_bytes: float,
  num_samples: int,
) -> int:
  """The largest chunk c in [1, num_samples] with
  resident + RUNTIME_BYTES + POOL_FACTOR * (fixed + c * per_sample) <= budget (1 when none fits),
  lowered to the largest divisor of num_samples not below c / 2 if there is one: then every call
  has the same shape (one trace, no remainder call with its own buffers)."""
  room = (budget_bytes - resident_bytes - RUNTIME_BYTES) / POOL_FACTOR - fixed_bytes
  if per_sample_bytes <= 0:
    return num_samples
  c = int(min(max(math.floor(room / per_sample_bytes), 1), num_samples))
  return next((d for d in range(c, (c + 1) // 2 - 1, -1) if num_samples % d == 0), c)


def resident_bytes() -> int:
  """The process's resident memory now (VmRSS of /proc/self/status), bytes."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024
  raise OSError("no VmRSS in /proc/self/status")


def _call_bytes(fn, device: str) -> int:
  """Peak bytes the TensorFlow allocator of `device` held during `fn()`, beyond those before."""
  tf.config.experimental.reset_memory_stats(device)
  before = tf.config.experimental.get_memory_info(device)["current"]
  fn()
  return tf.config.experimental.get_memory_info(device)["peak"] - before


def choose_chunk(
  log_weight_fn: LogWeightFn,
  x,
  *,
  num_samples: int,
  memory_gib: float,
  rng_variables: Iterable[tf.Variable] = (),
  replicas: int = 1,
  device: str = "CPU:0",
) -> ChunkChoice:
  """The chunk (importance samples per compiled call) whose peak resident memory fits
  `memory_gib`, from two probe calls of `log_weight_fn` on `x` (one evaluation batch; under
  `replicas` replicas each takes its share) with `PROBE_CHUNKS` samples: the allocator's peak bytes
  of each give the bytes per sample (slope) and the rest (intercept), and `chunk_for_budget` solves
  for the chunk. The generator states (`rng_variables`) are restored afterwards, so the probes
  change no number of the evaluation; with them the estimate does not depend on the chunk
  (`importance_weighted_log_likelihood`).

  Needs the allocator's statistics (`tf.config.experimental.get_memory_info`: TensorFlow's BFC
  host allocator, which `common_tf.host.prefer_bfc_cpu_allocator` selects).
  """
  rng_variables = list(rng_variables)
  saved = [v.numpy() for v in rng_variables]
  x = tf.convert_to_tensor(x)
  x = x[: -(-int(x.shape[0]) // replicas)]
  try:
    tf.config.experimental.get_memory_info(device)
  except ValueError as e:
    raise ValueError(
      f"the memory budget needs TensorFlow's allocator statistics on {device} ({e}); "
      "give the chunk explicitly instead"
    ) from e
  resident = resident_bytes()
  sizes = []
  try:
    for k in PROBE_CHUNKS:  # one chunk of the estimator, as `evaluate_log_likelihood` runs it

      def call(xb, k=k):
        return importance_weighted_log_likelihood(
          log_weight_fn, xb, num_samples=k, rng_variables=rng_variables
        ).log_likelihood

      call = tf.function(call)
      call.get_concrete_function(x)  # tracing is not the call's memory
      sizes.append(_call_bytes(lambda call=call: call(x).numpy(), device))
  finally:
    for v, value in zip(rng_variables, saved):
      v.assign(value)
  (k1, k2), (b1, b2) = PROBE_CHUNKS, sizes
  # The slope, or the bytes per sample of the larger probe when more (the allocator's peaks of
  # small calls vary by some MiB from call to call).
  per_sample = max((b2 - b1) / (k2 - k1), b2 / k2, 0.0)
  fixed = max(b1 - k1 * per_sample, 0.0)
  budget = int(memory_gib * GIB)
  return ChunkChoice(
    chunk=chunk_for_budget(
      budget_bytes=budget,
      resident_bytes=resident,
      fixed_bytes=fixed,
      per_sample_bytes=per_sample,
      num_samples=num_samples,
    ),
    budget_bytes=budget,
    resident_bytes=resident,
    fixed_bytes=fixed,
    per_sample_bytes=per_sample,
    probe_bytes=tuple(sizes),
  )
