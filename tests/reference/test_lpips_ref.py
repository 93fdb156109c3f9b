"""Our LPIPS-VGG vs the `lpips` package: the wheel's real v0.1 lin weights and one random
torchvision VGG-16 file, converted by our converter command, distances within 1e-4."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("lpips")

from tests.reference import comparisons  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_lpips_distances_equal_the_lpips_package(tmp_path):
  diffs = comparisons.lpips_cross_check(tmp_path, shape=(3, 32, 48, 3))
  assert max(diffs.values()) <= 1e-4, diffs
