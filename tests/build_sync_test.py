"""BUILD stays in sync with the tree: every module in the library, every test file a py_test."""

import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_build():
  """Evaluates BUILD (Starlark here is a Python subset) with recording rule functions."""
  rules = []

  def rule(kind):
    def record(**kwargs):
      rules.append(dict(kwargs, kind=kind))
    return record

  namespace = {"py_library": rule("py_library"), "py_binary": rule("py_binary"),
               "py_test": rule("py_test"), "load": lambda *a, **k: None,
               "package": lambda **k: None, "glob": lambda *a, **k: []}
  with open(os.path.join(ROOT, "BUILD")) as handle:
    exec(compile(handle.read(), "BUILD", "exec"), namespace)  # pylint: disable=exec-used
  return rules


def test_every_package_module_is_in_the_library():
  rules = _load_build()
  libraries = [r for r in rules if r["kind"] == "py_library" and r["name"] == "betanas_tf"]
  assert len(libraries) == 1
  srcs = set(libraries[0]["srcs"])
  modules = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "betanas_tf", "**", "*.py"), recursive=True)}
  assert modules - srcs == set(), "modules missing from BUILD's py_library"
  assert srcs - modules == set(), "BUILD lists modules that do not exist"


def test_every_test_file_has_a_py_test():
  rules = _load_build()
  tests = {r["name"]: r for r in rules if r["kind"] == "py_test"}
  files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "tests", "*_test.py")))
  assert files, "no test files found"
  for name in files:
    target = name[:-3]
    assert target in tests, f"{name} has no py_test"
    assert tests[target]["srcs"] == [f"tests/{name}"]
    assert ":betanas_tf" in tests[target]["deps"]
  assert sorted(f"{t}.py" for t in tests) == files, "BUILD has py_test targets without a file"


def test_entry_points_are_binaries():
  binaries = {r["name"]: r for r in _load_build() if r["kind"] == "py_binary"}
  assert binaries["search"]["main"] == "betanas_tf/search.py"
  assert binaries["train"]["main"] == "betanas_tf/train.py"
  assert binaries["to_tflite"]["main"] == "export/to_tflite.py"
  assert binaries["arch_info"]["main"] == "betanas_tf/arch_info.py"


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
