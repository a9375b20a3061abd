"""Benchmark: training throughput per device, in any precision, on CPU or GPUs unchanged.

    python -m betanas_tf.bench.throughput --space=micro --batch_size=64
    python -m betanas_tf.bench.throughput --space=proxyless_mobile --batch_size=256 \\
        --distribution=mirrored --mixed_precision=bfloat16 [--jit_compile]     # your GPUs

Measures, after a warm-up (tracing excluded), with synthetic uint8 batches already in
memory so that the steps are timed and not the disk:

* the Phase-1 step of the search (`Supernet.fit`, `steps_per_execution` steps a call):
  images/s per replica;
* the Phase-2 alpha step (binary gates over every active op): milliseconds a step;
* the retraining step of the space's costliest network (`train.compile_with_recipe`,
  with `--jit_compile` if given): images/s per replica (`--jit_compile_supernet`
  compiles the Phase-1 step's compute too);
* beside them, the input pipeline the search reads (`--dataset`'s training split,
  decoded and augmented as in a search): images/s on this host's CPUs;
* peak device memory of each kind of step where TensorFlow reports it (GPUs), this
  process's peak resident memory, and the device names.

The step timings end with a read of a variable, so a GPU's queued work is included.
Prints a markdown table and a JSON line.
"""

import json
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
  """Defines this program's flags (only when it runs as a program)."""
  from betanas_tf import cli  # pylint: disable=import-outside-toplevel
  cli.define_space_flags("micro", width_multiplier=False)
  flags.DEFINE_integer("batch_size", 64, "Global batch (divisible by the replicas).",
                       lower_bound=1)
  flags.DEFINE_integer("steps", 20, "Timed Phase-1 / retraining steps (whole executions).",
                       lower_bound=1)
  flags.DEFINE_integer("alpha_steps", 5, "Timed alpha steps.", lower_bound=1)
  flags.DEFINE_integer("steps_per_execution", 5, "Phase-1 steps per call (the search's "
                       "arch_update_every).", lower_bound=1)
  flags.DEFINE_bool("jit_compile", False, "Compile the retraining step with XLA.")
  flags.DEFINE_bool("jit_compile_supernet", False, "Compile the Phase-1 step's forward and "
                    "backward pass with XLA (minutes of compilation even for micro on a CPU).")
  cli.define_precision_flag()
  cli.define_distribution_flag()
  cli.define_data_flags(default="synthetic", help_text="Dataset whose input pipeline is timed")
  flags.DEFINE_integer("pipeline_batches", 20, "Timed batches of the input pipeline.",
                       lower_bound=1)


def peak_rss_mb() -> float:
  """This process's peak resident memory (VmHWM: not inherited across fork + exec)."""
  with open("/proc/self/status") as handle:
    for line in handle:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024.0
  return float("nan")


class DeviceMemory:
  """Peak memory of the accelerators TensorFlow reports it for (None on CPU only)."""

  def __init__(self, tf):
    self.tf = tf
    self.devices = [d.name.replace("/device:", "").replace("/physical_device:", "")
                    for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "TPU")]

  def reset(self):
    for device in self.devices:
      self.tf.config.experimental.reset_memory_stats(device)

  def peak_mb(self):
    if not self.devices:
      return None
    return max(self.tf.config.experimental.get_memory_info(d)["peak"] for d in self.devices) / 2**20


def _timed(run, sync, repeats: int = 1) -> float:
  """Seconds of `run()` (after one untimed call), the device drained by `sync()`."""
  run()
  sync()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    sync()
    best = min(best, time.perf_counter() - start)
  return best


def measure(space_name: str, input_size, batch_size: int, steps: int, alpha_steps: int,
            per_execution: int, mixed_precision: str, jit_compile: bool, distribution: str,
            data_source, pipeline_batches: int, jit_compile_supernet: bool = False) -> dict:
  """The figures of the module docstring, as a dict."""
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from betanas_tf import cost, distribution as distribution_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import builder, engine, policies, precision, spaces, train  # pylint: disable=import-outside-toplevel
  strategy = distribution_lib.make_strategy(distribution)
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    raise ValueError(f"--batch_size {batch_size} is not divisible by {replicas} replicas")
  space = spaces.get_space(space_name, input_size)
  steps = per_execution * max(1, steps // per_execution)
  memory = DeviceMemory(tf)
  rng = np.random.default_rng(0)
  size = space.input_size
  images = rng.integers(0, 256, (batch_size, size, size, 3)).astype(np.uint8)
  labels = rng.integers(space.num_classes, size=batch_size).astype(np.int32)
  raw = tf.data.Dataset.from_tensors((images, labels)).repeat()
  config = engine.EngineConfig(batch_size=batch_size, arch_batch_size=batch_size,
                               max_steps=10**9, arch_update_every=per_execution,
                               mixed_precision=mixed_precision, jit_compile=jit_compile_supernet)
  eng = engine.SearchEngine(space, policies.POLICIES.get("betanas"), config,
                            cost.macs_cost_table(space), strategy, (127.5,) * 3, (64.0,) * 3)
  eng.arch.stop_step.assign(10**9)
  per_replica = lambda ctx: raw.unbatch().batch(ctx.get_per_replica_batch_size(batch_size))
  train_stream = eng.distribute(per_replica)
  read_alpha = lambda: keras.ops.convert_to_numpy(eng.arch.alpha)
  read_step = lambda: eng.arch.step_np()
  fit = lambda: eng.supernet.fit(train_stream, epochs=1, steps_per_epoch=steps, verbose=0,
                                 shuffle=False)
  results = {}
  memory.reset()
  seconds = _timed(fit, read_step, repeats=2)
  results["phase1_images_per_s_per_replica"] = steps * batch_size / seconds / replicas
  results["phase1_peak_mb"] = memory.peak_mb()
  arch_iterator = iter(eng.distribute(per_replica))
  counter = iter(range(10**9))
  alpha = lambda: [eng.arch_step(arch_iterator, next(counter)) for _ in range(alpha_steps)]
  memory.reset()
  seconds = _timed(alpha, read_alpha, repeats=2)
  results["alpha_ms_per_step"] = seconds / alpha_steps * 1000
  results["alpha_peak_mb"] = memory.peak_mb()
  # Retraining: the costliest network of the space, the paper's recipe.
  costliest = [int(np.argmax(row)) for row in cost.space_costs(space).macs_table()]
  arch = space.arch_from_choices(costliest)
  recipe = train.TrainConfig(epochs=1, batch_size=batch_size, mixed_precision=mixed_precision,
                             jit_compile=jit_compile, warmup_epochs=0.0)
  with strategy.scope():
    with precision.building(mixed_precision):
      model = builder.build_model(arch)
    train.compile_with_recipe(model, recipe, steps)
  normalized = raw.map(lambda x, y: ((tf.cast(x, tf.float32) - 127.5) / 64.0,
                                     tf.one_hot(y, space.num_classes))).unbatch().batch(batch_size)
  retrain = lambda: model.fit(normalized, epochs=1, steps_per_epoch=steps, verbose=0)
  memory.reset()
  seconds = _timed(retrain, lambda: keras.ops.convert_to_numpy(model.optimizer.iterations),
                   repeats=2)
  results["retrain_images_per_s_per_replica"] = steps * batch_size / seconds / replicas
  results["retrain_peak_mb"] = memory.peak_mb()
  # The input pipeline a search reads, on the host.
  dataset = data_source.load(space.input_size, 0, space.num_classes)
  pipeline = iter(dataset.train.train_dataset(batch_size, 0, seed=0).repeat())
  next(pipeline)
  start = time.perf_counter()
  for _ in range(pipeline_batches):
    next(pipeline)
  results["pipeline_images_per_s"] = pipeline_batches * batch_size / (time.perf_counter() - start)
  results.update(
      space=space.name, input_size=space.input_size, batch_size=batch_size, replicas=replicas,
      steps=steps, steps_per_execution=per_execution, mixed_precision=mixed_precision,
      jit_compile=jit_compile, jit_compile_supernet=jit_compile_supernet,
      distribution=distribution, dataset=dataset.name,
      retrain_arch=space.choices_to_string(costliest), peak_rss_mb=peak_rss_mb(),
      devices=[f"{d.name} ({d.device_type})" for d in tf.config.list_logical_devices()
               if d.device_type != "TPU_SYSTEM"],
      tensorflow=tf.__version__)
  return results


def table(results: dict) -> str:
  """The figures as one markdown row (with its header)."""
  mb = lambda v: "n/a" if v is None else f"{v:.0f}"
  header = ("| space | px | batch | replicas | precision | XLA (P1 / retrain) | Phase 1 img/s/replica "
            "| alpha ms/step | retrain img/s/replica | pipeline img/s | peak device MB "
            "(P1 / alpha / retrain) | peak RSS MB |\n|" + "---|" * 12)
  r = results
  row = (f"| {r['space']} | {r['input_size']} | {r['batch_size']} | {r['replicas']} | "
         f"{r['mixed_precision']} | {'yes' if r['jit_compile_supernet'] else 'no'} / "
         f"{'yes' if r['jit_compile'] else 'no'} | "
         f"{r['phase1_images_per_s_per_replica']:.0f} | {r['alpha_ms_per_step']:.1f} | "
         f"{r['retrain_images_per_s_per_replica']:.0f} | {r['pipeline_images_per_s']:.0f} | "
         f"{mb(r['phase1_peak_mb'])} / {mb(r['alpha_peak_mb'])} / {mb(r['retrain_peak_mb'])} | "
         f"{r['peak_rss_mb']:.0f} |")
  return header + "\n" + row


def main(argv):
  from betanas_tf import cli  # pylint: disable=import-outside-toplevel
  return cli.reports_errors("throughput")(_main)(argv)


def _main(argv):
  del argv
  from betanas_tf import cli  # pylint: disable=import-outside-toplevel
  results = measure(FLAGS.space, FLAGS.input_size, FLAGS.batch_size, FLAGS.steps,
                    FLAGS.alpha_steps, FLAGS.steps_per_execution, FLAGS.mixed_precision,
                    FLAGS.jit_compile, FLAGS.distribution, cli.data_source_from_flags(),
                    FLAGS.pipeline_batches, FLAGS.jit_compile_supernet)
  print("devices: " + ", ".join(results["devices"]))
  print(f"retraining network: {results['retrain_arch']} (the space's costliest)")
  print(table(results))
  print("JSON " + json.dumps(results))
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
