"""The package's import graph has no cycle, counting imports inside functions too (a cycle
hidden in a function body still ties two modules into one concept)."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def package_modules():
  """{dotted module name: file} of every module of betanas_tf."""
  modules = {}
  for directory, _, files in os.walk(os.path.join(ROOT, "betanas_tf")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        modules[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
  return modules


def import_graph(modules):
  """{module: the package's modules it imports anywhere in its file}."""
  graph = {}
  for module, path in modules.items():
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    imported = set()
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.Import):
        imported.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = package.split(".")
          base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
        for alias in node.names:
          full = f"{base}.{alias.name}"
          imported.add(full if full in modules else base)
    graph[module] = {m for m in imported if m in modules and m != module}
  return graph


def cycles(graph):
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for other in sorted(graph[node]):
      if other not in index:
        visit(other)
        low[node] = min(low[node], low[other])
      elif other in on_stack:
        low[node] = min(low[node], index[other])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return found


def test_the_checker_finds_a_cycle_hidden_in_a_function():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert cycles(graph) == [["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
  modules = package_modules()
  graph = import_graph(modules)
  assert len(modules) > 60 and "betanas_tf.bench.rank" in graph
  assert "betanas_tf.bench.ground_truth" in graph["betanas_tf.bench.rank"]   # imports are seen
  assert cycles(graph) == []
