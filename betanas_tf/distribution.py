"""tf.distribute strategies by name, and who writes files under multi-worker training.

Under MultiWorkerMirroredStrategy every worker runs the same program: saving a
checkpoint is collective (every worker must call it), but only the chief's copy
is kept; the others write to a private scratch directory they delete afterwards
(TensorFlow's multi-worker guide). History, summary, figures and TensorBoard are
written by the chief alone.
"""

import json
import os
from typing import List

import tensorflow as tf

from betanas_tf import cli

STRATEGIES = cli.DISTRIBUTIONS


def make_strategy(name: str) -> tf.distribute.Strategy:
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multiworker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"distribution must be one of {', '.join(STRATEGIES)}, got {name!r}")


def worker(strategy: tf.distribute.Strategy):
  """(task type, task id) of this process; ("chief"/"worker", 0) when single-worker."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return "worker", 0
  return resolver.task_type, resolver.task_id


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """The chief, or worker 0 when the cluster has no chief task."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type == "chief":
    return True
  return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def scratch_dir(directory: str, strategy: tf.distribute.Strategy) -> str:
  """`directory` for the chief; a per-worker scratch directory beside it for the others."""
  if is_chief(strategy):
    return directory
  task_type, task_id = worker(strategy)
  return os.path.join(os.path.dirname(directory.rstrip("/")), f".scratch_{task_type}_{task_id}",
                      os.path.basename(directory.rstrip("/")))


def cluster_description(strategy: tf.distribute.Strategy) -> dict:
  task_type, task_id = worker(strategy)
  spec = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  return {"workers": sum(len(v) for v in spec.values()) or 1, "task": f"{task_type}:{task_id}",
          "replicas": strategy.num_replicas_in_sync}


def num_workers(strategy: tf.distribute.Strategy) -> int:
  """Worker processes of the strategy's cluster (chief included); 1 without a cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None:
    return 1
  spec = resolver.cluster_spec().as_dict()
  return sum(len(spec.get(job, ())) for job in ("chief", "worker")) or 1


def gather_from_workers(strategy: tf.distribute.Strategy, value: int) -> List[int]:
  """`value` as every replica of every worker holds it, in replica order (one collective
  that every worker must join); [value] when there is one worker."""
  if num_workers(strategy) < 2:
    return [int(value)]

  @tf.function
  def gather():
    def replica_fn():
      context = tf.distribute.get_replica_context()
      return context.all_gather(tf.constant([value], tf.int64), axis=0)
    return strategy.run(replica_fn)

  local = strategy.experimental_local_results(gather())[0]
  return [int(v) for v in local.numpy()]


def max_over_workers(strategy: tf.distribute.Strategy, value: int) -> int:
  """The largest `value` any worker holds (one small all-gather that every worker must
  join: e.g. the number of a stop signal that one of them received, 0 for none);
  `value` itself when there is one worker. The traced function is kept on the strategy,
  so calling it at every log interval traces once."""
  if num_workers(strategy) < 2:
    return int(value)
  reduce = getattr(strategy, "_betanas_max_over_workers", None)
  if reduce is None:
    @tf.function
    def reduce(local):
      def replica_fn(x):   # ReduceOp has no MAX: gather every replica's value instead
        gathered = tf.distribute.get_replica_context().all_gather(tf.reshape(x, [1]), axis=0)
        return tf.reduce_max(gathered)
      return strategy.run(replica_fn, args=(local,))
    strategy._betanas_max_over_workers = reduce  # pylint: disable=protected-access
  result = reduce(tf.constant(int(value), tf.int64))
  return int(strategy.experimental_local_results(result)[0].numpy())


def localhost_tf_configs(workers: int) -> List[str]:
  """TF_CONFIG values, one per worker, of a MultiWorkerMirroredStrategy cluster of `workers`
  processes on this host on free ports (how tests and benchmarks run a cluster here)."""
  import socket  # pylint: disable=import-outside-toplevel
  sockets = [socket.socket() for _ in range(workers)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
          for index in range(workers)]
