"""What times a latency table's models: LiteRT on this host, a phone, or TensorFlow on a device.

Every timer offers `time_models({key: Keras model}, cold=keys) -> {key: timing entry}` (one
call: the models timed together, interleaved where the target allows; the `cold` ones with
the caches evicted before each timed call where the timer's plan says so: `timing`),
`time_model(model)` and `describe()` (the table's ``target``). `layer_models` makes the one-layer models of an
Architecture at their exact input shapes, keyed by `latency_table` keys.

`TARGETS` names what a table can be measured on (`python -m betanas_tf.latency
--target=NAME`): a factory ``(options, runtime, plan) -> timer``, where `options` holds the
program's flag values (``batch_size``, ``adb``, ``warmup_runs``, ...), `runtime` the LiteRT
number format, threads and delegate, and `plan` the host timing plan. A new target is a
timer class and one registration, in any module (docs/contributing.md).
"""

import dataclasses
import os
import platform
from typing import Dict, Optional, Sequence

from betanas_tf import arch as arch_lib
from betanas_tf.latency import table as latency_table
from betanas_tf import primitives
from betanas_tf.latency import runtime as runtime_lib
from betanas_tf.latency import timing
from betanas_tf.registry import Registry

# Models whose key starts with this (the anchor networks, `latency`) are the same in every
# call of a build: a HostTimer converts them once.
REUSED_PREFIX = "__anchor"


def host_description(threads: int) -> Dict:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as handle:
      for line in handle:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  try:
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    litert = metadata.version("ai-edge-litert")
  except Exception:  # pylint: disable=broad-except
    litert = "unknown"
  return {"kind": "host", "cpu": cpu, "threads": threads, "tensorflow": tf.__version__,
          "ai_edge_litert": litert, "python": platform.python_version()}


def layer_models(arch: arch_lib.Architecture, keys_wanted=None) -> Dict[str, object]:
  """{key: zero-argument function building a one-layer Keras model at its exact input shape}."""
  import keras  # pylint: disable=import-outside-toplevel

  def single(input_shape, apply):
    def make():
      inputs = keras.Input(input_shape)
      return keras.Model(inputs, apply(inputs))
    return make

  layers = keras.layers
  makers = {latency_table.stem_key(arch): single(
      (arch.input_size, arch.input_size, arch.input_channels),
      lambda x: primitives.apply_conv_bn_act(primitives.conv_bn_act(
          layers, "stem_conv", arch.stem.filters, arch.stem.kernel, arch.stem.stride, arch.activation), x))}
  for position, (block, shape) in enumerate(zip(arch.blocks, arch.block_shapes())):
    key = latency_table.block_key(arch, block, shape)
    if key is None:
      continue
    makers[key] = single(
        (shape.in_size, shape.in_size, shape.in_channels),
        lambda x, b=block, s=shape, p=position: b.op_type.apply(b.op_type.make_parts(
            layers, arch_lib.block_name(p, b), s.in_channels, b, arch.activation, arch.se_ratio), x))
  conv_key, logits_key = latency_table.head_keys(arch)
  final = arch.final_size
  makers[conv_key] = single((final, final, arch.final_channels), lambda x: primitives.apply_conv_bn_act(
      primitives.conv_bn_act(layers, "head_conv", arch.head.filters, 1, 1, arch.activation), x))
  makers[logits_key] = single((final, final, arch.head.filters), lambda x: layers.Dense(
      arch.num_classes, name="classifier")(layers.GlobalAveragePooling2D(name="pool")(x)))
  return makers


def empty_model():
  import keras  # pylint: disable=import-outside-toplevel
  inputs = keras.Input((1, 1, 8))
  return keras.Model(inputs, keras.layers.Reshape((8,))(inputs))


class HostTimer:
  """Times TFLite models in `runtime` (format, threads, delegate) with the LiteRT
  interpreter on this machine, interleaved (`timing.interleaved`): every model of one call
  is sampled in every round; the models a call names `cold` with the plan's `evict_mb`
  written before each timed call (default plan: `timing.default_evict_mb`)."""

  def __init__(self, runtime: Optional[runtime_lib.Runtime] = None,
               plan: Optional[timing.TimingPlan] = None):
    self.runtime = runtime or runtime_lib.Runtime()
    self.plan = plan or timing.TimingPlan(evict_mb=timing.default_evict_mb())
    if self.runtime.delegate not in runtime_lib.HOST_DELEGATES:
      raise ValueError(f"this host's LiteRT interpreter has no {self.runtime.delegate} delegate "
                       f"(host delegates: {', '.join(runtime_lib.HOST_DELEGATES)}); the GPU "
                       "delegate is timed on a phone (--android --use_gpu)")
    self._anchors: Dict[str, bytes] = {}  # converted once: the same networks in every call

  @property
  def threads(self) -> int:
    return self.runtime.threads

  def _convert(self, key: str, model) -> bytes:
    if not key.startswith(REUSED_PREFIX):
      return self.runtime.convert(model)
    if key not in self._anchors:
      self._anchors[key] = self.runtime.convert(model)
    return self._anchors[key]

  def time_models(self, models: Dict[str, object],
                  cold: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    from betanas_tf import tflite  # pylint: disable=import-outside-toplevel
    converted = {key: self._convert(key, model) for key, model in models.items()}
    delegates = self.runtime.delegate == "xnnpack"
    with timing.pinned(self.threads):
      runners = {key: tflite.ready_interpreter(flat, self.threads, delegates).invoke
                 for key, flat in converted.items()}
      return timing.interleaved(runners, self.plan, cold=cold)

  def time_model(self, model) -> Dict[str, float]:
    return self.time_models({"model": model})["model"]

  def describe(self) -> Dict:
    with timing.pinned(self.threads) as cpus:
      return dict(host_description(self.threads), **self.runtime.describe(),
                  timing=dataclasses.asdict(self.plan), pinned_cpus=cpus)


class AndroidTimer:
  """Times TFLite models in `runtime` on a phone with benchmark_model (average over runs;
  the phone's binary does its own warm-up and repetitions, one model after another)."""

  def __init__(self, bench, runtime: Optional[runtime_lib.Runtime] = None, warmup: int = 10,
               runs: int = 50, workdir: str = "."):
    self.bench, self.runtime = bench, runtime or runtime_lib.Runtime()
    self.warmup, self.runs, self.workdir = warmup, runs, workdir

  def time_model(self, model) -> Dict[str, float]:
    import tempfile  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
      path = os.path.join(tmp, "layer.tflite")
      with open(path, "wb") as handle:
        handle.write(self.runtime.convert(model))
      avg = self.bench.measure(path, self.runtime.threads, self.warmup, self.runs,
                               self.runtime.delegate)
    return {"mean": avg, "median": avg, "std": 0.0, "count": self.runs}

  def time_models(self, models: Dict[str, object],
                  cold: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    del cold  # benchmark_model times each model on its own; the phone's caches are its own
    return {key: self.time_model(model) for key, model in models.items()}

  def describe(self) -> Dict:
    return {"kind": "android", "serial": self.bench.serial, "binary": self.bench.binary,
            **self.runtime.describe()}


class TensorFlowTimer:
  """Times Keras models as TensorFlow graphs on a device at a stated batch size: the GPU
  latency the paper's BetaNet-B is searched under (`--target=gpu`), or the same code path
  on the CPU (`--target=tf_cpu`). Each call runs the model and reduces its output to one
  number on the device, so reading that number waits for the device without copying the
  output; the empty model's time (the overhead) is subtracted like on the host."""

  def __init__(self, device: str = "/GPU:0", batch_size: int = 8,
               plan: Optional[timing.TimingPlan] = None):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    kind = device.strip("/").split(":")[0].upper()
    if not tf.config.list_physical_devices(kind):
      raise ValueError(f"no {kind} visible to TensorFlow (tf.config.list_physical_devices("
                       f"{kind!r}) is empty); --target=tf_cpu times the same path on the CPU")
    self.device, self.batch_size, self.plan = device, batch_size, plan or timing.TimingPlan()

  def _runner(self, model):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    with tf.device(self.device):
      inputs = tf.zeros((self.batch_size,) + tuple(model.input_shape[1:]))
      forward = tf.function(lambda x: tf.reduce_sum(model(x, training=False)))
      forward(inputs).numpy()  # trace and place once
    return lambda: forward(inputs).numpy()

  def time_models(self, models: Dict[str, object],
                  cold: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    return timing.interleaved({key: self._runner(m) for key, m in models.items()}, self.plan,
                              cold=cold)

  def time_model(self, model) -> Dict[str, float]:
    return self.time_models({"model": model})["model"]

  def describe(self) -> Dict:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    details = {}
    for device in tf.config.list_physical_devices(self.device.strip("/").split(":")[0].upper()):
      details = tf.config.experimental.get_device_details(device) or {}
      break
    name = details.get("device_name") or host_description(1)["cpu"]
    return {"kind": "tensorflow", "device": self.device, "device_name": name,
            "batch_size": self.batch_size, "tensorflow": tf.__version__,
            "timing": dataclasses.asdict(self.plan)}


# ---- what a table can be measured on ----------------------------------------------------

TARGETS: Registry = Registry("latency target")


def _tensorflow_only(name: str, runtime: runtime_lib.Runtime):
  if runtime != runtime_lib.Runtime(threads=runtime.threads):
    raise ValueError(f"--target={name} times TensorFlow float32 graphs; --quantize, "
                     "--int8_io and --delegate are for LiteRT (litert or android)")


@TARGETS.decorator("litert")
def _litert(options, runtime, plan):
  """This host's LiteRT interpreter (with --delegate=none a phone CPU's stand-in)."""
  del options
  return HostTimer(runtime, plan)


@TARGETS.decorator("android")
def _android(options, runtime, plan):
  """A phone over adb, with TFLite's benchmark_model (--adb, --adb_serial, --benchmark_binary,
  --warmup_runs, --runs)."""
  del plan
  from betanas_tf.latency import android  # pylint: disable=import-outside-toplevel
  bench = android.AndroidBenchmark(options.adb, options.adb_serial, options.benchmark_binary)
  bench.serial = bench.check()
  return AndroidTimer(bench, runtime, options.warmup_runs, options.runs)


@TARGETS.decorator("gpu")
def _gpu(options, runtime, plan):
  """TensorFlow on the GPU at --batch_size (the paper's BetaNet-B latency)."""
  _tensorflow_only("gpu", runtime)
  return TensorFlowTimer("/GPU:0", options.batch_size, plan)


@TARGETS.decorator("tf_cpu")
def _tf_cpu(options, runtime, plan):
  """The same TensorFlow path on the CPU."""
  _tensorflow_only("tf_cpu", runtime)
  return TensorFlowTimer("/CPU:0", options.batch_size, plan)
