"""Building a latency table with anchors, and validating it against whole networks (the
method: the package docstring and docs/design.md)."""

import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

from betanas_tf import cost as cost_lib
from betanas_tf.latency import fitting
from betanas_tf.latency import table as latency_table
from betanas_tf.latency import timers as latency_timers

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


def _time_with_anchors(timer, space, models: Dict[str, object], overhead: float, cold=()):
  """({key: timing}, [each anchor's median minus overhead]) of one interleaved call that
  also times the anchors (whole networks: never cold)."""
  from betanas_tf import builder  # pylint: disable=import-outside-toplevel
  models = dict(models)
  keys = []
  for index, choices in enumerate(anchor_choices(space)):
    keys.append(_anchor_key(space, index))
    models[keys[-1]] = builder.build_model(space.arch_from_choices(choices))
  timed = timer.time_models(models, cold=cold)
  return timed, [timed.pop(key)["median"] - overhead for key in keys]


def evict_mb(table: latency_table.LatencyTable) -> int:
  """Memory the table's build writes before each timed call of a one-layer model (0: the
  layers were timed hot, one call after another)."""
  return int(table.target.get("timing", {}).get("evict_mb", 0))


def layer_overhead_ms(table: latency_table.LatencyTable) -> float:
  """What was subtracted from the entries: the empty model's time as the layers were timed
  (cold: its interpreter's own state comes from memory too). ``overhead_ms``, subtracted
  from whole networks, is the empty model timed hot."""
  return float(table.target.get("layer_overhead_ms", table.overhead_ms))


def _reference_anchor(table: latency_table.LatencyTable, space) -> Dict:
  """Each anchor's median time over the build's calls (one value per call)."""
  calls = sorted({tuple(e["anchor_ms"]) for e in table.entries.values() if "anchor_ms" in e})
  return {"choices": anchor_choices(space),
          "ms": [float(np.median([call[k] for call in calls])) for k in range(len(calls[0]))]}


def build_table(space, timer, out_path: str, progress: bool = True, calibrate: int = 0,
                chunk: int = 36) -> latency_table.LatencyTable:
  """Measures every key of `space` not yet in `out_path` (resumable: saved after each chunk
  of `chunk` layers, timed interleaved with the anchor networks; cold where the timer's
  plan evicts, `evict_mb`); then, with `calibrate` > 0
  and no correction yet, times that many random networks (interleaved, with the anchors) and
  fits the in-network correction on their times brought to the reference speed."""
  import tqdm  # pylint: disable=import-outside-toplevel
  table = latency_table.LatencyTable.load(out_path) if os.path.exists(out_path) else None
  if table is None:
    overhead = timer.time_model(latency_timers.empty_model())["median"]
    target = dict(timer.describe(), space=space.name, input_size=space.input_size,
                  width_multiplier=space.width_multiplier)
    table = latency_table.LatencyTable({}, target, overhead)
    if evict_mb(table):
      table.target["layer_overhead_ms"] = timer.time_models(
          {"empty": latency_timers.empty_model()}, cold=["empty"])["empty"]["median"]
  cold = bool(evict_mb(table))
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
                                          table.overhead_ms, keys if cold else ())
    for key, entry in timed.items():
      table.entries[key] = dict(_without_overhead(entry, layer_overhead_ms(table)),
                                anchor_ms=anchor_ms)
    table.save(out_path)
  table.anchor = _reference_anchor(table, space)
  if calibrate and table.correction is None:
    from betanas_tf import builder  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(CALIBRATION_SEED)
    archs = [space.arch_from_choices(space.sample(rng)) for _ in range(calibrate)]
    timed, anchor_ms = _time_with_anchors(
        timer, space, {str(i): builder.build_model(a) for i, a in enumerate(archs)}, table.overhead_ms)
    table.target["calibration_networks"] = calibrate
    table.target["calibration_anchor_ms"] = anchor_ms
    table.calibration = {"choices": [[int(c) for c in space.choices_from_arch(a)] for a in archs],
                         "call_ms": [timed[str(i)]["median"] - table.overhead_ms
                                     for i in range(len(archs))]}
    fit_calibration(table, space)
  table.save(out_path)
  return table


def _calibration_fit(table: latency_table.LatencyTable, space, archs, call_ms):
  """(correction, the networks' times at the reference speed, leave-one-out mean |error| %)
  of the table as it reads its entries now."""
  drift = fitting.drift(table, space, table.target["calibration_anchor_ms"])
  measured = np.array([ms / drift(a) for ms, a in zip(call_ms, archs)])
  early, deep = (np.array(s) for s in zip(*[table.group_sums(a) for a in archs]))
  counts = np.array([len(latency_table.layer_keys(a)) for a in archs], np.float64)
  errors = fitting.leave_one_out_errors(early, deep, counts, measured)
  correction = fitting.fit_correction(early, deep, counts, measured)
  return correction, [float(m) for m in measured], float(np.mean(np.abs(errors)))


def fit_calibration(table: latency_table.LatencyTable, space,
                    name: str = "the table") -> latency_table.LatencyTable:
  """Fits the in-network correction on the table's timed calibration networks (their
  ``call_ms`` and the call's anchors), once for each entry statistic every entry has (the
  median of the samples; their 10th percentile), and keeps the statistic whose fit predicts
  the calibration networks best left-one-out. Timed alone with two threads on a shared
  machine, a small layer sometimes waits for its second thread (samples of one layer here
  came as 0.02 ms and 0.15 ms in one build), and the median lands on either mode; inside a
  network the threads stay busy. Single-threaded entries have no such mode and the median
  wins. Needs no timing: `latency refit` runs it on a table already built. The median is
  always a candidate (`lookup` reads an entry without one at its mean)."""
  if not (table.calibration and "call_ms" in table.calibration
          and "calibration_anchor_ms" in table.target):
    raise ValueError(f"{name} keeps no timed calibration networks to refit on (build it "
                     "with --calibrate)")
  archs = [space.arch_from_choices(c) for c in table.calibration["choices"]]
  call_ms = table.calibration["call_ms"]
  fits = {}
  for statistic in latency_table.ENTRY_STATISTICS:
    if statistic == "median" or all(statistic in entry for entry in table.entries.values()):
      table.statistic = statistic
      fits[statistic] = _calibration_fit(table, space, archs, call_ms)
  table.statistic = min(fits, key=lambda s: (fits[s][2], s != "median"))
  table.correction, table.calibration["ms"] = fits[table.statistic][:2]
  table.calibration["loo_mean_abs_error_pct"] = {s: fit[2] for s, fit in fits.items()}
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
  (`fitting.calibration_drift`; ``drift_source`` "calibration") when the table keeps
  them and `drift_networks` > 0, else from the anchors (`fitting.drift`)."""
  from betanas_tf import builder  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  archs = [space.arch_from_choices(space.sample(rng)) for _ in range(n)]
  models = {str(i): builder.build_model(a) for i, a in enumerate(archs)}
  picks = fitting.drift_networks(table, drift_networks) if table.calibration and drift_networks else []
  for i in picks:
    models[f"calibration{i}"] = builder.build_model(
        space.arch_from_choices(table.calibration["choices"][i]))
  timed, anchor_ms = _time_with_anchors(timer, space, models, table.overhead_ms)
  drift, source, now = None, None, []
  if picks:
    now = [timed.pop(f"calibration{i}")["median"] - table.overhead_ms for i in picks]
    drift, source = fitting.calibration_drift(table, space, picks, now, anchor_ms), "calibration"
  elif table.anchor:
    drift, source = fitting.drift(table, space, anchor_ms), "anchors"
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
            "speed_ratios": ratios, "drift_source": source, "drift_networks": len(picks),
            "calibration_now_ms": {str(i): ms for i, ms in zip(picks, now)}}
  report.update(_error_stats(np.array([r["error_pct"] for r in rows])))
  if drift is not None:
    report.update(_error_stats(np.array([r["rescaled_error_pct"] for r in rows]), "rescaled_"))
  if plot:
    from betanas_tf import figures  # pylint: disable=import-outside-toplevel
    title = (f"{space.name}: n={n}, mean |error| {report['mean_abs_error_pct']:.2f} %, max "
             f"{report['max_abs_error_pct']:.2f} %")
    if drift is not None:
      title += (f"\nat the machine's speed now ({drift_words(report)}): "
                f"{report['rescaled_mean_abs_error_pct']:.2f} %, max "
                f"{report['rescaled_max_abs_error_pct']:.2f} %")
    figures.plot_latency_validation(rows, plot, title)
  return report


def drift_words(report: Dict) -> str:
  """Where the drift curve came from, for the plot and the console."""
  drifts = [r["drift"] for r in report["rows"]]
  span = f"x{min(drifts):.3f}-{max(drifts):.3f}"
  if report["drift_source"] == "calibration":
    return f"{report['drift_networks']} calibration networks re-timed, {span}"
  return f"anchors {span}"


def validation_summary(report: Dict) -> Dict:
  """What a table keeps of its last validation (and the search's summary shows)."""
  keys = ["n", "seed", "mean_abs_error_pct", "median_abs_error_pct", "p90_abs_error_pct",
          "max_abs_error_pct", "mean_error_pct", "speed_ratios"]
  if report.get("drift_source") is not None:
    keys += ["drift_source", "drift_networks", "rescaled_mean_abs_error_pct",
             "rescaled_max_abs_error_pct"]
  return {k: report[k] for k in keys}


# ---- command line ---------------------------------------------------------------------
