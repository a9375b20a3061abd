"""FLOPs of a Keras model as TensorFlow's profiler counts them (a cross-check of cost.py).

The model is traced at batch 1, its variables are frozen into constants, and
`tf.compat.v1.profiler` counts float operations per op type on that graph.
The profiler counts a multiply-accumulate as two operations. Used by the tests (cost.py's
cross-check) only; kept in the package so a user can check a network of their own.
"""

from typing import Dict

import tensorflow as tf
from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import

MAC_OP_TYPES = ("Conv2D", "DepthwiseConv2dNative", "MatMul")


def profiled_flops_by_op_type(model) -> Dict[str, int]:
  """{op type: float operations} of `model` at batch 1, inference mode."""
  spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
  concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
  frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  profile = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(),
                                          cmd="op", options=options)
  # The "op" view is a chain: each node holds one op type's own `float_ops`
  # and the next op type as its only child.
  flops, pending = {}, list(profile.children)
  while pending:
    node = pending.pop()
    flops[node.name] = flops.get(node.name, 0) + int(node.float_ops)
    pending.extend(node.children)
  return flops


def profiled_macs(model) -> int:
  """Multiply-accumulates in Conv2D, depthwise and MatMul ops, as the profiler counts them."""
  flops = profiled_flops_by_op_type(model)
  return sum(flops.get(op, 0) for op in MAC_OP_TYPES) // 2
