"""BatchNorm whose training step is one fused kernel, and the Keras 3 layer set that uses it.

Keras 3's BatchNormalization computes a training step from a dozen small ops (moments,
squared differences, rsqrt, the affine transform) and its gradient from a few dozen more.
In a supernet every candidate has two or three BNs and `tf.switch_case` keeps a forward, a
rewritten forward and a gradient copy of every candidate in the traced graph, so those ops
are a quarter of the search's graph (cifar_mobile: 24k of 95k nodes) and a large part of
the memory TensorFlow spends tracing and instantiating it (docs/benchmarks.md, issue 25).
`FusedBatchNormalization` computes the same training step with TensorFlow's
FusedBatchNormV3 (one op forward, one backward) and keeps Keras 3's semantics (equal to
float32 rounding, tested):
statistics in float32 whatever the compute dtype, the biased batch variance in the moving
variance (the kernel reports the unbiased one; it is scaled back), Keras' momentum
convention, the same variables under the same names. Inference, masks, renorm,
synchronized BN and inputs that are not NHWC images go through Keras' own code.

`LAYERS` is `keras.layers` with this BatchNormalization; `KERAS` offers it as a builder
backend (``layers``, ``Input``, ``Model``). The supernet, its candidates and the standalone
builder make their layers from these, so both sides of every comparison use the same BN.
"""

import types

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="betanas_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization with a fused training step (module docstring)."""

  def _fusable(self, inputs, training, mask) -> bool:
    return (bool(training) and self.trainable and mask is None and not self.renorm
            and not self.synchronized and len(inputs.shape) == 4
            and self.axis in (-1, 3) and self.scale and self.center)

  def call(self, inputs, training=None, mask=None):
    if not self._fusable(inputs, training, mask):
      return super().call(inputs, training=training, mask=mask)
    x = tf.cast(inputs, tf.float32)
    y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
        x, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32),
        epsilon=self.epsilon, data_format="NHWC", is_training=True)
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
    variance = unbiased * tf.maximum(count - 1.0, 0.0) / count
    momentum = self.momentum
    self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
    self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
    return tf.cast(y, self.compute_dtype)


class _Layers:
  """keras.layers, with FusedBatchNormalization as its BatchNormalization."""

  BatchNormalization = FusedBatchNormalization

  def __getattr__(self, name):
    return getattr(keras.layers, name)


LAYERS = _Layers()
KERAS = types.SimpleNamespace(layers=LAYERS, Input=keras.Input, Model=keras.Model)
