"""Does the search rank, and find, better networks? (the paper's Figs 5, 6 and 7)

    python -m betanas_tf.bench.rank --out_dir=/tmp/rank            # full: see docs/benchmarks.md
    python -m betanas_tf.bench.rank --out_dir=/tmp/rank --quick    # the same pipeline, small

1. Ground truth: every architecture of the space (a space too large for that: a sample
   spread over its MACs range, `cost_stratified_sample`) trained standalone with the
   project's recipe, per training seed (`tune`, a grid over them; cached on disk). The
   ground truth of an architecture is its mean eval top-1 / eval loss over the seeds; the
   seed-to-seed Kendall tau is the noise ceiling no search can beat.
2. One-shot searches through the search's public API (`runner.SearchRun`), per strategy
   (betanas, its two ablations --nodrop and --nobalanced, proxyless, spos) and seed, with the
   same Phase-1 budget (steps x batch) and MACs budget. Each trained supernet then scores
   every architecture (its weights, BN recalibrated; eval split): Kendall tau and Spearman
   rho against the ground truth, over all architectures and over the sub-space that
   survived betanas' drops (same seed), top-5 overlap, the ground-truth percentile of the
   architecture the strategy selects, and the Phase-1 balance (max / min count over ops
   alive at the end). Confidence intervals: bootstrap over architectures.
3. Searched vs random (Fig 6): the ground truth of each strategy's selection over
   `selection_seeds` seeds against the exact distribution of a uniformly random
   architecture within the same MACs budget (the grid covers the whole space).
4. Multi-trial at equal compute: keras-tuner random and Bayesian oracles under the budget,
   with as many short trials as the images one one-shot search trains on.

Writes results.json, report.md and figures (tau.png, selected_vs_random.png,
frequency.png) to --out_dir; every stage is cached there, so an interrupted run resumes.
"""

import dataclasses
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

STRATEGIES = {  # name -> (policy, ablations)
    "betanas": ("betanas", {}),
    "betanas_nodrop": ("betanas", {"drop": False}),
    "betanas_nobalanced": ("betanas", {"balanced": False}),
    "proxyless": ("proxyless", {}),
    "spos": ("spos", {}),
}


SELECTION_STRATEGIES = ("betanas", "proxyless", "spos")


@dataclasses.dataclass(frozen=True)
class RankPlan:
  space: str = "micro"
  input_size: int = 16                      # the micro space's own (canvases resized 32 -> 16)
  dataset: str = "cluttered_digits"
  gt_seeds: Tuple[int, ...] = (0, 1)
  gt_epochs: int = 8
  gt_max_trials: Optional[int] = None      # None: the whole space
  gt_oracle: str = "grid"                   # "random": a sample of gt_max_trials, the same
                                            # for every seed, drawn as gt_sample says:
  gt_sample: str = "cost_stratified"        # spread over the MACs range
                                            # (`cost_stratified_sample`), or "uniform"
                                            # (keras-tuner's random oracle, one oracle seed)
  search_seeds: Tuple[int, ...] = (0, 1, 2)   # ranking
  selection_seeds: int = 8                  # Fig 6: seeds past search_seeds only select (and
                                            # only the SELECTION_STRATEGIES)
  search_steps: int = 600
  budget_quantile: float = 0.5              # MACs budget: this quantile of the space's MACs
  beta: float = 0.5
  multi_trial_epochs: int = 2
  bootstrap: int = 1000
  strategies: Tuple[str, ...] = tuple(STRATEGIES)


QUICK = RankPlan(input_size=16, gt_seeds=(0,), gt_epochs=1, gt_max_trials=6, search_seeds=(0,),
                 selection_seeds=1, search_steps=40, multi_trial_epochs=1, bootstrap=200,
                 strategies=("betanas", "proxyless"))


def engine_config(plan: RankPlan, seed: int):
  """demo.flags' supernet settings at the plan's Phase-1 budget."""
  from betanas_tf import engine  # pylint: disable=import-outside-toplevel
  warmup = plan.search_steps // 6
  return engine.EngineConfig(
      batch_size=64, arch_batch_size=64, max_steps=plan.search_steps, lr=0.1,
      lr_warmup_steps=max(1, plan.search_steps // 30), weight_decay=4e-5, label_smoothing=0.1,
      arch_update_every=2, arch_warmup_steps=warmup, arch_lr=0.02, gate_mode="full",
      beta=plan.beta, cost_form="linear", drop_rule="prob", drop_threshold=0.3,
      drop_warmup_steps=plan.search_steps // 4, seed=seed)


# ---- statistics ---------------------------------------------------------------------

def correlations(scores: Sequence[float], truth: Sequence[float]) -> Dict[str, float]:
  """Kendall tau-b and Spearman rho (scipy) of two score lists."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  return {"kendall_tau": float(stats.kendalltau(scores, truth)[0]),
          "spearman_rho": float(stats.spearmanr(scores, truth)[0])}


def macs_tau(macs: Sequence[float], top1: Sequence[float], loss: Sequence[float]) -> Dict:
  """How well MACs alone rank the ground truth (more MACs: higher top-1, lower loss): the
  Kendall tau a ranking must beat to add anything a cost count does not."""
  macs = np.asarray(macs, np.float64)
  return {"top1": correlations(macs, top1)["kendall_tau"],
          "loss": correlations(-macs, loss)["kendall_tau"]}


def bootstrap_tau(per_seed_scores: Sequence[Sequence[float]], truth: Sequence[float],
                  rounds: int, seed: int = 0) -> Tuple[float, float]:
  """95 % interval of the seed-mean Kendall tau, resampling architectures (the same
  resample for every seed)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  truth = np.asarray(truth)
  scores = [np.asarray(s) for s in per_seed_scores]
  values = []
  for _ in range(rounds):
    pick = rng.integers(len(truth), size=len(truth))
    taus = [stats.kendalltau(s[pick], truth[pick])[0] for s in scores]
    if not any(np.isnan(taus)):
      values.append(float(np.mean(taus)))
  if not values:  # constant scores: tau is undefined in every resample
    return float("nan"), float("nan")
  return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def top_overlap(scores: Sequence[float], truth: Sequence[float], k: int = 5) -> int:
  """|top-k by score & top-k by truth| (higher is better for both)."""
  return len(set(np.argsort(scores)[::-1][:k]) & set(np.argsort(truth)[::-1][:k]))


def percentile_of(value: float, population: Sequence[float]) -> float:
  """Share of `population` strictly below `value`, plus half the ties (0-100)."""
  population = np.asarray(population)
  return float(100.0 * (np.mean(population < value) + 0.5 * np.mean(population == value)))


# ---- stages -------------------------------------------------------------------------

GT_SAMPLES = ("uniform", "cost_stratified")
POOL = 100_000   # spaces larger than this are stratified over a uniform pool of this many


def cost_stratified_sample(space, count: int, seed: int = 0) -> List[str]:
  """`count` architectures of `space` (compact form) whose MACs cover the space's range
  evenly: the range from the cheapest to the costliest is cut into `count` bins of equal
  width and one architecture is drawn uniformly from each bin that holds any; the picks
  that empty bins leave are drawn from the others, one per bin in turn. A uniform sample
  of a combinatorial space piles up around its median cost (`small`: 89 % of networks hold
  at most one identity) and misses the weak and the strong networks that an enumerated
  space (micro's ground truth) contains. Deterministic in `seed`."""
  from betanas_tf import cost as cost_lib  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  if space.size() <= POOL:
    pool = list(space.enumerate())
  else:
    pool = list(dict.fromkeys(tuple(space.sample(rng)) for _ in range(POOL)))
  costs = cost_lib.macs_cost_table(space)
  macs = np.array([costs.of_choices(c) for c in pool])
  edges = np.linspace(macs.min(), macs.max(), count + 1)
  bins = np.clip(np.searchsorted(edges, macs, side="right") - 1, 0, count - 1)
  members = [list(rng.permutation(np.flatnonzero(bins == b))) for b in range(count)]
  picks: List[int] = []
  while len(picks) < min(count, len(pool)):
    for left in members:
      if left and len(picks) < count:
        picks.append(int(left.pop()))
  return [space.choices_to_string(pool[i]) for i in picks]


def _ground_truth_seed(plan: RankPlan, seed: int, out_dir: str) -> Dict:
  """One training seed of the ground truth (`tune`; cached, so a second call reads it)."""
  from betanas_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  from betanas_tf import tune  # pylint: disable=import-outside-toplevel
  recipe = dataclasses.replace(tune.TuneConfig().train, data=data_lib.DataSource(plan.dataset),
                               epochs=plan.gt_epochs, seed=seed)
  if plan.gt_sample not in GT_SAMPLES:
    raise ValueError(f"gt_sample must be one of {', '.join(GT_SAMPLES)}, got {plan.gt_sample!r}")
  oracle, architectures = plan.gt_oracle, ()
  if plan.gt_oracle == "random" and plan.gt_sample == "cost_stratified":
    space = spaces.get_space(plan.space, plan.input_size)
    oracle = "grid"
    architectures = tuple(cost_stratified_sample(space, plan.gt_max_trials))
  config = tune.TuneConfig(space=plan.space, input_size=plan.input_size, oracle=oracle,
                           max_trials=plan.gt_max_trials, architectures=architectures,
                           tuner_seed=0, train=recipe)
  return tune.tune(os.path.join(out_dir, f"ground_truth_seed{seed}"), config)


def ground_truth(plan: RankPlan, out_dir: str, workers: int = 1) -> Dict:
  """{"archs": [choices string], "choices", "macs", "top1": per seed, "loss": per seed};
  the seeds train side by side in `workers` processes (`parallel.run_tasks`)."""
  from betanas_tf.bench import parallel  # pylint: disable=import-outside-toplevel
  parallel.run_tasks([(_ground_truth_seed, (plan, seed, out_dir)) for seed in plan.gt_seeds],
                     workers)
  per_seed = []
  for seed in plan.gt_seeds:
    results = _ground_truth_seed(plan, seed, out_dir)
    per_seed.append({r["choices_string"]: r for r in results["trials"] if r["status"] == "COMPLETED"})
  archs = sorted(set.intersection(*[set(p) for p in per_seed]))
  first = per_seed[0]
  return {"archs": archs, "choices": [first[a]["choices"] for a in archs],
          "macs": [first[a]["cost"] * 1e6 for a in archs],
          "top1": [[p[a]["eval_top1"] for a in archs] for p in per_seed],
          "loss": [[p[a]["eval_loss"] for a in archs] for p in per_seed],
          "images_per_trial": first[archs[0]]["images"]}


def one_search(plan: RankPlan, strategy: str, seed: int, out_dir: str, budget_macs: float,
               gt: Dict, score: bool) -> Dict:
  """Runs (or resumes) one search and, if `score`, scores every ground-truth architecture
  with its supernet (cached in scores.json)."""
  from betanas_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import policies, runner  # pylint: disable=import-outside-toplevel
  run_dir = os.path.join(out_dir, "searches", f"{strategy}_seed{seed}")
  scores_path = os.path.join(run_dir, "scores.json")
  summary_path = os.path.join(run_dir, "summary.json")
  if os.path.exists(summary_path) and (not score or os.path.exists(scores_path)):
    summary = json.load(open(summary_path))
    scores = json.load(open(scores_path)) if score else None
    return {"summary": summary, "scores": scores}
  policy_name, ablations = STRATEGIES[strategy]
  policy = policies.POLICIES.get(policy_name).with_ablations(**ablations)
  settings = runner.RunSettings(out_dir=run_dir, space=plan.space, input_size=plan.input_size,
                                dataset=data_lib.DataSource(plan.dataset), cost="macs",
                                cost_target=budget_macs, checkpoint_every=plan.search_steps,
                                log_every=max(10, plan.search_steps // 20), eval_batches=6,
                                calibration_batches=5, progress=False)
  run = runner.SearchRun(settings, policy, engine_config(plan, seed))
  start = time.time()
  summary = run.run()
  scores = None
  if score:
    metrics = run.score_paths(gt["choices"], split="eval")
    scores = {"top1": [m["top1"] for m in metrics], "loss": [m["loss"] for m in metrics],
              "seconds": time.time() - start}
    from betanas_tf import io_utils  # pylint: disable=import-outside-toplevel
    io_utils.atomic_write_json(scores_path, scores)
  return {"summary": summary, "scores": scores}


def multi_trial(plan: RankPlan, oracle: str, seed: int, out_dir: str, budget_macs: float,
                images: float, train_examples: int) -> Dict:
  """A keras-tuner search under the budget with as many `multi_trial_epochs` trials as fit
  in `images` (one one-shot search's images)."""
  from betanas_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import tune  # pylint: disable=import-outside-toplevel
  per_trial = plan.multi_trial_epochs * (train_examples // 64) * 64
  trials = max(1, int(images // per_trial))
  recipe = dataclasses.replace(tune.TuneConfig().train, data=data_lib.DataSource(plan.dataset),
                               epochs=plan.multi_trial_epochs, seed=seed)
  config = tune.TuneConfig(space=plan.space, input_size=plan.input_size, oracle=oracle,
                           max_trials=trials, cost_target=budget_macs, tuner_seed=seed,
                           bayesian_initial_points=max(1, trials // 3), train=recipe)
  results = tune.tune(os.path.join(out_dir, "multi_trial", f"{oracle}_seed{seed}"), config)
  return {"trials": trials, "best": results["best"]["choices_string"],
          "images": results["images_total"]}


def one_shot_images(plan: RankPlan) -> float:
  config = engine_config(plan, 0)
  return float(config.max_steps * config.batch_size
               + config.arch_steps_before(config.max_steps) * config.arch_batch_size)


def analyse(plan: RankPlan, gt: Dict, searches: Dict[str, List[Dict]], budget_macs: float,
            multi: Dict[str, List[Dict]]) -> Dict:
  """Every figure of the report from the ground truth and the searches' outputs."""
  archs = gt["archs"]
  index = {a: i for i, a in enumerate(archs)}
  truth_top1 = np.mean(gt["top1"], axis=0)
  truth_loss = np.mean(gt["loss"], axis=0)
  feasible = [i for i, m in enumerate(gt["macs"]) if m <= budget_macs]
  result = {"archs": archs, "macs": gt["macs"], "truth_top1": truth_top1.tolist(),
            "truth_loss": truth_loss.tolist(),
            "budget_macs": budget_macs, "feasible": len(feasible),
            "top1_range": [float(truth_top1.min()), float(truth_top1.max())]}
  if len(gt["top1"]) > 1:
    result["ground_truth_seed_tau"] = {
        "top1": correlations(gt["top1"][0], gt["top1"][1])["kendall_tau"],
        "loss": correlations(gt["loss"][0], gt["loss"][1])["kendall_tau"]}
  result["macs_tau"] = macs_tau(gt["macs"], truth_top1, truth_loss)
  random_gt = truth_top1[feasible]
  result["random_within_budget"] = {"mean_top1": float(random_gt.mean()),
                                    "p10": float(np.percentile(random_gt, 10)),
                                    "p90": float(np.percentile(random_gt, 90)),
                                    "values": random_gt.tolist()}
  # The sub-space surviving betanas' drops, per seed (all of it if betanas did not run).
  survivors = {}
  for run in searches.get("betanas", []):
    active = np.array(run["summary"]["active"], bool)
    survivors[run["seed"]] = [i for i, choices in enumerate(gt["choices"])
                              if all(active[l][c] for l, c in enumerate(choices))]
  strategies = {}
  for name, runs in searches.items():
    ranked = [r for r in runs if r["scores"] is not None]
    entry = {"seeds": [r["seed"] for r in ranked]}
    for metric, truth, sign in (("top1", truth_top1, 1.0), ("loss", truth_loss, -1.0)):
      per_seed = [r["scores"][metric] for r in ranked]
      taus = [correlations(s, truth) for s in per_seed]
      entry[f"tau_{metric}"] = [t["kendall_tau"] for t in taus]
      entry[f"rho_{metric}"] = [t["spearman_rho"] for t in taus]
      entry[f"tau_{metric}_mean"] = float(np.mean(entry[f"tau_{metric}"])) if taus else None
      entry[f"tau_{metric}_ci"] = (bootstrap_tau(per_seed, truth, plan.bootstrap)
                                   if per_seed else None)
      sub = []
      for r, s in zip(ranked, per_seed):
        keep = survivors.get(r["seed"])
        if keep is not None and len(keep) >= 3:
          sub.append(correlations(np.asarray(s)[keep], truth[keep])["kendall_tau"])
      entry[f"tau_{metric}_survivors"] = sub
      entry[f"top5_overlap_{metric}"] = [top_overlap(sign * np.asarray(s), sign * truth)
                                         for s in per_seed]
    entry["survivors_size"] = [len(survivors[r["seed"]]) for r in ranked if r["seed"] in survivors]
    selected = [index.get(r["summary"]["choices_string"]) for r in runs]
    entry["selected"] = [r["summary"]["choices_string"] for r in runs]
    entry["selected_top1"] = [float(truth_top1[i]) if i is not None else None for i in selected]
    entry["selected_percentile"] = [percentile_of(truth_top1[i], truth_top1) if i is not None
                                    else None for i in selected]
    entry["selected_meets_budget"] = [r["summary"]["cost"]["meets_target"] for r in runs]
    entry["balance_max_over_min"] = [
        float(np.mean([mx / max(1, mn) for mx, mn in r["summary"]["balance_max_min_per_block"]]))
        for r in runs]
    strategies[name] = entry
  result["strategies"] = strategies
  result["multi_trial"] = {}
  for oracle, runs in multi.items():
    picks = [index.get(r["best"]) for r in runs]
    result["multi_trial"][oracle] = {
        "trials": [r["trials"] for r in runs], "images": [r["images"] for r in runs],
        "selected": [r["best"] for r in runs],
        "selected_top1": [float(truth_top1[i]) for i in picks if i is not None]}
  return result


# ---- figures and report ---------------------------------------------------------------

def plot(result: Dict, searches: Dict[str, List[Dict]], out_dir: str) -> List[str]:
  from betanas_tf import figures  # pylint: disable=import-outside-toplevel
  plt = figures.plt
  paths = []
  names = list(result["strategies"])
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
  for ax, metric in zip(axes, ("loss", "top1")):
    for x, name in enumerate(names):
      entry = result["strategies"][name]
      if entry[f"tau_{metric}_mean"] is None:
        continue
      low, high = entry[f"tau_{metric}_ci"]
      mean = entry[f"tau_{metric}_mean"]
      ax.errorbar([x - 0.12], [mean], yerr=[[max(0.0, mean - low)], [max(0.0, high - mean)]],
                  fmt="o", color="#4C72B0",
                  capsize=3, label="all architectures" if x == 0 else None)
      ax.plot([x - 0.12] * len(entry[f"tau_{metric}"]), entry[f"tau_{metric}"], ".", color="#4C72B0",
              alpha=0.4)
      sub = entry[f"tau_{metric}_survivors"]
      if sub:
        ax.plot([x + 0.12] * len(sub), sub, "s", ms=4, color="#C44E52", alpha=0.7,
                label="betanas' surviving sub-space" if x == 0 else None)
    ceiling = result.get("ground_truth_seed_tau", {}).get(metric)
    if ceiling is not None:
      ax.axhline(ceiling, color="gray", ls="--", lw=0.8, label="ground truth seed-to-seed")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, fontsize=8)
    ax.set_title(f"Kendall tau vs standalone ({'eval loss' if metric == 'loss' else 'eval top-1'})",
                 fontsize=9)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("Kendall tau (mean, 95 % bootstrap CI; dots: seeds)")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "tau.png"))
  figures.save(fig, paths[-1])

  fig, ax = plt.subplots(figsize=(7, 3.8))
  random_values = result["random_within_budget"]["values"]
  if len(random_values) > 1:
    ax.violinplot([random_values], positions=[0], showmedians=True)
  ax.plot(np.zeros(len(random_values)), random_values, "_", color="#4C72B0", ms=12)
  labels = ["random\nwithin budget"]
  groups = [(n, result["strategies"][n]["selected_top1"]) for n in names]
  groups += [(f"{o}\n(multi-trial)", m["selected_top1"]) for o, m in result["multi_trial"].items()]
  for x, (name, values) in enumerate(groups, start=1):
    values = [v for v in values if v is not None]
    ax.plot(np.full(len(values), x) + np.linspace(-0.1, 0.1, len(values)), values, "o",
            color="#C44E52", alpha=0.7)
    if values:
      ax.plot([x - 0.2, x + 0.2], [np.mean(values)] * 2, color="black")
    labels.append(name)
  ax.set_xticks(range(len(labels)))
  ax.set_xticklabels(labels, rotation=20, fontsize=7)
  ax.set_ylabel("standalone eval top-1 of the selection")
  ax.set_title(f"Selected vs random under {result['budget_macs'] / 1e6:.2f}M MACs "
               "(dots: seeds; bar: mean)", fontsize=9)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "selected_vs_random.png"))
  figures.save(fig, paths[-1])

  shown = [n for n in ("betanas", "proxyless") if searches.get(n)]
  if shown:
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.4), squeeze=False)
    for ax, name in zip(axes[0], shown):
      summary = searches[name][0]["summary"]
      counts = np.array(summary["counts"], float)
      for l, row in enumerate(counts):
        ax.bar(np.arange(len(row)) + 0.25 * l - 0.25, row, width=0.25, label=f"block {l}")
      ax.set_title(f"{name} (seed {searches[name][0]['seed']}): Phase-1 steps per op", fontsize=9)
      ax.set_xlabel("candidate index")
      ax.legend(fontsize=7)
      ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "frequency.png"))
    figures.save(fig, paths[-1])
  return paths


def _fmt(values, digits=3):
  values = [v for v in values if v is not None]
  return " / ".join(f"{v:.{digits}f}" for v in values) if values else "—"


def report(result: Dict, plan: RankPlan, seconds: float) -> str:
  lines = [f"Rank benchmark: {plan.space} at {plan.input_size} px on {plan.dataset}, "
           f"{len(result['archs'])} architectures, ground truth over training seeds "
           f"{list(plan.gt_seeds)} ({plan.gt_epochs} epochs each); searches of "
           f"{plan.search_steps} Phase-1 steps, MACs budget {result['budget_macs'] / 1e6:.3f}M "
           f"({result['feasible']} architectures within it); {seconds / 60:.1f} min.", "",
           f"Standalone eval top-1 from {result['top1_range'][0]:.4f} to "
           f"{result['top1_range'][1]:.4f}."]
  if "ground_truth_seed_tau" in result:
    lines.append(f"Ground truth seed-to-seed Kendall tau: top-1 "
                 f"{result['ground_truth_seed_tau']['top1']:.3f}, loss "
                 f"{result['ground_truth_seed_tau']['loss']:.3f} (the noise ceiling).")
  lines.append(f"MACs alone rank the ground truth at Kendall tau {result['macs_tau']['top1']:.3f} "
               f"(top-1) / {result['macs_tau']['loss']:.3f} (loss): a supernet's ranking adds "
               "something only above that.")
  lines += ["", "| strategy | tau (loss), per seed | mean [95 % CI] | tau (top-1) mean [CI] | "
            "tau (loss) in the surviving sub-space | top-5 overlap (loss) | selected: GT top-1 "
            "(percentile) | Phase-1 max/min |", "|---|---|---|---|---|---|---|---|"]
  for name, e in result["strategies"].items():
    ci = e["tau_loss_ci"]
    ci1 = e["tau_top1_ci"]
    lines.append(
        f"| {name} | {_fmt(e['tau_loss'], 2)} | "
        + (f"{e['tau_loss_mean']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "—") + " | "
        + (f"{e['tau_top1_mean']:.3f} [{ci1[0]:.2f}, {ci1[1]:.2f}]" if ci1 else "—") + " | "
        + f"{_fmt(e['tau_loss_survivors'], 2)} (sizes {e['survivors_size']}) | "
        + f"{e['top5_overlap_loss']} | "
        + f"{_fmt(e['selected_top1'], 4)} ({_fmt(e['selected_percentile'], 0)}) | "
        + f"{_fmt(e['balance_max_over_min'], 2)} |")
  random = result["random_within_budget"]
  lines += ["", f"Random architecture within the budget (exact, from the ground truth): mean "
            f"top-1 {random['mean_top1']:.4f}, p10 {random['p10']:.4f}, p90 {random['p90']:.4f}."]
  for oracle, m in result["multi_trial"].items():
    lines.append(f"Multi-trial {oracle} at the images of one one-shot search "
                 f"({m['trials'][0] if m['trials'] else 0} trials): selected GT top-1 "
                 f"{_fmt(m['selected_top1'], 4)}.")
  return "\n".join(lines) + "\n"


def run(out_dir: str, plan: RankPlan = RankPlan(), log=print, workers: int = 1) -> Dict:
  """The whole benchmark (module docstring); returns results.json's contents. Its stages run
  in `workers` single-threaded processes (`parallel.run_tasks`)."""
  from betanas_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import io_utils  # pylint: disable=import-outside-toplevel
  from betanas_tf.bench import parallel  # pylint: disable=import-outside-toplevel
  start = time.time()
  os.makedirs(out_dir, exist_ok=True)
  gt = ground_truth(plan, out_dir, workers)
  log(f"ground truth: {len(gt['archs'])} architectures x {len(plan.gt_seeds)} seeds "
      f"({time.time() - start:.0f} s)")
  budget = float(np.quantile(gt["macs"], plan.budget_quantile))
  runs = [(name, seed, seed in plan.search_seeds)
          for seed in range(max(len(plan.search_seeds), plan.selection_seeds))
          for name in plan.strategies
          # The ablations rank; selecting over 8 seeds is for the strategies themselves.
          if seed in plan.search_seeds or name in SELECTION_STRATEGIES]
  train_examples = len(data_lib.load(plan.dataset, input_size=plan.input_size).train)
  trials = [(oracle, seed) for oracle in ("random", "bayesian") for seed in plan.search_seeds]
  # Searches and multi-trial searches side by side; the loops below then read their outputs.
  # (The longest tasks, multi-trial searches, first: the last to start is then a short one.)
  ran = parallel.run_tasks(
      [(multi_trial, (plan, oracle, seed, out_dir, budget, one_shot_images(plan),
                      train_examples)) for oracle, seed in trials]
      + [(one_search, (plan, name, seed, out_dir, budget, gt, score)) for name, seed, score in runs],
      workers)
  if ran:
    log(f"{len(runs)} searches and {len(trials)} multi-trial searches in {workers} workers "
        f"({time.time() - start:.0f} s)")
  searches: Dict[str, List[Dict]] = {name: [] for name in plan.strategies}
  for name, seed, score in runs:
    out = one_search(plan, name, seed, out_dir, budget, gt, score)
    searches[name].append(dict(out, seed=seed))
    log(f"search {name} seed {seed}: {out['summary']['choices_string']} "
        f"({time.time() - start:.0f} s)")
  multi = {oracle: [multi_trial(plan, oracle, seed, out_dir, budget, one_shot_images(plan),
                                train_examples) for o, seed in trials if o == oracle]
           for oracle in ("random", "bayesian")}
  log(f"multi-trial done ({time.time() - start:.0f} s)")
  result = analyse(plan, gt, searches, budget, multi)
  result["plan"] = dataclasses.asdict(plan)
  result["seconds"] = time.time() - start
  result["figures"] = plot(result, searches, out_dir)
  io_utils.atomic_write_json(os.path.join(out_dir, "results.json"), result)
  io_utils.atomic_write_text(os.path.join(out_dir, "report.md"), report(result, plan, result["seconds"]))
  return result


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  del argv
  f = flags.FLAGS
  if not f.out_dir:
    print("rank: error: give --out_dir", file=sys.stderr)
    return 1
  plan = QUICK if f.quick else RankPlan()
  result = run(f.out_dir, plan, log=lambda m: print(m, flush=True), workers=f.workers)
  print(report(result, plan, result["seconds"]))
  return 0


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out_dir", None, "Output directory (re-running resumes).")
  flags.DEFINE_bool("quick", False, "The small plan (a few minutes; what the test runs).")
  from betanas_tf.bench import parallel as _parallel  # pylint: disable=g-import-not-at-top
  flags.DEFINE_integer("workers", _parallel.available_cores(), "Processes for the independent "
                       "stages, one TensorFlow thread each (1: all in this process).",
                       lower_bound=1)
  app.run(main)
