"""Test support: kill a search process at a checkpoint, compare two searches' final weights."""

import os
import signal
import subprocess
import time

import numpy as np


def kill_at_checkpoint(command, cwd: str, env, out_dir: str, step: int, timeout: float = 300):
  """Runs `command` and SIGKILLs it as soon as checkpoint `step` is committed in out_dir (its
  files written AND listed in the manager's state file: a kill between the two leaves the
  previous checkpoint the latest, which made the resume start one checkpoint earlier)."""
  process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  state = os.path.join(out_dir, "checkpoints", "checkpoint")

  def committed():
    try:
      with open(state) as handle:
        return f'ckpt-{step}"' in handle.read()
    except OSError:
      return False

  deadline = time.time() + timeout
  while not committed() and process.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def assert_same_supernet_weights(dir_a: str, dir_b: str, atol: float = 1e-6):
  """Every supernet weight of the two runs' latest checkpoints, BN statistics included."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  readers = [tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(d, "checkpoints")))
             for d in (dir_a, dir_b)]
  keys = [k for k in readers[0].get_variable_to_shape_map() if k.startswith("supernet_weights/")]
  assert len(keys) > 100
  for key in keys:
    np.testing.assert_allclose(readers[1].get_tensor(key), readers[0].get_tensor(key), atol=atol)
