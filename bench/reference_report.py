"""Prints the table "ours vs reference implementation: max relative difference".

    .venv/bin/python bench/reference_report.py

Runs the same comparisons as the `reference` test tier (tests/reference/comparisons.py): our
FID Inception, LPIPS-VGG, KID, IS and precision/recall against pytorch-fid, torch-fidelity,
clean-fid and lpips, on random weights / random features (no download). Needs the reference
packages (torch, torchvision, pytorch-fid, torch-fidelity, clean-fid, lpips) in the venv.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import tensorflow  # noqa: F401  # TensorFlow loaded before torch (tests.reference.comparisons)

from common_tf import host
from tests.reference import comparisons


def main() -> int:
  start = time.time()
  rows: list[tuple[str, str, str, str]] = []  # quantity, reference, value, tolerance
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    pth = tmp / "pt_inception-2015-12-05-6726825d.pth"
    comparisons.write_inception_pth(pth, seed=0)
    inception_rows = comparisons.inception_cross_check(pth)
    for reference in ("pytorch-fid 0.3", "torch-fidelity 0.4"):
      for output, label in (
        ("pool_3", "FID Inception pool_3 (2048)"),
        ("logits", "FID Inception logits (1008, no bias)"),
      ):
        worst = max(
          r["max_rel_diff"]
          for r in inception_rows
          if r["reference"] == reference and r["output"] == output
        )
        rows.append((f"{label}, 28/64/299 px, grey+RGB", reference, f"{worst:.1e}", "1e-4"))
    protocol = comparisons.pytorch_fid_protocol_difference(pth)
    rows.append(
      (
        "(pytorch-fid's own resize + 2x-1 input vs TTUR's) pool_3, 64 px",
        "pytorch-fid 0.3",
        f"{protocol['pool_3_vs_ours']:.1e}",
        "differs by design",
      )
    )
    lpips = comparisons.lpips_cross_check(tmp)
    rows.append(
      (
        "LPIPS-VGG v0.1 distance (real lin weights), grey+RGB",
        "lpips 0.1.4",
        f"{max(lpips.values()):.1e}",
        "1e-4",
      )
    )
  kid = comparisons.kid_cross_check()
  rows.append(
    ("KID mean (same subsets)", "clean-fid 0.1.35", f"{kid['clean-fid mean']:.1e}", "1e-6")
  )
  rows.append(
    (
      "KID mean / std (same subsets)",
      "torch-fidelity 0.4",
      f"{max(kid['torch-fidelity mean'], kid['torch-fidelity std']):.1e}",
      "1e-6",
    )
  )
  inception_score = comparisons.is_cross_check()
  rows.append(
    (
      "Inception Score mean / std (same splits)",
      "torch-fidelity 0.4",
      f"{max(inception_score.values()):.1e}",
      "1e-6",
    )
  )
  pr = comparisons.precision_recall_cross_check()
  fake, real = pr["sizes"]
  for reference, key in (
    ("kynkaat equations (NumPy port)", "kynkaat port"),
    ("torch-fidelity 0.4", "torch-fidelity"),
  ):
    same = pr["ours"] == pr[key]
    rows.append(
      (
        "precision / recall counts",
        reference,
        f"{'equal' if same else 'DIFFERENT'} ({pr['ours'][0]}/{fake}, {pr['ours'][1]}/{real})",
        "exact",
      )
    )
  widths = [
    max(len(r[i]) for r in rows + [("quantity", "reference", "max rel. diff", "tolerance")])
    for i in range(4)
  ]

  def line(cells):
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

  print(line(("quantity", "reference", "max rel. diff", "tolerance")))
  print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
  for row in rows:
    print(line(row))
  print(f"\nCPU: {host.cpu_model()}; {time.time() - start:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
