"""Does the search rank, and find, better networks than counting MACs? (the paper's Figs 5-7)

    python -m betanas_tf.bench.rank --out_dir=/tmp/rank                  # small, the shipped ground truth
    python -m betanas_tf.bench.rank --out_dir=/tmp/rank --quick          # the same pipeline, tiny
    python -m betanas_tf.bench.rank --out_dir=/tmp/conf --confirmatory   # docs/rank.md's registered test

1. Ground truth (`ground_truth.for_ranking`): a `bench.ground_truth` file (the package ships
   `small`'s: cost-stratified samples spread over its MACs range, three training seeds), or
   trained here (`--retrain_ground_truth`). A network's truth is its mean eval top-1 / loss
   over the seeds.
2. One-shot searches through the search's public API (`rank_stages.one_search`), per
   strategy and search seed, with the same Phase-1 budget and MACs budget (a quantile of the
   space's MACs). Each trained supernet scores every ground-truth network (its weights, BN
   recalibrated) on the ARCH split: the truth is measured on the eval split, and a score read
   from the same images would share their sampling noise with the truth, which MACs do not
   (`score_splits` adds the eval split side by side). Rankings (`rank_analysis.ranking`,
   statistics in `rank_stats`): Kendall tau over all networks and within cost strata (never
   splitting a MACs tie), for every strategy and for MACs alone, with bootstrap intervals over
   networks, ground-truth seeds and search seeds, and the paired interval of tau(strategy) -
   tau(MACs); tau over the sub-space betanas' drops left; the ground truth's noise ceiling.
3. Selection (`rank_analysis.selections`): each strategy's pick per seed (over
   `selection_seeds`), trained standalone when the ground truth lacks it, against the biggest
   networks within the budget (the mean of those tied at the largest cost), a random one per
   seed, and keras-tuner random / Bayesian multi-trial search given the images one one-shot
   search trains on: mean paired differences with intervals over search and training seeds.

Writes results.json, report.md and figures (tau.png, selected_vs_random.png, frequency.png)
to --out_dir; every stage is cached there and tied to the plan (`rank_stages`), so an
interrupted run resumes and a changed plan recomputes or refuses.
"""

import dataclasses
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import flags

from betanas_tf import cli
from betanas_tf import data as data_lib
from betanas_tf import engine
from betanas_tf import io_utils
from betanas_tf import spaces
from betanas_tf.bench import ground_truth as gt_lib
from betanas_tf.bench import parallel
from betanas_tf.bench import rank_analysis
from betanas_tf.bench import rank_stages
from betanas_tf.bench.rank_stages import strategies

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
  multi_trial_seeds: Optional[int] = 3      # multi-trial searches per oracle: the first this
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
  score_splits: Tuple[str, ...] = ("arch",)  # where supernets score networks; the first is
                                            # the one every figure uses, the others are shown
                                            # beside it ("eval" shares the truth's images)
  gt_samples: Optional[Tuple[int, ...]] = None   # with a file: only the networks no other
                                            # sample drew (None: all of them)

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
    unknown = [s for s in self.score_splits if s not in rank_stages.SPLITS]
    if unknown or not self.score_splits or len(set(self.score_splits)) != len(self.score_splits):
      raise ValueError(f"score_splits must be distinct names of {', '.join(rank_stages.SPLITS)}, "
                       f"got {', '.join(self.score_splits) or 'none'}")
    if self.gt_samples is not None and not self.ground_truth_file:
      raise ValueError("gt_samples selects networks of a ground-truth file: give one")

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
                 calibration_batches=5, cost_form="linear", score_splits=("arch", "eval"))

# docs/rank.md's confirmatory run, frozen before its data existed: what changes here changes
# a registered test (say so there, and in the report).
CONFIRMATORY_SAMPLE = 2
CONFIRMATORY_SEEDS = tuple(range(100, 108))


def confirmatory_plan(path: Optional[str] = None) -> "RankPlan":
  """spos at 4,800 Phase-1 steps over search seeds 100-107, on the networks of the ground
  truth's sample 2 that samples 0 and 1 did not draw, 4 cost strata, top-1 and loss, one
  search and the seeds ranked together; scored on the arch split (the eval split beside it).
  Rankings only. `path`: the ground-truth file (default: the one shipped for `small`)."""
  return plan_from_file(path or gt_lib.shipped_path("small"), gt_samples=(CONFIRMATORY_SAMPLE,),
                        strategies=("spos",), selection_strategies=("spos",),
                        search_seeds=CONFIRMATORY_SEEDS, selection_seeds=len(CONFIRMATORY_SEEDS),
                        search_steps=4800, strata=4, ensembles=True, eval_batches=68,
                        calibration_batches=10, cost_form="linear", selection=False,
                        score_splits=("arch", "eval"))


def plan_from_file(path: str, **changes) -> RankPlan:
  """A plan that reads the ground truth in `path` (its space, size, data, recipe and every
  seed of it), with `changes` to the other fields."""
  truth = gt_lib.GroundTruth.load(path)
  fields = dict(space=truth.space, input_size=truth.input_size, dataset=truth.dataset,
                ground_truth_file=path, gt_seeds=truth.seeds, gt_epochs=truth.recipe["epochs"],
                gt_max_trials=len(truth.networks), gt_oracle="random", gt_sample="cost_stratified")
  fields.update(changes)
  return RankPlan(**fields)


def truth_request(plan: RankPlan) -> gt_lib.TruthRequest:
  """The ground truth the plan ranks against."""
  return gt_lib.TruthRequest(space=plan.space, input_size=plan.input_size, dataset=plan.dataset,
                             seeds=tuple(plan.gt_seeds), epochs=plan.gt_epochs,
                             file=plan.ground_truth_file, samples=plan.gt_samples,
                             max_trials=plan.gt_max_trials, oracle=plan.gt_oracle,
                             sample=plan.gt_sample)


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
  start = time.time()
  os.makedirs(out_dir, exist_ok=True)
  gt = gt_lib.for_ranking(truth_request(plan), out_dir, workers)
  log(f"ground truth: {len(gt['archs'])} architectures x {len(plan.gt_seeds)} seeds "
      f"({time.time() - start:.0f} s)")
  budget = rank_stages.budget_of(plan)
  runs = search_runs(plan)
  train_examples = len(data_lib.load(plan.dataset, input_size=plan.input_size).train)
  trials = plan.multi_trials()
  images = rank_stages.one_shot_images(plan)
  # Searches and multi-trial searches side by side; the loops below then read their outputs.
  # (The longest tasks, multi-trial searches, first: the last to start is then a short one.)
  ran = parallel.run_tasks(
      [(rank_stages.multi_trial, (plan, oracle, seed, out_dir, budget, images, train_examples))
       for oracle, seed in trials]
      + [(rank_stages.one_search, (plan, name, seed, out_dir, budget, gt, score))
         for name, seed, score in runs], workers)
  if ran:
    log(f"{len(runs)} searches and {len(trials)} multi-trial searches in {workers} workers "
        f"({time.time() - start:.0f} s)")
  searches: Dict[str, List[Dict]] = {}
  for name, seed, score in runs:
    out = rank_stages.one_search(plan, name, seed, out_dir, budget, gt, score, log=log,
                                 fresh=bool(ran))
    searches.setdefault(name, []).append(dict(out, seed=seed))
  multi = {oracle: [rank_stages.multi_trial(plan, oracle, seed, out_dir, budget, images,
                                            train_examples)
                    for o, seed in trials if o == oracle] for oracle in plan.multi_trial_oracles}
  picks, truth_of = None, {}
  if plan.selection:
    picks = rank_stages.baselines(plan, budget)
    chosen = ([r["summary"]["choices_string"] for runs_ in searches.values() for r in runs_]
              + [m["best"] for ms in multi.values() for m in ms] + picks["biggest"]
              + picks["random"])
    truth_of = rank_stages.selection_truth(plan, gt, chosen, out_dir, workers)
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
  d = RankPlan()
  flags.DEFINE_string("out_dir", None, "Output directory (re-running resumes).")
  flags.DEFINE_bool("quick", False, "The small plan on micro (a few minutes; what the test runs).")
  flags.DEFINE_bool("confirmatory", False, "docs/rank.md's registered confirmatory run (spos, "
                    "4,800 steps, search seeds 100-107, ground-truth sample 2 alone); the other "
                    "plan flags are ignored.")
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
  flags.DEFINE_list("score_splits", list(d.score_splits), "Where supernets score networks: "
                    "arch (disjoint from the eval split the truth is measured on) and/or eval; "
                    "the first is the one the figures use.")
  flags.DEFINE_list("gt_samples", [], "Only the ground-truth networks drawn by these samples "
                    "and no other (default: all).")
  flags.DEFINE_integer("workers", parallel.available_cores(), "Processes for the independent "
                       "stages, one TensorFlow thread each (1: all in this process).",
                       lower_bound=1)


def _ints(values: Sequence[str], flag: str) -> Tuple[int, ...]:
  if not all(v.lstrip("-").isdigit() for v in values):
    raise ValueError(f"--{flag} must be integers, got {','.join(values)}")
  return tuple(int(v) for v in values)


def engine_overrides(pairs: Sequence[str]) -> Tuple[Tuple[str, object], ...]:
  """NAME=VALUE pairs as EngineConfig overrides, each value of its field's type."""
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
  f = flags.FLAGS
  if f.quick and f.confirmatory:
    raise ValueError("give --quick or --confirmatory, not both")
  if f.quick:
    return QUICK
  if f.confirmatory:
    return confirmatory_plan(f.ground_truth)
  changes = dict(search_seeds=_ints(f.search_seeds, "search_seeds"),
                 selection_seeds=max(f.selection_seeds, len(f.search_seeds)),
                 search_steps=f.search_steps, strategies=tuple(f.strategies),
                 selection_strategies=tuple(f.selection_strategies),
                 multi_trial_oracles=tuple(f.multi_trial_oracles), cost_form=f.cost_form,
                 multi_trial_seeds=f.multi_trial_seeds,
                 budget_quantile=f.budget_quantile, strata=f.strata, ensembles=f.ensembles,
                 eval_batches=f.eval_batches,
                 calibration_batches=f.calibration_batches, bootstrap=f.bootstrap,
                 engine_overrides=engine_overrides(f.engine), selection=f.selection,
                 score_splits=tuple(f.score_splits))
  if f.gt_samples:
    changes["gt_samples"] = _ints(f.gt_samples, "gt_samples")
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
