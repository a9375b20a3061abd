"""MultiWorkerMirroredStrategy with 2 worker processes on localhost (TF_CONFIG): each reads
its own input pipeline, both take the same paths and reach the same result, and only the
chief writes the outputs; when a worker dies, the survivor stops with one clear error and
restarting both resumes where the uninterrupted run would have been."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import kill_support

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


KILL_COMMAND = ["--space=micro", "--dataset=digits", "--batch_size=32", "--arch_batch_size=32",
                "--max_steps=16", "--arch_update_every=2", "--arch_warmup_steps=4",
                "--arch_lr=0.05", "--beta=0.5", "--drop_warmup_steps=6", "--checkpoint_every=4",
                "--log_every=4", "--eval_batches=2", "--calibration_batches=2", "--noprogress",
                "--deterministic", "--distribution=multiworker",
                # An in-search family: one alpha per target, checkpointed and scored by both.
                "--family=in_search", "--targets=macs:1.0e6,macs:2.0e6"]
SURVIVOR_LIMIT_S = 90   # the survivor's error must come within this (measured: 2 s)


def _launch(out, other_out=None):
  """Both workers of a fresh localhost cluster running the same search command (worker 1
  with `other_out` as its --out_dir, if given: storage the chief's files are not on)."""
  from betanas_tf import distribution  # pylint: disable=import-outside-toplevel
  processes = []
  for index, tf_config in enumerate(distribution.localhost_tf_configs(2)):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CONFIG=tf_config)
    where = other_out if index == 1 and other_out else out
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "betanas_tf.search", f"--out_dir={where}", *KILL_COMMAND],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  return processes


def _finish(processes, timeout=400):
  results = []
  try:
    for process in processes:
      stdout, stderr = process.communicate(timeout=timeout)
      results.append((process.returncode, stdout, stderr))
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  return results


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
  """One uninterrupted 16-step search of two workers: (out_dir, [(code, stdout, stderr)])."""
  out = str(tmp_path_factory.mktemp("multiworker") / "straight")
  return out, _finish(_launch(out))


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run):
  out, results = uninterrupted_run
  for code, _, stderr in results:
    assert code == 0, stderr[-3000:]
  return out


@pytest.mark.slow
def test_two_workers_share_the_search_and_only_the_chief_writes(uninterrupted_run):
  out, results = uninterrupted_run
  for code, _, stderr in results:
    assert code == 0, stderr[-3000:]
  # Each worker reads its own pipeline: half of every global batch (the data tests check
  # that the two pipelines' slices are disjoint and together make the global batch).
  assert "search: worker:0: input pipeline 0 of 2, 16 examples per replica" in results[0][2]
  assert "search: worker:1: input pipeline 1 of 2, 16 examples per replica" in results[1][2]
  lines = lambda text: [l for l in text.splitlines()
                        if l.startswith(("architecture:", "MACs", "macs_"))]
  assert lines(results[0][1]) == lines(results[1][1]) and len(lines(results[0][1])) == 4
  with open(os.path.join(out, "summary.json")) as handle:
    summary = json.load(handle)
  assert summary["distribution"] == {"workers": 2, "task": "worker:0", "replicas": 2}
  assert sum(map(sum, summary["counts"])) == 16 * 3
  # Only the chief took the directory's lock (.lock): worker 1 shares the directory.
  assert sorted(os.listdir(out)) == [".lock", "arch.json", "checkpoints", "data.json", "family",
                                     "figures", "flags.txt", "history.jsonl", "run.json",
                                     "summary.json", "tensorboard"]
  with open(os.path.join(out, "family", "family.json")) as handle:
    family = json.load(handle)
  assert summary["family"] == {m["name"]: m["choices_string"] for m in family["members"]}
  assert all(m["macs"] <= m["bound"] for m in family["members"])
  assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == [
      "checkpoint", "ckpt-12.data-00000-of-00001", "ckpt-12.index",
      "ckpt-16.data-00000-of-00001", "ckpt-16.index"]
  assert len(os.listdir(os.path.join(out, "tensorboard"))) == 1  # the chief's event file
  history = [json.loads(line) for line in open(os.path.join(out, "history.jsonl"))]
  assert [r["step"] for r in history] == [4, 8, 12, 16]


def _assert_same_family(out, straight):
  """The in-search family of `out` equals the uninterrupted run's: every target's p, active
  mask, drops and pick."""
  load = lambda d: json.load(open(os.path.join(d, "family", "family.json")))["members"]
  mine, theirs = load(out), load(straight)
  assert [m["choices"] for m in mine] == [m["choices"] for m in theirs]
  for a, b in zip(mine, theirs):
    np.testing.assert_allclose(a["p"], b["p"], atol=1e-6)
    assert a["active"] == b["active"] and a["drops"] == b["drops"]


def _kill_at_checkpoint(out, step, victim):
  """Launches both workers on `out`, SIGKILLs worker `victim` once the chief has written
  ckpt-`step`, and checks that the survivor stops in time with one clear error line."""
  processes = _launch(out)
  state = os.path.join(out, "checkpoints", "checkpoint")
  deadline = time.time() + 300
  while time.time() < deadline and all(p.poll() is None for p in processes):
    if os.path.exists(state) and f'ckpt-{step}"' in open(state).read():
      break
    time.sleep(0.02)
  processes[victim].send_signal(signal.SIGKILL)
  killed_at = time.time()
  survivor = processes[1 - victim]
  try:
    _, stderr = survivor.communicate(timeout=SURVIVOR_LIMIT_S)
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  waited = time.time() - killed_at
  assert processes[victim].wait() == -signal.SIGKILL, "the run ended before the kill"
  assert survivor.returncode == 75, stderr[-3000:]   # cli.EXIT_RETRY: rerun the same command
  errors = [line for line in stderr.splitlines() if line.startswith("search: error:")]
  assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
  assert errors[0].startswith("search: error: lost contact with the other workers"), errors[0]
  assert "restart every worker with the same command" in errors[0]
  assert waited < SURVIVOR_LIMIT_S
  assert not os.path.exists(os.path.join(out, "summary.json"))


@pytest.mark.slow
def test_a_killed_worker_or_chief_stops_the_other_and_restarts_resume_exactly(tmp_path,
                                                                             uninterrupted):
  out = str(tmp_path / "killed")
  _kill_at_checkpoint(out, 4, victim=1)   # a worker dies at step 4 or after
  _kill_at_checkpoint(out, 8, victim=0)   # the user's restart; then the chief dies
  results = _finish(_launch(out))         # the user's second restart: the same command
  for code, _, stderr in results:
    assert code == 0, stderr[-3000:]
  summary = json.load(open(os.path.join(out, "summary.json")))
  straight = json.load(open(os.path.join(uninterrupted, "summary.json")))
  assert 8 <= summary["resumed_from_step"] < 16
  assert open(os.path.join(out, "arch.json")).read() == open(
      os.path.join(uninterrupted, "arch.json")).read()
  np.testing.assert_allclose(summary["alpha"], straight["alpha"], atol=1e-6)
  assert summary["counts"] == straight["counts"] and summary["drops"] == straight["drops"]
  _assert_same_family(out, uninterrupted)
  kill_support.assert_same_supernet_weights(uninterrupted, out)


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_both_at_one_step_and_the_restart_is_exact(tmp_path,
                                                                              uninterrupted):
  out = str(tmp_path / "stopped")
  processes = _launch(out)
  history = os.path.join(out, "history.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and all(p.poll() is None for p in processes):
    if os.path.exists(history) and open(history).read().strip():
      break   # the first log interval (step 4) is written
    time.sleep(0.02)
  processes[1].send_signal(signal.SIGTERM)   # the non-chief only: the chief learns it at a log step
  results = _finish(processes, timeout=120)
  lines = []
  for code, _, stderr in results:
    assert code == 143, stderr[-3000:]
    lines.append(stderr.strip().splitlines()[-1])
  # Both stopped at the same step with the checkpoint written there, or (a signal after the
  # last log interval) after Phase 1 with the final checkpoint intact.
  assert lines[0] == lines[1] and lines[0].startswith("search: stopped by SIGTERM "), lines
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  latest = tf.train.latest_checkpoint(os.path.join(out, "checkpoints"))
  if " at step " in lines[0]:
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    assert step in (4, 8, 12) and latest.endswith(f"ckpt-{step}")
  else:
    step = 16
    assert "after Phase 1" in lines[0] and latest.endswith("ckpt-16")
  assert not os.path.exists(os.path.join(out, "arch.json"))
  for code, _, stderr in _finish(_launch(out)):
    assert code == 0, stderr[-3000:]
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["resumed_from_step"] == step   # 0 steps redone
  assert open(os.path.join(out, "arch.json")).read() == open(
      os.path.join(uninterrupted, "arch.json")).read()
  np.testing.assert_allclose(summary["alpha"],
                             json.load(open(os.path.join(uninterrupted, "summary.json")))["alpha"],
                             atol=1e-6)
  _assert_same_family(out, uninterrupted)
  kill_support.assert_same_supernet_weights(uninterrupted, out)


@pytest.mark.slow
def test_workers_that_restore_different_steps_stop_with_one_error(tmp_path, uninterrupted):
  # Worker 1 cannot see the chief's checkpoints (its --out_dir is elsewhere, as on a host
  # without the shared storage): it would start at step 0 while the chief resumes at 16.
  chief_out = str(tmp_path / "chief")
  shutil.copytree(uninterrupted, chief_out)
  results = _finish(_launch(chief_out, other_out=str(tmp_path / "elsewhere")), timeout=120)
  for code, _, stderr in results:
    assert code == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("search: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert errors[0].startswith("search: error: the workers restored different steps (16, 0, "
                                "one per replica"), errors[0]
    assert errors[0].endswith("so --out_dir must be on storage that every worker reads")


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
