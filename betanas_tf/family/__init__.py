"""A family of networks from one trained supernet: a pick for every target (budget, phone).

Post hoc (`specialise_run`): a finished search's supernet specialised to each target
(`specialise`: supernet scores on the arch split with BN recalibrated, an accuracy predictor
proposing; every score cached in the output directory, so adding a target later costs only
its own few scores). The search must have trained every op to its end: a spos search, or
betanas / proxyless with --nodrop. In the search (`in_search_family`): the picks of a search
that kept one alpha per target. The programs: `python -m betanas_tf.family` (`__main__.py`)
and `python -m betanas_tf.search --targets=...`.

Output directory (written by the chief alone):
  family.json        per target: its pick, MACs, params, cost under every target's table,
                     supernet score, predicted score; the scoring digest; the settings
  scores.json        every supernet score (reused only under an equal scoring digest)
  TARGET/arch.json   each pick, for `train` and `export/to_tflite.py --family`
  family.png         supernet score against cost, the picks, the bounds, reference networks
                     and the true front where a ground truth is given
"""

import dataclasses
import hashlib
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import flags
import numpy as np

from betanas_tf import io_utils
from betanas_tf import specialise as specialise_lib
from betanas_tf import targets as targets_lib

FLAGS = flags.FLAGS
FAMILY_FILE = "family.json"
SCORES_FILE = "scores.json"
FORMAT = 1


def define_specialise_flags():
  """The flags of specialisation (this program and `search --targets`)."""
  d = specialise_lib.SpecialiseConfig()
  flags.DEFINE_list("targets", [], "Targets of the family: " + targets_lib.SYNTAX + ", "
                    "comma-separated.")
  flags.DEFINE_enum("specialise", d.method, list(specialise_lib.METHODS),
                    "predictor: an accuracy predictor proposes, the supernet scores (once-for-all); "
                    "evolution: SPOS' evolution over supernet scores per target.")
  flags.DEFINE_integer("specialise_initial", d.initial, "Random networks scored per target "
                       "before the predictor's first fit.", lower_bound=1)
  flags.DEFINE_integer("specialise_rounds", d.rounds, "Rounds of fit, propose, score.",
                       lower_bound=1)
  flags.DEFINE_integer("specialise_per_round", d.per_round, "Networks scored per target per round.",
                       lower_bound=1)


def specialise_config_from_flags(seed: int) -> specialise_lib.SpecialiseConfig:
  return specialise_lib.SpecialiseConfig(
      method=FLAGS.specialise, initial=FLAGS.specialise_initial, rounds=FLAGS.specialise_rounds,
      per_round=FLAGS.specialise_per_round, seed=seed)


def check_supernet(run) -> None:
  """A ValueError if some op of `run`'s supernet stopped training before the end (dropped
  by the search, or by every target of an in-search family)."""
  arch = run.engine.arch
  gone = [(int(l), int(m)) for l, m in zip(*np.nonzero(arch.valid & ~arch.active_np()))]
  if gone:
    l, m = gone[0]
    raise ValueError(
        f"{run.out}: its search dropped {len(gone)} op(s) (first: "
        f"{run.space.choice_blocks[l].labels[m]} of block {l}), whose weights stopped "
        "training then; a family needs a supernet whose every op trained to the end: "
        "specialise a spos search, or one run with --nodrop")


def _previous_members(out_dir: str, digest: str, config) -> List[Dict]:
  """The members of the family in `out_dir` if it was specialised from the same supernet
  and batches (`digest`) with the same settings; none otherwise."""
  path = os.path.join(out_dir, FAMILY_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as handle:
    previous = json.load(handle)
  if (previous.get("scoring_digest") != digest
      or previous.get("specialise") != dataclasses.asdict(config)):
    return []
  return previous["members"]


def _cached_scores(path: str, digest: str, space, log) -> Dict:
  if not os.path.exists(path):
    return {}
  with open(path) as handle:
    cached = json.load(handle)
  if cached.get("scoring_digest") != digest:
    log(f"{path} was scored by another supernet or setup (scoring digest differs); "
        "scoring again")
    return {}
  return {space.choices_from_string(a): s for a, s in zip(cached["archs"], cached["top1"])}


def specialise_run(run, targets: Sequence[targets_lib.Target], out_dir: str,
                   config: specialise_lib.SpecialiseConfig, truth: Optional[Dict] = None,
                   log=print) -> Dict:
  """Specialises the restored, finished search `run` (a `runner.SearchRun`) to `targets`,
  writes the family to `out_dir` (chief only) and returns family.json's content. `truth`:
  a ground truth's {"macs", "top1" (rows per seed)} of the same space, drawn as the true
  front."""
  from betanas_tf import distribution  # pylint: disable=import-outside-toplevel
  check_supernet(run)
  start = time.time()
  space = run.space
  tables = {t.name: t.cost_table(space, run.config.se_ratio) for t in targets}
  # In the tables' own units (MMACs or ms): their targets are the bounds.
  bounds = [specialise_lib.Bound(t.name, tables[t.name].of_choices, tables[t.name].target,
                                 np.asarray(tables[t.name].table), tables[t.name].fixed)
            for t in targets]
  digest = run.scoring_digest(split="arch")
  scores_path = os.path.join(out_dir, SCORES_FILE)
  scored = _cached_scores(scores_path, digest, space, log)
  # Targets this family already has (same supernet and settings) keep their picks: only
  # new targets are specialised, from the cached scores.
  kept = {m["target"]: m for m in _previous_members(out_dir, digest, config)}
  scored, kept = _agreed_cache(run, scored, kept, log)
  chief = distribution.is_chief(run.strategy)
  so_far = dict(scored)

  def score_many(choices_list):
    run.stop_point("during specialisation")
    scores = [m["top1"] for m in run.score_paths(choices_list, split="arch")]
    so_far.update(zip(choices_list, scores))
    if chief:   # every round's scores survive a stop: a rerun scores only what is new
      _write_scores(space, so_far, digest, out_dir)
    return scores

  result = specialise_lib.specialise([b.num_candidates for b in space.choice_blocks],
                                     [b for b, t in zip(bounds, targets) if str(t) not in kept],
                                     score_many, config, scored, log)
  for t in targets:
    if str(t) in kept:
      result["picks"][t.name] = tuple(kept[str(t)]["choices"])
      result["predicted"][t.name] = kept[str(t)]["predicted_top1"]
  members = _members(run, targets, tables, result["picks"], result["scored"])
  for member in members:
    member["predicted_top1"] = result["predicted"].get(member["name"])
  family = {"format": FORMAT, "method": "post_hoc", "search_dir": os.path.abspath(run.out),
            "space": space.name, "input_size": space.input_size,
            "width_multiplier": space.width_multiplier,
            "strategy": run.policy.name, "steps": run.config.max_steps,
            "specialise": dataclasses.asdict(config), "scoring_digest": digest,
            "scored_networks": len(result["scored"]), "new_scores": result["new_scores"],
            "predictor_cv_tau": result["predictor_cv_tau"],
            "seconds": round(time.time() - start, 3), "members": members}
  if chief:
    _write(run, family, result["scored"], out_dir, truth)
  return family


def _agreed_cache(run, scored: Dict, kept: Dict, log) -> Tuple[Dict, Dict]:
  """The cached scores and kept members if every worker read the same ones, else none for
  anyone: the workers propose, and score together, what their caches leave to score, so
  caches that differ (a worker that cannot see the chief's files) would make them wait on
  each other's collectives for ever."""
  from betanas_tf import distribution  # pylint: disable=import-outside-toplevel
  fingerprint = hashlib.sha256(json.dumps(
      [sorted((list(c), s) for c, s in scored.items()),
       sorted((t, m["choices"]) for t, m in kept.items())]).encode()).digest()
  mine = int.from_bytes(fingerprint[:7], "big")
  if len(set(distribution.gather_from_workers(run.strategy, mine))) > 1:
    log("the workers read different cached scores or family members; every worker "
        "scores from scratch")
    return {}, {}
  return scored, kept


def _write_scores(space, scored: Dict, digest: str, out_dir: str):
  os.makedirs(out_dir, exist_ok=True)
  archs = sorted(scored)
  io_utils.atomic_write_json(os.path.join(out_dir, SCORES_FILE), {
      "scoring_digest": digest, "split": "arch",
      "archs": [space.choices_to_string(c) for c in archs], "top1": [scored[c] for c in archs]})


def _members(run, targets, tables, picks: Dict, scored: Dict) -> List[Dict]:
  """family.json's member of each target: its pick, MACs, params, its cost under every
  target's table (MACs always) and its supernet score."""
  from betanas_tf import cost as cost_lib  # pylint: disable=import-outside-toplevel
  space = run.space
  macs = cost_lib.space_costs(space, run.config.se_ratio)
  kinds = {"macs": lambda c: macs.of_choices(c).macs}
  for t in targets:
    if t.kind == "latency":
      kinds[f"latency:{t.table}"] = tables[t.name].of_choices
  members = []
  for t in targets:
    choices = tuple(picks[t.name])
    arch = space.arch_from_choices(choices, name=f"{space.name}_{t.name}")
    total = cost_lib.architecture_cost(arch)
    cost = kinds["macs" if t.kind == "macs" else f"latency:{t.table}"](choices)
    members.append({
        "target": str(t), "name": t.name, "kind": t.kind, "bound": t.bound, "unit": t.unit,
        "table": t.table,
        "choices": list(choices), "choices_string": space.choices_to_string(choices),
        "architecture": arch.to_compact(), "macs": total.macs, "params": total.params,
        "cost": cost, "meets_bound": cost <= t.bound * (1 + 1e-12),
        "costs": {kind: round(fn(choices), 6) for kind, fn in kinds.items()},
        "supernet_top1": scored[choices]})
  return members


def in_search_family(run, out_dir: str, truth: Optional[Dict] = None) -> Dict:
  """The family of a finished in-search family run (`RunSettings.targets`: one alpha per
  target): per target, its alpha's argmax, or the most probable network within its bound
  if the argmax is over it (`selection.most_probable_within_budget` over the target's own
  active ops), each scored by the supernet as a post-hoc pick is. Writes `out_dir` (chief
  only) and returns family.json's content."""
  from betanas_tf import distribution  # pylint: disable=import-outside-toplevel
  from betanas_tf import selection  # pylint: disable=import-outside-toplevel
  start = time.time()
  space = run.space
  labels = [b.labels for b in space.choice_blocks]
  num_candidates = [b.num_candidates for b in space.choice_blocks]
  tables = {t.name: t.cost_table(space, run.config.se_ratio) for t in run.targets}
  picks, states = {}, {}
  for t, alphas in zip(run.targets, run.engine.targets):
    table = tables[t.name]
    picks[t.name], _ = selection.most_probable_or_within_budget(
        alphas.probabilities_np(), alphas.active_np(), table.of_choices,
        np.asarray(table.table), table.fixed, table.target, num_candidates)
    states[t.name] = {"p": alphas.probabilities_np().round(6).tolist(),
                      "active": alphas.active_np().astype(int).tolist(),
                      "drops": alphas.drop_log(labels)}
  run.stop_point("before scoring the family")
  distinct = list(dict.fromkeys(picks.values()))
  scored = {c: m["top1"] for c, m in zip(distinct, run.score_paths(distinct, split="arch"))}
  members = _members(run, run.targets, tables, picks, scored)
  for member in members:
    member.update(states[member["name"]])
  family = {"format": FORMAT, "method": "in_search", "search_dir": os.path.abspath(run.out),
            "space": space.name, "input_size": space.input_size,
            "width_multiplier": space.width_multiplier, "strategy": run.policy.name,
            "steps": run.config.max_steps, "specialise": None,
            "scoring_digest": run.scoring_digest(split="arch"), "scored_networks": len(scored),
            "new_scores": len(scored), "predictor_cv_tau": None,
            "seconds": round(time.time() - start, 3), "members": members}
  if distribution.is_chief(run.strategy):
    _write(run, family, scored, out_dir, truth)
  return family


def _write(run, family: Dict, scored: Dict, out_dir: str, truth: Optional[Dict]):
  from betanas_tf import cost as cost_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import figures  # pylint: disable=import-outside-toplevel
  space = run.space
  _write_scores(space, scored, family["scoring_digest"], out_dir)
  archs = sorted(scored)
  for member in family["members"]:
    arch = space.arch_from_choices(member["choices"], name=f"{space.name}_{member['name']}")
    os.makedirs(os.path.join(out_dir, member["name"]), exist_ok=True)
    arch.save(os.path.join(out_dir, member["name"], "arch.json"))
  io_utils.atomic_write_json(os.path.join(out_dir, FAMILY_FILE), family)
  costs = cost_lib.space_costs(space, run.config.se_ratio)
  points = [(float(costs.of_choices(c).macs), scored[c]) for c in archs]
  references = [(name, float(cost_lib.architecture_cost(arch).macs))
                for name, arch in reference_networks(space)]
  front = None
  if truth is not None:
    front = list(zip(truth["macs"], np.mean(np.asarray(truth["top1"], np.float64), axis=0)))
  figures.plot_family(points, family["members"], references, front,
                      os.path.join(out_dir, "family.png"),
                      f"{space.name}: one {family['strategy']} supernet, {len(family['members'])} targets")


def reference_networks(space) -> List:
  """(name, Architecture) of the hand-designed networks this space's family is drawn against:
  MobileNetV2 at its published width multipliers on proxyless_mobile (at the space's input
  size and classes); none elsewhere."""
  from betanas_tf import references  # pylint: disable=import-outside-toplevel
  if space.name != "proxyless_mobile":
    return []
  return [(f"MobileNetV2 x{w:g}", references.mobilenet_v2(w, space.num_classes, space.input_size))
          for w in (0.35, 0.5, 0.75, 1.0, 1.4)]


def read_family(family_dir: str) -> Dict:
  """family.json of `family_dir`, with a clear error if it holds none."""
  path = os.path.join(family_dir, FAMILY_FILE)
  if not os.path.exists(path):
    raise ValueError(f"{family_dir}: holds no {FAMILY_FILE} (make one with python -m "
                     "betanas_tf.family)")
  with open(path) as handle:
    return json.load(handle)


def print_family(family: Dict, seconds: float):
  for m in family["members"]:
    print(f"{m['name']}: {m['choices_string']}  {m['macs'] / 1e6:.2f}M MACs  "
          f"{m['params'] / 1e6:.3f}M params  cost {m['cost']:.4g} {m['unit']} "
          f"(bound {m['bound']:g}: {'met' if m['meets_bound'] else 'NOT met'})  "
          f"supernet top-1 {m['supernet_top1']:.4f}")
  tau = family["predictor_cv_tau"]
  print(f"{family['scored_networks']} networks scored ({family['new_scores']} new), "
        f"restore and specialisation {seconds:.1f} s"
        + (f"; predictor's cross-validated Kendall tau {tau:.3f}" if tau is not None else ""))
