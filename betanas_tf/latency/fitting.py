"""The latency tables' fitting maths: the in-network correction fitted on calibration
networks (`fit_correction`, `leave_one_out_errors`) and the drift curves that bring a later
call's timings back to the scale a table was fitted on (`drift`, `calibration_drift`,
`drift_networks`). `table` keeps the keys, the file format and the prediction."""

from typing import Dict, List, Optional, Sequence

import numpy as np


def fit_correction(early_sums: Sequence[float], deep_sums: Sequence[float],
                   layer_counts: Sequence[int], measured: Sequence[float],
                   ridge: float = 1e-2) -> Dict[str, float]:
  """The in-network correction ``{"factor": f, "deep_factor": g, "per_layer_ms": d}``
  minimising sum_n (f a_n + g b_n + d c_n - y_n)^2 + lam_f (f - 1)^2 + lam_g (g - 1)^2
  + lam_d d^2 over calibration networks n (a_n, b_n: the table's sums of network n's early
  and deep layers (`is_deep`), c_n: how many layers it has, y_n: its measured latency);
  lam = ridge x the column's own sum of squares (1 for a column of zeros, which then keeps
  its prior).

  A layer timed alone runs with its weights and input warm in cache and hands its output to
  nobody; inside a network every layer also pays for the hand-over (d), and the deep layers,
  which read more weights per activation, find their weights cold: on three builds here the
  deep layers' factor came out 2-8 % above the early layers'. Three parameters that every
  network informs (unlike one factor per resolution: the stem's is confounded with a
  constant, since every network has the same stem, and swung between 0.83 and 1.21 over two
  builds here)."""
  x = np.stack([np.asarray(early_sums, np.float64), np.asarray(deep_sums, np.float64),
                np.asarray(layer_counts, np.float64)], 1)
  y = np.asarray(measured, np.float64)
  squares = np.sum(x * x, axis=0)
  lam = np.sqrt(np.where(squares > 0, ridge * squares, 1.0))
  a = np.vstack([x, np.diag(lam)])
  b = np.concatenate([y, lam * np.array([1.0, 1.0, 0.0])])
  factor, deep_factor, per_layer = np.linalg.lstsq(a, b, rcond=None)[0]
  return {"factor": float(factor), "deep_factor": float(deep_factor),
          "per_layer_ms": float(per_layer)}


def leave_one_out_errors(early_sums: Sequence[float], deep_sums: Sequence[float],
                         layer_counts: Sequence[int], measured: Sequence[float]) -> np.ndarray:
  """Signed error (%) of each network's prediction by the correction fitted on the others
  (`fit_correction`): how well the correction generalises to a network it has not seen."""
  early, deep, counts, y = (np.asarray(v, np.float64)
                            for v in (early_sums, deep_sums, layer_counts, measured))
  errors = []
  for i in range(len(y)):
    rest = np.arange(len(y)) != i
    fitted = fit_correction(early[rest], deep[rest], counts[rest], y[rest])
    predicted = (fitted["factor"] * early[i] + fitted["deep_factor"] * deep[i]
                 + fitted["per_layer_ms"] * counts[i])
    errors.append(100.0 * (predicted - y[i]) / y[i])
  return np.array(errors)


def drift(table, space, anchor_ms: Sequence[float]):
  """The drift curve of `table` (a `LatencyTable`) in a call whose anchors took `anchor_ms`: a function of an
  Architecture giving (its time in that call) / (its time at the reference speed),
  interpolated between the anchors' ratios over log(layer sum), constant beyond them."""
  sizes = np.log([table.layer_sum(space.arch_from_choices(c)) for c in table.anchor["choices"]])
  ratios = np.asarray(anchor_ms) / np.asarray(table.anchor["ms"])
  order = np.argsort(sizes)
  return lambda arch: float(np.interp(np.log(table.layer_sum(arch)), sizes[order], ratios[order]))

def drift_networks(table, count: int) -> List[int]:
  """`count` calibration networks (indices) spread evenly over their range of times."""
  order = np.argsort(table.calibration["ms"], kind="stable")
  picks = np.unique(np.round(np.linspace(0, len(order) - 1, min(count, len(order)))).astype(int))
  return sorted(int(order[p]) for p in picks)

def calibration_drift(table, space, picks: Sequence[int], now_ms: Sequence[float],
                      anchor_ms: Optional[Sequence[float]] = None):
  """The drift curve of a call that re-timed calibration networks `picks` at `now_ms`: a
  function of an Architecture giving (its time in that call) / (its time on the scale the
  correction was fitted to), the least-squares line of the networks' ratios over
  log(layer sum). Many networks, and the very ones the correction was fitted on: the
  build's own errors in placing them at the reference speed cancel, and one network's
  noise moves the line by a fraction of it (three anchors' interpolation is off by 1-2 %
  per anchor, measured). Beyond the networks' range the line's end is joined to the
  ratio of the anchor on that side (`anchor_ms`: the anchors' times in the same call),
  the nearest network measured there, and held at that anchor's ratio past it (without
  anchors: held at the line's end). Random networks are often cheaper than every
  calibration network, and there a shared machine's speed moves most: a 2.9 ms network
  slowed 13 %, the line's end 6 % and the 0.8 ms anchor 21 % in one validation here."""
  sizes = np.log([table.layer_sum(space.arch_from_choices(table.calibration["choices"][i]))
                  for i in picks])
  ratios = np.asarray(now_ms, np.float64) / np.asarray([table.calibration["ms"][i] for i in picks])
  slope, intercept = np.polyfit(sizes, ratios, 1) if len(picks) > 1 else (0.0, ratios[0])
  low, high = sizes.min(), sizes.max()
  knots_x, knots_y = [low, high], [intercept + slope * low, intercept + slope * high]
  if anchor_ms is not None and table.anchor:
    anchor_sizes = np.log([table.layer_sum(space.arch_from_choices(c))
                           for c in table.anchor["choices"]])
    anchor_ratios = np.asarray(anchor_ms) / np.asarray(table.anchor["ms"])
    smallest, largest = np.argmin(anchor_sizes), np.argmax(anchor_sizes)
    if anchor_sizes[smallest] < low:
      knots_x.insert(0, anchor_sizes[smallest])
      knots_y.insert(0, anchor_ratios[smallest])
    if anchor_sizes[largest] > high:
      knots_x.append(anchor_sizes[largest])
      knots_y.append(anchor_ratios[largest])

  def drift(arch):
    x = np.log(table.layer_sum(arch))
    if low <= x <= high:
      return float(intercept + slope * x)
    return float(np.interp(x, knots_x, knots_y))
  return drift

