"""The README's Python example (search -> retrain -> export) runs as printed."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- readme-example: tests/readme_test.py runs the next block -->"


def _example() -> str:
  with open(os.path.join(ROOT, "README.md")) as handle:
    text = handle.read()
  assert text.count(MARKER) == 1
  match = re.match(r"\s*```python\n(.*?)\n```", text.split(MARKER, 1)[1], re.S)
  assert match, "the marker must be followed by a ```python block"
  return match.group(1)


def test_readme_is_a_front_door_of_at_most_200_lines():
  with open(os.path.join(ROOT, "README.md")) as handle:
    assert len(handle.read().splitlines()) <= 200


def test_example_is_a_dozen_lines_of_public_api():
  code = _example()
  assert len([l for l in code.splitlines() if l.strip()]) <= 17
  assert "FLAGS" not in code and "_" + "flags" not in code


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path):
  script = tmp_path / "example.py"
  script.write_text(_example())
  result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-2000:]
  found = re.search(r"^found (\S+)$", result.stdout, re.M)
  scores = re.search(r"^top-1 ([0-9.]+) int8 agreement ([0-9.]+)$", result.stdout, re.M)
  assert found and scores, result.stdout[-2000:]
  assert len(found.group(1).split("-")) == 3  # one op per micro choice block
  # 360 eval digits, chance 0.1: a retrained network that learned nothing cannot pass.
  assert float(scores.group(1)) >= 0.9 and float(scores.group(2)) >= 0.9
  for path in ("runs/demo/arch.json", "runs/demo/summary.json", "runs/retrain/model.keras",
               "runs/export/report.json", "runs/export/micro_betanas_int8.tflite"):
    assert (tmp_path / path).is_file(), path
