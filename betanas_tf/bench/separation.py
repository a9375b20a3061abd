"""Does a task separate a space's architectures? (the rank benchmark's first requirement)

    python -m betanas_tf.bench.separation --space=small --archs=32 --out_dir=/tmp/separation

A ranking benchmark means something only if training the same architectures twice ranks
them the same way and they differ by more than the noise. This trains a sample of
`--archs` architectures of `--space` (`--sample`: spread evenly over the space's MACs range,
`ground_truth.cost_stratified_sample`, the default; or drawn uniformly by keras-tuner's random
oracle; the same ones in every training seed; the whole space with --archs=0 and the
grid), standalone with the rank benchmark's ground-truth recipe, once per training seed,
and reports the spread of eval top-1 and the seed-to-seed Kendall tau of eval top-1 and
eval loss with a bootstrap interval over architectures. The rank benchmark's own criteria:
tau >= 0.7 and >= 10 points of top-1 between the worst and the best architecture.

With four or more seeds it also measures how well a ground truth *averaged over k
trainings* reproduces: the tau between the means of two disjoint groups of k seeds,
averaged over every such split (`group_tau`), for every k up to half the seeds; the
smallest k that reaches tau 0.7 is how many trainings per architecture the space's ground
truth needs (`TruthRequest.seeds`). Every trial is cached in --out_dir (re-running
resumes); writes results.json.
"""

import itertools
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from betanas_tf import cli
from betanas_tf.bench import parallel
from betanas_tf.bench import ground_truth as gt_lib
from betanas_tf.bench import rank_stats

TAU_GOAL = 0.7
SPREAD_GOAL = 0.10


def plan_for(space: str, archs: int, input_size: Optional[int] = None, epochs: int = 8,
             seeds: Sequence[int] = (0, 1), dataset: str = "cluttered_digits",
             sample: str = "cost_stratified") -> gt_lib.TruthRequest:
  """The rank benchmark's ground-truth settings over a `sample` ("cost_stratified" or
  "uniform") of `archs` (0: the grid), at `input_size` (None: the space's own)."""
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  input_size = input_size or spaces.get_space(space).input_size
  return gt_lib.TruthRequest(space=space, input_size=input_size, dataset=dataset,
                             seeds=tuple(seeds), epochs=epochs, max_trials=archs or None,
                             oracle="random" if archs else "grid", sample=sample)


def disjoint_splits(seeds: int, k: int) -> List[Tuple[Tuple[int, ...], Tuple[int, ...]]]:
  """Every unordered pair of disjoint groups of `k` seed indices out of `seeds`."""
  splits = []
  for first in itertools.combinations(range(seeds), k):
    rest = [s for s in range(seeds) if s not in first]
    splits += [(first, second) for second in itertools.combinations(rest, k) if first < second]
  return splits


def group_tau(per_seed: Sequence[Sequence[float]], k: int, bootstrap: int,
              seed: int = 0) -> Dict:
  """Kendall tau between the means over two disjoint groups of `k` seeds (rows of
  `per_seed`, one column per architecture), averaged over every such split; with a 95 %
  bootstrap interval that resamples architectures (the same resample for every split).
  k = 1 is the plain seed-to-seed tau, averaged over every pair of seeds."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  scores = np.asarray(per_seed, np.float64)
  splits = disjoint_splits(len(scores), k)
  if not splits:
    raise ValueError(f"{len(scores)} seeds hold no two disjoint groups of {k}")
  means = [(scores[list(a)].mean(0), scores[list(b)].mean(0)) for a, b in splits]

  def mean_tau(pick):
    return float(np.mean([stats.kendalltau(a[pick], b[pick])[0] for a, b in means]))

  taus = [float(stats.kendalltau(a, b)[0]) for a, b in means]
  rng = np.random.default_rng(seed)
  samples = [mean_tau(rng.integers(scores.shape[1], size=scores.shape[1]))
             for _ in range(bootstrap)]
  samples = [v for v in samples if not np.isnan(v)]
  ci = ([float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))] if samples
        else [float("nan"), float("nan")])
  return {"k": k, "splits": len(splits), "taus": taus, "mean": float(np.mean(taus)), "ci": ci}


def separation(out_dir: str, plan: gt_lib.TruthRequest, bootstrap: int = 1000, workers: int = 1) -> Dict:
  """Trains the plan's ground truth (cached; the seeds side by side in `workers` processes)
  and returns its spread, its seed-to-seed taus and, with four or more seeds, the taus of
  ground truths averaged over k seeds (`group_tau`)."""
  if len(plan.seeds) < 2:
    raise ValueError("a seed-to-seed tau needs at least two training seeds")
  start = time.time()
  gt = gt_lib.for_ranking(plan, out_dir, workers)
  if len(gt["archs"]) < 3:
    raise ValueError(f"only {len(gt['archs'])} architectures completed in every seed")
  top1 = np.mean(gt["top1"], axis=0)
  result = {"space": plan.space, "input_size": plan.input_size, "dataset": plan.dataset,
            "sample": plan.sample if plan.oracle == "random" else "all",
            "epochs": plan.epochs, "seeds": list(plan.seeds), "archs": gt["archs"],
            "macs": gt["macs"], "top1": gt["top1"], "loss": gt["loss"],
            "top1_range": [float(top1.min()), float(top1.max())]}
  for metric in ("top1", "loss"):
    groups = [group_tau(gt[metric], k, bootstrap) for k in range(1, len(plan.seeds) // 2 + 1)]
    single = groups[0]
    result[f"seed_tau_{metric}"] = {"pairs": single["taus"], "mean": single["mean"],
                                    "ci": single["ci"]}
    result[f"group_tau_{metric}"] = groups[1:]
  result["macs_tau"] = rank_stats.macs_tau(gt["macs"], top1, np.mean(gt["loss"], axis=0))
  spread = result["top1_range"][1] - result["top1_range"][0]
  result["meets"] = {"seed_tau_top1": result["seed_tau_top1"]["mean"] >= TAU_GOAL,
                     "spread": spread >= SPREAD_GOAL}
  result["seeds_needed"] = seeds_needed(result)
  result["seconds"] = round(time.time() - start, 1)
  return result


def seeds_needed(result: Dict) -> Optional[int]:
  """The fewest trainings per architecture whose mean reproduces at tau (top-1) >= 0.7
  (None: not within the seeds measured)."""
  if result["seed_tau_top1"]["mean"] >= TAU_GOAL:
    return 1
  reached = [g["k"] for g in result["group_tau_top1"] if g["mean"] >= TAU_GOAL]
  return min(reached) if reached else None


def report(result: Dict) -> str:
  low, high = result["top1_range"]
  lines = [f"{result['space']} at {result['input_size']} px on {result['dataset']}: "
           f"{len(result['archs'])} architectures ({result.get('sample', 'uniform')} sample) "
           f"x seeds {result['seeds']}, "
           f"{result['epochs']} epochs ({result['seconds']:.0f} s)",
           f"eval top-1 (seed mean) {100 * low:.1f} - {100 * high:.1f} % "
           f"({100 * (high - low):.1f} points; goal >= {100 * SPREAD_GOAL:.0f})"]
  for metric in ("top1", "loss"):
    entry = result[f"seed_tau_{metric}"]
    ci = entry["ci"]
    lines.append(f"seed-to-seed Kendall tau, eval {metric}: {entry['mean']:.3f} "
                 f"[{ci[0]:.3f}, {ci[1]:.3f}] (mean over {len(entry['pairs'])} pair(s))"
                 + (f" (goal >= {TAU_GOAL})" if metric == "top1" else ""))
    for group in result.get(f"group_tau_{metric}", []):
      ci = group["ci"]
      lines.append(f"  mean of {group['k']} seeds vs another {group['k']}: {group['mean']:.3f} "
                   f"[{ci[0]:.3f}, {ci[1]:.3f}] ({group['splits']} splits)")
  if "macs_tau" in result:
    lines.append(f"MACs alone rank the seed means at Kendall tau {result['macs_tau']['top1']:.3f} "
                 f"(top-1) / {result['macs_tau']['loss']:.3f} (loss)")
  needed = result.get("seeds_needed")
  if len(result["seeds"]) >= 4:
    lines.append("trainings per architecture for a ground truth at tau >= 0.7: "
                 + (str(needed) if needed else f"more than {len(result['seeds']) // 2}"))
  return "\n".join(lines)


@cli.reports_errors("separation")
def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import io_utils  # pylint: disable=import-outside-toplevel
  del argv
  f = flags.FLAGS
  cli.require_out_dir()
  if not all(s.lstrip("-").isdigit() for s in f.seeds):
    raise ValueError(f"--seeds must be integers, got {','.join(f.seeds)}")
  plan = plan_for(f.space, f.archs, f.input_size, f.epochs, tuple(int(s) for s in f.seeds),
                  f.dataset, f.sample)
  result = separation(f.out_dir, plan, workers=f.workers)
  io_utils.atomic_write_json(os.path.join(f.out_dir, "results.json"), result)
  print(report(result))
  return 0


def define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  cli.define_space_flags("small", width_multiplier=False)
  flags.DEFINE_integer("archs", 32, "Architectures sampled (0: the whole space).",
                       lower_bound=0)
  flags.DEFINE_enum("sample", "cost_stratified", gt_lib.GT_SAMPLES, "How they are sampled: "
                    "spread evenly over the space's MACs range, or uniformly.")
  flags.DEFINE_integer("epochs", 8, "Epochs per training.", lower_bound=1)
  flags.DEFINE_list("seeds", ["0", "1"], "Training seeds (at least two).")
  flags.DEFINE_enum("dataset", "cluttered_digits", ["cluttered_digits", "digits"],
                    "Dataset (offline ones).")
  flags.DEFINE_integer("workers", parallel.available_cores(), "Processes training the seeds, "
                       "one TensorFlow thread each (1: all in this process).", lower_bound=1)
  flags.DEFINE_string("out_dir", None, "Output directory (re-running resumes).")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
