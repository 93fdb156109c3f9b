"""Carry long runs to another machine: the resume state of run directories, small enough for git.

    python -m experiments.carry --logdir=../runs/nvae_cpu --carry_dir=carry/nvae_cpu            # pack
    python -m experiments.carry --logdir=../runs/nvae_cpu --carry_dir=carry/nvae_cpu --unpack   # restore

A run directory (one holding the `status.json` that `experiments.harness.Trainer` writes at every
checkpoint; `--logdir` may also be a folder of them, two levels deep) is mostly history: older
checkpoints, TensorBoard event files, sample images. To resume, a run needs only its newest
checkpoint (and the newest of `best/` where early stopping keeps one), its JSON files
(status, settings, validation history) and any partial test-NLL file (`nll_partial*.npz`). Packing
copies exactly those into `--carry_dir`, replacing what that folder held for the run; unpacking
copies them back, after which rerunning the run's own command resumes it.

A run in progress whose newest checkpoint is at its best validation step (stopped with SIGUSR1 at
the end of an epoch that improved: `experiments.harness`) is packed without best/: those are the
checkpoint's weights, and the harness writes best/ again when it resumes.

A run whose training is done (finished, or stopped early) travels as its weights alone: `best/`
(early stopping) or `final/` (`harness.Trainer.weights`: no optimizer slots), its JSON files and
its test values, i.e. a partial test-NLL file (its evaluation resumes from it) or the per-image
values of a completed evaluation; packing it replaces its carried resume state.

Neither direction goes backwards: a run whose destination already holds a state at the same or a
later step is skipped with a line saying so, so a restarted-from-scratch run cannot overwrite a
longer carried one, nor an unpack a longer local one. At the same step (training done, its test
NLL part way), only partial test-NLL files further on than the destination's are copied, or,
when the evaluation completed in the source (it wrote files such as `results.json` that the
destination lacks), those files, the destination's partial files removed.

Bad input (no such folder, no status.json found, bad flags) -> one `error:` line, exit code 2.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

from absl import flags

from evaluation import cli
from experiments import results, run_status

CHECKPOINT_STATE = "checkpoint"  # tf.train.CheckpointManager's state file (a text CheckpointState)
_SKIPPED_SUFFIXES = (".png",)  # sample grids: outputs, not state
_SKIPPED_PREFIXES = ("events.out.tfevents.",)  # TensorBoard history


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string(
    "logdir",
    None,
    "Run directory, or a folder whose sub-folders (two levels "
    "deep) are run directories, as the runs' own commands name it.",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "carry_dir",
    None,
    "Folder that holds the carried state (created when "
    "packing), one sub-folder per run, mirroring --logdir.",
    flag_values=fv,
  )
  flags.DEFINE_boolean(
    "unpack",
    False,
    "Copy the carried state back into --logdir (default: pack --logdir into --carry_dir).",
    flag_values=fv,
  )


def newest_checkpoint(folder: str) -> str | None:
  """The prefix (e.g. 'ckpt-16') named by `model_checkpoint_path` in the folder's state file."""
  path = os.path.join(folder, CHECKPOINT_STATE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', f.read(), re.MULTILINE)
  return os.path.basename(match.group(1)) if match else None


def trained_weights(run: str) -> str | None:
  """The folder ("best" or "final") holding the weights of a run whose training is done (finished
  or stopped early) in weights-only checkpoints (`harness.Trainer.weights`), or None. The weights
  evaluated are best/'s when early stopping kept one, else final/'s. Such a run travels as those
  weights, its JSON files and its test values (partial or complete): nothing is left to train, so
  no optimizer state (`harness.Trainer.restore` restores the weights alone)."""
  status = results.read_status(run) or {}
  if not (status.get("finished") or status.get("stopped_early")):
    return None
  for name in (results.BEST_DIR, results.FINAL_DIR):
    if newest_checkpoint(os.path.join(run, name)) and _weights_only(os.path.join(run, name)):
      return name
  return None


def finished_weights(run: str) -> str | None:
  """`trained_weights` of a run that is also evaluated (its results.json exists), else None."""
  if not os.path.exists(os.path.join(run, "results.json")):
    return None
  return trained_weights(run)


def _weights_only(folder: str) -> bool:
  """Whether the newest checkpoint in `folder` holds no optimizer state (best/ of runs written
  before the harness kept weights only there held whole checkpoints)."""
  import tensorflow as tf  # only for finished runs

  path = os.path.join(folder, newest_checkpoint(folder))
  return not any(
    name.startswith("optimizer/")
    for name in tf.train.load_checkpoint(path).get_variable_to_shape_map()
  )


def best_in_checkpoint(run: str) -> bool:
  """Whether the run is in progress and its best weights (early stopping) are its newest
  checkpoint's: status.json's best epoch ends at its step (epochs counted from 1). best/ need
  not travel then; `harness.Trainer.restore` writes it again."""
  status = results.read_status(run) or {}
  return (
    not (status.get("finished") or status.get("stopped_early"))
    and status.get("best_metric") is not None
    and status.get("best_epoch") is not None
    and int(status["best_epoch"]) * int(status["steps_per_epoch"]) == int(status["step"])
  )


def state_files(run: str) -> list[str]:
  """Paths, relative to `run`, of what resuming it needs (see the module docstring); for a run
  whose training is done (`trained_weights`) only its weights, JSON files and test values (a
  partial test-NLL file, or the per-image values of a completed evaluation): no optimizer state."""
  keep = []
  weights = trained_weights(run)
  for dirpath, dirnames, filenames in os.walk(run):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # .worker-N: not the chief's
    if weights and dirpath == run:
      dirnames[:] = [weights]
    elif dirpath == run and best_in_checkpoint(run):
      best = newest_checkpoint(os.path.join(run, results.BEST_DIR))
      if best is None or best == f"ckpt-{_step(run)}":  # else: left as it is
        dirnames[:] = [d for d in dirnames if d != results.BEST_DIR]
    newest = newest_checkpoint(dirpath)
    for name in sorted(filenames):
      if name.endswith(_SKIPPED_SUFFIXES) or name.startswith(_SKIPPED_PREFIXES):
        continue
      if newest is not None and name != CHECKPOINT_STATE and not (name.startswith(newest + ".")):
        continue  # an older checkpoint's index/data shard
      keep.append(os.path.relpath(os.path.join(dirpath, name), run))
  return keep


def _step(run: str) -> int:
  status = results.read_status(run)
  return -1 if status is None else int(status["step"])


def copy_run(source: str, destination: str, *, replace: bool) -> int:
  """Copies `source`'s state into `destination`; returns the bytes copied. `replace`: delete
  `destination` first (a carried folder holds nothing else); otherwise only its checkpoint folders
  are replaced (a local run keeps its history: event files, sample images)."""
  files = state_files(source)
  if replace:
    shutil.rmtree(destination, ignore_errors=True)
  elif os.path.isdir(destination):
    # Checkpoint folders are replaced whole: no shard may outlive the state file naming it.
    replaced = {os.path.dirname(f) for f in files if os.path.basename(f) == CHECKPOINT_STATE}
    if best_in_checkpoint(source):  # an older best/ would not be written again on resume
      replaced.add(results.BEST_DIR)
    if trained_weights(source):  # training done: an older checkpoint must not be resumed
      replaced.add("checkpoints")
    for name in replaced:
      shutil.rmtree(os.path.join(destination, name), ignore_errors=True)
  size = 0
  for name in files:
    target = os.path.join(destination, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(os.path.join(source, name), target)
    size += os.path.getsize(target)
  for folder in {os.path.dirname(f) for f in files if os.path.basename(f) == CHECKPOINT_STATE}:
    newest = newest_checkpoint(os.path.join(source, folder))
    with open(os.path.join(destination, folder, CHECKPOINT_STATE), "w") as f:
      f.write(f'model_checkpoint_path: "{newest}"\nall_model_checkpoint_paths: "{newest}"\n')
  return size


def _newer_partial_evaluations(source: str, destination: str) -> dict[str, int]:
  """Copies each partial test-NLL file of `source` that is further on than `destination`'s (same
  run, same training step: the files' own keys decide whether a resume may use them); returns
  {file name: test examples done} of those copied."""
  have = results.partial_evaluations(destination)
  copied = {}
  for name, done in results.partial_evaluations(source).items():
    if done > have.get(name, 0):
      shutil.copy2(os.path.join(source, name), os.path.join(destination, name))
      copied[name] = done
  return copied


def _finished_outputs(source: str, destination: str) -> list[str]:
  """At the same training step: the files (besides partial test-NLL files) that `source` holds and
  `destination` lacks, when `destination` holds nothing `source` lacks and `source` no partial
  file: what an evaluation writes when it completes (`results.json`, a table's row), its partial
  files deleted. Empty when `source` is not further on in this sense."""
  if results.partial_evaluations(source):
    return []
  is_partial = lambda name: os.path.basename(name).startswith("nll_partial")
  have = {f for f in state_files(destination) if not is_partial(f)}
  carried = {f for f in state_files(source) if not is_partial(f)}
  return sorted(carried - have) if have <= carried else []


def carry(logdir: str, carry_dir: str, *, unpack: bool) -> list[str]:
  """Packs (or unpacks) every run under `logdir`; returns one line per run saying what happened."""
  source_root, dest_root = (carry_dir, logdir) if unpack else (logdir, carry_dir)
  runs = run_status.find_runs(source_root)
  if not runs:
    raise ValueError(f"no {results.STATUS_FILE} under {source_root}")
  lines = []
  for source in runs:
    relative = os.path.relpath(source, source_root)
    destination = os.path.normpath(os.path.join(dest_root, relative))
    have, carried = _step(destination), _step(source)
    if have == carried and finished_weights(source) and not finished_weights(destination):
      # Finished and evaluated in `source`: packed, the carried resume state (optimizer slots
      # included) gives way to the weights; unpacked, they join the local run, whose partial
      # test-NLL files are done with.
      for name in results.partial_evaluations(destination):
        os.remove(os.path.join(destination, name))
      size = copy_run(source, destination, replace=not unpack)
      lines.append(
        f"{destination}: finished at step {carried}, its {finished_weights(source)}/ "
        f"weights and results from {source} ({size / 2**20:.1f} MiB"
        f"{'' if unpack else '; resume state removed'})"
      )
      continue
    if have == carried:  # both hold a status.json: the run is at the same training step
      finished = _finished_outputs(source, destination)
      if finished:  # its test NLL completed in `source`: its outputs, the partial files gone
        for name in results.partial_evaluations(destination):
          os.remove(os.path.join(destination, name))
        for name in finished:  # the checkpoint is the same one (same step): not copied again
          os.makedirs(os.path.dirname(os.path.join(destination, name)), exist_ok=True)
          shutil.copy2(os.path.join(source, name), os.path.join(destination, name))
        lines.append(
          f"{destination}: step {have} kept, evaluated in {source}: " + ", ".join(finished)
        )
        continue
      newer = _newer_partial_evaluations(source, destination)
      if newer:  # same training step, its test-NLL evaluation further on
        lines.append(
          f"{destination}: step {have} kept, partial test NLL from {source}: "
          + ", ".join(f"{n} ({done:,} test examples)" for n, done in newer.items())
        )
        continue
    if have >= carried:
      lines.append(f"{destination}: kept (it is at step {have}, {source} at step {carried})")
      continue
    size = copy_run(source, destination, replace=not unpack)
    done = trained_weights(source)
    best = (
      f"; training done: its {done}/ weights, no optimizer state"
      if done
      else "; best/ = the checkpoint's weights, written again on resume"
      if done
      or (
        best_in_checkpoint(source)
        and not any(f.startswith(results.BEST_DIR + os.sep) for f in state_files(source))
      )
      else ""
    )
    lines.append(f"{destination}: step {carried} from {source} ({size / 2**20:.1f} MiB{best})")
  return lines


def main(argv: list[str] | None = None) -> int:
  """`python -m experiments.carry ...`; returns the exit code (2 on bad input)."""
  fv, _, code = cli.parse_command(
    argv, doc=__doc__, define_flags=define_flags, required=("logdir", "carry_dir")
  )
  if code is not None:
    return code
  try:
    if not fv.unpack and os.path.exists(fv.carry_dir) and not os.path.isdir(fv.carry_dir):
      raise ValueError(f"--carry_dir {fv.carry_dir} is a file")
    a, b = os.path.realpath(fv.logdir), os.path.realpath(fv.carry_dir)
    if os.path.commonpath([a, b]) in (a, b):  # packing replaces folders in --carry_dir
      raise ValueError(
        f"--logdir {fv.logdir} and --carry_dir {fv.carry_dir} must not contain each other"
      )
    lines = carry(fv.logdir, fv.carry_dir, unpack=fv.unpack)
  except (ValueError, OSError, KeyError) as e:
    return cli.fail(e)
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
