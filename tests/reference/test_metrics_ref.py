"""KID, Inception Score and precision/recall formulas against clean-fid, torch-fidelity and a
NumPy port of kynkaat's equations, on the same random features (same subsets, same splits)."""

from tests.reference import comparisons, requires

pytestmark = requires("torch", "torch_fidelity", "cleanfid")


def test_kid_equals_clean_fid_and_torch_fidelity_on_the_same_subsets():
  diffs = comparisons.kid_cross_check(num_subsets=10, subset_size=50)
  assert max(diffs.values()) <= 1e-6, diffs


def test_inception_score_equals_torch_fidelity_on_the_same_splits():
  diffs = comparisons.is_cross_check(n=200, splits=10)
  assert max(diffs.values()) <= 1e-6, diffs


def test_precision_recall_counts_equal_kynkaat_and_torch_fidelity():
  result = comparisons.precision_recall_cross_check(k=3)
  # The data are not borderline: no distance is within float32 rounding of a radius.
  assert result["margin"] > 1e-6
  assert result["ours"] == result["kynkaat port"] == result["torch-fidelity"], result
  fake, real = result["sizes"]
  assert 0 < result["ours"][0] < fake and 0 < result["ours"][1] < real  # not trivially 0 or all
