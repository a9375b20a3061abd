"""Stop signals (SIGTERM, SIGINT): a run told to stop saves where it is and says so.

Schedulers (Kubernetes, Slurm, spot VMs) send SIGTERM and then SIGKILL after a grace
period; a user presses Ctrl-C (SIGINT). A program decides how it stops by the way it
installs the handlers (`handling`, installed by `cli.reports_errors`):

* ``at_safe_points``: the first signal only records its number; the library polls
  `requested()` at its safe points (a search after each execution of its steps, a
  retraining after each step), saves there and raises `Stopped`. Later signals are
  recorded and ignored, so a second Ctrl-C cannot interrupt the save it is waiting for.
* ``at_once``: the first signal raises `Stopped` in the main thread at once (what a
  program whose work is short, or is a list of tasks that rerun whole, wants); later
  signals are ignored while it unwinds, so `finally` blocks and atomic writes finish.

The library never installs handlers: a Python caller keeps Python's own behaviour
(KeyboardInterrupt) unless it uses `handling` itself.
"""

import contextlib
import signal
from typing import Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)
MODES = ("at_safe_points", "at_once")

_received: Optional[int] = None   # the first signal's number, while `handling` is active
_handler = None                   # the handler `handling` installed, while it is active


class Stopped(Exception):
  """A run stopped on a signal. `signum` gives the exit status 128 + signum (143 for
  SIGTERM, 130 for SIGINT); the message says what was kept and how to go on."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum


def name(signum: int) -> str:
  return signal.Signals(signum).name


def requested() -> Optional[int]:
  """The number of the first stop signal received under `handling`, else None."""
  return _received


def request(signum: int = signal.SIGTERM):
  """Records a stop request as a signal would (for a program's own watchdog, and tests)."""
  global _received
  if _received is None:
    _received = int(signum)


def check(message: str):
  """Raises `Stopped` with `message` (where the run stopped, what it kept) if a stop was
  requested: a safe point of a run that keeps nothing more than it already wrote."""
  if _received is not None:
    raise Stopped(_received, message.format(signal=name(_received)))


@contextlib.contextmanager
def handling(mode: str = "at_safe_points") -> Iterator[None]:
  """Installs the SIGTERM and SIGINT handlers of `mode` for the block, then restores the
  previous ones. Only the main thread can install handlers: elsewhere it does nothing."""
  global _received
  if mode not in MODES:
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")

  def on_signal(signum, frame):
    del frame
    global _received
    if _received is not None:
      return   # already stopping: the save or the unwinding in progress must finish
    _received = signum
    if mode == "at_once":
      raise Stopped(signum, f"stopped by {name(signum)}")

  global _handler
  try:
    previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
  except ValueError:   # not the main thread
    yield
    return
  _received, _handler = None, on_signal
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    _received, _handler = None, None


def reinstall():
  """Installs `handling`'s handlers again, if it is active. TensorFlow's multi-worker
  coordination service installs a SIGTERM handler of its own in C++ when the strategy is
  made (its preemption notifier), which silently replaces Python's: call this after."""
  if _handler is not None:
    for s in SIGNALS:
      signal.signal(s, _handler)
