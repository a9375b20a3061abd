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

  def _run(self, *args: str) -> subprocess.CompletedProcess:
    command = [self.adb] + (["-s", self.serial] if self.serial else []) + list(args)
    try:
      return subprocess.run(command, capture_output=True, text=True, timeout=self.timeout_s)
    except FileNotFoundError:
      raise AndroidError(f"adb not found ({self.adb!r}); install Android platform-tools or pass --adb") from None
    except subprocess.TimeoutExpired:
      raise AndroidError(f"adb timed out after {self.timeout_s:.0f} s: {' '.join(command)}") from None

  def _adb(self, *args: str) -> str:
    result = self._run(*args)
    if result.returncode != 0:
      raise AndroidError(f"{' '.join(result.args)} failed ({result.returncode}): "
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

  def measure(self, tflite_path: str, threads: int = 1, warmup: int = 10, runs: int = 50,
              delegate: str = "xnnpack") -> float:
    """Average inference time in ms reported by benchmark_model for one model, on the
    phone's CPU (delegate xnnpack or none: benchmark_model's --use_xnnpack) or its GPU
    (gpu: --use_gpu=true)."""
    if delegate not in DELEGATE_OPTIONS:
      raise AndroidError(f"no benchmark_model option for delegate {delegate!r} "
                         f"(known: {', '.join(DELEGATE_OPTIONS)})")
    name = tflite_path.replace("\\", "/").rsplit("/", 1)[-1]
    remote = f"{self.device_dir}/{name}"
    self._adb("push", tflite_path, remote)
    arguments = ("shell", self.binary, f"--graph={remote}", f"--num_threads={threads}",
                 f"--warmup_runs={warmup}", f"--num_runs={runs}", *DELEGATE_OPTIONS[delegate])
    if delegate != "gpu":
      return parse_inference_avg_ms(self._adb(*arguments))
    result = self._run(*arguments)
    _raise_if_gpu_failed(result.stdout + "\n" + result.stderr)
    if result.returncode != 0:
      raise AndroidError(f"{' '.join(result.args)} failed ({result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()[:500]}")
    return parse_inference_avg_ms(result.stdout)


# benchmark_model's options for each delegate (explicit, so a table says what it timed
# whatever the binary's defaults are).
DELEGATE_OPTIONS = {"xnnpack": ("--use_xnnpack=true",), "none": ("--use_xnnpack=false",),
                    "gpu": ("--use_gpu=true",)}
FAILURE_WORDS = re.compile(r"\b(fail\w*|error|not supported|unsupported|not available|"
                           r"could not|cannot|unable)\b", re.I)


def _raise_if_gpu_failed(output: str):
  """benchmark_model falls back to the CPU, or stops, when the GPU delegate cannot be applied
  (no OpenCL/OpenGL driver, an op the delegate lacks): one clear line instead of a CPU time
  recorded as the GPU's."""
  said = [line.strip() for line in output.splitlines()
          if "gpu" in line.lower() and FAILURE_WORDS.search(line)]
  if said:   # the verdict ("Failed to apply GPU delegate.") rather than its first symptom
    line = next((l for l in said if "fail" in l.lower()), said[0])
    raise AndroidError("the phone's GPU delegate could not run this model (benchmark_model "
                       f"--use_gpu=true said: {line[:200]!r})")


def parse_inference_avg_ms(output: str) -> float:
  match = TIMINGS.search(output)
  if not match:
    raise AndroidError("benchmark_model printed no 'Inference timings in us: ... Inference (avg): X' "
                       f"line; its output ended with: {output.strip()[-300:]!r}")
  return float(match.group(1)) / 1000.0
