"""SGD that leaves every candidate off the current path exactly as it was.

In graph mode `tf.switch_case` hands unsampled candidates zero gradients, and
plain SGD with momentum would still move them (the momentum slot keeps
pushing; measured). Balanced training means only the sampled ops change, so
this optimizer masks each candidate-owned variable's update by "is my
candidate on the path": off the path, both the variable and its momentum slot
are left bit-identical. Shared variables (stem, fixed blocks, head) update as
in `keras.optimizers.SGD`.

Under a tf.distribute strategy only the path's gradients cross the replicas:
every choice block packs the gradients of its ON-PATH candidate into one flat
vector (`tf.switch_case` on the path, padded to the block's largest candidate),
and the all-reduce carries those vectors plus the shared variables' gradients,
instead of the zero gradients of every off-path candidate (for proxyless_mobile
the supernet has ~4x the path's parameters). After the reduce each candidate's
gradients are unpacked from its block's vector; only the on-path candidate's
are ever applied.

With `loss_scale=True` (float16, precision.py) the gradients arrive multiplied by the
dynamic loss scale; they are divided by it after the all-reduce, and a step whose reduced
gradients are not finite is skipped whole: no variable, no slot, not `iterations`.

Weight decay is coupled (PyTorch / ProxylessNAS style): ``l2 * w`` is added to
the (already replica-summed) gradient of conv and dense kernels, inside the
update, so off-path kernels do not decay either. Keras' own decoupled
`weight_decay` is refused.
"""

from typing import Iterable, Tuple

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="betanas_tf")
class PathMaskedSGD(keras.optimizers.SGD):
  """keras.optimizers.SGD whose candidate variables update only when on the path."""

  def __init__(self, *args, l2: float = 0.0, **kwargs):
    if kwargs.get("weight_decay"):
      raise ValueError("PathMaskedSGD: use the coupled `l2`, not Keras' decoupled weight_decay")
    super().__init__(*args, **kwargs)
    self.l2 = l2
    self._owner_by_index = {}
    self._decayed = set()
    self._path = None
    self.loss_scale = None

  def bind(self, variables, path_variable, candidate_variables: Iterable[Tuple[int, int, object]],
           loss_scale: bool = False):
    """Builds the slots for `variables` and records which candidate owns which variable.

    Args:
      variables: every variable this optimizer will update.
      path_variable: int32 variable [num choice blocks] holding the current path (None
        for a standalone model: then this is SGD with coupled L2).
      candidate_variables: (choice block, candidate, variable) triples.
      loss_scale: float16 training: gradients come scaled by `self.loss_scale.scale`.
    """
    self.build(variables)
    if loss_scale:
      from betanas_tf import precision  # pylint: disable=import-outside-toplevel
      self.loss_scale = precision.DynamicLossScale(self)
    self._path = path_variable
    self._decayed = {self._get_variable_index(v) for v in variables if is_decayed(v)}
    for block, candidate, variable in candidate_variables:
      self._owner_by_index[self._get_variable_index(variable)] = (block, candidate)

  def scale_loss(self, loss):
    """The loss to differentiate: times the dynamic loss scale under float16 (Keras'
    train step and the supernet's both call this)."""
    if self.loss_scale is None:
      return super().scale_loss(loss)
    return loss * tf.cast(tf.convert_to_tensor(self.loss_scale.scale), loss.dtype)

  def step_applied(self):
    """1.0 if the last step's update was applied, 0.0 if a non-finite loss-scaled step
    was skipped (always 1.0 without a loss scale)."""
    if self.loss_scale is None:
      return tf.constant(1.0)
    return tf.convert_to_tensor(self.loss_scale.last_finite)

  def _candidates_by_block(self, variables):
    """{block: {candidate: [indices into `variables`]}} for the candidate-owned ones."""
    blocks = {}
    for i, variable in enumerate(variables):
      owner = self._owner_by_index.get(self._get_variable_index(variable))
      if owner is not None:
        blocks.setdefault(owner[0], {}).setdefault(owner[1], []).append(i)
    return blocks

  def _backend_update_step(self, grads, trainable_variables, learning_rate):
    replica_context = tf.distribute.get_replica_context()
    strategy = self._distribution_strategy
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if replica_context is None or (replicas == 1 and self.loss_scale is None):
      return super()._backend_update_step(grads, trainable_variables, learning_rate)
    grads = list(grads)
    if replicas > 1 and self._path is not None:
      grads = self._path_all_reduce(replica_context, grads, trainable_variables)
    elif replicas > 1:
      grads = [g for g, _ in self._all_reduce_sum_gradients(zip(grads, trainable_variables))]
    finite = None
    if self.loss_scale is not None:
      grads, finite = self.loss_scale.unscale(grads)
    variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
    tf.__internal__.distribute.interim.maybe_merge_call(
        self._distributed_tf_update_step, strategy, list(zip(grads, variables)), learning_rate,
        finite)

  def _path_all_reduce(self, replica_context, grads, trainable_variables):
    """The replica-summed gradients, only the on-path candidates' crossing the replicas
    (module docstring); off-path candidates get what their block's vector holds for them,
    which is never applied."""
    blocks = self._candidates_by_block(trainable_variables)
    owned = {i for block in blocks.values() for indices in block.values() for i in indices}
    shared = [i for i in range(len(grads)) if i not in owned]
    sizes = [int(np.prod(v.shape)) for v in trainable_variables]
    packed = []
    for block, candidates in sorted(blocks.items()):
      width = max(sum(sizes[i] for i in indices) for indices in candidates.values())
      def pack(indices, width=width):
        flat = tf.concat([tf.reshape(grads[i], [-1]) for i in indices], 0) if indices else tf.zeros([0])
        return tf.pad(flat, [[0, width - sum(sizes[i] for i in indices)]])
      count = max(candidates) + 1
      branches = [lambda m=m: pack(candidates.get(m, [])) for m in range(count)]
      packed.append(tf.switch_case(self._path[block], branches))
    reduced = replica_context.all_reduce(tf.distribute.ReduceOp.SUM,
                                         [grads[i] for i in shared] + packed)
    for i, grad in zip(shared, reduced):
      grads[i] = grad
    for (block, candidates), vector in zip(sorted(blocks.items()), reduced[len(shared):]):
      for indices in candidates.values():
        offset = 0
        for i in indices:
          grads[i] = tf.reshape(vector[offset:offset + sizes[i]], trainable_variables[i].shape)
          offset += sizes[i]
    return grads

  def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate,
                                  finite=None):
    """One tf.cond per candidate (not per variable): off the path nothing runs at all,
    so the variables and their slots keep their bits and the update costs nothing. With
    a loss scale, all of it only when `finite` (the same on every replica)."""
    if finite is None:
      return self._apply_on_path(distribution, grads_and_vars, learning_rate)
    finite = distribution.experimental_local_results(finite)[0]

    def skip():
      # apply() counts every call after this returns: a skipped step must count nothing.
      self.iterations.assign_sub(1)
      return tf.no_op()

    tf.cond(finite, lambda: self._apply_on_path(distribution, grads_and_vars, learning_rate),
            skip)
    self.loss_scale.update(finite)

  def _apply_on_path(self, distribution, grads_and_vars, learning_rate):
    shared, owned = [], {}
    for grad, var in grads_and_vars:
      owner = self._owner_by_index.get(self._get_variable_index(var))
      (owned.setdefault(owner, []) if owner else shared).append((grad, var))

    def apply(pairs):
      for grad, var in pairs:
        distribution.extended.update(var, lambda v, g, lr: self._sgd_update(g, v, lr),
                                     args=(grad, learning_rate), group=False)
      return tf.no_op()

    apply(shared)
    for (block, candidate), pairs in owned.items():
      tf.cond(tf.equal(self._path[block], candidate), lambda pairs=pairs: apply(pairs), tf.no_op)
    return tf.no_op()

  def update_step(self, gradient, variable, learning_rate):
    # Reached only outside tf.distribute's update path (e.g. eager single device).
    owner = self._owner_by_index.get(self._get_variable_index(variable))
    if owner is None:
      return self._sgd_update(gradient, variable, learning_rate)
    block, candidate = owner
    tf.cond(tf.equal(self._path[block], candidate),
            lambda: self._sgd_update(gradient, variable, learning_rate), tf.no_op)

  def _sgd_update(self, gradient, variable, learning_rate):
    if self.l2 and self._get_variable_index(variable) in self._decayed:
      gradient = gradient + tf.cast(self.l2, variable.dtype) * variable
    if self.momentum == 0 or isinstance(gradient, tf.IndexedSlices):
      super().update_step(gradient, variable, learning_rate)
      return tf.no_op()
    # Keras' SGD step (m = m * momentum - lr * g; w += m, or w += m * momentum - lr * g with
    # Nesterov) as the one kernel TensorFlow has for exactly that formula, instead of six
    # ops per variable: the supernet updates ~1,300 variables in one traced graph, so this
    # takes 10k nodes out of it (docs/benchmarks.md, issue 25).
    slot = self.momentums[self._get_variable_index(variable)]
    var = variable.value if isinstance(variable, keras.Variable) else variable
    slot = slot.value if isinstance(slot, keras.Variable) else slot
    tf.raw_ops.ResourceApplyKerasMomentum(
        var=var.handle, accum=slot.handle, lr=tf.cast(learning_rate, var.dtype),
        grad=tf.cast(gradient, var.dtype), momentum=tf.cast(self.momentum, var.dtype),
        use_nesterov=self.nesterov)
    return tf.no_op()

  def get_config(self):
    config = super().get_config()
    config["l2"] = self.l2
    return config


def is_decayed(variable) -> bool:
  """Weight decay on conv and dense kernels only (not BN, not biases)."""
  return variable.path.endswith("kernel")
