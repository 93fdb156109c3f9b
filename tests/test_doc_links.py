"""Relative links in README.md and docs/*.md point at files that exist, and #anchors at headings."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def heading_anchors(path: pathlib.Path) -> set[str]:
  """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces -> '-'."""
  text = _FENCE.sub("", path.read_text(encoding="utf-8"))
  return {
    re.sub(r"[^\w\- ]", "", m.strip().lower()).replace(" ", "-")
    for m in re.findall(r"^#{1,6}\s+(.*)$", text, re.MULTILINE)
  }


def broken_links(root: pathlib.Path) -> list[str]:
  broken = []
  for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
      if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        continue
      path, _, anchor = target.partition("#")
      dest = (page.parent / path) if path else page
      if not dest.exists():
        broken.append(f"{page.relative_to(root)}: {target} (no such file)")
      elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
        broken.append(f"{page.relative_to(root)}: {target} (no such heading)")
  return broken


def test_readme_and_docs_links_resolve():
  assert not broken_links(ROOT)


def test_a_broken_anchor_is_found(tmp_path):
  (tmp_path / "docs").mkdir()
  (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Host memory: TF's allocator\n")
  (tmp_path / "README.md").write_text(
    "[ok](docs/a.md#host-memory-tfs-allocator) [bad](docs/a.md#nope) [gone](docs/b.md)\n"
  )
  assert broken_links(tmp_path) == [
    "README.md: docs/a.md#nope (no such heading)",
    "README.md: docs/b.md (no such file)",
  ]
