"""Table 2 of the reproduced NVAE ablation: perceptual path length (PPL) of the Table 1 models.

  python -m experiments.nvae_table2 --preset=quick        # results/nvae_table2.md

Uses the runs of `experiments.nvae_table1` (same `--table_logdir` and `--table_rows`; a finished
run is only restored, a missing or unfinished one is trained / resumed first, by
`experiments.nvae_train`). PPL (Karras et al. 2019) via
`evaluation.ppl`: the latent of NVAE is the standard-normal noise of all groups (flattened,
D = sum_l h_l w_l C_z), interpolated by slerp; images are Bernoulli means at `--temperature`;
distance = squared VGG-16 fc2 feature distance, epsilon = 1e-4, 1st-99th percentile filtered mean.
A second column uses StyleGAN's distance, LPIPS-VGG v0.1 (`evaluation.lpips`, LPIPS / eps^2 as
StyleGAN), at the native 28x28 (no crop, no resize) when `--lpips_path` (or $GENMODELS_LPIPS_PATH)
gives its weights. Without the weights a PPL is reported as unavailable, never estimated otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from absl import flags

from evaluation import ppl, protocol
from experiments import flags as common
from experiments import harness, nvae_flags, nvae_train, results

PPL_SAMPLES = {"paper": 100_000, "quick": 200, "cpu": 10_000}  # StyleGAN: 100k path segments
PPL_EPSILON = 1e-4  # StyleGAN metrics/perceptual_path_length.py

FLAGS = flags.FLAGS


def define_flags():
  nvae_flags.define_table_flags()
  flags.adopt_module_key_flags(nvae_flags)
  flags.DEFINE_integer(
    "ppl_samples",
    None,
    "PPL path segments. Default: 100000 (paper), 10000 (cpu), 200 (quick).",
    lower_bound=1,
  )
  flags.DEFINE_string(
    "lpips_path",
    None,
    "LPIPS-VGG v0.1 weights (.npz made once with `python -m "
    "evaluation.lpips --convert ...`, see evaluation/lpips.py) for the PPL-LPIPS "
    "column; default $GENMODELS_LPIPS_PATH. Without them that column says "
    "'unavailable'.",
  )
  FLAGS.set_default("table_output", "results/nvae_table2.md")


def load_lpips(weights_path: str | None):
  """(LPIPS-VGG network, None) or (None, reason) when its weights are not given; a malformed
  weights file is an error (ValueError), not 'unavailable'."""
  from evaluation import lpips, networks

  try:
    return lpips.lpips_vgg_network(weights_path), None
  except networks.WeightsUnavailableError as e:
    return None, str(e)


def path_length(
  model,
  network,
  *,
  make_distance: Callable,
  missing: str,
  num_samples: int,
  temperature: float,
  seed: int,
  label: str,
  feature: str,
):
  """PPL as `results.metric(value, its protocol record)`, or 'unavailable (<missing>)' when the
  distance's network is missing.

  network: the (network, reason) pair of `nvae_train.load_network` / `load_lpips`;
  make_distance: `ppl.vgg16_feature_distance` (squared fc2 feature distance) or
  `ppl.lpips_distance` (LPIPS-VGG, not squared again); label / feature: the network's name and
  feature in the record (as `experiments.ppl`).
  """
  net, _ = network
  if net is None:
    return nvae_train.unavailable(missing)
  generate, latent_sampler, _ = nvae_train.make_generator(model, temperature=temperature)
  value = ppl.perceptual_path_length(
    generate,
    latent_sampler=latent_sampler,
    num_samples=num_samples,
    distance=make_distance(net),
    epsilon=PPL_EPSILON,
    interpolation="slerp",
    seed=seed,
  )
  record = protocol.ppl_record(
    network=label,
    weights_sha=protocol.weights_sha256(net),
    feature=feature,
    image_shape=generate(latent_sampler(1)).shape[1:],
    epsilon=PPL_EPSILON,
    space="z",
    interpolation="slerp",
    sampling="full",
    crop=False,
    num_samples=num_samples,
    seed=seed,
  )
  return results.metric(value, record)


COLUMNS = [
  ("row", "Warm-up + spectral"),
  ("ppl", "PPL (VGG-16 fc2, slerp, eps 1e-4)"),
  ("ppl_lpips", "PPL (LPIPS-VGG v0.1, slerp, eps 1e-4)"),
  ("nll", "NLL (nats, from Table 1 run)"),
  ("steps", "Steps"),
]


def main(argv):
  del argv
  strategy = common.setup_runtime()
  table = nvae_flags.table_settings_from_flags()
  preset = table.base.preset
  num_samples = FLAGS.ppl_samples or PPL_SAMPLES[preset]
  vgg16 = nvae_train.load_network("vgg16", path=table.vgg16_path, download=table.download_weights)
  if vgg16[0] is None:
    print(f"note: VGG-16 weights unavailable, PPL will be marked so: {vgg16[1]}", file=sys.stderr)
  lpips_net = load_lpips(FLAGS.lpips_path)
  if lpips_net[0] is None:
    print(
      f"note: LPIPS-VGG weights unavailable, PPL-LPIPS will be marked so: {lpips_net[1]}",
      file=sys.stderr,
    )
  rows = []
  for kl_warmup, spectral in table.rows:
    s, config = table.row(kl_warmup, spectral)
    trained = nvae_train.train(s, config, strategy=strategy, data_dir=FLAGS.data_dir)
    table1_row = os.path.join(config.logdir, "results.json")
    nll = results.read_json(table1_row)["nll"] if os.path.exists(table1_row) else None
    rows.append(
      {
        "row": nvae_train.table_row_label(kl_warmup, spectral),
        "nll": nll,
        "dataset": trained.splits.dataset,
        "binarization": trained.splits.binarization,
        "steps": int(trained.trainer.step.numpy()),
        "ppl": path_length(
          trained.model,
          vgg16,
          make_distance=ppl.vgg16_feature_distance,
          missing="no VGG-16 weights: pass --vgg16_path",
          num_samples=num_samples,
          temperature=s.temperature,
          seed=config.seed,
          label="vgg16-keras",
          feature="fc2",
        ),
        "ppl_lpips": path_length(
          trained.model,
          lpips_net,
          make_distance=ppl.lpips_distance,
          missing="no LPIPS-VGG weights: pass --lpips_path",
          num_samples=num_samples,
          temperature=s.temperature,
          seed=config.seed,
          label="lpips-vgg-v0.1",
          feature="lpips",
        ),
      }
    )
  if not harness.is_chief(strategy):  # under several workers only the chief writes the page
    return
  results.write_json(os.path.join(table.root, "table2.json"), rows)
  notes = (
    f"**{preset} preset.**"
    + (
      " Quick-preset models (small CPU runs); not comparable with the paper."
      if preset == "quick"
      else ""
    )
    + f"\n- PPL over {num_samples} path segments at temperature {table.base.temperature}. "
    "Unavailable entries need VGG-16 weights: pass --vgg16_path (or set GENMODELS_VGG16_PATH, or "
    "--download_weights with a network); PPL-LPIPS needs LPIPS-VGG weights: pass --lpips_path "
    "(or set GENMODELS_LPIPS_PATH; the .npz is made by `python -m evaluation.lpips --convert`). "
    "LPIPS runs at the native image size (no crop, no resize).\n- Models: the Table 1 runs in "
    f"{table.root} (restored, trained first if missing), trained on "
    f"{nvae_train.data_description(rows[0]['dataset'])}.\n"
    + (f"- {vgg16[1]}\n" if vgg16[0] is None else "")
    + (f"- {lpips_net[1]}\n" if lpips_net[0] is None else "")
    + (
      f"- PPL-LPIPS used a NARROW test network (1/{lpips_net[0].width_divisor}): not LPIPS values.\n"
      if lpips_net[0] is not None and lpips_net[0].width_divisor != 1
      else ""
    )
  )
  results.write_markdown(
    table.output,
    title=f"NVAE on binary MNIST: perceptual path length ({preset} preset)",
    command=common.command_line(),
    table=results.markdown_table(rows, COLUMNS),
    notes=notes,
  )
  print(f"wrote {table.output}")


if __name__ == "__main__":
  define_flags()
  common.run(main)
