"""The search engine: one Keras supernet, every strategy (see policies.py).

Phase 1 is `Supernet.train_step` under `fit()`, `arch_update_every` steps per
execution. Phase 2 (alpha) runs between two executions, from the `AlphaSteps`
callback, as its own `tf.function`s around `strategy.run`: `tf.cond` around
`apply_gradients` fails under every tf.distribute strategy, and a Python flag
inside one train step is frozen at trace time (docs/design.md). The supernet's part
of an alpha step is traced once, whatever the number of targets of a family; each
target's sampling and update are small functions of their own. Everything a
step decides is decided in the graph from device state: the Phase-2 path and
gate set come from a stateless RNG keyed by (seed, step), the two-path
rescaling and selective drop are tensor ops on alpha and the active mask, and
the drop log is kept on the device. The host reads state at log intervals only.
"""

import dataclasses
import functools
import math
from typing import Callable, Optional, Sequence

import keras
import tensorflow as tf

from betanas_tf import arch_params as ap
from betanas_tf import cost as cost_lib
from betanas_tf import drop_schedules
from betanas_tf import evaluation
from betanas_tf import path_sgd
from betanas_tf import precision
from betanas_tf import spaces as spaces_lib
from betanas_tf import supernet as supernet_lib
from betanas_tf.policies import Policy


# The settings live in their own TensorFlow-free module (flags are defined from them before
# TensorFlow loads); the engine's callers know them by these names too.
from betanas_tf.engine_config import (ARCH_DATA, ENGINE_LIMITS, GATE_MODES,  # pylint: disable=unused-import,wrong-import-position
                                      EngineConfig, demo_config)


def _alpha_step_at(config: EngineConfig, step: int) -> bool:
  return (step + 1) % config.arch_update_every == 0 and step >= config.arch_warmup_steps


class SearchEngine:
  """Builds the supernet, its two optimizers and the Phase-2 step inside `strategy`.

  Args:
    space, policy, config: what to search and how.
    costs: the Phase-2 cost table (cost.macs_cost_table or latency_table.latency_cost_table).
    strategy: a tf.distribute strategy (default: the current one).
    target_costs: an in-search family: one cost table per target. Phase 2 then keeps one
      alpha per target (`arch_params.TargetAlpha`) on the shared weights, the alpha steps
      taking the targets in turn, each with its own cost term and drops; an op leaves
      Phase 1 only when every target has dropped it.
    input_mean, input_std: the dataset's per-channel pixel normalisation, applied
      on the device (batches arrive as uint8).
  """

  def __init__(self, space: spaces_lib.SearchSpace, policy: Policy, config: EngineConfig,
               costs: cost_lib.CostTable, strategy: Optional[tf.distribute.Strategy] = None,
               input_mean: Sequence[float] = (0.0, 0.0, 0.0),
               input_std: Sequence[float] = (1.0, 1.0, 1.0),
               target_costs: Sequence[cost_lib.CostTable] = ()):
    self.space, self.policy, self.config, self.costs = space, policy, config, costs
    self.strategy = strategy or tf.distribute.get_strategy()
    self.replicas = self.strategy.num_replicas_in_sync
    for size, name in ((config.batch_size, "batch_size"), (config.arch_batch_size, "arch_batch_size")):
      if size % self.replicas:
        raise ValueError(f"{name} {size} is not divisible by {self.replicas} replicas")
    keras.utils.set_random_seed(config.seed)
    with self.strategy.scope(), precision.building(config.mixed_precision):
      self.supernet = supernet_lib.Supernet(
          space, se_ratio=config.se_ratio,
          phase1=policy.phase1 if policy.trains_weights else "uniform_all", seed=config.seed,
          label_smoothing=config.label_smoothing, input_mean=input_mean, input_std=input_std,
          jit_compile=config.jit_compile)
      self.arch = self.supernet.arch
      schedule = keras.optimizers.schedules.CosineDecay(
          0.0 if config.lr_warmup_steps else config.lr, max(1, config.max_steps - config.lr_warmup_steps),
          alpha=0.0, warmup_target=config.lr if config.lr_warmup_steps else None,
          warmup_steps=config.lr_warmup_steps)
      self.weight_opt = path_sgd.PathMaskedSGD(learning_rate=schedule, momentum=config.momentum,
                                               nesterov=config.nesterov, l2=config.weight_decay)
      self.weight_opt.bind(self.supernet.trainable_variables, self.arch.path,
                           self.supernet.candidate_variables(),
                           loss_scale=precision.needs_loss_scale(config.mixed_precision))
      # The loss scale is PathMaskedSGD's own (it must see the path-only all-reduce):
      # no LossScaleOptimizer wrapper.
      self.supernet.compile(optimizer=self.weight_opt, steps_per_execution=config.arch_update_every,
                            auto_scale_loss=False)
      self.arch_opt = keras.optimizers.Adam(config.arch_lr, beta_1=config.arch_beta1,
                                            beta_2=config.arch_beta2, epsilon=config.arch_epsilon)
      self.arch_opt.build([self.arch.alpha])
      self.targets = [ap.TargetAlpha(self.arch.valid, k) for k in range(len(target_costs))]
      self.target_opts = []
      for target in self.targets:
        opt = keras.optimizers.Adam(config.arch_lr, beta_1=config.arch_beta1,
                                    beta_2=config.arch_beta2, epsilon=config.arch_epsilon)
        opt.build([target.alpha])
        self.target_opts.append(opt)
      self.arch_ce = keras.metrics.Mean(name="arch_ce")
      self.arch_accuracy = keras.metrics.SparseCategoricalAccuracy(name="arch_accuracy")
      self.expected_cost = keras.metrics.Mean(name="expected_cost")
    # What one alpha step updates: the search's alpha, or one target's of a family.
    self.phase2_sets = [Phase2Set(self.arch, self.arch_opt, costs)] if not self.targets else [
        Phase2Set(t, opt, c) for t, opt, c in zip(self.targets, self.target_opts, target_costs)]
    self._sample_steps = [tf.function(functools.partial(self._sample_fn, k))
                          for k in range(len(self.phase2_sets))]
    self._supernet_pass = tf.function(self._supernet_pass_fn)
    self._update_steps = [tf.function(functools.partial(self._update_fn, k))
                          for k in range(len(self.phase2_sets))]
    # Scoring subnets (BN recalibrated): evaluation.py.
    self.evaluator = evaluation.SubnetEvaluator(self.supernet, self.strategy)

  # ---- data and state -------------------------------------------------------------

  def distribute(self, dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset]):
    """Per-worker input: `dataset_fn(input_context)` gives this worker's shard in
    per-replica batches; the strategy prefetches it to the devices."""
    return self.strategy.distribute_datasets_from_function(
        dataset_fn, tf.distribute.InputOptions(experimental_fetch_to_device=True))

  def checkpoint(self) -> tf.train.Checkpoint:
    family = {}
    for target, opt in zip(self.targets, self.target_opts):
      family.update(target.checkpoint_items())
      family[f"arch_opt_target{target.index}"] = opt
    return tf.train.Checkpoint(weight_opt=self.weight_opt, arch_opt=self.arch_opt,
                               **self.supernet.checkpoint_items(), **family)

  def metrics(self) -> dict:
    """Running means since the last `reset_metrics` (a read of the device: call it
    at log intervals, on every worker at once under multi-worker)."""
    values = {"phase1/loss": self.supernet.phase1_loss, "phase1/accuracy": self.supernet.phase1_accuracy,
              "phase2/ce": self.arch_ce, "phase2/accuracy": self.arch_accuracy,
              "phase2/expected_cost": self.expected_cost}
    return {name: float(m.result()) for name, m in values.items()}

  def reset_metrics(self):
    for metric in (self.supernet.phase1_loss, self.supernet.phase1_accuracy, self.arch_ce,
                   self.arch_accuracy, self.expected_cost):
      metric.reset_state()

  # ---- the search loop --------------------------------------------------------------

  def search(self, train, arch_dataset_fn, start: int, callbacks: Sequence[keras.callbacks.Callback] = ()):
    """Runs Phase 1 from `start` to `config.max_steps` under `fit()`, with alpha steps
    between executions (policy permitting).

    Args:
      train: the distributed Phase-1 dataset, positioned at `start` (`distribute(...)`).
      arch_dataset_fn: arch_step_index -> an InputContext function of the arch split,
        positioned there; only called when the first alpha step is due.
      start: the step the state (and `train`) is at.
      callbacks: more Keras callbacks; they run after the alpha step of a boundary.
    """
    config = self.config
    if start >= config.max_steps:
      return
    self.arch.stop_step.assign(config.max_steps)
    executions = math.ceil((config.max_steps - start) / config.arch_update_every)
    alpha = AlphaSteps(self, arch_dataset_fn, start)
    self.supernet.fit(train, epochs=1, steps_per_epoch=executions * config.arch_update_every,
                      verbose=0, shuffle=False, callbacks=[alpha, *callbacks])

  # ---- Phase 2 -------------------------------------------------------------------------

  def phase2_sample(self, step, k: int = 0):
    """The forward path and the gate set S (every active op, or a sampled pair), by the
    alpha of `phase2_sets[k]`."""
    seed = ap.stream_seed(self.config.seed, ap.STREAM_PHASE2, step)
    alphas = self.phase2_sets[k].alphas
    alpha, active = tf.convert_to_tensor(alphas.alpha), tf.convert_to_tensor(alphas.active)
    if self.config.gate_mode == "full":
      return ap.sample_by_probability(alpha, active, seed), active
    pair_seed = tf.random.experimental.stateless_fold_in(seed, 0)
    pick_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    gate_set = ap.sample_pairs(alpha, active, pair_seed)
    return ap.sample_by_probability(alpha, gate_set, pick_seed), gate_set

  def _gate_gradients(self, block_io, upstream, gate_set, training=True):
    """G[l, m] = <dL/dO_l, o_m(x_l)> for m in the gate set, 0 elsewhere (summed in
    float32 whatever the precision the blocks compute in)."""
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
                tf.cast(g, tf.float32)
                * tf.cast(choice.candidate_output(x, m, training=training), tf.float32)),
            lambda: tf.constant(0.0)))
      rows.append(tf.stack(row))
    return tf.stack(rows)

  def supernet_gates(self, images, labels, gate_set):
    """The supernet's part of an alpha step, the same for every target of a family: (the
    gate gradients G [L, M] of `_gate_gradients`, per-example CE, logits) on one replica's
    share of the batch, on the path in `arch.path`; images are raw pixels."""
    with tf.GradientTape() as tape:
      logits, block_io = self.supernet.forward_with_block_io(
          self.supernet.normalize(images), self.arch.path, training=True)
      per_example = self.supernet.cross_entropy(labels, logits,
                                                smoothing=self.config.arch_data == "train")
      ce = tf.reduce_mean(per_example) / self.replicas
      # float16: the weight optimizer's loss scale keeps dL/dO_l from underflowing.
      scale = (tf.convert_to_tensor(self.weight_opt.loss_scale.scale)
               if self.weight_opt.loss_scale is not None else tf.constant(1.0))
      scaled = ce * scale
    upstream = tape.gradient(scaled, [out for _, out in block_io])
    gates = self._gate_gradients(block_io, upstream, gate_set) / scale
    # An overflowed float16 step adds no gate gradient of this replica (only the cost
    # term's gradient then moves alpha).
    gates = tf.where(tf.reduce_all(tf.math.is_finite(gates)), gates, tf.zeros_like(gates))
    return gates, per_example, logits

  def alpha_gradient(self, gates, gate_set, k: int = 0):
    """(dL/dalpha, expected cost) of `phase2_sets[k]` from one replica's gate gradients:
    the binary-gate term through the softmax over the gate set, plus the cost term."""
    phase2 = self.phase2_sets[k]
    alpha = tf.convert_to_tensor(phase2.alphas.alpha)
    active = tf.convert_to_tensor(phase2.alphas.active)
    with tf.GradientTape() as cost_tape:
      cost_tape.watch(alpha)
      expected = ap.expected_cost(alpha, active, phase2.table, phase2.costs.fixed)
      penalty = ap.cost_penalty(expected, self.config.cost_form, self.config.beta,
                                phase2.costs.target or 1.0, phase2.costs.reference)
    cost_grad = cost_tape.gradient(penalty, alpha) / self.replicas
    probs_in_set = ap.masked_softmax(alpha, gate_set * active)
    grad = (ap.gate_alpha_gradient(gates, probs_in_set) + cost_grad) * active
    return grad, expected

  def arch_gradient(self, images, labels, gate_set, k: int = 0):
    """(dL/dalpha, per-example CE, expected cost, logits) on one replica's share of
    the batch, on the path in `arch.path`, for the alpha and cost of `phase2_sets[k]`;
    images are raw pixels (`supernet_gates`, then `alpha_gradient`)."""
    gates, per_example, logits = self.supernet_gates(images, labels, gate_set)
    grad, expected = self.alpha_gradient(gates, gate_set, k)
    return grad, per_example, expected, logits

  # An alpha step is three traced functions: the target's sampling, the supernet's pass (one
  # trace whatever the number of targets: it is the big graph), and the target's update.
  # The gate gradients cross from the second to the third per replica, on the devices.

  def _sample_fn(self, k, step):
    path, gate_set = self.phase2_sample(step, k)
    self.arch.path.assign(path)
    return gate_set

  def _supernet_replica(self, data, gate_set, step):
    images, labels = data
    gates, per_example, logits = self.supernet_gates(images, labels, gate_set)
    if self.weight_opt.loss_scale is None:   # float16 drops such a step's gate gradient
      self.arch.note_nonfinite(1, per_example, step)
    self.arch_ce.update_state(per_example)
    self.arch_accuracy.update_state(labels, logits)
    return gates

  def _supernet_pass_fn(self, iterator, gate_set, step):
    # Weights are frozen in Phase 2, BatchNorm statistics included: BN runs in
    # training mode (batch statistics), and its moving averages are restored.
    statistics = evaluation.bn_statistics_variables(self.supernet)
    frozen = [tf.identity(tf.convert_to_tensor(v)) for v in statistics]
    with tf.control_dependencies(frozen):
      gates = self.strategy.run(self._supernet_replica, args=(next(iterator), gate_set, step))
    for variable, value in zip(statistics, frozen):
      variable.assign(value)
    return gates

  def _update_replica(self, gates, gate_set, k):
    grad, expected = self.alpha_gradient(gates, gate_set, k)
    phase2 = self.phase2_sets[k]
    phase2.opt.apply_gradients([(grad, phase2.alphas.alpha)])
    self.expected_cost.update_state(expected)

  def _update_fn(self, k, gates, gate_set, step):
    arch = self.phase2_sets[k].alphas   # the search's parameters, or target k's
    before = tf.convert_to_tensor(arch.alpha)
    self.strategy.run(self._update_replica, args=(gates, gate_set, k))
    if self.config.gate_mode == "two":
      # ProxylessNAS two-path: shift the pair's alphas so the pair keeps its total mass.
      after = tf.convert_to_tensor(arch.alpha)
      pair = gate_set * tf.convert_to_tensor(arch.active) > 0.5
      logsumexp = lambda a: tf.reduce_logsumexp(tf.where(pair, a, ap.NEG_INF), axis=1, keepdims=True)
      arch.alpha.assign(tf.where(pair, after - (logsumexp(after) - logsumexp(before)), after))
    if self.policy.drop:
      alpha, active = tf.convert_to_tensor(arch.alpha), tf.convert_to_tensor(arch.active)
      schedule = drop_schedules.DROP_SCHEDULES.get(self.config.drop_schedule)
      dropped = schedule.dropped(alpha, active, step, self.config)
      now = dropped > 0.5
      arch.p_at_drop.assign(tf.where(now, ap.masked_softmax(alpha, active), arch.p_at_drop))
      arch.dropped_at.assign(tf.where(now, tf.cast(step, tf.int64), arch.dropped_at))
      arch.active.assign(active * (1.0 - dropped))
      if self.targets:   # Phase 1 trains what any target keeps
        self.arch.active.assign(tf.reduce_max(tf.stack(
            [tf.convert_to_tensor(t.active) for t in self.targets]), axis=0))

  def arch_step(self, iterator, step: int):
    """One Phase-2 alpha update on the next batch of `iterator` (a distributed
    iterator of the arch split), the two-path rescale, then selective drop. In a family
    the targets take the alpha steps in turn (the same order after a resume)."""
    k = self.config.arch_steps_before(step) % len(self.phase2_sets)
    step = tf.constant(step, tf.int64)
    gate_set = self._sample_steps[k](step)
    gates = self._supernet_pass(iterator, gate_set, step)
    self._update_steps[k](gates, gate_set, step)


@dataclasses.dataclass
class Phase2Set:
  """What one alpha step updates: an alpha with its active mask and drop log (the
  search's `ArchParameters`, or a family target's `TargetAlpha`), its Adam and its cost."""
  alphas: object
  opt: keras.optimizers.Optimizer
  costs: cost_lib.CostTable

  @property
  def table(self):
    return tf.constant(self.costs.table, tf.float32)


class AlphaSteps(keras.callbacks.Callback):
  """Runs the Phase-2 alpha step after every execution of `arch_update_every`
  Phase-1 steps, once past `arch_warmup_steps`. The step number comes from the
  run's start and Keras' batch counter, never from the device; the arch split's
  iterator is made when the first alpha step is due, positioned at the number of
  alpha steps already taken."""

  def __init__(self, engine: SearchEngine, arch_dataset_fn, start: int):
    super().__init__()
    self.engine, self.arch_dataset_fn, self.start = engine, arch_dataset_fn, start
    self.iterator = None

  def steps_done(self, batch: int) -> int:
    return min(self.start + batch + 1, self.engine.config.max_steps)

  def on_train_batch_end(self, batch, logs=None):
    engine = self.engine
    step = self.steps_done(batch) - 1
    if not engine.policy.phase2 or not _alpha_step_at(engine.config, step):
      return
    if self.iterator is None:
      position = engine.config.arch_steps_before(step)
      self.iterator = iter(engine.distribute(self.arch_dataset_fn(position)))
    engine.arch_step(self.iterator, step)
