"""Benchmark: supernet step time vs the standalone model of the same path, and memory.

    python -m betanas_tf.bench.step_overhead [--space=cifar_mobile --batch_size=32 --steps=30]

In one process, alternating so that machine noise hits both alike: the median
Phase-1 step of the supernet (tf.switch_case path, path-masked SGD) vs the
median train step of the standalone Keras model of the same sampled path (same
batch, same loss, SGD with the same settings), and the Phase-2 step (full and
two-path gates). Then the peak resident memory of each kind of training, each
in a fresh subprocess. Prints the figures and the ratios.
"""

import json
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
def define_flags():
  """Defines this program's flags (only when it runs as a program, so that importing
  several betanas_tf modules into one process never defines a flag twice)."""
  flags.DEFINE_string("space", "cifar_mobile", "Search space.")
  flags.DEFINE_integer("batch_size", 32, "Batch size.", lower_bound=1)
  flags.DEFINE_integer("steps", 30, "Timed steps of each kind.", lower_bound=3)
  flags.DEFINE_integer("seed", 0, "Seed of the sampled path.")
  flags.DEFINE_enum("measure", "all", ["all", "memory_supernet", "memory_standalone"],
                    "Internal: what this process measures.")


def _setup(build_supernet: bool = True, build_standalone: bool = True):
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from betanas_tf import arch_params, builder, engine, policies, runner, spaces, supernet  # pylint: disable=import-outside-toplevel
  space = spaces.get_space(FLAGS.space)
  config = engine.EngineConfig(batch_size=FLAGS.batch_size, arch_batch_size=FLAGS.batch_size,
                               max_steps=10_000, seed=FLAGS.seed)
  # The path engine.phase1_path(0) samples, computed without building anything.
  width = max(b.num_candidates for b in space.choice_blocks)
  path = arch_params.sample_uniform(
      np.array([[m < b.num_candidates for m in range(width)] for b in space.choice_blocks]),
      arch_params.rng_for(FLAGS.seed, 0, engine.STREAM_PHASE1))
  eng = None
  if build_supernet:
    eng = engine.SearchEngine(space, policies.POLICIES.get("betanas"), config,
                              runner.macs_cost_table(space, 0.0))
    assert eng.phase1_path(0) == path
    eng.arch.set_path(path)
  model = builder.build_model(space.arch_from_choices(path)) if build_standalone else None
  if eng is not None and model is not None:
    supernet.copy_weights_by_name(eng.supernet, model)
  optimizer = keras.optimizers.SGD(config.lr, momentum=config.momentum, nesterov=config.nesterov)
  loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1,
                                                 reduction="none")
  decayed = [v.path.endswith("kernel") for v in model.trainable_variables] if model else []

  @tf.function
  def standalone_step(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = tf.reduce_sum(loss_fn(tf.one_hot(labels, space.num_classes), logits)) / FLAGS.batch_size
    grads = tape.gradient(loss, model.trainable_variables)
    grads = [g + config.weight_decay * v if d else g
             for g, v, d in zip(grads, model.trainable_variables, decayed)]
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  rng = np.random.default_rng(0)
  images = tf.constant(rng.normal(size=(FLAGS.batch_size, space.input_size, space.input_size, 3))
                       .astype(np.float32))
  labels = tf.constant(rng.integers(space.num_classes, size=FLAGS.batch_size).astype(np.int32))
  return eng, standalone_step, images, labels, path


def _time(fn) -> float:
  start = time.perf_counter()
  result = fn()
  if hasattr(result, "numpy"):
    result.numpy()
  elif isinstance(result, tuple):
    [r.numpy() for r in result if hasattr(r, "numpy")]
  return time.perf_counter() - start


def _peak_rss_mb() -> float:
  """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited
  from the parent across fork + exec)."""
  with open("/proc/self/status") as handle:
    for line in handle:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024.0
  raise RuntimeError("no VmHWM in /proc/self/status")


def _memory(kind: str):
  supernet_kind = kind == "memory_supernet"
  eng, standalone_step, images, labels, _ = _setup(supernet_kind, not supernet_kind)
  for _ in range(5):
    if kind == "memory_supernet":
      eng._weight_step(images, labels)
    else:
      standalone_step(images, labels)
  print(json.dumps({"peak_rss_mb": _peak_rss_mb()}))


def main(argv):
  del argv
  if FLAGS.measure != "all":
    _memory(FLAGS.measure)
    return 0
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  eng, standalone_step, images, labels, path = _setup()
  full = tf.constant(eng.arch.active_np().astype(np.float32))
  pairs = np.zeros_like(eng.arch.active_np(), np.float32)
  pairs[:, :2] = 1.0
  pairs = tf.constant(pairs)
  kinds = {
      "phase1_supernet": lambda: eng._weight_step(images, labels),
      "standalone": lambda: standalone_step(images, labels),
      "phase2_full": lambda: eng._arch_step(images, labels, full),
      "phase2_two": lambda: eng._arch_step(images, labels, pairs),
  }
  for fn in kinds.values():  # trace and warm up
    for _ in range(3):
      _time(fn)
  times = {k: [] for k in kinds}
  for _ in range(FLAGS.steps):  # interleaved: noise hits every kind alike
    for kind, fn in kinds.items():
      times[kind].append(_time(fn))
  medians = {k: float(np.median(v)) * 1000 for k, v in times.items()}
  memory = {}
  for kind in ("memory_supernet", "memory_standalone"):
    result = subprocess.run([sys.executable, "-m", "betanas_tf.bench.step_overhead",
                             f"--space={FLAGS.space}", f"--batch_size={FLAGS.batch_size}",
                             f"--seed={FLAGS.seed}", f"--measure={kind}"],
                            capture_output=True, text=True, check=True)
    memory[kind] = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"]
  report = {
      "space": FLAGS.space, "batch_size": FLAGS.batch_size, "steps": FLAGS.steps,
      "path": eng.space.choices_to_string(path), "median_ms": medians,
      "phase1_over_standalone": medians["phase1_supernet"] / medians["standalone"],
      "phase2_full_over_standalone": medians["phase2_full"] / medians["standalone"],
      "phase2_two_over_standalone": medians["phase2_two"] / medians["standalone"],
      "peak_rss_mb": memory,
      "memory_supernet_over_standalone": memory["memory_supernet"] / memory["memory_standalone"],
      "tensorflow": tf.__version__,
  }
  print(f"space {FLAGS.space}, batch {FLAGS.batch_size}, path {report['path']}, "
        f"{FLAGS.steps} interleaved steps each (median):")
  for kind, value in medians.items():
    print(f"  {kind:18s} {value:9.2f} ms")
  print(f"  Phase-1 supernet / standalone : {report['phase1_over_standalone']:.3f}  (goal <= 1.05)")
  print(f"  Phase-2 full / standalone     : {report['phase2_full_over_standalone']:.3f}")
  print(f"  Phase-2 two-path / standalone : {report['phase2_two_over_standalone']:.3f}")
  print(f"  peak RSS: supernet training {memory['memory_supernet']:.0f} MB, standalone "
        f"{memory['memory_standalone']:.0f} MB ({report['memory_supernet_over_standalone']:.2f}x)")
  print("JSON " + json.dumps(report))
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
