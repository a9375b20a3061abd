"""Benchmark: the supernet's Phase-1 step under fit() vs fit() of the standalone path, memory,
and device->host reads.

    python -m betanas_tf.bench.step_overhead --space=cifar_mobile --batch_size=32   # compute-bound
    python -m betanas_tf.bench.step_overhead --space=micro --batch_size=8           # host-bound
    python -m betanas_tf.bench.step_overhead --space=proxyless_mobile --input_size=224 \
        --batch_size=8 --measure=trace       # trace and first-call seconds, graph nodes

In one process, alternating rounds so that machine noise hits both alike:

* search: `Supernet.fit()` on a tf.data stream of uint8 batches (normalised on the
  device), `steps_per_execution` Phase-1 steps per call of its train function,
  path sampled in the graph, path-masked SGD, counts and step on the device. Only
  the standalone path's ops are left active, so every sampled path is that path:
  the comparison is of the same network's work, not of random paths' costs;
* standalone: `keras.Model.fit()` of the standalone network of the path the search
  samples first, on the same stream (normalised in the pipeline), SGD with the same
  settings and the same `steps_per_execution`.

Each round times `--steps` steps of each after a warm-up fit (tracing excluded). Then
the peak resident memory of each kind of training in a fresh process, and the number
of device->host reads (`EagerTensor._numpy` calls, which every `.numpy()`, `float()`
and `np.asarray` of a tensor or variable goes through) during a search fit of
`--steps` steps with no log interval inside. Prints the figures and the ratios.
"""

import json
import subprocess
import sys
import time

from absl import app
from absl import flags

from betanas_tf.bench import throughput
from betanas_tf import cli

FLAGS = flags.FLAGS


def define_flags():
  """Defines this program's flags (only when it runs as a program)."""
  from betanas_tf import cli  # pylint: disable=import-outside-toplevel
  cli.define_space_flags("cifar_mobile", width_multiplier=False)
  flags.DEFINE_integer("batch_size", 32, "Batch size.", lower_bound=1)
  flags.DEFINE_integer("steps", 30, "Timed steps of each kind per round.", lower_bound=1)
  flags.DEFINE_integer("rounds", 3, "Interleaved rounds.", lower_bound=1)
  flags.DEFINE_integer("steps_per_execution", 5, "Steps per train-function call (both).",
                       lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Seed of the sampled path.")
  flags.DEFINE_enum("measure", "all", ["all", "memory_supernet", "memory_standalone", "trace"],
                    "What this process measures: all (the default), or only the peak RSS of "
                    "one kind of training, or (trace) the seconds to trace the search's train "
                    "function and to instantiate and run its first call, with its graph size.")


def _setup(build_supernet: bool = True, build_standalone: bool = True):
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from betanas_tf import arch_params, builder, cost, engine, path_sgd, policies, spaces  # pylint: disable=import-outside-toplevel
  space = spaces.get_space(FLAGS.space, FLAGS.input_size)
  k = FLAGS.steps_per_execution
  config = engine.EngineConfig(batch_size=FLAGS.batch_size, arch_batch_size=FLAGS.batch_size,
                               max_steps=10**9, seed=FLAGS.seed, arch_update_every=k)
  mean, std = (127.5,) * 3, (64.0,) * 3
  path = tuple(arch_params.sample_uniform(
      space.pad_table([[1.0] * b.num_candidates for b in space.choice_blocks]),
      arch_params.stream_seed(FLAGS.seed, arch_params.STREAM_PHASE1, 0)).numpy().tolist())
  rng = np.random.default_rng(0)
  size = space.input_size
  images = rng.integers(0, 256, (8 * FLAGS.batch_size, size, size, 3)).astype(np.uint8)
  labels = rng.integers(space.num_classes, size=8 * FLAGS.batch_size).astype(np.int32)
  raw = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(FLAGS.batch_size)
  eng = model = None
  if build_supernet:
    eng = engine.SearchEngine(space, policies.POLICIES.get("betanas"), config,
                              cost.macs_cost_table(space), input_mean=mean, input_std=std)
    eng.arch.stop_step.assign(10**9)
    assert tuple(eng.supernet.phase1_path(tf.constant(0, tf.int64)).numpy().tolist()) == path
    # Same work on both sides: only the path's ops stay active, so the search keeps
    # sampling (in the graph, every step) but always draws the standalone network's path.
    eng.arch.active.assign(np.eye(eng.arch.valid.shape[1], dtype=np.float32)[list(path)])
  if build_standalone:
    model = builder.build_model(space.arch_from_choices(path))
    if eng is not None:
      builder.copy_weights_by_name(eng.supernet, model)
    optimizer = path_sgd.PathMaskedSGD(config.lr, momentum=config.momentum, nesterov=config.nesterov,
                                       l2=config.weight_decay)
    optimizer.bind(model.trainable_variables, None, [])
    model.compile(optimizer=optimizer, steps_per_execution=k,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  normalized = raw.map(lambda x, y: ((tf.cast(x, tf.float32) - mean[0]) / std[0], y))
  return eng, model, raw, normalized, path


def _fit_search(eng, raw, steps):
  eng.supernet.fit(raw, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)


def _fit_standalone(model, normalized, steps):
  model.fit(normalized, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)


def _memory(kind: str):
  supernet_kind = kind == "memory_supernet"
  eng, model, raw, normalized, _ = _setup(supernet_kind, not supernet_kind)
  steps = 5 * FLAGS.steps_per_execution
  if supernet_kind:
    _fit_search(eng, raw, steps)
  else:
    _fit_standalone(model, normalized, steps)
  print(json.dumps({"peak_rss_mb": throughput.peak_rss_mb()}))


def _trace():
  """Prints the seconds to trace the search's train function (`--steps_per_execution` steps
  a call) and to instantiate and run its first call, its graph's nodes (the function and its
  library) and the peak RSS."""
  eng, _, raw, _, _ = _setup(True, False)
  function = eng.supernet.make_train_function()
  iterator = iter(eng.distribute(lambda context: raw))
  start = time.perf_counter()
  concrete = function.get_concrete_function(iterator)
  traced = time.perf_counter() - start
  library = concrete.graph.as_graph_def().library.function
  nodes = len(concrete.function_def.node_def) + sum(len(f.node_def) for f in library)
  start = time.perf_counter()
  function(iterator)
  first_call = time.perf_counter() - start
  print(json.dumps({"trace_seconds": traced, "first_call_seconds": first_call,
                    "graph_nodes": nodes, "peak_rss_mb": throughput.peak_rss_mb()}))


class _ReadCounter:
  """Counts device->host reads of eager tensors while active."""

  def __init__(self):
    from tensorflow.python.framework import ops  # pylint: disable=import-outside-toplevel
    self.base, self.count, self.original = ops._EagerTensorBase, 0, None  # pylint: disable=protected-access

  def __enter__(self):
    self.original = self.base._numpy  # pylint: disable=protected-access
    counter = self

    def counted(tensor):
      counter.count += 1
      return counter.original(tensor)

    self.base._numpy = counted  # pylint: disable=protected-access
    return self

  def __exit__(self, *exc):
    self.base._numpy = self.original  # pylint: disable=protected-access


@cli.reports_errors("step_overhead")
def main(argv):
  del argv
  if FLAGS.measure == "trace":
    _trace()
    return 0
  if FLAGS.measure != "all":
    _memory(FLAGS.measure)
    return 0
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  eng, model, raw, normalized, path = _setup()
  k = FLAGS.steps_per_execution
  steps = max(k, FLAGS.steps - FLAGS.steps % k)  # whole executions
  kinds = {"search_phase1": lambda: _fit_search(eng, raw, steps),
           "standalone": lambda: _fit_standalone(model, normalized, steps)}
  for fn in kinds.values():  # trace and warm up
    fn()
  per_step = {name: [] for name in kinds}
  for _ in range(FLAGS.rounds):
    for name, fn in kinds.items():
      start = time.perf_counter()
      fn()
      per_step[name].append((time.perf_counter() - start) / steps * 1000)
  medians = {name: float(np.median(v)) for name, v in per_step.items()}
  with _ReadCounter() as reads:
    _fit_search(eng, raw, steps)
  memory = {}
  for kind in ("memory_supernet", "memory_standalone"):
    result = subprocess.run([sys.executable, "-m", "betanas_tf.bench.step_overhead",
                             f"--space={FLAGS.space}", f"--batch_size={FLAGS.batch_size}",
                             f"--steps_per_execution={k}", f"--seed={FLAGS.seed}",
                             f"--measure={kind}"], capture_output=True, text=True, check=True)
    memory[kind] = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"]
  report = {
      "space": FLAGS.space, "batch_size": FLAGS.batch_size, "steps": steps, "rounds": FLAGS.rounds,
      "steps_per_execution": k, "path": eng.space.choices_to_string(path),
      "median_ms_per_step": medians, "per_round_ms": per_step,
      "search_over_standalone": medians["search_phase1"] / medians["standalone"],
      "device_to_host_reads": {"steps": steps, "reads": reads.count},
      "peak_rss_mb": memory,
      "memory_search_over_standalone": memory["memory_supernet"] / memory["memory_standalone"],
      "tensorflow": tf.__version__,
      "devices": [d.device_type for d in tf.config.list_logical_devices()],
  }
  print(f"space {FLAGS.space}, batch {FLAGS.batch_size}, path {report['path']}, {FLAGS.rounds} "
        f"interleaved rounds of {steps} steps under fit(), {k} steps per execution (median ms/step):")
  for name, value in medians.items():
    print(f"  {name:14s} {value:9.3f} ms")
  print(f"  search Phase 1 / standalone fit : {report['search_over_standalone']:.3f}")
  print(f"  device->host reads in a search fit of {steps} steps: {reads.count}")
  print(f"  peak RSS: search {memory['memory_supernet']:.0f} MB, standalone "
        f"{memory['memory_standalone']:.0f} MB ({report['memory_search_over_standalone']:.2f}x)")
  print("JSON " + json.dumps(report))
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
