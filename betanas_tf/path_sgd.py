"""SGD that leaves every candidate off the current path exactly as it was.

In graph mode `tf.switch_case` hands unsampled candidates zero gradients, and
plain SGD with momentum would still move them (the momentum slot keeps
pushing; measured). Balanced training means only the sampled ops change, so
this optimizer masks each candidate-owned variable's update by "is my
candidate on the path": off the path, both the variable and its momentum slot
are left bit-identical. Shared variables (stem, fixed blocks, head) update as
in `keras.optimizers.SGD`.

Weight decay is coupled (PyTorch / ProxylessNAS style): the engine adds
``weight_decay * w`` to the gradient of conv and dense kernels before calling
`apply`, so the mask covers it too. Keep Keras' own `weight_decay` unset.
"""

from typing import Iterable, Tuple

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="betanas_tf")
class PathMaskedSGD(keras.optimizers.SGD):
  """keras.optimizers.SGD whose candidate variables update only when on the path."""

  def __init__(self, *args, **kwargs):
    if kwargs.get("weight_decay"):
      raise ValueError("PathMaskedSGD: use coupled weight decay through the gradient, "
                       "not Keras' decoupled weight_decay")
    super().__init__(*args, **kwargs)
    self._owner_by_index = {}
    self._path = None

  def bind(self, variables, path_variable, candidate_variables: Iterable[Tuple[int, int, object]]):
    """Builds the slots for `variables` and records which candidate owns which variable.

    Args:
      variables: every variable this optimizer will update.
      path_variable: int32 variable [num choice blocks] holding the current path.
      candidate_variables: (choice block, candidate, variable) triples.
    """
    self.build(variables)
    self._path = path_variable
    for block, candidate, variable in candidate_variables:
      self._owner_by_index[self._get_variable_index(variable)] = (block, candidate)

  def update_step(self, gradient, variable, learning_rate):
    owner = self._owner_by_index.get(self._get_variable_index(variable))
    if owner is None:
      return super().update_step(gradient, variable, learning_rate)
    block, candidate = owner
    on_path = ops.cast(ops.equal(self._path[block], candidate), variable.dtype)
    learning_rate = ops.cast(learning_rate, variable.dtype)
    gradient = ops.cast(gradient, variable.dtype)
    if self.momentum == 0:
      self.assign_sub(variable, on_path * gradient * learning_rate)
      return
    m = self.momentums[self._get_variable_index(variable)]
    momentum = ops.cast(self.momentum, variable.dtype)
    new_m = m * momentum - gradient * learning_rate
    # m + 0 * (new_m - m) and w + 0 * step are exactly m and w: off-path state is untouched.
    self.assign(m, m + on_path * (new_m - m))
    step = new_m * momentum - gradient * learning_rate if self.nesterov else new_m
    self.assign_add(variable, on_path * step)
