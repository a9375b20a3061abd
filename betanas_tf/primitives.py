"""The pieces every network here is made of, each with its layers and its analytic cost.

A primitive is a bias-free convolution (or depthwise convolution) with BatchNorm and an
optional activation, or a squeeze-excite gate. Layers are made from a layer namespace
(``fused_bn.LAYERS``, keras.layers with a fused BatchNorm, for Keras 3; ``tf_keras.layers``
for the quantization-aware rebuild), so this module imports no Keras itself. Costs count
what TensorFlow's profiler counts as Conv2D, DepthwiseConv2dNative and MatMul work at batch
1 (BatchNorm, activations, adds and pooling are not counted: BN folds into the convolutions
on export), and trainable parameters exactly as Keras does.
"""

import dataclasses
from typing import Any, Dict, Optional

BN_MOMENTUM = 0.9     # PyTorch's 0.1, as in ProxylessNAS.
BN_EPSILON = 1e-3
ACTIVATIONS = ("relu6", "swish")


@dataclasses.dataclass(frozen=True)
class Cost:
  macs: int = 0
  params: int = 0

  def __add__(self, other: "Cost") -> "Cost":
    return Cost(self.macs + other.macs, self.params + other.params)


def out_size(in_size: int, stride: int) -> int:
  """Output side of a "same"-padded layer."""
  return -(-in_size // stride)


def se_channels(mid_channels: int, se_ratio: float) -> int:
  """Squeeze-excite bottleneck width: se_ratio of the block's mid channels, at least 1."""
  return max(1, int(mid_channels * se_ratio))


# ---- layers ------------------------------------------------------------------------------

def activation_layer(layers, activation: str, name: str):
  if activation == "relu6":
    return layers.ReLU(max_value=6.0, name=name)
  if activation == "swish":
    return layers.Activation("swish", name=name)
  raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def conv_bn_act(layers, prefix: str, filters: int, kernel: int, stride: int,
                activation: Optional[str], depthwise: bool = False,
                bn_momentum: float = BN_MOMENTUM, bn_epsilon: float = BN_EPSILON) -> Dict[str, Any]:
  """Conv (or depthwise conv) without bias, BN, and optionally an activation, named
  ``<prefix>``, ``<prefix>_bn``, ``<prefix>_act``."""
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


def squeeze_excite_layers(layers, prefix: str, channels: int, se_ratio: float,
                          activation: str) -> Dict[str, Any]:
  """Global pool, 1x1 reduce (with bias), act, 1x1 expand (with bias), sigmoid, multiply."""
  return {
      "pool": layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "_se_pool"),
      "reduce": layers.Conv2D(se_channels(channels, se_ratio), 1, name=prefix + "_se_reduce"),
      "act": activation_layer(layers, activation, prefix + "_se_act"),
      "expand": layers.Conv2D(channels, 1, name=prefix + "_se_expand"),
      "gate": layers.Activation("sigmoid", name=prefix + "_se_gate"),
      "mul": layers.Multiply(name=prefix + "_se_mul"),
  }


def apply_squeeze_excite(parts: Dict[str, Any], x):
  gate = parts["gate"](parts["expand"](parts["act"](parts["reduce"](parts["pool"](x)))))
  return parts["mul"]([x, gate])


# ---- cost --------------------------------------------------------------------------------

def conv_bn_cost(in_size: int, in_channels: int, out_channels: int, kernel: int,
                 stride: int) -> Cost:
  """A bias-free kxk convolution followed by BatchNorm."""
  out = out_size(in_size, stride)
  weights = kernel * kernel * in_channels * out_channels
  return Cost(out * out * weights, weights + 2 * out_channels)


def depthwise_bn_cost(in_size: int, channels: int, kernel: int, stride: int) -> Cost:
  out = out_size(in_size, stride)
  weights = kernel * kernel * channels
  return Cost(out * out * weights, weights + 2 * channels)


def squeeze_excite_cost(channels: int, se_ratio: float) -> Cost:
  """Two 1x1 convs with bias on the pooled 1x1 map."""
  squeezed = se_channels(channels, se_ratio)
  macs = 2 * channels * squeezed
  return Cost(macs, macs + squeezed + channels)
