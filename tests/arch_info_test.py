"""The arch_info CLI: JSON figures, the table, and one clear error on bad input."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "betanas_tf.arch_info", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


def test_reference_json():
  result = _run("--reference=mobilenet_v2", "--width_multiplier=1.4", "--json")
  assert result.returncode == 0, result.stderr
  info = json.loads(result.stdout)
  assert (info["macs"], info["params"], info["blocks"]) == (582_195_824, 6_108_776, 17)
  assert info["arch"]["stem"] == {"filters": 48, "kernel": 3, "stride": 2}
  assert info["arch"]["format"] == "betanas_tf.architecture"


def test_file_and_table(tmp_path):
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  space = spaces.get_space("micro")
  path = tmp_path / "arch.json"
  space.arch_from_choices(space.choices_from_string("k3e3-k5e3-id")).save(str(path))
  result = _run(f"--arch={path}")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].startswith("architecture (unnamed): input=16;")
  assert any(line.startswith("block01_k5e3") and "347,136" in line for line in lines)
  assert ["total", "10", "1,060,480", "8,330"] in [line.split() for line in lines]
  same = _run("--space=micro", "--choices=k3e3-k5e3-id", "--json")
  assert json.loads(same.stdout)["macs"] == 1_060_480


@pytest.mark.parametrize("args,message", [
    (["--arch=/nonexistent/a.json"], "arch_info: error: /nonexistent/a.json: cannot read architecture file"),
    ([], "arch_info: error: give exactly one of --arch, --reference, --space (with --choices); got none"),
    (["--space=micro", "--choices=k3e3-id-id"], "arch_info: error: block 1: op 'id' is not a candidate here"),
])
def test_bad_input_is_one_clear_error(args, message):
  result = _run(*args)
  assert result.returncode == 1
  assert result.stdout == ""
  assert result.stderr.strip().startswith(message)
  assert len(result.stderr.strip().splitlines()) == 1


def test_bad_json_file(tmp_path):
  path = tmp_path / "a.json"
  path.write_text('{"format": "betanas_tf.architecture", "version": 1}')
  result = _run(f"--arch={path}")
  assert result.returncode == 1
  assert "a.json: architecture: missing field(s) ['input_size', 'num_classes'" in result.stderr


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
