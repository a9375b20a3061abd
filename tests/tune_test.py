"""keras-tuner over architectures: grid ground truth cached on disk, budgeted oracles, loud
failures, the CLI."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from betanas_tf import builder
from betanas_tf import cost
from betanas_tf import data
from betanas_tf import spaces
from betanas_tf import train
from betanas_tf import tune

TINY = dataclasses.replace(tune.TuneConfig().train, data=data.DataSource("digits"), epochs=1,
                           steps_per_epoch=2, batch_size=16)


def _config(**changes):
  return tune.TuneConfig(**dict(dict(space="micro", train=TINY), **changes))


def _macs(choices):
  return cost.macs_cost_table(spaces.get_space("micro")).of_choices(choices) * 1e6


@pytest.mark.slow
def test_grid_trains_each_architecture_once_and_resumes_where_it_stopped(tmp_path, monkeypatch):
  out = str(tmp_path / "grid")
  results = tune.tune(out, _config(max_trials=3))
  trials = results["trials"]
  assert [t["status"] for t in trials] == ["COMPLETED"] * 3
  # keras-tuner's grid walks the space in order: the first three architectures.
  assert [t["choices"] for t in trials] == [[0, 0, 0], [0, 0, 1], [0, 0, 2]]
  space = spaces.get_space("micro")
  for t in trials:
    assert t["choices_string"] == space.choices_to_string(t["choices"])
    assert t["cost"] == pytest.approx(_macs(t["choices"]) / 1e6)
    assert 0.0 <= t["val_top1"] <= 1.0 and 0.0 <= t["eval_top1"] <= 1.0 and t["eval_loss"] > 0
    assert t["images"] == 1 * 2 * 16
  best = max(trials, key=lambda t: (t["val_top1"], -t["val_loss"]))
  assert results["best"]["choices"] == best["choices"]
  saved = json.load(open(os.path.join(out, "arch.json")))
  assert saved["name"] == "micro_grid"
  assert json.load(open(os.path.join(out, "results.json")))["trials"] == json.loads(json.dumps(trials))
  trained = []
  original = train.training_data
  monkeypatch.setattr(train, "training_data", lambda *a, **k: trained.append(1) or original(*a, **k))
  again = tune.tune(out, _config(max_trials=3))
  assert trained == [] and again["trials"] == results["trials"]
  # A stopped walk continues where it stopped (keras-tuner's own grid oracle cannot resume).
  more = tune.tune(out, _config(max_trials=5))
  assert len(trained) == 2 and more["trials"][:3] == results["trials"]
  assert [t["choices"] for t in more["trials"][3:]] == [[0, 0, 3], [0, 1, 0]]


@pytest.mark.slow
def test_budgeted_oracles_propose_only_architectures_within_the_budget(tmp_path):
  space = spaces.get_space("micro")
  all_macs = sorted(_macs(c) for c in space.enumerate())
  target = all_macs[len(all_macs) // 4]   # a quarter of the space fits
  for oracle in ("random", "bayesian"):
    results = tune.tune(str(tmp_path / oracle), _config(oracle=oracle, max_trials=3,
                                                         cost_target=target))
    done = [t for t in results["trials"] if t["status"] == "COMPLETED"]
    assert len(done) == 3 and results["skipped_over_budget"] == 0
    assert all(t["cost"] * 1e6 <= target * (1 + 1e-9) for t in done)
  grid = tune.tune(str(tmp_path / "grid"), _config(max_trials=6, cost_target=target))
  skipped = [t for t in grid["trials"] if t.get("skipped")]
  done = [t for t in grid["trials"] if t["status"] == "COMPLETED"]
  assert len(skipped) + len(done) == 6 and skipped
  assert all(t["cost"] * 1e6 > target for t in skipped) and all("over the cost budget" in t["message"]
                                                                 for t in skipped)
  assert all(t["cost"] * 1e6 <= target * (1 + 1e-9) for t in done)


@pytest.mark.slow
def test_hyperband_trains_rounds_within_the_budget(tmp_path):
  config = _config(oracle="hyperband", max_trials=6, train=dataclasses.replace(TINY, epochs=3))
  results = tune.tune(str(tmp_path / "hb"), config)
  done = [t for t in results["trials"] if t["status"] == "COMPLETED"]
  assert done and all(1 <= t["epochs"] <= 3 for t in done)
  assert results["images_total"] == pytest.approx(sum(t["images"] for t in done))


def test_a_failing_trial_fails_the_search_loudly(tmp_path, monkeypatch):
  original = builder.build_model

  def broken(arch, *args, **kwargs):
    if arch.blocks[-1].op == "identity":
      raise RuntimeError("simulated out-of-memory")
    return original(arch, *args, **kwargs)
  monkeypatch.setattr(builder, "build_model", broken)
  with pytest.raises(tune.TrialsFailedError, match=r"1 of 4 trials failed \(first: trial \d+, "
                     r"k3e3-k3e3-id: RuntimeError: simulated out-of-memory\)"):
    tune.tune(str(tmp_path / "t"), _config(max_trials=4))


def test_without_tensorboard_nothing_runs(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboard", None)
  with pytest.raises(ValueError, match=r"keras-tuner needs the tensorboard package"):
    tune.tune(str(tmp_path / "t"), _config())
  assert not os.path.exists(tmp_path / "t")


def test_cli_errors_are_one_line_and_exit_1(tmp_path):
  run = lambda *args: subprocess.run([sys.executable, "-m", "betanas_tf.tune", *args],
                                     capture_output=True, text=True, timeout=300)
  result = run("--oracle=random", f"--out_dir={tmp_path}")
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
      "tune: error: --oracle=random needs --max_trials")
  result = run("--oracle=grid")
  assert result.returncode == 1 and "tune: error: give --out_dir" in result.stderr
