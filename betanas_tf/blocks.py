"""The supernet's Keras 3 layer for one candidate block, whatever its op.

A `Candidate` wraps the layers its op's registry entry makes (`ops.Op.make_parts`)
and runs them with the entry's `apply`: the same parts, with the same structural
names (``block07_k5e3_dw``), that the standalone builder lays out flat and the
tf_keras rebuild makes for quantization-aware training, so weights move between
all three by name. Nothing here is specific to an op.
"""

import keras

from betanas_tf import arch as arch_lib
from betanas_tf import fused_bn
from betanas_tf import primitives


@keras.saving.register_keras_serializable(package="betanas_tf")
class Candidate(keras.layers.Layer):
  """One block (an `arch.Block` of any registered op) as a Keras 3 layer."""

  def __init__(self, in_channels: int, block, activation: str = "relu6", se_ratio: float = 0.0,
               bn_momentum: float = primitives.BN_MOMENTUM,
               bn_epsilon: float = primitives.BN_EPSILON, **kwargs):
    super().__init__(**kwargs)
    self.block = block if isinstance(block, arch_lib.Block) else arch_lib.Block.from_dict(block)
    self.block.validate(in_channels, self.name)
    self.in_channels, self.activation, self.se_ratio = in_channels, activation, se_ratio
    self.bn_momentum, self.bn_epsilon = bn_momentum, bn_epsilon
    self.op = self.block.op_type
    self.parts = self.op.make_parts(fused_bn.LAYERS, self.name, in_channels, self.block, activation,
                                    se_ratio, bn_momentum, bn_epsilon)

  def build(self, input_shape):
    # Keras 3 must see every weight created in build() to restore a saved model: one
    # symbolic pass builds each part at its own input shape.
    self.op.apply(self.parts, keras.KerasTensor(input_shape))
    super().build(input_shape)

  def call(self, inputs, training=None):
    return self.op.apply(self.parts, inputs, training)

  def compute_output_shape(self, input_shape):
    size = lambda s: None if s is None else primitives.out_size(s, self.block.stride)
    return (input_shape[0], size(input_shape[1]), size(input_shape[2]), self.block.filters)

  def get_config(self):
    config = super().get_config()
    config.update(in_channels=self.in_channels, block=self.block.to_dict(),
                  activation=self.activation, se_ratio=self.se_ratio,
                  bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
    return config


def make_block_layer(position: int, in_channels: int, block: arch_lib.Block, activation: str,
                     se_ratio: float = 0.0) -> keras.layers.Layer:
  """The Keras 3 layer for the block at `position` (the supernet's candidates and fixed blocks)."""
  return Candidate(in_channels, block, activation, se_ratio, name=arch_lib.block_name(position, block))
