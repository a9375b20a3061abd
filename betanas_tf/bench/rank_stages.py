"""The rank benchmark's stages: the searches it runs and scores, the multi-trial searches, the
networks a user would pick without a search, and the ground truth of every pick.

Every stage is cached on disk under the benchmark's output directory and tied to the plan
that made it: a search's directory holds its run.json (`runner.run_identity`; another plan's
search there is refused, one line naming what changed), a score file per split holds the
`scoring_digest` of the supernet and batches that computed it (scores are reused only under
an equal digest), a multi-trial search's directory holds its tune.json, and the picks'
ground truth is a `bench.ground_truth` file that refuses another recipe. `plan` is a
`bench.rank.RankPlan`; this module reads its fields and never imports it.
"""

import dataclasses
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from betanas_tf import cost as cost_lib
from betanas_tf import data as data_lib
from betanas_tf import engine
from betanas_tf import io_utils
from betanas_tf import policies
from betanas_tf import runner
from betanas_tf import selection
from betanas_tf import spaces
from betanas_tf import tune
from betanas_tf.bench import ground_truth as gt_lib

# The ablations a benchmark strategy's name may add to a registered policy: NAME_nodrop,
# NAME_nobalanced, NAME_fair (FairNAS' strict fairness in Phase 1), where they change it.
ABLATIONS = {"nodrop": {"drop": False}, "nobalanced": {"balanced": False}, "fair": {"fair": True}}
SPLITS = ("arch", "eval")   # where a supernet scores networks (`runner.SearchRun.score_paths`)
RANDOM_STREAM = 104729      # the random baseline's draws: a stream of their own


def strategies() -> Dict[str, Tuple[str, Dict]]:
  """name -> (registered policy, ablations): every strategy in `policies.POLICIES` that trains
  a supernet (one registered in its own file included), and each ablation that changes it."""
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


def engine_config(plan, seed: int) -> engine.EngineConfig:
  """demo.flags' supernet settings at the plan's Phase-1 budget, with its overrides."""
  config = dataclasses.replace(engine.demo_config(plan.search_steps, seed), beta=plan.beta,
                               cost_form=plan.cost_form)
  return dataclasses.replace(config, **dict(plan.engine_overrides))


# ---- what a user picks without a search -----------------------------------------------

def space_networks(plan) -> Tuple[List[Tuple[int, ...]], np.ndarray]:
  """The space's networks (a uniform pool of ground_truth.POOL if it is larger) and their MACs."""
  space = spaces.get_space(plan.space, plan.input_size)
  if space.size() <= gt_lib.POOL:
    pool = [tuple(c) for c in space.enumerate()]
  else:
    rng = np.random.default_rng(0)
    pool = list(dict.fromkeys(tuple(space.sample(rng)) for _ in range(gt_lib.POOL)))
  costs = cost_lib.space_costs(space)
  return pool, np.array([costs.of_choices(c).macs for c in pool], np.float64)


def budget_of(plan) -> float:
  """The MACs budget: `budget_quantile` of the MACs of the space's networks."""
  return float(np.quantile(space_networks(plan)[1], plan.budget_quantile))


def baselines(plan, budget_macs: float) -> Dict[str, List[str]]:
  """What a user picks without a search: "biggest" (every network tied at the most MACs
  within the budget: the first guess, whose truth is their mean, since nothing tells a user
  which of them to take) and "random" (one uniformly random network within the budget per
  search seed)."""
  space = spaces.get_space(plan.space, plan.input_size)
  pool, macs = space_networks(plan)
  fits = np.flatnonzero(macs <= budget_macs)
  top = macs[fits].max()
  biggest = [pool[int(i)] for i in fits if macs[i] == top]
  costs = dict(zip(pool, macs))
  space_costs = cost_lib.space_costs(space)
  cost_of = lambda c: costs.get(tuple(c), space_costs.of_choices(c).macs)
  num_candidates = [b.num_candidates for b in space.choice_blocks]
  random = [selection.random_within_budget(num_candidates, cost_of, budget_macs,
                                           np.random.default_rng([seed, RANDOM_STREAM]))
            for seed in plan.all_search_seeds()]
  return {"biggest": [space.choices_to_string(c) for c in biggest],
          "random": [space.choices_to_string(c) for c in random]}


def selection_truth(plan, gt: Dict, choices: Sequence[str], out_dir: str,
                    workers: int = 1) -> Dict[str, List[float]]:
  """Ground-truth top-1 per training seed of the plan (one value each) of every network in
  `choices`: from the ground truth where it holds the network, else trained standalone
  with the same recipe and seeds (cached in `out_dir`/selections.json)."""
  known = dict(zip(gt["archs"], np.asarray(gt["top1"], np.float64).T.tolist()))
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
    known.update(zip(trained["archs"], np.asarray(trained["top1"], np.float64).T.tolist()))
  return {c: known[c] for c in choices}


# ---- searches ---------------------------------------------------------------------------

def search_settings(plan, strategy: str, seed: int, out_dir: str, budget_macs: float,
                    run_dir: Optional[str] = None, targets: Sequence[str] = ()):
  """(RunSettings, Policy, EngineConfig) of one of the plan's searches, in
  `out_dir/searches/STRATEGY_seedN` unless `run_dir` is given; `targets`: an in-search
  family's (`RunSettings.targets`)."""
  policy_name, ablations = strategies()[strategy]
  policy = policies.POLICIES.get(policy_name).with_ablations(**ablations)
  run_dir = run_dir or os.path.join(out_dir, "searches", f"{strategy}_seed{seed}")
  settings = runner.RunSettings(out_dir=run_dir, space=plan.space, input_size=plan.input_size,
                                dataset=data_lib.DataSource(plan.dataset), cost="macs",
                                cost_target=budget_macs, checkpoint_every=plan.search_steps,
                                log_every=max(10, plan.search_steps // 20),
                                eval_batches=plan.eval_batches,
                                calibration_batches=plan.calibration_batches, progress=False,
                                targets=tuple(targets))
  return settings, policy, engine_config(plan, seed)


def scores_path(run_dir: str, split: str) -> str:
  return os.path.join(run_dir, f"scores_{split}.json")


def one_search(plan, strategy: str, seed: int, out_dir: str, budget_macs: float,
               gt: Dict, score: bool, log=print, fresh: bool = False) -> Dict:
  """Runs (or resumes) one search and, if `score`, scores every ground-truth network with
  its supernet on each of `plan.score_splits` (cached per split; when the ground truth has
  grown, the finished search is restored from its last checkpoint and only the new networks
  are scored). A directory holding a search of other settings is refused (run.json). Cached
  scores, and those of another search under `out_dir`, serve only under this supernet's
  `scoring_digest` (the same weights, batches, precision and versions: the same numbers).
  `fresh`: the outputs were written by this very run's workers moments ago (same code, same
  plan): they are read without restoring the supernet to check their digest.
  Returns {"summary", "scores": {split: {"archs", "top1", "loss", ...}} or None}."""
  settings, policy, config = search_settings(plan, strategy, seed, out_dir, budget_macs)
  run_dir = settings.out_dir
  summary_path = os.path.join(run_dir, "summary.json")
  # Before anything is read: the directory's search must be this plan's.
  runner.check_recorded_identity(run_dir, runner.run_identity(settings, policy, config,
                                                              plan.input_size))
  if os.path.exists(summary_path) and not score:
    return {"summary": json.load(open(summary_path)), "scores": None}
  archs = gt.get("to_score", gt["archs"])
  if fresh and os.path.exists(summary_path):
    cached = {split: json.load(open(scores_path(run_dir, split))) for split in plan.score_splits
              if os.path.exists(scores_path(run_dir, split))}
    if len(cached) == len(plan.score_splits) and all(
        set(archs) <= set(c["archs"]) for c in cached.values()):
      return {"summary": json.load(open(summary_path)), "scores": cached}
  run = runner.SearchRun(settings, policy, config)
  start = time.time()
  if os.path.exists(summary_path):   # finished: only scores to check or add
    run.restore_finished()
    summary = json.load(open(summary_path))
  else:
    summary = run.run()
  return {"summary": summary,
          "scores": {split: _scores(run, split, archs, out_dir, strategy, seed, start, log)
                     for split in plan.score_splits}}


def _scores(run, split: str, archs: Sequence[str], out_dir: str, strategy: str, seed: int,
            start: float, log) -> Dict:
  """The supernet's scores of `archs` on `split`, from the cache where its digest is this
  supernet's, else computed (and the cache rewritten)."""
  path = scores_path(run.settings.out_dir, split)
  digest = run.scoring_digest(split=split)
  cached = json.load(open(path)) if os.path.exists(path) else None
  if cached and cached.get("scoring_digest") != digest:
    log(f"{strategy} seed {seed}: {os.path.basename(path)} was scored by another supernet or "
        "setup (scoring digest differs); scored again")
    cached = None
  known = {metric: dict(zip(cached["archs"], cached[metric])) if cached else {}
           for metric in ("top1", "loss")}
  if cached and set(archs) <= set(known["top1"]):
    return cached
  shared = dict(cached.get("shared", {})) if cached else {}
  for donor, theirs in scores_of_the_same_supernet(out_dir, run.settings.out_dir, split, digest):
    taken = [a for a in archs if a not in known["top1"] and a in theirs["top1"]]
    for arch in taken:
      known["top1"][arch], known["loss"][arch] = theirs["top1"][arch], theirs["loss"][arch]
    if taken:
      shared[donor] = shared.get(donor, 0) + len(taken)
      log(f"{strategy} seed {seed}: the supernet of {donor}, to the bit; "
          f"{len(taken)} of its scores taken, not recomputed")
  todo = [a for a in archs if a not in known["top1"]]
  metrics = run.score_paths([run.space.choices_from_string(a) for a in todo], split=split)
  for arch, m in zip(todo, metrics):
    known["top1"][arch], known["loss"][arch] = m["top1"], m["loss"]
  everything = sorted(known["top1"])
  scores = {"archs": everything, "top1": [known["top1"][a] for a in everything],
            "loss": [known["loss"][a] for a in everything], "split": split,
            "scoring_digest": digest, "shared": shared,
            "seconds": (cached["seconds"] if cached else 0.0) + time.time() - start}
  io_utils.atomic_write_json(path, scores)
  return scores


def scores_of_the_same_supernet(out_dir: str, run_dir: str, split: str, digest: str):
  """(search, {"top1"/"loss": {network: score}}) of every other search under `out_dir`
  whose scores on `split` were computed by a supernet with this scoring digest."""
  searches = os.path.join(out_dir, "searches")
  for name in sorted(os.listdir(searches)):
    path = scores_path(os.path.join(searches, name), split)
    if os.path.join(searches, name) == run_dir or not os.path.exists(path):
      continue
    theirs = json.load(open(path))
    if theirs.get("scoring_digest") == digest:
      yield name, {m: dict(zip(theirs["archs"], theirs[m])) for m in ("top1", "loss")}


def one_shot_images(plan) -> float:
  """Training images one one-shot search reads (Phase 1 and the alpha steps)."""
  config = engine_config(plan, 0)
  return float(config.max_steps * config.batch_size
               + config.arch_steps_before(config.max_steps) * config.arch_batch_size)


def multi_trial(plan, oracle: str, seed: int, out_dir: str, budget_macs: float,
                images: float, train_examples: int) -> Dict:
  """A keras-tuner search under the budget with as many `multi_trial_epochs` trials as fit
  in `images` (one one-shot search's images); its directory refuses another plan's
  settings (tune.json)."""
  per_trial = plan.multi_trial_epochs * (train_examples // 64) * 64
  trials = max(1, int(images // per_trial))
  recipe = gt_lib.recipe_config(plan.dataset, plan.multi_trial_epochs, seed)
  config = tune.TuneConfig(space=plan.space, input_size=plan.input_size, oracle=oracle,
                           max_trials=trials, cost_target=budget_macs, tuner_seed=seed,
                           bayesian_initial_points=max(1, trials // 3), train=recipe)
  results = tune.tune(os.path.join(out_dir, "multi_trial", f"{oracle}_seed{seed}"), config)
  return {"trials": trials, "best": results["best"]["choices_string"],
          "images": results["images_total"]}
