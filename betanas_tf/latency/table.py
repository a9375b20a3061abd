"""A latency lookup table: its layer keys, its JSON format and what it predicts.

Table format (JSON, sorted keys)::

    {"format": "betanas_tf.latency_table", "version": 1, "unit": "ms",
     "target": {"kind": "host" | "android" | "tensorflow" | "imported", "cpu": ..., ...},
     "overhead_ms": <per-invoke cost of an empty model, already subtracted>,
     "entries": {"<layer key>": {"median": ms, "mean": ms, "std": ms, "ci_low": ms, "ci_high": ms,
                                 "p10": ms, "p90": ms, "count": n, "outliers": n, "rounds": n,
                                 "anchor_ms": [ms, ms, ms]}, ...},
     "statistic": "median" | "p10",  # which entry field a layer costs (chosen at the fit)
     "anchor": {"choices": [[...], [...], [...]], "ms": [ms, ms, ms]},  # drift reference
     "correction": {"factor": f, "deep_factor": g, "per_layer_ms": d},  # fitted (below)
     "calibration": {"choices": [[...], ...], "ms": [...], "call_ms": [...],  # fitted on
                     "loo_mean_abs_error_pct": {"median": %, "p10": %}},
     "validation": {"n": 50, "mean_abs_error_pct": ..., "max_abs_error_pct": ..., ...}}

Layer keys follow ProxylessNAS' naming, so its published tables import as they are:
``Conv-input:224x224x3-output:112x112x32`` (stem),
``expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:3-stride:2-idskip:0``
(an MBConv; idskip:1 = residual), ``Conv_1-input:7x7x320-output:7x7x1280`` (head conv),
``Logits-input:7x7x1280-output:1000`` (pool + classifier). Identity blocks cost 0. Networks
with swish or squeeze-excite get ``-act:swish`` / ``-se:<ratio>`` suffixes.
The latency of an Architecture is the sum over its layers of f x entry + d, with the factor f
(g for the deep layers: at 1/8 of the input resolution or less) and the per-layer cost d
fitted on whole calibration networks (`fitting.fit_correction`; the drift curves that
rescale a later call to the table's speed are `fitting` too). How a table is measured (and
what its anchors are): `latency`.
"""

import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from betanas_tf import arch as arch_lib
from betanas_tf import cost as cost_lib
from betanas_tf import io_utils

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
# An entry's value: the median of its timed samples, or their 10th percentile (the layer's
# cost without the one-sided stalls that multi-threaded timing suffers on a shared machine).
ENTRY_STATISTICS = ("median", "p10")


class LatencyTable:
  """Per-layer latency entries (ms) with the description of where they were measured."""

  def __init__(self, entries: Dict[str, Dict[str, float]], target: Dict, overhead_ms: float = 0.0,
               scale: Optional[float] = None, correction: Optional[Dict[str, float]] = None,
               validation: Optional[Dict] = None, anchor: Optional[Dict] = None,
               calibration: Optional[Dict] = None, statistic: str = "median"):
    self.entries, self.target, self.overhead_ms = dict(entries), dict(target), overhead_ms
    if statistic not in ENTRY_STATISTICS:
      raise ValueError(f"unknown entry statistic {statistic!r} (one of: {', '.join(ENTRY_STATISTICS)})")
    # Which of an entry's timed statistics a layer costs (`lookup`): chosen when the
    # correction is fitted (`measure.fit_calibration`).
    self.statistic = statistic
    # {"arch": compact choices, "ms": reference time}: the network timed in every call.
    self.anchor = dict(anchor) if anchor else None
    self.scale = scale  # one whole-network factor (older tables); None = 1.0
    # {"factor", "deep_factor", "per_layer_ms"} fitted on calibration networks
    # (`fitting.fit_correction`); tables of the previous build have no deep_factor (= factor).
    self.correction = dict(correction) if correction else None
    if self.correction is not None and set(self.correction) not in CORRECTION_FIELDS:
      raise ValueError("the table's correction is not {factor, deep_factor, per_layer_ms} (a "
                       "per-stage correction of an older build?): delete its 'correction' field "
                       "and rerun `latency build` with --calibrate to fit the current one (the "
                       "entries are kept)")
    self.validation = validation  # the last `validate` summary (errors on held-out networks)
    # {"choices": [...], "ms": [...], "call_ms": [...]}: the networks the correction was
    # fitted on, their times on the scale it was fitted to (the reference speed) and as
    # timed; `validate` re-times some of them to measure the machine's drift.
    self.calibration = dict(calibration) if calibration else None

  def to_dict(self) -> Dict:
    data = {"format": FORMAT, "version": VERSION, "unit": "ms", "target": self.target,
            "overhead_ms": self.overhead_ms, "entries": self.entries, "statistic": self.statistic}
    for field in ("scale", "correction", "validation", "anchor", "calibration"):
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
                 data.get("anchor"), data.get("calibration"), data.get("statistic", "median"))
    except ValueError as error:
      raise ValueError(f"{path}: {error}") from None

  def runtime(self):
    """The `runtime.Runtime` the table timed (None for an imported or TensorFlow table)."""
    from betanas_tf.latency import runtime as runtime_lib  # pylint: disable=import-outside-toplevel
    return runtime_lib.of_target(self.target)

  def runtime_words(self) -> str:
    """What the table describes, in words (its kind, runtime and where it was measured)."""
    runtime = self.runtime()
    kind = self.target.get("kind", "unknown")
    where = {"host": self.target.get("cpu"), "android": self.target.get("serial"),
             "imported": self.target.get("source"),
             "tensorflow": self.target.get("device_name")}.get(kind)
    return f"{kind}" + (f" {where}" if where else "") + (f": {runtime.words()}" if runtime else "")

  def missing(self, keys: List[str]) -> List[str]:
    return [k for k in keys if k not in self.entries]

  def lookup(self, key: str) -> float:
    """The entry's `statistic` (median or p10) where it was timed here, else its mean (an
    imported table); at the anchors' reference speed when the entry was timed with them."""
    entry = self.entries[key]
    value = float(entry.get(self.statistic, entry.get("median", entry["mean"])))
    return value * self.speed_correction(entry.get("anchor_ms"))

  def speed_correction(self, anchor_ms: Optional[Sequence[float]]) -> float:
    """Geometric mean over the anchors of reference time / time in one call (1.0 without)."""
    if self.anchor is None or not anchor_ms:
      return 1.0
    return float(np.exp(np.mean(np.log(np.asarray(self.anchor["ms"]) / np.asarray(anchor_ms)))))

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
    (`fitting.fit_correction`); older tables carry one `scale`, imported tables neither.
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
