"""Timing that survives a noisy shared machine.

Timing one model after another lets a slow minute of the machine (another job, a
frequency change) land on some entries and not on others. Here every model is timed
in interleaved rounds: each round visits all models in a fresh random order and
takes one sample of each (the median of `invocations` timed calls). Rounds repeat
until the 95 % confidence interval of every model's median sample is within
`rel_ci` of it (or `max_rounds`); samples further than `outlier_mads` scaled MADs
from the median are rejected before the statistics. Every entry records its spread.

A model named in `cold` is timed with the caches evicted before each timed call (the plan's
`evict_mb` of memory written, untimed): called ten times in a row, a one-layer model finds
its weights, input and the kernel's buffers in the caches, which inside a network hold the
other layers' (docs/latency.md, "Layers timed cold").
"""

import contextlib
import dataclasses
import math
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class TimingPlan:
  invocations: int = 10     # timed calls per sample; the sample is their median
  warmup: int = 5           # untimed calls per model before the first round
  min_rounds: int = 5
  max_rounds: int = 40
  rel_ci: float = 0.01      # stop when every median's 95 % CI is within +-1 % of it
  outlier_mads: float = 5.0
  evict_mb: int = 0         # memory written before each timed call of a `cold` model (0: none)


@contextlib.contextmanager
def pinned(cpus: int):
  """Runs the calling thread (and the threads it starts meanwhile, e.g. an interpreter's
  workers) on `cpus` fixed CPUs, the last ones this process may use, so the scheduler
  cannot move a timed model between cores; yields their numbers ([] where the platform
  cannot pin). The previous affinity is restored on exit."""
  if not hasattr(os, "sched_setaffinity"):
    yield []
    return
  allowed = sorted(os.sched_getaffinity(0))
  chosen = allowed[-max(1, cpus):]
  os.sched_setaffinity(0, chosen)
  try:
    yield chosen
  finally:
    os.sched_setaffinity(0, allowed)


def median_ci(samples: Sequence[float], z: float = 1.96) -> Tuple[float, float]:
  """Distribution-free confidence interval of the median: the order statistics at
  n/2 -+ z sqrt(n)/2 (binomial with p = 1/2)."""
  ordered = sorted(samples)
  n = len(ordered)
  low = max(0, math.floor(n / 2 - z * math.sqrt(n) / 2))
  high = min(n - 1, math.ceil(n / 2 + z * math.sqrt(n) / 2) - 1)
  return ordered[low], ordered[high]


def reject_outliers(samples: Sequence[float], mads: float = 5.0) -> Tuple[List[float], int]:
  """(kept samples, how many were rejected): those within `mads` scaled median absolute
  deviations of the median (1.4826 MAD estimates a normal sigma)."""
  centre = statistics.median(samples)
  spread = 1.4826 * statistics.median(abs(x - centre) for x in samples)
  if spread == 0:
    return list(samples), 0
  kept = [x for x in samples if abs(x - centre) <= mads * spread]
  return kept, len(samples) - len(kept)


def summarize(samples: Sequence[float], mads: float = 5.0) -> Dict[str, float]:
  """Median (the entry's value), mean, std, 95 % CI of the median, p10 / p90, counts."""
  kept, rejected = reject_outliers(samples, mads)
  low, high = median_ci(kept)
  return {"median": statistics.median(kept), "mean": statistics.fmean(kept),
          "std": statistics.pstdev(kept), "ci_low": low, "ci_high": high,
          "p10": float(np.percentile(kept, 10)), "p90": float(np.percentile(kept, 90)),
          "count": len(kept), "outliers": rejected}


def converged(summary: Dict[str, float], rel_ci: float) -> bool:
  return (summary["ci_high"] - summary["ci_low"]) <= 2 * rel_ci * max(summary["median"], 1e-12)


FALLBACK_EVICT_MB = 64  # where the caches' sizes cannot be read


def default_evict_mb(sysfs: str = "/sys/devices/system/cpu") -> int:
  """Twice the largest CPU cache this machine reports (Linux sysfs), in MiB: enough to write
  every line a model left in any cache out again (64 on the development machine, whose L3
  is 32 MiB); FALLBACK_EVICT_MB where sysfs says nothing."""
  import glob  # pylint: disable=import-outside-toplevel
  largest = 0
  for path in glob.glob(os.path.join(sysfs, "cpu*", "cache", "index*", "size")):
    try:
      with open(path) as handle:
        text = handle.read().strip().upper()
    except OSError:
      continue
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text.rstrip("KMG")
    if digits.isdigit():
      largest = max(largest, int(digits) * scale)
  return max(1, -(-2 * largest // (1 << 20))) if largest else FALLBACK_EVICT_MB


class CacheEvictor:
  """Writes `mb` MiB of memory: with `mb` at least twice the largest cache
  (`default_evict_mb`), the caches then hold nothing a model left in them."""

  def __init__(self, mb: int):
    self._buffer = np.zeros(mb << 20, np.uint8)

  def __call__(self):
    np.add(self._buffer, 1, out=self._buffer)


def interleaved(runners: Dict[str, Callable[[], None]], plan: TimingPlan = TimingPlan(),
                clock: Callable[[], float] = time.perf_counter, seed: int = 0,
                on_round: Optional[Callable[[int, int], None]] = None,
                cold: Sequence[str] = (),
                evict: Optional[Callable[[], None]] = None) -> Dict[str, Dict[str, float]]:
  """Times every runner (a zero-argument call: one inference) in interleaved rounds (module
  docstring); returns {key: summary in ms, plus "rounds"}. Before each timed call of a key
  in `cold`, `evict` runs untimed (default: a `CacheEvictor` of the plan's `evict_mb`; none
  when that is 0)."""
  unknown = sorted(set(cold) - set(runners))
  if unknown:
    raise ValueError(f"cold names models not timed here: {', '.join(unknown)}")
  if evict is None and plan.evict_mb and cold:
    evict = CacheEvictor(plan.evict_mb)
  cold = frozenset(cold) if evict is not None else frozenset()
  rng = np.random.default_rng(seed)
  keys = list(runners)
  for key in keys:
    for _ in range(plan.warmup):
      runners[key]()
  samples: Dict[str, List[float]] = {key: [] for key in keys}
  rounds = 0
  while rounds < plan.max_rounds:
    for index in rng.permutation(len(keys)):
      run, times = runners[keys[index]], []
      before = evict if keys[index] in cold else None
      for _ in range(plan.invocations):
        if before is not None:
          before()
        start = clock()
        run()
        times.append((clock() - start) * 1000.0)
      samples[keys[index]].append(statistics.median(times))
    rounds += 1
    if on_round is not None:
      on_round(rounds, plan.max_rounds)
    if rounds >= plan.min_rounds and all(
        converged(summarize(samples[k], plan.outlier_mads), plan.rel_ci) for k in keys):
      break
  return {key: dict(summarize(samples[key], plan.outlier_mads), rounds=rounds) for key in keys}
