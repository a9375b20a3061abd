"""Divergence: a non-finite loss or weight stops a run instead of becoming its result.

A run that diverged (a learning rate typed 1e6, float16 without loss scaling, a broken
dataset) raises `Diverged` naming the step and the quantity; it writes no result file
and no checkpoint from that state, so its last good checkpoint is what a rerun (with
other settings, in a new directory) or a look at the run can start from. Checks here
run on the host at the points where a run already reads the device (log intervals,
checkpoints, the end): the per-step detection lives in the graph (arch_params'
`nonfinite`, the retraining guard's running mean).
"""

from typing import Iterable, List

import numpy as np


class Diverged(RuntimeError):
  """A run diverged; the message names the step and the quantity, and what was kept."""


def nonfinite_variables(variables: Iterable) -> List[str]:
  """Names (paths) of the variables that hold a NaN or an infinity."""
  import keras  # pylint: disable=import-outside-toplevel
  bad = []
  for variable in variables:
    value = np.asarray(keras.ops.convert_to_numpy(variable))
    if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
      bad.append(getattr(variable, "path", None) or getattr(variable, "name", "?"))
  return bad


def describe(names: List[str], limit: int = 3) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_finite_outputs(outputs, what: str):
  """Raises `Diverged` if `outputs` (a model's predictions) hold a non-finite value: no
  parity or agreement check may pass on them."""
  outputs = np.asarray(outputs)
  bad = ~np.isfinite(outputs)
  if bad.any():
    rows = int(bad.reshape(len(outputs), -1).any(axis=1).sum()) if outputs.ndim else 1
    raise Diverged(f"{what}: {rows} of {len(outputs) if outputs.ndim else 1} outputs hold NaN "
                   "or infinity")
