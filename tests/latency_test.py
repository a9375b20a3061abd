"""Latency tables: the real Pixel-1 table, keys, prediction, building and validating on the host."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from betanas_tf import latency
from betanas_tf import references
from betanas_tf import spaces

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIXEL1_YAML = os.path.join(ROOT, "tests", "data", "pixel1_latency_proxyless.yaml")
PIXEL1_JSON = os.path.join(ROOT, "configs", "pixel1_latency.json")


@pytest.fixture(scope="module")
def pixel1():
  return latency.import_proxyless_yaml(PIXEL1_YAML)


def test_pixel1_table_covers_every_choice_of_proxyless_mobile(pixel1):
  assert len(pixel1.entries) == 72
  space = spaces.get_space("proxyless_mobile")
  keys = latency.space_keys(space)
  assert len(keys) == 70 and pixel1.missing(keys) == []
  raw = yaml.safe_load(open(PIXEL1_YAML))
  stem = "Conv-input:224x224x3-output:112x112x32"
  assert pixel1.entries[stem]["mean"] == raw[stem]["mean"] and pixel1.entries[stem]["count"] == 982
  assert pixel1.entries[stem]["std"] == pytest.approx(np.sqrt(raw[stem]["var"]))
  # The bundled JSON is this very table converted.
  assert latency.LatencyTable.load(PIXEL1_JSON).entries == pixel1.entries


def test_identity_costs_nothing_and_all_k3e3_sum(pixel1):
  space = spaces.get_space("proxyless_mobile")
  raw = yaml.safe_load(open(PIXEL1_YAML))
  k3e3 = references.uniform(space, "k3e3")
  # Independent sum straight from the YAML file, keys written out from the space's shapes.
  expected = raw["Conv-input:224x224x3-output:112x112x32"]["mean"]
  expected += raw["expanded_conv-input:112x112x32-output:112x112x16-expand:1-kernel:3-stride:1-idskip:0"]["mean"]
  for shape, block in zip(k3e3.block_shapes()[1:], k3e3.blocks[1:]):
    skip = int(block.stride == 1 and shape.in_channels == shape.out_channels)
    expected += raw[f"expanded_conv-input:{shape.in_size}x{shape.in_size}x{shape.in_channels}-output:"
                    f"{shape.out_size}x{shape.out_size}x{shape.out_channels}-expand:3-kernel:3-"
                    f"stride:{block.stride}-idskip:{skip}"]["mean"]
  expected += raw["Conv_1-input:7x7x320-output:7x7x1280"]["mean"] + raw["Logits-input:7x7x1280-output:1000"]["mean"]
  assert pixel1.predict(k3e3) == pytest.approx(expected, rel=1e-12)
  assert pixel1.predict(k3e3) == pytest.approx(76.048, abs=1e-3)
  choices = list(space.choices_from_arch(k3e3))
  with_id = list(choices)
  with_id[1] = space.choice_blocks[1].index_of("id")
  dropped_key = latency.block_key(k3e3, k3e3.blocks[2], k3e3.block_shapes()[2])
  assert pixel1.predict(space.arch_from_choices(with_id)) == pytest.approx(
      pixel1.predict(k3e3) - raw[dropped_key]["mean"])
  assert pixel1.predict(references.get_reference("proxyless_k3e6")) == pytest.approx(136.466, abs=1e-3)
  assert pixel1.predict(references.get_reference("proxyless_minimal")) == pytest.approx(29.609, abs=1e-3)


def test_missing_keys_are_listed(pixel1):
  with pytest.raises(latency.MissingEntriesError) as error:
    pixel1.predict(references.mobilenet_v2())
  message = str(error.value)
  assert message.startswith("latency table lacks 8 key(s): ")  # 12 blocks, 8 distinct shapes
  assert "expanded_conv-input:56x56x24-output:28x28x32-expand:6-kernel:3-stride:2-idskip:0" in message


def test_bad_table_files(tmp_path):
  path = tmp_path / "t.json"
  path.write_text(json.dumps({"format": "other"}))
  with pytest.raises(ValueError, match=r"t\.json: not a latency table"):
    latency.LatencyTable.load(str(path))
  path.write_text(json.dumps({"format": latency.FORMAT, "version": 1, "unit": "ms",
                              "entries": {"k": {"std": 1}}}))
  with pytest.raises(ValueError, match=r"entry 'k' has no numeric 'mean'"):
    latency.LatencyTable.load(str(path))


@pytest.mark.slow
def test_build_on_host_is_complete_resumable_and_predicts(tmp_path):
  space = spaces.get_space("micro")
  timer = latency.HostTimer(threads=1, warmup=2, runs=5)
  calls = []
  original = timer.time_model
  timer.time_model = lambda model: calls.append(model.name) or original(model)
  out = str(tmp_path / "micro.json")
  table = latency.build_table(space, timer, out, progress=False)
  keys = latency.space_keys(space)
  assert len(keys) == 1 + 3 * 3 + 2 and sorted(table.entries) == sorted(keys)  # stem, 9 MBConvs, head
  assert len(calls) == len(keys) + 1  # + the empty model for the overhead
  data = json.load(open(out))
  assert data["format"] == "betanas_tf.latency_table" and data["target"]["threads"] == 1
  assert data["target"]["kind"] == "host" and data["target"]["space"] == "micro"
  assert all(e["count"] == 5 and e["mean"] >= 0 and e["std"] >= 0 for e in data["entries"].values())
  calls.clear()
  latency.build_table(space, timer, out, progress=False)
  assert calls == []  # nothing left to measure
  assert table.scale is None and table.predict(space.arch_from_choices([0, 0, 0])) == pytest.approx(
      table.layer_sum(space.arch_from_choices([0, 0, 0])))
  calls.clear()
  calibrated = latency.build_table(space, timer, out, progress=False, calibrate=2)
  assert len(calls) == 2 and 0.2 < calibrated.scale < 5.0  # two whole networks timed, no layer
  arch = space.arch_from_choices([1, 2, 3])
  reloaded = latency.LatencyTable.load(out)
  assert reloaded.scale == calibrated.scale and reloaded.target["calibration_networks"] == 2
  assert reloaded.predict(arch) == pytest.approx(reloaded.layer_sum(arch) * reloaded.scale)
  report = latency.validate(latency.LatencyTable.load(out), space, 2, timer)
  assert report["n"] == 2 and len(report["rows"]) == 2
  for row in report["rows"]:
    assert row["predicted_ms"] > 0 and row["measured_ms"] > 0
    assert row["error_pct"] == pytest.approx(100 * (row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"])


def test_cli_import_and_predict(tmp_path, pixel1):
  out = tmp_path / "p.json"
  env = dict(os.environ, PYTHONPATH=ROOT)
  run = lambda *args: subprocess.run([sys.executable, "-m", "betanas_tf.latency", *args], cwd=ROOT,
                                     env=env, capture_output=True, text=True, timeout=120)
  result = run("import", f"--yaml={PIXEL1_YAML}", f"--out={out}")
  assert result.returncode == 0 and "72 entries imported" in result.stdout
  arch = tmp_path / "a.json"
  references.get_reference("proxyless_minimal").save(str(arch))
  result = run("predict", f"--lut={out}", f"--arch={arch}")
  assert result.returncode == 0 and result.stdout.strip() == "29.609 ms"
  bad = run("frobnicate")
  assert bad.returncode == 1 and "latency: error: give one command: build | import | predict | validate" in bad.stderr


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
