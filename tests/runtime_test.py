"""What a latency table describes (format, threads, delegate) and who checks it: the table's
target, `latency build` / `validate` / `compare`, the phone's GPU delegate through a fake adb."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from betanas_tf.bench import cold_layers
from betanas_tf.latency import android
from betanas_tf.latency import compare as latency_compare
from betanas_tf.latency import measure as latency
from betanas_tf.latency import table as latency_table
from betanas_tf.latency import timers as latency_timers
from betanas_tf.latency import runtime
from betanas_tf import spaces
from betanas_tf.latency import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIXEL1_YAML = os.path.join(ROOT, "tests", "data", "pixel1_latency_proxyless.yaml")
QUICK = timing.TimingPlan(invocations=2, warmup=1, min_rounds=3, max_rounds=3)


def _cli(*args, env=None):
  return subprocess.run([sys.executable, "-m", "betanas_tf.latency", *args], cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})),
                        capture_output=True, text=True, timeout=300)


def test_a_runtime_validates_itself_and_names_its_differences():
  with pytest.raises(ValueError, match="^quantize must be one of fp32, fp16, int8, got 'int4'$"):
    runtime.Runtime("int4")
  with pytest.raises(ValueError, match="^delegate must be one of xnnpack, none, gpu, got 'nnapi'$"):
    runtime.Runtime(delegate="nnapi")
  with pytest.raises(ValueError, match="^threads must be a positive integer, got 0$"):
    runtime.Runtime(threads=0)
  with pytest.raises(ValueError, match="^int8_io needs quantize=int8, got fp16$"):
    runtime.Runtime("fp16", int8_io=True)
  assert runtime.Runtime("int8", 4, "none", True).words() == "int8, int8 I/O, 4 threads, delegate none"
  # A table built before runtimes were recorded timed fp32 with XNNPACK; imported ones say nothing.
  assert runtime.of_target({"kind": "host", "threads": 2}) == runtime.Runtime(threads=2)
  assert runtime.of_target({"kind": "imported", "source": "pixel1.yaml"}) is None
  assert runtime.differences(runtime.Runtime("int8", 1), runtime.Runtime("fp32", 4)) == [
      "quantize int8 (table) vs fp32", "threads 1 (table) vs 4"]
  with pytest.raises(ValueError, match="no gpu delegate .*timed on a phone"):
    latency_timers.HostTimer(runtime.Runtime(delegate="gpu"))


def test_int8_timing_models_keep_the_exporters_input_convention():
  import keras  # pylint: disable=import-outside-toplevel
  from betanas_tf import tflite  # pylint: disable=import-outside-toplevel
  inputs = keras.Input((8, 8, 4))
  model = keras.Model(inputs, keras.layers.Conv2D(8, 3, padding="same")(inputs))
  dtypes = {}
  for rt in (runtime.Runtime("fp32"), runtime.Runtime("fp16"), runtime.Runtime("int8"),
             runtime.Runtime("int8", int8_io=True)):
    details = tflite.interpreter(rt.convert(model), delegates=False)
    dtypes[rt.words()] = (details.get_input_details()[0]["dtype"].__name__,
                          details.get_output_details()[0]["dtype"].__name__)
  assert dtypes == {"fp32, 1 thread, delegate xnnpack": ("float32", "float32"),
                    "fp16, 1 thread, delegate xnnpack": ("float32", "float32"),
                    "int8, 1 thread, delegate xnnpack": ("float32", "float32"),
                    "int8, int8 I/O, 1 thread, delegate xnnpack": ("int8", "int8")}
  int8_ops = tflite.op_counts(runtime.Runtime("int8").convert(model))
  assert int8_ops == {"QUANTIZE": 1, "CONV_2D": 1, "DEQUANTIZE": 1}


@pytest.mark.slow
def test_an_int8_table_without_xnnpack_is_built_validated_and_refused_for_other_runtimes(tmp_path):
  space = spaces.get_space("micro")
  # Its layers timed cold (4 MiB written before each timed call).
  timer = latency_timers.HostTimer(runtime.Runtime("int8", 1, "none"),
                                   dataclasses.replace(QUICK, evict_mb=4))
  out = str(tmp_path / "int8.json")
  table = latency.build_table(space, timer, out, progress=False, calibrate=3)
  assert sorted(table.entries) == sorted(latency_table.space_keys(space))
  target = json.load(open(out))["target"]
  assert target["timing"]["evict_mb"] == 4 and target["layer_overhead_ms"] > 0
  assert {k: target[k] for k in ("kind", "quantize", "threads", "delegate", "int8_io")} == {
      "kind": "host", "quantize": "int8", "threads": 1, "delegate": "none", "int8_io": False}
  assert table.runtime() == runtime.Runtime("int8", 1, "none")
  assert sorted(table.correction) == ["deep_factor", "factor", "per_layer_ms"]
  report = latency.validate(table, space, 2, timer, seed=5)
  assert report["target"]["quantize"] == "int8" and all(r["measured_ms"] > 0 for r in report["rows"])
  # The CLI validates what the table describes: a flag that says otherwise is one error line.
  result = _cli("validate", f"--lut={out}", "--space=micro", "--quantize=fp32", "--n=1")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f"latency: error: {out} was built for int8, 1 thread, delegate none; the flags ask for "
      "fp32, 1 thread, delegate none (quantize int8 (table) vs fp32): a table is timed and read "
      "only in the runtime it describes (drop those flags, or use another table)")
  # Building on into the table in another runtime is refused the same way.
  result = _cli("build", f"--out={out}", "--space=micro", "--threads=2")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f"latency: error: {out} was built for int8, 1 thread, delegate none; the flags ask for "
      "int8, 2 threads, delegate none (threads 1 (table) vs 2): a table is timed and read "
      "only in the runtime it describes (drop those flags, or use another table)")
  result = _cli("build", f"--out={out}", "--space=micro", "--evict_mb=0")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f"latency: error: {out} was built with --evict_mb=4; the flags ask for --evict_mb=0 "
      "(entries timed hot and cold do not mix: give the same value, or another --out)")
  result = _cli("validate", f"--lut={out}", "--space=micro", "--n=2", "--invocations=2",
                "--min_rounds=3", "--max_rounds=3", "--drift_networks=2", "--norecord",
                f"--plot={tmp_path / 'v.png'}", f"--report={tmp_path / 'v.json'}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "n=2 (host " in result.stdout and ": int8, 1 thread, delegate none): mean abs error" in result.stdout
  # --report keeps every network's figures and the re-timed calibration networks.
  with open(tmp_path / "v.json") as handle:
    report = json.load(handle)
  assert [len(report["rows"]), len(report["calibration_now_ms"]), report["drift_networks"]] == [2, 2, 2]
  for row in report["rows"]:
    assert row["error_pct"] == pytest.approx(
        100 * (row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"])
  assert report["max_abs_error_pct"] == pytest.approx(max(abs(r["error_pct"]) for r in report["rows"]))


def test_the_cold_layers_benchmark_scores_the_correction_left_one_out():
  """Networks that are exactly 1.02 x early + 1.05 x deep + 0.01 ms per layer are predicted
  left-one-out to the ridge's pull (< 0.5 %); one network 10 % off the rule is predicted
  about 10 % low, and its neighbours stay close."""
  rng = np.random.default_rng(0)
  early, deep, counts = rng.uniform(2, 8, 10), rng.uniform(1, 5, 10), rng.integers(12, 22, 10)
  exact = 1.02 * early + 1.05 * deep + 0.01 * counts
  result = cold_layers.correction_errors(early, deep, counts, exact)
  assert result["loo_max_abs_error_pct"] < 0.5
  assert result["fit"] == pytest.approx({"factor": 1.02, "deep_factor": 1.05, "per_layer_ms": 0.01}, abs=0.01)
  assert result["network_over_layer_sum"] == pytest.approx(
      [min(exact / (early + deep)), max(exact / (early + deep))])
  off = exact.copy()
  off[3] *= 1.1
  result = cold_layers.correction_errors(early, deep, counts, off)
  assert -10.5 < result["loo_error_pct"][3] < -7.5
  assert result["loo_mean_abs_error_pct"] == pytest.approx(np.mean(np.abs(result["loo_error_pct"])))


@pytest.mark.slow
def test_the_cold_layers_benchmark_times_layers_hot_and_cold_beside_the_networks():
  space = spaces.get_space("micro")
  rng = np.random.default_rng(1)
  archs = [space.arch_from_choices(space.sample(rng)) for _ in range(4)]
  report = cold_layers.run(space, archs, runtime.Runtime("fp32"), [0, 2], max_rounds=3)
  keys = sorted({k for a in archs for k in latency_table.layer_keys(a)})
  assert sorted(report["settings"]) == ["0", "2"] and len(report["networks"]) == 4
  hot, cold = report["settings"]["0"], report["settings"]["2"]
  assert hot["layer_overhead_ms"] == hot["network_overhead_ms"]   # hot: one overhead
  assert cold["layer_overhead_ms"] != cold["network_overhead_ms"]  # cold: the empty model's own
  for setting in (hot, cold):
    assert sorted(setting["layer_ms"]) == keys and len(setting["loo_error_pct"]) == 4
    assert min(setting["network_ms"]) > 0 and min(setting["layer_ms"].values()) > 0


def _scaled_copy(table, factor_of):
  entries = {k: dict(v, mean=v["mean"] * factor_of(k)) for k, v in table.entries.items()}
  return latency_table.LatencyTable(entries, {"kind": "host", "cpu": "test", "quantize": "int8",
                                              "threads": 1, "delegate": "xnnpack"})


def test_compare_gives_tau_and_per_op_ratios():
  pixel1 = latency_table.import_proxyless_yaml(PIXEL1_YAML)
  space = spaces.get_space("proxyless_mobile")
  # 7x7 kernels 1.2x, everything else 0.5x (as int8 on this host against fp32, roughly).
  factor = lambda key: 1.2 if "-kernel:7" in key else 0.5
  second = _scaled_copy(pixel1, factor)
  result = latency_compare.compare(pixel1, second, space, n=30, seed=0)
  assert result["common_keys"] == 72 and result["only_first"] == result["only_second"] == 0
  assert result["per_op"]["k7e3"] == {"n": result["per_op"]["k7e3"]["n"], "median": pytest.approx(1.2),
                                      "min": pytest.approx(1.2), "max": pytest.approx(1.2)}
  assert result["per_op"]["k3e6"]["median"] == pytest.approx(0.5)
  assert result["per_op"]["Conv"]["median"] == pytest.approx(0.5)
  assert result["ratio"]["min"] == pytest.approx(0.5) and result["ratio"]["max"] == pytest.approx(1.2)
  from scipy import stats  # pylint: disable=import-outside-toplevel
  keys = sorted(pixel1.entries)
  assert result["entries_tau"] == pytest.approx(stats.kendalltau(
      [pixel1.lookup(k) for k in keys], [pixel1.lookup(k) * factor(k) for k in keys])[0])
  rng = np.random.default_rng(0)
  archs = [space.arch_from_choices(space.sample(rng)) for _ in range(30)]
  p = [pixel1.predict(a) for a in archs]
  q = [second.predict(a) for a in archs]
  assert result["networks"]["tau"] == pytest.approx(stats.kendalltau(p, q)[0])
  assert result["networks"]["ratio_median"] == pytest.approx(np.median(np.divide(q, p)))
  assert result["runtimes"] == ["imported pixel1_latency_proxyless.yaml",
                                "host test: int8, 1 thread, delegate xnnpack"]
  text = latency_compare.compare_text(result, "a.json", "b.json")
  k7e3 = next(line for line in text.splitlines() if line.startswith("k7e3"))
  assert k7e3.split() == ["k7e3", str(result["per_op"]["k7e3"]["n"]), "1.200", "1.200", "1.200"]
  assert f"Kendall tau of their entries {result['entries_tau']:.3f}" in text
  # Tables of other spaces share no keys: one clear error.
  micro = latency_table.LatencyTable({"Conv-input:16x16x3-output:8x8x16": {"mean": 1.0},
                                      "Logits-input:2x2x64-output:10": {"mean": 1.0}}, {"kind": "host"})
  with pytest.raises(ValueError, match=r"^the tables share 0 key\(s\); comparing needs at least 2"):
    latency_compare.compare(pixel1, micro, space)


def _fake_adb(tmp_path, **env):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  shutil.copy(os.path.join(ROOT, "tests", "fake_adb.py"), bin_dir / "adb")
  os.chmod(bin_dir / "adb", 0o755)
  log = tmp_path / "adb.log"
  return dict(env, PATH=str(bin_dir) + os.pathsep + os.environ["PATH"], FAKE_ADB_LOG=str(log)), log


def test_the_phone_gpu_delegate_is_asked_for_and_its_absence_is_one_line(tmp_path, monkeypatch):
  env, log = _fake_adb(tmp_path, FAKE_ADB_AVG_US="2500")
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  model = tmp_path / "m.tflite"
  model.write_bytes(b"tflite")
  bench = android.AndroidBenchmark(serial="FAKE123")
  assert bench.measure(str(model), 4, 2, 7, "gpu") == pytest.approx(2.5)
  assert bench.measure(str(model), 2, 2, 7, "none") == pytest.approx(2.5)
  shells = [json.loads(line) for line in open(log) if '"shell"' in line]
  assert shells == [["-s", "FAKE123", "shell", "/data/local/tmp/benchmark_model",
                     "--graph=/data/local/tmp/m.tflite", "--num_threads=4", "--warmup_runs=2",
                     "--num_runs=7", "--use_gpu=true"],
                    ["-s", "FAKE123", "shell", "/data/local/tmp/benchmark_model",
                     "--graph=/data/local/tmp/m.tflite", "--num_threads=2", "--warmup_runs=2",
                     "--num_runs=7", "--use_xnnpack=false"]]
  monkeypatch.setenv("FAKE_ADB_NO_GPU", "1")
  with pytest.raises(android.AndroidError) as error:
    bench.measure(str(model), 4, 2, 7, "gpu")
  assert str(error.value) == ("the phone's GPU delegate could not run this model (benchmark_model "
                              "--use_gpu=true said: 'ERROR: Failed to apply GPU delegate.')")
  # The CPU is unaffected on that phone.
  assert bench.measure(str(model), 1, 2, 7, "xnnpack") == pytest.approx(2.5)


@pytest.mark.slow
def test_a_phone_gpu_table_records_its_delegate_and_threads(tmp_path):
  env, log = _fake_adb(tmp_path, FAKE_ADB_AVG_US="1000")
  out = tmp_path / "gpu.json"
  result = _cli("build", "--space=micro", "--android", "--use_gpu", "--threads=4",
                "--calibrate=0", f"--out={out}", "--noprogress", env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  target = json.load(open(out))["target"]
  assert (target["kind"], target["delegate"], target["threads"], target["quantize"]) == (
      "android", "gpu", 4, "fp32")
  shells = [json.loads(line) for line in open(log) if '"shell"' in line]
  assert shells and all(s[-1] == "--use_gpu=true" and "--num_threads=4" in s for s in shells)
  result = _cli("build", "--space=micro", "--android", "--use_gpu", "--calibrate=0",
                f"--out={tmp_path / 'no_gpu.json'}", "--noprogress", env=dict(env, FAKE_ADB_NO_GPU="1"))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "latency: error: the phone's GPU delegate could not run this model (benchmark_model "
      "--use_gpu=true said: 'ERROR: Failed to apply GPU delegate.')")
  result = _cli("build", "--space=micro", "--android", "--evict_mb=64", f"--out={tmp_path / 'x.json'}",
                env=env)
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
      "latency: error: --evict_mb is for timing on this host: benchmark_model on a phone times "
      "each model on its own")
  result = _cli("build", "--space=micro", "--use_gpu", f"--out={tmp_path / 'x.json'}")
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
      "latency: error: --use_gpu times a phone's GPU delegate: it needs --android")


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
