"""The search CLI end to end: outputs, SIGKILL + resume, corrupt checkpoints, bad input."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from betanas_tf import arch as arch_lib
from betanas_tf import cost
from betanas_tf import spaces
from tests import kill_support

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--space=micro", "--dataset=digits", "--batch_size=32", "--arch_batch_size=32",
         "--max_steps=24", "--arch_update_every=2", "--arch_warmup_steps=4", "--arch_lr=0.05",
         "--beta=0.5", "--drop_warmup_steps=8", "--drop_threshold=0.6", "--eval_batches=2",
         "--calibration_batches=2", "--noprogress", "--deterministic"]


def _command(out_dir, *extra):
  return [sys.executable, "-m", "betanas_tf.search", f"--out_dir={out_dir}", *SMALL, *extra]


def _run(out_dir, *extra, timeout=300):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(_command(out_dir, *extra), cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _summary(out_dir):
  with open(os.path.join(out_dir, "summary.json")) as handle:
    return json.load(handle)


CHECKPOINTED = ("--checkpoint_every=4", "--log_every=4")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """One uninterrupted 24-step search (read it, or copy it before running on it)."""
  out = str(tmp_path_factory.mktemp("search") / "straight")
  result = _run(out, *CHECKPOINTED)
  assert result.returncode == 0, result.stderr[-3000:]
  return out, result


@pytest.mark.slow
def test_search_writes_every_output(tmp_path, straight):
  out = str(tmp_path / "run")
  shutil.copytree(straight[0], out)
  result = straight[1]
  for name in ("flags.txt", "run.json", "arch.json", "data.json", "summary.json", "history.jsonl",
               "figures/trajectories.png", "figures/training_frequency.png",
               "figures/architecture.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  for name in os.listdir(os.path.join(out, "figures")):
    with open(os.path.join(out, "figures", name), "rb") as handle:
      assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(os.path.join(out, "tensorboard")))
  assert "--max_steps=24" in open(os.path.join(out, "flags.txt")).read()
  space = spaces.get_space("micro")
  arch = arch_lib.Architecture.load(os.path.join(out, "arch.json"))
  summary = _summary(out)
  assert list(space.choices_from_arch(arch.replace(num_classes=10, name=""))) == summary["choices"]
  assert summary["macs"] == cost.architecture_cost(arch).macs
  assert summary["cost"]["value"] == pytest.approx(summary["macs"] / 1e6)
  history = [json.loads(line) for line in open(os.path.join(out, "history.jsonl"))]
  assert [r["step"] for r in history] == [4, 8, 12, 16, 20, 24]  # one line per log interval
  assert [np.array(r["counts"]).sum() for r in history] == [3 * r["step"] for r in history]
  assert history[0]["phase2/ce"] == 0.0 and history[1]["phase2/ce"] > 0  # alpha steps from step 4
  assert all(0 < r["phase1/loss"] < 10 for r in history)
  assert summary["drops"] == [d for r in history for d in r["drops"]]
  assert all(r["step"] - 4 <= d["step"] < r["step"] for r in history for d in r["drops"])
  assert summary["resume_records_skipped"] == {"train@worker:0": 0, "arch@worker:0": 0}
  assert summary["distribution"] == {"workers": 1, "task": "worker:0", "replicas": 1}
  alive = np.array(summary["active"], bool)
  counts = np.array(summary["counts"])
  # The result is argmax alpha among the ops that are still alive.
  alpha = np.where(alive, np.array(summary["alpha"]), -np.inf)
  assert list(alpha.argmax(axis=1)) == summary["choices"]
  assert summary["balance_max_min_per_block"] == [[int(counts[l][alive[l]].max()), int(counts[l][alive[l]].min())]
                                                  for l in range(3)]
  assert 0.0 <= summary["supernet_top1_arch_split"] <= 1.0
  assert summary["phase1_images_per_s"] > 0 and summary["wall_time_s"] > 0
  assert "architecture: " + summary["choices_string"] in result.stdout
  # Re-running a finished search resumes at the end and reproduces the result.
  again = _run(out, *CHECKPOINTED)
  assert again.returncode == 0, again.stderr[-3000:]
  assert _summary(out)["choices"] == summary["choices"] and _summary(out)["resumed_from_step"] == 24


def _truncate(path):
  with open(path, "r+b") as handle:
    handle.truncate(os.path.getsize(path) // 3)


@pytest.mark.slow
def test_sigkill_or_a_truncated_checkpoint_resumes_like_the_uninterrupted_run(tmp_path, straight):
  straight, killed = straight[0], str(tmp_path / "killed")
  kill_support.kill_at_checkpoint(_command(killed, *CHECKPOINTED), ROOT,
                                  dict(os.environ, PYTHONPATH=ROOT), killed, 8)
  assert not os.path.exists(os.path.join(killed, "summary.json"))
  resumed = _run(killed, *CHECKPOINTED)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  a, b = _summary(straight), _summary(killed)
  assert 8 <= b["resumed_from_step"] < 24
  same_arch = lambda: open(os.path.join(straight, "arch.json")).read() == open(os.path.join(killed, "arch.json")).read()
  assert same_arch()
  np.testing.assert_allclose(np.array(b["alpha"]), np.array(a["alpha"]), atol=1e-6)
  assert a["drops"] == b["drops"] and a["counts"] == b["counts"]
  history = lambda d: [json.loads(l)["step"] for l in open(os.path.join(d, "history.jsonl"))]
  assert history(killed) == history(straight)
  kill_support.assert_same_supernet_weights(straight, killed)

  # The process died while the filesystem was writing the newest checkpoint: the run goes
  # on from the one before and ends where the uninterrupted run did.
  checkpoints = os.path.join(killed, "checkpoints")
  latest, previous = os.path.join(checkpoints, "ckpt-24"), os.path.join(checkpoints, "ckpt-20")
  _truncate(latest + ".data-00000-of-00001")
  result = _run(killed, *CHECKPOINTED)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"search: warning: checkpoint {latest} (" in result.stderr
  assert f"is unreadable; resumed from {previous}" in result.stderr
  summary = _summary(killed)
  assert summary["resumed_from_step"] == 20 and "resumed from" in summary["notes"][0]
  assert same_arch()
  np.testing.assert_allclose(summary["alpha"], a["alpha"], atol=1e-6)

  # No intact checkpoint left: one clear error, no traceback.
  for step in (20, 24):
    _truncate(os.path.join(checkpoints, f"ckpt-{step}.data-00000-of-00001"))
  result = _run(killed, *CHECKPOINTED)
  assert result.returncode == 1
  assert f"search: error: cannot restore checkpoint {latest} (" in result.stderr
  assert "ckpt-20" in result.stderr and "Traceback" not in result.stderr


def _wait_for_history_step(out_dir, step, process, timeout=300):
  path = os.path.join(out_dir, "history.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None:
    if os.path.exists(path) and any(json.loads(l)["step"] >= step for l in open(path) if l.strip()):
      return
    time.sleep(0.02)
  raise AssertionError(f"the search never logged step {step}")


@pytest.mark.slow
def test_sigterm_saves_at_its_step_a_second_run_is_refused_and_resume_is_exact(tmp_path, straight):
  out = str(tmp_path / "stopped")
  env = dict(os.environ, PYTHONPATH=ROOT)
  # Checkpoints every 50 steps: only the stop can write one at the step it arrives.
  first = subprocess.Popen(_command(out, "--checkpoint_every=50", "--log_every=2"), cwd=ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    _wait_for_history_step(out, 6, first)
    # Held still (SIGSTOP) so that the second run meets it alive: 24 steps take a second.
    first.send_signal(signal.SIGSTOP)
    started = time.time()
    second = _run(out, "--checkpoint_every=50", "--log_every=2")   # the same command, twice
    assert second.returncode == 75, second.stderr[-3000:]
    assert second.stderr.strip().splitlines()[-1].startswith(
        f"search: error: {out} is in use by another run (pid {first.pid} on "), second.stderr[-3000:]
    assert time.time() - started < 60   # imports, then refused before any data or model
    assert first.poll() is None   # the first run is untouched
    first.send_signal(signal.SIGTERM)
    first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=120)
  finally:
    if first.poll() is None:
      first.kill()
  assert first.returncode == 143, stderr[-3000:]
  line = stderr.strip().splitlines()[-1]
  step = int(line.split(" at step ")[1].split(";")[0])
  assert line == (f"search: stopped by SIGTERM at step {step}; checkpoint written; rerun the "
                  "same command to resume")
  assert 6 <= step < 24 and step % 2 == 0   # an execution boundary (arch_update_every=2)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  assert tf.train.latest_checkpoint(os.path.join(out, "checkpoints")).endswith(f"ckpt-{step}")
  assert not os.path.exists(os.path.join(out, "arch.json"))
  resumed = _run(out, "--checkpoint_every=50", "--log_every=2")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  a, b = _summary(straight[0]), _summary(out)
  assert b["resumed_from_step"] == step   # 0 steps redone
  assert open(os.path.join(out, "arch.json")).read() == open(os.path.join(straight[0], "arch.json")).read()
  np.testing.assert_allclose(b["alpha"], a["alpha"], atol=1e-6)
  assert a["drops"] == b["drops"] and a["counts"] == b["counts"]
  kill_support.assert_same_supernet_weights(straight[0], out)


@pytest.mark.slow
def test_divergence_exits_3_with_one_line_and_writes_no_result(tmp_path):
  out = str(tmp_path / "nan")
  result = _run(out, "--lr=1e6", "--checkpoint_every=2", "--log_every=2")
  assert result.returncode == 3, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("search: ")]
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert lines[0].startswith("search: diverged: ") and " at step " in lines[0]
  assert "no result written" in lines[0]
  for name in ("arch.json", "summary.json", "figures"):
    assert not os.path.exists(os.path.join(out, name)), name
  # Every checkpoint kept is finite, and the newest restores.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  latest = tf.train.latest_checkpoint(os.path.join(out, "checkpoints"))
  if latest is None:
    assert "no checkpoint was written" in lines[0]
  else:
    assert f"the last good checkpoint is {latest}" in lines[0]
    reader = tf.train.load_checkpoint(latest)
    for key in reader.get_variable_to_shape_map():
      value = np.asarray(reader.get_tensor(key))
      assert value.dtype.kind not in "fc" or np.all(np.isfinite(value)), key


@pytest.mark.slow
def test_other_settings_in_the_same_out_dir_are_refused(tmp_path, straight):
  out = str(tmp_path / "run")
  shutil.copytree(straight[0], out)
  result = _run(out, *CHECKPOINTED, "--seed=3")
  assert result.returncode == 1
  assert "holds a search with other settings (engine.seed); use a new --out_dir" in result.stderr
  # A longer run would silently stretch the cosine schedule of the steps already taken.
  result = _run(out, *CHECKPOINTED, "--max_steps=48")
  assert result.returncode == 1
  assert "holds a search with other settings (engine.max_steps); use a new --out_dir" in result.stderr


@pytest.mark.slow
def test_out_dir_that_is_a_file_is_one_clear_error(tmp_path):
  path = tmp_path / "taken"
  path.write_text("x")
  result = _run(str(path), timeout=60)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == f"search: error: --out_dir {path} is an existing file, not a directory"


def test_demo_flags_are_the_engines_demo_config():
  from betanas_tf import engine  # pylint: disable=import-outside-toplevel
  flags_ = dict(line.strip()[2:].split("=", 1) for line in open(os.path.join(ROOT, "configs", "demo.flags"))
                if line.startswith("--"))
  demo = engine.demo_config()
  fields = {f.name for f in dataclasses.fields(engine.EngineConfig)}
  compared = sorted(name for name in flags_ if name in fields)
  assert len(compared) == 17
  for name in compared:
    value = getattr(demo, name)
    assert value == type(value)(flags_[name]), name


def test_configs_check_themselves_for_python_callers():
  from betanas_tf import engine, policies, runner  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"^--drop_threshold must be in \(0, 1\) with --drop_rule=prob"):
    engine.EngineConfig(drop_threshold=1.0)
  assert engine.EngineConfig(drop_rule="alpha", drop_threshold=1.0).drop_threshold == 1.0
  with pytest.raises(ValueError, match="^--gate_mode must be one of full, two, got 'three'$"):
    engine.EngineConfig(gate_mode="three")
  with pytest.raises(ValueError, match="^--cost_form must be one of linear, absolute, got 'log'$"):
    engine.EngineConfig(cost_form="log")
  with pytest.raises(ValueError, match="^--cost=latency needs --latency_table$"):
    runner.RunSettings(out_dir="x", cost="latency")
  with pytest.raises(ValueError, match="^--cost must be macs or latency, got 'flops'$"):
    runner.RunSettings(out_dir="x", cost="flops")
  settings, betanas = runner.RunSettings(out_dir="x"), policies.POLICIES.get("betanas")
  with pytest.raises(ValueError, match=r"^--cost_form=absolute needs --cost_target > 0 \(or --targets"):
    runner.check_settings(settings, betanas, engine.EngineConfig(cost_form="absolute"))
  late = engine.EngineConfig(max_steps=10, arch_warmup_steps=10)
  with pytest.raises(ValueError, match="^--arch_warmup_steps must be below --max_steps"):
    runner.check_settings(settings, betanas, late)
  runner.check_settings(settings, policies.POLICIES.get("spos"), late)   # no alpha step to miss


@pytest.mark.parametrize("args,message", [
    (["--cost_form=absolute"], "--cost_form=absolute needs --cost_target > 0"),
    (["--cost=latency"], "--cost=latency needs --latency_table"),
    (["--strategy=nope"], "value should be one of <betanas|proxyless|random|spos>"),
    (["--arch_warmup_steps=100"], "--arch_warmup_steps must be below --max_steps"),
    (["--drop_threshold=1.0"], "--drop_threshold must be in (0, 1) with --drop_rule=prob"),
])
@pytest.mark.slow
def test_bad_flags(tmp_path, args, message):
  result = _run(str(tmp_path / "x"), *args, timeout=60)
  assert result.returncode == 1
  assert message in result.stderr
  assert not os.path.exists(tmp_path / "x")   # refused before anything was written


@pytest.mark.slow
def test_unprepared_dataset_fails_fast(tmp_path):
  start = time.time()
  result = _run(str(tmp_path / "x"), "--dataset=imagenet2012", f"--data_dir={tmp_path}/none",
                "--space=proxyless_mobile", timeout=60)
  assert result.returncode == 1
  assert "search: error: dataset 'imagenet2012' is not prepared in" in result.stderr
  assert "downloads/manual/" in result.stderr
  assert time.time() - start < 30


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["spos", "random"])
def test_budgeted_baselines_meet_the_target(tmp_path, strategy):
  out = str(tmp_path / strategy)
  result = _run(out, f"--strategy={strategy}", "--cost_target=1.0e6", "--max_steps=8",
                "--evolution_population=6", "--evolution_generations=2")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = _summary(out)
  assert summary["macs"] <= 1_000_000 and summary["cost"]["meets_target"] is True
  if strategy == "spos":
    assert [g["generation"] for g in summary["evolution"]] == [0, 1]
    assert summary["supernet_top1_arch_split"] is not None
  else:
    assert summary["steps"] == 0 and summary["supernet_top1_arch_split"] is None


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
