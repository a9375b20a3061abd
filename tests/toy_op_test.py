"""A new op is one `ops.Op` subclass and its space entry: a 3x3 grouped convolution, defined
and registered in this file alone, goes through the spec, the builder, the cost model, the
supernet, the latency table's keys and TFLite export."""

import json
import re
import sys

import numpy as np
import pytest
import tensorflow as tf

from betanas_tf import arch as arch_lib
from betanas_tf import builder
from betanas_tf import cost
from betanas_tf.latency import table as latency_table
from betanas_tf import ops
from betanas_tf import primitives
from betanas_tf import spaces
from betanas_tf import supernet as supernet_lib
from betanas_tf import tflite


class GroupedConv(ops.Op):
  """3x3 convolution in `groups` groups, BN, ReLU6 (ShuffleNet's building block, unshuffled)."""

  name = "gconv"
  fields = ("groups",)
  compact_form = "g<groups>c<filters>s<stride>"

  def validate(self, block, in_channels, where):
    ok = isinstance(block.groups, int) and block.groups > 0
    if not (ok and in_channels % block.groups == 0 and block.filters % block.groups == 0):
      raise ValueError(f"{where}.groups: must divide {in_channels} and {block.filters}, "
                       f"got {block.groups!r}")

  def label(self, block):
    return f"g{block.groups}"

  def to_compact(self, block):
    return f"g{block.groups}c{block.filters}s{block.stride}"

  def parse_compact(self, token, in_channels):
    match = re.fullmatch(r"g(\d+)c(\d+)s(\d+)", token)
    return None if match is None else {"op": self.name, "groups": int(match.group(1)),
                                       "filters": int(match.group(2)),
                                       "stride": int(match.group(3))}

  def make_parts(self, layers, prefix, in_channels, block, activation, se_ratio=0.0,
                 bn_momentum=primitives.BN_MOMENTUM, bn_epsilon=primitives.BN_EPSILON,
                 drop_connect=0.0):
    return {"conv": layers.Conv2D(block.filters, 3, strides=block.stride, padding="same",
                                  groups=block.groups, use_bias=False, name=prefix + "_conv"),
            "bn": layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon,
                                            name=prefix + "_bn"),
            "act": layers.ReLU(6.0, name=prefix + "_act")}

  def apply(self, parts, x, training=None):
    return primitives.apply_conv_bn_act(parts, x, training)

  def cost(self, block, shape, se_ratio=0.0):
    weights = 9 * (shape.in_channels // block.groups) * block.filters
    return primitives.Cost(shape.out_size ** 2 * weights, weights + 2 * block.filters)

  def latency_key(self, block, shape):
    return (f"gconv-input:{shape.in_size}x{shape.in_size}x{shape.in_channels}-output:"
            f"{shape.out_size}x{shape.out_size}x{shape.out_channels}-groups:{block.groups}"
            f"-stride:{block.stride}")

  def tflite_ops(self, block, shape, activation, se_ratio):
    return {"CONV_2D": 1}

  def figure_box(self, block):
    return (0.4, 0.6, "#937860")


@pytest.fixture(autouse=True)
def gconv_registered():
  """The toy op is in the registry for this file's tests only (other tests in the same
  process list the registered ops)."""
  ops.OPS.register("gconv", GroupedConv())
  yield
  ops.OPS.unregister("gconv")


def _space():
  return spaces.staged_space(
      "toy", 16, 10, arch_lib.Stem(16, 3, 1), [], [(16, 1, 1), (32, 1, 2)],
      spaces.mbconvs(((3, 3),), identity=False) + [{"op": "gconv", "groups": 2},
                                                    {"op": "gconv", "groups": 4},
                                                    {"op": "identity"}],
      arch_lib.Head(32))


def test_a_grouped_convolution_from_this_file_runs_everywhere():
  space = _space()
  assert [[c.label for c in b.candidates] for b in space.choice_blocks] == [
      ["k3e3", "g2", "g4", "id"], ["k3e3", "g2", "g4"]]   # identity only where the shape holds
  arch = space.arch_from_choices(space.choices_from_string("g4-g2"))
  # The spec: compact and JSON forms round-trip; a field the op lacks is refused by name.
  assert arch_lib.Architecture.from_compact(arch.to_compact()) == arch
  assert arch_lib.Architecture.from_json(arch.to_json()) == arch
  assert json.loads(arch.to_json())["blocks"][0] == {"op": "gconv", "filters": 16, "stride": 1,
                                                     "groups": 4}
  with pytest.raises(ValueError, match=r"blocks\[0\]: a gconv block has no kernel"):
    arch.replace(blocks=(arch_lib.Block("gconv", 16, 1, groups=4, kernel=3),) + arch.blocks[1:])
  with pytest.raises(ValueError, match=r"blocks\[1\].groups: must divide 16 and 32, got 3"):
    arch.replace(blocks=arch.blocks[:1] + (arch_lib.Block("gconv", 32, 2, groups=3),))
  # Builder and cost model agree on parameters, block by block.
  model = builder.build_model(arch)
  trainable = lambda name: sum(int(np.prod(w.shape)) for layer in model.layers
                               if layer.name.startswith(name) for w in layer.trainable_weights)
  shapes = arch.block_shapes()
  for position, (block, shape) in enumerate(zip(arch.blocks, shapes)):
    expected = GroupedConv().cost(block, shape)
    assert trainable(arch_lib.block_name(position, block)) == expected.params
  assert cost.architecture_cost(arch).macs == (
      cost.stem_cost(arch).macs + cost.head_cost(arch).macs
      + 16 * 16 * 9 * 4 * 16 + 8 * 8 * 9 * 8 * 32)
  # The supernet runs every path through its generic candidate layer.
  net = supernet_lib.Supernet(space)
  images = tf.random.normal((2, 16, 16, 3))
  for choices in ([1, 2], [2, 1], [3, 0]):
    assert net(images, path=tf.constant(choices, tf.int32), training=False).shape == (2, 10)
  # The latency table asks the op for its key.
  assert "gconv-input:16x16x16-output:16x16x16-groups:4-stride:1" in latency_table.space_keys(space)
  # TFLite: the ops it says it becomes, and the Keras model's outputs.
  content = tflite.convert(model)
  assert tflite.op_counts(content) == tflite.expected_op_counts(arch)
  x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
  assert np.abs(tflite.run(content, x) - model.predict(x, verbose=0)).max() < 1e-4


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
