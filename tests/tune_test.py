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
  # Each trial's checkpoint holds the weights its metrics were measured on (the final ones).
  dataset = TINY.data.load(space.input_size, TINY.seed)
  first = space.arch_from_choices(trials[0]["choices"]).for_retraining(
      dataset.num_classes, TINY.se_ratio, TINY.activation, TINY.dropout)
  model = builder.build_model(first)
  train.compile_with_recipe(model, TINY, 2)
  model.load_weights(os.path.join(out, "tuner", f"trial_{trials[0]['trial_id']}",
                                  "checkpoint.weights.h5"))
  eval_loss, eval_top1, _ = model.evaluate(train.eval_data(dataset.eval, 256, dataset.num_classes),
                                           verbose=0)
  assert eval_top1 == pytest.approx(trials[0]["eval_top1"], abs=1e-7)
  assert eval_loss == pytest.approx(trials[0]["eval_loss"], rel=1e-5)
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


def test_a_trial_runs_one_train_call_per_epoch_and_exactly_its_steps(tmp_path, monkeypatch):
  compiled = []
  original = train.compile_with_recipe
  monkeypatch.setattr(train, "compile_with_recipe",
                      lambda model, *a, **k: compiled.append((model, original(model, *a, **k))))
  config = _config(max_trials=1, train=dataclasses.replace(TINY, epochs=2, steps_per_epoch=3))
  tune.tune(str(tmp_path / "one"), config)
  model, optimizer = compiled[-1]   # (keras-tuner also builds one model to learn the space)
  assert model.steps_per_execution == 3
  # Keras rounds an epoch up to a multiple of steps_per_execution: no step more than asked.
  assert int(optimizer.iterations.numpy()) == 2 * 3


@pytest.mark.slow
def test_budgeted_oracles_propose_only_architectures_within_the_budget(tmp_path):
  space = spaces.get_space("micro")
  all_macs = sorted(_macs(c) for c in space.enumerate())
  target = all_macs[len(all_macs) // 4]   # a quarter of the space fits
  for oracle in ("random", "bayesian"):
    results = tune.tune(str(tmp_path / oracle), _config(oracle=oracle, max_trials=2,
                                                         cost_target=target))
    done = [t for t in results["trials"] if t["status"] == "COMPLETED"]
    assert len(done) == 2 and results["skipped_over_budget"] == 0
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


@pytest.mark.slow
def test_a_directory_refuses_another_tuner_config_but_more_trials_continue(tmp_path):
  out = str(tmp_path / "t")
  tune._check_recorded_config(out, _config(max_trials=3))  # pylint: disable=protected-access
  assert json.load(open(os.path.join(out, "tune.json")))["max_trials"] == 3
  tune._check_recorded_config(out, _config(max_trials=5))  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=r"t holds a tuner run with other settings \(oracle, "
                                       r"train\.epochs\); use a new --out_dir"):
    tune._check_recorded_config(out, dataclasses.replace(  # pylint: disable=protected-access
        _config(max_trials=3), oracle="random", train=dataclasses.replace(TINY, epochs=2)))
  with pytest.raises(ValueError, match=r"other settings \(max_trials\)"):
    tune._check_recorded_config(out, _config(max_trials=2))  # pylint: disable=protected-access


def test_a_grid_over_listed_architectures_trains_exactly_those_in_order(tmp_path):
  listed = ("id-k5e3-id", "k3e3-k3e3-k3e3", "k5e3-k3e6-id")
  results = tune.tune(str(tmp_path / "t"), _config(architectures=listed))
  assert [t["choices_string"] for t in results["trials"]] == list(listed)
  assert [t["status"] for t in results["trials"]] == ["COMPLETED"] * 3


def test_listed_architectures_need_the_grid_and_valid_labels(tmp_path):
  with pytest.raises(ValueError, match=r"^--architectures lists what a grid trains; "
                     r"--oracle=random proposes its own$"):
    tune.tune(str(tmp_path / "r"), _config(oracle="random", max_trials=2,
                                           architectures=("id-k5e3-id",)))
  with pytest.raises(ValueError, match=r"block 1: op 'id' is not a candidate here"):
    tune.tune(str(tmp_path / "g"), _config(architectures=("id-id-id",)))
