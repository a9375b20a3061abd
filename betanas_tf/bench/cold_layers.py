"""Benchmark: do one-layer models timed cold add up to whole networks better than timed hot?

    python -m betanas_tf.bench.cold_layers [--quantize=int8 --threads=1 --networks=12 \
        --evict_mb=0,4,64 --out=cold_layers.json]

For each `--evict_mb` value, one interleaved call on this host's LiteRT interpreter
(`latency.timers.HostTimer`) times `--networks` random `--space` networks, hot, and every
layer of them, cold: that many MiB of memory written before each timed call (0: hot, as a
table built with `--evict_mb=0`). The networks are timed in every call, so each setting is
judged against networks measured beside its own layers. Per setting it prints the range of
network time / plain layer sum, and the leave-one-out error of the in-network correction
(`latency.fitting.fit_correction`, fitted on the other networks): what a table's calibration
reports, on networks whose every layer was timed in the same call.
"""

import json
from typing import Dict, List, Sequence

import numpy as np
from absl import app
from absl import flags
from betanas_tf import cli

FLAGS = flags.FLAGS


def define_flags():
  """Defines this program's flags (only when it runs as a program)."""
  from betanas_tf.latency import runtime  # pylint: disable=import-outside-toplevel
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("space", "proxyless_mobile", spaces.SPACES.names(),
                    "Search space of the networks.")
  flags.DEFINE_enum("quantize", "int8", list(runtime.QUANTIZE), "Number format.")
  cli.define_timing_flags(warmup_runs=None, runs=None)
  flags.DEFINE_integer("networks", 12, "Random networks (seed --seed).", lower_bound=4)
  flags.DEFINE_integer("seed", 7, "Seed of the networks.")
  flags.DEFINE_list("evict_mb", ["0", "4", "64"], "MiB written before each timed call of a "
                    "layer, one call per value (0: hot).")
  flags.DEFINE_integer("max_rounds", 15, "Interleaved rounds at most per call.", lower_bound=3)
  flags.DEFINE_string("out", None, "Also write the figures and every median as JSON.")


def correction_errors(early: Sequence[float], deep: Sequence[float], counts: Sequence[int],
                      measured: Sequence[float]) -> Dict:
  """Leave-one-out signed errors (%) of the correction fitted on the other networks, the
  fit on all of them, and the networks' time / plain layer sum."""
  from betanas_tf.latency import fitting  # pylint: disable=import-outside-toplevel
  early, deep, counts, measured = (np.asarray(v, np.float64) for v in (early, deep, counts, measured))
  signed = fitting.leave_one_out_errors(early, deep, counts, measured)
  errors = np.abs(signed)
  ratio = measured / (early + deep)
  return {"loo_error_pct": [float(e) for e in signed], "loo_mean_abs_error_pct": float(errors.mean()),
          "loo_max_abs_error_pct": float(errors.max()),
          "fit": fitting.fit_correction(early, deep, counts, measured),
          "network_over_layer_sum": [float(ratio.min()), float(ratio.max())]}


def run(space, archs: List, runtime, evict_values: Sequence[int], max_rounds: int) -> Dict:
  """Times the networks and their layers once per eviction setting (module docstring)."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from betanas_tf import builder  # pylint: disable=import-outside-toplevel
  from betanas_tf.latency import table, timers, timing  # pylint: disable=import-outside-toplevel
  makers = {}
  for arch in archs:
    makers.update(timers.layer_models(arch))
  # The same models in every call: under the reused prefix the timer converts them once.
  prefix = timers.REUSED_PREFIX
  models = {prefix + key: make() for key, make in makers.items()}
  models.update({f"{prefix}net{i}": builder.build_model(a) for i, a in enumerate(archs)})
  models[prefix + "empty_hot"], models[prefix + "empty_cold"] = timers.empty_model(), timers.empty_model()
  cold = [prefix + key for key in makers] + [prefix + "empty_cold"]
  timer = timers.HostTimer(runtime, timing.TimingPlan(max_rounds=max_rounds))
  report = {"space": space.name, "runtime": runtime.describe(), "networks": [
      space.choices_to_string(space.choices_from_arch(a)) for a in archs], "settings": {}}
  for evict in evict_values:
    timer.plan = dataclasses.replace(timer.plan, evict_mb=evict)
    timed = {k[len(prefix):]: v["median"] for k, v in timer.time_models(models, cold=cold).items()}
    network_overhead = timed["empty_hot"]
    layer_overhead = timed["empty_cold"] if evict else network_overhead
    sums = []
    for arch in archs:
      keys = table.layer_keys(arch)
      deep = [table.is_deep(k, arch.input_size) for k in keys]
      entries = [timed[k] - layer_overhead for k in keys]
      sums.append((sum(e for e, d in zip(entries, deep) if not d),
                   sum(e for e, d in zip(entries, deep) if d), len(keys)))
    early, deep_sums, counts = zip(*sums)
    measured = [timed[f"net{i}"] - network_overhead for i in range(len(archs))]
    setting = correction_errors(early, deep_sums, counts, measured)
    setting.update(network_ms=measured, layer_overhead_ms=layer_overhead,
                   network_overhead_ms=network_overhead,
                   layer_ms={k: timed[k] for k in makers})
    report["settings"][str(evict)] = setting
  return report


@cli.reports_errors("cold_layers")
def main(argv):
  del argv
  from betanas_tf import io_utils, spaces  # pylint: disable=import-outside-toplevel
  from betanas_tf.latency import runtime  # pylint: disable=import-outside-toplevel
  space = spaces.get_space(FLAGS.space)
  rng = np.random.default_rng(FLAGS.seed)
  archs = [space.arch_from_choices(space.sample(rng)) for _ in range(FLAGS.networks)]
  try:
    evict_values = [int(v) for v in FLAGS.evict_mb]
  except ValueError:
    raise app.UsageError(f"--evict_mb takes integers (MiB), got {','.join(FLAGS.evict_mb)}")
  rt = runtime.Runtime(FLAGS.quantize, FLAGS.threads)
  report = run(space, archs, rt, evict_values, FLAGS.max_rounds)
  print(f"{FLAGS.networks} random {space.name} networks, {rt.words()}; networks hot, their layers "
        "as below; correction fitted on the other networks:")
  for evict, setting in report["settings"].items():
    low, high = setting["network_over_layer_sum"]
    fit = setting["fit"]
    print(f"  layers {'hot' if evict == '0' else f'cold ({evict} MiB evicted)'}: network / layer "
          f"sum {low:.3f}-{high:.3f}; leave-one-out mean |error| "
          f"{setting['loo_mean_abs_error_pct']:.2f} %, max {setting['loo_max_abs_error_pct']:.2f} % "
          f"(f {fit['factor']:.4f}, g {fit['deep_factor']:.4f}, d {fit['per_layer_ms']:+.4f} ms)")
  if FLAGS.out:
    io_utils.atomic_write_json(FLAGS.out, report)
  print("JSON " + json.dumps({e: {k: s[k] for k in ("loo_mean_abs_error_pct", "loo_max_abs_error_pct",
                                                     "network_over_layer_sum")}
                              for e, s in report["settings"].items()}))


if __name__ == "__main__":
  define_flags()
  app.run(main)
