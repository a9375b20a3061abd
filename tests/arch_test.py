"""Architecture spec: strict JSON, compact strings, validation errors, width multiplier."""

import json
import os

import pytest

from betanas_tf import arch as arch_lib
from betanas_tf import references


def _small():
  return arch_lib.Architecture(
      input_size=32, num_classes=10, stem=arch_lib.Stem(16, 3, 1),
      blocks=(arch_lib.Block("mbconv", 8, 1, kernel=3, expand=1), arch_lib.Block("mbconv", 24, 2, kernel=5, expand=3), arch_lib.Block("identity", 24),
              arch_lib.Block("mbconv", 24, 1, kernel=7, expand=2.5)),
      head=arch_lib.Head(64), activation="swish", se_ratio=0.25, dropout=0.2, name="small")


def test_json_round_trip_is_exact_and_sorted():
  arch = _small()
  text = arch.to_json()
  assert arch_lib.Architecture.from_json(text) == arch
  data = json.loads(text)
  assert list(data) == sorted(data)
  assert data["format"] == "betanas_tf.architecture" and data["version"] == 1
  assert data["blocks"][2] == {"op": "identity", "filters": 24, "stride": 1}
  assert data["blocks"][3]["expand"] == 2.5


def test_issue_example_json_loads_and_optional_fields_default():
  text = json.dumps({
      "format": "betanas_tf.architecture", "version": 1, "input_size": 224, "num_classes": 1000,
      "stem": {"filters": 32, "kernel": 3, "stride": 2},
      "blocks": [{"op": "mbconv", "kernel": 3, "expand": 1, "filters": 16, "stride": 1},
                 {"op": "mbconv", "kernel": 5, "expand": 3.0, "filters": 24, "stride": 2},
                 {"op": "identity", "filters": 24, "stride": 1}],
      "head": {"filters": 1280}, "activation": "relu6", "se_ratio": 0.0, "dropout": 0.0})
  arch = arch_lib.Architecture.from_json(text)
  assert arch.input_channels == 3 and arch.name == ""
  assert arch.blocks[1].expand == 3 and isinstance(arch.blocks[1].expand, int)
  assert [b.label for b in arch.blocks] == ["k3e1", "k5e3", "id"]
  assert [(s.in_size, s.out_size) for s in arch.block_shapes()] == [(112, 112), (112, 56), (56, 56)]


def test_compact_round_trip():
  for arch in (_small(), references.mobilenet_v2(), references.mobilenet_v2(1.4)):
    text = arch.to_compact()
    assert "\n" not in text
    assert arch_lib.Architecture.from_compact(text) == arch
  assert _small().to_compact() == (
      "input=32;channels=3;classes=10;stem=c16k3s1;blocks=k3e1c8s1-k5e3c24s2-id-k7e2.5c24s1;"
      "head=c64;act=swish;se=0.25;dropout=0.2;name=small")


def _mutated(path, value):
  data = _small().to_dict()
  target = data
  for key in path[:-1]:
    target = target[key]
  if value is _DELETE:
    del target[path[-1]]
  else:
    target[path[-1]] = value
  return json.dumps(data)


_DELETE = object()


@pytest.mark.parametrize("path,value,message", [
    (("extra",), 1, "architecture: unknown field(s) ['extra']"),
    (("head",), _DELETE, "architecture: missing field(s) ['head']"),
    (("blocks", 1, "kernel"), 4, "blocks[1].kernel: must be a positive odd integer, got 4"),
    (("blocks", 1, "kernel"), "3", "blocks[1].kernel: must be a positive odd integer, got '3'"),
    (("blocks", 1, "stride"), 3, "blocks[1].stride: must be 1 or 2, got 3"),
    (("blocks", 0, "filters"), 0, "blocks[0].filters: must be a positive integer, got 0"),
    (("blocks", 0, "filters"), True, "blocks[0].filters: must be a positive integer, got True"),
    (("blocks", 2, "filters"), 32,
     "blocks[2].filters: an identity block cannot change the shape (24 -> 32 channels)"),
    (("blocks", 2, "stride"), 2,
     "blocks[2].stride: an identity block cannot change the shape (stride 2)"),
    (("blocks", 3, "dilation"), 2, "blocks[3]: unknown field(s) ['dilation']"),
    (("blocks", 3, "expand"), _DELETE, "blocks[3]: missing field(s) ['expand']"),
    (("blocks", 3, "op"), "deform", "blocks[3].op: must be one of ('conv', 'identity', 'mbconv'), got 'deform'"),
    (("stem", "stride"), 4, "stem.stride: must be 1 or 2, got 4"),
    (("stem", "bias"), True, "stem: unknown field(s) ['bias']"),
    (("activation",), "gelu", "activation: must be one of ('relu6', 'swish'), got 'gelu'"),
    (("dropout",), 1.5, "dropout: must be a number in [0, 1), got 1.5"),
    (("version",), 2, "version: must be an integer in [1, 1], got 2"),
    (("format",), "other", "format: must be 'betanas_tf.architecture', got 'other'"),
])
def test_strict_json_errors_name_the_field(path, value, message):
  with pytest.raises(ValueError) as error:
    arch_lib.Architecture.from_json(_mutated(path, value))
  assert str(error.value) == message


def test_invalid_json_text():
  with pytest.raises(ValueError, match=r"^architecture: not valid JSON"):
    arch_lib.Architecture.from_json("{nope")


def test_load_errors_name_the_file_and_save_is_atomic(tmp_path):
  missing = str(tmp_path / "missing.json")
  with pytest.raises(ValueError, match=r"missing\.json: cannot read architecture file"):
    arch_lib.Architecture.load(missing)
  bad = tmp_path / "bad.json"
  bad.write_text('{"format": 1}')
  with pytest.raises(ValueError, match=r"bad\.json: architecture: unknown|bad\.json: architecture: missing"):
    arch_lib.Architecture.load(str(bad))
  path = str(tmp_path / "sub" / "arch.json")
  _small().save(path)
  assert arch_lib.Architecture.load(path) == _small()
  assert os.listdir(tmp_path / "sub") == ["arch.json"]  # no temp file left behind


@pytest.mark.parametrize("text,message", [
    ("input=32;classes=10;stem=c16k3s1;blocks=k3e1c8s1;head=c64;act=relu6;se=0", "missing field(s) ['dropout']"),
    ("input=32;classes=10;stem=c16k3s1;blocks=k3x1c8s1;head=c64;act=relu6;se=0;dropout=0",
     "compact.blocks[0]: expected conv<kernel>c<filters>s<stride> or id or "
     "k<kernel>e<expand>c<filters>s<stride>, got 'k3x1c8s1'"),
    ("input=32;classes=10;stem=c16k3s1;blocks=k3e1c8s1;head=c64;act=relu6;se=0;dropout=0;x=1",
     "unknown field(s) ['x']"),
])
def test_compact_errors(text, message):
  with pytest.raises(ValueError) as error:
    arch_lib.Architecture.from_compact(text)
  assert message in str(error.value)


def test_frozen():
  arch = _small()
  with pytest.raises(Exception):
    arch.input_size = 64  # noqa
  assert isinstance(arch.blocks, tuple)


def test_make_divisible_and_width_multiplier():
  assert [arch_lib.make_divisible(v) for v in (5.6, 22.4, 44.8, 33.6, 12)] == [8, 24, 48, 32, 16]
  base = references.mobilenet_v2()
  wide = base.with_width(1.4)
  assert wide.stem.filters == 48 and wide.head.filters == 1792
  assert [b.filters for b in wide.blocks][:4] == [24, 32, 32, 48]
  narrow = base.with_width(0.5)
  assert narrow.head.filters == 1280 and narrow.stem.filters == 16
  assert base.with_width(1.0) == base


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
