"""Candidate op types: the one place that knows what an op is.

Every value of ``Block.op`` is one entry of `OPS`, an `Op` that knows everything the
package asks about it:

* the spec: which `Block` fields it uses (beyond ``op``, ``filters``, ``stride``), its
  validation, its short label (``k5e3``, ``id``) and its token in the compact string;
* its layers, made from any Keras-like layer namespace (the standalone builder, the
  supernet's candidate layer and the tf_keras rebuild all call `make_parts` / `apply`);
* its analytic cost (MACs, parameters), its latency-table key (None: takes no time) and
  the TFLite ops it must become;
* how the architecture figure draws it.

The Architecture JSON, the builder, the supernet, the cost model, the latency tables, the
TFLite checks and the figures all go through this registry, so a new op is one `Op`
subclass registered here (and listed as a candidate by a search space). The tests sweep
every registered op.
"""

import collections
import re
from typing import Any, Dict, List, Optional, Tuple

from betanas_tf import numbers
from betanas_tf import primitives
from betanas_tf.registry import Registry


def _require(condition: bool, where: str, message: str):
  if not condition:
    raise ValueError(f"{where}: {message}")


class Op:
  """One candidate op type. Subclasses override what differs; `block` is an
  `arch.Block`, `shape` an `arch.BlockShape` (its input/output size and channels)."""

  name: str = ""
  fields: Tuple[str, ...] = ()   # Block fields this op uses besides op, filters, stride
  compact_form: str = ""         # how its compact token is spelled, for error messages

  # ---- spec ---------------------------------------------------------------------------
  def normalize_fields(self, fields: Dict[str, Any]) -> Dict[str, Any]:
    """The op's fields as a Block keeps them (e.g. 6.0 -> 6), before validation."""
    return fields

  def allowed_at(self, stride: int, in_channels: int, filters: int) -> bool:
    """Whether a search space may offer this op where a block has this stride and these
    channels (identity: only where it cannot change the shape)."""
    return True

  def validate(self, block, in_channels: int, where: str):
    """Raises ValueError naming `where` and the field if `block` is not a valid op."""

  def label(self, block) -> str:
    """Short name used in layer names, choice strings and figures."""
    raise NotImplementedError

  def to_compact(self, block) -> str:
    raise NotImplementedError

  def parse_compact(self, token: str, in_channels: int) -> Optional[Dict[str, Any]]:
    """The Block fields a compact token spells, or None if the token is not this op."""
    raise NotImplementedError

  def has_residual(self, block, in_channels: int) -> bool:
    return False

  # ---- layers -------------------------------------------------------------------------
  def make_parts(self, layers, prefix: str, in_channels: int, block, activation: str,
                 se_ratio: float = 0.0, bn_momentum: float = primitives.BN_MOMENTUM,
                 bn_epsilon: float = primitives.BN_EPSILON, drop_connect: float = 0.0
                 ) -> Dict[str, Any]:
    """The op's layers from the namespace `layers`, named ``<prefix>_<part>``; {} for an op
    without layers (the builder then adds nothing to the graph)."""
    raise NotImplementedError

  def apply(self, parts: Dict[str, Any], x, training=None):
    raise NotImplementedError

  # ---- cost, latency, TFLite, figures ---------------------------------------------------
  def cost(self, block, shape, se_ratio: float = 0.0) -> primitives.Cost:
    raise NotImplementedError

  def latency_key(self, block, shape) -> Optional[str]:
    """Key of the op's latency-table entry (without the network's act/se suffix); None if
    it takes no time."""
    raise NotImplementedError

  def tflite_ops(self, block, shape, activation: str, se_ratio: float) -> Dict[str, int]:
    """The builtin ops it becomes in an fp32 TFLite graph (BN folded, ReLU6 fused)."""
    raise NotImplementedError

  def figure_box(self, block) -> Tuple[float, float, str]:
    """(width, height, colour) of its box in the architecture figure."""
    raise NotImplementedError

  def legend(self) -> List[Tuple[str, str]]:
    """(colour, text) legend entries of its boxes."""
    return []


OPS: Registry = Registry("op")


def get(name: str) -> Op:
  return OPS.get(name)


def _hw(size: int, channels: int) -> str:
  return f"{size}x{size}x{channels}"


class MBConv(Op):
  """MobileNetV2's inverted residual: ``mid = round(in * expand)``; 1x1 expand conv (absent
  when expand == 1), BN, act; kxk depthwise conv with the stride, BN, act; optional
  squeeze-excite on the mid channels; 1x1 project conv, BN; residual add iff stride 1 and
  in == out (with optional stochastic depth on the branch)."""

  name = "mbconv"
  fields = ("kernel", "expand")
  compact_form = "k<kernel>e<expand>c<filters>s<stride>"
  KERNEL_COLOURS = {3: "#4C72B0", 5: "#55A868", 7: "#C44E52"}

  def normalize_fields(self, fields):
    if fields.get("expand") is not None:
      fields = dict(fields, expand=numbers.normalize(fields["expand"]))
    return fields

  def validate(self, block, in_channels, where):
    _require(numbers.is_int(block.kernel) and block.kernel > 0 and block.kernel % 2 == 1,
             f"{where}.kernel", f"must be a positive odd integer, got {block.kernel!r}")
    _require(numbers.is_number(block.expand) and block.expand > 0, f"{where}.expand",
             f"must be a positive number, got {block.expand!r}")

  def label(self, block):
    return f"k{block.kernel}e{numbers.format_number(block.expand)}"

  def to_compact(self, block):
    return f"{self.label(block)}c{block.filters}s{block.stride}"

  def parse_compact(self, token, in_channels):
    match = re.fullmatch(r"k(\d+)e(\d+(?:\.\d+)?)c(\d+)s(\d+)", token)
    if match is None:
      return None
    expand = float(match.group(2)) if "." in match.group(2) else int(match.group(2))
    return {"op": self.name, "kernel": int(match.group(1)), "expand": expand,
            "filters": int(match.group(3)), "stride": int(match.group(4))}

  @staticmethod
  def mid_channels(block, in_channels: int) -> int:
    return int(round(in_channels * block.expand))

  def has_residual(self, block, in_channels):
    return block.stride == 1 and in_channels == block.filters

  def make_parts(self, layers, prefix, in_channels, block, activation, se_ratio=0.0,
                 bn_momentum=primitives.BN_MOMENTUM, bn_epsilon=primitives.BN_EPSILON,
                 drop_connect=0.0):
    mid = self.mid_channels(block, in_channels)
    bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
    parts: Dict[str, Any] = {}
    if block.expand != 1:
      parts["expand"] = primitives.conv_bn_act(layers, prefix + "_expand", mid, 1, 1, activation, **bn)
    parts["dw"] = primitives.conv_bn_act(layers, prefix + "_dw", mid, block.kernel, block.stride,
                                         activation, depthwise=True, **bn)
    if se_ratio > 0:
      parts["se"] = primitives.squeeze_excite_layers(layers, prefix, mid, se_ratio, activation)
    parts["project"] = primitives.conv_bn_act(layers, prefix + "_project", block.filters, 1, 1,
                                              None, **bn)
    if self.has_residual(block, in_channels):
      parts["add"] = layers.Add(name=prefix + "_add")
      if drop_connect > 0:
        parts["drop"] = layers.Dropout(drop_connect, noise_shape=(None, 1, 1, 1),
                                       name=prefix + "_drop")
    return parts

  def apply(self, parts, x, training=None):
    inputs = x
    if "expand" in parts:
      x = primitives.apply_conv_bn_act(parts["expand"], x, training)
    x = primitives.apply_conv_bn_act(parts["dw"], x, training)
    if "se" in parts:
      x = primitives.apply_squeeze_excite(parts["se"], x)
    x = primitives.apply_conv_bn_act(parts["project"], x, training)
    if "add" in parts:
      if "drop" in parts:
        x = parts["drop"](x, training=training)
      x = parts["add"]([inputs, x])
    return x

  def cost(self, block, shape, se_ratio=0.0):
    mid = self.mid_channels(block, shape.in_channels)
    total = primitives.Cost()
    if block.expand != 1:
      total += primitives.conv_bn_cost(shape.in_size, shape.in_channels, mid, 1, 1)
    total += primitives.depthwise_bn_cost(shape.in_size, mid, block.kernel, block.stride)
    if se_ratio > 0:
      total += primitives.squeeze_excite_cost(mid, se_ratio)
    return total + primitives.conv_bn_cost(shape.out_size, mid, block.filters, 1, 1)

  def latency_key(self, block, shape):
    # ProxylessNAS' key format, so its published tables import as they are.
    return (f"expanded_conv-input:{_hw(shape.in_size, shape.in_channels)}-output:"
            f"{_hw(shape.out_size, shape.out_channels)}-expand:{block.expand:g}"
            f"-kernel:{block.kernel}-stride:{block.stride}"
            f"-idskip:{int(self.has_residual(block, shape.in_channels))}")

  def tflite_ops(self, block, shape, activation, se_ratio):
    counts = collections.Counter({"CONV_2D": 1 + (block.expand != 1), "DEPTHWISE_CONV_2D": 1})
    if se_ratio > 0:
      counts.update({"CONV_2D": 2, "MEAN": 1, "LOGISTIC": 1, "MUL": 1})
    if self.has_residual(block, shape.in_channels):
      counts["ADD"] += 1
    if activation == "swish":
      # x * sigmoid(x) after the expand and depthwise convs and SE's reduce conv.
      swish = (block.expand != 1) + 1 + (se_ratio > 0)
      counts.update({"LOGISTIC": swish, "MUL": swish})
    return dict(counts)

  def figure_box(self, block):
    return (0.25 + 0.1 * block.expand, 0.4 + 0.16 * block.kernel,
            self.KERNEL_COLOURS.get(block.kernel, "#8172B2"))

  def legend(self):
    return [(colour, f"{k}x{k}") for k, colour in self.KERNEL_COLOURS.items()]


class Identity(Op):
  """"Skip this block": no layer, no time; valid only where the block keeps its shape."""

  name = "identity"
  compact_form = "id"

  def allowed_at(self, stride, in_channels, filters):
    return stride == 1 and in_channels == filters

  def validate(self, block, in_channels, where):
    _require(block.stride == 1, f"{where}.stride",
             f"an identity block cannot change the shape (stride {block.stride})")
    _require(block.filters == in_channels, f"{where}.filters",
             f"an identity block cannot change the shape ({in_channels} -> {block.filters} channels)")

  def label(self, block):
    return "id"

  def to_compact(self, block):
    return "id"

  def parse_compact(self, token, in_channels):
    return {"op": self.name, "filters": in_channels, "stride": 1} if token == "id" else None

  def make_parts(self, layers, prefix, in_channels, block, activation, se_ratio=0.0,
                 bn_momentum=primitives.BN_MOMENTUM, bn_epsilon=primitives.BN_EPSILON,
                 drop_connect=0.0):
    return {}

  def apply(self, parts, x, training=None):
    return x

  def cost(self, block, shape, se_ratio=0.0):
    return primitives.Cost()

  def latency_key(self, block, shape):
    return None

  def tflite_ops(self, block, shape, activation, se_ratio):
    return {}

  def figure_box(self, block):
    return (0.12, 0.5, "#dddddd")


class Conv(Op):
  """A plain kxk convolution, BN, act (VGG's block): the candidates of the paper's Fig 7
  experiment (conv1 / conv3 branches), and of any space that wants a dense convolution."""

  name = "conv"
  fields = ("kernel",)
  compact_form = "conv<kernel>c<filters>s<stride>"
  KERNEL_COLOURS = {1: "#DD8452", 3: "#4C72B0", 5: "#55A868", 7: "#C44E52"}

  def validate(self, block, in_channels, where):
    _require(numbers.is_int(block.kernel) and block.kernel > 0 and block.kernel % 2 == 1,
             f"{where}.kernel", f"must be a positive odd integer, got {block.kernel!r}")

  def label(self, block):
    return f"conv{block.kernel}"

  def to_compact(self, block):
    return f"{self.label(block)}c{block.filters}s{block.stride}"

  def parse_compact(self, token, in_channels):
    match = re.fullmatch(r"conv(\d+)c(\d+)s(\d+)", token)
    return None if match is None else {"op": self.name, "kernel": int(match.group(1)),
                                       "filters": int(match.group(2)),
                                       "stride": int(match.group(3))}

  def make_parts(self, layers, prefix, in_channels, block, activation, se_ratio=0.0,
                 bn_momentum=primitives.BN_MOMENTUM, bn_epsilon=primitives.BN_EPSILON,
                 drop_connect=0.0):
    return primitives.conv_bn_act(layers, prefix + "_conv", block.filters, block.kernel,
                                  block.stride, activation, bn_momentum=bn_momentum,
                                  bn_epsilon=bn_epsilon)

  def apply(self, parts, x, training=None):
    return primitives.apply_conv_bn_act(parts, x, training)

  def cost(self, block, shape, se_ratio=0.0):
    return primitives.conv_bn_cost(shape.in_size, shape.in_channels, block.filters,
                                   block.kernel, block.stride)

  def latency_key(self, block, shape):
    return (f"conv-input:{_hw(shape.in_size, shape.in_channels)}-output:"
            f"{_hw(shape.out_size, shape.out_channels)}-kernel:{block.kernel}"
            f"-stride:{block.stride}")

  def tflite_ops(self, block, shape, activation, se_ratio):
    counts = {"CONV_2D": 1}
    if activation == "swish":
      counts.update({"LOGISTIC": 1, "MUL": 1})
    return counts

  def figure_box(self, block):
    return (0.5, 0.4 + 0.16 * block.kernel, self.KERNEL_COLOURS.get(block.kernel, "#8172B2"))

  def legend(self):
    return [(colour, f"conv {k}x{k}") for k, colour in self.KERNEL_COLOURS.items()]


OPS.register(MBConv.name, MBConv())
OPS.register(Identity.name, Identity())
OPS.register(Conv.name, Conv())
