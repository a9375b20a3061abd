"""Independent, disk-cached benchmark stages on every core: one single-threaded process each.

A micro-space network's training step does not get faster with a second TensorFlow thread
(batch 64 at 16 px, measured on 2 cores: 33-34 ms with one intra-op thread or two), while two
single-threaded processes each keep that speed (34.2 ms each, side by side). So the rank
benchmark's stages (a ground-truth seed, a search, a multi-trial search) run as tasks in
`workers` spawned processes, each limited to `threads` TensorFlow threads. Every task writes
its own cached outputs; the caller then reads them through the same sequential code that
would have computed them, so the results do not depend on how many workers made them.
"""

import concurrent.futures
import multiprocessing
import os
from typing import Callable, Optional, Sequence, Tuple


def available_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def _limit_threads(threads: int):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)


def run_tasks(tasks: Sequence[Tuple[Callable, tuple]], workers: int,
              log: Optional[Callable[[str], None]] = None) -> int:
  """Runs each (function, args) of `tasks` in a pool of `workers` spawned processes (TF is
  not fork-safe) with cores // workers threads each; the first task to fail raises here
  after the others are cancelled. With fewer than two workers or tasks nothing runs (the
  caller's own loop computes them). Returns how many tasks ran."""
  if workers < 2 or len(tasks) < 2:
    return 0
  threads = max(1, available_cores() // workers)
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                              initializer=_limit_threads,
                                              initargs=(threads,)) as pool:
    futures = {pool.submit(function, *args): index for index, (function, args) in enumerate(tasks)}
    try:
      for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
        future.result()
        if log:
          log(f"  {done}/{len(tasks)} tasks done in {workers} workers")
    except BaseException:
      # A failed task or a stop signal: nothing more starts, and the tasks in progress
      # are ended now (each writes its result only when it finishes, so it reruns).
      pool.shutdown(wait=False, cancel_futures=True)
      for process in multiprocessing.active_children():
        process.terminate()
      raise
  return len(tasks)
