"""Block code shared by the standalone builder, the supernet and the tf_keras rebuild.

The primitive layers of a block are made by one function, `mbconv_parts`, from
a layer namespace (``keras.layers`` for Keras 3, ``tf_keras.layers`` for the
quantization-aware rebuild), and run by one function, `apply_mbconv`. The
standalone builder wires them into a flat functional model; the `MBConv`
Keras layer wraps the very same parts for the supernet. Every primitive gets a
structural name (``block07_k5e3_dw``), so weights move between all three by
name.
"""

from typing import Any, Dict, Optional

import keras

from betanas_tf import arch as arch_lib

BN_MOMENTUM = 0.9     # PyTorch's 0.1, as in ProxylessNAS.
BN_EPSILON = 1e-3


def activation_layer(layers, activation: str, name: str):
  if activation == "relu6":
    return layers.ReLU(max_value=6.0, name=name)
  if activation == "swish":
    return layers.Activation("swish", name=name)
  raise ValueError(f"activation must be one of {arch_lib.ACTIVATIONS}, got {activation!r}")


def conv_bn_act(layers, prefix: str, filters: int, kernel: int, stride: int,
                activation: Optional[str], depthwise: bool = False,
                bn_momentum: float = BN_MOMENTUM, bn_epsilon: float = BN_EPSILON) -> Dict[str, Any]:
  """Conv (or depthwise conv) without bias, BN, and optionally an activation."""
  if depthwise:
    conv = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                  name=prefix)
  else:
    conv = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                         name=prefix)
  parts = {"conv": conv, "bn": layers.BatchNormalization(
      momentum=bn_momentum, epsilon=bn_epsilon, name=prefix + "_bn")}
  if activation is not None:
    parts["act"] = activation_layer(layers, activation, prefix + "_act")
  return parts


def apply_conv_bn_act(parts: Dict[str, Any], x, training=None):
  x = parts["conv"](x)
  x = parts["bn"](x, training=training)
  return parts["act"](x) if "act" in parts else x


def mbconv_parts(layers, prefix: str, in_channels: int, block: arch_lib.Block, activation: str,
                 se_ratio: float = 0.0, bn_momentum: float = BN_MOMENTUM,
                 bn_epsilon: float = BN_EPSILON, drop_connect: float = 0.0) -> Dict[str, Any]:
  """Makes the primitive layers of one MBConv, named ``<prefix>_<part>``.

  `drop_connect` > 0 adds stochastic depth on the residual branch (a whole
  example's branch is dropped with that probability while training).
  """
  mid = block.mid_channels(in_channels)
  bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
  parts: Dict[str, Any] = {}
  if block.expand != 1:
    parts["expand"] = conv_bn_act(layers, prefix + "_expand", mid, 1, 1, activation, **bn)
  parts["dw"] = conv_bn_act(layers, prefix + "_dw", mid, block.kernel, block.stride, activation,
                            depthwise=True, **bn)
  if se_ratio > 0:
    squeezed = arch_lib.se_channels(mid, se_ratio)
    parts["se"] = {
        "pool": layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "_se_pool"),
        "reduce": layers.Conv2D(squeezed, 1, name=prefix + "_se_reduce"),
        "act": activation_layer(layers, activation, prefix + "_se_act"),
        "expand": layers.Conv2D(mid, 1, name=prefix + "_se_expand"),
        "gate": layers.Activation("sigmoid", name=prefix + "_se_gate"),
        "mul": layers.Multiply(name=prefix + "_se_mul"),
    }
  parts["project"] = conv_bn_act(layers, prefix + "_project", block.filters, 1, 1, None, **bn)
  if block.has_residual(in_channels):
    parts["add"] = layers.Add(name=prefix + "_add")
    if drop_connect > 0:
      parts["drop"] = layers.Dropout(drop_connect, noise_shape=(None, 1, 1, 1), name=prefix + "_drop")
  return parts


def apply_mbconv(parts: Dict[str, Any], x, training=None):
  inputs = x
  if "expand" in parts:
    x = apply_conv_bn_act(parts["expand"], x, training)
  x = apply_conv_bn_act(parts["dw"], x, training)
  if "se" in parts:
    se = parts["se"]
    gate = se["gate"](se["expand"](se["act"](se["reduce"](se["pool"](x)))))
    x = se["mul"]([x, gate])
  x = apply_conv_bn_act(parts["project"], x, training)
  if "add" in parts:
    if "drop" in parts:
      x = parts["drop"](x, training=training)
    x = parts["add"]([inputs, x])
  return x


@keras.saving.register_keras_serializable(package="betanas_tf")
class MBConv(keras.layers.Layer):
  """MobileNetV2 inverted residual (optionally with squeeze-excite and swish).

  Its primitive sublayers are named ``<name>_expand``, ``<name>_dw``, ... exactly
  as in the flat standalone model, so weights can be copied by name.
  """

  def __init__(self, in_channels: int, filters: int, kernel: int, expand: float, stride: int = 1,
               activation: str = "relu6", se_ratio: float = 0.0, bn_momentum: float = BN_MOMENTUM,
               bn_epsilon: float = BN_EPSILON, **kwargs):
    super().__init__(**kwargs)
    self.in_channels, self.filters, self.kernel = in_channels, filters, kernel
    self.expand, self.stride, self.activation = expand, stride, activation
    self.se_ratio, self.bn_momentum, self.bn_epsilon = se_ratio, bn_momentum, bn_epsilon
    self.block = arch_lib.mbconv(kernel, expand, filters, stride)
    self.block.validate(in_channels, self.name)
    self.parts = mbconv_parts(keras.layers, self.name, in_channels, self.block, activation,
                              se_ratio, bn_momentum, bn_epsilon)

  def build(self, input_shape):
    # Keras 3 must see every weight created in build() to restore a saved model.
    batch, height, width = input_shape[0], input_shape[1], input_shape[2]
    out = lambda s: None if s is None else -(-s // self.stride)
    mid = self.block.mid_channels(self.in_channels)
    shape = (batch, height, width, mid)
    if "expand" in self.parts:
      self.parts["expand"]["conv"].build(input_shape)
      self.parts["expand"]["bn"].build(shape)
    self.parts["dw"]["conv"].build(shape)
    shape = (batch, out(height), out(width), mid)
    self.parts["dw"]["bn"].build(shape)
    if "se" in self.parts:
      self.parts["se"]["reduce"].build((batch, 1, 1, mid))
      self.parts["se"]["expand"].build((batch, 1, 1, arch_lib.se_channels(mid, self.se_ratio)))
    self.parts["project"]["conv"].build(shape)
    self.parts["project"]["bn"].build(shape[:3] + (self.filters,))
    super().build(input_shape)

  def call(self, inputs, training=None):
    return apply_mbconv(self.parts, inputs, training)

  def compute_output_shape(self, input_shape):
    size = lambda s: None if s is None else -(-s // self.stride)
    return (input_shape[0], size(input_shape[1]), size(input_shape[2]), self.filters)

  def get_config(self):
    config = super().get_config()
    config.update(in_channels=self.in_channels, filters=self.filters, kernel=self.kernel,
                  expand=self.expand, stride=self.stride, activation=self.activation,
                  se_ratio=self.se_ratio, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
    return config


@keras.saving.register_keras_serializable(package="betanas_tf")
class Identity(keras.layers.Layer):
  """The "skip this block" candidate: returns its input unchanged."""

  def call(self, inputs, training=None):
    return inputs

  def compute_output_shape(self, input_shape):
    return input_shape


def make_block_layer(position: int, in_channels: int, block: arch_lib.Block, activation: str,
                     se_ratio: float = 0.0) -> keras.layers.Layer:
  """The Keras 3 layer for one block (used by the supernet's candidates)."""
  name = arch_lib.block_name(position, block)
  if block.is_identity:
    return Identity(name=name)
  return MBConv(in_channels, block.filters, block.kernel, block.expand, block.stride,
                activation=activation, se_ratio=se_ratio, name=name)
