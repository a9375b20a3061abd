"""Quantization-aware training in its own process, and tfmot never leaking into betanas_tf."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(*args, timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


@pytest.mark.slow
def test_importing_betanas_tf_never_imports_tfmot():
  code = ("import os, sys\n"
          "import betanas_tf, betanas_tf.search, betanas_tf.train, betanas_tf.runner, betanas_tf.latency\n"
          "import betanas_tf.tflite, betanas_tf.builder, betanas_tf.supernet, betanas_tf.arch_info\n"
          "print('tensorflow_model_optimization' in sys.modules, os.environ.get('TF_USE_LEGACY_KERAS'))\n"
          "import betanas_tf.qat\n"
          "print('tensorflow_model_optimization' in sys.modules)\n")
  result = _python("-c", code, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["False", "None", "False"]  # even betanas_tf.qat imports it lazily


@pytest.mark.slow
def test_qat_from_a_retrained_model(tmp_path):
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  space = spaces.get_space("micro")
  arch = tmp_path / "arch.json"
  space.arch_from_choices(space.choices_from_string("k3e6-k5e3-k3e3"), name="micro_q").save(str(arch))
  retrain = tmp_path / "retrain"
  result = _python("-m", "betanas_tf.train", f"--arch={arch}", f"--out_dir={retrain}", "--dataset=digits",
                   "--epochs=6", "--batch_size=64", "--lr=0.2", "--warmup_epochs=1", "--dropout=0.1",
                   "--verbose=0")
  assert result.returncode == 0, result.stderr[-3000:]
  # The exporter runs `python -m betanas_tf.qat` in its own process and reports QAT vs PTQ.
  exported = tmp_path / "export"
  result = _python(os.path.join(ROOT, "export", "to_tflite.py"), f"--arch={retrain / 'arch.json'}",
                   f"--weights={retrain / 'model.keras'}", "--quantize=int8,int8_qat", "--dataset=digits",
                   "--qat_epochs=1", "--runs=5", "--parity_examples=100", f"--out_dir={exported}")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.load(open(exported / "report.json"))["int8_qat"]
  assert report["rebuild_max_abs_diff"] <= 1e-5  # tf_keras rebuild == Keras 3 model before quantization
  assert report["eval_examples"] == 360 and report["qat_epochs"] == 1
  # Chance is 10 %; >= 60 % of 360 digits cannot happen by guessing (binomial tail < 1e-100).
  for key in ("float_top1", "ptq_int8_top1", "qat_int8_top1"):
    assert report[key] >= 0.6, key
  assert abs(report["qat_int8_top1"] - report["float_top1"]) <= 0.1
  assert report["qat_int8_latency"]["median_ms"] > 0
  from betanas_tf import tflite  # pylint: disable=import-outside-toplevel
  ops = tflite.op_counts(open(exported / "micro_q_int8_qat.tflite", "rb").read())
  assert ops["CONV_2D"] == 2 + 2 + 2 + 2 and ops["DEPTHWISE_CONV_2D"] == 3
  assert "QUANTIZE" in ops and "DEQUANTIZE" in ops  # int8 inside, float at the boundary
  assert os.path.getsize(exported / "micro_q_int8.tflite") > 0
  assert "Quantization-aware int8" in open(exported / "report.md").read()


@pytest.mark.slow
def test_bad_model_path(tmp_path):
  result = _python("-m", "betanas_tf.qat", "--model=/nonexistent/model.keras", f"--arch={tmp_path}/none.json",
                   f"--out_dir={tmp_path / 'o'}", timeout=120)
  assert result.returncode == 1 and "qat: error: " in result.stderr and "none.json" in result.stderr


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
