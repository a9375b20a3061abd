"""The Architecture spec: one immutable description of a complete network.

Everything in betanas_tf reads this spec: the standalone Keras builder, the
supernet (through the search spaces), the analytic cost model, the latency
tables and the TFLite exporter. It has two encodings, both round-trip exact:

* strict JSON for files (sorted keys; an unknown, missing or mistyped field is
  a ValueError that names the block index and the field), and
* a compact one-line string for logs and flags, e.g.
  ``input=224;classes=1000;stem=c32k3s2;blocks=k3e1c16s1-k5e3c24s2-id;head=c1280;act=relu6;se=0;dropout=0``.

Network semantics (MBConv = MobileNetV2 inverted residual): ``mid =
round(in * expand)``; 1x1 expand conv (absent when expand == 1), BN, act; kxk
depthwise conv with the stride, BN, act; optional squeeze-excite on the mid
channels; 1x1 project conv, BN, no act; residual add iff stride == 1 and
in == out. ``identity`` passes its input through and is only valid where it
cannot change the shape. All convolutions use "same" padding, so a layer's
output size is ceil(input / stride).
"""

import dataclasses
import json
import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from betanas_tf import io_utils

FORMAT = "betanas_tf.architecture"
VERSION = 1
ACTIVATIONS = ("relu6", "swish")
OPS = ("mbconv", "identity")


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
  """MobileNet channel rounding: nearest multiple of `divisor`, never < 90 %."""
  min_value = divisor if min_value is None else min_value
  rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:  # Rounding down must not remove more than 10 %.
    rounded += divisor
  return rounded


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _normalize_number(value):
  """3.0 -> 3 so that a spec compares equal however its file spelled numbers."""
  if isinstance(value, float) and value.is_integer():
    return int(value)
  return value


def _format_number(value) -> str:
  value = _normalize_number(value)
  return str(value) if _is_int(value) else repr(float(value))


def _check(condition: bool, where: str, message: str):
  if not condition:
    raise ValueError(f"{where}: {message}")


@dataclasses.dataclass(frozen=True)
class Stem:
  """kxk convolution with stride, BN and activation on the input image."""
  filters: int
  kernel: int = 3
  stride: int = 2

  def validate(self, where: str = "stem"):
    _check(_is_int(self.filters) and self.filters > 0, f"{where}.filters",
           f"must be a positive integer, got {self.filters!r}")
    _check(_is_int(self.kernel) and self.kernel > 0 and self.kernel % 2 == 1,
           f"{where}.kernel", f"must be a positive odd integer, got {self.kernel!r}")
    _check(self.stride in (1, 2) and _is_int(self.stride), f"{where}.stride",
           f"must be 1 or 2, got {self.stride!r}")


@dataclasses.dataclass(frozen=True)
class Block:
  """One block of the body: an MBConv or an identity."""
  op: str
  filters: int
  stride: int = 1
  kernel: Optional[int] = None
  expand: Optional[float] = None

  @property
  def is_identity(self) -> bool:
    return self.op == "identity"

  @property
  def label(self) -> str:
    """Short op name used in layer names and compact strings: ``k5e3`` or ``id``."""
    if self.is_identity:
      return "id"
    return f"k{self.kernel}e{_format_number(self.expand)}"

  def validate(self, in_channels: int, where: str):
    _check(self.op in OPS, f"{where}.op", f"must be one of {OPS}, got {self.op!r}")
    _check(_is_int(self.filters) and self.filters > 0, f"{where}.filters",
           f"must be a positive integer, got {self.filters!r}")
    _check(_is_int(self.stride) and self.stride in (1, 2), f"{where}.stride",
           f"must be 1 or 2, got {self.stride!r}")
    if self.is_identity:
      _check(self.kernel is None and self.expand is None, where,
             "an identity block has no kernel or expand")
      _check(self.stride == 1, f"{where}.stride",
             f"an identity block cannot change the shape (stride {self.stride})")
      _check(self.filters == in_channels, f"{where}.filters",
             f"an identity block cannot change the shape ({in_channels} -> {self.filters} channels)")
      return
    _check(_is_int(self.kernel) and self.kernel > 0 and self.kernel % 2 == 1,
           f"{where}.kernel", f"must be a positive odd integer, got {self.kernel!r}")
    _check(_is_number(self.expand) and self.expand > 0, f"{where}.expand",
           f"must be a positive number, got {self.expand!r}")

  def mid_channels(self, in_channels: int) -> int:
    return int(round(in_channels * self.expand))

  def has_residual(self, in_channels: int) -> bool:
    return (not self.is_identity) and self.stride == 1 and in_channels == self.filters


def mbconv(kernel: int, expand: float, filters: int, stride: int = 1) -> Block:
  return Block(op="mbconv", kernel=kernel, expand=_normalize_number(expand), filters=filters,
               stride=stride)


def block_name(position: int, block: Block) -> str:
  """Structural name of the block at `position` of an Architecture: ``block07_k5e3``."""
  return f"block{position:02d}_{block.label}"


def se_channels(mid_channels: int, se_ratio: float) -> int:
  """Squeeze-excite bottleneck width: se_ratio of the block's mid channels, at least 1."""
  return max(1, int(mid_channels * se_ratio))


def identity(filters: int) -> Block:
  return Block(op="identity", filters=filters, stride=1)


@dataclasses.dataclass(frozen=True)
class Head:
  """1x1 conv to `filters`, BN, act, global average pool, dropout, dense."""
  filters: int

  def validate(self, where: str = "head"):
    _check(_is_int(self.filters) and self.filters > 0, f"{where}.filters",
           f"must be a positive integer, got {self.filters!r}")


@dataclasses.dataclass(frozen=True)
class BlockShape:
  """Where a block sits in the network: input/output resolution and channels."""
  in_size: int
  in_channels: int
  out_size: int
  out_channels: int


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A complete network. Construction validates; instances never change."""
  input_size: int
  num_classes: int
  stem: Stem
  blocks: Tuple[Block, ...]
  head: Head
  activation: str = "relu6"
  se_ratio: float = 0.0
  dropout: float = 0.0
  input_channels: int = 3
  name: str = ""

  def __post_init__(self):
    object.__setattr__(self, "blocks", tuple(self.blocks))
    _check(_is_int(self.input_size) and self.input_size > 0, "input_size",
           f"must be a positive integer, got {self.input_size!r}")
    _check(_is_int(self.input_channels) and self.input_channels > 0, "input_channels",
           f"must be a positive integer, got {self.input_channels!r}")
    _check(_is_int(self.num_classes) and self.num_classes > 0, "num_classes",
           f"must be a positive integer, got {self.num_classes!r}")
    _check(isinstance(self.stem, Stem), "stem", "must be a Stem")
    _check(isinstance(self.head, Head), "head", "must be a Head")
    self.stem.validate()
    self.head.validate()
    _check(self.activation in ACTIVATIONS, "activation",
           f"must be one of {ACTIVATIONS}, got {self.activation!r}")
    for field in ("se_ratio", "dropout"):
      value = getattr(self, field)
      _check(_is_number(value) and 0.0 <= value < 1.0, field,
             f"must be a number in [0, 1), got {value!r}")
    _check(isinstance(self.name, str) and re.fullmatch(r"[A-Za-z0-9_.+-]*", self.name),
           "name", f"may hold only letters, digits and _.+-, got {self.name!r}")
    _check(len(self.blocks) > 0, "blocks", "must hold at least one block")
    channels = self.stem.filters
    for index, block in enumerate(self.blocks):
      _check(isinstance(block, Block), f"blocks[{index}]", "must be a Block")
      block.validate(channels, f"blocks[{index}]")
      channels = block.filters

  # ---- shapes -------------------------------------------------------------

  @property
  def stem_output_size(self) -> int:
    return -(-self.input_size // self.stem.stride)

  def block_shapes(self) -> List[BlockShape]:
    """Input/output resolution and channels of every block, in order."""
    size, channels, shapes = self.stem_output_size, self.stem.filters, []
    for block in self.blocks:
      out_size = -(-size // block.stride)
      shapes.append(BlockShape(size, channels, out_size, block.filters))
      size, channels = out_size, block.filters
    return shapes

  @property
  def final_size(self) -> int:
    return self.block_shapes()[-1].out_size

  @property
  def final_channels(self) -> int:
    return self.blocks[-1].filters

  # ---- JSON ---------------------------------------------------------------

  def to_dict(self) -> Dict[str, Any]:
    blocks = []
    for block in self.blocks:
      if block.is_identity:
        blocks.append({"op": "identity", "filters": block.filters, "stride": block.stride})
      else:
        blocks.append({"op": "mbconv", "kernel": block.kernel, "expand": block.expand,
                       "filters": block.filters, "stride": block.stride})
    return {
        "format": FORMAT, "version": VERSION,
        "input_size": self.input_size, "input_channels": self.input_channels,
        "num_classes": self.num_classes,
        "stem": dataclasses.asdict(self.stem), "blocks": blocks,
        "head": dataclasses.asdict(self.head),
        "activation": self.activation, "se_ratio": self.se_ratio, "dropout": self.dropout,
        "name": self.name,
    }

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n"

  @classmethod
  def from_dict(cls, data: Any) -> "Architecture":
    _check(isinstance(data, dict), "architecture", f"must be a JSON object, got {type(data).__name__}")
    _read_fields(data, "architecture",
                 required=("format", "version", "input_size", "num_classes", "stem", "blocks",
                           "head", "activation", "se_ratio", "dropout"),
                 optional=("input_channels", "name"))
    _check(data["format"] == FORMAT, "format", f"must be {FORMAT!r}, got {data['format']!r}")
    _check(_is_int(data["version"]) and 1 <= data["version"] <= VERSION, "version",
           f"must be an integer in [1, {VERSION}], got {data['version']!r}")
    stem = _read_fields(data["stem"], "stem", required=("filters", "kernel", "stride"))
    head = _read_fields(data["head"], "head", required=("filters",))
    _check(isinstance(data["blocks"], list), "blocks", "must be a list")
    blocks = [_block_from_dict(item, f"blocks[{i}]") for i, item in enumerate(data["blocks"])]
    for field in ("se_ratio", "dropout"):
      _check(_is_number(data[field]), field, f"must be a number, got {data[field]!r}")
    return cls(input_size=data["input_size"], num_classes=data["num_classes"],
               stem=Stem(**stem), blocks=tuple(blocks), head=Head(**head),
               activation=data["activation"], se_ratio=float(data["se_ratio"]),
               dropout=float(data["dropout"]), input_channels=data.get("input_channels", 3),
               name=data.get("name", ""))

  @classmethod
  def from_json(cls, text: str) -> "Architecture":
    try:
      data = json.loads(text)
    except json.JSONDecodeError as error:
      raise ValueError(f"architecture: not valid JSON ({error})") from None
    return cls.from_dict(data)

  def save(self, path: str):
    io_utils.atomic_write_text(path, self.to_json())

  @classmethod
  def load(cls, path: str) -> "Architecture":
    """Reads a JSON file; any problem is a ValueError that names the file."""
    try:
      with open(path) as handle:
        text = handle.read()
    except OSError as error:
      raise ValueError(f"{path}: cannot read architecture file ({error.strerror})") from None
    try:
      return cls.from_json(text)
    except ValueError as error:
      raise ValueError(f"{path}: {error}") from None

  # ---- compact one-line string ---------------------------------------------

  def to_compact(self) -> str:
    parts = [
        f"input={self.input_size}", f"channels={self.input_channels}",
        f"classes={self.num_classes}",
        f"stem=c{self.stem.filters}k{self.stem.kernel}s{self.stem.stride}",
        "blocks=" + "-".join(_block_to_compact(b) for b in self.blocks),
        f"head=c{self.head.filters}", f"act={self.activation}",
        f"se={_format_number(self.se_ratio)}", f"dropout={_format_number(self.dropout)}",
    ]
    if self.name:
      parts.append(f"name={self.name}")
    return ";".join(parts)

  @classmethod
  def from_compact(cls, text: str) -> "Architecture":
    fields = {}
    for part in text.strip().split(";"):
      key, sep, value = part.partition("=")
      _check(bool(sep), "compact", f"expected key=value, got {part!r}")
      _check(key not in fields, "compact", f"field {key!r} given twice")
      fields[key] = value
    known = ("input", "channels", "classes", "stem", "blocks", "head", "act", "se", "dropout",
             "name")
    unknown = sorted(set(fields) - set(known))
    _check(not unknown, "compact", f"unknown field(s) {unknown}")
    missing = [k for k in known if k not in fields and k not in ("channels", "name")]
    _check(not missing, "compact", f"missing field(s) {missing}")
    stem = re.fullmatch(r"c(\d+)k(\d+)s(\d+)", fields["stem"])
    _check(stem is not None, "compact.stem", f"expected c<filters>k<kernel>s<stride>, got {fields['stem']!r}")
    head = re.fullmatch(r"c(\d+)", fields["head"])
    _check(head is not None, "compact.head", f"expected c<filters>, got {fields['head']!r}")
    blocks, channels = [], int(stem.group(1))
    for index, token in enumerate(fields["blocks"].split("-")):
      block = _block_from_compact(token, channels, f"compact.blocks[{index}]")
      blocks.append(block)
      channels = block.filters
    return cls(input_size=_parse_int(fields["input"], "compact.input"),
               input_channels=_parse_int(fields.get("channels", "3"), "compact.channels"),
               num_classes=_parse_int(fields["classes"], "compact.classes"),
               stem=Stem(int(stem.group(1)), int(stem.group(2)), int(stem.group(3))),
               blocks=tuple(blocks), head=Head(int(head.group(1))), activation=fields["act"],
               se_ratio=_parse_float(fields["se"], "compact.se"),
               dropout=_parse_float(fields["dropout"], "compact.dropout"),
               name=fields.get("name", ""))

  # ---- derived architectures ----------------------------------------------

  def replace(self, **changes) -> "Architecture":
    return dataclasses.replace(self, **changes)

  def for_retraining(self, num_classes: int, se_ratio: Optional[float] = None,
                     activation: Optional[str] = None, dropout: float = 0.0,
                     width_multiplier: float = 1.0) -> "Architecture":
    """The network retraining trains: this spec with the retraining options applied
    (width first, then classes, dropout and, when given, SE ratio and activation)."""
    arch = self.with_width(width_multiplier) if width_multiplier != 1.0 else self
    changes = {"num_classes": num_classes, "dropout": dropout}
    if se_ratio is not None:
      changes["se_ratio"] = se_ratio
    if activation is not None:
      changes["activation"] = activation
    return arch.replace(**changes)

  def with_width(self, multiplier: float) -> "Architecture":
    """Scales every width with make_divisible(8); the head grows only if multiplier > 1."""
    _check(_is_number(multiplier) and multiplier > 0, "width_multiplier",
           f"must be a positive number, got {multiplier!r}")
    scale = lambda filters: make_divisible(filters * multiplier, 8)
    blocks = tuple(dataclasses.replace(b, filters=scale(b.filters)) for b in self.blocks)
    head = Head(scale(self.head.filters)) if multiplier > 1.0 else self.head
    return dataclasses.replace(self, stem=dataclasses.replace(self.stem, filters=scale(self.stem.filters)),
                               blocks=blocks, head=head)


def _parse_int(text: str, where: str) -> int:
  _check(re.fullmatch(r"\d+", text) is not None, where, f"expected an integer, got {text!r}")
  return int(text)


def _parse_float(text: str, where: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise ValueError(f"{where}: expected a number, got {text!r}") from None


def _read_fields(data: Any, where: str, required: Sequence[str], optional: Sequence[str] = ()):
  """Rejects a non-object, unknown fields and missing fields, naming them."""
  _check(isinstance(data, dict), where, f"must be a JSON object, got {type(data).__name__}")
  unknown = sorted(set(data) - set(required) - set(optional))
  _check(not unknown, where, f"unknown field(s) {unknown}")
  missing = [field for field in required if field not in data]
  _check(not missing, where, f"missing field(s) {missing}")
  return dict(data)


def _block_from_dict(data: Any, where: str) -> Block:
  _check(isinstance(data, dict), where, f"must be a JSON object, got {type(data).__name__}")
  _check("op" in data, where, "missing field(s) ['op']")
  if data["op"] == "identity":
    fields = _read_fields(data, where, required=("op", "filters", "stride"))
    return Block(**fields)
  _check(data["op"] == "mbconv", f"{where}.op", f"must be one of {OPS}, got {data['op']!r}")
  fields = _read_fields(data, where, required=("op", "kernel", "expand", "filters", "stride"))
  fields["expand"] = _normalize_number(fields["expand"])
  return Block(**fields)


def _block_to_compact(block: Block) -> str:
  if block.is_identity:
    return "id"
  return f"{block.label}c{block.filters}s{block.stride}"


def _block_from_compact(token: str, in_channels: int, where: str) -> Block:
  if token == "id":
    return identity(in_channels)
  match = re.fullmatch(r"k(\d+)e(\d+(?:\.\d+)?)c(\d+)s(\d+)", token)
  _check(match is not None, where, f"expected k<kernel>e<expand>c<filters>s<stride> or id, got {token!r}")
  expand = float(match.group(2)) if "." in match.group(2) else int(match.group(2))
  return mbconv(int(match.group(1)), expand, int(match.group(3)), int(match.group(4)))
