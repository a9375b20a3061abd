"""Scoring one subnet of a trained supernet: its BatchNorm statistics recalibrated on training
batches (SPOS practice: a shared BN's statistics mix every path's), then top-1 and
cross-entropy on evaluation batches, on one device or spread over every replica of every
worker. One implementation of the metrics: per batch, in the graph, the sums (correct
predictions, cross-entropy, examples) that a replica holds; the host adds them at the end.
The supernet's BN statistics are restored after every score, so scoring never changes it.
"""

from typing import Dict, Iterable, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf


def batchnorm_layers(model) -> List[keras.layers.BatchNormalization]:
  """Every BatchNormalization layer of `model`, nested ones included, in a fixed order."""
  return [layer for layer in model._flatten_layers(include_self=False, recursive=True)  # pylint: disable=protected-access
          if isinstance(layer, keras.layers.BatchNormalization)]


def bn_statistics_variables(model) -> List[keras.Variable]:
  """The moving mean and variance of every BN layer of `model` (what recalibration sets and
  the alpha step freezes)."""
  return [v for layer in batchnorm_layers(model) for v in (layer.moving_mean, layer.moving_variance)]


class SubnetEvaluator:
  """Scores subnets (`choices`, one candidate index per choice block) of `supernet`, a
  `supernet.Supernet` built in `strategy`'s scope."""

  def __init__(self, supernet, strategy: tf.distribute.Strategy):
    self.supernet, self.strategy = supernet, strategy
    self.replicas = strategy.num_replicas_in_sync
    self._calibration_step = tf.function(self._calibration_step_fn)
    self._sums_step = tf.function(self._sums_fn)
    self._spread_step = tf.function(self._spread_step_fn)

  def _forward(self, images, path, training):
    return self.supernet(self.supernet.normalize(images), path=path, training=training)

  # ---- BatchNorm ----------------------------------------------------------------------

  def bn_statistics(self) -> List[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in bn_statistics_variables(self.supernet)]

  def set_bn_statistics(self, values: List[np.ndarray]):
    for variable, value in zip(bn_statistics_variables(self.supernet), values):
      variable.assign(value)

  def recalibrate_bn(self, choices: Sequence[int], batches: Iterable) -> None:
    """Sets every BN moving statistic on the path to its average over `batches`.

    Keras BN keeps m <- mu m + (1 - mu) b; from the values before and after a
    training-mode forward we recover the batch statistic b and keep the running
    mean of all b instead. Layers off the path see b == m and stay as they were.
    Each batch is one call of a tf.function: the statistics never leave the device.
    """
    path = tf.constant(choices, tf.int32)
    for k, (images, _) in enumerate(batches, start=1):
      self._calibration_step(tf.convert_to_tensor(images), path, tf.constant(k, tf.float32))

  def _calibration_step_fn(self, images, path, k):
    # Automatic control dependencies order the reads, the forward's own updates and the
    # assignments below as written (they touch the same variables).
    variables = bn_statistics_variables(self.supernet)
    momentum = [layer.momentum for layer in batchnorm_layers(self.supernet) for _ in range(2)]
    before = [tf.identity(v.value) for v in variables]
    self._forward(images, path, True)
    for variable, average, mu in zip(variables, before, momentum):
      batch_statistic = (variable.value - mu * average) / (1.0 - mu)
      # The running mean of the batch statistics; at k = 1 it is the first one.
      variable.assign(average + (batch_statistic - average) / k)

  # ---- metrics ------------------------------------------------------------------------

  def evaluate_path(self, choices: Sequence[int], eval_batches: Iterable,
                    calibration_batches: Optional[Iterable] = None) -> float:
    """Top-1 of the subnet `choices` (`evaluate_path_metrics`)."""
    return self.evaluate_path_metrics(choices, eval_batches, calibration_batches)["top1"]

  def evaluate_path_metrics(self, choices: Sequence[int], eval_batches: Iterable,
                            calibration_batches: Optional[Iterable] = None) -> Dict[str, float]:
    """{"top1", "loss" (mean cross-entropy, no smoothing)} of the subnet `choices`, its BN
    recalibrated first if `calibration_batches` are given (and restored afterwards). Under a
    strategy of several replicas (or workers) an `eval_batches` that is a tf.data.Dataset is
    spread over all of them; an iterable of arrays is scored on one device. The same sums
    either way."""
    saved = self.bn_statistics()
    try:
      if calibration_batches is not None:
        self.recalibrate_bn(choices, calibration_batches)
      path = tf.constant(choices, tf.int32)
      if self.replicas > 1 and isinstance(eval_batches, tf.data.Dataset):
        sums = self._spread_sums(eval_batches, path)
      else:
        sums = [self._sums_step(tf.convert_to_tensor(images), tf.convert_to_tensor(labels), path)
                for images, labels in eval_batches]
      correct, loss, total = (np.sum([keras.ops.convert_to_numpy(s) for s in sums], axis=0)
                              if sums else (0.0, 0.0, 0.0))
      return {"top1": float(correct) / max(1.0, total), "loss": float(loss) / max(1.0, total)}
    finally:
      self.set_bn_statistics(saved)

  def _sums_fn(self, images, labels, path):
    """[correct, cross-entropy, examples] of one batch, in float64."""
    logits = tf.cast(self._forward(images, path, False), tf.float64)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int64)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), labels), tf.float64))
    loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    return tf.stack([correct, loss, tf.cast(tf.size(labels), tf.float64)])

  def _spread_sums(self, eval_batches: tf.data.Dataset, path) -> List[tf.Tensor]:
    """Each global batch split between every replica of every worker (the strategy shards
    it), each replica's sums all-reduced. The recalibrated BN statistics were assigned in
    cross-replica context, so every replica holds them. The sums stay on the devices until
    the end."""
    # Shard by element, not by file: every worker then reads the same global batches and
    # takes its share of each, so all run the same number of steps (file sharding of a
    # tfds split would give workers different batch counts and hang the all-reduce).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, self._spread_step(batch, path),
                                 axis=None)
            for batch in self.strategy.experimental_distribute_dataset(
                eval_batches.with_options(options))]

  def _spread_step_fn(self, batch, path):
    return self.strategy.run(lambda images, labels: self._sums_fn(images, labels, path),
                             args=batch)
