"""Does the search rank, and find, better networks than counting MACs? (the paper's Figs 5-7)

    python -m betanas_tf.bench.rank --out_dir=/tmp/rank            # small, the shipped ground truth
    python -m betanas_tf.bench.rank --out_dir=/tmp/rank --quick    # the same pipeline, tiny

1. Ground truth: a `bench.ground_truth` file (the package ships `small`'s: 125 networks from
   two cost-stratified samples spread over its MACs range, three training seeds), or trained
   here (`--retrain_ground_truth`: every architecture of a small space, or a
   `ground_truth.cost_stratified_sample`, per training seed through `tune`; cached). A network's truth is
   its mean eval top-1 / loss over the seeds.
2. One-shot searches through the search's public API (`runner.SearchRun`), per strategy and
   search seed (the seeds named), with the same Phase-1 budget and MACs budget (a quantile of
   the space's MACs). Each trained supernet scores every ground-truth network (its weights, BN
   recalibrated; eval split). Rankings (`rank_analysis.ranking`, statistics in `rank_stats`):
   Kendall tau over all networks and within cost strata, for every strategy and for MACs
   alone, with bootstrap intervals over networks, ground-truth seeds and search seeds, and the
   paired interval of tau(strategy) - tau(MACs); tau over the sub-space betanas' drops left;
   the ground truth's noise ceiling.
3. Selection (`rank_analysis.selections`): each strategy's pick per seed (over
   `selection_seeds`), trained standalone when the ground truth lacks it, against the biggest
   network within the budget, a random one per seed, and keras-tuner random / Bayesian
   multi-trial search given the images one one-shot search trains on.

Writes results.json, report.md and figures (tau.png, selected_vs_random.png, frequency.png)
to --out_dir; every stage is cached there, so an interrupted run resumes.
"""

import dataclasses
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from betanas_tf import cli
from betanas_tf.bench import ground_truth as gt_lib

# The ablations a benchmark strategy's name may add to a registered policy: NAME_nodrop,
# NAME_nobalanced, NAME_fair (FairNAS' strict fairness in Phase 1), where they change it.
ABLATIONS = {"nodrop": {"drop": False}, "nobalanced": {"balanced": False}, "fair": {"fair": True}}


def strategies() -> Dict[str, Tuple[str, Dict]]:
  """name -> (registered policy, ablations): every strategy in `policies.POLICIES` that trains
  a supernet (one registered in its own file included), and each ablation that changes it."""
  from betanas_tf import policies  # pylint: disable=import-outside-toplevel
  found = {}
  for name in policies.POLICIES.names():
    policy = policies.POLICIES.get(name)
    if not policy.trains_weights:
      continue
    found[name] = (name, {})
    for suffix, ablation in ABLATIONS.items():
      if policy.with_ablations(**ablation) != policy:
        found[f"{name}_{suffix}"] = (name, ablation)
  return found

MULTI_TRIAL_ORACLES = ("random", "bayesian")


@dataclasses.dataclass(frozen=True)
class RankPlan:
  space: str = "micro"
  input_size: int = 16                      # the micro space's own (canvases resized 32 -> 16)
  dataset: str = "cluttered_digits"
  ground_truth_file: Optional[str] = None   # a bench.ground_truth file: read, not trained
  selections_file: Optional[str] = None     # a listed ground truth of picks trained before
                                            # with the same recipe: read, not retrained
  gt_seeds: Tuple[int, ...] = (0, 1)        # with a file: which of its seeds to use
  gt_epochs: int = 8
  gt_max_trials: Optional[int] = None      # None: the whole space
  gt_oracle: str = "grid"                   # "random": a sample of gt_max_trials, the same
                                            # for every seed, drawn as gt_sample says:
  gt_sample: str = "cost_stratified"        # spread over the MACs range
                                            # (`ground_truth.cost_stratified_sample`), or "uniform"
                                            # (keras-tuner's random oracle, one oracle seed)
  search_seeds: Tuple[int, ...] = (0, 1, 2)   # these searches rank and select
  selection_seeds: int = 8                  # searches in all (search_seeds, then the seeds
                                            # after the largest of them) select; the extra
                                            # ones only for `selection_strategies`
  search_steps: int = 2400                  # small: 600 steps leave its supernet at ~25 %
                                            # (docs/history.md); micro's plans say 600
  budget_quantile: float = 0.5              # MACs budget: this quantile of the space's MACs
  beta: float = 0.5
  cost_form: str = "absolute"               # the cost term: "absolute" seeks the budget (TuNAS),
                                            # "linear" (the paper's) pushes every op cheaper
  multi_trial_epochs: int = 2
  multi_trial_oracles: Tuple[str, ...] = ("random",)
  multi_trial_seeds: Optional[int] = 1      # multi-trial searches per oracle: the first this
                                            # many selection seeds (None: all of them)
  bootstrap: int = 1000
  strata: int = 4                           # cost strata for tau within a cost level
  ensembles: bool = True                    # also rank each strategy's searches together
                                            # (mean rank): one ranking at k searches' cost
  eval_batches: int = 68                    # batches of 64 that score a subnet (small: its
                                            # whole eval split)
  calibration_batches: int = 10             # training batches that recalibrate its BN
  engine_overrides: Tuple[Tuple[str, object], ...] = ()   # EngineConfig fields to change
  strategies: Tuple[str, ...] = ("betanas", "spos", "betanas_nodrop")
  selection_strategies: Tuple[str, ...] = ("betanas",)
  selection: bool = True                    # False: rankings only (no baselines, no
                                            # multi-trial search, no selection seeds)

  def __post_init__(self):
    known = strategies()
    unknown = [s for s in self.strategies + self.selection_strategies if s not in known]
    if unknown:
      raise ValueError(f"unknown strategy {unknown[0]!r}; known: {', '.join(known)}")
    if not self.search_seeds or len(set(self.search_seeds)) != len(self.search_seeds):
      raise ValueError(f"search_seeds must be distinct and not empty, got {self.search_seeds}")
    if self.selection_seeds < len(self.search_seeds):
      raise ValueError(f"selection_seeds ({self.selection_seeds}) must count at least the "
                       f"{len(self.search_seeds)} search_seeds")
    unknown = [o for o in self.multi_trial_oracles if o not in MULTI_TRIAL_ORACLES]
    if unknown:
      raise ValueError(f"unknown multi-trial oracle {unknown[0]!r}; known: "
                       f"{', '.join(MULTI_TRIAL_ORACLES)}")
    if self.multi_trial_seeds is not None and self.multi_trial_seeds < 1:
      raise ValueError(f"multi_trial_seeds must be at least 1, got {self.multi_trial_seeds}")
    if not 0.0 < self.budget_quantile <= 1.0:
      raise ValueError(f"budget_quantile must be in (0, 1], got {self.budget_quantile}")

  def all_search_seeds(self) -> List[int]:
    """search_seeds, then as many seeds after the largest as make `selection_seeds` (none
    without `selection`)."""
    extra = self.selection_seeds - len(self.search_seeds) if self.selection else 0
    top = max(self.search_seeds)
    return list(self.search_seeds) + [top + 1 + i for i in range(extra)]

  def multi_trials(self) -> List[Tuple[str, int]]:
    """(oracle, seed) of every multi-trial search (none without `selection`)."""
    if not self.selection:
      return []
    seeds = self.all_search_seeds()[:self.multi_trial_seeds]
    return [(oracle, seed) for oracle in self.multi_trial_oracles for seed in seeds]


QUICK = RankPlan(input_size=16, gt_seeds=(0,), gt_epochs=1, gt_max_trials=6, search_seeds=(0,),
                 selection_seeds=1, search_steps=40, multi_trial_epochs=1, bootstrap=200, strata=2,
                 strategies=("betanas", "proxyless"), selection_strategies=("betanas", "proxyless"),
                 multi_trial_oracles=MULTI_TRIAL_ORACLES, multi_trial_seeds=None, eval_batches=6,
                 calibration_batches=5, cost_form="linear")


def plan_from_file(path: str, **changes) -> RankPlan:
  """A plan that reads the ground truth in `path` (its space, size, data, recipe and every
  seed of it), with `changes` to the other fields."""
  truth = gt_lib.GroundTruth.load(path)
  fields = dict(space=truth.space, input_size=truth.input_size, dataset=truth.dataset,
                ground_truth_file=path, gt_seeds=truth.seeds, gt_epochs=truth.recipe["epochs"],
                gt_max_trials=len(truth.networks), gt_oracle="random", gt_sample="cost_stratified")
  fields.update(changes)
  return RankPlan(**fields)


def engine_config(plan: RankPlan, seed: int):
  """demo.flags' supernet settings at the plan's Phase-1 budget, with its overrides."""
  from betanas_tf import engine  # pylint: disable=import-outside-toplevel
  config = dataclasses.replace(engine.demo_config(plan.search_steps, seed), beta=plan.beta,
                               cost_form=plan.cost_form)
  return dataclasses.replace(config, **dict(plan.engine_overrides))


# ---- stages -------------------------------------------------------------------------

GT_SAMPLES = ("uniform", "cost_stratified")
def _ground_truth_seed(plan: RankPlan, seed: int, out_dir: str) -> Dict:
  """One training seed of the ground truth (`tune`; cached, so a second call reads it)."""
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  from betanas_tf import tune  # pylint: disable=import-outside-toplevel
  recipe = gt_lib.recipe_config(plan.dataset, plan.gt_epochs, seed)
  if plan.gt_sample not in GT_SAMPLES:
    raise ValueError(f"gt_sample must be one of {', '.join(GT_SAMPLES)}, got {plan.gt_sample!r}")
  oracle, architectures = plan.gt_oracle, ()
  if plan.gt_oracle == "random" and plan.gt_sample == "cost_stratified":
    space = spaces.get_space(plan.space, plan.input_size)
    oracle = "grid"
    architectures = tuple(gt_lib.cost_stratified_sample(space, plan.gt_max_trials))
  config = tune.TuneConfig(space=plan.space, input_size=plan.input_size, oracle=oracle,
                           max_trials=plan.gt_max_trials, architectures=architectures,
                           tuner_seed=0, train=recipe)
  return tune.tune(os.path.join(out_dir, f"ground_truth_seed{seed}"), config)


def ground_truth(plan: RankPlan, out_dir: str, workers: int = 1) -> Dict:
  """{"archs": [choices string], "choices", "macs", "top1": per seed, "loss": per seed}:
  read from `plan.ground_truth_file` (the networks complete in `plan.gt_seeds`), or trained
  (the seeds side by side in `workers` processes, `parallel.run_tasks`; cached)."""
  from betanas_tf.bench import parallel  # pylint: disable=import-outside-toplevel
  if plan.ground_truth_file:
    truth = gt_lib.GroundTruth.load(plan.ground_truth_file)
    here = (truth.space, truth.input_size, truth.dataset, truth.recipe["epochs"])
    wanted = (plan.space, plan.input_size, plan.dataset, plan.gt_epochs)
    if here != wanted:
      raise ValueError(f"{plan.ground_truth_file} holds (space, input size, dataset, epochs) "
                       f"{here}, the plan asks for {wanted}")
    missing = [s for s in plan.gt_seeds if s not in truth.seeds]
    if missing:
      raise ValueError(f"{plan.ground_truth_file} has no training seed {missing[0]} (it has "
                       f"{list(truth.seeds)})")
    gt = truth.as_rank_truth(plan.gt_seeds)
    # Searches score every network of the file, so that their cached scores still serve
    # when a partial file has grown.
    gt["to_score"] = sorted(n["choices"] for n in truth.networks)
    if len(gt["archs"]) < 3:
      raise ValueError(f"{plan.ground_truth_file}: only {len(gt['archs'])} networks are trained "
                       f"in every seed of {list(plan.gt_seeds)}")
    return gt
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


def space_networks(plan: RankPlan) -> Tuple[List[Tuple[int, ...]], np.ndarray]:
  """The space's networks (a uniform pool of ground_truth.POOL if it is larger) and their MACs."""
  from betanas_tf import cost as cost_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  space = spaces.get_space(plan.space, plan.input_size)
  if space.size() <= gt_lib.POOL:
    pool = [tuple(c) for c in space.enumerate()]
  else:
    rng = np.random.default_rng(0)
    pool = list(dict.fromkeys(tuple(space.sample(rng)) for _ in range(gt_lib.POOL)))
  costs = cost_lib.space_costs(space)
  return pool, np.array([costs.of_choices(c).macs for c in pool], np.float64)


def budget_of(plan: RankPlan) -> float:
  """The MACs budget: `budget_quantile` of the MACs of the space's networks."""
  return float(np.quantile(space_networks(plan)[1], plan.budget_quantile))


def baselines(plan: RankPlan, budget_macs: float) -> Dict[str, List[str]]:
  """What a user picks without a search: "biggest" (the network with the most MACs within
  the budget: the first guess) and "random" (one uniformly random network within the
  budget per search seed)."""
  from betanas_tf import selection  # pylint: disable=import-outside-toplevel
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  space = spaces.get_space(plan.space, plan.input_size)
  pool, macs = space_networks(plan)
  fits = np.flatnonzero(macs <= budget_macs)
  biggest = pool[int(fits[np.argmax(macs[fits])])]
  costs = dict(zip(pool, macs))
  from betanas_tf import cost as cost_lib  # pylint: disable=import-outside-toplevel
  space_costs = cost_lib.space_costs(space)
  cost_of = lambda c: costs.get(tuple(c), space_costs.of_choices(c).macs)
  num_candidates = [b.num_candidates for b in space.choice_blocks]
  random = [selection.random_within_budget(num_candidates, cost_of, budget_macs,
                                           np.random.default_rng([seed, RANDOM_STREAM]))
            for seed in plan.all_search_seeds()]
  return {"biggest": [space.choices_to_string(biggest)],
          "random": [space.choices_to_string(c) for c in random]}


RANDOM_STREAM = 104729   # the random baseline's draws: a stream of their own


def selection_truth(plan: RankPlan, gt: Dict, choices: Sequence[str], out_dir: str,
                    workers: int = 1) -> Dict[str, float]:
  """Ground-truth top-1 (the mean over the plan's training seeds) of every network in
  `choices`: from the ground truth where it holds the network, else trained standalone
  with the same recipe and seeds (cached in `out_dir`/selections.json)."""
  known = dict(zip(gt["archs"], np.mean(gt["top1"], axis=0).tolist()))
  others = [c for c in dict.fromkeys(choices) if c not in known]
  if others:
    path = os.path.join(out_dir, "selections.json")
    wanted = gt_lib.plan_listed(plan.space, others, plan.gt_seeds, plan.dataset,
                                plan.gt_epochs, plan.input_size)
    if plan.selections_file and not os.path.exists(path):
      trained_before = gt_lib.GroundTruth.load(plan.selections_file)
      if all(getattr(trained_before, name) == getattr(wanted, name) for name in gt_lib.SETTINGS):
        trained_before.save(path)   # the start of this run's file: only new picks train
    truth = gt_lib.build(path, wanted, workers, log=lambda m: None)
    trained = truth.as_rank_truth(plan.gt_seeds)
    known.update(zip(trained["archs"], np.mean(trained["top1"], axis=0).tolist()))
  return {c: known[c] for c in choices}


def one_search(plan: RankPlan, strategy: str, seed: int, out_dir: str, budget_macs: float,
               gt: Dict, score: bool, log=print) -> Dict:
  """Runs (or resumes) one search and, if `score`, scores every ground-truth architecture
  with its supernet (cached in scores.json; when the ground truth has grown, the finished
  search is restored from its last checkpoint and only the new networks are scored). Scores
  another search under `out_dir` computed with a supernet equal to this one to the bit (the
  same `scoring_digest`) are taken from it: they are the same numbers."""
  from betanas_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import policies, runner  # pylint: disable=import-outside-toplevel
  run_dir = os.path.join(out_dir, "searches", f"{strategy}_seed{seed}")
  scores_path = os.path.join(run_dir, "scores.json")
  summary_path = os.path.join(run_dir, "summary.json")
  archs = gt.get("to_score", gt["archs"])
  cached = json.load(open(scores_path)) if score and os.path.exists(scores_path) else None
  if os.path.exists(summary_path) and (not score or cached and set(archs) <= set(cached["archs"])):
    return {"summary": json.load(open(summary_path)), "scores": cached}
  policy_name, ablations = strategies()[strategy]
  policy = policies.POLICIES.get(policy_name).with_ablations(**ablations)
  settings = runner.RunSettings(out_dir=run_dir, space=plan.space, input_size=plan.input_size,
                                dataset=data_lib.DataSource(plan.dataset), cost="macs",
                                cost_target=budget_macs, checkpoint_every=plan.search_steps,
                                log_every=max(10, plan.search_steps // 20),
                                eval_batches=plan.eval_batches,
                                calibration_batches=plan.calibration_batches, progress=False)
  run = runner.SearchRun(settings, policy, engine_config(plan, seed))
  start = time.time()
  if os.path.exists(summary_path):   # finished: only networks the ground truth gained
    run.restore_finished()
    summary = json.load(open(summary_path))
  else:
    summary = run.run()
  scores = None
  if score:
    known = {metric: dict(zip(cached["archs"], cached[metric])) if cached else {}
             for metric in ("top1", "loss")}
    digest = run.scoring_digest(split="eval")
    shared = dict(cached.get("shared", {})) if cached else {}
    for donor, theirs in scores_of_the_same_supernet(out_dir, run_dir, digest):
      taken = [a for a in archs if a not in known["top1"] and a in theirs["top1"]]
      for arch in taken:
        known["top1"][arch], known["loss"][arch] = theirs["top1"][arch], theirs["loss"][arch]
      if taken:
        shared[donor] = shared.get(donor, 0) + len(taken)
        log(f"{strategy} seed {seed}: the supernet of {donor}, to the bit; "
            f"{len(taken)} of its scores taken, not recomputed")
    todo = [a for a in archs if a not in known["top1"]]
    metrics = run.score_paths([run.space.choices_from_string(a) for a in todo], split="eval")
    for arch, m in zip(todo, metrics):
      known["top1"][arch], known["loss"][arch] = m["top1"], m["loss"]
    everything = sorted(known["top1"])
    scores = {"archs": everything, "top1": [known["top1"][a] for a in everything],
              "loss": [known["loss"][a] for a in everything], "scoring_digest": digest,
              "shared": shared,
              "seconds": (cached["seconds"] if cached else 0.0) + time.time() - start}
    from betanas_tf import io_utils  # pylint: disable=import-outside-toplevel
    io_utils.atomic_write_json(scores_path, scores)
  return {"summary": summary, "scores": scores}


def scores_of_the_same_supernet(out_dir: str, run_dir: str, digest: str):
  """(search, {"top1"/"loss": {network: score}}) of every other search under `out_dir`
  whose scores.json was computed by a supernet with this scoring digest."""
  searches = os.path.join(out_dir, "searches")
  for name in sorted(os.listdir(searches)):
    path = os.path.join(searches, name, "scores.json")
    if os.path.join(searches, name) == run_dir or not os.path.exists(path):
      continue
    theirs = json.load(open(path))
    if theirs.get("scoring_digest") == digest:
      yield name, {m: dict(zip(theirs["archs"], theirs[m])) for m in ("top1", "loss")}


def multi_trial(plan: RankPlan, oracle: str, seed: int, out_dir: str, budget_macs: float,
                images: float, train_examples: int) -> Dict:
  """A keras-tuner search under the budget with as many `multi_trial_epochs` trials as fit
  in `images` (one one-shot search's images)."""
  from betanas_tf import tune  # pylint: disable=import-outside-toplevel
  per_trial = plan.multi_trial_epochs * (train_examples // 64) * 64
  trials = max(1, int(images // per_trial))
  recipe = gt_lib.recipe_config(plan.dataset, plan.multi_trial_epochs, seed)
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


def search_runs(plan: RankPlan) -> List[Tuple[str, int, bool]]:
  """(strategy, seed, scores every network?) of every search the plan runs: each strategy
  on `search_seeds` (ranking), the selection strategies on the further selection seeds.
  Strategy after strategy, in `strategies`' order: a search whose supernet equals an earlier
  strategy's (betanas_nodrop's equals spos') then usually finds that one's scores written."""
  runs = [(name, seed, True) for name in plan.strategies for seed in plan.search_seeds]
  if plan.selection:
    runs += [(name, seed, False) for seed in plan.all_search_seeds()
             for name in plan.selection_strategies
             if seed not in plan.search_seeds or name not in plan.strategies]
  return runs


def run(out_dir: str, plan: RankPlan = RankPlan(), log=print, workers: int = 1) -> Dict:
  """The whole benchmark (module docstring); returns results.json's contents. Its stages run
  in `workers` single-threaded processes (`parallel.run_tasks`)."""
  from betanas_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import io_utils  # pylint: disable=import-outside-toplevel
  from betanas_tf.bench import parallel  # pylint: disable=import-outside-toplevel
  from betanas_tf.bench import rank_analysis  # pylint: disable=import-outside-toplevel
  start = time.time()
  os.makedirs(out_dir, exist_ok=True)
  gt = ground_truth(plan, out_dir, workers)
  log(f"ground truth: {len(gt['archs'])} architectures x {len(plan.gt_seeds)} seeds "
      f"({time.time() - start:.0f} s)")
  budget = budget_of(plan)
  runs = search_runs(plan)
  train_examples = len(data_lib.load(plan.dataset, input_size=plan.input_size).train)
  trials = plan.multi_trials()
  images = one_shot_images(plan)
  # Searches and multi-trial searches side by side; the loops below then read their outputs.
  # (The longest tasks, multi-trial searches, first: the last to start is then a short one.)
  ran = parallel.run_tasks(
      [(multi_trial, (plan, oracle, seed, out_dir, budget, images, train_examples))
       for oracle, seed in trials]
      + [(one_search, (plan, name, seed, out_dir, budget, gt, score)) for name, seed, score in runs],
      workers)
  if ran:
    log(f"{len(runs)} searches and {len(trials)} multi-trial searches in {workers} workers "
        f"({time.time() - start:.0f} s)")
  searches: Dict[str, List[Dict]] = {}
  for name, seed, score in runs:
    out = one_search(plan, name, seed, out_dir, budget, gt, score)
    searches.setdefault(name, []).append(dict(out, seed=seed))
  multi = {oracle: [multi_trial(plan, oracle, seed, out_dir, budget, images, train_examples)
                    for o, seed in trials if o == oracle] for oracle in plan.multi_trial_oracles}
  picks, truth_of = None, {}
  if plan.selection:
    picks = baselines(plan, budget)
    chosen = ([r["summary"]["choices_string"] for runs_ in searches.values() for r in runs_]
              + [m["best"] for ms in multi.values() for m in ms] + picks["biggest"]
              + picks["random"])
    truth_of = selection_truth(plan, gt, chosen, out_dir, workers)
    log(f"{len(set(chosen))} selected networks' ground truth done ({time.time() - start:.0f} s)")
  result = rank_analysis.analyse(plan, gt, searches, budget, multi, picks, truth_of)
  result["plan"] = dataclasses.asdict(plan)
  result["seconds"] = time.time() - start
  result["figures"] = rank_analysis.plot(result, searches, out_dir)
  io_utils.atomic_write_json(os.path.join(out_dir, "results.json"), result)
  io_utils.atomic_write_text(os.path.join(out_dir, "report.md"),
                             rank_analysis.report(result, plan, result["seconds"]))
  return result


def define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf.bench import parallel  # pylint: disable=import-outside-toplevel
  d = RankPlan()
  flags.DEFINE_string("out_dir", None, "Output directory (re-running resumes).")
  flags.DEFINE_bool("quick", False, "The small plan on micro (a few minutes; what the test runs).")
  cli.define_space_flags("small", width_multiplier=False)   # input size: the ground truth's
  flags.DEFINE_string("ground_truth", None, "A bench.ground_truth file (default: the one the "
                      "package ships for --space, if any).")
  flags.DEFINE_string("selections", None, "Picks trained before with the ground truth's "
                      "recipe (a listed ground-truth file; default: the one the package ships "
                      "for --space, if any); '' trains every pick the ground truth lacks.")
  flags.DEFINE_bool("retrain_ground_truth", False, "Train the ground truth (--gt_archs x "
                    "--gt_seeds) instead of reading a file.")
  flags.DEFINE_integer("gt_archs", 0, "With --retrain_ground_truth: cost-stratified networks "
                       "(0: the whole space).", lower_bound=0)
  flags.DEFINE_list("gt_seeds", [], "Training seeds of the ground truth (default: every seed "
                    "of the file; 0,1 when retraining).")
  flags.DEFINE_list("search_seeds", [str(s) for s in d.search_seeds], "Seeds of the ranking "
                    "searches.")
  flags.DEFINE_integer("selection_seeds", d.selection_seeds, "Searches per selection strategy.",
                       lower_bound=1)
  flags.DEFINE_integer("search_steps", d.search_steps, "Phase-1 steps per search.", lower_bound=2)
  flags.DEFINE_list("strategies", list(d.strategies), "Strategies that rank: "
                    + ", ".join(strategies()))
  flags.DEFINE_list("selection_strategies", list(d.selection_strategies), "Strategies that "
                    "also select on the further seeds.")
  flags.DEFINE_list("multi_trial_oracles", list(d.multi_trial_oracles), "keras-tuner oracles "
                    "of the multi-trial baseline: " + ", ".join(MULTI_TRIAL_ORACLES))
  flags.DEFINE_integer("multi_trial_seeds", d.multi_trial_seeds, "Multi-trial searches per "
                       "oracle (the first selection seeds).", lower_bound=1)
  flags.DEFINE_enum("cost_form", d.cost_form, ["linear", "absolute"], "The searches' cost "
                    "term: absolute (TuNAS: seek the budget) or linear (the paper's).")
  flags.DEFINE_float("budget_quantile", d.budget_quantile, "MACs budget: this quantile of the "
                     "space's MACs.")
  flags.DEFINE_integer("strata", d.strata, "Cost strata for tau within a cost level.",
                       lower_bound=1)
  flags.DEFINE_bool("ensembles", d.ensembles, "Also rank each strategy's searches together "
                    "(the mean of their ranks), as one ranking that costs all of them.")
  flags.DEFINE_integer("eval_batches", d.eval_batches, "Eval batches of 64 scoring a subnet.",
                       lower_bound=1)
  flags.DEFINE_integer("calibration_batches", d.calibration_batches, "Training batches "
                       "recalibrating a subnet's BatchNorm.", lower_bound=1)
  flags.DEFINE_integer("bootstrap", d.bootstrap, "Bootstrap rounds.", lower_bound=10)
  flags.DEFINE_bool("selection", True, "Selections against the baselines (--noselection: "
                    "rankings only, the ranking searches alone).")
  flags.DEFINE_list("engine", [], "EngineConfig overrides, NAME=VALUE (e.g. arch_data=eval).")
  flags.DEFINE_integer("workers", parallel.available_cores(), "Processes for the independent "
                       "stages, one TensorFlow thread each (1: all in this process).",
                       lower_bound=1)


def _ints(values: Sequence[str], flag: str) -> Tuple[int, ...]:
  if not all(v.lstrip("-").isdigit() for v in values):
    raise ValueError(f"--{flag} must be integers, got {','.join(values)}")
  return tuple(int(v) for v in values)


def engine_overrides(pairs: Sequence[str]) -> Tuple[Tuple[str, object], ...]:
  """NAME=VALUE pairs as EngineConfig overrides, each value of its field's type."""
  from betanas_tf import engine  # pylint: disable=import-outside-toplevel
  defaults = engine.EngineConfig()
  overrides = []
  for pair in pairs:
    name, sep, value = pair.partition("=")
    if not sep or not hasattr(defaults, name):
      raise ValueError(f"--engine takes NAME=VALUE with an EngineConfig field, got {pair!r}")
    kind = type(getattr(defaults, name))
    try:
      overrides.append((name, (value.lower() in ("1", "true")) if kind is bool else kind(value)))
    except ValueError:
      raise ValueError(f"--engine {name}: {value!r} is not a {kind.__name__}") from None
  return tuple(overrides)


def plan_from_flags() -> RankPlan:
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  if f.quick:
    return QUICK
  changes = dict(search_seeds=_ints(f.search_seeds, "search_seeds"),
                 selection_seeds=max(f.selection_seeds, len(f.search_seeds)),
                 search_steps=f.search_steps, strategies=tuple(f.strategies),
                 selection_strategies=tuple(f.selection_strategies),
                 multi_trial_oracles=tuple(f.multi_trial_oracles), cost_form=f.cost_form,
                 multi_trial_seeds=f.multi_trial_seeds,
                 budget_quantile=f.budget_quantile, strata=f.strata, ensembles=f.ensembles,
                 eval_batches=f.eval_batches,
                 calibration_batches=f.calibration_batches, bootstrap=f.bootstrap,
                 engine_overrides=engine_overrides(f.engine), selection=f.selection)
  if f.gt_seeds:
    changes["gt_seeds"] = _ints(f.gt_seeds, "gt_seeds")
  path = f.ground_truth or gt_lib.shipped_path(f.space)
  if not f.retrain_ground_truth:
    if not os.path.exists(path):
      raise ValueError(f"no ground truth for --space={f.space} at {path}: give --ground_truth "
                       "or --retrain_ground_truth")
    selections = f.selections
    if selections is None:
      selections = gt_lib.shipped_selections_path(f.space)
    if selections and os.path.exists(selections):
      changes["selections_file"] = selections
    plan = plan_from_file(path, **changes)
    if f.input_size and f.input_size != plan.input_size:
      raise ValueError(f"{path} was trained at {plan.input_size} px, not --input_size="
                       f"{f.input_size}; retrain it (--retrain_ground_truth)")
    return plan
  input_size = f.input_size or spaces.get_space(f.space).input_size
  return RankPlan(space=f.space, input_size=input_size, gt_max_trials=f.gt_archs or None,
                  gt_oracle="random" if f.gt_archs else "grid", **changes)


@cli.reports_errors("rank")
def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf.bench import rank_analysis  # pylint: disable=import-outside-toplevel
  del argv
  out_dir = cli.require_out_dir()
  plan = plan_from_flags()
  result = run(out_dir, plan, log=lambda m: print(m, flush=True), workers=flags.FLAGS.workers)
  print(rank_analysis.report(result, plan, result["seconds"]))
  return 0


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
