"""Latency on an Android phone with TFLite's `benchmark_model`, driven through adb.

Getting the binary onto the phone: download the prebuilt `benchmark_model` for
the phone's ABI (android_aarch64 for 64-bit ARM) from the TensorFlow Lite /
LiteRT performance-measurement page, or build it with Bazel
(`bazel build -c opt --config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model`),
then `adb push benchmark_model /data/local/tmp/ && adb shell chmod +x /data/local/tmp/benchmark_model`.
"""

import re
import shutil
import subprocess
from typing import List, Optional

TIMINGS = re.compile(r"Inference timings in us:.*?Inference \(avg\):\s*([0-9.eE+-]+)", re.S)


class AndroidError(RuntimeError):
  """adb is missing, no device is attached, or benchmark_model failed."""


class AndroidBenchmark:
  """Pushes .tflite files to a phone and times them with benchmark_model."""

  def __init__(self, adb: str = "adb", serial: Optional[str] = None,
               binary: str = "/data/local/tmp/benchmark_model", device_dir: str = "/data/local/tmp",
               timeout_s: float = 600.0):
    self.adb, self.serial, self.binary = adb, serial, binary
    self.device_dir, self.timeout_s = device_dir.rstrip("/"), timeout_s

  def _adb(self, *args: str) -> str:
    command = [self.adb] + (["-s", self.serial] if self.serial else []) + list(args)
    try:
      result = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout_s)
    except FileNotFoundError:
      raise AndroidError(f"adb not found ({self.adb!r}); install Android platform-tools or pass --adb") from None
    except subprocess.TimeoutExpired:
      raise AndroidError(f"adb timed out after {self.timeout_s:.0f} s: {' '.join(command)}") from None
    if result.returncode != 0:
      raise AndroidError(f"{' '.join(command)} failed ({result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()[:500]}")
    return result.stdout

  def check(self) -> str:
    """The serial of the phone that will be used; AndroidError if there is none."""
    if shutil.which(self.adb) is None:
      raise AndroidError(f"adb not found ({self.adb!r}); install Android platform-tools or pass --adb")
    lines = self._adb_devices()
    devices = [line.split()[0] for line in lines if line.strip().endswith("device")]
    if self.serial:
      if self.serial not in devices:
        raise AndroidError(f"device {self.serial} is not attached (attached: {', '.join(devices) or 'none'})")
      return self.serial
    if len(devices) != 1:
      raise AndroidError(f"expected exactly one attached device, found {len(devices)}; pass --adb_serial")
    return devices[0]

  def _adb_devices(self) -> List[str]:
    command = [self.adb, "devices"]
    try:
      result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
      raise AndroidError(f"adb not found ({self.adb!r}); install Android platform-tools or pass --adb") from None
    return result.stdout.splitlines()[1:]

  def measure(self, tflite_path: str, threads: int = 1, warmup: int = 10, runs: int = 50) -> float:
    """Average inference time in ms reported by benchmark_model for one model."""
    name = tflite_path.replace("\\", "/").rsplit("/", 1)[-1]
    remote = f"{self.device_dir}/{name}"
    self._adb("push", tflite_path, remote)
    output = self._adb("shell", self.binary, f"--graph={remote}", f"--num_threads={threads}",
                       f"--warmup_runs={warmup}", f"--num_runs={runs}")
    return parse_inference_avg_ms(output)


def parse_inference_avg_ms(output: str) -> float:
  match = TIMINGS.search(output)
  if not match:
    raise AndroidError("benchmark_model printed no 'Inference timings in us: ... Inference (avg): X' "
                       f"line; its output ended with: {output.strip()[-300:]!r}")
  return float(match.group(1)) / 1000.0
