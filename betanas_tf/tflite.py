"""TFLite conversion, inspection, inference and host latency (LiteRT interpreter).

Conversion goes through `tf.lite.TFLiteConverter.from_keras_model` (never
`from_concrete_functions` on Keras 3 models: weights are not folded and the
result is 10x slower; docs/design.md §4). BatchNorm folds into the convolutions and
ReLU6 fuses into them, so an MBConv network becomes CONV_2D /
DEPTHWISE_CONV_2D / ADD plus the head's MEAN and FULLY_CONNECTED.
"""

import collections
import statistics
import time
from typing import Callable, Dict, Iterable, Optional

import numpy as np
import tensorflow as tf

from betanas_tf import arch as arch_lib

FORMATS = ("fp32", "fp16", "int8")


def convert(model, quantization: str = "fp32",
            representative_data: Optional[Callable[[], Iterable[np.ndarray]]] = None,
            int8_io: bool = False) -> bytes:
  """A Keras model as a .tflite flatbuffer.

  fp16: float16 weights (dequantised at run time on CPU). int8: full-integer
  post-training quantization calibrated on `representative_data` (a callable
  yielding single float32 input batches); with `int8_io` the model's input and
  output are int8 too.
  """
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  if quantization == "fp16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif quantization == "int8":
    if representative_data is None:
      raise ValueError("int8 quantization needs representative data")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in representative_data())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
      converter.inference_input_type = tf.int8
      converter.inference_output_type = tf.int8
  elif quantization != "fp32":
    raise ValueError(f"quantization must be one of {FORMATS}, got {quantization!r}")
  return converter.convert()


def interpreter(model_bytes: bytes, threads: int = 1, delegates: bool = True):
  """A LiteRT interpreter (with XNNPACK, LiteRT's default CPU delegate, unless `delegates`
  is False)."""
  from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel
  resolver = (litert.OpResolverType.AUTO if delegates
              else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  runner = litert.Interpreter(model_content=model_bytes, num_threads=threads,
                              experimental_op_resolver_type=resolver)
  runner.allocate_tensors()
  return runner


def op_counts(model_bytes: bytes) -> Dict[str, int]:
  """{TFLite builtin op name: how many} in the model's graph."""
  details = interpreter(model_bytes, delegates=False)._get_ops_details()  # pylint: disable=protected-access
  return dict(collections.Counter(op["op_name"] for op in details))


def expected_op_counts(arch: arch_lib.Architecture) -> Dict[str, int]:
  """The ops an Architecture must become in fp32 TFLite (BN folded, ReLU6 fused): the stem
  and head convs, the pool and classifier, plus what each block's op says it becomes. The
  tests hold every exported network to it (and a new op's `tflite_ops` with it)."""
  counts = collections.Counter({"CONV_2D": 2, "MEAN": 1, "FULLY_CONNECTED": 1})
  if arch.activation == "swish":  # x * sigmoid(x) after the stem and the head conv
    counts.update({"LOGISTIC": 2, "MUL": 2})
  for block, shape in zip(arch.blocks, arch.block_shapes()):
    counts.update(block.op_type.tflite_ops(block, shape, arch.activation, arch.se_ratio))
  return dict(counts)


def run(model_bytes: bytes, inputs: np.ndarray, threads: int = 1) -> np.ndarray:
  """Runs a batch through the model one example at a time; returns float outputs
  (int8 outputs are dequantised, int8 inputs quantised with the model's scale)."""
  runner = interpreter(model_bytes, threads)
  source, sink = runner.get_input_details()[0], runner.get_output_details()[0]
  outputs = []
  for example in inputs:
    x = example[None].astype(np.float32)
    if source["dtype"] == np.int8:
      scale, zero = source["quantization"]
      x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    runner.set_tensor(source["index"], x)
    runner.invoke()
    y = runner.get_tensor(sink["index"])
    if sink["dtype"] == np.int8:
      scale, zero = sink["quantization"]
      y = (y.astype(np.float32) - zero) * scale
    outputs.append(y[0])
  return np.stack(outputs)


def ready_interpreter(model_bytes: bytes, threads: int = 1, delegates: bool = True):
  """An interpreter with its input set (zeros): `invoke()` is one timed inference."""
  runner = interpreter(model_bytes, threads, delegates)
  source = runner.get_input_details()[0]
  runner.set_tensor(source["index"], np.zeros(source["shape"], source["dtype"]))
  return runner


def measure_latency(model_bytes: bytes, threads: int = 1, warmup: int = 5, runs: int = 30,
                    delegates: bool = True) -> Dict[str, float]:
  """Host latency of `invoke()` in ms (inputs set once beforehand): median, p90, mean, std;
  with XNNPACK unless `delegates` is False."""
  runner = ready_interpreter(model_bytes, threads, delegates)
  for _ in range(warmup):
    runner.invoke()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    runner.invoke()
    times.append((time.perf_counter() - start) * 1000.0)
  return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)),
          "mean_ms": statistics.fmean(times), "std_ms": statistics.pstdev(times), "runs": runs,
          "threads": threads, "delegate": "xnnpack" if delegates else "none"}
