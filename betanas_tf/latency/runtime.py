"""How a TFLite model runs: its number format, thread count and delegate.

A latency table describes one runtime, and a prediction means something only for a model
that runs the same way: an int8 1x1 convolution gains more from quantisation than a 7x7
depthwise one, and on this host XNNPACK makes a 7x7 depthwise convolution slower than
LiteRT's own kernel (docs/benchmarks.md). So `latency build` records the `Runtime` it timed
in the table's target, and everything that reads a table (the search, `validate`, the
exporter) compares it with the runtime it is about to time or report.

* quantize: fp32, fp16 (float16 weights, dequantised at run time on a CPU), int8 (full
  integer post-training quantisation; `int8_io`: int8 input and output tensors, as the
  exporter's `--int8_io`, else float I/O around the integer graph).
* threads: interpreter threads.
* delegate: xnnpack (LiteRT's default CPU delegate), none (LiteRT's built-in kernels), gpu
  (TFLite's GPU delegate; phones only, through benchmark_model's --use_gpu).
"""

import dataclasses
from typing import Dict, List, Optional

import numpy as np

QUANTIZE = ("fp32", "fp16", "int8")
DELEGATES = ("xnnpack", "none", "gpu")
HOST_DELEGATES = ("xnnpack", "none")
REPRESENTATIVE_SAMPLES = 4   # int8 calibration inputs of a timed model (the values do not
                             # change an int8 kernel's speed, only the scales)


@dataclasses.dataclass(frozen=True)
class Runtime:
  quantize: str = "fp32"
  threads: int = 1
  delegate: str = "xnnpack"
  int8_io: bool = False

  def __post_init__(self):
    if self.quantize not in QUANTIZE:
      raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}, got {self.quantize!r}")
    if self.delegate not in DELEGATES:
      raise ValueError(f"delegate must be one of {', '.join(DELEGATES)}, got {self.delegate!r}")
    if not isinstance(self.threads, int) or self.threads < 1:
      raise ValueError(f"threads must be a positive integer, got {self.threads!r}")
    if self.int8_io and self.quantize != "int8":
      raise ValueError(f"int8_io needs quantize=int8, got {self.quantize}")

  def describe(self) -> Dict:
    """The fields a table's target records."""
    return {"quantize": self.quantize, "threads": self.threads, "delegate": self.delegate,
            "int8_io": self.int8_io}

  def words(self) -> str:
    io = ", int8 I/O" if self.int8_io else ""
    return (f"{self.quantize}{io}, {self.threads} thread{'s' if self.threads != 1 else ''}, "
            f"delegate {self.delegate}")

  def convert(self, model) -> bytes:
    """The Keras model as this runtime's .tflite (int8: calibrated on seeded random inputs
    of the model's input shape)."""
    from betanas_tf import tflite  # pylint: disable=import-outside-toplevel
    shape = tuple(model.input_shape[1:])
    representative = None
    if self.quantize == "int8":
      rng = np.random.default_rng(0)
      samples = rng.standard_normal((REPRESENTATIVE_SAMPLES, 1) + shape).astype(np.float32)
      representative = lambda: iter(samples)
    return tflite.convert(model, self.quantize, representative, int8_io=self.int8_io)


def of_target(target: Dict) -> Optional[Runtime]:
  """The runtime a table's target describes; tables built before runtimes were recorded
  timed fp32 with XNNPACK (host) or benchmark_model's defaults (phone). None where the
  target does not say (an imported table)."""
  if target.get("kind") not in ("host", "android"):
    return None
  return Runtime(quantize=target.get("quantize", "fp32"), threads=int(target.get("threads", 1)),
                 delegate=target.get("delegate", "xnnpack"),
                 int8_io=bool(target.get("int8_io", False)))


def differences(table: Runtime, other: Runtime) -> List[str]:
  """What differs between a table's runtime and another, in words ([] if nothing)."""
  out = []
  for field in ("quantize", "threads", "delegate", "int8_io"):
    if getattr(table, field) != getattr(other, field):
      out.append(f"{field} {getattr(table, field)} (table) vs {getattr(other, field)}")
  return out
