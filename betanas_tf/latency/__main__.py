"""python -m betanas_tf.latency build | refit | import | predict | validate | compare (see the
package docstring)."""

import json
import os
from typing import Optional

from betanas_tf import arch as arch_lib
from betanas_tf import io_utils
from betanas_tf.latency import android
from betanas_tf.latency import compare as compare_lib
from betanas_tf.latency import measure
from betanas_tf.latency import runtime as runtime_lib
from betanas_tf.latency import table as latency_table
from betanas_tf.latency import timers as latency_timers
from betanas_tf.latency import timing


COMMANDS = ("build", "refit", "import", "predict", "validate", "compare")


def _define_flags():
  """Flags exist only when this module is the program (library users import it freely)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import cli  # pylint: disable=import-outside-toplevel
  cli.define_space_flags("proxyless_mobile", num_classes=True)
  flags.DEFINE_string("out", None, "Output table (build, import).")
  flags.DEFINE_string("lut", None, "Latency table (refit, predict, validate, compare).")
  flags.DEFINE_string("other", None, "compare: the second table.")
  flags.DEFINE_enum("quantize", None, list(runtime_lib.QUANTIZE), "Number format of the timed "
                    "models (build: default fp32; validate: the table's). int8: full-integer "
                    "post-training quantisation.")
  flags.DEFINE_bool("int8_io", None, "With --quantize=int8: int8 input and output tensors "
                    "(the exporter's --int8_io); default float I/O.")
  cli.define_delegate_flag()
  flags.DEFINE_string("yaml", None, "ProxylessNAS YAML table (import).")
  flags.DEFINE_string("arch", None, "Architecture JSON (predict).")
  cli.define_timing_flags()
  flags.DEFINE_integer("n", 20, "Random architectures to validate.", lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Seed of the validation architectures.")
  cli.define_android_flags()
  flags.DEFINE_bool("progress", True, "Show a progress bar.")
  flags.DEFINE_enum("target", "litert", latency_timers.TARGETS.names(), "What to time on "
                    "(latency.timers.TARGETS): litert = this host's LiteRT interpreter (with "
                    "--delegate=none a phone CPU's stand-in: docs/latency.md), android = a phone "
                    "(as --android), gpu = TensorFlow on the GPU (batch --batch_size), tf_cpu = "
                    "the same TensorFlow path on the CPU.")
  flags.DEFINE_integer("batch_size", 8, "Batch of --target=gpu / tf_cpu.", lower_bound=1)
  flags.DEFINE_integer("calibrate", 30, "build: random networks to fit the in-network correction "
                       "(0 = plain layer sums).", lower_bound=0)
  flags.DEFINE_integer("invocations", 10, "Host: timed invocations per sample (a sample is their "
                       "median).", lower_bound=1)
  flags.DEFINE_integer("min_rounds", 5, "Host: interleaved rounds at least.", lower_bound=3)
  flags.DEFINE_integer("max_rounds", 40, "Host: interleaved rounds at most.", lower_bound=3)
  flags.DEFINE_float("rel_ci", 0.01, "Host: stop when every median's 95 % CI is within this "
                     "fraction of it.", lower_bound=0.0)
  flags.DEFINE_integer("evict_mb", None, "build: MiB of memory written before each timed call "
                       "of a one-layer model, so that it runs with cold caches as inside a "
                       "network (docs/latency.md, 'Layers timed cold'); 0 times the layers hot, "
                       "one call after another. Default: the table's own when building on into "
                       "it, else twice this host's largest CPU cache with LiteRT (64 on a 32 MiB "
                       "L3) and 0 elsewhere.",
                       lower_bound=0)
  flags.DEFINE_integer("drift_networks", measure.DRIFT_NETWORKS, "validate: calibration networks of the "
                       "table re-timed with the validation networks to measure the machine's "
                       "drift since the build (0: the three anchors).", lower_bound=0)
  flags.DEFINE_string("plot", None, "validate: the predicted-vs-measured scatter (PNG; default "
                      "<lut>_validation.png).")
  flags.DEFINE_string("report", None, "validate: also write the whole report (every network's "
                      "prediction and measurement, the re-timed calibration networks) as JSON.")
  flags.DEFINE_bool("record", True, "validate: store the error summary in the table (the "
                    "search's summary reports it).")


def _runtime(flags_, table: Optional[latency_table.LatencyTable] = None, what: str = ""):
  """The runtime to time: the flags over the defaults (build), or the table's runtime, which
  a flag may only repeat (validate, or building on into an existing table)."""
  given = {"quantize": flags_.quantize, "int8_io": flags_.int8_io,
           "threads": flags_.threads if flags_["threads"].present else None,
           "delegate": "gpu" if flags_.use_gpu else flags_.delegate}
  if flags_.use_gpu and not flags_.android:
    raise ValueError("--use_gpu times a phone's GPU delegate: it needs --android")
  if flags_.use_gpu and flags_.delegate:
    raise ValueError("give --use_gpu or --delegate, not both")
  recorded = runtime_lib.of_target(table.target) if table is not None else None
  if recorded is None:
    return runtime_lib.Runtime(**{k: v for k, v in given.items() if v is not None})
  chosen = runtime_lib.Runtime(**dict(recorded.describe(), **{k: v for k, v in given.items()
                                                              if v is not None}))
  differ = runtime_lib.differences(recorded, chosen)
  if differ:
    raise ValueError(f"{what} was built for {recorded.words()}; the flags ask for "
                     f"{chosen.words()} ({'; '.join(differ)}): a table is timed and read only "
                     "in the runtime it describes (drop those flags, or use another table)")
  return chosen


def _evict_mb(flags_, existing: Optional[latency_table.LatencyTable]) -> int:
  """How the build times its layers: --evict_mb, which must repeat the value of a table it
  builds on into; else that table's value; else the default for the target."""
  if flags_.android and flags_.evict_mb:
    raise ValueError("--evict_mb is for timing on this host: benchmark_model on a phone "
                     "times each model on its own")
  if flags_.evict_mb is None:
    if existing is not None:
      return measure.evict_mb(existing)
    return timing.default_evict_mb() if not flags_.android and flags_.target == "litert" else 0
  if existing is not None and measure.evict_mb(existing) != flags_.evict_mb:
    raise ValueError(f"{flags_.out} was built with --evict_mb={measure.evict_mb(existing)}; "
                     f"the flags ask for --evict_mb={flags_.evict_mb} (entries timed hot "
                     "and cold do not mix: give the same value, or another --out)")
  return flags_.evict_mb


def _timer(flags_, runtime: runtime_lib.Runtime, evict_mb: int = 0):
  """The timer of --target (`timers.TARGETS`; --android is --target=android)."""
  plan = timing.TimingPlan(invocations=flags_.invocations, warmup=flags_.warmup_runs,
                           min_rounds=flags_.min_rounds,
                           max_rounds=max(flags_.min_rounds, flags_.max_rounds), rel_ci=flags_.rel_ci,
                           evict_mb=evict_mb)
  target = flags_.target
  if flags_.android:
    if target not in ("litert", "android"):
      raise ValueError("give --android or --target, not both")
    target = "android"
  return latency_timers.TARGETS.get(target)(flags_, runtime, plan)


def _fit_words(table: latency_table.LatencyTable) -> str:
  if table.correction is None:
    return "in-network correction: none"
  loo = (table.calibration or {}).get("loo_mean_abs_error_pct", {})
  chosen = ", ".join(f"{s} {v:.2f} %" for s, v in sorted(loo.items()))
  return ("in-network correction: x{factor:.4f} (deep layers x{deep_factor:.4f}) + "
          "{per_layer_ms:.4f} ms per layer".format(**dict(
              table.correction, deep_factor=table.correction.get("deep_factor", table.correction["factor"])))
          + f"; entries read as the {table.statistic} of their samples"
          + (f" (leave-one-out error on the calibration networks: {chosen})" if chosen else ""))


def main(argv):
  from betanas_tf import cli  # pylint: disable=import-outside-toplevel
  return cli.reports_errors("latency", latency_table.MissingEntriesError, android.AndroidError,
                            takes_arguments=True)(_main)(argv)


def _main(argv):
  import dataclasses  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  flags_ = flags.FLAGS
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise ValueError(f"give one command: {' | '.join(COMMANDS)}")
  command = argv[1]
  space = spaces.get_space(flags_.space, flags_.input_size, flags_.width_multiplier)
  if flags_.num_classes:
    space = dataclasses.replace(space, num_classes=flags_.num_classes)
  if command == "build":
    if not flags_.out:
      raise ValueError("build needs --out")
    existing = (latency_table.LatencyTable.load(flags_.out) if os.path.exists(flags_.out)
                else None)
    timer = _timer(flags_, _runtime(flags_, existing, flags_.out), _evict_mb(flags_, existing))
    table = measure.build_table(space, timer, flags_.out, flags_.progress, flags_.calibrate)
    overhead = f"overhead {table.overhead_ms:.4f} ms subtracted"
    if measure.evict_mb(table):
      overhead = (f"layers timed cold, overhead {measure.layer_overhead_ms(table):.4f} ms "
                  f"subtracted from them, {table.overhead_ms:.4f} ms from whole networks")
    print(f"{len(table.entries)} entries in {flags_.out} ({overhead}; {_fit_words(table)})")
  elif command == "refit":
    if not flags_.lut:
      raise ValueError("refit needs --lut")
    table = latency_table.LatencyTable.load(flags_.lut)
    measure.fit_calibration(table, space, name=flags_.lut)
    table.save(flags_.lut)
    print(f"{flags_.lut}: {_fit_words(table)}")
  elif command == "import":
    if not (flags_.yaml and flags_.out):
      raise ValueError("import needs --yaml and --out")
    table = latency_table.import_proxyless_yaml(flags_.yaml)
    table.save(flags_.out)
    print(f"{len(table.entries)} entries imported into {flags_.out}")
  elif command == "predict":
    if not (flags_.lut and flags_.arch):
      raise ValueError("predict needs --lut and --arch")
    arch = arch_lib.Architecture.load(flags_.arch)
    print(f"{latency_table.LatencyTable.load(flags_.lut).predict(arch):.3f} ms")
  elif command == "compare":
    if not (flags_.lut and flags_.other):
      raise ValueError("compare needs --lut and --other")
    first, second = (latency_table.LatencyTable.load(p) for p in (flags_.lut, flags_.other))
    result = compare_lib.compare(first, second, space, flags_.n, flags_.seed)
    print(compare_lib.compare_text(result, flags_.lut, flags_.other))
    print("JSON " + json.dumps(result))
  else:
    if not flags_.lut:
      raise ValueError("validate needs --lut")
    table = latency_table.LatencyTable.load(flags_.lut)
    plot = flags_.plot or os.path.splitext(flags_.lut)[0] + "_validation.png"
    report = measure.validate(table, space, flags_.n, _timer(flags_, _runtime(flags_, table, flags_.lut)),
                      flags_.seed, plot, flags_.drift_networks)
    for row in report["rows"]:
      print(f"{row['arch']}  predicted {row['predicted_ms']:8.3f} ms  measured "
            f"{row['measured_ms']:8.3f} ms  error {row['error_pct']:+6.2f} %")
    print(f"n={report['n']} ({table.runtime_words()}): mean abs error "
          f"{report['mean_abs_error_pct']:.2f} %, median {report['median_abs_error_pct']:.2f} %, "
          f"p90 {report['p90_abs_error_pct']:.2f} %, max {report['max_abs_error_pct']:.2f} %, "
          f"mean signed {report['mean_error_pct']:+.2f} %; scatter in {plot}")
    if report["drift_source"] is not None:
      anchors = ", ".join(f"x{r:.3f}" for r in report["speed_ratios"] or [])
      print(f"anchor networks' time now / at build: {anchors or 'no anchors'}; along the "
            f"drift curve ({measure.drift_words(report)}): mean abs error {report['rescaled_mean_abs_error_pct']:.2f} %, "
            f"median {report['rescaled_median_abs_error_pct']:.2f} %, p90 "
            f"{report['rescaled_p90_abs_error_pct']:.2f} %, max "
            f"{report['rescaled_max_abs_error_pct']:.2f} %, mean signed "
            f"{report['rescaled_mean_error_pct']:+.2f} %")
    if flags_.report:
      io_utils.atomic_write_json(flags_.report, report)
    if flags_.record:
      table.validation = measure.validation_summary(report)
      table.save(flags_.lut)
    print("JSON " + json.dumps({k: v for k, v in report.items() if k != "rows"}))
  return 0


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
