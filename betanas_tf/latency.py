"""Latency lookup tables: build (host LiteRT or a phone), import ProxylessNAS YAML, predict, validate.

    python -m betanas_tf.latency build --space=proxyless_mobile --out=host_cpu.json [--threads=1] [--android]
    python -m betanas_tf.latency build --space=proxyless_mobile --target=gpu --batch_size=8 --out=gpu.json
    python -m betanas_tf.latency import --yaml=pixel1_latency_proxyless.yaml --out=pixel1.json
    python -m betanas_tf.latency predict --lut=host_cpu.json --arch=arch.json
    python -m betanas_tf.latency validate --lut=host_cpu.json --space=proxyless_mobile --n=50

Table format (JSON, sorted keys)::

    {"format": "betanas_tf.latency_table", "version": 1, "unit": "ms",
     "target": {"kind": "host" | "android" | "tensorflow" | "imported", "cpu": ..., ...},
     "overhead_ms": <per-invoke cost of an empty model, already subtracted>,
     "entries": {"<layer key>": {"median": ms, "mean": ms, "std": ms, "ci_low": ms, "ci_high": ms,
                                 "p10": ms, "p90": ms, "count": n, "outliers": n, "rounds": n,
                                 "anchor_ms": [ms, ms, ms]}, ...},
     "anchor": {"choices": [[...], [...], [...]], "ms": [ms, ms, ms]},  # drift reference (below)
     "correction": {"factor": f, "deep_factor": g, "per_layer_ms": d},  # fitted (below)
     "validation": {"n": 50, "mean_abs_error_pct": ..., "max_abs_error_pct": ..., ...}}

Layer keys follow ProxylessNAS' naming, so its published tables import as they are:
``Conv-input:224x224x3-output:112x112x32`` (stem),
``expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:3-stride:2-idskip:0``
(an MBConv; idskip:1 = residual), ``Conv_1-input:7x7x320-output:7x7x1280`` (head conv),
``Logits-input:7x7x1280-output:1000`` (pool + classifier). Identity blocks cost 0. Networks
with swish or squeeze-excite get ``-act:swish`` / ``-se:<ratio>`` suffixes.
The latency of an Architecture is the sum over its layers of f x entry + d, with the factor f
(g for the deep layers: at 1/8 of the input resolution or less) and the per-layer cost d
fitted on whole calibration networks (`fit_correction`).

A shared machine changes speed by several per cent over minutes (measured here: 12 %
between the chunks of one build, 13 % for a small network between build and validation),
and not by the same factor for every network (in that second case the networks of
2-10x the small one's cost slowed by 7 %). So every timing call of `build` and `validate`
also times three fixed whole networks of the space, the *anchors* (`anchor_choices`: the
cheapest, median and most expensive candidate of every block), interleaved with the rest.
An entry keeps the anchors' times of its own call (`anchor_ms`) and is read at the
reference speed (each anchor's median over the build): times the geometric mean of the
anchors' reference / call ratios. A whole network timed in another call (calibration,
validation) is compared at the reference speed through the *drift curve* of that call:
the anchors' now / reference ratios interpolated over the logarithm of the network's
layer sum (`LatencyTable.drift`). `validate` reports the error against what it measured,
and also with the prediction moved along that drift curve (the table at the machine's
speed during validation), which separates what the table gets wrong from what the
machine did meanwhile.
"""

import dataclasses
import json
import os
import platform
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from betanas_tf import arch as arch_lib
from betanas_tf import cost as cost_lib
from betanas_tf import io_utils
from betanas_tf import primitives
from betanas_tf import timing

FORMAT = "betanas_tf.latency_table"
VERSION = 1


class MissingEntriesError(KeyError):
  def __str__(self):
    return str(self.args[0])


def _hw(size: int, channels: int) -> str:
  return f"{size}x{size}x{channels}"


def _suffix(arch: arch_lib.Architecture) -> str:
  suffix = "" if arch.activation == "relu6" else f"-act:{arch.activation}"
  return suffix + (f"-se:{arch.se_ratio:g}" if arch.se_ratio > 0 else "")


def stem_key(arch: arch_lib.Architecture) -> str:
  return (f"Conv-input:{_hw(arch.input_size, arch.input_channels)}-output:"
          f"{_hw(arch.stem_output_size, arch.stem.filters)}" + _suffix(arch))


def block_key(arch: arch_lib.Architecture, block: arch_lib.Block,
              shape: arch_lib.BlockShape) -> Optional[str]:
  """The block's key (its op's entry in ops.OPS spells it); None for an op that takes no
  time (identity)."""
  key = block.op_type.latency_key(block, shape)
  return None if key is None else key + _suffix(arch)


def head_keys(arch: arch_lib.Architecture) -> List[str]:
  final = arch.final_size
  return [f"Conv_1-input:{_hw(final, arch.final_channels)}-output:{_hw(final, arch.head.filters)}"
          + _suffix(arch),
          f"Logits-input:{_hw(final, arch.head.filters)}-output:{arch.num_classes}"]


def layer_keys(arch: arch_lib.Architecture) -> List[str]:
  """Keys of every layer that costs time, in network order (identity blocks have none)."""
  keys = [stem_key(arch)]
  for block, shape in zip(arch.blocks, arch.block_shapes()):
    key = block_key(arch, block, shape)
    if key is not None:
      keys.append(key)
  return keys + head_keys(arch)


DEEP_STRIDE = 8  # layers at 1/DEEP_STRIDE of the input resolution or less are "deep"


def is_deep(key: str, input_size: int) -> bool:
  """Whether a layer (by its key) runs at 1/DEEP_STRIDE of the network's input resolution or
  less (at 224 px: the layers at 28, 14 and 7 px, which read the most weights per
  activation)."""
  match = re.search(r"input:(\d+)x", key)
  if match is None:
    raise ValueError(f"latency key {key!r} names no input resolution")
  return int(match.group(1)) * DEEP_STRIDE <= input_size


def fit_correction(early_sums: Sequence[float], deep_sums: Sequence[float],
                   layer_counts: Sequence[int], measured: Sequence[float],
                   ridge: float = 1e-2) -> Dict[str, float]:
  """The in-network correction ``{"factor": f, "deep_factor": g, "per_layer_ms": d}``
  minimising sum_n (f a_n + g b_n + d c_n - y_n)^2 + lam_f (f - 1)^2 + lam_g (g - 1)^2
  + lam_d d^2 over calibration networks n (a_n, b_n: the table's sums of network n's early
  and deep layers (`is_deep`), c_n: how many layers it has, y_n: its measured latency);
  lam = ridge x the column's own sum of squares (1 for a column of zeros, which then keeps
  its prior).

  A layer timed alone runs with its weights and input warm in cache and hands its output to
  nobody; inside a network every layer also pays for the hand-over (d), and the deep layers,
  which read more weights per activation, find their weights cold: on three builds here the
  deep layers' factor came out 2-8 % above the early layers'. Three parameters that every
  network informs (unlike one factor per resolution: the stem's is confounded with a
  constant, since every network has the same stem, and swung between 0.83 and 1.21 over two
  builds here)."""
  x = np.stack([np.asarray(early_sums, np.float64), np.asarray(deep_sums, np.float64),
                np.asarray(layer_counts, np.float64)], 1)
  y = np.asarray(measured, np.float64)
  squares = np.sum(x * x, axis=0)
  lam = np.sqrt(np.where(squares > 0, ridge * squares, 1.0))
  a = np.vstack([x, np.diag(lam)])
  b = np.concatenate([y, lam * np.array([1.0, 1.0, 0.0])])
  factor, deep_factor, per_layer = np.linalg.lstsq(a, b, rcond=None)[0]
  return {"factor": float(factor), "deep_factor": float(deep_factor),
          "per_layer_ms": float(per_layer)}


def space_keys(space) -> List[str]:
  """Every key a search over `space` can need (all candidates at their input shapes)."""
  skeleton = space.skeleton()
  keys = [stem_key(skeleton)]
  shapes = skeleton.block_shapes()
  for block, shape in zip(space.fixed_blocks, shapes):
    keys.append(block_key(skeleton, block, shape))  # None (no time) is dropped below
  for choice in space.choice_blocks:
    keys += [block_key(skeleton, c, choice.shape) for c in choice.candidates]
  keys += head_keys(skeleton)
  return list(dict.fromkeys(k for k in keys if k is not None))


CORRECTION_FIELDS = ({"factor", "deep_factor", "per_layer_ms"}, {"factor", "per_layer_ms"})


class LatencyTable:
  """Per-layer latency entries (ms) with the description of where they were measured."""

  def __init__(self, entries: Dict[str, Dict[str, float]], target: Dict, overhead_ms: float = 0.0,
               scale: Optional[float] = None, correction: Optional[Dict[str, float]] = None,
               validation: Optional[Dict] = None, anchor: Optional[Dict] = None):
    self.entries, self.target, self.overhead_ms = dict(entries), dict(target), overhead_ms
    # {"arch": compact choices, "ms": reference time}: the network timed in every call.
    self.anchor = dict(anchor) if anchor else None
    self.scale = scale  # one whole-network factor (older tables); None = 1.0
    # {"factor", "deep_factor", "per_layer_ms"} fitted on calibration networks
    # (`fit_correction`); tables of the previous build have no deep_factor (= factor).
    self.correction = dict(correction) if correction else None
    if self.correction is not None and set(self.correction) not in CORRECTION_FIELDS:
      raise ValueError("the table's correction is not {factor, deep_factor, per_layer_ms} (a "
                       "per-stage correction of an older build?): delete its 'correction' field "
                       "and rerun `latency build` with --calibrate to fit the current one (the "
                       "entries are kept)")
    self.validation = validation  # the last `validate` summary (errors on held-out networks)

  def to_dict(self) -> Dict:
    data = {"format": FORMAT, "version": VERSION, "unit": "ms", "target": self.target,
            "overhead_ms": self.overhead_ms, "entries": self.entries}
    for field in ("scale", "correction", "validation", "anchor"):
      if getattr(self, field) is not None:
        data[field] = getattr(self, field)
    return data

  def save(self, path: str):
    io_utils.atomic_write_json(path, self.to_dict())

  @classmethod
  def load(cls, path: str) -> "LatencyTable":
    """Reads our JSON format, or a ProxylessNAS YAML table (by extension)."""
    if path.endswith((".yaml", ".yml")):
      return import_proxyless_yaml(path)
    try:
      with open(path) as handle:
        data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
      raise ValueError(f"{path}: cannot read latency table ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
      raise ValueError(f"{path}: not a latency table (format must be {FORMAT!r})")
    if data.get("version") != VERSION or data.get("unit") != "ms":
      raise ValueError(f"{path}: unsupported latency table version/unit "
                       f"({data.get('version')!r}, {data.get('unit')!r})")
    for key, entry in data["entries"].items():
      if not isinstance(entry, dict) or not isinstance(entry.get("mean"), (int, float)):
        raise ValueError(f"{path}: entry {key!r} has no numeric 'mean'")
    try:
      return cls(data["entries"], data.get("target", {}), data.get("overhead_ms", 0.0),
                 data.get("scale"), data.get("correction"), data.get("validation"),
                 data.get("anchor"))
    except ValueError as error:
      raise ValueError(f"{path}: {error}") from None

  def missing(self, keys: List[str]) -> List[str]:
    return [k for k in keys if k not in self.entries]

  def lookup(self, key: str) -> float:
    """The entry's median if it was measured here (robust to noise), else its mean; at the
    anchors' reference speed when the entry was timed with them."""
    entry = self.entries[key]
    value = float(entry.get("median", entry["mean"]))
    return value * self.speed_correction(entry.get("anchor_ms"))

  def speed_correction(self, anchor_ms: Optional[Sequence[float]]) -> float:
    """Geometric mean over the anchors of reference time / time in one call (1.0 without)."""
    if self.anchor is None or not anchor_ms:
      return 1.0
    return float(np.exp(np.mean(np.log(np.asarray(self.anchor["ms"]) / np.asarray(anchor_ms)))))

  def drift(self, space, anchor_ms: Sequence[float]):
    """The drift curve of a call whose anchors took `anchor_ms`: a function of an
    Architecture giving (its time in that call) / (its time at the reference speed),
    interpolated between the anchors' ratios over log(layer sum), constant beyond them."""
    sizes = np.log([self.layer_sum(space.arch_from_choices(c)) for c in self.anchor["choices"]])
    ratios = np.asarray(anchor_ms) / np.asarray(self.anchor["ms"])
    order = np.argsort(sizes)
    return lambda arch: float(np.interp(np.log(self.layer_sum(arch)), sizes[order], ratios[order]))

  def layer_sum(self, arch: arch_lib.Architecture) -> float:
    """The sum of the table entries of the network's layers (ms)."""
    return sum(self.group_sums(arch))

  def group_sums(self, arch: arch_lib.Architecture) -> Tuple[float, float]:
    """The sums of the table entries of the network's early and deep layers (`is_deep`)."""
    sums = [0.0, 0.0]
    for key in self._measured_layer_keys(arch):
      sums[is_deep(key, arch.input_size)] += self.lookup(key)
    return sums[0], sums[1]

  def _measured_layer_keys(self, arch: arch_lib.Architecture) -> List[str]:
    """`layer_keys(arch)`; MissingEntriesError listing those the table lacks."""
    keys = layer_keys(arch)
    missing = list(dict.fromkeys(self.missing(keys)))
    if missing:
      raise MissingEntriesError(f"latency table lacks {len(missing)} key(s): {', '.join(missing)}")
    return keys

  def layer_cost(self, key: Optional[str], input_size: int) -> float:
    """What one layer adds to a whole network of `input_size` px (ms): its factor (early or
    deep, `is_deep`) x its entry + d; 0 for an identity (key None)."""
    if key is None:
      return 0.0
    if self.correction is not None:
      factor = self.correction["factor"]
      if is_deep(key, input_size):
        factor = self.correction.get("deep_factor", factor)
      return factor * self.lookup(key) + self.correction["per_layer_ms"]
    return (self.scale if self.scale is not None else 1.0) * self.lookup(key)

  def predict(self, arch: arch_lib.Architecture) -> float:
    """Predicted latency (ms): the sum of `layer_cost` over the network's layers.

    A layer timed alone runs with its weights and activations warm in cache and without
    its neighbours; inside a network it does not. `build --calibrate=N` times N random
    networks (other than validate's) and fits the factors and the per-layer cost
    (`fit_correction`); older tables carry one `scale`, imported tables neither.
    """
    return sum(self.layer_cost(k, arch.input_size) for k in self._measured_layer_keys(arch))


def import_proxyless_yaml(path: str) -> LatencyTable:
  """ProxylessNAS' table (key -> {count, mean, var} in ms) in our format (std = sqrt(var))."""
  import yaml  # pylint: disable=import-outside-toplevel
  try:
    with open(path) as handle:
      data = yaml.safe_load(handle)
  except (OSError, yaml.YAMLError) as error:
    raise ValueError(f"{path}: cannot read YAML latency table ({error})") from None
  if not isinstance(data, dict):
    raise ValueError(f"{path}: expected a mapping of layer keys")
  entries = {}
  for key, entry in data.items():
    if not isinstance(entry, dict) or "mean" not in entry:
      raise ValueError(f"{path}: entry {key!r} has no 'mean'")
    entries[key] = {"mean": float(entry["mean"]), "std": float(np.sqrt(entry.get("var", 0.0))),
                    "count": int(entry.get("count", 0))}
  return LatencyTable(entries, {"kind": "imported", "source": os.path.basename(path)})


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


# ---- measuring ---------------------------------------------------------------------

def _layer_models(arch: arch_lib.Architecture, keys_wanted=None) -> Dict[str, object]:
  """{key: zero-argument function building a one-layer Keras model at its exact input shape}."""
  import keras  # pylint: disable=import-outside-toplevel

  def single(input_shape, apply):
    def make():
      inputs = keras.Input(input_shape)
      return keras.Model(inputs, apply(inputs))
    return make

  layers = keras.layers
  makers = {stem_key(arch): single(
      (arch.input_size, arch.input_size, arch.input_channels),
      lambda x: primitives.apply_conv_bn_act(primitives.conv_bn_act(
          layers, "stem_conv", arch.stem.filters, arch.stem.kernel, arch.stem.stride, arch.activation), x))}
  for position, (block, shape) in enumerate(zip(arch.blocks, arch.block_shapes())):
    key = block_key(arch, block, shape)
    if key is None:
      continue
    makers[key] = single(
        (shape.in_size, shape.in_size, shape.in_channels),
        lambda x, b=block, s=shape, p=position: b.op_type.apply(b.op_type.make_parts(
            layers, arch_lib.block_name(p, b), s.in_channels, b, arch.activation, arch.se_ratio), x))
  conv_key, logits_key = head_keys(arch)
  final = arch.final_size
  makers[conv_key] = single((final, final, arch.final_channels), lambda x: primitives.apply_conv_bn_act(
      primitives.conv_bn_act(layers, "head_conv", arch.head.filters, 1, 1, arch.activation), x))
  makers[logits_key] = single((final, final, arch.head.filters), lambda x: layers.Dense(
      arch.num_classes, name="classifier")(layers.GlobalAveragePooling2D(name="pool")(x)))
  return makers


def _empty_model():
  import keras  # pylint: disable=import-outside-toplevel
  inputs = keras.Input((1, 1, 8))
  return keras.Model(inputs, keras.layers.Reshape((8,))(inputs))


class HostTimer:
  """Times fp32 TFLite models with the LiteRT interpreter on this machine, interleaved
  (`timing.interleaved`): every model of one call is sampled in every round."""

  def __init__(self, threads: int = 1, plan: Optional[timing.TimingPlan] = None):
    self.threads, self.plan = threads, plan or timing.TimingPlan()
    self._anchors: Dict[str, bytes] = {}  # converted once: the same networks in every call

  def _convert(self, key: str, model) -> bytes:
    from betanas_tf import tflite  # pylint: disable=import-outside-toplevel
    if not key.startswith(ANCHOR_PREFIX):
      return tflite.convert(model)
    if key not in self._anchors:
      self._anchors[key] = tflite.convert(model)
    return self._anchors[key]

  def time_models(self, models: Dict[str, object]) -> Dict[str, Dict[str, float]]:
    from betanas_tf import tflite  # pylint: disable=import-outside-toplevel
    converted = {key: self._convert(key, model) for key, model in models.items()}
    with timing.pinned(self.threads):
      runners = {key: tflite.ready_interpreter(flat, self.threads).invoke
                 for key, flat in converted.items()}
      return timing.interleaved(runners, self.plan)

  def time_model(self, model) -> Dict[str, float]:
    return self.time_models({"model": model})["model"]

  def describe(self) -> Dict:
    with timing.pinned(self.threads) as cpus:
      return dict(host_description(self.threads), timing=dataclasses.asdict(self.plan),
                  pinned_cpus=cpus)


class AndroidTimer:
  """Times fp32 TFLite models on a phone with benchmark_model (average over runs; the
  phone's binary does its own warm-up and repetitions, one model after another)."""

  def __init__(self, bench, threads: int = 1, warmup: int = 10, runs: int = 50, workdir: str = "."):
    self.bench, self.threads, self.warmup, self.runs, self.workdir = bench, threads, warmup, runs, workdir

  def time_model(self, model) -> Dict[str, float]:
    import tempfile  # pylint: disable=import-outside-toplevel
    from betanas_tf import tflite  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
      path = os.path.join(tmp, "layer.tflite")
      with open(path, "wb") as handle:
        handle.write(tflite.convert(model))
      avg = self.bench.measure(path, self.threads, self.warmup, self.runs)
    return {"mean": avg, "median": avg, "std": 0.0, "count": self.runs}

  def time_models(self, models: Dict[str, object]) -> Dict[str, Dict[str, float]]:
    return {key: self.time_model(model) for key, model in models.items()}

  def describe(self) -> Dict:
    return {"kind": "android", "serial": self.bench.serial, "threads": self.threads,
            "binary": self.bench.binary}


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

  def time_models(self, models: Dict[str, object]) -> Dict[str, Dict[str, float]]:
    return timing.interleaved({key: self._runner(m) for key, m in models.items()}, self.plan)

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


def latency_cost_table(space, table_path: str, target_ms: float = 0.0):
  """The Phase-2 cost table (ms) of `space` from a lookup table, with the table's
  correction applied (the same figures as `LatencyTable.predict`); a missing key is an
  error listing them."""
  table = LatencyTable.load(table_path)
  missing = table.missing(space_keys(space))
  if missing:
    raise ValueError(f"{table_path} lacks {len(missing)} key(s) of {space.name} at "
                     f"{space.input_size} px, width x{space.width_multiplier:g}, "
                     f"{space.num_classes} classes: {', '.join(missing[:5])}"
                     + (" ..." if len(missing) > 5 else "") +
                     "; build the right table with: " + build_command(space))
  skeleton = space.skeleton()
  cost = lambda key: table.layer_cost(key, space.input_size)
  rows = [[cost(block_key(skeleton, c, choice.shape)) for c in choice.candidates]
          for choice in space.choice_blocks]
  fixed = cost(stem_key(skeleton)) + sum(cost(k) for k in head_keys(skeleton))
  for block, shape in zip(space.fixed_blocks, skeleton.block_shapes()):
    fixed += cost(block_key(skeleton, block, shape))
  return cost_lib.cost_table(space, rows, fixed, "ms", target_ms)


def build_command(space, out: str = "host_cpu.json") -> str:
  """The `latency build` command line of a table for `space` as it is (size, width, classes)."""
  return (f"python -m betanas_tf.latency build --space={space.name} --input_size={space.input_size} "
          f"--width_multiplier={space.width_multiplier:g} --num_classes={space.num_classes} "
          f"--out={out}")


CALIBRATION_SEED = 12345  # validate() uses other seeds by default


TIMED_FIELDS = ("mean", "median", "ci_low", "ci_high", "p10", "p90")


def _without_overhead(entry: Dict[str, float], overhead: float) -> Dict[str, float]:
  return {k: (max(0.0, v - overhead) if k in TIMED_FIELDS else v) for k, v in entry.items()}


ANCHOR_PREFIX = "__anchor"


def anchor_choices(space) -> List[List[int]]:
  """The anchors: per choice block the candidate of least, median and most MACs."""
  table = cost_lib.macs_cost_table(space).table
  picks = []
  for rank in ("min", "median", "max"):
    choices = []
    for l, block in enumerate(space.choice_blocks):
      order = np.argsort(table[l][:block.num_candidates], kind="stable")
      choices.append(int(order[{"min": 0, "median": len(order) // 2, "max": -1}[rank]]))
    picks.append(choices)
  return picks


def _anchor_key(space, index: int) -> str:
  return f"{ANCHOR_PREFIX}{index}_{space.name}_{space.input_size}_{space.width_multiplier:g}__"


def _time_with_anchors(timer, space, models: Dict[str, object], overhead: float):
  """({key: timing}, [each anchor's median minus overhead]) of one interleaved call that
  also times the anchors."""
  from betanas_tf import builder  # pylint: disable=import-outside-toplevel
  models = dict(models)
  keys = []
  for index, choices in enumerate(anchor_choices(space)):
    keys.append(_anchor_key(space, index))
    models[keys[-1]] = builder.build_model(space.arch_from_choices(choices))
  timed = timer.time_models(models)
  return timed, [timed.pop(key)["median"] - overhead for key in keys]


def _reference_anchor(table: LatencyTable, space) -> Dict:
  """Each anchor's median time over the build's calls (one value per call)."""
  calls = sorted({tuple(e["anchor_ms"]) for e in table.entries.values() if "anchor_ms" in e})
  return {"choices": anchor_choices(space),
          "ms": [float(np.median([call[k] for call in calls])) for k in range(len(calls[0]))]}


def build_table(space, timer, out_path: str, progress: bool = True, calibrate: int = 0,
                chunk: int = 36) -> LatencyTable:
  """Measures every key of `space` not yet in `out_path` (resumable: saved after each chunk
  of `chunk` layers, timed interleaved with the anchor networks); then, with `calibrate` > 0
  and no correction yet, times that many random networks (interleaved, with the anchors) and
  fits the in-network correction on their times brought to the reference speed."""
  import tqdm  # pylint: disable=import-outside-toplevel
  table = LatencyTable.load(out_path) if os.path.exists(out_path) else None
  if table is None:
    overhead = timer.time_model(_empty_model())["median"]
    table = LatencyTable({}, dict(timer.describe(), space=space.name, input_size=space.input_size,
                                  width_multiplier=space.width_multiplier), overhead)
  makers = {}
  for l, choice in enumerate(space.choice_blocks):
    for candidate_index in range(choice.num_candidates):
      choices = [0] * len(space)
      choices[l] = candidate_index
      makers.update(_layer_models(space.arch_from_choices(choices)))
  makers.update(_layer_models(space.skeleton()))
  todo = [k for k in space_keys(space) if k not in table.entries]
  chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
  for keys in tqdm.tqdm(chunks, desc="latency table", unit="chunk", disable=not progress,
                        file=sys.stderr):
    timed, anchor_ms = _time_with_anchors(timer, space, {k: makers[k]() for k in keys},
                                          table.overhead_ms)
    for key, entry in timed.items():
      table.entries[key] = dict(_without_overhead(entry, table.overhead_ms), anchor_ms=anchor_ms)
    table.save(out_path)
  table.anchor = _reference_anchor(table, space)
  if calibrate and table.correction is None:
    from betanas_tf import builder  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(CALIBRATION_SEED)
    archs = [space.arch_from_choices(space.sample(rng)) for _ in range(calibrate)]
    timed, anchor_ms = _time_with_anchors(
        timer, space, {str(i): builder.build_model(a) for i, a in enumerate(archs)}, table.overhead_ms)
    drift = table.drift(space, anchor_ms)
    measured = [(timed[str(i)]["median"] - table.overhead_ms) / drift(a) for i, a in enumerate(archs)]
    early, deep = zip(*[table.group_sums(a) for a in archs])
    table.correction = fit_correction(early, deep, [len(layer_keys(a)) for a in archs], measured)
    table.target["calibration_networks"] = calibrate
    table.target["calibration_anchor_ms"] = anchor_ms
  table.save(out_path)
  return table


def _error_stats(signed: np.ndarray, prefix: str = "") -> Dict[str, float]:
  errors = np.abs(signed)
  return {f"{prefix}mean_abs_error_pct": float(errors.mean()),
          f"{prefix}median_abs_error_pct": float(np.median(errors)),
          f"{prefix}p90_abs_error_pct": float(np.percentile(errors, 90)),
          f"{prefix}max_abs_error_pct": float(errors.max()),
          f"{prefix}mean_error_pct": float(signed.mean()),
          f"{prefix}within_5_pct": float(np.mean(errors <= 5.0))}


def validate(table: LatencyTable, space, n: int, timer, seed: int = 0,
             plot: Optional[str] = None) -> Dict:
  """Predicted vs measured whole-network latency for n random architectures of `space`
  (timed interleaved, with the anchor), with the error distribution; `plot` writes the
  scatter (PNG).

  The ``*_error_pct`` figures compare the table's prediction with what was measured now.
  When the table has anchors, ``speed_ratios`` are the anchors' times now / at build and the
  ``rescaled_*`` figures compare the prediction moved along this call's drift curve
  (`LatencyTable.drift`): the table's error at the machine's speed during validation."""
  from betanas_tf import builder  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  archs = [space.arch_from_choices(space.sample(rng)) for _ in range(n)]
  timed, anchor_ms = _time_with_anchors(
      timer, space, {str(i): builder.build_model(a) for i, a in enumerate(archs)}, table.overhead_ms)
  drift = table.drift(space, anchor_ms) if table.anchor else None
  rows = []
  for i, arch in enumerate(archs):
    predicted = table.predict(arch)
    measured = timed[str(i)]["median"] - table.overhead_ms
    row = {"arch": space.choices_to_string(space.choices_from_arch(arch)),
           "predicted_ms": predicted, "measured_ms": measured,
           "measured_ci_ms": [timed[str(i)]["ci_low"] - table.overhead_ms,
                              timed[str(i)]["ci_high"] - table.overhead_ms]
           if "ci_low" in timed[str(i)] else None,
           "error_pct": 100.0 * (predicted - measured) / measured}
    if drift is not None:
      row["drift"] = drift(arch)
      row["rescaled_predicted_ms"] = predicted * row["drift"]
      row["rescaled_error_pct"] = 100.0 * (row["rescaled_predicted_ms"] - measured) / measured
    rows.append(row)
  ratios = ([now / ref for now, ref in zip(anchor_ms, table.anchor["ms"])] if table.anchor
            else None)
  report = {"n": n, "seed": seed, "rows": rows, "target": table.target, "anchor_ms": anchor_ms,
            "speed_ratios": ratios}
  report.update(_error_stats(np.array([r["error_pct"] for r in rows])))
  if ratios is not None:
    report.update(_error_stats(np.array([r["rescaled_error_pct"] for r in rows]), "rescaled_"))
  if plot:
    from betanas_tf import figures  # pylint: disable=import-outside-toplevel
    title = (f"{space.name}: n={n}, mean |error| {report['mean_abs_error_pct']:.2f} %, max "
             f"{report['max_abs_error_pct']:.2f} %")
    if ratios is not None:
      title += (f"\nat the machine's speed now (anchors x{min(ratios):.3f}-{max(ratios):.3f}): "
                f"{report['rescaled_mean_abs_error_pct']:.2f} %, max "
                f"{report['rescaled_max_abs_error_pct']:.2f} %")
    figures.plot_latency_validation(rows, plot, title)
  return report


def validation_summary(report: Dict) -> Dict:
  """What a table keeps of its last validation (and the search's summary shows)."""
  keys = ["n", "seed", "mean_abs_error_pct", "median_abs_error_pct", "p90_abs_error_pct",
          "max_abs_error_pct", "mean_error_pct", "speed_ratios"]
  if report.get("speed_ratios") is not None:
    keys += ["rescaled_mean_abs_error_pct", "rescaled_max_abs_error_pct"]
  return {k: report[k] for k in keys}


# ---- command line ---------------------------------------------------------------------

COMMANDS = ("build", "import", "predict", "validate")


def _define_flags():
  """Flags exist only when this module is the program (library users import it freely)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import cli, spaces  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("space", "proxyless_mobile", spaces.SPACES.names(), "Search space.")
  flags.DEFINE_integer("num_classes", None, "Override the space's number of classes.", lower_bound=1)
  flags.DEFINE_integer("input_size", None, "Input resolution (default: the space's).", lower_bound=8)
  flags.DEFINE_float("width_multiplier", 1.0, "Width multiplier of the space.", lower_bound=0.05)
  flags.DEFINE_string("out", None, "Output table (build, import).")
  flags.DEFINE_string("lut", None, "Latency table (predict, validate).")
  flags.DEFINE_string("yaml", None, "ProxylessNAS YAML table (import).")
  flags.DEFINE_string("arch", None, "Architecture JSON (predict).")
  cli.define_timing_flags()
  flags.DEFINE_integer("n", 20, "Random architectures to validate.", lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Seed of the validation architectures.")
  cli.define_android_flags()
  flags.DEFINE_bool("progress", True, "Show a progress bar.")
  flags.DEFINE_enum("target", "litert", ["litert", "gpu", "tf_cpu"], "What to time on: this "
                    "host's LiteRT interpreter (a phone's CPU stand-in), TensorFlow on the GPU "
                    "(batch --batch_size), or the same TensorFlow path on the CPU. --android: a phone.")
  flags.DEFINE_integer("batch_size", 8, "Batch of --target=gpu / tf_cpu.", lower_bound=1)
  flags.DEFINE_integer("calibrate", 30, "build: random networks to fit the in-network correction "
                       "(0 = plain layer sums).", lower_bound=0)
  flags.DEFINE_integer("invocations", 10, "Host: timed invocations per sample (a sample is their "
                       "median).", lower_bound=1)
  flags.DEFINE_integer("min_rounds", 5, "Host: interleaved rounds at least.", lower_bound=3)
  flags.DEFINE_integer("max_rounds", 40, "Host: interleaved rounds at most.", lower_bound=3)
  flags.DEFINE_float("rel_ci", 0.01, "Host: stop when every median's 95 % CI is within this "
                     "fraction of it.", lower_bound=0.0)
  flags.DEFINE_string("plot", None, "validate: the predicted-vs-measured scatter (PNG; default "
                      "<lut>_validation.png).")
  flags.DEFINE_bool("record", True, "validate: store the error summary in the table (the "
                    "search's summary reports it).")


def _timer(flags_):
  plan = timing.TimingPlan(invocations=flags_.invocations, warmup=flags_.warmup_runs,
                           min_rounds=flags_.min_rounds,
                           max_rounds=max(flags_.min_rounds, flags_.max_rounds), rel_ci=flags_.rel_ci)
  if flags_.android and flags_.target != "litert":
    raise ValueError("give --android or --target, not both")
  if flags_.target != "litert":
    device = "/GPU:0" if flags_.target == "gpu" else "/CPU:0"
    return TensorFlowTimer(device, flags_.batch_size, plan)
  if flags_.android:
    from betanas_tf import android  # pylint: disable=import-outside-toplevel
    bench = android.AndroidBenchmark(flags_.adb, flags_.adb_serial, flags_.benchmark_binary)
    bench.serial = bench.check()
    return AndroidTimer(bench, flags_.threads, flags_.warmup_runs, flags_.runs)
  return HostTimer(flags_.threads, plan)


def main(argv):
  import dataclasses  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import android, spaces  # pylint: disable=import-outside-toplevel
  flags_ = flags.FLAGS
  if len(argv) != 2 or argv[1] not in COMMANDS:
    print(f"latency: error: give one command: {' | '.join(COMMANDS)}", file=sys.stderr)
    return 1
  command = argv[1]
  space = spaces.get_space(flags_.space, flags_.input_size, flags_.width_multiplier)
  if flags_.num_classes:
    space = dataclasses.replace(space, num_classes=flags_.num_classes)
  try:
    if command == "build":
      if not flags_.out:
        raise ValueError("build needs --out")
      table = build_table(space, _timer(flags_), flags_.out, flags_.progress, flags_.calibrate)
      fitted = ("x{factor:.4f} (deep layers x{deep_factor:.4f}) + {per_layer_ms:.4f} ms per "
                "layer".format(**table.correction) if table.correction else "none")
      print(f"{len(table.entries)} entries in {flags_.out} (overhead {table.overhead_ms:.4f} ms "
            f"subtracted; in-network correction: {fitted})")
    elif command == "import":
      if not (flags_.yaml and flags_.out):
        raise ValueError("import needs --yaml and --out")
      table = import_proxyless_yaml(flags_.yaml)
      table.save(flags_.out)
      print(f"{len(table.entries)} entries imported into {flags_.out}")
    elif command == "predict":
      if not (flags_.lut and flags_.arch):
        raise ValueError("predict needs --lut and --arch")
      arch = arch_lib.Architecture.load(flags_.arch)
      print(f"{LatencyTable.load(flags_.lut).predict(arch):.3f} ms")
    else:
      if not flags_.lut:
        raise ValueError("validate needs --lut")
      table = LatencyTable.load(flags_.lut)
      plot = flags_.plot or os.path.splitext(flags_.lut)[0] + "_validation.png"
      report = validate(table, space, flags_.n, _timer(flags_), flags_.seed, plot)
      for row in report["rows"]:
        print(f"{row['arch']}  predicted {row['predicted_ms']:8.3f} ms  measured "
              f"{row['measured_ms']:8.3f} ms  error {row['error_pct']:+6.2f} %")
      print(f"n={report['n']} threads={flags_.threads}: mean abs error "
            f"{report['mean_abs_error_pct']:.2f} %, median {report['median_abs_error_pct']:.2f} %, "
            f"p90 {report['p90_abs_error_pct']:.2f} %, max {report['max_abs_error_pct']:.2f} %, "
            f"mean signed {report['mean_error_pct']:+.2f} %; scatter in {plot}")
      if report["speed_ratios"] is not None:
        print("anchor networks' time now / at build: "
              + ", ".join(f"x{r:.3f}" for r in report["speed_ratios"]) + "; "
              f"along that drift: mean abs error {report['rescaled_mean_abs_error_pct']:.2f} %, "
              f"median {report['rescaled_median_abs_error_pct']:.2f} %, p90 "
              f"{report['rescaled_p90_abs_error_pct']:.2f} %, max "
              f"{report['rescaled_max_abs_error_pct']:.2f} %, mean signed "
              f"{report['rescaled_mean_error_pct']:+.2f} %")
      if flags_.record:
        table.validation = validation_summary(report)
        table.save(flags_.lut)
      print("JSON " + json.dumps({k: v for k, v in report.items() if k != "rows"}))
  except (ValueError, MissingEntriesError, android.AndroidError) as error:
    print(f"latency: error: {error}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
