"""TFLite conversion: golden op lists (BN folded, ReLU6 fused), int8, latency (fp32 parity and
op counts of every registered space and reference: sweep_test.py)."""

import numpy as np
import pytest

from betanas_tf import builder
from betanas_tf import references
from betanas_tf import spaces
from betanas_tf import tflite

ALLOWED = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED"}


def _calibrated(arch, seed=0):
  """Random weights with BN statistics set on data, so outputs are O(1) and parity is meaningful."""
  model = builder.build_model(arch)
  rng = np.random.default_rng(seed)
  builder.set_bn_statistics(model, rng.normal(size=(16, arch.input_size, arch.input_size, 3)).astype(np.float32))
  return model, rng.normal(size=(16, arch.input_size, arch.input_size, 3)).astype(np.float32)


@pytest.mark.slow
def test_mobilenet_v2_graph_is_exactly_the_architecture():
  arch = references.mobilenet_v2()
  content = tflite.convert(builder.build_model(arch))
  ops = tflite.op_counts(content)
  assert ops == tflite.expected_op_counts(arch)
  assert ops == {"CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "MEAN": 1, "FULLY_CONNECTED": 1}
  assert 13.5e6 < len(content) < 14.5e6  # 3.5M float32 weights, BN folded away


def test_se_and_swish_add_only_their_own_ops():
  space = spaces.get_space("micro")
  arch = space.arch_from_choices([1, 2, 0]).replace(se_ratio=0.25, activation="swish")
  ops = tflite.op_counts(tflite.convert(builder.build_model(arch)))
  assert ops == tflite.expected_op_counts(arch)
  assert set(ops) == ALLOWED | {"LOGISTIC", "MUL"}
  # SE: MEAN + 2 CONV_2D + LOGISTIC + MUL per MBConv (3 here); swish: LOGISTIC + MUL per activation.
  assert ops["MEAN"] == 1 + 3 and ops["CONV_2D"] == 2 + 6 + 6  # stem+head, expand+project, SE


def test_int8_quantization_and_int8_io():
  space = spaces.get_space("micro")
  arch = space.arch_from_choices([0, 0, 0])
  model, images = _calibrated(arch)
  fp32 = tflite.convert(model)
  int8 = tflite.convert(model, "int8", lambda: (x[None] for x in images), int8_io=True)
  runner = tflite.interpreter(int8)
  assert runner.get_input_details()[0]["dtype"] == np.int8
  assert runner.get_output_details()[0]["dtype"] == np.int8
  assert len(int8) < 0.7 * len(fp32)  # tiny net: flatbuffer metadata is a large share
  expected = np.asarray(model(images, training=False))
  got = tflite.run(int8, images)
  assert np.abs(got - expected).max() < 0.25 * np.abs(expected).max()
  with pytest.raises(ValueError, match="int8 quantization needs representative data"):
    tflite.convert(model, "int8")
  with pytest.raises(ValueError, match=r"quantization must be one of \('fp32', 'fp16', 'int8'\), got 'int4'"):
    tflite.convert(model, "int4")


def test_fp16_halves_the_file_and_latency_figures_are_sane():
  arch = spaces.get_space("micro").arch_from_choices([1, 1, 1])
  model, images = _calibrated(arch)
  fp32, fp16 = tflite.convert(model), tflite.convert(model, "fp16")
  assert 0.4 < len(fp16) / len(fp32) < 0.7
  assert np.abs(tflite.run(fp16, images) - np.asarray(model(images, training=False))).max() < 1e-2
  stats = tflite.measure_latency(fp32, threads=1, warmup=2, runs=15)
  assert stats["runs"] == 15 and stats["threads"] == 1
  assert 0 < stats["median_ms"] <= stats["p90_ms"] < 1000


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
