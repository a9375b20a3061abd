"""Standalone model builder: Architecture -> flat functional Keras model.

The same code builds the network with Keras 3 (``backend=fused_bn.KERAS``, the
default: keras with a fused training-mode BatchNorm) or with tf_keras
(``backend=tf_keras``, for quantization-aware training with tfmot): the backend
only has to offer ``layers``, ``Input`` and ``Model``.
Layer names are structural (``stem_conv``, ``block07_k5e3_dw_bn``,
``head_conv``, ``classifier``) and shared with the supernet's candidates.
The model outputs logits.
"""

import keras

from betanas_tf import arch as arch_lib
from betanas_tf import fused_bn
from betanas_tf import primitives


# keras itself as a builder backend (``layers``, ``Input``, ``Model``): Keras' own
# BatchNormalization, so a saved model loads in a process that never imports betanas_tf.
PLAIN_KERAS = keras


def build_model(arch: arch_lib.Architecture, backend=fused_bn.KERAS, name: str = None,
                bn_momentum: float = primitives.BN_MOMENTUM,
                bn_epsilon: float = primitives.BN_EPSILON,
                drop_connect: float = 0.0):
  """Builds `arch` as a functional model of primitive layers from `backend`.

  `drop_connect` is the stochastic-depth rate of the last block; block i of n
  gets drop_connect * i / n (EfficientNet's linear rule), residual blocks only.
  """
  layers = backend.layers
  bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
  inputs = backend.Input(shape=(arch.input_size, arch.input_size, arch.input_channels),
                         name="image")
  x = stem_and_apply(layers, arch, inputs, **bn)
  for position, (block, shape) in enumerate(zip(arch.blocks, arch.block_shapes())):
    op = block.op_type
    parts = op.make_parts(layers, arch_lib.block_name(position, block), shape.in_channels, block,
                          arch.activation, arch.se_ratio, **bn,
                          drop_connect=drop_connect * position / len(arch.blocks))
    if parts:  # an op without layers (identity) adds nothing to the graph
      x = op.apply(parts, x)
  outputs = head_and_apply(layers, arch, x, **bn)
  return backend.Model(inputs, outputs, name=name or arch.name or "betanas_net")


def stem_and_apply(layers, arch: arch_lib.Architecture, x, training=None, **bn):
  parts = primitives.conv_bn_act(layers, "stem_conv", arch.stem.filters, arch.stem.kernel,
                             arch.stem.stride, arch.activation, **bn)
  return primitives.apply_conv_bn_act(parts, x, training)


def head_layers(layers, arch: arch_lib.Architecture, **bn):
  """The head's layers: 1x1 conv, BN, act, global pool, dropout, classifier. The classifier
  computes in float32 under any mixed-precision policy (precision.py): the logits feed
  softmax, losses and top-k metrics, and it costs one small matmul."""
  parts = {"conv": primitives.conv_bn_act(layers, "head_conv", arch.head.filters, 1, 1,
                                      arch.activation, **bn),
           "pool": layers.GlobalAveragePooling2D(name="pool"),
           "classifier": layers.Dense(arch.num_classes, name="classifier", dtype="float32")}
  if arch.dropout > 0:
    parts["dropout"] = layers.Dropout(arch.dropout, name="dropout")
  return parts


def apply_head(parts, x, training=None):
  x = parts["pool"](primitives.apply_conv_bn_act(parts["conv"], x, training))
  if "dropout" in parts:
    x = parts["dropout"](x, training=training)
  return parts["classifier"](x)


def head_and_apply(layers, arch: arch_lib.Architecture, x, training=None, **bn):
  return apply_head(head_layers(layers, arch, **bn), x, training)


def _leaf_layers(model):
  # Keras 3 and tf_keras both walk nested layers with `_flatten_layers` (no public
  # equivalent; versions are capped in pyproject.toml).
  return [layer for layer in model._flatten_layers(include_self=False, recursive=True)  # pylint: disable=protected-access
          if layer.weights]


def copy_weights_by_name(source, target) -> int:
  """Copies weights between models by structural leaf-layer name; returns layers copied.

  Works across Keras 3 and tf_keras models and from a supernet: only the candidates
  named by the target's layers exist in a supernet under those names, so the copy
  takes exactly the chosen path.
  """
  by_name = {layer.name: layer for layer in _leaf_layers(source)}
  copied = 0
  for layer in _leaf_layers(target):
    if layer.name in by_name:
      layer.set_weights(by_name[layer.name].get_weights())
      copied += 1
  return copied


def copy_all_weights_by_name(source, target, what: str = "the source"):
  """`copy_weights_by_name` where every weighted layer of `target` must be found."""
  copied, expected = copy_weights_by_name(source, target), len(_leaf_layers(target))
  if copied != expected:
    raise ValueError(f"{what}: only {copied} of {expected} layers match the architecture by name")


def set_bn_statistics(model, images):
  """Sets every BatchNorm layer's moving mean / variance to the statistics of `images`
  (one forward pass in training mode with momentum 0), keeping each layer's own momentum.
  For randomly initialised networks, so activations stay in range for export and int8."""
  bn_layers = [layer for layer in _leaf_layers(model)
               if isinstance(layer, keras.layers.BatchNormalization)]
  momenta = [layer.momentum for layer in bn_layers]
  for layer in bn_layers:
    layer.momentum = 0.0
  try:
    model(images, training=True)
  finally:
    for layer, momentum in zip(bn_layers, momenta):
      layer.momentum = momentum
