"""export/to_tflite.py end to end: files, report, parity, weights, and Android through a fake adb."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from betanas_tf import builder
from betanas_tf import spaces

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--runs=5", "--warmup_runs=1", "--dataset=digits", "--parity_examples=100",
        "--representative_examples=16"]


def _arch_file(tmp_path, choices="k3e6-k5e3-id"):
  space = spaces.get_space("micro")
  arch = space.arch_from_choices(space.choices_from_string(choices), name="micro_net")
  path = tmp_path / "arch.json"
  arch.save(str(path))
  return arch, str(path)


def _export(*args, env_extra=None, timeout=300):
  env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
  return subprocess.run([sys.executable, os.path.join(ROOT, "export", "to_tflite.py"), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_export_all_formats_with_trained_weights(tmp_path):
  arch, arch_path = _arch_file(tmp_path)
  model = builder.build_model(arch)
  from betanas_tf import data  # pylint: disable=import-outside-toplevel
  digits = data.load("digits")
  import keras  # pylint: disable=import-outside-toplevel
  model.compile(keras.optimizers.Adam(0.01),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(digits.train.images, digits.train.labels, epochs=2, batch_size=64, verbose=0)
  weights = str(tmp_path / "net.weights.h5")
  model.save_weights(weights)
  out = tmp_path / "out"
  result = _export(f"--arch={arch_path}", f"--weights={weights}", "--quantize=fp32,fp16,int8",
                   f"--out_dir={out}", *FAST)
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(out)) == [".lock", "labels.txt", "micro_net_fp16.tflite", "micro_net_fp32.tflite",
                                     "micro_net_int8.tflite", "report.json", "report.md"]
  assert open(out / "labels.txt").read() == "".join(f"{d}\n" for d in range(10))  # digits' classes
  report = json.load(open(out / "report.json"))
  assert report["latency_only"] is False and report["macs"] > 0
  fp32, fp16, int8 = (report["formats"][f] for f in ("fp32", "fp16", "int8"))
  assert fp32["max_abs_diff_vs_keras"] <= 1e-4 and fp32["parity_examples"] == 16
  assert fp16["max_abs_diff_vs_keras"] < 0.05 and fp16["parity_examples"] == 100
  assert int8["parity_examples"] == 100 and int8["top1_agreement_vs_float"] >= 0.9
  assert int8["bytes"] < fp32["bytes"] and fp16["bytes"] < fp32["bytes"]
  assert fp32["bytes"] == os.path.getsize(out / "micro_net_fp32.tflite")
  assert fp32["ops"] == {"CONV_2D": 6, "DEPTHWISE_CONV_2D": 2, "ADD": 1, "MEAN": 1, "FULLY_CONNECTED": 1}
  for entry in (fp32, fp16, int8):
    assert 0 < entry["host_latency"]["median_ms"] <= entry["host_latency"]["p90_ms"]
  markdown = open(out / "report.md").read()
  assert "| int8 |" in markdown and "top-1 agreement" in markdown


def _fake_adb_dir(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  shutil.copy(os.path.join(ROOT, "tests", "fake_adb.py"), bin_dir / "adb")
  os.chmod(bin_dir / "adb", 0o755)
  return str(bin_dir)


@pytest.mark.slow
def test_android_benchmark_through_fake_adb(tmp_path):
  _, arch_path = _arch_file(tmp_path)
  log = tmp_path / "adb.log"
  env = {"PATH": _fake_adb_dir(tmp_path) + os.pathsep + os.environ["PATH"],
         "FAKE_ADB_LOG": str(log), "FAKE_ADB_AVG_US": "12345.6"}
  out = tmp_path / "out"
  # Three latency tables of micro (every layer 0.5 ms): one per runtime they describe.
  from betanas_tf.latency import table as latency_table  # pylint: disable=import-outside-toplevel
  entries = {k: {"mean": 0.5, "median": 0.5}
             for k in latency_table.space_keys(spaces.get_space("micro"))}
  tables = {"phone_fp32": {"kind": "android", "serial": "FAKE123", "quantize": "fp32", "threads": 1,
                           "delegate": "xnnpack"},
            "host_int8_2t": {"kind": "host", "cpu": "x", "quantize": "int8", "threads": 2,
                             "delegate": "xnnpack"},
            "host_fp16": {"kind": "host", "cpu": "x", "quantize": "fp16", "threads": 1}}
  paths = {}
  for name, target in tables.items():
    paths[name] = str(tmp_path / f"{name}.json")
    latency_table.LatencyTable(entries, target).save(paths[name])
  result = _export(f"--arch={arch_path}", "--quantize=fp32,int8", "--android", "--adb_serial=FAKE123",
                   f"--out_dir={out}", f"--latency_table={','.join(paths.values())}", *FAST,
                   env_extra=env)
  assert result.returncode == 0, result.stderr[-3000:]
  calls = [json.loads(line) for line in open(log)]
  assert calls[0] == ["devices"]
  assert calls[1:] == [
      ["-s", "FAKE123", "push", str(out / "micro_net_fp32.tflite"), "/data/local/tmp/micro_net_fp32.tflite"],
      ["-s", "FAKE123", "shell", "/data/local/tmp/benchmark_model",
       "--graph=/data/local/tmp/micro_net_fp32.tflite", "--num_threads=1", "--warmup_runs=1", "--num_runs=5",
       "--use_xnnpack=true"],
      ["-s", "FAKE123", "push", str(out / "micro_net_int8.tflite"), "/data/local/tmp/micro_net_int8.tflite"],
      ["-s", "FAKE123", "shell", "/data/local/tmp/benchmark_model",
       "--graph=/data/local/tmp/micro_net_int8.tflite", "--num_threads=1", "--warmup_runs=1", "--num_runs=5",
       "--use_xnnpack=true"]]
  report = json.load(open(out / "report.json"))
  assert report["formats"]["fp32"]["android_avg_ms"] == pytest.approx(12.3456)
  assert report["formats"]["int8"]["android_avg_ms"] == pytest.approx(12.3456)
  assert "| 12.346 |" in open(out / "report.md").read()
  # The phone fp32 table predicts stem + 2 MBConvs + 2 head layers = 2.5 ms against the phone's
  # fp32 time; the 2-thread int8 table is named, not compared; the fp16 one matches nothing.
  assert report["formats"]["fp32"]["latency_tables"] == [{
      "table": paths["phone_fp32"], "predicted_ms": pytest.approx(2.5), "measured_on": "android",
      "measured_ms": pytest.approx(12.3456), "error_pct": pytest.approx(100 * (2.5 - 12.3456) / 12.3456)}]
  assert report["formats"]["int8"]["latency_tables"][0]["error_pct"] is None
  assert report["latency_table_warnings"] == [
      f"latency table {paths['host_fp16']} describes host x: fp16, 1 thread, delegate xnnpack, but "
      "this export makes fp32, int8: its prediction is compared with nothing",
      f"latency table {paths['host_int8_2t']} describes int8, 2 threads, delegate xnnpack; this "
      "export timed int8 on the host with int8, 1 thread, delegate xnnpack (threads 2 (table) vs 1): "
      "its prediction is not compared"]
  assert [line for line in result.stderr.splitlines() if line.startswith("to_tflite: warning")] == [
      f"to_tflite: warning: {w}" for w in report["latency_table_warnings"]]


@pytest.mark.parametrize("env,message", [
    ({"FAKE_ADB_DEVICES": ""}, "device FAKE123 is not attached (attached: none)"),
    ({"PATH": "/nonexistent"}, "adb not found ('adb')"),
])
@pytest.mark.slow
def test_android_errors_are_clear_and_host_results_still_written(tmp_path, env, message):
  _, arch_path = _arch_file(tmp_path)
  env = dict({"PATH": _fake_adb_dir(tmp_path) + os.pathsep + os.environ["PATH"]}, **env)
  out = tmp_path / "out"
  result = _export(f"--arch={arch_path}", "--quantize=fp32", "--android", "--adb_serial=FAKE123",
                   f"--out_dir={out}", *FAST, env_extra=env)
  assert result.returncode == 1
  assert message in result.stderr
  report = json.load(open(out / "report.json"))
  assert report["formats"]["fp32"]["host_latency"]["median_ms"] > 0 and message in report["android_error"]


def test_parse_benchmark_output():
  from betanas_tf.latency import android  # pylint: disable=import-outside-toplevel
  text = "Inference timings in us: Init: 2123, First inference: 31540, Warmup (avg): 30055.2, Inference (avg): 29912.4\n"
  assert android.parse_inference_avg_ms(text) == pytest.approx(29.9124)
  with pytest.raises(android.AndroidError, match="benchmark_model printed no"):
    android.parse_inference_avg_ms("ERROR: Could not open '/data/local/tmp/x.tflite'.")


@pytest.mark.slow
def test_nan_weights_are_refused_with_exit_3_and_no_file(tmp_path):
  arch, arch_path = _arch_file(tmp_path)
  model = builder.build_model(arch)
  import numpy as np  # pylint: disable=import-outside-toplevel
  kernel = model.get_layer("head_conv").kernel
  kernel.assign(np.full(kernel.shape, np.nan, np.float32))
  weights = str(tmp_path / "nan.weights.h5")
  model.save_weights(weights)
  out = tmp_path / "out"
  result = _export(f"--arch={arch_path}", f"--weights={weights}", "--quantize=fp32,int8",
                   f"--out_dir={out}", *FAST)
  assert result.returncode == 3, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("to_tflite: ")]
  assert lines == [f"to_tflite: diverged: {weights}: {kernel.path} hold NaN or infinity (the "
                   "training diverged); nothing exported"], result.stderr[-3000:]
  assert not any(name.endswith(".tflite") or name.startswith("report") for name in os.listdir(out))


def test_a_truncated_model_file_is_named_as_such_and_nan_outputs_never_pass(tmp_path):
  from betanas_tf import divergence, export  # pylint: disable=import-outside-toplevel
  arch, _ = _arch_file(tmp_path)
  model = builder.build_model(arch)
  path = str(tmp_path / "model.keras")
  model.save(path)
  with open(path, "r+b") as handle:
    handle.truncate(os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match=r"model.keras: not a readable .keras file \(not a complete "
                     r"zip archive: \d+ bytes, truncated or corrupt\); write it again"):
    export._load_weights(model, path)  # pylint: disable=protected-access
  # argmax of NaN against argmax of NaN "agrees": the check refuses NaN outputs instead.
  import numpy as np  # pylint: disable=import-outside-toplevel
  with pytest.raises(divergence.Diverged, match="the int8 model's outputs: 3 of 3 outputs"):
    divergence.check_finite_outputs(np.full((3, 10), np.nan), "the int8 model's outputs")


@pytest.mark.parametrize("args,message", [
    (["--quantize=fp32,int4"], "--quantize takes a subset of fp32,fp16,int8,int8_qat, got fp32,int4"),
    (["--quantize=int8_qat"], "--quantize=int8_qat needs --weights=<a trained model.keras>"),
    (["--weights=/nonexistent.keras"], "/nonexistent.keras: weights file not found"),
])
@pytest.mark.slow
def test_bad_input(tmp_path, args, message):
  _, arch_path = _arch_file(tmp_path)
  result = _export(f"--arch={arch_path}", f"--out_dir={tmp_path / 'o'}", *FAST, *args)
  assert result.returncode == 1 and f"to_tflite: error: {message}" in result.stderr


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
