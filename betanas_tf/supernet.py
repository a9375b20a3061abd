"""The supernet: every candidate of every choice block, one path run per step.

Built from the same block code as the standalone model (`blocks.py`,
`builder.head_layers`), so a candidate's primitive layers carry the names the
standalone model gives them (``block07_k5e3_dw``) and weights move by name.

A path is an int32 tensor with one candidate index per choice block. Each
choice block runs only the chosen candidate with `tf.switch_case` (measured:
1.01x the lone block; a one-hot gate sum runs every branch, 4.35x), and the
path is a tensor argument, so changing it or the active set never retraces.
"""

from typing import List, Sequence, Tuple

import keras
import tensorflow as tf

from betanas_tf import arch as arch_lib
from betanas_tf import blocks
from betanas_tf import builder
from betanas_tf import spaces as spaces_lib


class ChoiceBlock(keras.layers.Layer):
  """Holds one choice block's candidate layers; runs the one picked by `index`."""

  def __init__(self, choice: spaces_lib.ChoiceBlock, activation: str, se_ratio: float = 0.0,
               **kwargs):
    super().__init__(name=kwargs.pop("name", f"choice{choice.position:02d}"), **kwargs)
    self.choice = choice
    self.candidates = [blocks.make_block_layer(choice.position, choice.shape.in_channels, c,
                                               activation, se_ratio)
                       for c in choice.candidates]

  def build(self, input_shape):
    for candidate in self.candidates:
      candidate.build(input_shape)
    super().build(input_shape)

  def call(self, inputs, index, training=None):
    branches = [lambda c=c: c(inputs, training=training) for c in self.candidates]
    return tf.switch_case(tf.convert_to_tensor(index, tf.int32), branches)

  def candidate_output(self, inputs, candidate: int, training=None):
    return self.candidates[candidate](inputs, training=training)

  def compute_output_shape(self, input_shape):
    return self.candidates[0].compute_output_shape(input_shape)


class Supernet(keras.Model):
  """Stem, fixed blocks, choice blocks, head; `call(images, path)` runs one path."""

  def __init__(self, space: spaces_lib.SearchSpace, se_ratio: float = 0.0, dropout: float = 0.0,
               **kwargs):
    super().__init__(name=kwargs.pop("name", f"supernet_{space.name}"), **kwargs)
    self.space = space
    skeleton = space.arch_from_choices([0] * len(space)).replace(se_ratio=se_ratio, dropout=dropout)
    self.skeleton = skeleton
    self.stem = blocks.conv_bn_act(keras.layers, "stem_conv", skeleton.stem.filters,
                                   skeleton.stem.kernel, skeleton.stem.stride, skeleton.activation)
    shapes = skeleton.block_shapes()
    self.fixed = [blocks.make_block_layer(i, shapes[i].in_channels, b, skeleton.activation, se_ratio)
                  for i, b in enumerate(space.fixed_blocks)]
    self.choices = [ChoiceBlock(c, skeleton.activation, se_ratio) for c in space.choice_blocks]
    self.head = builder.head_layers(keras.layers, skeleton)
    self.build((None, space.input_size, space.input_size, skeleton.input_channels))

  def build(self, input_shape):
    batch = input_shape[0]
    self.stem["conv"].build(input_shape)
    size = self.skeleton.stem_output_size
    self.stem["bn"].build((batch, size, size, self.skeleton.stem.filters))
    for layer, shape in zip(self.fixed + self.choices, self.skeleton.block_shapes()):
      layer.build((batch, shape.in_size, shape.in_size, shape.in_channels))
    final = self.skeleton.final_size
    self.head["conv"]["conv"].build((batch, final, final, self.skeleton.final_channels))
    self.head["conv"]["bn"].build((batch, final, final, self.skeleton.head.filters))
    self.head["classifier"].build((batch, self.skeleton.head.filters))
    self.built = True

  def features(self, images, training=None):
    """Stem and fixed blocks: the input of the first choice block."""
    x = blocks.apply_conv_bn_act(self.stem, images, training)
    for layer in self.fixed:
      x = layer(x, training=training)
    return x

  def call(self, images, path, training=None):
    return self.forward_with_block_io(images, path, training)[0]

  def forward_with_block_io(self, images, path, training=None
                            ) -> Tuple[tf.Tensor, List[Tuple[tf.Tensor, tf.Tensor]]]:
    """Logits and, per choice block, its (input, output) on the given path."""
    path = tf.convert_to_tensor(path, tf.int32)
    x = self.features(images, training)
    block_io = []
    for l, choice in enumerate(self.choices):
      y = choice(x, path[l], training=training)
      block_io.append((x, y))
      x = y
    return builder.apply_head(self.head, x, training), block_io

  def candidate_variables(self) -> List[Tuple[int, int, keras.Variable]]:
    """(choice block, candidate, variable) for every trainable variable of a candidate."""
    owned = []
    for l, choice in enumerate(self.choices):
      for m, candidate in enumerate(choice.candidates):
        owned.extend((l, m, v) for v in candidate.trainable_variables)
    return owned

  def arch_for(self, choices: Sequence[int], name: str = "") -> arch_lib.Architecture:
    return self.space.arch_from_choices(choices, name=name).replace(
        se_ratio=self.skeleton.se_ratio, dropout=self.skeleton.dropout)


def checkpoint_items(net: "Supernet"):
  """What a tf.train.Checkpoint must hold to save the supernet's weights.

  A Keras 3 model is not traversed by tf.train.Checkpoint, so its variables
  (trainable and BatchNorm statistics alike) are listed explicitly, in the
  deterministic order the same space always builds them in.
  """
  return {"supernet_weights": list(net.weights)}


def copy_weights_by_name(source: keras.Model, target: keras.Model) -> int:
  """Copies weights between models by structural leaf-layer name; returns layers copied.

  From a supernet, only the candidates named by the target's layers exist in
  it under those names, so the copy takes exactly the chosen path.
  """
  by_name = {layer.name: layer for layer in source._flatten_layers(include_self=False, recursive=True)
             if layer.weights}
  copied = 0
  for layer in target._flatten_layers(include_self=False, recursive=True):
    if layer.weights and layer.name in by_name:
      layer.set_weights(by_name[layer.name].get_weights())
      copied += 1
  return copied
