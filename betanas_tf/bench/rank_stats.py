"""The rank benchmark's statistics: Kendall tau overall and within cost strata, and bootstrap
intervals that resample architectures and seeds together.

A supernet is worth running only where it ranks networks better than counting their MACs.
Over a whole space MACs alone already rank well (bigger networks are better), so the test
that matters is *within a cost level*: `strata_of` cuts the networks into groups of about
equal size by MACs and `strata_tau` averages the tau inside each group. `paired_bootstrap`
puts a 95 % interval on tau(ranking) - tau(MACs): every round resamples the architectures
(within their stratum, so the strata keep their sizes), the ground-truth training seeds (the
truth is the mean over the resampled seeds) and the search seeds, and both taus are computed
on that same resample, so the noise they share cancels in the difference.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np


def kendall_tau(scores: Sequence[float], truth: Sequence[float]) -> float:
  """scipy's Kendall tau-b (nan when either side is constant)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  return float(stats.kendalltau(scores, truth)[0])


def correlations(scores: Sequence[float], truth: Sequence[float]) -> Dict[str, float]:
  """Kendall tau-b and Spearman rho (scipy) of two score lists."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  return {"kendall_tau": kendall_tau(scores, truth),
          "spearman_rho": float(stats.spearmanr(scores, truth)[0])}


def strata_of(macs: Sequence[float], count: int) -> List[np.ndarray]:
  """Indices of the networks in `count` groups of consecutive MACs that never split a MACs
  tie (a cut falls only between two different costs), their sizes as close to equal as
  the ties allow (least squares over the sizes; at least 2 networks each, so that a tau is
  defined). A ValueError when the costs have too few distinct values for `count` groups."""
  macs = np.asarray(macs, np.float64)
  n = len(macs)
  if count < 1:
    raise ValueError(f"strata must be at least 1, got {count}")
  if count > n // 3:
    raise ValueError(f"{count} strata of {n} networks leave fewer than 3 per stratum")
  order = np.argsort(macs, kind="stable")
  ordered = macs[order]
  # Where a cut may fall: the positions where the sorted cost changes, and both ends.
  ends = [0] + [i for i in range(1, n) if ordered[i] != ordered[i - 1]] + [n]
  ideal = n / count
  inf = float("inf")
  # best[k][j]: the least squared deviation of k groups covering ordered[:ends[j]].
  best = np.full((count + 1, len(ends)), inf)
  back = np.zeros((count + 1, len(ends)), int)
  best[0][0] = 0.0
  for k in range(1, count + 1):
    for j in range(1, len(ends)):
      for i in range(j):
        size = ends[j] - ends[i]
        if size >= 2 and best[k - 1][i] < inf:
          value = best[k - 1][i] + (size - ideal) ** 2
          if value < best[k][j]:
            best[k][j], back[k][j] = value, i
  if best[count][-1] == inf:
    raise ValueError(f"{n} networks hold {len(ends) - 1} distinct MACs values: too few for "
                     f"{count} strata that never split a tie (at least 2 networks each)")
  cuts, j = [], len(ends) - 1
  for k in range(count, 0, -1):
    i = back[k][j]
    cuts.append((ends[i], ends[j]))
    j = i
  return [np.sort(order[a:b]) for a, b in reversed(cuts)]


def stratum_taus(scores: Sequence[float], truth: Sequence[float],
                 strata: Sequence[Sequence[int]]) -> np.ndarray:
  """The Kendall tau inside each stratum (nan where it is undefined: a constant side)."""
  scores, truth = np.asarray(scores, np.float64), np.asarray(truth, np.float64)
  return np.array([kendall_tau(scores[s], truth[s]) for s in strata], np.float64)


def strata_tau(scores: Sequence[float], truth: Sequence[float],
               strata: Sequence[Sequence[int]]) -> float:
  """The mean over strata of the Kendall tau inside each (strata where it is undefined,
  a constant side, are left out; nan if all are)."""
  taus = stratum_taus(scores, truth, strata)
  return float(np.nanmean(taus)) if not np.all(np.isnan(taus)) else float("nan")


def ranking_tau(per_seed_scores: Sequence[Sequence[float]], truth: Sequence[float],
                strata: Optional[Sequence[Sequence[int]]] = None) -> float:
  """Mean over search seeds of the tau of each seed's scores (within strata if given)."""
  if strata is None:
    taus = [kendall_tau(s, truth) for s in per_seed_scores]
  else:
    taus = [strata_tau(s, truth, strata) for s in per_seed_scores]
  return float(np.nanmean(taus)) if len(taus) and not np.all(np.isnan(taus)) else float("nan")


def _common_taus(per_seed: Dict[str, np.ndarray], truth: np.ndarray, strata) -> Dict[str, float]:
  """Each ranking's tau (name -> its searches' scores, one row each), all of them on the
  same networks: over all networks (`strata` None) the mean over searches; within strata,
  per stratum the mean over searches, then the mean over the strata where EVERY ranking's
  tau is defined, so that no two rankings are averaged over different strata."""
  if strata is None:
    return {name: ranking_tau(rows, truth) for name, rows in per_seed.items()}
  per_stratum = {}
  for name, rows in per_seed.items():
    taus = np.array([stratum_taus(row, truth, strata) for row in rows])
    counts = (~np.isnan(taus)).sum(0)
    per_stratum[name] = np.where(counts > 0, np.nansum(taus, 0) / np.maximum(counts, 1), np.nan)
  common = np.all([~np.isnan(t) for t in per_stratum.values()], axis=0)
  if not common.any():
    return {name: float("nan") for name in per_seed}
  return {name: float(t[common].mean()) for name, t in per_stratum.items()}


def ensemble_scores(per_seed_scores: Sequence[Sequence[float]]) -> np.ndarray:
  """One score per network from several searches' scores: the mean of each search's ranks
  (ties share their mean rank), so that no search weighs more for a wider score range."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  return np.mean([stats.rankdata(row) for row in np.asarray(per_seed_scores, np.float64)], 0)


def paired_bootstrap(rankings: Dict[str, Sequence[Sequence[float]]],
                     truth_per_seed: Sequence[Sequence[float]], strata: Sequence[Sequence[int]],
                     baseline: str, rounds: int, within: bool, seed: int = 0,
                     ensembles: Sequence[str] = ()) -> Dict[str, Dict]:
  """For each ranking (name -> per search seed, one score per network; higher = better),
  its tau against the ground truth (mean over `truth_per_seed` rows) and the paired 95 %
  interval of tau - tau(`baseline`), both over all networks or, if `within`, averaged within
  `strata`. A round resamples, with replacement: the networks inside each stratum, the
  ground-truth seeds, and each ranking's search seeds; the baseline is scored on the same
  networks and ground-truth seeds. The rankings named in `ensembles` are scored as one
  ranking of their searches together (`ensemble_scores` of the resampled search seeds)
  instead of each search on its own. Within strata, every ranking of one call is averaged
  over the same strata: those where all of them have a tau (`_common_taus`). Returns
  name -> {"tau", "ci", "diff", "diff_ci",
  "diff_above_zero" (share of rounds with a positive difference)}."""
  rng = np.random.default_rng(seed)
  # Ensembles draw their search seeds from a generator of their own, so that asking for one
  # leaves every other ranking's resamples, and so its interval, as they were.
  ensemble_rng = np.random.default_rng([seed, 1])
  truth_rows = np.asarray(truth_per_seed, np.float64)
  scores = {name: np.asarray(rows, np.float64) for name, rows in rankings.items()}
  # An ensemble's searches enter as ranks over every network, computed once: a resample
  # repeats networks, and a network drawn twice must not change the others' ranks.
  ranks = {name: np.asarray([ensemble_scores([row]) for row in scores[name]])
           for name in ensembles}
  groups = [np.asarray(s) for s in strata]
  truth = truth_rows.mean(0)
  def rows_of(name, rows):   # an ensemble is one ranking: its searches' mean rank
    return rows.mean(0, keepdims=True) if name in ranks else rows
  point = _common_taus({name: rows_of(name, ranks.get(name, rows)) for name, rows in
                        scores.items()}, truth, groups if within else None)
  samples = {name: [] for name in scores}
  diffs = {name: [] for name in scores}
  for _ in range(rounds):
    picks = [rng.choice(g, size=len(g)) for g in groups]
    pick = np.concatenate(picks)
    offsets = np.cumsum([0] + [len(p) for p in picks])
    local = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(picks))]
    rows = truth_rows[rng.integers(len(truth_rows), size=len(truth_rows))]
    sample_truth = rows.mean(0)[pick]
    chosen = {}
    for name, per_seed in scores.items():
      draw = ensemble_rng if name in ranks else rng
      searches = ranks.get(name, per_seed)[draw.integers(len(per_seed), size=len(per_seed))]
      chosen[name] = rows_of(name, searches)[:, pick]
    taus = _common_taus(chosen, sample_truth, local if within else None)
    for name in scores:
      if np.isnan(taus[name]) or np.isnan(taus[baseline]):
        continue
      samples[name].append(taus[name])
      diffs[name].append(taus[name] - taus[baseline])
  result = {}
  for name in scores:
    ci = (np.percentile(samples[name], [2.5, 97.5]).tolist() if samples[name]
          else [float("nan")] * 2)
    diff_ci = (np.percentile(diffs[name], [2.5, 97.5]).tolist() if diffs[name]
               else [float("nan")] * 2)
    result[name] = {"tau": point[name], "ci": ci, "diff": point[name] - point[baseline],
                    "diff_ci": diff_ci,
                    "diff_above_zero": float(np.mean(np.asarray(diffs[name]) > 0))
                    if diffs[name] else float("nan")}
  return result


def seed_paired_difference(first: Sequence[Sequence[float]], second: Sequence[Sequence[float]],
                           rounds: int, seed: int = 0) -> Dict:
  """The mean of `first` - `second`, both (search seeds x ground-truth training seeds): row
  i of both belongs to search seed i (a pick and what it is compared with on that seed),
  column j to training seed j. The 95 % interval resamples search seeds and training seeds
  together, the same draw on both sides (a pair's shared noise cancels). Returns {"mean",
  "ci", "per_seed" (each search seed's difference of the means over training seeds),
  "search_seeds", "training_seeds", "above_zero" (share of rounds with a positive mean)}."""
  a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
  if a.shape != b.shape or a.ndim != 2 or not a.size:
    raise ValueError(f"paired differences need two equal (search seeds x training seeds) "
                     f"tables, got {a.shape} and {b.shape}")
  diffs = a - b
  rng = np.random.default_rng(seed)
  means = np.array([diffs[rng.integers(len(diffs), size=len(diffs))]
                    [:, rng.integers(diffs.shape[1], size=diffs.shape[1])].mean()
                    for _ in range(rounds)])
  return {"mean": float(diffs.mean()), "ci": np.percentile(means, [2.5, 97.5]).tolist(),
          "per_seed": diffs.mean(1).tolist(), "search_seeds": int(diffs.shape[0]),
          "training_seeds": int(diffs.shape[1]), "above_zero": float(np.mean(means > 0))}


def noise_ceiling(truth_per_seed: Sequence[Sequence[float]],
                  strata: Optional[Sequence[Sequence[int]]] = None) -> Dict:
  """How reproducible the ground truth is, as the benchmark uses it (the mean over its
  seeds): "seed_vs_rest", the tau of each training seed against the mean of the others
  (averaged over seeds; the ground truth's own mean has at least that agreement with a
  fresh one), and "seed_vs_seed" (every pair, averaged). Within `strata` if given."""
  rows = np.asarray(truth_per_seed, np.float64)
  if len(rows) < 2:
    return {"seeds": len(rows), "seed_vs_rest": None, "seed_vs_seed": None}
  def tau(a, b):
    return kendall_tau(a, b) if strata is None else strata_tau(a, b, strata)
  rest = [tau(rows[s], np.delete(rows, s, axis=0).mean(0)) for s in range(len(rows))]
  pairs = [tau(rows[a], rows[b]) for a in range(len(rows)) for b in range(a + 1, len(rows))]
  return {"seeds": len(rows), "seed_vs_rest": float(np.nanmean(rest)),
          "seed_vs_seed": float(np.nanmean(pairs))}


def macs_tau(macs: Sequence[float], top1: Sequence[float], loss: Sequence[float]) -> Dict:
  """How well MACs alone rank the ground truth (more MACs: higher top-1, lower loss): the
  Kendall tau a ranking must beat to add anything a cost count does not."""
  macs = np.asarray(macs, np.float64)
  return {"top1": kendall_tau(macs, top1), "loss": kendall_tau(-macs, loss)}


def bootstrap_tau(per_seed_scores: Sequence[Sequence[float]], truth: Sequence[float],
                  rounds: int, seed: int = 0):
  """95 % interval of the seed-mean Kendall tau, resampling architectures (the same
  resample for every seed); (nan, nan) when tau is undefined in every resample."""
  rng = np.random.default_rng(seed)
  truth = np.asarray(truth)
  scores = [np.asarray(s) for s in per_seed_scores]
  values = []
  for _ in range(rounds):
    pick = rng.integers(len(truth), size=len(truth))
    taus = [kendall_tau(s[pick], truth[pick]) for s in scores]
    if not any(np.isnan(taus)):
      values.append(float(np.mean(taus)))
  if not values:
    return float("nan"), float("nan")
  return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def top_overlap(scores: Sequence[float], truth: Sequence[float], k: int = 5) -> int:
  """|top-k by score & top-k by truth| (higher is better for both)."""
  return len(set(np.argsort(scores)[::-1][:k]) & set(np.argsort(truth)[::-1][:k]))


def percentile_of(value: float, population: Sequence[float]) -> float:
  """Share of `population` strictly below `value`, plus half the ties (0-100)."""
  population = np.asarray(population)
  return float(100.0 * (np.mean(population < value) + 0.5 * np.mean(population == value)))
