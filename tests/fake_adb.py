#!/usr/bin/env python3
"""A stand-in for `adb` in tests (no phone here): records its argv, prints what adb and
TFLite's benchmark_model print.

FAKE_ADB_LOG: file that receives one JSON argv list per call.
FAKE_ADB_DEVICES: comma-separated attached serials (default "FAKE123"; "" = none).
FAKE_ADB_AVG_US: the "Inference (avg)" figure benchmark_model reports (default 29912.4).
FAKE_ADB_NO_GPU: "1" = the phone has no GPU delegate (benchmark_model --use_gpu=true fails as
it does on a phone without OpenCL).
"""

import json
import os
import sys

BENCHMARK_OUTPUT = """STARTING!
Log parameter values verbosely: [0]
Num threads: [{threads}]
Graph: [{graph}]
#threads used for CPU inference: [{threads}]
Loaded model {graph}
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
The input model file size (MB): 0.0421
Initialized session in 2.123ms.
Running benchmark for at least {warmup} iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count={warmup} first=31540 curr=29871 min=29610 max=31540 avg=30055.2 std=553

Running benchmark for at least {runs} iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count={runs} first=29901 curr=29766 min=29544 max=30642 avg={avg} std=240

Inference timings in us: Init: 2123, First inference: 31540, Warmup (avg): 30055.2, Inference (avg): {avg}
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your own risk.
Memory footprint delta from the start of the tool (MB): init=5.5 overall=20.1
"""


def main(argv):
  log = os.environ.get("FAKE_ADB_LOG")
  if log:
    with open(log, "a") as handle:
      handle.write(json.dumps(argv) + "\n")
  args = list(argv)
  if args[:1] == ["-s"]:
    args = args[2:]
  devices = [d for d in os.environ.get("FAKE_ADB_DEVICES", "FAKE123").split(",") if d]
  if args == ["devices"]:
    print("List of devices attached")
    for serial in devices:
      print(f"{serial}\tdevice")
    return 0
  if not devices:
    print("adb: no devices/emulators found", file=sys.stderr)
    return 1
  if args[0] == "push":
    print(f"{args[1]}: 1 file pushed, 0 skipped. 95.3 MB/s (43156 bytes in 0.000s)")
    return 0
  if args[0] == "shell":
    options = dict(a[2:].split("=", 1) for a in args[2:] if a.startswith("--"))
    if options.get("use_gpu") == "true" and os.environ.get("FAKE_ADB_NO_GPU") == "1":
      print("STARTING!\nINFO: Initialized TensorFlow Lite runtime.")
      print("ERROR: Can not open OpenCL library on this device - undefined symbol: clGetCommandBufferInfoKHR\n"
            "ERROR: Falling back to OpenGL\nERROR: TfLiteGpuDelegate Init: OpenGL-based API disabled\n"
            "ERROR: Failed to apply GPU delegate.\nBenchmarking failed.", file=sys.stderr)
      return 1
    print(BENCHMARK_OUTPUT.format(graph=options.get("graph"), threads=options.get("num_threads"),
                                  warmup=options.get("warmup_runs"), runs=options.get("num_runs"),
                                  avg=os.environ.get("FAKE_ADB_AVG_US", "29912.4")))
    return 0
  print(f"fake adb: unsupported command {args}", file=sys.stderr)
  return 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
