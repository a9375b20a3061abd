"""The rank benchmark's figures from its stages' outputs: rankings against the ground truth
and MACs, selections against what a user would pick without a search; report and plots."""

from typing import Dict, List, Optional, Sequence

import numpy as np

from betanas_tf.bench import rank_stats

METRICS = ("top1", "loss")
PAIRS = (("betanas", "betanas_nodrop"), ("betanas", "spos"), ("betanas_nodrop", "spos"))


def _survivors(gt: Dict, searches: Dict[str, List[Dict]]) -> Dict[int, List[int]]:
  """Per betanas seed, the ground-truth networks whose every op survived its drops."""
  survivors = {}
  for run in searches.get("betanas", []):
    active = np.array(run["summary"]["active"], bool)
    survivors[run["seed"]] = [i for i, choices in enumerate(gt["choices"])
                              if all(active[l][c] for l, c in enumerate(choices))]
  return survivors


def _scores_of(run: Dict, metric: str, archs: Sequence[str], name: str) -> np.ndarray:
  """A search's scores of `archs`, in that order, from its scores_SPLIT.json (which may hold more)."""
  scored = dict(zip(run["scores"]["archs"], run["scores"][metric]))
  missing = [a for a in archs if a not in scored]
  if missing:
    raise ValueError(f"{name} seed {run['seed']} did not score {missing[0]} (and "
                     f"{len(missing) - 1} more): a score file from another ground truth?")
  return np.array([scored[a] for a in archs], np.float64)


def ranking(plan, gt: Dict, searches: Dict[str, List[Dict]]) -> Dict:
  """Taus of every ranking strategy and of MACs alone, over all networks and within cost
  strata, with paired bootstrap intervals of the difference to MACs, per metric; and the
  ground truth's own noise ceiling."""
  macs = np.asarray(gt["macs"], np.float64)
  strata = rank_stats.strata_of(macs, plan.strata)
  # Higher is better on both sides: top-1 as it is, loss negated (the supernet's too).
  truth = {"top1": np.asarray(gt["top1"], np.float64), "loss": -np.asarray(gt["loss"], np.float64)}
  ranked = {name: [r for r in runs if r["scores"] is not None] for name, runs in searches.items()}
  ranked = {name: runs for name, runs in ranked.items() if runs}
  # A strategy's searches ranked together: one ranking that costs all of them.
  ensembles = {f"{name}_ensemble": name for name, runs in ranked.items()
               if plan.ensembles and len(runs) > 1}
  ranked.update({together: ranked[name] for together, name in ensembles.items()})
  result = {"strata": [[gt["archs"][i] for i in s] for s in strata],
            "strata_macs": [[float(macs[s].min()), float(macs[s].max())] for s in strata],
            "ceiling": {}, "macs": {}, "strategies": {name: {"seeds": [r["seed"] for r in runs]}
                                                      for name, runs in ranked.items()}}
  survivors = _survivors(gt, searches)
  for metric in METRICS:
    sign = 1.0 if metric == "top1" else -1.0
    rankings = {"MACs": [macs]}
    for name, runs in ranked.items():
      rankings[name] = [sign * _scores_of(r, metric, gt["archs"], name) for r in runs]
    result["ceiling"][metric] = {"all": rank_stats.noise_ceiling(truth[metric]),
                                 "strata": rank_stats.noise_ceiling(truth[metric], strata)}
    for where, within in (("all", False), ("strata", True)):
      boot = rank_stats.paired_bootstrap(rankings, truth[metric], strata, "MACs", plan.bootstrap,
                                         within, ensembles=list(ensembles))
      result["macs"].setdefault(metric, {})[where] = boot["MACs"]
      for name in ranked:
        result["strategies"][name].setdefault(metric, {})[where] = boot[name]
    # Does selective drop change the ranking? betanas against its own --nodrop and spos,
    # paired on the same resamples (each pair only when both ranked).
    for first, second in PAIRS:
      if first in ranked and second in ranked:
        pair = {first: rankings[first], second: rankings[second]}
        entry = result.setdefault("pairs", {}).setdefault(f"{first} - {second}", {})
        entry[metric] = {where: rank_stats.paired_bootstrap(
            pair, truth[metric], strata, second, plan.bootstrap, within)[first]
                         for where, within in (("all", False), ("strata", True))}
    mean_truth = truth[metric].mean(0)
    for name, runs in ranked.items():
      entry = result["strategies"][name][metric]
      rows = ([rank_stats.ensemble_scores(rankings[name])] if name in ensembles
              else rankings[name])
      entry["per_seed"] = [rank_stats.kendall_tau(s, mean_truth) for s in rows]
      entry["per_seed_strata"] = [rank_stats.strata_tau(s, mean_truth, strata) for s in rows]
      entry["top5_overlap"] = [rank_stats.top_overlap(s, mean_truth) for s in rows]
      sub = []
      for r, s in zip([] if name in ensembles else runs, rows):
        keep = survivors.get(r["seed"])
        if keep is not None and len(keep) >= 3:
          sub.append({"seed": r["seed"], "networks": len(keep),
                      "tau": rank_stats.kendall_tau(s[keep], mean_truth[keep])})
      entry["survivors"] = sub
  for name, runs in ranked.items():
    result["strategies"][name]["balance_max_over_min"] = [
        float(np.mean([mx / max(1, mn) for mx, mn in r["summary"]["balance_max_min_per_block"]]))
        for r in runs]
  return result


def selections(plan, searches: Dict[str, List[Dict]], multi: Dict[str, List[Dict]],
               picks: Dict[str, List[str]], truth_of: Dict[str, Sequence[float]],
               budget_macs: float) -> Dict:
  """Each selecting strategy's picks (per search seed) against what a user picks without a
  search: the biggest networks within the budget (their mean: nothing tells a user which of
  several tied at the largest cost to take), the seed's random network within the budget,
  and the multi-trial search of the same seed. `truth_of`: a network's ground-truth top-1
  per training seed. Every comparison is a mean paired difference with a 95 % interval over
  search seeds and training seeds (`rank_stats.seed_paired_difference`), never a count of
  wins: one pick's margin is often inside the seed-to-seed spread."""
  def rows(choices):
    return np.asarray(truth_of[choices], np.float64)
  biggest = np.mean([rows(c) for c in picks["biggest"]], axis=0)
  seeds = plan.all_search_seeds()
  random_of = dict(zip(seeds, picks["random"]))
  result = {"budget_macs": budget_macs,
            "biggest": {"networks": list(picks["biggest"]), "top1": float(biggest.mean()),
                        "per_network": [float(rows(c).mean()) for c in picks["biggest"]]},
            "random": {"networks": picks["random"],
                       "top1": [float(rows(c).mean()) for c in picks["random"]],
                       "mean_top1": float(np.mean([rows(c).mean() for c in picks["random"]]))},
            "multi_trial": {}, "strategies": {}}
  multi_of = {}
  for oracle, runs in multi.items():
    oracle_seeds = [s for o, s in plan.multi_trials() if o == oracle]
    multi_of[oracle] = {s: r["best"] for s, r in zip(oracle_seeds, runs)}
    result["multi_trial"][oracle] = {
        "seeds": oracle_seeds, "trials": [r["trials"] for r in runs],
        "images": [r["images"] for r in runs], "selected": [r["best"] for r in runs],
        "top1": [float(rows(r["best"]).mean()) for r in runs]}
  def paired(first, second):
    return rank_stats.seed_paired_difference(first, second, plan.bootstrap)
  picked = {}
  # Every strategy that searched: the ranking ones select on their seeds too.
  for name in dict.fromkeys(plan.strategies + plan.selection_strategies):
    runs = {r["seed"]: r for r in searches.get(name, [])}
    ran = [s for s in seeds if s in runs]
    if not ran:
      continue
    chosen = [runs[s]["summary"]["choices_string"] for s in ran]
    picked[name] = dict(zip(ran, chosen))
    table = [rows(c) for c in chosen]
    versus_multi = {}
    for oracle, by_seed in multi_of.items():
      common = [s for s in ran if s in by_seed]
      versus_multi[oracle] = paired([rows(picked[name][s]) for s in common],
                                    [rows(by_seed[s]) for s in common]) if common else None
    result["strategies"][name] = {
        "seeds_run": ran, "selected": chosen, "top1": [float(t.mean()) for t in table],
        "mean_top1": float(np.mean(table)),
        "macs": [runs[s]["summary"]["cost"]["value"] for s in ran],
        "meets_budget": [runs[s]["summary"]["cost"]["meets_target"] for s in ran],
        "vs_biggest": paired(table, [biggest] * len(ran)),
        "vs_random": paired(table, [rows(random_of[s]) for s in ran]),
        "vs_multi_trial": versus_multi, "seeds": len(ran)}
  # Does selective drop change the selection? Paired over the seeds both strategies ran.
  for first, second in PAIRS:
    common = [s for s in picked.get(first, {}) if s in picked.get(second, {})]
    if common:
      result.setdefault("pairs", {})[f"{first} - {second}"] = dict(
          paired([rows(picked[first][s]) for s in common],
                 [rows(picked[second][s]) for s in common]), seeds=common)
  return result


def analyse(plan, gt: Dict, searches: Dict[str, List[Dict]], budget_macs: float,
            multi: Dict[str, List[Dict]], picks: Dict[str, List[str]],
            truth_of: Dict[str, float]) -> Dict:
  """Every figure of the report from the ground truth and the stages' outputs."""
  truth_top1 = np.mean(gt["top1"], axis=0)
  result = {"archs": gt["archs"], "macs": gt["macs"], "truth_top1": truth_top1.tolist(),
            "truth_loss": np.mean(gt["loss"], axis=0).tolist(), "gt_seeds": len(gt["top1"]),
            "budget_macs": budget_macs,
            "top1_range": [float(truth_top1.min()), float(truth_top1.max())]}
  splits = getattr(plan, "score_splits", ("arch",))
  def scored_on(split):
    return {name: [dict(r, scores=r["scores"][split] if r.get("scores") else None) for r in runs]
            for name, runs in searches.items()}
  result["score_split"] = splits[0]
  result["ranking"] = ranking(plan, gt, scored_on(splits[0]))
  # The other splits, side by side (the eval split shares its images with the truth).
  result["ranking_other_splits"] = {split: ranking(plan, gt, scored_on(split))
                                    for split in splits[1:]}
  if picks is not None:
    result["selection"] = selections(plan, searches, multi, picks, truth_of, budget_macs)
  return result


# ---- report -----------------------------------------------------------------------------

def _ci(entry: Dict, key: str = "ci") -> str:
  low, high = entry[key]
  return f"[{low:+.2f}, {high:+.2f}]" if key == "diff_ci" else f"[{low:.2f}, {high:.2f}]"


def _fmt(values: Sequence[Optional[float]], digits: int = 3) -> str:
  values = [v for v in values if v is not None]
  return " / ".join(f"{v:.{digits}f}" for v in values) if values else "-"


def report(result: Dict, plan, seconds: float) -> str:
  ranking, chosen = result["ranking"], result.get("selection")
  lines = [f"Rank benchmark: {plan.space} at {plan.input_size} px on {plan.dataset}; ground "
           f"truth: {len(result['archs'])} networks x {result['gt_seeds']} training seeds "
           f"({plan.gt_epochs} epochs each); searches of {plan.search_steps} Phase-1 steps, "
           f"MACs budget {result['budget_macs'] / 1e6:.3f}M; {seconds / 60:.1f} min.", "",
           f"Standalone eval top-1 (seed mean) from {result['top1_range'][0]:.4f} to "
           f"{result['top1_range'][1]:.4f}; {plan.strata} cost strata of "
           + ", ".join(str(len(s)) for s in ranking["strata"]) + " networks (no MACs tie "
           f"split). Supernets score on the {result['score_split']} split"
           + (" (disjoint from the eval split the truth is measured on)."
              if result["score_split"] != "eval" else
              " (the truth's own images: their sampling noise is shared with the truth)."), ""]
  for metric in METRICS:
    ceiling = ranking["ceiling"][metric]
    lines += [f"### Kendall tau on eval {'top-1' if metric == 'top1' else 'loss'}", "",
              f"Noise ceiling (one training seed against the mean of the others): "
              f"{ceiling['all']['seed_vs_rest']:.3f} over all, "
              f"{ceiling['strata']['seed_vs_rest']:.3f} within strata."
              if ceiling["all"]["seed_vs_rest"] is not None else
              "Noise ceiling: one training seed, not measurable.", "",
              "| ranking | tau, all [95 % CI] | - MACs [paired CI] | tau within strata [CI] "
              "| - MACs [paired CI] | share of rounds above MACs (strata) |",
              "|---|---|---|---|---|---|"]
    macs = ranking["macs"][metric]
    lines.append(f"| MACs alone | {macs['all']['tau']:.3f} {_ci(macs['all'])} | | "
                 f"{macs['strata']['tau']:.3f} {_ci(macs['strata'])} | | |")
    for name, entry in ranking["strategies"].items():
      e = entry[metric]
      together = "seeds ranked together" if name.endswith("_ensemble") else "seeds"
      lines.append(f"| {name} ({len(entry['seeds'])} {together}) | {e['all']['tau']:.3f} "
                   f"{_ci(e['all'])} | {e['all']['diff']:+.3f} {_ci(e['all'], 'diff_ci')} | "
                   f"{e['strata']['tau']:.3f} {_ci(e['strata'])} | {e['strata']['diff']:+.3f} "
                   f"{_ci(e['strata'], 'diff_ci')} | {e['strata']['diff_above_zero']:.2f} |")
    lines.append("")
  for pair, entry in ranking.get("pairs", {}).items():
    lines.append(f"{pair}: " + "; ".join(
        f"{metric} tau difference {entry[metric][where]['diff']:+.3f} "
        f"[{entry[metric][where]['diff_ci'][0]:+.3f}, {entry[metric][where]['diff_ci'][1]:+.3f}]"
        f" {'within strata' if where == 'strata' else 'over all'}"
        for metric in METRICS for where in ("strata", "all")))
  if ranking.get("pairs"):
    lines.append("")
  for name, entry in ranking["strategies"].items():
    sub = entry["top1"]["survivors"]
    if sub:
      lines.append(f"{name}: tau (top-1) over the networks betanas' drops left: "
                   + ", ".join(f"{s['tau']:.2f} ({s['networks']} networks, seed {s['seed']})"
                               for s in sub))
  others = result.get("ranking_other_splits", {})
  if others:
    lines += ["", "### The scoring split side by side (within-strata tau - MACs [paired CI])", "",
              "| ranking | " + " | ".join(f"{split} split, {m}" for split in
                                        [result["score_split"]] + list(others) for m in METRICS)
              + " |", "|---|" + "---|" * (len(METRICS) * (1 + len(others)))]
    for name in ranking["strategies"]:
      cells = []
      for where in [ranking] + list(others.values()):
        for metric in METRICS:
          e = where["strategies"].get(name, {}).get(metric, {}).get("strata")
          cells.append(f"{e['diff']:+.3f} {_ci(e, 'diff_ci')}" if e else "-")
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  if chosen is None:
    return "\n".join(lines) + "\n"
  big = chosen["biggest"]
  lines += ["", "### Selection under the budget (ground-truth top-1, training-seed mean)", "",
            f"Biggest networks within the budget ({len(big['networks'])} tied at the largest "
            f"cost; their mean): {', '.join(big['networks'])} {big['top1']:.4f}. Random network "
            f"within the budget (one per seed): mean {chosen['random']['mean_top1']:.4f} "
            f"({_fmt(chosen['random']['top1'], 3)}).", ""]
  for oracle, m in chosen["multi_trial"].items():
    lines.append(f"Multi-trial {oracle} at one search's training images ({m['trials'][0]} trials), "
                 f"seeds {','.join(map(str, m['seeds']))}: mean {np.mean(m['top1']):.4f} "
                 f"({_fmt(m['top1'], 3)}).")
  def diff(entry):
    if entry is None:
      return "-"
    return (f"{entry['mean']:+.4f} [{entry['ci'][0]:+.4f}, {entry['ci'][1]:+.4f}] "
            f"({entry['search_seeds']} seeds)")
  oracles = list(chosen["multi_trial"])
  lines += ["", "Mean paired differences of ground-truth top-1, 95 % interval over search and "
            "training seeds:", "",
            "| strategy | seeds | selected top-1 per seed | MMACs per seed | mean | - biggest "
            "| - the seed's random | " + " | ".join(f"- multi-trial {o}" for o in oracles) + " |",
            "|---|---|---|---|---|---|---|" + "---|" * len(oracles)]
  for name, e in chosen["strategies"].items():
    lines.append(f"| {name} | {','.join(map(str, e['seeds_run']))} | {_fmt(e['top1'], 3)} | "
                 f"{_fmt(e['macs'], 2)} | {e['mean_top1']:.4f} | "
                 f"{diff(e['vs_biggest'])} | {diff(e['vs_random'])} | "
                 + " | ".join(diff(e["vs_multi_trial"].get(o)) for o in oracles) + " |")
  for pair, e in chosen.get("pairs", {}).items():
    lines.append(f"\n{pair}, selected top-1 on the same seeds ({','.join(map(str, e['seeds']))}): "
                 f"mean difference {diff(e)}")
  return "\n".join(lines) + "\n"


# ---- figures ----------------------------------------------------------------------------

def plot(result: Dict, searches: Dict[str, List[Dict]], out_dir: str) -> List[str]:
  import os  # pylint: disable=import-outside-toplevel
  from betanas_tf import figures  # pylint: disable=import-outside-toplevel
  plt = figures.plt
  ranking, chosen = result["ranking"], result.get("selection")
  paths = []
  names = ["MACs"] + list(ranking["strategies"])
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
  for ax, metric in zip(axes, METRICS):
    for x, name in enumerate(names):
      entries = ranking["macs"][metric] if name == "MACs" else ranking["strategies"][name][metric]
      for offset, where, color, label in ((-0.12, "all", "#4C72B0", "all networks"),
                                          (0.12, "strata", "#C44E52", "within cost strata")):
        e = entries[where]
        low, high = e["ci"]
        ax.errorbar([x + offset], [e["tau"]], yerr=[[max(0.0, e["tau"] - low)],
                                                    [max(0.0, high - e["tau"])]],
                    fmt="o", color=color, capsize=3, label=label if x == 0 else None)
        if name != "MACs":
          seeds = entries["per_seed" if where == "all" else "per_seed_strata"]
          ax.plot([x + offset] * len(seeds), seeds, ".", color=color, alpha=0.4)
    for where, color in (("all", "#4C72B0"), ("strata", "#C44E52")):
      ceiling = ranking["ceiling"][metric][where]["seed_vs_rest"]
      if ceiling is not None:
        ax.axhline(ceiling, color=color, ls="--", lw=0.8,
                   label=f"noise ceiling ({where})" if metric == "top1" else None)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, fontsize=8)
    ax.set_title(f"Kendall tau vs standalone eval {'top-1' if metric == 'top1' else 'loss'}",
                 fontsize=9)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("Kendall tau (95 % bootstrap CI; dots: search seeds)")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "tau.png"))
  figures.save(fig, paths[-1])

  shown = [n for n in ("betanas", "proxyless") if searches.get(n)]
  if shown:
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.4), squeeze=False)
    for ax, name in zip(axes[0], shown):
      summary = searches[name][0]["summary"]
      counts = np.array(summary["counts"], float)
      width = 0.8 / len(counts)
      for l, row in enumerate(counts):
        ax.bar(np.arange(len(row)) + width * (l - (len(counts) - 1) / 2), row, width=width,
               label=f"block {l}")
      ax.set_title(f"{name} (seed {searches[name][0]['seed']}): Phase-1 steps per op", fontsize=9)
      ax.set_xlabel("candidate index")
      ax.legend(fontsize=7)
      ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "frequency.png"))
    figures.save(fig, paths[-1])
  if chosen is None:
    return paths
  fig, ax = plt.subplots(figsize=(7.5, 3.8))
  groups = [("random\nwithin budget", chosen["random"]["top1"])]
  groups += [(name, e["top1"]) for name, e in chosen["strategies"].items()]
  groups += [(f"{o}\n(multi-trial)", m["top1"]) for o, m in chosen["multi_trial"].items()]
  for x, (name, values) in enumerate(groups):
    ax.plot(np.full(len(values), x) + np.linspace(-0.1, 0.1, len(values)), values, "o",
            color="#4C72B0" if x == 0 else "#C44E52", alpha=0.7)
    if values:
      ax.plot([x - 0.2, x + 0.2], [np.mean(values)] * 2, color="black")
  ax.axhline(chosen["biggest"]["top1"], color="gray", ls="--", lw=0.8,
             label=f"biggest within budget (mean of {len(chosen['biggest']['networks'])})")
  ax.set_xticks(range(len(groups)))
  ax.set_xticklabels([g[0] for g in groups], rotation=20, fontsize=7)
  ax.set_ylabel("standalone eval top-1 (seed mean)")
  ax.set_title(f"Selected under {result['budget_macs'] / 1e6:.2f}M MACs (dots: search seeds; "
               "bar: mean)", fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "selected_vs_random.png"))
  figures.save(fig, paths[-1])

  return paths
