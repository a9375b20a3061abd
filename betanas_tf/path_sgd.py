"""SGD that leaves every candidate off the current path exactly as it was.

In graph mode `tf.switch_case` hands unsampled candidates zero gradients, and
plain SGD with momentum would still move them (the momentum slot keeps
pushing; measured). Balanced training means only the sampled ops change, so
this optimizer masks each candidate-owned variable's update by "is my
candidate on the path": off the path, both the variable and its momentum slot
are left bit-identical. Shared variables (stem, fixed blocks, head) update as
in `keras.optimizers.SGD`.

Weight decay is coupled (PyTorch / ProxylessNAS style): ``l2 * w`` is added to
the (already replica-summed) gradient of conv and dense kernels, inside the
update, so off-path kernels do not decay either. Keras' own decoupled
`weight_decay` is refused.
"""

from typing import Iterable, Tuple

import keras
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

  def bind(self, variables, path_variable, candidate_variables: Iterable[Tuple[int, int, object]]):
    """Builds the slots for `variables` and records which candidate owns which variable.

    Args:
      variables: every variable this optimizer will update.
      path_variable: int32 variable [num choice blocks] holding the current path (None
        for a standalone model: then this is SGD with coupled L2).
      candidate_variables: (choice block, candidate, variable) triples.
    """
    self.build(variables)
    self._path = path_variable
    self._decayed = {self._get_variable_index(v) for v in variables if is_decayed(v)}
    for block, candidate, variable in candidate_variables:
      self._owner_by_index[self._get_variable_index(variable)] = (block, candidate)

  def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
    """One tf.cond per candidate (not per variable): off the path nothing runs at all,
    so the variables and their slots keep their bits and the update costs nothing."""
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
    super().update_step(gradient, variable, learning_rate)
    return tf.no_op()

  def get_config(self):
    config = super().get_config()
    config["l2"] = self.l2
    return config


def is_decayed(variable) -> bool:
  """Weight decay on conv and dense kernels only (not BN, not biases)."""
  return variable.path.endswith("kernel")
