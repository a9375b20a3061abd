"""The search engine: one loop, every strategy (see policies.py).

Phase 1 (weights) and Phase 2 (alpha) are separate tf.functions, each wrapping
`strategy.run`, alternated from Python: a Python flag inside one train_step is
frozen at trace time, and `tf.cond` around `apply_gradients` fails under any
tf.distribute strategy (DESIGN.md §3). Paths are sampled on the host from a
generator seeded by (seed, step) and written to a mirrored variable, so every
replica runs the same path and a resumed run replays the same paths.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from betanas_tf import arch_params as ap
from betanas_tf import path_sgd
from betanas_tf import spaces as spaces_lib
from betanas_tf import supernet as supernet_lib
from betanas_tf.policies import Policy

STREAM_PHASE1, STREAM_PHASE2 = 1, 2


@dataclasses.dataclass(frozen=True)
class EngineConfig:
  """Training settings of the supernet (defaults: ProxylessNAS, DESIGN.md §1)."""
  batch_size: int = 64
  arch_batch_size: int = 64
  max_steps: int = 100
  lr: float = 0.05
  lr_warmup_steps: int = 0
  momentum: float = 0.9
  nesterov: bool = True
  weight_decay: float = 4e-5
  label_smoothing: float = 0.1
  arch_lr: float = 1e-3
  arch_beta1: float = 0.0
  arch_beta2: float = 0.999
  arch_epsilon: float = 1e-8
  arch_update_every: int = 5
  arch_warmup_steps: int = 0
  gate_mode: str = "full"
  beta: float = 0.0
  cost_form: str = "linear"
  drop_rule: str = "prob"
  drop_threshold: float = 0.3
  drop_warmup_steps: int = 0
  se_ratio: float = 0.0
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class CostTable:
  """Per-candidate cost of every choice block, plus the fixed parts, in `unit`."""
  fixed: float
  table: np.ndarray      # [L, M_max], 0 where padded
  unit: str              # "MMACs" or "ms"
  target: float = 0.0    # 0: no target
  reference: float = 1.0  # normaliser of the linear term

  def of_choices(self, choices: Sequence[int]) -> float:
    return float(self.fixed + sum(self.table[l, c] for l, c in enumerate(choices)))


def _distribute(strategy: tf.distribute.Strategy, array: np.ndarray):
  """Splits a global batch across replicas (every replica gets an equal slice)."""
  replicas = strategy.num_replicas_in_sync
  if replicas == 1:
    return tf.convert_to_tensor(array)
  if len(array) % replicas:
    raise ValueError(f"global batch {len(array)} is not divisible by {replicas} replicas")
  per = len(array) // replicas
  return strategy.experimental_distribute_values_from_function(
      lambda ctx: tf.convert_to_tensor(array[ctx.replica_id_in_sync_group * per:
                                             (ctx.replica_id_in_sync_group + 1) * per]))


class SearchEngine:
  """Owns the supernet, alpha state, both optimizers and the two step functions."""

  def __init__(self, space: spaces_lib.SearchSpace, policy: Policy, config: EngineConfig,
               costs: CostTable, strategy: Optional[tf.distribute.Strategy] = None):
    self.space, self.policy, self.config, self.costs = space, policy, config, costs
    self.strategy = strategy or tf.distribute.get_strategy()
    self.replicas = self.strategy.num_replicas_in_sync
    for size, name in ((config.batch_size, "batch_size"), (config.arch_batch_size, "arch_batch_size")):
      if size % self.replicas:
        raise ValueError(f"{name} {size} is not divisible by {self.replicas} replicas")
    keras.utils.set_random_seed(config.seed)
    with self.strategy.scope():
      self.supernet = supernet_lib.Supernet(space, se_ratio=config.se_ratio)
      self.arch = ap.ArchParameters(space)
      self.step = keras.Variable(0, dtype="int64", trainable=False, name="step")
      schedule = keras.optimizers.schedules.CosineDecay(
          0.0 if config.lr_warmup_steps else config.lr, max(1, config.max_steps - config.lr_warmup_steps),
          alpha=0.0, warmup_target=config.lr if config.lr_warmup_steps else None,
          warmup_steps=config.lr_warmup_steps)
      self.weight_opt = path_sgd.PathMaskedSGD(learning_rate=schedule, momentum=config.momentum,
                                               nesterov=config.nesterov, l2=config.weight_decay)
      self.weight_opt.bind(self.supernet.trainable_variables, self.arch.path,
                           self.supernet.candidate_variables())
      self.arch_opt = keras.optimizers.Adam(config.arch_lr, beta_1=config.arch_beta1,
                                            beta_2=config.arch_beta2, epsilon=config.arch_epsilon)
      self.arch_opt.build([self.arch.alpha])
    self.loss_fn = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=config.label_smoothing, reduction="none")
    self._cost_table = tf.constant(costs.table, tf.float32)
    self._weight_step = tf.function(self._weight_step_fn)
    self._arch_step = tf.function(self._arch_step_fn)
    self._forward = tf.function(self._forward_fn)

  # ---- checkpointable state -----------------------------------------------

  def checkpoint(self) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(weight_opt=self.weight_opt, arch_opt=self.arch_opt, step=self.step,
                               **supernet_lib.checkpoint_items(self.supernet),
                               **self.arch.checkpoint_items())

  # ---- Phase 1 ---------------------------------------------------------------

  def phase1_path(self, step: int) -> Tuple[int, ...]:
    rng = ap.rng_for(self.config.seed, step, STREAM_PHASE1)
    if self.policy.phase1 == "uniform_active":
      return ap.sample_uniform(self.arch.active_np(), rng)
    if self.policy.phase1 == "uniform_all":
      return ap.sample_uniform(self.arch.valid, rng)
    if self.policy.phase1 == "probability":
      return ap.sample_by_probability(self.arch.probabilities_np(), rng)
    raise ValueError(f"policy {self.policy.name} trains no weights")

  def _loss(self, labels, logits, global_batch):
    onehot = tf.one_hot(labels, self.space.num_classes)
    return tf.reduce_sum(self.loss_fn(onehot, logits)) / global_batch

  def _weight_replica(self, images, labels):
    variables = self.supernet.trainable_variables
    with tf.GradientTape() as tape:
      logits = self.supernet(images, path=self.arch.path, training=True)
      loss = self._loss(labels, logits, self.config.batch_size)
    grads = tape.gradient(loss, variables)
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    self.weight_opt.apply_gradients(zip(grads, variables))
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                                    tf.float32))
    return loss, correct

  def _weight_step_fn(self, images, labels):
    loss, correct = self.strategy.run(self._weight_replica, args=(images, labels))
    reduce = lambda v: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
    return reduce(loss), reduce(correct)

  def weight_step(self, step: int, images: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """One Phase-1 step on the sampled path; returns loss, accuracy and the path."""
    path = self.phase1_path(step)
    self.arch.set_path(path)
    loss, correct = self._weight_step(_distribute(self.strategy, images),
                                      _distribute(self.strategy, labels))
    self.arch.add_counts(path)
    return {"loss": float(loss), "acc": float(correct) / len(labels), "path": path}

  # ---- Phase 2 ---------------------------------------------------------------

  def phase2_sample(self, step: int) -> Tuple[Tuple[int, ...], np.ndarray]:
    """The forward path and the gate set S (all active ops, or a sampled pair)."""
    rng = ap.rng_for(self.config.seed, step, STREAM_PHASE2)
    probs = self.arch.probabilities_np()
    if self.config.gate_mode == "full":
      return ap.sample_by_probability(probs, rng), self.arch.active_np().astype(np.float32)
    gate_set = np.zeros_like(probs, np.float32)
    path = []
    for l, pair in enumerate(ap.sample_pairs(probs, rng)):
      gate_set[l, list(pair)] = 1.0
      pair_probs = probs[l, list(pair)] / probs[l, list(pair)].sum()
      path.append(int(pair[rng.choice(len(pair), p=pair_probs)]))
    return tuple(path), gate_set

  def _gate_gradients(self, block_io, upstream, gate_set, training=True):
    """G[l, m] = <dL/dO_l, o_m(x_l)> for m in the gate set, 0 elsewhere."""
    width = self.arch.valid.shape[1]
    rows = []
    for l, (choice, (x, _)) in enumerate(zip(self.supernet.choices, block_io)):
      row = []
      for m in range(width):
        if m >= choice.choice.num_candidates:
          row.append(tf.constant(0.0))
          continue
        row.append(tf.cond(
            gate_set[l, m] > 0.5,
            lambda m=m, choice=choice, x=x, g=upstream[l]: tf.reduce_sum(
                g * choice.candidate_output(x, m, training=training)),
            lambda: tf.constant(0.0)))
      rows.append(tf.stack(row))
    return tf.stack(rows)

  def _arch_gradient(self, images, labels, gate_set):
    """(dL/dalpha, CE, expected cost, correct) on one replica's share of the batch."""
    with tf.GradientTape() as tape:
      logits, block_io = self.supernet.forward_with_block_io(images, self.arch.path, training=True)
      ce = self._loss(labels, logits, self.config.arch_batch_size)
    upstream = tape.gradient(ce, [out for _, out in block_io])
    gates = self._gate_gradients(block_io, upstream, gate_set)
    alpha, active = self.arch.alpha.value, self.arch.active.value
    with tf.GradientTape() as cost_tape:
      cost_tape.watch(alpha)
      expected = ap.expected_cost(alpha, active, self._cost_table, self.costs.fixed)
      penalty = ap.cost_penalty(expected, self.config.cost_form, self.config.beta,
                                self.costs.target or 1.0, self.costs.reference)
    cost_grad = cost_tape.gradient(penalty, alpha) / self.replicas
    probs_in_set = ap.masked_softmax(alpha, gate_set * active)
    grad = (ap.gate_alpha_gradient(gates, probs_in_set) + cost_grad) * active
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                                    tf.float32))
    return grad, ce, expected, correct

  def _arch_replica(self, images, labels, gate_set):
    grad, ce, expected, correct = self._arch_gradient(images, labels, gate_set)
    self.arch_opt.apply_gradients([(grad, self.arch.alpha)])
    return ce, expected / self.replicas, correct

  def _arch_step_fn(self, images, labels, gate_set):
    # Weights are frozen in Phase 2, BatchNorm statistics included: BN runs in
    # training mode (batch statistics), and its moving averages are restored.
    frozen = [v.value.read_value() for v in self.supernet.non_trainable_variables]
    ce, expected, correct = self.strategy.run(self._arch_replica, args=(images, labels, gate_set))
    for variable, value in zip(self.supernet.non_trainable_variables, frozen):
      variable.assign(value)
    reduce = lambda v: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
    return reduce(ce), reduce(expected), reduce(correct)

  def arch_step(self, step: int, images: np.ndarray, labels: np.ndarray) -> Dict[str, object]:
    """One Phase-2 alpha update, the two-path rescale, then selective drop."""
    path, gate_set = self.phase2_sample(step)
    self.arch.set_path(path)
    before = self.arch.alpha_np()
    ce, expected, correct = self._arch_step(_distribute(self.strategy, images),
                                            _distribute(self.strategy, labels),
                                            tf.constant(gate_set))
    if self.config.gate_mode == "two":
      self._rescale_pairs(before, gate_set > 0.5)
    drops = []
    if self.policy.drop and step >= self.config.drop_warmup_steps:
      for block, op, prob in ap.ops_to_drop(self.arch.alpha_np(), self.arch.active_np(),
                                            self.config.drop_rule, self.config.drop_threshold):
        self.arch.drop(block, op)
        drops.append({"step": step, "block": block, "op": self.space.choice_blocks[block].labels[op],
                      "index": op, "p": prob})
    return {"ce": float(ce), "expected_cost": float(expected), "acc": float(correct) / len(labels),
            "path": path, "drops": drops}

  def _rescale_pairs(self, before: np.ndarray, in_pair: np.ndarray):
    """ProxylessNAS two-path: shift the pair's alphas so the pair keeps its total mass."""
    after = self.arch.alpha_np()
    for l in range(after.shape[0]):
      pair = in_pair[l]
      offset = (np.log(np.exp(after[l, pair]).sum()) - np.log(np.exp(before[l, pair]).sum()))
      after[l, pair] -= offset
    self.arch.alpha.assign(after.astype(np.float32))

  # ---- evaluation --------------------------------------------------------------

  def _forward_fn(self, images, path, training):
    return self.supernet(images, path=path, training=training)

  def _batchnorm_layers(self) -> List[keras.layers.BatchNormalization]:
    return [layer for layer in self.supernet._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]

  def bn_statistics(self) -> List[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for layer in self._batchnorm_layers()
            for v in (layer.moving_mean, layer.moving_variance)]

  def set_bn_statistics(self, values: List[np.ndarray]):
    variables = [v for layer in self._batchnorm_layers() for v in (layer.moving_mean, layer.moving_variance)]
    for variable, value in zip(variables, values):
      variable.assign(value)

  def recalibrate_bn(self, choices: Sequence[int], batches) -> None:
    """Sets every BN moving statistic on the path to its average over `batches` (SPOS).

    Keras BN keeps m <- mu m + (1 - mu) b; from the values before and after a
    training-mode forward we recover the batch statistic b and keep the running
    mean of all b instead. Layers off the path see b == m and stay as they were.
    """
    path = tf.constant(choices, tf.int32)
    momentum = [layer.momentum for layer in self._batchnorm_layers() for _ in range(2)]
    averages = None
    for k, (images, _) in enumerate(batches, start=1):
      before = self.bn_statistics()
      self._forward(tf.constant(images), path, True)
      after = self.bn_statistics()
      stats = [(a - mu * b) / (1 - mu) for a, b, mu in zip(after, before, momentum)]
      averages = stats if averages is None else [avg + (s - avg) / k for avg, s in zip(averages, stats)]
      self.set_bn_statistics(averages)

  def evaluate_path(self, choices: Sequence[int], eval_batches, calibration_batches=None) -> float:
    """Top-1 of the subnet `choices` (BN recalibrated first if batches are given);
    BN statistics are restored afterwards."""
    saved = self.bn_statistics()
    try:
      if calibration_batches is not None:
        self.recalibrate_bn(choices, calibration_batches)
      path = tf.constant(choices, tf.int32)
      correct = total = 0
      for images, labels in eval_batches:
        logits = self._forward(tf.constant(images), path, False)
        correct += int(np.sum(np.argmax(np.asarray(logits), -1) == labels))
        total += len(labels)
      return correct / max(1, total)
    finally:
      self.set_bn_statistics(saved)
