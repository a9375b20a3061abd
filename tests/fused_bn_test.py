"""The fused training-mode BatchNorm computes what Keras 3's does; the fused SGD step is Keras'."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from betanas_tf import fused_bn
from betanas_tf import path_sgd


def _pair(dtype_policy="float32"):
  """A Keras BN and a fused one with the same (random) weights, built for NHWC inputs."""
  rng = np.random.default_rng(0)
  layers = [keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, dtype=dtype_policy),
            fused_bn.FusedBatchNormalization(momentum=0.9, epsilon=1e-3, dtype=dtype_policy)]
  weights = [rng.normal(1.0, 0.2, 6), rng.normal(0.0, 0.2, 6), rng.normal(0.0, 0.5, 6),
             rng.uniform(0.5, 2.0, 6)]
  for layer in layers:
    layer.build((None, 5, 5, 6))
    layer.set_weights([w.astype(np.float32) for w in weights])
  return layers


def _step(layer, x):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x, training=True)
    # Not linear per channel (that gradient with respect to x is zero, up to rounding).
    weights = np.random.default_rng(9).normal(size=x.shape).astype(np.float32)
    loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
  grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
  return y, grads


def test_training_step_output_gradients_and_moving_statistics_equal_keras():
  keras_bn, fused = _pair()
  x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (4, 5, 5, 6)), tf.float32)
  initial_variance = fused.moving_variance.numpy()
  (y_keras, g_keras), (y_fused, g_fused) = _step(keras_bn, x), _step(fused, x)
  np.testing.assert_allclose(y_fused.numpy(), y_keras.numpy(), atol=2e-5)
  for a, b in zip(g_fused, g_keras):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5)
  # The moving variance takes the biased batch variance, as Keras' does.
  np.testing.assert_allclose(fused.moving_mean.numpy(), keras_bn.moving_mean.numpy(), atol=1e-6)
  np.testing.assert_allclose(fused.moving_variance.numpy(), keras_bn.moving_variance.numpy(),
                             atol=1e-5)
  batch_var = x.numpy().reshape(-1, 6).var(axis=0)
  np.testing.assert_allclose(fused.moving_variance.numpy(),
                             0.9 * initial_variance + 0.1 * batch_var, rtol=1e-5)
  # Inference is Keras' own code on the moving statistics.
  np.testing.assert_allclose(fused(x, training=False).numpy(),
                             keras_bn(x, training=False).numpy(), atol=1e-5)


def test_bfloat16_computes_statistics_in_float32_like_keras():
  keras_bn, fused = _pair("mixed_bfloat16")
  x = tf.constant(np.random.default_rng(2).normal(0.0, 1.0, (2, 5, 5, 6)), tf.bfloat16)
  y_keras, y_fused = keras_bn(x, training=True), fused(x, training=True)
  assert y_fused.dtype == tf.bfloat16 == y_keras.dtype
  np.testing.assert_allclose(tf.cast(y_fused, tf.float32).numpy(),
                             tf.cast(y_keras, tf.float32).numpy(), atol=0.02)
  assert fused.moving_mean.dtype == "float32"
  np.testing.assert_allclose(fused.moving_mean.numpy(), keras_bn.moving_mean.numpy(), atol=1e-6)


def test_traced_training_step_is_one_fused_op_and_the_layer_round_trips():
  _, fused = _pair()
  graph = tf.function(lambda x: _step(fused, x)).get_concrete_function(
      tf.TensorSpec((4, 5, 5, 6), tf.float32)).graph
  ops = [op.type for op in graph.get_operations()]
  assert ops.count("FusedBatchNormV3") == 1 and ops.count("FusedBatchNormGradV3") == 1
  assert "Rsqrt" not in ops and "SquaredDifference" not in ops
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fused))
  assert type(clone) is fused_bn.FusedBatchNormalization
  assert clone.get_config() == fused.get_config()
  assert fused_bn.LAYERS.BatchNormalization is fused_bn.FusedBatchNormalization
  assert fused_bn.LAYERS.Conv2D is keras.layers.Conv2D


@pytest.mark.parametrize("nesterov", [True, False])
def test_path_masked_sgd_step_is_keras_sgd_step(nesterov):
  rng = np.random.default_rng(3)
  start = rng.normal(size=(3, 4)).astype(np.float32)
  grads = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(3)]
  results = []
  for optimizer in (keras.optimizers.SGD(0.1, momentum=0.9, nesterov=nesterov),
                    path_sgd.PathMaskedSGD(0.1, momentum=0.9, nesterov=nesterov)):
    variable = keras.Variable(start)
    if isinstance(optimizer, path_sgd.PathMaskedSGD):
      optimizer.bind([variable], None, [])
    else:
      optimizer.build([variable])
    # (Not default arguments: tf.function would turn the variable into a tensor.)
    step = tf.function(lambda g: optimizer.apply_gradients([(g, variable)]))  # pylint: disable=cell-var-from-loop
    for g in grads:
      step(tf.constant(g))
    results.append((variable.numpy(), optimizer.momentums[0].numpy()))
  np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-6, atol=1e-7)
  assert not np.allclose(results[1][0], start)
