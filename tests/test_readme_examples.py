"""The README's Python examples run as written: each ```python block is executed on its own."""

import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[str]:
  """The bodies of the ```python blocks of a Markdown text, in order."""
  return _BLOCK.findall(text)


def _first_import(block: str) -> str:
  """A name for the block: the package of its last `from X import` line (nvae_tf, evaluation, ...)."""
  packages = re.findall(r"^from (\w+)", block, re.MULTILINE)
  return [p for p in packages if p != "experiments"][-1] if packages else "block"


_BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_an_example_per_family():
  names = {_first_import(b) for b in _BLOCKS}
  assert {"nvae_tf", "vampprior_tf", "diffusion_tf", "evaluation"} <= names, names


@pytest.mark.slow
@pytest.mark.parametrize("block", _BLOCKS, ids=[_first_import(b) for b in _BLOCKS])
def test_readme_example_runs(block):
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(
      compile(block, f"README.md ({_first_import(block)} example)", "exec"),
      {"__name__": "__main__"},
    )
  assert out.getvalue().strip(), "every example prints its result"
