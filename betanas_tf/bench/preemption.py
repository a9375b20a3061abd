"""Benchmark: a search preempted with SIGTERM, again and again, ends where the
uninterrupted search ends, and redoes no step.

    python -m betanas_tf.bench.preemption --stops=10 --out_dir=/tmp/preemption

1. One uninterrupted search (configs/demo.flags: 600 Phase-1 steps of the micro space on
   digits, `--deterministic`).
2. The same command in another directory, stopped with SIGTERM `--stops` times at steps
   spread over the run (each signal sent a random 0-0.3 s after the run has logged the
   step it waits for, so it lands between log intervals), and rerun after each stop.
   For each stop: the step the search reports, the checkpoint it left (it must be that
   step: 0 steps redone), and the seconds from the signal to the process' exit.
3. With `--workers=2`: the same for a 2-worker MultiWorkerMirroredStrategy search on this
   host (TF_CONFIG), uninterrupted and then stopped once through each worker.

Compares each stopped chain's arch.json, alpha, counts, drops and every supernet weight
with its uninterrupted run. Prints one JSON line and a markdown table (docs/benchmarks.md).
This takes minutes: a benchmark, not a suite test (the suite keeps one SIGTERM test per
program kind).
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags

from betanas_tf import cli

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def define_flags():
  flags.DEFINE_string("out_dir", None, "Working directory (emptied first).")
  flags.DEFINE_string("flagfile_of_search", os.path.join(ROOT, "configs", "demo.flags"),
                      "The search's flag file.")
  flags.DEFINE_integer("stops", 10, "SIGTERMs sent to the single-process search.", lower_bound=1)
  flags.DEFINE_integer("workers", 2, "Workers of the multi-worker search (0: skip it).",
                       lower_bound=0)
  flags.DEFINE_integer("worker_steps", 200, "Phase-1 steps of the multi-worker search.",
                       lower_bound=20)
  flags.DEFINE_integer("seed", 0, "Seed of the signal timing.")


def _search_command(out_dir, *extra):
  return [sys.executable, "-m", "betanas_tf.search", f"--flagfile={FLAGS.flagfile_of_search}",
          f"--out_dir={out_dir}", "--noprogress", "--deterministic", *extra]


def _logged_step(out_dir) -> int:
  path = os.path.join(out_dir, "history.jsonl")
  try:
    return max((json.loads(l)["step"] for l in open(path) if l.strip()), default=0)
  except (OSError, ValueError):
    return 0


def _latest_checkpoint_step(out_dir) -> int:
  try:
    text = open(os.path.join(out_dir, "checkpoints", "checkpoint")).read()
  except OSError:
    return 0
  return int(text.split('model_checkpoint_path: "ckpt-')[1].split('"')[0])


def _launch(out_dir, workers, extra):
  """The search's processes (one, or one per worker of a localhost cluster)."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  if workers < 2:
    return [subprocess.Popen(_search_command(out_dir, *extra), cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
  from betanas_tf import distribution  # pylint: disable=import-outside-toplevel
  processes = []
  for tf_config in distribution.localhost_tf_configs(workers):
    task_env = dict(env, TF_CONFIG=tf_config)
    processes.append(subprocess.Popen(
        _search_command(out_dir, "--distribution=multiworker", *extra), cwd=ROOT, env=task_env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  return processes


def _wait(processes, timeout=900):
  outputs = [p.communicate(timeout=timeout) for p in processes]
  return [(p.returncode, err) for p, (_, err) in zip(processes, outputs)]


def _run_to_end(out_dir, workers, extra):
  for code, err in _wait(_launch(out_dir, workers, extra)):
    if code != 0:
      raise RuntimeError(f"search failed ({code}): {err[-2000:]}")


def _stopped_chain(out_dir, workers, extra, targets, victims, rng):
  """Runs the search in `out_dir`, sending SIGTERM to process `victims[i]` once it has
  logged step `targets[i]`, rerunning after each stop, then to the end. Returns one
  record per stop."""
  stops = []
  for target, victim in zip(targets, victims):
    processes = _launch(out_dir, workers, extra)
    while all(p.poll() is None for p in processes) and _logged_step(out_dir) < target:
      time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.3))
    sent = time.perf_counter()
    processes[victim].send_signal(signal.SIGTERM)
    results = _wait(processes)
    waited = time.perf_counter() - sent
    lines = [err.strip().splitlines()[-1] if err.strip() else "" for _, err in results]
    codes = [code for code, _ in results]
    if any(code != 143 for code in codes):
      raise RuntimeError(f"stop at {target}: exit {codes}: {lines}")
    reported = (int(lines[0].split(" at step ")[1].split(";")[0]) if " at step " in lines[0]
                else None)   # None: stopped after Phase 1
    stops.append({"target": target, "victim": victim, "reported_step": reported,
                  "checkpoint_step": _latest_checkpoint_step(out_dir),
                  "signal_to_exit_s": round(waited, 2), "line": lines[0]})
  _run_to_end(out_dir, workers, extra)
  return stops


def _compare(straight, stopped) -> dict:
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  summaries = [json.load(open(os.path.join(d, "summary.json"))) for d in (straight, stopped)]
  readers = [tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(d, "checkpoints")))
             for d in (straight, stopped)]
  keys = [k for k in readers[0].get_variable_to_shape_map() if k.startswith("supernet_weights/")]
  weight_diff = max(float(np.abs(readers[0].get_tensor(k) - readers[1].get_tensor(k)).max())
                    for k in keys)
  return {"same_arch_json": open(os.path.join(straight, "arch.json")).read()
                            == open(os.path.join(stopped, "arch.json")).read(),
          "alpha_max_abs_diff": float(np.abs(np.array(summaries[0]["alpha"])
                                             - np.array(summaries[1]["alpha"])).max()),
          "same_counts_and_drops": (summaries[0]["counts"] == summaries[1]["counts"]
                                    and summaries[0]["drops"] == summaries[1]["drops"]),
          "weights_max_abs_diff": weight_diff, "weight_tensors": len(keys),
          "final_resumed_from_step": summaries[1]["resumed_from_step"]}


def _targets(steps, count, log_every=10):
  """`count` log steps spread over (0, steps), each past the one before."""
  spread = [int(steps * (i + 0.5) / count) // log_every * log_every for i in range(count)]
  return sorted({max(log_every, s) for s in spread})


def measure(out_dir: str, stops: int, workers: int, worker_steps: int, seed: int) -> dict:
  rng = random.Random(seed)
  shutil.rmtree(out_dir, ignore_errors=True)
  os.makedirs(out_dir)
  result = {}
  started = time.perf_counter()
  _run_to_end(os.path.join(out_dir, "straight"), 1, [])
  result["straight_s"] = round(time.perf_counter() - started, 1)
  single = _stopped_chain(os.path.join(out_dir, "stopped"), 1, [], _targets(600, stops),
                          [0] * stops, rng)
  result["single"] = {"stops": single, **_compare(os.path.join(out_dir, "straight"),
                                                   os.path.join(out_dir, "stopped"))}
  if workers >= 2:
    extra = [f"--max_steps={worker_steps}", "--log_every=10"]
    _run_to_end(os.path.join(out_dir, "workers_straight"), workers, extra)
    chain = _stopped_chain(os.path.join(out_dir, "workers_stopped"), workers, extra,
                           _targets(worker_steps, workers), list(range(workers))[::-1], rng)
    result["workers"] = {"count": workers, "steps": worker_steps, "stops": chain,
                         **_compare(os.path.join(out_dir, "workers_straight"),
                                    os.path.join(out_dir, "workers_stopped"))}
  return result


def markdown(result: dict) -> str:
  rows = ["| search | stops | steps redone | same arch.json | alpha max abs diff | weights max abs diff "
          "| signal to exit (s), median / max |", "|---|---|---|---|---|---|---|"]
  for key, label in (("single", "demo, 1 process"), ("workers", "demo, 2 workers")):
    if key not in result:
      continue
    r = result[key]
    redone = sum((s["reported_step"] or s["checkpoint_step"]) - s["checkpoint_step"]
                 for s in r["stops"])
    times = sorted(s["signal_to_exit_s"] for s in r["stops"])
    median = times[len(times) // 2]
    rows.append(f"| {label} | {len(r['stops'])} | {redone} | {r['same_arch_json']} | "
                f"{r['alpha_max_abs_diff']:.1e} | {r['weights_max_abs_diff']:.1e} | "
                f"{median:.2f} / {times[-1]:.2f} |")
  return "\n".join(rows)


@cli.reports_errors("preemption", RuntimeError)
def main(argv):
  del argv
  if not FLAGS.out_dir:
    raise ValueError("give --out_dir")
  result = measure(FLAGS.out_dir, FLAGS.stops, FLAGS.workers, FLAGS.worker_steps, FLAGS.seed)
  for key in ("single", "workers"):
    for stop in result.get(key, {}).get("stops", []):
      print(f"{key}: signal after step {stop['target']} to process {stop['victim']}: "
            f"{stop['line']}; checkpoint at {stop['checkpoint_step']}; "
            f"{stop['signal_to_exit_s']:.2f} s to exit")
  print(markdown(result))
  print("JSON " + json.dumps(result))
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
