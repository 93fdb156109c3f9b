"""The suite's packages import each other without circles, counting imports inside functions too
(a circle that works today only because one side imports late breaks as soon as it moves up)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("common_tf", "evaluation", "experiments", "nvae_tf", "vampprior_tf", "diffusion_tf")


def import_graph() -> dict[str, set[str]]:
  """{module: modules of the suite it imports anywhere in its file}."""
  graph = {}
  for package in PACKAGES:
    for path in sorted((ROOT / package).glob("*.py")):
      module = package if path.stem == "__init__" else f"{package}.{path.stem}"
      imported = set()
      for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
          if node.module in PACKAGES:  # from evaluation import cli
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
          else:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
          imported |= {alias.name for alias in node.names}
      graph[module] = {m for m in imported if m.split(".")[0] in PACKAGES and m != module}
  return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One circle through each module that lies on one, as [a, b, ..., a]."""
  cycles, done = [], set()

  def visit(start, module, path):
    for other in sorted(graph.get(module, ())):
      if other == start:
        cycles.append(path + [start])
        return True
      if other not in path and other in graph and other not in done:
        if visit(start, other, path + [other]):
          return True
    return False

  for module in sorted(graph):
    if visit(module, module, [module]):
      done.update(cycles[-1])
  return cycles


def test_finds_a_circle():
  assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_circles():
  graph = import_graph()
  assert "common_tf.data_files" in graph["experiments.data"] & graph["evaluation.references"]
  assert find_cycles(graph) == []
