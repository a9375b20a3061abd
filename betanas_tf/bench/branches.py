"""The paper's Fig 7: do fewer weight-sharing branches train better, and rank closer to
training every network alone? The evidence BetaNAS gives for dropping paths, rerun.

    python -m betanas_tf.bench.branches --out_dir=/tmp/branches            # cluttered digits, 5 seeds
    python -m betanas_tf.bench.branches --out_dir=/tmp/branches_q --quick  # the same pipeline, tiny
    python -m betanas_tf.bench.branches --out_dir=/tmp/b10 --dataset=cifar10 --data_dir=DIR

The paper trains 4 networks (conv1-conv1, conv1-conv3, conv3-conv1, conv3-conv3) with no
weight sharing (NS), 2-branch sharing (B2) and 4-branch sharing (B4) for 30 / 60 / 120 epochs
and claims (1) B2 reaches a higher accuracy than B4 and (2) ranks the networks closer to NS.
Its text admits two readings, and both are built (`READINGS`):

* (a) *paths share*: B2 trains the networks in weight-sharing pairs (one block fixed, the
  other holding both candidates), B4 all four in one supernet; steps S, 2S, 4S give every
  network's path the same number of steps.
* (b) *branches per block*: B2 holds {conv1, conv3} in each block, B4 those and two more
  (conv5, conv7 of the `branches` space); steps S, 2S, 4S give every candidate op the same
  number of steps.

Every training is a search of the package (`runner.SearchRun`, spos' policy: a path drawn
uniformly per step, the package's balanced Phase 1) on the `branches` space restricted to a
tile of candidates (`RunSettings.ops`); NS is the one-candidate tile. Each network is then
scored from its tile's weights with BatchNorm recalibrated, exactly as a search scores: on
the eval split (accuracies, Fig 7) and on the arch split (rankings against NS measured on the
eval split, so no ranking shares its images with its truth). Two traps are built in: the
NS networks' curve over S/4, S/2, S and 2S steps shows whether S reaches their plateau (an
undertrained NS favours whichever regime gives the shared stem and head more steps), and a
second candidate set of close networks ({conv3, conv5}) and a ranking of all 16 paths over 4
candidates keep claim (2) from passing only because the 4 networks are far apart.

Every training is cached in --out_dir (run.json ties it to its settings), so a rerun
continues. Writes results.json, report.md, fig7.png and plateau.png.
"""

import dataclasses
import itertools
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import flags

from betanas_tf import cli
from betanas_tf import data as data_lib
from betanas_tf import engine
from betanas_tf import figures
from betanas_tf import io_utils
from betanas_tf import policies
from betanas_tf import runner
from betanas_tf import spaces
from betanas_tf.bench import parallel
from betanas_tf.bench import rank_stats

SPACE = "branches"
OPS = ("conv1", "conv3", "conv5", "conv7")   # the space's candidates, in its order
PAIRS = (("conv1", "conv3"), ("conv5", "conv7"))
READINGS = ("paths", "branches")            # (a) and (b) of the module docstring
REGIMES = ("NS", "B2", "B4")
FACTOR = {"NS": 1, "B2": 2, "B4": 4}        # steps per training, in units of S
PLATEAU = (0.25, 0.5, 1.0, 2.0)             # NS budgets of the plateau curve, in units of S

Tile = Tuple[Tuple[str, ...], Tuple[str, ...]]   # candidate labels of block 0 and block 1


@dataclasses.dataclass(frozen=True)
class BranchesPlan:
  dataset: str = "cluttered_digits"
  data_dir: Optional[str] = None
  steps: int = 3000                 # S: an NS network's Phase-1 steps
  seeds: Tuple[int, ...] = (0, 1, 2, 3, 4)
  experiments: Tuple[str, ...] = ("far", "close", "all16")
  eval_batches: int = 68            # batches of 64 scoring a network (cluttered: all of eval)
  calibration_batches: int = 10
  bootstrap: int = 1000
  plateau_seed: int = 0             # the seed whose NS networks draw the plateau curve

  def __post_init__(self):
    unknown = [e for e in self.experiments if e not in EXPERIMENTS]
    if unknown or not self.experiments:
      raise ValueError(f"experiments must name some of {', '.join(EXPERIMENTS)}, got "
                       f"{', '.join(self.experiments) or 'none'}")
    if not self.seeds or len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f"seeds must be distinct and not empty, got {self.seeds}")
    if self.steps < 8:
      raise ValueError(f"steps must be at least 8, got {self.steps}")


# ---- what each experiment trains --------------------------------------------------------

def _paths(first: Sequence[str], second: Sequence[str]) -> List[str]:
  return [f"{a}-{b}" for a, b in itertools.product(first, second)]


def _fig7_tiles(pair: Tuple[str, str]) -> Dict[str, Dict[str, List[Tile]]]:
  """reading -> regime -> tiles, for the 4 networks over `pair` in both blocks."""
  both = (tuple(pair), tuple(pair))
  return {"paths": {"NS": [((a,), (b,)) for a in pair for b in pair],
                    "B2": [((a,), tuple(pair)) for a in pair], "B4": [both]},
          "branches": {"NS": [((a,), (b,)) for a in pair for b in pair],
                       "B2": [both], "B4": [(OPS, OPS)]}}


def _all16_tiles() -> Dict[str, Dict[str, List[Tile]]]:
  """reading -> regime -> tiles covering all 16 paths over the 4 candidates: (a) B2 = tiles
  of 2 paths (one op x a pair), B4 = tiles of 4 (a pair x a pair); (b) B2 = 2 candidates
  per block (pair x pair), B4 = all 4 per block."""
  singles = [((a,), (b,)) for a in OPS for b in OPS]
  squares = [(p, q) for p in PAIRS for q in PAIRS]
  return {"paths": {"NS": singles, "B2": [((a,), q) for a in OPS for q in PAIRS], "B4": squares},
          "branches": {"NS": singles, "B2": squares, "B4": [(OPS, OPS)]}}


EXPERIMENTS = {"far": ("the paper's 4 networks over {conv1, conv3}", _fig7_tiles(("conv1", "conv3"))),
               "close": ("4 close networks over {conv3, conv5}", _fig7_tiles(("conv3", "conv5"))),
               "all16": ("all 16 paths over {conv1, conv3, conv5, conv7}", _all16_tiles())}


QUICK = BranchesPlan(steps=16, seeds=(0, 1), experiments=("far",), eval_batches=2,
                     calibration_batches=2, bootstrap=100)


def networks_of(experiment: str) -> List[str]:
  """The networks an experiment compares (choice strings of the `branches` space)."""
  ns = EXPERIMENTS[experiment][1]["paths"]["NS"]
  return [_paths(*tile)[0] for tile in ns]


@dataclasses.dataclass(frozen=True)
class Training:
  """One supernet (or one network: a one-candidate tile) trained for `steps` with `seed`."""
  tile: Tile
  steps: int
  seed: int

  @property
  def name(self) -> str:
    return f"{'.'.join(self.tile[0])}-{'.'.join(self.tile[1])}_s{self.steps}_seed{self.seed}"

  @property
  def networks(self) -> List[str]:
    return _paths(*self.tile)


def trainings(plan: BranchesPlan) -> List[Training]:
  """Every training the plan needs, once each (tiles shared by experiments, readings or
  regimes at the same steps train once), the plateau curve's included."""
  needed = {}
  for experiment in plan.experiments:
    for reading in READINGS:
      for regime, tiles in EXPERIMENTS[experiment][1][reading].items():
        for tile in tiles:
          for seed in plan.seeds:
            t = Training(tile, FACTOR[regime] * plan.steps, seed)
            needed[t.name] = t
  for tile in EXPERIMENTS["far"][1]["paths"]["NS"]:
    for fraction in PLATEAU:
      t = Training(tile, max(8, int(round(fraction * plan.steps))), plan.plateau_seed)
      needed.setdefault(t.name, t)
  return list(needed.values())


# ---- one training -----------------------------------------------------------------------

def run_settings(plan: BranchesPlan, training: Training, out_dir: str):
  """(RunSettings, Policy, EngineConfig) of one training: spos' uniform path per step on the
  tile, demo.flags' supernet recipe at its steps."""
  settings = runner.RunSettings(
      out_dir=os.path.join(out_dir, "trainings", training.name), space=SPACE,
      dataset=data_lib.DataSource(plan.dataset, data_dir=plan.data_dir),
      checkpoint_every=training.steps, log_every=max(10, training.steps // 10),
      eval_batches=plan.eval_batches, calibration_batches=plan.calibration_batches,
      evolution_population=4, evolution_generations=1, progress=False,
      ops=tuple(tuple(labels) for labels in training.tile))
  return settings, policies.POLICIES.get("spos"), engine.demo_config(training.steps, training.seed)


def train_and_score(plan: BranchesPlan, training: Training, out_dir: str) -> Dict:
  """Trains (or resumes, or reads) one tile and scores each of its networks on the eval and
  arch splits: {"networks", "eval": {"top1", "loss"}, "arch": {...}, "seconds"}."""
  settings, policy, config = run_settings(plan, training, out_dir)
  path = os.path.join(settings.out_dir, "scores.json")
  runner.check_recorded_identity(settings.out_dir, runner.run_identity(
      settings, policy, config, spaces.get_space(SPACE).input_size))
  if os.path.exists(path):
    return json.load(open(path))
  start = time.time()
  run = runner.SearchRun(settings, policy, config)
  run.run()
  choices = [run.space.choices_from_string(n) for n in training.networks]
  scores = {"networks": training.networks, "steps": training.steps, "seed": training.seed}
  for split in ("eval", "arch"):
    metrics = run.score_paths(choices, split=split)
    scores[split] = {"top1": [m["top1"] for m in metrics], "loss": [m["loss"] for m in metrics]}
  scores["seconds"] = round(time.time() - start, 1)
  io_utils.atomic_write_json(path, scores)
  return scores


# ---- analysis ---------------------------------------------------------------------------

def _table(scores: Dict[str, Dict], plan: BranchesPlan, tiles: List[Tile], steps: int,
           networks: List[str], split: str, metric: str = "top1") -> np.ndarray:
  """(seeds x networks) of one regime: each network read from the tile that holds it."""
  rows = []
  for seed in plan.seeds:
    found = {}
    for tile in tiles:
      result = scores[Training(tile, steps, seed).name]
      found.update(zip(result["networks"], result[split][metric]))
    rows.append([found[n] for n in networks])
  return np.asarray(rows, np.float64)


def _mean_ci(values: np.ndarray, rounds: int, rng) -> Dict:
  """Mean over seeds (rows) with a 95 % bootstrap interval over seeds."""
  values = np.asarray(values, np.float64)
  means = [values[rng.integers(len(values), size=len(values))].mean(0) for _ in range(rounds)]
  low, high = np.percentile(means, [2.5, 97.5], axis=0)
  return {"mean": values.mean(0).tolist(), "ci": [np.atleast_1d(low).tolist(),
                                                  np.atleast_1d(high).tolist()]}


def analyse(plan: BranchesPlan, scores: Dict[str, Dict]) -> Dict:
  """Per experiment and reading: each network's top-1 per regime (eval split, interval over
  seeds); the gap B2 - B4 (mean over networks, paired by seed); tau(B2, NS) and tau(B4, NS)
  (each seed's arch-split scores against NS' seed-mean eval top-1) with intervals over seeds
  and the paired difference; and the NS plateau curve."""
  rng = np.random.default_rng(0)
  result = {"experiments": {}}
  for experiment in plan.experiments:
    title, readings = EXPERIMENTS[experiment]
    networks = networks_of(experiment)
    entry = {"title": title, "networks": networks, "readings": {}}
    for reading in READINGS:
      tiles = readings[reading]
      top1 = {r: _table(scores, plan, tiles[r], FACTOR[r] * plan.steps, networks, "eval")
              for r in REGIMES}
      arch = {r: _table(scores, plan, tiles[r], FACTOR[r] * plan.steps, networks, "arch")
              for r in REGIMES}
      truth = top1["NS"].mean(0)
      taus = {r: np.array([rank_stats.kendall_tau(row, truth) for row in arch[r]])
              for r in REGIMES}
      gap = (top1["B2"] - top1["B4"]).mean(1)     # per seed, mean over networks
      tau_gap = taus["B2"] - taus["B4"]
      entry["readings"][reading] = {
          "top1": {r: _mean_ci(top1[r], plan.bootstrap, rng) for r in REGIMES},
          "top1_per_seed": {r: top1[r].tolist() for r in REGIMES},
          "gap_b2_b4": dict(_mean_ci(gap[:, None], plan.bootstrap, rng), per_seed=gap.tolist()),
          "tau": {r: dict(_mean_ci(np.nan_to_num(taus[r])[:, None], plan.bootstrap, rng),
                          per_seed=taus[r].tolist()) for r in ("NS", "B2", "B4")},
          "tau_b2_minus_b4": dict(_mean_ci(np.nan_to_num(tau_gap)[:, None], plan.bootstrap, rng),
                                  per_seed=tau_gap.tolist())}
    result["experiments"][experiment] = entry
  curve = []
  for fraction in PLATEAU:
    steps = max(8, int(round(fraction * plan.steps)))
    tops = [scores[Training(tile, steps, plan.plateau_seed).name]["eval"]["top1"][0]
            for tile in EXPERIMENTS["far"][1]["paths"]["NS"]]
    curve.append({"steps": steps, "top1": tops})
  result["plateau"] = {"networks": networks_of("far"), "seed": plan.plateau_seed, "curve": curve}
  return result


def _fmt_ci(entry: Dict, index: int = 0, digits: int = 3) -> str:
  return (f"{entry['mean'][index]:+.{digits}f} [{entry['ci'][0][index]:+.{digits}f}, "
          f"{entry['ci'][1][index]:+.{digits}f}]")


def report(result: Dict, plan: BranchesPlan, seconds: float) -> str:
  lines = [f"Fig 7 rerun on {plan.dataset}: S = {plan.steps} Phase-1 steps (NS), 2S (B2), 4S "
           f"(B4); seeds {','.join(map(str, plan.seeds))}; {seconds / 60:.1f} min.", ""]
  curve = result["plateau"]
  lines += ["NS plateau (seed %d, eval top-1): " % curve["seed"] + "; ".join(
      f"{c['steps']} steps " + "/".join(f"{t:.3f}" for t in c["top1"]) for c in curve["curve"])
      + f" ({', '.join(curve['networks'])})", ""]
  for experiment, entry in result["experiments"].items():
    lines += [f"### {experiment}: {entry['title']}", ""]
    for reading, r in entry["readings"].items():
      lines += [f"Reading ({'a' if reading == 'paths' else 'b'}) {reading}: top-1 (eval split, "
                "mean over seeds [95 % CI])", "",
                "| network | NS | B2 | B4 |", "|---|---|---|---|"]
      for i, network in enumerate(entry["networks"]):
        lines.append(f"| {network} | " + " | ".join(
            f"{r['top1'][g]['mean'][i]:.3f} [{r['top1'][g]['ci'][0][i]:.3f}, "
            f"{r['top1'][g]['ci'][1][i]:.3f}]" for g in REGIMES) + " |")
      lines += ["", f"B2 − B4 top-1 (mean over networks, paired by seed): "
                f"{_fmt_ci(r['gap_b2_b4'])}; τ against NS (arch-split scores vs NS' eval "
                f"top-1): B2 {_fmt_ci(r['tau']['B2'], digits=2)}, B4 "
                f"{_fmt_ci(r['tau']['B4'], digits=2)}, B2 − B4 "
                f"{_fmt_ci(r['tau_b2_minus_b4'], digits=2)}; NS' own seeds "
                f"{_fmt_ci(r['tau']['NS'], digits=2)}.", ""]
  return "\n".join(lines) + "\n"


def plot(result: Dict, out_dir: str) -> List[str]:
  plt = figures.plt
  paths = []
  experiments = list(result["experiments"].items())
  fig, axes = plt.subplots(len(experiments), 2, figsize=(11, 3.4 * len(experiments)),
                           squeeze=False)
  colours = {"NS": "#4C72B0", "B2": "#55A868", "B4": "#C44E52"}
  for row, (experiment, entry) in zip(axes, experiments):
    for ax, reading in zip(row, READINGS):
      r = entry["readings"][reading]
      x = np.arange(len(entry["networks"]))
      for k, regime in enumerate(REGIMES):
        mean = np.asarray(r["top1"][regime]["mean"])
        low, high = (np.asarray(v) for v in r["top1"][regime]["ci"])
        ax.bar(x + (k - 1) * 0.27, mean, 0.27, color=colours[regime], label=regime,
               yerr=[mean - low, high - mean], capsize=2)
      ax.set_xticks(x)
      ax.set_xticklabels(entry["networks"], rotation=30 if len(x) > 4 else 0, fontsize=7)
      lowest = min(min(r["top1"][g]["ci"][0]) for g in REGIMES)
      ax.set_ylim(max(0.0, lowest - 0.05), 1.0)
      ax.set_title(f"{experiment}, reading ({'a' if reading == 'paths' else 'b'}) {reading}",
                   fontsize=9)
      ax.set_ylabel("eval top-1 (mean over seeds, 95 % CI)")
      ax.legend(fontsize=7)
      ax.grid(alpha=0.3, axis="y")
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "fig7.png"))
  figures.save(fig, paths[-1])
  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  curve = result["plateau"]
  steps = [c["steps"] for c in curve["curve"]]
  for i, network in enumerate(curve["networks"]):
    ax.plot(steps, [c["top1"][i] for c in curve["curve"]], "o-", label=network)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("Phase-1 steps (NS: each network alone)")
  ax.set_ylabel("eval top-1")
  ax.set_title(f"Do the NS networks reach their plateau? (seed {curve['seed']})", fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "plateau.png"))
  figures.save(fig, paths[-1])
  return paths


def run(out_dir: str, plan: BranchesPlan = BranchesPlan(), log=print, workers: int = 1) -> Dict:
  """The whole experiment (module docstring); returns results.json's contents."""
  start = time.time()
  os.makedirs(out_dir, exist_ok=True)
  todo = trainings(plan)
  # The longest first, so that the last to start is a short one.
  todo.sort(key=lambda t: -t.steps * len(t.networks))
  if parallel.run_tasks([(train_and_score, (plan, t, out_dir)) for t in todo], workers, log):
    log(f"{len(todo)} trainings in {workers} workers ({time.time() - start:.0f} s)")
  scores = {t.name: train_and_score(plan, t, out_dir) for t in todo}
  result = analyse(plan, scores)
  result["plan"] = dataclasses.asdict(plan)
  result["trainings"] = len(todo)
  result["seconds"] = time.time() - start
  result["figures"] = plot(result, out_dir)
  io_utils.atomic_write_json(os.path.join(out_dir, "results.json"), result)
  io_utils.atomic_write_text(os.path.join(out_dir, "report.md"),
                             report(result, plan, result["seconds"]))
  return result


def define_flags():
  d = BranchesPlan()
  flags.DEFINE_string("out_dir", None, "Output directory (re-running continues).")
  flags.DEFINE_bool("quick", False, "A tiny plan (what the test runs): S = 16, 2 seeds, far only.")
  cli.define_data_flags(d.dataset)
  flags.DEFINE_integer("steps", d.steps, "S: Phase-1 steps of an NS network (B2: 2S, B4: 4S).",
                       lower_bound=8)
  flags.DEFINE_list("seeds", [str(s) for s in d.seeds], "Training seeds.")
  flags.DEFINE_list("experiments", list(d.experiments), "Of: " + ", ".join(
      f"{name} ({title})" for name, (title, _) in EXPERIMENTS.items()))
  flags.DEFINE_integer("eval_batches", d.eval_batches, "Batches of 64 scoring a network.",
                       lower_bound=1)
  flags.DEFINE_integer("calibration_batches", d.calibration_batches, "Training batches "
                       "recalibrating a network's BatchNorm.", lower_bound=1)
  flags.DEFINE_integer("bootstrap", d.bootstrap, "Bootstrap rounds.", lower_bound=10)
  flags.DEFINE_integer("workers", parallel.available_cores(), "Trainings side by side, one "
                       "TensorFlow thread each.", lower_bound=1)


def plan_from_flags() -> BranchesPlan:
  f = flags.FLAGS
  if f.quick:
    return QUICK
  if not all(s.lstrip("-").isdigit() for s in f.seeds):
    raise ValueError(f"--seeds must be integers, got {','.join(f.seeds)}")
  return BranchesPlan(dataset=f.dataset, data_dir=f.data_dir, steps=f.steps,
                      seeds=tuple(int(s) for s in f.seeds), experiments=tuple(f.experiments),
                      eval_batches=f.eval_batches, calibration_batches=f.calibration_batches,
                      bootstrap=f.bootstrap)


@cli.reports_errors("branches")
def main(argv):
  del argv
  out_dir = cli.require_out_dir()
  plan = plan_from_flags()
  result = run(out_dir, plan, log=lambda m: print(m, flush=True), workers=flags.FLAGS.workers)
  print(report(result, plan, result["seconds"]))
  return 0


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
