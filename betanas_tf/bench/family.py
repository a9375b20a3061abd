"""The family benchmark: one search for several budgets against a search per budget.

    python -m betanas_tf.bench.family --out_dir=/work/runs/family            # small, seeds 100-107
    python -m betanas_tf.bench.family --quick --out_dir=/tmp/family_quick     # micro, minutes

On the space of a shipped ground truth, targets at quantiles of the space's MACs (25 %,
50 %, 75 %). Per search seed, both ways of making a family (docs/family.md):

* post hoc: one spos search, its supernet specialised to every target (`family`);
* in the search: one betanas search with one alpha per target (`--family=in_search`);

against a betanas search per target alone (what a user runs today), the biggest networks
that fit (all tied at the most MACs: their mean), a random network that fits, and the best
network of the ground truth within the target (an oracle). Every pick's truth is its top-1
trained with the ground truth's recipe and seeds (from the ground truth where it holds the
network, else trained and cached in OUT_DIR/picks_truth.json). Reported per target: paired
differences over search seeds and training seeds with 95 % intervals
(`rank_stats.seed_paired_difference`); the machine time of each family against one search
per target; and how long a target added to a finished family takes (restore included).

Every stage is cached under --out_dir and tied to its settings (run.json, the scoring
digest, the ground-truth file's recipe); a rerun continues. The post hoc searches are the
rank benchmark's spos searches of the same plan: `--searches_from=DIR` reads those of a
rank run (the confirmatory one's, for instance) where their run.json matches.
"""

import dataclasses
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np

from betanas_tf import cli
from betanas_tf import io_utils
from betanas_tf import specialise as specialise_lib
from betanas_tf import targets as targets_lib

FLAGS = flags.FLAGS
METHODS = ("post_hoc", "in_search")


@dataclasses.dataclass(frozen=True)
class FamilyPlan:
  """What the benchmark runs (the search settings are the rank benchmark's, so that its
  spos searches serve as the post hoc ones)."""
  space: str = "small"
  input_size: Optional[int] = None
  dataset: str = "cluttered_digits"
  ground_truth_file: Optional[str] = None     # None: the one shipped for the space
  quantiles: Tuple[float, ...] = (0.25, 0.5, 0.75)
  added_quantile: float = 0.6                 # the target added to a finished family
  search_seeds: Tuple[int, ...] = tuple(range(100, 108))
  search_steps: int = 4800
  eval_batches: int = 68
  calibration_batches: int = 10
  beta: float = 0.5
  cost_form: str = "absolute"                 # the betanas searches' cost term (each seeks its
                                              # bound: the rank benchmark's selection setting)
  spos_cost_form: str = "linear"              # spos has no cost term, but its run.json records
                                              # one: the confirmatory rank run's, so that its
                                              # searches serve here (`--searches_from`)
  engine_overrides: Tuple[Tuple[str, object], ...] = ()
  specialise: specialise_lib.SpecialiseConfig = specialise_lib.SpecialiseConfig()
  truth: bool = True                          # train the picks' truth (off: picks and costs only)
  bootstrap: int = 2000

  def __post_init__(self):
    if not self.quantiles or not all(0 < q < 1 for q in self.quantiles + (self.added_quantile,)):
      raise ValueError(f"quantiles must lie in (0, 1), got {self.quantiles} and {self.added_quantile}")
    if not self.search_seeds:
      raise ValueError("search_seeds is empty")


QUICK = FamilyPlan(space="micro", dataset="digits", quantiles=(0.3, 0.7), search_seeds=(0, 1),
                   search_steps=24,
                   eval_batches=2, calibration_batches=2, truth=False,
                   specialise=specialise_lib.SpecialiseConfig(initial=4, rounds=1, per_round=2))


def targets_of(plan: FamilyPlan, quantiles: Sequence[float]) -> List[targets_lib.Target]:
  """MACs targets at `quantiles` of the MACs of the space's networks."""
  from betanas_tf.bench import rank_stages  # pylint: disable=import-outside-toplevel
  macs = rank_stages.space_networks(plan)[1]
  return [targets_lib.Target("macs", float(np.quantile(macs, q))) for q in quantiles]


def _settings(plan: FamilyPlan, strategy: str, seed: int, run_dir: str, budget_macs: float,
              targets: Sequence[targets_lib.Target] = ()):
  """(RunSettings, Policy, EngineConfig) of one search: the rank benchmark's settings, with
  this plan's cost form for the strategy."""
  from betanas_tf.bench import rank_stages  # pylint: disable=import-outside-toplevel
  form = plan.spos_cost_form if strategy == "spos" else plan.cost_form
  return rank_stages.search_settings(dataclasses.replace(plan, cost_form=form), strategy, seed,
                                     os.path.dirname(run_dir), budget_macs, run_dir=run_dir,
                                     targets=[str(t) for t in targets])


def _search(plan, strategy, seed, run_dir, budget_macs, targets=(), log=print):
  """Runs (or finds finished) one search; returns (SearchRun restored or run, summary)."""
  from betanas_tf import runner  # pylint: disable=import-outside-toplevel
  run = runner.SearchRun(*_settings(plan, strategy, seed, run_dir, budget_macs, targets))
  summary_path = os.path.join(run_dir, "summary.json")
  if os.path.exists(summary_path):
    run.restore_finished()
    with open(summary_path) as handle:
      return run, json.load(handle)
  log(f"{os.path.basename(run_dir)}: searching")
  summary = run.run()
  return run, summary


def _post_hoc_dir(plan, out_dir, seed, searches_from, budget_macs) -> str:
  """The spos search of `seed`: a rank run's (`searches_from`) if its settings are this
  plan's, else this benchmark's own."""
  from betanas_tf import runner  # pylint: disable=import-outside-toplevel
  if searches_from:
    theirs = os.path.join(searches_from, "searches", f"spos_seed{seed}")
    if os.path.exists(os.path.join(theirs, "summary.json")):
      settings, policy, config = _settings(plan, "spos", seed, theirs, budget_macs)
      try:
        runner.check_recorded_identity(theirs, runner.run_identity(
            settings, policy, config, _input_size(plan)))
        return theirs
      except ValueError:
        pass
  return os.path.join(out_dir, "searches", f"spos_seed{seed}")


def _input_size(plan) -> int:
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  return spaces.get_space(plan.space, plan.input_size).input_size


def one_seed(plan: FamilyPlan, seed: int, out_dir: str, searches_from: Optional[str] = None,
             log=print) -> Dict:
  """Every search and family of one search seed (cached): {"post_hoc", "in_search",
  "separate": {target: choices_string}, "seconds": {...}, "added_target_seconds"}."""
  from betanas_tf import family as family_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import runner  # pylint: disable=import-outside-toplevel
  targets = targets_of(plan, plan.quantiles)
  middle = targets_of(plan, [0.5])[0].bound
  record_path = os.path.join(out_dir, "seeds", f"seed{seed}.json")
  if os.path.exists(record_path):
    with open(record_path) as handle:
      return json.load(handle)
  seconds = {}
  # Post hoc: the spos search, then its specialisation (timed apart).
  spos_dir = _post_hoc_dir(plan, out_dir, seed, searches_from, middle)
  run, summary = _search(plan, "spos", seed, spos_dir, middle, log=log)
  seconds["spos_search"] = summary["wall_time_s"]
  family_dir = os.path.join(out_dir, "families", f"post_hoc_seed{seed}")
  post_hoc = family_lib.specialise_run(run, targets, family_dir, plan.specialise, log=log)
  seconds["specialise"] = post_hoc["seconds"]
  # A target added later, in a process of its own as a user would (restore included).
  start = time.time()
  later = runner.recorded_run(spos_dir)
  later.restore_finished()
  added = family_lib.specialise_run(later, targets + targets_of(plan, [plan.added_quantile]),
                                    family_dir, plan.specialise, log=log)
  added_seconds = time.time() - start
  # In the search: one betanas search with an alpha per target.
  _, in_search_summary = _search(plan, "betanas", seed,
                                 os.path.join(out_dir, "searches", f"betanas_family_seed{seed}"),
                                 0.0, targets, log=log)
  seconds["in_search"] = in_search_summary["wall_time_s"]
  # What a user runs today: a betanas search per target.
  separate = {}
  for target in targets:
    _, alone = _search(plan, "betanas", seed, os.path.join(
        out_dir, "searches", f"betanas_{target.name}_seed{seed}"), target.bound, log=log)
    separate[target.name] = alone["choices_string"]
    seconds[f"separate_{target.name}"] = alone["wall_time_s"]
  record = {"seed": seed, "targets": [str(t) for t in targets],
            "post_hoc": {m["name"]: m["choices_string"] for m in post_hoc["members"]},
            "in_search": in_search_summary["family"], "separate": separate,
            "seconds": seconds, "added_target_seconds": round(added_seconds, 3),
            "added_target_new_scores": added["new_scores"],
            "post_hoc_scored": post_hoc["scored_networks"],
            "predictor_cv_tau": post_hoc["predictor_cv_tau"]}
  io_utils.atomic_write_json(record_path, record)
  return record


def baselines(plan: FamilyPlan, targets, seeds) -> Dict[str, Dict]:
  """Per target: "biggest" (every network tied at the most MACs within it), "random" (one
  per search seed)."""
  from betanas_tf import cost as cost_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import selection  # pylint: disable=import-outside-toplevel
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  from betanas_tf.bench import rank_stages  # pylint: disable=import-outside-toplevel
  space = spaces.get_space(plan.space, plan.input_size)
  pool, macs = rank_stages.space_networks(plan)
  costs = cost_lib.space_costs(space)
  num_candidates = [b.num_candidates for b in space.choice_blocks]
  found = {}
  for target in targets:
    fits = np.flatnonzero(macs <= target.bound)
    top = macs[fits].max()
    random = [selection.random_within_budget(
        num_candidates, lambda c: costs.of_choices(c).macs, target.bound,
        np.random.default_rng([seed, rank_stages.RANDOM_STREAM])) for seed in seeds]
    found[target.name] = {
        "biggest": [space.choices_to_string(pool[int(i)]) for i in fits if macs[i] == top],
        "random": [space.choices_to_string(c) for c in random]}
  return found


def analyse(records: Sequence[Dict], picks_truth: Dict[str, List[float]],
            base: Dict[str, Dict], oracle: Dict[str, float], rounds: int) -> Dict:
  """Per target, paired differences (search seeds x training seeds) of each family's pick
  against the separate search's, the biggest networks' mean, the seed's random network and
  the best network of the ground truth within the target (`oracle`: its top-1 per seed)."""
  from betanas_tf.bench import rank_stats  # pylint: disable=import-outside-toplevel
  result = {}
  for name in records[0]["separate"]:
    rows = lambda key: np.array([picks_truth[r[key][name]] for r in records])
    biggest = np.mean([picks_truth[c] for c in base[name]["biggest"]], axis=0)
    against = {"separate": rows("separate"),
               "biggest": np.tile(biggest, (len(records), 1)),
               "random": np.array([picks_truth[c] for c in base[name]["random"]]),
               "oracle": np.tile(oracle[name], (len(records), 1))}
    target = {"truth": {k: float(np.mean(v)) for k, v in against.items()}}
    for method in METHODS:
      mine = rows(method)
      target["truth"][method] = float(mine.mean())
      target[method] = {other: rank_stats.seed_paired_difference(mine, theirs, rounds)
                        for other, theirs in against.items()}
    result[name] = target
  return result


def costs(records: Sequence[Dict]) -> Dict:
  """Machine time of each family against one separate search per target (means over seeds)."""
  mean = lambda key: float(np.mean([r["seconds"][key] for r in records]))
  separate = [k for k in records[0]["seconds"] if k.startswith("separate_")]
  one = float(np.mean([mean(k) for k in separate]))
  post_hoc = mean("spos_search") + mean("specialise")
  return {"one_separate_search_s": one, "separate_searches_s": one * len(separate),
          "post_hoc_s": post_hoc, "post_hoc_ratio": post_hoc / one,
          "in_search_s": mean("in_search"), "in_search_ratio": mean("in_search") / one,
          "specialise_s": mean("specialise"),
          "added_target_s": [r["added_target_seconds"] for r in records]}


def run(out_dir: str, plan: FamilyPlan = FamilyPlan(), searches_from: Optional[str] = None,
        workers: int = 1, log=print) -> Dict:
  """The whole benchmark; returns results.json's content."""
  from betanas_tf.bench import ground_truth as gt_lib  # pylint: disable=import-outside-toplevel
  os.makedirs(out_dir, exist_ok=True)
  records = [one_seed(plan, seed, out_dir, searches_from, log) for seed in plan.search_seeds]
  targets = targets_of(plan, plan.quantiles)
  result = {"plan": dataclasses.asdict(plan), "targets": [str(t) for t in targets],
            "records": records, "costs": costs(records)}
  if plan.truth:
    gt_path = plan.ground_truth_file or gt_lib.shipped_path(plan.space)
    truth = gt_lib.GroundTruth.load(gt_path)
    known = truth.as_rank_truth()
    base = baselines(plan, targets, plan.search_seeds)
    chosen = [c for r in records for key in ("post_hoc", "in_search", "separate")
              for c in r[key].values()]
    chosen += [c for b in base.values() for c in b["biggest"] + b["random"]]
    table = dict(zip(known["archs"], np.asarray(known["top1"], np.float64).T.tolist()))
    others = [c for c in dict.fromkeys(chosen) if c not in table]
    if others:
      wanted = gt_lib.plan_listed(plan.space, others, truth.seeds, plan.dataset,
                                  truth.recipe["epochs"], plan.input_size)
      trained = gt_lib.build(os.path.join(out_dir, "picks_truth.json"), wanted, workers,
                             log=log).as_rank_truth(truth.seeds)
      table.update(zip(trained["archs"], np.asarray(trained["top1"], np.float64).T.tolist()))
    oracle = {}
    for target in targets:
      fits = [a for a, m in zip(known["archs"], known["macs"]) if m <= target.bound]
      best = max(fits, key=lambda a: np.mean(table[a]))
      oracle[target.name] = table[best]
    result["selection"] = analyse(records, table, base, oracle, plan.bootstrap)
  io_utils.atomic_write_json(os.path.join(out_dir, "results.json"), result)
  io_utils.atomic_write_text(os.path.join(out_dir, "report.md"), report(result))
  return result


def report(result: Dict) -> str:
  c = result["costs"]
  lines = ["# Family benchmark", "",
           f"Targets: {', '.join(result['targets'])}; search seeds "
           f"{', '.join(str(r['seed']) for r in result['records'])}.", "",
           "## Machine time (means over seeds)", "",
           f"One betanas search per target: {c['one_separate_search_s']:.0f} s "
           f"(all targets: {c['separate_searches_s']:.0f} s). Post hoc family: "
           f"{c['post_hoc_s']:.0f} s = {c['post_hoc_ratio']:.2f}x one search (specialisation "
           f"{c['specialise_s']:.0f} s). In-search family: {c['in_search_s']:.0f} s = "
           f"{c['in_search_ratio']:.2f}x. A target added to a finished family: "
           + ", ".join(f"{s:.1f}" for s in c["added_target_s"]) + " s (restore included)."]
  if "selection" in result:
    lines += ["", "## Picks' true top-1: paired differences (95 % intervals over search and "
                  "training seeds)", "",
              "| target | method | mean top-1 | - separate search | - biggest | - random | "
              "- best in the ground truth |", "|---|---|---|---|---|---|---|"]
    for name, target in result["selection"].items():
      for method in METHODS:
        cell = lambda d: f"{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
        diffs = target[method]
        lines.append(f"| {name} | {method} | {target['truth'][method]:.4f} | "
                     f"{cell(diffs['separate'])} | {cell(diffs['biggest'])} | "
                     f"{cell(diffs['random'])} | {cell(diffs['oracle'])} |")
  return "\n".join(lines) + "\n"


def define_flags():
  flags.DEFINE_string("out_dir", None, "Output directory (re-running resumes).")
  flags.DEFINE_bool("quick", False, "The small plan on micro, no truth (what the test runs).")
  flags.DEFINE_list("search_seeds", [], "Search seeds (default: the plan's).")
  flags.DEFINE_string("searches_from", None, "A rank benchmark's --out_dir whose spos searches "
                      "serve as the post hoc ones where their settings match.")
  flags.DEFINE_bool("truth", True, "Train the picks' truth (--notruth: picks and costs only).")
  flags.DEFINE_integer("workers", 1, "Processes training the picks' truth.", lower_bound=1)


@cli.reports_errors("family benchmark")
def main(argv):
  del argv
  plan = QUICK if FLAGS.quick else FamilyPlan()
  changes = {"truth": FLAGS.truth and plan.truth}
  if FLAGS.search_seeds:
    changes["search_seeds"] = tuple(int(s) for s in FLAGS.search_seeds)
  plan = dataclasses.replace(plan, **changes)
  result = run(cli.require_out_dir(), plan, FLAGS.searches_from, FLAGS.workers)
  print(report(result))
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
