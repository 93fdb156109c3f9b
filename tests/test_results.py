"""The committed pages: every likelihood a page prints from per-image values, and every paired
difference, is what the arrays committed beside it under `results/` give."""

import glob
import json
import os

import pytest

from experiments import results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "results")

# The row keys of each page format: (path of the arrays, NLL, its s.e., -ELBO); the path is
# relative to results/ ("per_example") or to the repository ("file").
VAMPPRIOR_KEYS = ("per_example", "test_nll", "test_nll_sem", "test_negative_elbo")
NVAE_KEYS = ("per_example", "nll", "nll_sem", "neg_elbo")
CROSS_FAMILY_KEYS = ("file", "nll", "nll_sem", "neg_elbo")
PAGE_KEYS = (VAMPPRIOR_KEYS, NVAE_KEYS, CROSS_FAMILY_KEYS)


def _pages():
  for path in sorted(glob.glob(os.path.join(RESULTS, "*.json"))):
    with open(path) as f:
      page = json.load(f)
    if isinstance(page, dict) and "rows" in page:
      yield os.path.basename(path), page


def _array_path(row, key):
  base = RESULTS if key == "per_example" else ROOT
  return os.path.join(base, row[key])


def _linked_rows():
  for name, page in _pages():
    for row in page["rows"]:
      for keys in PAGE_KEYS:
        if row.get(keys[0]) and keys[1] in row:
          yield pytest.param(name, row, keys, id=f"{name}:{os.path.basename(row[keys[0]])}")


def _differences():
  for name, page in _pages():
    cells = {}
    for row in page["rows"]:
      for keys in PAGE_KEYS:
        if row.get(keys[0]):
          cell = row.get("key") or os.path.splitext(os.path.basename(row[keys[0]]))[0]
          cells[cell] = _array_path(row, keys[0])
    for d in page.get("differences", []):
      if d["status"] == "ok":
        yield pytest.param(cells[d["a"]], cells[d["b"]], d, id=f"{name}:{d['a']}-{d['b']}")


@pytest.mark.parametrize("page,row,keys", list(_linked_rows()))
def test_a_rows_numbers_are_what_its_arrays_give(page, row, keys):
  path_key, nll, sem, neg_elbo = keys
  numbers = results.per_example_numbers(_array_path(row, path_key))
  assert (row[nll], row[sem], row[neg_elbo]) == (
    numbers["nll"],
    numbers["nll_sem"],
    numbers["neg_elbo"],
  )
  with open(os.path.join(RESULTS, page.replace(".json", ".md"))) as f:
    assert f"| {numbers['nll']:.2f} |" in f.read()


@pytest.mark.parametrize("path_a,path_b,d", list(_differences()))
def test_a_paired_difference_is_what_the_two_arrays_give(path_a, path_b, d):
  difference, sem = results.paired_difference(path_a, path_b)
  assert (d["difference"], d["sem"]) == (difference, sem)


def test_the_pages_link_arrays():
  """The tests above have something to check: the pages that keep per-image values link them."""
  assert len(list(_linked_rows())) >= 24 and len(list(_differences())) >= 18
