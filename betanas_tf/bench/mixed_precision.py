"""Benchmark: the demo search and a retraining in float32, bfloat16 and float16.

    python -m betanas_tf.bench.mixed_precision --out_dir=/tmp/precision [--seeds=0,1,2]

For each seed, the demo search (configs/demo.flags: micro on digits, 600 steps) in each
precision, run as a user runs it (`python -m betanas_tf.search ... --mixed_precision=P`),
then a retraining of the float32 search's architecture (8 epochs on digits) in each
precision, and one in float32 with `--jit_compile` (XLA). Prints, per precision against float32: the final Phase-1 loss (the mean of
the last `--tail` log intervals) and its relative difference, whether the architecture
is the same, the largest |alpha| difference, and the retraining's top-1. A second float32
run of the same command ("float32 again") shows how far a run is from itself: once one
op is dropped at another step the active sets, and so the sampled paths, differ.
Re-running reuses finished runs.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
from betanas_tf import cli

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRECISIONS = ("none", "bfloat16", "float16")


def define_flags():
  flags.DEFINE_string("out_dir", None, "Output directory (re-running reuses finished runs).")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Search seeds.")
  flags.DEFINE_integer("tail", 20, "Log intervals averaged for the final Phase-1 loss.",
                       lower_bound=1)
  flags.DEFINE_integer("retrain_epochs", 8, "Retraining epochs on digits.", lower_bound=1)


def _run(args, out_dir: str, done: str):
  if os.path.exists(os.path.join(out_dir, done)):
    return
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable, "-m", *args, f"--out_dir={out_dir}"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
  if result.returncode:
    raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")


def search(out_dir: str, precision: str, seed: int, tag: str = "") -> dict:
  run_dir = os.path.join(out_dir, f"search_{precision}{tag}_seed{seed}")
  _run(["betanas_tf.search", f"--flagfile={os.path.join(ROOT, 'configs', 'demo.flags')}",
        f"--mixed_precision={precision}", f"--seed={seed}", "--noprogress"], run_dir,
       "summary.json")
  summary = json.load(open(os.path.join(run_dir, "summary.json")))
  history = [json.loads(line) for line in open(os.path.join(run_dir, "history.jsonl"))]
  tail = history[-FLAGS.tail:]
  return {"arch": summary["choices_string"], "alpha": summary["alpha"],
          "loss": sum(h["phase1/loss"] for h in tail) / len(tail),
          "seconds": summary["wall_time_s"], "drops": len(summary["drops"])}


def retrain(out_dir: str, precision: str, arch_path: str, xla: bool = False) -> float:
  run_dir = os.path.join(out_dir, f"retrain_{precision}{'_xla' if xla else ''}")
  start = time.time()
  _run(["betanas_tf.train", f"--arch={arch_path}", "--dataset=digits", "--batch_size=64",
        "--lr=0.2", "--warmup_epochs=1", "--dropout=0.1", "--weight_decay=4e-5", "--verbose=0",
        f"--epochs={FLAGS.retrain_epochs}", f"--mixed_precision={precision}",
        f"--{'' if xla else 'no'}jit_compile"], run_dir, "eval.json")
  if time.time() - start > 1:
    with open(os.path.join(run_dir, "seconds.txt"), "w") as handle:
      handle.write(f"{time.time() - start:.1f}\n")
  seconds = open(os.path.join(run_dir, "seconds.txt")).read().strip() if os.path.exists(
      os.path.join(run_dir, "seconds.txt")) else "?"
  top1 = json.load(open(os.path.join(run_dir, "eval.json")))["top1"]
  print(f"retraining {precision}{' + XLA' if xla else ''}: top-1 {top1:.4f} ({seconds} s, "
        "process start included)")
  return top1


@cli.reports_errors("mixed_precision")
def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  seeds = [int(s) for s in FLAGS.seeds]
  runs = {(p, s): search(FLAGS.out_dir, p, s) for s in seeds for p in PRECISIONS}
  runs.update({("float32 again", s): search(FLAGS.out_dir, "none", s, "_again") for s in seeds})
  arch_path = os.path.join(FLAGS.out_dir, f"search_none_seed{seeds[0]}", "arch.json")
  top1 = {p: retrain(FLAGS.out_dir, p, arch_path) for p in PRECISIONS}
  retrain(FLAGS.out_dir, "none", arch_path, xla=True)
  print("| precision | final Phase-1 loss per seed | vs float32 | same architecture | "
        "max abs alpha difference | drops per seed | search s | retrain top-1 |\n"
        "|---|---|---|---|---|---|---|---|")
  report = {}
  top1["float32 again"] = float("nan")
  for p in PRECISIONS + ("float32 again",):
    losses = [runs[p, s]["loss"] for s in seeds]
    relative = [runs[p, s]["loss"] / runs["none", s]["loss"] - 1 for s in seeds]
    same = sum(runs[p, s]["arch"] == runs["none", s]["arch"] for s in seeds)
    alpha = max(float(np.max(np.abs(np.asarray(runs[p, s]["alpha"])
                                    - np.asarray(runs["none", s]["alpha"])))) for s in seeds)
    seconds = np.mean([runs[p, s]["seconds"] for s in seeds])
    report[p] = {"losses": losses, "relative": relative, "same_arch": same, "alpha": alpha,
                 "archs": [runs[p, s]["arch"] for s in seeds], "retrain_top1": top1[p]}
    print(f"| {p} | {', '.join(f'{v:.4f}' for v in losses)} | "
          f"{', '.join(f'{100 * v:+.2f} %' for v in relative)} | {same} of {len(seeds)} | "
          f"{alpha:.4f} | {', '.join(str(runs[p, s]['drops']) for s in seeds)} | "
          f"{seconds:.0f} | {top1[p]:.4f} |")
  print("JSON " + json.dumps(report))
  return 0


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("out_dir")
  app.run(main)
