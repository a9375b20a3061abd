"""Latency lookup tables: build (host LiteRT or a phone), import ProxylessNAS YAML, predict, validate.

    python -m betanas_tf.latency build --space=proxyless_mobile --out=host_cpu.json [--threads=1] [--android]
    python -m betanas_tf.latency build --space=proxyless_mobile --quantize=int8 --threads=4 \
        [--delegate=none] [--android [--use_gpu]] --out=host_int8_4t.json
    python -m betanas_tf.latency build --space=proxyless_mobile --target=gpu --batch_size=8 --out=gpu.json
    python -m betanas_tf.latency import --yaml=pixel1_latency_proxyless.yaml --out=pixel1.json
    python -m betanas_tf.latency predict --lut=host_cpu.json --arch=arch.json
    python -m betanas_tf.latency validate --lut=host_cpu.json --space=proxyless_mobile --n=50
    python -m betanas_tf.latency compare --lut=host_cpu.json --other=pixel1.json --n=100

A table times one runtime (`runtime.Runtime`: number format, threads, delegate) and records it
in its target; `validate` times what the table describes (a flag that says otherwise is an
error), and `compare` says how far two runtimes' tables agree.


The table's keys, format and prediction: `latency_table`; the timers: `latency_timers`.

A shared machine changes speed by several per cent over minutes (measured here: 12 %
between the chunks of one build, 13 % for a small network between build and validation),
and not by the same factor for every network (in that second case the networks of
2-10x the small one's cost slowed by 7 %). So every timing call of `build` and `validate`
also times three fixed whole networks of the space, the *anchors* (`anchor_choices`: the
cheapest, median and most expensive candidate of every block), interleaved with the rest.
An entry keeps the anchors' times of its own call (`anchor_ms`) and is read at the
reference speed (each anchor's median over the build): times the geometric mean of the
anchors' reference / call ratios. A whole network timed in another call (calibration,
validation) is compared at the reference speed through the *drift curve* of that call:
the anchors' now / reference ratios interpolated over the logarithm of the network's
layer sum (`LatencyTable.drift`). `validate` reports the error against what it measured,
and also with the prediction moved along a drift curve (the table at the machine's speed
during validation), which separates what the table gets wrong from what the machine did
meanwhile. Three anchors place that curve only to 1-2 % (one noisy sample each), so the
table keeps its calibration networks and `validate` re-times `--drift_networks` of them
(spread over their range) with the validation networks: the curve is then the
least-squares line of their now / at-build ratios over log(layer sum)
(`LatencyTable.calibration_drift`), on the very scale the correction was fitted to.
"""

import json
import os
import re
import sys
from typing import Dict, List, Optional

import numpy as np

from betanas_tf import arch as arch_lib
from betanas_tf import cost as cost_lib
from betanas_tf import latency_table
from betanas_tf import latency_timers
from betanas_tf import runtime as runtime_lib
from betanas_tf import timing

CALIBRATION_SEED = 12345  # validate() uses other seeds by default


TIMED_FIELDS = ("mean", "median", "ci_low", "ci_high", "p10", "p90")


def _without_overhead(entry: Dict[str, float], overhead: float) -> Dict[str, float]:
  return {k: (max(0.0, v - overhead) if k in TIMED_FIELDS else v) for k, v in entry.items()}


ANCHOR_PREFIX = latency_timers.REUSED_PREFIX


def anchor_choices(space) -> List[List[int]]:
  """The anchors: per choice block the candidate of least, median and most MACs."""
  table = cost_lib.macs_cost_table(space).table
  picks = []
  for rank in ("min", "median", "max"):
    choices = []
    for l, block in enumerate(space.choice_blocks):
      order = np.argsort(table[l][:block.num_candidates], kind="stable")
      choices.append(int(order[{"min": 0, "median": len(order) // 2, "max": -1}[rank]]))
    picks.append(choices)
  return picks


def _anchor_key(space, index: int) -> str:
  return f"{ANCHOR_PREFIX}{index}_{space.name}_{space.input_size}_{space.width_multiplier:g}__"


def _time_with_anchors(timer, space, models: Dict[str, object], overhead: float):
  """({key: timing}, [each anchor's median minus overhead]) of one interleaved call that
  also times the anchors."""
  from betanas_tf import builder  # pylint: disable=import-outside-toplevel
  models = dict(models)
  keys = []
  for index, choices in enumerate(anchor_choices(space)):
    keys.append(_anchor_key(space, index))
    models[keys[-1]] = builder.build_model(space.arch_from_choices(choices))
  timed = timer.time_models(models)
  return timed, [timed.pop(key)["median"] - overhead for key in keys]


def _reference_anchor(table: latency_table.LatencyTable, space) -> Dict:
  """Each anchor's median time over the build's calls (one value per call)."""
  calls = sorted({tuple(e["anchor_ms"]) for e in table.entries.values() if "anchor_ms" in e})
  return {"choices": anchor_choices(space),
          "ms": [float(np.median([call[k] for call in calls])) for k in range(len(calls[0]))]}


def build_table(space, timer, out_path: str, progress: bool = True, calibrate: int = 0,
                chunk: int = 36) -> latency_table.LatencyTable:
  """Measures every key of `space` not yet in `out_path` (resumable: saved after each chunk
  of `chunk` layers, timed interleaved with the anchor networks); then, with `calibrate` > 0
  and no correction yet, times that many random networks (interleaved, with the anchors) and
  fits the in-network correction on their times brought to the reference speed."""
  import tqdm  # pylint: disable=import-outside-toplevel
  table = latency_table.LatencyTable.load(out_path) if os.path.exists(out_path) else None
  if table is None:
    overhead = timer.time_model(latency_timers.empty_model())["median"]
    target = dict(timer.describe(), space=space.name, input_size=space.input_size,
                  width_multiplier=space.width_multiplier)
    table = latency_table.LatencyTable({}, target, overhead)
  makers = {}
  for l, choice in enumerate(space.choice_blocks):
    for candidate_index in range(choice.num_candidates):
      choices = [0] * len(space)
      choices[l] = candidate_index
      makers.update(latency_timers.layer_models(space.arch_from_choices(choices)))
  makers.update(latency_timers.layer_models(space.skeleton()))
  todo = [k for k in latency_table.space_keys(space) if k not in table.entries]
  chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
  for keys in tqdm.tqdm(chunks, desc="latency table", unit="chunk", disable=not progress,
                        file=sys.stderr):
    timed, anchor_ms = _time_with_anchors(timer, space, {k: makers[k]() for k in keys},
                                          table.overhead_ms)
    for key, entry in timed.items():
      table.entries[key] = dict(_without_overhead(entry, table.overhead_ms), anchor_ms=anchor_ms)
    table.save(out_path)
  table.anchor = _reference_anchor(table, space)
  if calibrate and table.correction is None:
    from betanas_tf import builder  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(CALIBRATION_SEED)
    archs = [space.arch_from_choices(space.sample(rng)) for _ in range(calibrate)]
    timed, anchor_ms = _time_with_anchors(
        timer, space, {str(i): builder.build_model(a) for i, a in enumerate(archs)}, table.overhead_ms)
    drift = table.drift(space, anchor_ms)
    call_ms = [timed[str(i)]["median"] - table.overhead_ms for i in range(len(archs))]
    measured = [ms / drift(a) for ms, a in zip(call_ms, archs)]
    early, deep = zip(*[table.group_sums(a) for a in archs])
    counts = [len(latency_table.layer_keys(a)) for a in archs]
    table.correction = latency_table.fit_correction(early, deep, counts, measured)
    table.target["calibration_networks"] = calibrate
    table.target["calibration_anchor_ms"] = anchor_ms
    table.calibration = {"choices": [[int(c) for c in space.choices_from_arch(a)] for a in archs],
                         "ms": measured, "call_ms": call_ms}
  table.save(out_path)
  return table


def _error_stats(signed: np.ndarray, prefix: str = "") -> Dict[str, float]:
  errors = np.abs(signed)
  return {f"{prefix}mean_abs_error_pct": float(errors.mean()),
          f"{prefix}median_abs_error_pct": float(np.median(errors)),
          f"{prefix}p90_abs_error_pct": float(np.percentile(errors, 90)),
          f"{prefix}max_abs_error_pct": float(errors.max()),
          f"{prefix}mean_error_pct": float(signed.mean()),
          f"{prefix}within_5_pct": float(np.mean(errors <= 5.0))}


DRIFT_NETWORKS = 10  # calibration networks `validate` re-times to measure the drift


def validate(table: latency_table.LatencyTable, space, n: int, timer, seed: int = 0,
             plot: Optional[str] = None, drift_networks: int = DRIFT_NETWORKS) -> Dict:
  """Predicted vs measured whole-network latency for n random architectures of `space`
  (timed interleaved, with the anchors and `drift_networks` of the table's calibration
  networks), with the error distribution; `plot` writes the scatter (PNG).

  The ``*_error_pct`` figures compare the table's prediction with what was measured now.
  ``speed_ratios`` are the anchors' times now / at build. The ``rescaled_*`` figures compare
  the prediction moved along this call's drift curve: the table's error at the machine's
  speed during validation. The curve comes from the re-timed calibration networks
  (`LatencyTable.calibration_drift`; ``drift_source`` "calibration") when the table keeps
  them and `drift_networks` > 0, else from the anchors (`LatencyTable.drift`)."""
  from betanas_tf import builder  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  archs = [space.arch_from_choices(space.sample(rng)) for _ in range(n)]
  models = {str(i): builder.build_model(a) for i, a in enumerate(archs)}
  picks = table.drift_networks(drift_networks) if table.calibration and drift_networks else []
  for i in picks:
    models[f"calibration{i}"] = builder.build_model(
        space.arch_from_choices(table.calibration["choices"][i]))
  timed, anchor_ms = _time_with_anchors(timer, space, models, table.overhead_ms)
  drift, source = None, None
  if picks:
    now = [timed.pop(f"calibration{i}")["median"] - table.overhead_ms for i in picks]
    drift, source = table.calibration_drift(space, picks, now), "calibration"
  elif table.anchor:
    drift, source = table.drift(space, anchor_ms), "anchors"
  rows = []
  for i, arch in enumerate(archs):
    predicted = table.predict(arch)
    measured = timed[str(i)]["median"] - table.overhead_ms
    row = {"arch": space.choices_to_string(space.choices_from_arch(arch)),
           "predicted_ms": predicted, "measured_ms": measured,
           "measured_ci_ms": [timed[str(i)]["ci_low"] - table.overhead_ms,
                              timed[str(i)]["ci_high"] - table.overhead_ms]
           if "ci_low" in timed[str(i)] else None,
           "error_pct": 100.0 * (predicted - measured) / measured}
    if drift is not None:
      row["drift"] = drift(arch)
      row["rescaled_predicted_ms"] = predicted * row["drift"]
      row["rescaled_error_pct"] = 100.0 * (row["rescaled_predicted_ms"] - measured) / measured
    rows.append(row)
  ratios = ([now / ref for now, ref in zip(anchor_ms, table.anchor["ms"])] if table.anchor
            else None)
  report = {"n": n, "seed": seed, "rows": rows, "target": table.target, "anchor_ms": anchor_ms,
            "speed_ratios": ratios, "drift_source": source, "drift_networks": len(picks)}
  report.update(_error_stats(np.array([r["error_pct"] for r in rows])))
  if drift is not None:
    report.update(_error_stats(np.array([r["rescaled_error_pct"] for r in rows]), "rescaled_"))
  if plot:
    from betanas_tf import figures  # pylint: disable=import-outside-toplevel
    title = (f"{space.name}: n={n}, mean |error| {report['mean_abs_error_pct']:.2f} %, max "
             f"{report['max_abs_error_pct']:.2f} %")
    if drift is not None:
      title += (f"\nat the machine's speed now ({_drift_words(report)}): "
                f"{report['rescaled_mean_abs_error_pct']:.2f} %, max "
                f"{report['rescaled_max_abs_error_pct']:.2f} %")
    figures.plot_latency_validation(rows, plot, title)
  return report


def _drift_words(report: Dict) -> str:
  """Where the drift curve came from, for the plot and the console."""
  drifts = [r["drift"] for r in report["rows"]]
  span = f"x{min(drifts):.3f}-{max(drifts):.3f}"
  if report["drift_source"] == "calibration":
    return f"{report['drift_networks']} calibration networks re-timed, {span}"
  return f"anchors {span}"


def op_label(key: str) -> str:
  """The op a layer key times, without its shape: k<kernel>e<expand> for an MBConv, else the
  key's layer name (Conv, Conv_1, Logits, ...)."""
  kernel, expand = re.search(r"-kernel:(\d+)", key), re.search(r"-expand:(\d+)", key)
  if kernel and expand:
    return f"k{kernel.group(1)}e{expand.group(1)}"
  return key.split("-input", 1)[0]


def compare(first: latency_table.LatencyTable, second: latency_table.LatencyTable, space,
            n: int = 100, seed: int = 0) -> Dict:
  """How far two tables agree: over their common keys, Kendall's tau of the entries and
  each key's second / first ratio (summarised per op); over `n` random networks of `space`
  (when both tables cover it), tau of the two predictions and their ratio."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  common = sorted(set(first.entries) & set(second.entries))
  if len(common) < 2:
    raise ValueError(f"the tables share {len(common)} key(s); comparing needs at least 2 (built "
                     "for the same space, input size and width?)")
  a = np.array([first.lookup(k) for k in common])
  b = np.array([second.lookup(k) for k in common])
  ratios = dict(zip(common, (b / np.maximum(a, 1e-12)).tolist()))
  per_op: Dict[str, List[float]] = {}
  for key, ratio in ratios.items():
    per_op.setdefault(op_label(key), []).append(ratio)
  summary = lambda r: {"n": len(r), "median": float(np.median(r)), "min": float(np.min(r)),
                       "max": float(np.max(r))}
  result = {"runtimes": [first.runtime_words(), second.runtime_words()],
            "common_keys": len(common), "only_first": len(set(first.entries) - set(common)),
            "only_second": len(set(second.entries) - set(common)),
            "entries_tau": float(stats.kendalltau(a, b)[0]), "ratio": summary(list(ratios.values())),
            "per_op": {op: summary(r) for op, r in sorted(per_op.items())}, "ratios": ratios,
            "networks": None}
  keys = latency_table.space_keys(space)
  lacking = [name for name, table in (("first", first), ("second", second)) if table.missing(keys)]
  if lacking:
    result["networks_skipped"] = (f"the {' and '.join(lacking)} table(s) lack keys of "
                                  f"{space.name} at {space.input_size} px")
    return result
  rng = np.random.default_rng(seed)
  archs = [space.arch_from_choices(space.sample(rng)) for _ in range(n)]
  p = np.array([first.predict(x) for x in archs])
  q = np.array([second.predict(x) for x in archs])
  result["networks"] = dict(n=n, seed=seed, tau=float(stats.kendalltau(p, q)[0]), **{
      f"ratio_{k}": v for k, v in summary((q / p).tolist()).items() if k != "n"})
  return result


def compare_text(result: Dict, first: str, second: str) -> str:
  lines = [f"first:  {first} ({result['runtimes'][0]})",
           f"second: {second} ({result['runtimes'][1]})",
           f"{result['common_keys']} common keys ({result['only_first']} only in the first, "
           f"{result['only_second']} only in the second); Kendall tau of their entries "
           f"{result['entries_tau']:.3f}; second / first per key: median "
           f"{result['ratio']['median']:.3f}, range {result['ratio']['min']:.3f} - "
           f"{result['ratio']['max']:.3f}"]
  nets = result["networks"]
  if nets:
    lines.append(f"{nets['n']} random networks: Kendall tau of the predictions {nets['tau']:.3f}; "
                 f"second / first median {nets['ratio_median']:.3f}, range "
                 f"{nets['ratio_min']:.3f} - {nets['ratio_max']:.3f}")
  else:
    lines.append(f"random networks not compared: {result['networks_skipped']}")
  lines.append("op      keys  second/first: median   min     max")
  for op, r in result["per_op"].items():
    lines.append(f"{op:<8}{r['n']:>4}  {r['median']:>19.3f} {r['min']:>7.3f} {r['max']:>7.3f}")
  return "\n".join(lines)


def validation_summary(report: Dict) -> Dict:
  """What a table keeps of its last validation (and the search's summary shows)."""
  keys = ["n", "seed", "mean_abs_error_pct", "median_abs_error_pct", "p90_abs_error_pct",
          "max_abs_error_pct", "mean_error_pct", "speed_ratios"]
  if report.get("drift_source") is not None:
    keys += ["drift_source", "drift_networks", "rescaled_mean_abs_error_pct",
             "rescaled_max_abs_error_pct"]
  return {k: report[k] for k in keys}


# ---- command line ---------------------------------------------------------------------

COMMANDS = ("build", "import", "predict", "validate", "compare")


def _define_flags():
  """Flags exist only when this module is the program (library users import it freely)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import cli  # pylint: disable=import-outside-toplevel
  cli.define_space_flags("proxyless_mobile", num_classes=True)
  flags.DEFINE_string("out", None, "Output table (build, import).")
  flags.DEFINE_string("lut", None, "Latency table (predict, validate, compare).")
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
  flags.DEFINE_enum("target", "litert", ["litert", "gpu", "tf_cpu"], "What to time on: this "
                    "host's LiteRT interpreter (a phone's CPU stand-in), TensorFlow on the GPU "
                    "(batch --batch_size), or the same TensorFlow path on the CPU. --android: a phone.")
  flags.DEFINE_integer("batch_size", 8, "Batch of --target=gpu / tf_cpu.", lower_bound=1)
  flags.DEFINE_integer("calibrate", 30, "build: random networks to fit the in-network correction "
                       "(0 = plain layer sums).", lower_bound=0)
  flags.DEFINE_integer("invocations", 10, "Host: timed invocations per sample (a sample is their "
                       "median).", lower_bound=1)
  flags.DEFINE_integer("min_rounds", 5, "Host: interleaved rounds at least.", lower_bound=3)
  flags.DEFINE_integer("max_rounds", 40, "Host: interleaved rounds at most.", lower_bound=3)
  flags.DEFINE_float("rel_ci", 0.01, "Host: stop when every median's 95 % CI is within this "
                     "fraction of it.", lower_bound=0.0)
  flags.DEFINE_integer("drift_networks", DRIFT_NETWORKS, "validate: calibration networks of the "
                       "table re-timed with the validation networks to measure the machine's "
                       "drift since the build (0: the three anchors).", lower_bound=0)
  flags.DEFINE_string("plot", None, "validate: the predicted-vs-measured scatter (PNG; default "
                      "<lut>_validation.png).")
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


def _timer(flags_, runtime: runtime_lib.Runtime):
  plan = timing.TimingPlan(invocations=flags_.invocations, warmup=flags_.warmup_runs,
                           min_rounds=flags_.min_rounds,
                           max_rounds=max(flags_.min_rounds, flags_.max_rounds), rel_ci=flags_.rel_ci)
  if flags_.android and flags_.target != "litert":
    raise ValueError("give --android or --target, not both")
  if flags_.target != "litert":
    if runtime != runtime_lib.Runtime(threads=runtime.threads):
      raise ValueError(f"--target={flags_.target} times TensorFlow float32 graphs; --quantize, "
                       "--int8_io and --delegate are for LiteRT (host or --android)")
    device = "/GPU:0" if flags_.target == "gpu" else "/CPU:0"
    return latency_timers.TensorFlowTimer(device, flags_.batch_size, plan)
  if flags_.android:
    from betanas_tf import android  # pylint: disable=import-outside-toplevel
    bench = android.AndroidBenchmark(flags_.adb, flags_.adb_serial, flags_.benchmark_binary)
    bench.serial = bench.check()
    return latency_timers.AndroidTimer(bench, runtime, flags_.warmup_runs, flags_.runs)
  return latency_timers.HostTimer(runtime, plan)


def main(argv):
  import dataclasses  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import android, spaces  # pylint: disable=import-outside-toplevel
  flags_ = flags.FLAGS
  if len(argv) != 2 or argv[1] not in COMMANDS:
    print(f"latency: error: give one command: {' | '.join(COMMANDS)}", file=sys.stderr)
    return 1
  command = argv[1]
  space = spaces.get_space(flags_.space, flags_.input_size, flags_.width_multiplier)
  if flags_.num_classes:
    space = dataclasses.replace(space, num_classes=flags_.num_classes)
  try:
    if command == "build":
      if not flags_.out:
        raise ValueError("build needs --out")
      existing = (latency_table.LatencyTable.load(flags_.out) if os.path.exists(flags_.out)
                  else None)
      timer = _timer(flags_, _runtime(flags_, existing, flags_.out))
      table = build_table(space, timer, flags_.out, flags_.progress, flags_.calibrate)
      fitted = ("x{factor:.4f} (deep layers x{deep_factor:.4f}) + {per_layer_ms:.4f} ms per "
                "layer".format(**table.correction) if table.correction else "none")
      print(f"{len(table.entries)} entries in {flags_.out} (overhead {table.overhead_ms:.4f} ms "
            f"subtracted; in-network correction: {fitted})")
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
      result = compare(first, second, space, flags_.n, flags_.seed)
      print(compare_text(result, flags_.lut, flags_.other))
      print("JSON " + json.dumps(result))
    else:
      if not flags_.lut:
        raise ValueError("validate needs --lut")
      table = latency_table.LatencyTable.load(flags_.lut)
      plot = flags_.plot or os.path.splitext(flags_.lut)[0] + "_validation.png"
      report = validate(table, space, flags_.n, _timer(flags_, _runtime(flags_, table, flags_.lut)),
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
              f"drift curve ({_drift_words(report)}): mean abs error {report['rescaled_mean_abs_error_pct']:.2f} %, "
              f"median {report['rescaled_median_abs_error_pct']:.2f} %, p90 "
              f"{report['rescaled_p90_abs_error_pct']:.2f} %, max "
              f"{report['rescaled_max_abs_error_pct']:.2f} %, mean signed "
              f"{report['rescaled_mean_error_pct']:+.2f} %")
      if flags_.record:
        table.validation = validation_summary(report)
        table.save(flags_.lut)
      print("JSON " + json.dumps({k: v for k, v in report.items() if k != "rows"}))
  except (ValueError, latency_table.MissingEntriesError, android.AndroidError) as error:
    print(f"latency: error: {error}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
