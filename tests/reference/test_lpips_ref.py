"""Our LPIPS-VGG vs the `lpips` package: the wheel's real v0.1 lin weights and one random
torchvision VGG-16 file, converted by our converter command, distances within 1e-4."""

from tests.reference import comparisons, requires

pytestmark = requires("torch", "torchvision", "lpips")


def test_lpips_distances_equal_the_lpips_package(tmp_path):
  diffs = comparisons.lpips_cross_check(tmp_path, shape=(3, 32, 48, 3))
  assert max(diffs.values()) <= 1e-4, diffs
