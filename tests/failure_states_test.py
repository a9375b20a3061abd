"""Failures as states: stop signals, the exit-code contract, the directory lock, the
divergence checks (in-process and fast; the programs' own tests start real processes)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from betanas_tf import cli
from betanas_tf import dir_lock
from betanas_tf import divergence
from betanas_tf import errors
from betanas_tf import stop_signal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_at_safe_points_records_the_first_signal_and_ignores_the_next():
  with stop_signal.handling("at_safe_points"):
    assert stop_signal.requested() is None
    stop_signal.check("nothing to stop")   # no signal: no exception
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)    # a second signal while "saving": recorded, ignored
    time.sleep(0.01)
    assert stop_signal.requested() == signal.SIGTERM
    with pytest.raises(stop_signal.Stopped, match="^stopped by SIGTERM at step 7$") as stopped:
      stop_signal.check("stopped by {signal} at step 7")
    assert stopped.value.signum == signal.SIGTERM
  assert stop_signal.requested() is None   # the block is over: handlers and flag restored
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_at_once_raises_in_the_main_thread_and_lets_the_unwinding_finish():
  finished = []
  with pytest.raises(stop_signal.Stopped, match="^stopped by SIGINT$"):
    with stop_signal.handling("at_once"):
      try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
      finally:
        os.kill(os.getpid(), signal.SIGTERM)   # ignored while unwinding
        time.sleep(0.01)
        finished.append(True)
  assert finished == [True]
  with pytest.raises(ValueError, match="mode must be one of at_safe_points, at_once"):
    with stop_signal.handling("later"):
      pass


@pytest.mark.parametrize("failure,status,line", [
    (lambda: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(1), 143,
     "prog: stopped by SIGTERM"),
    (lambda: os.kill(os.getpid(), signal.SIGINT) or time.sleep(1), 130, "prog: stopped by SIGINT"),
    (lambda: (_ for _ in ()).throw(divergence.Diverged("loss nan at step 3")), 3,
     "prog: diverged: loss nan at step 3"),
    (lambda: (_ for _ in ()).throw(dir_lock.DirectoryBusy("/x is in use")), 75,
     "prog: error: /x is in use"),
    (lambda: (_ for _ in ()).throw(ValueError("bad --lr")), 1, "prog: error: bad --lr"),
    (lambda: (_ for _ in ()).throw(KeyError("k")), 1, "prog: error: 'k'"),
    (lambda: (_ for _ in ()).throw(errors.InputError("no such dataset")), 1,
     "prog: error: no such dataset"),
])
def test_exit_code_contract(capsys, failure, status, line):
  @cli.reports_errors("prog", KeyError)
  def main(argv):
    del argv
    failure()
    return 0
  assert main(["prog"]) == status
  assert capsys.readouterr().err == line + "\n"
  assert main(["prog", "extra"]) == 1   # positional arguments are refused before main runs
  assert capsys.readouterr().err == "prog: error: unexpected arguments ['extra']\n"


_HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from betanas_tf import dir_lock
    dir_lock.DirectoryLock({directory!r}).acquire()
    print("held", flush=True)
    time.sleep(60)
""")


def test_a_second_process_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
  directory = str(tmp_path / "run")
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER.format(root=ROOT, directory=directory)],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(dir_lock.DirectoryBusy) as busy:
      dir_lock.DirectoryLock(directory).acquire()
    assert str(busy.value).startswith(f"{directory} is in use by another run (pid {holder.pid} on ")
    assert isinstance(busy.value, cli.TemporaryFailure)
  finally:
    holder.kill()
    holder.wait()
  # SIGKILL: the OS released the lock with the process; the directory is usable at once.
  with dir_lock.DirectoryLock(directory) as lock:
    with dir_lock.DirectoryLock(directory):   # nested in one process (a program, then its library)
      pass
    assert lock._handle is not None   # pylint: disable=protected-access
    assert open(os.path.join(directory, ".lock")).read().startswith(f"pid {os.getpid()} on ")


def test_nonfinite_checks():
  import keras  # pylint: disable=import-outside-toplevel
  good, bad = keras.Variable(np.ones(3, np.float32), name="good"), keras.Variable(
      np.array([1.0, np.nan, 2.0], np.float32), name="bad")
  steps = keras.Variable(np.array([1, 2]), name="steps")   # integers are never "non-finite"
  assert divergence.nonfinite_variables([good, bad, steps]) == [bad.path]
  assert divergence.describe(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"
  divergence.check_finite_outputs(np.zeros((4, 10)), "outputs")
  outputs = np.zeros((4, 10))
  outputs[1, 3], outputs[2, 0] = np.nan, np.inf
  with pytest.raises(divergence.Diverged, match="^int8: 2 of 4 outputs hold NaN or infinity$"):
    divergence.check_finite_outputs(outputs, "int8")


def test_graph_notes_the_first_nonfinite_step_only():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from betanas_tf import arch_params, spaces  # pylint: disable=import-outside-toplevel
  state = arch_params.ArchParameters(spaces.get_space("micro"))
  note = tf.function(state.note_nonfinite)
  note(0, tf.constant([1.0, 2.0]), tf.constant(3, tf.int64))
  assert state.nonfinite.numpy().tolist() == [-1, -1]
  note(1, tf.constant([1.0, np.inf]), tf.constant(5, tf.int64))
  note(1, tf.constant([np.nan]), tf.constant(6, tf.int64))   # the first one stays
  note(0, tf.constant([np.nan]), tf.constant(9, tf.int64))
  assert state.nonfinite.numpy().tolist() == [9, 5]


@pytest.mark.parametrize("args,status,line", [
    (["--nosuch_flag"], 1, "FATAL Flags parsing error: Unknown command line flag 'nosuch_flag'"),
    (["--out_dir=/tmp/never_written", "--max_steps=0"], 1,
     "FATAL Flags parsing error: flag --max_steps=0: 0 is not a positive integer"),
    (["--helpshort"], 1, "  --strategy: <betanas|proxyless|random|spos>: Search strategy (policy)."),
])
def test_a_flag_error_or_help_answers_before_tensorflow_loads(args, status, line):
  # -X importtime lists every module the process imported, on stderr.
  result = subprocess.run([sys.executable, "-X", "importtime", "-m", "betanas_tf.search", *args],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == status
  assert line in (result.stdout + result.stderr).splitlines()
  imported = {l.split("|")[-1].strip() for l in result.stderr.splitlines()
              if l.startswith("import time:")}
  assert "betanas_tf.cli" in imported and "tensorflow" not in imported and "keras" not in imported
