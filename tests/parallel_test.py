"""Benchmark stages in single-threaded worker processes: every task runs, failures surface."""

import os

import pytest

from betanas_tf.bench import parallel


def _write_thread_count(path: str):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  with open(path, "w") as handle:
    handle.write(f"{os.getpid()} {tf.config.threading.get_intra_op_parallelism_threads()} "
                 f"{tf.config.threading.get_inter_op_parallelism_threads()}")


def _fail(message: str):
  raise ValueError(message)


@pytest.mark.slow
def test_tasks_run_in_single_threaded_workers_and_a_failure_surfaces(tmp_path):
  paths = [str(tmp_path / f"task{i}") for i in range(3)]
  assert parallel.run_tasks([(_write_thread_count, (p,)) for p in paths], workers=2) == 3
  seen = [open(p).read().split() for p in paths]
  threads = max(1, parallel.available_cores() // 2)
  assert all(s[1:] == [str(threads), str(threads)] for s in seen)
  assert os.getpid() not in {int(s[0]) for s in seen}
  with pytest.raises(ValueError, match="task 1 broke"):
    parallel.run_tasks([(_write_thread_count, (paths[0],)), (_fail, ("task 1 broke",))], workers=2)


def test_one_worker_or_one_task_runs_nothing_here(tmp_path):
  path = str(tmp_path / "never")
  assert parallel.run_tasks([(_write_thread_count, (path,))] * 2, workers=1) == 0
  assert parallel.run_tasks([(_write_thread_count, (path,))], workers=4) == 0
  assert not os.path.exists(path)
