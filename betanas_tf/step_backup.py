"""A Keras fit that saves at the step a stop signal arrives, resumes there, and never
saves a diverged state (retraining's replacement for keras.callbacks.BackupAndRestore).

Keras' BackupAndRestore saves at epoch ends, overwrites its file in place (a kill during
the write loses it), and resumes at the start of the epoch with the data order of the
first epoch. `StepBackup` keeps:

    <directory>/state.json            {"step": S, "weights": "step-S.weights.h5", "random_states":
                                      [...]}: the commit (random states: dropout's seed generators)
    <directory>/step-S.weights.h5     weights and optimizer state after S steps

Each weights file is written under a temporary name and renamed, then state.json is
replaced atomically: whatever kills the process, state.json names a complete file.
Saves happen at every epoch end and at the step where a stop signal arrives
(`stop_signal`); `run_fit` resumes at that step (the rest of the interrupted epoch,
then the following epochs) with the data positioned there by the caller.

Divergence is read at the points where Keras already hands the host the running mean
of the epoch's loss (every `check_every` steps and at epoch ends: a NaN step makes the
mean NaN for the rest of the epoch), and the weights are checked before every save.
With float16 loss scaling a non-finite step is skipped, not divergence, unless no step
of a check interval was applied.
"""

import json
import math
import os
from typing import Callable, Optional

import keras
import numpy as np

from betanas_tf import divergence
from betanas_tf import io_utils
from betanas_tf import stop_signal

STATE_FILE = "state.json"


class StepBackup(keras.callbacks.Callback):
  """Saves the training state at epoch ends and at a stop signal's step (module docstring).

  Args:
    directory: where the state is kept (the run's own; nothing else may write there).
    check_every: steps between the host's divergence checks (and, under several
      workers, their agreement on a stop signal).
    write: False on a worker that is not the chief (it checks, agrees and stops, but
      writes nothing).
    agree: a function (local signal number or 0) -> the largest over the workers; None
      for a single worker (the stop flag is then read after every step, for free).
  """

  def __init__(self, directory: str, check_every: int = 50, write: bool = True,
               agree: Optional[Callable[[int], int]] = None):
    super().__init__()
    self.directory, self.check_every, self.write, self.agree = directory, check_every, write, agree
    self.step = 0              # steps done (host counter, set by `restore`)
    self._epoch_start = 0
    self._iterations_at_check = None

  # ---- state on disk ------------------------------------------------------------------

  def saved_step(self) -> int:
    try:
      with open(os.path.join(self.directory, STATE_FILE)) as handle:
        return int(json.load(handle)["step"])
    except FileNotFoundError:
      return 0

  def restore(self, model) -> int:
    """Loads the newest saved state into `model` (built, compiled); returns its step."""
    path = os.path.join(self.directory, STATE_FILE)
    if not os.path.exists(path):
      self.step = 0
      return 0
    with open(path) as handle:
      state = json.load(handle)
    if model.optimizer is not None and not model.optimizer.built:
      model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(self.directory, state["weights"]))
    for variable, value in zip(_random_states(model), state.get("random_states", [])):
      variable.assign(np.asarray(value, variable.dtype))
    self.step = int(state["step"])
    return self.step

  def save(self, model):
    self._check_weights(model)
    if not self.write:
      return
    os.makedirs(self.directory, exist_ok=True)
    name = f"step-{self.step}.weights.h5"
    temporary = os.path.join(self.directory, f"tmp-{os.getpid()}.weights.h5")
    model.save_weights(temporary, overwrite=True)
    os.replace(temporary, os.path.join(self.directory, name))
    random_states = [np.asarray(keras.ops.convert_to_numpy(v)).tolist()
                     for v in _random_states(model)]
    io_utils.atomic_write_json(os.path.join(self.directory, STATE_FILE),
                               {"step": self.step, "weights": name,
                                "random_states": random_states})
    for other in os.listdir(self.directory):   # older states: state.json no longer names them
      if other.endswith(".weights.h5") and other != name:
        os.unlink(os.path.join(self.directory, other))

  # ---- checks -------------------------------------------------------------------------

  def _kept(self) -> str:
    step = self.saved_step()
    return (f"the last good state (step {step}) is kept in {self.directory}" if step else
            "no state was saved")

  def _check_weights(self, model):
    bad = divergence.nonfinite_variables(model.weights)
    if bad:
      raise divergence.Diverged(f"{divergence.describe(bad)} hold NaN or infinity at step "
                                f"{self.step}; {self._kept()}; no model written")

  def _check_loss(self, logs):
    loss_scale = getattr(self.model.optimizer, "loss_scale", None)
    if loss_scale is not None:
      # (step, applied updates) at the last check: divergence only if steps were taken
      # since and not one of them was applied.
      iterations = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
      before, self._iterations_at_check = self._iterations_at_check, (self.step, iterations)
      if before is not None and self.step > before[0] and iterations == before[1]:
        raise divergence.Diverged(f"no step from step {before[0]} to {self.step} was applied "
                                  f"(every float16 gradient non-finite); {self._kept()}; no "
                                  "model written")
      return
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      raise divergence.Diverged(f"the training loss is not finite by step {self.step} (epoch "
                                f"{self._epoch + 1}); {self._kept()}; no model written")

  # ---- callback -----------------------------------------------------------------------

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch, self._epoch_start = epoch, self.step

  def on_train_batch_end(self, batch, logs=None):
    previous, self.step = self.step, self._epoch_start + batch + 1
    checked = self.step // self.check_every > previous // self.check_every
    if checked:
      self._check_loss(logs)
    local = stop_signal.requested() or 0
    if self.agree is not None:
      signum = self.agree(local) if checked else 0
    else:
      signum = local
    if signum:
      self.save(self.model)
      # Raised, not `stop_training`: Keras would still evaluate the epoch before stopping.
      raise stop_signal.Stopped(signum, f"stopped by {stop_signal.name(signum)} at step "
                                f"{self.step} (epoch {self._epoch + 1}, batch {batch + 1}); state "
                                f"saved in {self.directory}; rerun the same command to resume")

  def on_epoch_end(self, epoch, logs=None):
    self._check_loss(logs)
    self.save(self.model)


def _random_states(model):
  """The model's variables that save_weights leaves out: the seed generators' states of
  dropout and stochastic depth (without them a resume draws other masks)."""
  saved = {id(v) for v in model.weights}
  return [v for v in model.variables if id(v) not in saved]


def run_fit(model, backup: StepBackup, dataset_from: Callable[[int], object], epochs: int,
            steps_per_epoch: int, **fit_args):
  """Fits `model` from the backup's step to `epochs` x `steps_per_epoch`: the rest of an
  interrupted epoch first (as its own fit call), then the following epochs.
  `dataset_from(step)` is the training data positioned at `step`. Raises
  `stop_signal.Stopped` after saving if a stop signal arrived, `divergence.Diverged`
  if the run diverged. `fit_args` go to every fit (callbacks without `backup`, ...)."""
  callbacks = [backup] + list(fit_args.pop("callbacks", []))
  while backup.step < epochs * steps_per_epoch:
    before = backup.step
    epoch, done = divmod(backup.step, steps_per_epoch)
    last = epoch + 1 if done else epochs   # finish the interrupted epoch alone
    model.fit(dataset_from(backup.step), initial_epoch=epoch, epochs=last,
              steps_per_epoch=steps_per_epoch - done if done else steps_per_epoch,
              callbacks=callbacks, **fit_args)
    if backup.step == before:
      raise RuntimeError(f"fit made no step from step {before}")
