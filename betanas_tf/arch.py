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
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from betanas_tf import io_utils
from betanas_tf import ops as ops_lib
from betanas_tf import primitives
from betanas_tf.numbers import format_number as _format_number
from betanas_tf.numbers import is_int as _is_int
from betanas_tf.numbers import is_number as _is_number

FORMAT = "betanas_tf.architecture"
VERSION = 1
ACTIVATIONS = primitives.ACTIVATIONS


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
  """MobileNet channel rounding: nearest multiple of `divisor`, never < 90 %."""
  min_value = divisor if min_value is None else min_value
  rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:  # Rounding down must not remove more than 10 %.
    rounded += divisor
  return rounded


def scale_width(filters: int, multiplier: float) -> int:
  """A width times `multiplier`, rounded as MobileNet does (make_divisible 8)."""
  return make_divisible(filters * multiplier, 8)


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


class Block:
  """One block of the body: `op` (an entry of `ops.OPS`, which says what it means), its
  output `filters` and `stride`, and the fields that op defines (`ops.Op.fields`, e.g.
  MBConv's ``kernel`` and ``expand``), given as keywords and read as attributes::

      Block("mbconv", 24, 2, kernel=5, expand=3)      Block("identity", 24)

  Immutable and hashable; a field another op defines reads as None (an identity block has
  no kernel), any other missing attribute is an AttributeError."""

  __slots__ = ("op", "filters", "stride", "fields")

  def __init__(self, op: str, filters: int, stride: int = 1, **fields: Any):
    object.__setattr__(self, "op", op)
    object.__setattr__(self, "filters", filters)
    object.__setattr__(self, "stride", stride)
    if op in ops_lib.OPS:   # an unknown op is reported by `validate`, naming the block
      fields = ops_lib.get(op).normalize_fields(fields)
    object.__setattr__(self, "fields", tuple(sorted((k, v) for k, v in fields.items()
                                                    if v is not None)))

  def __getattr__(self, name: str):
    # Only reached when the slots miss: the op's own fields, then any op's (None).
    if name.startswith("__") or name == "fields":
      raise AttributeError(name)
    for key, value in object.__getattribute__(self, "fields"):
      if key == name:
        return value
    if any(name in ops_lib.get(op).fields for op in ops_lib.OPS.names()):
      return None
    raise AttributeError(f"{type(self).__name__} has no field {name!r}")

  def __setattr__(self, name, value):
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

  def _key(self):
    return (self.op, self.filters, self.stride, self.fields)

  def __eq__(self, other):
    return isinstance(other, Block) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())

  def __repr__(self):
    extra = "".join(f", {k}={v!r}" for k, v in self.fields)
    return f"Block(op={self.op!r}, filters={self.filters!r}, stride={self.stride!r}{extra})"

  def __reduce__(self):
    return (_make_block, (self.op, self.filters, self.stride, dict(self.fields)))

  def replace(self, **changes) -> "Block":
    values = dict(self.fields, op=self.op, filters=self.filters, stride=self.stride)
    values.update(changes)
    return Block(**values)

  @property
  def op_type(self) -> ops_lib.Op:
    return ops_lib.get(self.op)

  @property
  def label(self) -> str:
    """Short op name used in layer names and compact strings: ``k5e3`` or ``id``."""
    return self.op_type.label(self)

  def validate(self, in_channels: int, where: str):
    _check(self.op in ops_lib.OPS, f"{where}.op",
           f"must be one of {tuple(ops_lib.OPS.names())}, got {self.op!r}")
    _check(_is_int(self.filters) and self.filters > 0, f"{where}.filters",
           f"must be a positive integer, got {self.filters!r}")
    _check(_is_int(self.stride) and self.stride in (1, 2), f"{where}.stride",
           f"must be 1 or 2, got {self.stride!r}")
    unused = [k for k, _ in self.fields if k not in self.op_type.fields]
    _check(not unused, where, f"a{'n' if self.op[0] in 'aeiou' else ''} {self.op} block has no "
           + " or ".join(unused))
    self.op_type.validate(self, in_channels, where)

  def has_residual(self, in_channels: int) -> bool:
    return self.op_type.has_residual(self, in_channels)

  def to_dict(self) -> Dict[str, Any]:
    return {field: getattr(self, field) for field in ("op", "filters", "stride") + self.op_type.fields}

  @classmethod
  def from_dict(cls, data: Any, where: str = "block") -> "Block":
    """Strict: an unknown op, unknown field or missing field is a ValueError naming it."""
    return _block_from_dict(data, where)


def _make_block(op, filters, stride, fields):
  return Block(op, filters, stride, **fields)


def block_name(position: int, block: Block) -> str:
  """Structural name of the block at `position` of an Architecture: ``block07_k5e3``."""
  return f"block{position:02d}_{block.label}"


@dataclasses.dataclass(frozen=True)
class Head:
  """1x1 conv to `filters`, BN, act, global average pool, dropout, dense."""
  filters: int

  def scaled(self, multiplier: float) -> "Head":
    """The head of a network `multiplier` times as wide: it grows, never shrinks (MobileNetV2
    keeps 1280 below width 1)."""
    return Head(scale_width(self.filters, multiplier)) if multiplier > 1.0 else self

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
    return primitives.out_size(self.input_size, self.stem.stride)

  def block_shapes(self) -> List[BlockShape]:
    """Input/output resolution and channels of every block, in order."""
    size, channels, shapes = self.stem_output_size, self.stem.filters, []
    for block in self.blocks:
      out_size = primitives.out_size(size, block.stride)
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
    blocks = [block.to_dict() for block in self.blocks]
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
                     width_multiplier: float = 1.0, input_size: Optional[int] = None
                     ) -> "Architecture":
    """The network retraining trains: this spec with the retraining options applied
    (width first, then classes, dropout and, when given, input size, SE ratio and activation)."""
    arch = self.with_width(width_multiplier) if width_multiplier != 1.0 else self
    changes = {"num_classes": num_classes, "dropout": dropout}
    if input_size is not None:
      changes["input_size"] = input_size
    if se_ratio is not None:
      changes["se_ratio"] = se_ratio
    if activation is not None:
      changes["activation"] = activation
    return arch.replace(**changes)

  def with_width(self, multiplier: float) -> "Architecture":
    """Scales every width with make_divisible(8); the head grows only if multiplier > 1."""
    _check(_is_number(multiplier) and multiplier > 0, "width_multiplier",
           f"must be a positive number, got {multiplier!r}")
    scale = lambda filters: scale_width(filters, multiplier)
    blocks = tuple(b.replace(filters=scale(b.filters)) for b in self.blocks)
    head = self.head.scaled(multiplier)
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
  _check(data["op"] in ops_lib.OPS, f"{where}.op",
         f"must be one of {tuple(ops_lib.OPS.names())}, got {data['op']!r}")
  fields = _read_fields(data, where, required=("op", "filters", "stride") + ops_lib.get(data["op"]).fields)
  return Block(**fields)


def _block_to_compact(block: Block) -> str:
  return block.op_type.to_compact(block)


def _block_from_compact(token: str, in_channels: int, where: str) -> Block:
  for name in ops_lib.OPS.names():
    fields = ops_lib.get(name).parse_compact(token, in_channels)
    if fields is not None:
      return Block(**fields)
  forms = " or ".join(ops_lib.get(name).compact_form for name in ops_lib.OPS.names())
  raise ValueError(f"{where}: expected {forms}, got {token!r}")
