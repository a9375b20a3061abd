"""Mixed precision: the Keras dtype policy a network is built under, and float16's loss scale.

`--mixed_precision=bfloat16|float16|none`. Under a mixed policy the layers compute in the
low precision while their variables stay float32 (Keras' "mixed_bfloat16" /
"mixed_float16" policies); BatchNormalization computes its statistics in float32 (Keras
does). Everything the method itself computes is float32: logits are cast before the
losses and metrics, the gate inner products are summed in float32, alpha, the cost term
and the drop rule never leave float32.

float16 has 5 exponent bits, so small gradients underflow: the loss is multiplied by a
dynamic loss scale before the backward pass and the gradients divided by it after the
all-reduce (`DynamicLossScale`, held by the weight optimizer). A step whose reduced
gradients are not finite changes nothing but the scale: no weight, no momentum, not the
optimizer's iteration count (the learning-rate schedule) and not the Phase-1 counts.
bfloat16 has float32's exponent range and needs no scale.

Exports are float32: a network trained in a mixed precision is saved rebuilt in float32
with the same weights (`float32_copy`).
"""

import contextlib
from typing import Iterator

import keras

from betanas_tf.setting_names import PRECISIONS

_POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

# TensorFlow's and Keras' conventions for dynamic loss scaling (LossScaleOptimizer).
INITIAL_LOSS_SCALE = 2.0 ** 15
GROWTH_INTERVAL = 2000


def check(precision: str) -> str:
  if precision not in PRECISIONS:
    raise ValueError(f"mixed_precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
  return precision


def policy_name(precision: str) -> str:
  """The Keras dtype policy of `precision` ("mixed_bfloat16", ...; "float32" for none)."""
  return _POLICIES[check(precision)]


def needs_loss_scale(precision: str) -> bool:
  return check(precision) == "float16"


@contextlib.contextmanager
def building(precision: str) -> Iterator[None]:
  """Layers constructed inside take `precision`'s dtype policy; the global policy is
  restored afterwards (a layer keeps the policy it was made with)."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(policy_name(precision))
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


class DynamicLossScale:
  """The loss scale of float16 training and its update rule (halve on a non-finite step,
  double after `GROWTH_INTERVAL` finite steps in a row), as variables of an optimizer so
  that checkpoints carry them.

  Args:
    optimizer: the Keras optimizer that owns the variables (built in the strategy's scope).
  """

  def __init__(self, optimizer: keras.optimizers.Optimizer, initial: float = INITIAL_LOSS_SCALE,
               growth_interval: int = GROWTH_INTERVAL):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    self.growth_interval = growth_interval
    self.scale = optimizer.add_variable((), keras.initializers.Constant(initial), "float32",
                                        aggregation="only_first_replica", name="loss_scale")
    self.finite_steps = optimizer.add_variable((), "zeros", "int64",
                                               aggregation="only_first_replica",
                                               name="loss_scale_finite_steps")
    # 1.0 when the last step's reduced gradients were finite (it was applied), else 0.0:
    # what the supernet's train step reads to count (or not) the step's path.
    self.last_finite = optimizer.add_variable((), keras.initializers.Constant(1.0), "float32",
                                              aggregation="only_first_replica",
                                              name="loss_scale_last_finite")
    self._tf = tf

  def unscale(self, grads):
    """(gradients / scale, whether every one is finite) — on replica-summed gradients, so
    every replica reaches the same verdict."""
    tf = self._tf
    inverse = 1.0 / tf.convert_to_tensor(self.scale)
    grads = [g * tf.cast(inverse, g.dtype) for g in grads]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
    return grads, finite

  def update(self, finite):
    """Halve the scale after a non-finite step; double it after `growth_interval` finite
    steps in a row (and restart the count)."""
    tf = self._tf
    steps = tf.convert_to_tensor(self.finite_steps)
    scale = tf.convert_to_tensor(self.scale)
    grow = tf.logical_and(finite, steps + 1 >= self.growth_interval)
    self.scale.assign(tf.where(finite, tf.where(grow, scale * 2.0, scale), scale / 2.0))
    self.finite_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)), steps + 1,
                                      tf.zeros_like(steps)))
    self.last_finite.assign(tf.cast(finite, tf.float32))


def float32_copy(model: keras.Model, build) -> keras.Model:
  """`build()` (which constructs the same network) under float32, with `model`'s weights."""
  with building("none"):
    copy = build()
  copy.set_weights(model.get_weights())
  return copy
