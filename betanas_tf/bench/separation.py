"""Does a task separate a space's architectures? (the rank benchmark's first requirement)

    python -m betanas_tf.bench.separation --space=small --archs=32 --out_dir=/tmp/separation

A ranking benchmark means something only if training the same architectures twice ranks
them the same way and they differ by more than the noise. This trains `--archs`
architectures drawn uniformly from `--space` (keras-tuner's random oracle with one oracle
seed, so every training seed trains the same ones; the whole space with --archs=0 and the
grid), standalone with the rank benchmark's ground-truth recipe, once per training seed,
and reports the spread of eval top-1 and the seed-to-seed Kendall tau of eval top-1 and
eval loss with a bootstrap interval over architectures. The rank benchmark's own criteria:
tau >= 0.7 and >= 10 points of top-1 between the worst and the best architecture.
Every trial is cached in --out_dir (re-running resumes); writes results.json.
"""

import os
import sys
import time
from typing import Dict, Sequence

import numpy as np

from betanas_tf.bench import parallel
from betanas_tf.bench import rank

TAU_GOAL = 0.7
SPREAD_GOAL = 0.10


def plan_for(space: str, archs: int, input_size: int = 16, epochs: int = 8,
             seeds: Sequence[int] = (0, 1), dataset: str = "cluttered_digits") -> rank.RankPlan:
  """The rank benchmark's ground-truth settings over a sample of `archs` (0: the grid)."""
  return rank.RankPlan(space=space, input_size=input_size, dataset=dataset,
                       gt_seeds=tuple(seeds), gt_epochs=epochs, gt_max_trials=archs or None,
                       gt_oracle="random" if archs else "grid")


def separation(out_dir: str, plan: rank.RankPlan, bootstrap: int = 1000, workers: int = 1) -> Dict:
  """Trains the plan's ground truth (cached; the seeds side by side in `workers` processes)
  and returns its spread and seed-to-seed taus."""
  if len(plan.gt_seeds) < 2:
    raise ValueError("a seed-to-seed tau needs at least two training seeds")
  start = time.time()
  gt = rank.ground_truth(plan, out_dir, workers)
  if len(gt["archs"]) < 3:
    raise ValueError(f"only {len(gt['archs'])} architectures completed in every seed")
  top1 = np.mean(gt["top1"], axis=0)
  result = {"space": plan.space, "input_size": plan.input_size, "dataset": plan.dataset,
            "epochs": plan.gt_epochs, "seeds": list(plan.gt_seeds), "archs": gt["archs"],
            "macs": gt["macs"], "top1": gt["top1"], "loss": gt["loss"],
            "top1_range": [float(top1.min()), float(top1.max())],
            "seconds": round(time.time() - start, 1)}
  for metric in ("top1", "loss"):
    per_seed = gt[metric]
    # Every pair of seeds: tau of seed a against seed b, bootstrapped over architectures.
    pairs = [(a, b) for a in range(len(per_seed)) for b in range(a + 1, len(per_seed))]
    taus = [rank.correlations(per_seed[a], per_seed[b])["kendall_tau"] for a, b in pairs]
    low, high = rank.bootstrap_tau([per_seed[0]], per_seed[1], bootstrap)
    result[f"seed_tau_{metric}"] = {"pairs": taus, "mean": float(np.mean(taus)),
                                    "ci_first_pair": [low, high]}
  spread = result["top1_range"][1] - result["top1_range"][0]
  result["meets"] = {"seed_tau_top1": result["seed_tau_top1"]["mean"] >= TAU_GOAL,
                     "spread": spread >= SPREAD_GOAL}
  return result


def report(result: Dict) -> str:
  low, high = result["top1_range"]
  lines = [f"{result['space']} at {result['input_size']} px on {result['dataset']}: "
           f"{len(result['archs'])} architectures x seeds {result['seeds']}, "
           f"{result['epochs']} epochs ({result['seconds']:.0f} s)",
           f"eval top-1 (seed mean) {100 * low:.1f} - {100 * high:.1f} % "
           f"({100 * (high - low):.1f} points; goal >= {100 * SPREAD_GOAL:.0f})"]
  for metric in ("top1", "loss"):
    entry = result[f"seed_tau_{metric}"]
    ci = entry["ci_first_pair"]
    lines.append(f"seed-to-seed Kendall tau, eval {metric}: {entry['mean']:.3f} "
                 f"[{ci[0]:.3f}, {ci[1]:.3f}]" + (f" (goal >= {TAU_GOAL})" if metric == "top1" else ""))
  return "\n".join(lines)


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import io_utils  # pylint: disable=import-outside-toplevel
  del argv
  f = flags.FLAGS
  try:
    if not f.out_dir:
      raise ValueError("give --out_dir")
    if not all(s.lstrip("-").isdigit() for s in f.seeds):
      raise ValueError(f"--seeds must be integers, got {','.join(f.seeds)}")
    plan = plan_for(f.space, f.archs, f.input_size, f.epochs, tuple(int(s) for s in f.seeds),
                    f.dataset)
    result = separation(f.out_dir, plan, workers=f.workers)
  except ValueError as error:
    print(f"separation: error: {error}", file=sys.stderr)
    return 1
  io_utils.atomic_write_json(os.path.join(f.out_dir, "results.json"), result)
  print(report(result))
  return 0


def define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("space", "small", spaces.SPACES.names(), "Search space.")
  flags.DEFINE_integer("archs", 32, "Architectures drawn uniformly (0: the whole space).",
                       lower_bound=0)
  flags.DEFINE_integer("input_size", 16, "Input resolution.", lower_bound=8)
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
