"""The shippable ground truth: its file format, how a run continues it, a real build, and the
file the package ships for `small`."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from betanas_tf import cost as cost_lib
from betanas_tf import spaces
from betanas_tf.bench import ground_truth as gt_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _filled(truth, seeds):
  networks = tuple(dict(n, results={str(s): {"eval_top1": 0.5 + i / 100 + s / 1000,
                                             "eval_loss": 1.0 - i / 100, "arch_top1": 0.4,
                                             "arch_loss": 1.1, "images": 100.0, "seconds": 1.0}
                                    for s in seeds})
                   for i, n in enumerate(truth.networks))
  return dataclasses.replace(truth, networks=networks)


def test_a_plan_holds_the_cost_stratified_sample_with_its_cost_model_figures():
  truth = gt_lib.plan("small", 8, [0, 1, 2])
  space = spaces.get_space("small")
  assert [n["choices"] for n in truth.networks] == gt_lib.cost_stratified_sample(space, 8)
  costs = cost_lib.space_costs(space)
  for network in truth.networks:
    cost = costs.of_choices(space.choices_from_string(network["choices"]))
    assert (network["macs"], network["params"]) == (cost.macs, cost.params)
  assert truth.input_size == 32 and truth.recipe["epochs"] == 8 and truth.recipe["lr"] == 0.1
  missing = truth.missing()
  assert len(missing) == 24 and len(set(missing)) == 24
  # Network by network, every seed of one before the next, not in the sample's cost order.
  assert [seed for seed, _ in missing[:6]] == [0, 1, 2, 0, 1, 2]
  assert missing[0][1] == missing[2][1] != missing[3][1]
  assert [c for _, c in missing[::3]] != [n["choices"] for n in truth.networks]


def test_the_file_round_trips_and_refuses_what_it_does_not_know(tmp_path):
  path = str(tmp_path / "gt.json")
  truth = _filled(gt_lib.plan("micro", 4, [0, 1], epochs=1), [0, 1])
  truth.save(path)
  assert gt_lib.GroundTruth.load(path) == truth
  body = json.load(open(path))
  assert body["format"] == "betanas_tf.ground_truth" and body["version"] == 1
  with pytest.raises(ValueError, match=r"gt.json: unknown field\(s\) extra"):
    gt_lib.GroundTruth.from_json(dict(body, extra=1), path)
  with pytest.raises(ValueError, match=r"missing field\(s\) recipe"):
    gt_lib.GroundTruth.from_json({k: v for k, v in body.items() if k != "recipe"})
  with pytest.raises(ValueError, match="version 2; this betanas_tf reads version 1"):
    gt_lib.GroundTruth.from_json(dict(body, version=2))
  with pytest.raises(ValueError, match="no ground-truth file at"):
    gt_lib.GroundTruth.load(str(tmp_path / "none.json"))


def test_as_rank_truth_keeps_the_networks_complete_in_the_seeds_sorted():
  truth = _filled(gt_lib.plan("micro", 5, [0, 1], epochs=1), [0, 1])
  first = truth.networks[0]
  partial = dataclasses.replace(truth, networks=(dict(first, results={"0": first["results"]["0"]}),)
                                + truth.networks[1:])
  gt = partial.as_rank_truth([0, 1])
  assert gt["archs"] == sorted(n["choices"] for n in truth.networks[1:])
  index = {n["choices"]: n for n in truth.networks}
  assert gt["top1"][1] == [index[a]["results"]["1"]["eval_top1"] for a in gt["archs"]]
  assert gt["macs"] == [float(index[a]["macs"]) for a in gt["archs"]]
  assert len(partial.as_rank_truth([0])["archs"]) == 5


def test_continuing_a_file_needs_the_same_settings_and_adds_seeds_and_listed_networks():
  old = gt_lib.plan("micro", 4, [0], epochs=1)
  assert gt_lib.merge_plan(old, gt_lib.plan("micro", 4, [0, 3], epochs=1)).seeds == (0, 3)
  with pytest.raises(ValueError, match=r"trained with recipe = .*'epochs': 1.*this command asks "
                                       r"for .*'epochs': 2"):
    gt_lib.merge_plan(old, gt_lib.plan("micro", 4, [0], epochs=2))
  with pytest.raises(ValueError, match="trained with sample"):
    gt_lib.merge_plan(old, gt_lib.plan("micro", 5, [0], epochs=1))
  # Another cost-stratified sample adds its networks (those not drawn before); results stay.
  first = _filled(gt_lib.plan("small", 8, [0], epochs=1), [0])
  both = gt_lib.merge_plan(first, gt_lib.plan("small", 8, [0], epochs=1, samples=[1]))
  space = spaces.get_space("small")
  fresh = [c for c in gt_lib.cost_stratified_sample(space, 8, 1)
           if c not in gt_lib.cost_stratified_sample(space, 8, 0)]
  assert both.sample == {"kind": "cost_stratified", "count": 8, "seeds": [0, 1]}
  assert [n["choices"] for n in both.networks] == [n["choices"] for n in first.networks] + fresh
  assert both.networks[:8] == first.networks and len(both.missing()) == len(fresh)
  legacy = dataclasses.replace(first, sample={"kind": "cost_stratified", "count": 8, "seed": 0})
  assert gt_lib.merge_plan(legacy, gt_lib.plan("small", 8, [0], epochs=1)).sample["seeds"] == [0]
  with pytest.raises(ValueError, match="trained with sample"):
    gt_lib.merge_plan(legacy, gt_lib.plan("small", 9, [0], epochs=1, samples=[1]))
  with pytest.raises(ValueError, match=r"give distinct sample seeds, got \[1, 1\]"):
    gt_lib.plan("small", 8, [0], samples=[1, 1])
  listed = gt_lib.plan_listed("micro", ["k3e3-k3e3-id", "k3e3-k3e3-id"], [0], epochs=1)
  assert [n["choices"] for n in listed.networks] == ["k3e3-k3e3-id"]
  more = gt_lib.merge_plan(listed, gt_lib.plan_listed("micro", ["k5e3-k3e3-id", "k3e3-k3e3-id"],
                                                      [0], epochs=1))
  assert [n["choices"] for n in more.networks] == ["k3e3-k3e3-id", "k5e3-k3e3-id"]


def test_the_file_records_which_samples_drew_each_network_and_reads_one_sample_alone(tmp_path):
  space = spaces.get_space("small")
  draws = {s: gt_lib.cost_stratified_sample(space, 8, s) for s in (0, 1, 2)}
  truth = gt_lib.plan("small", 8, [0], epochs=1, samples=[0, 1, 2])
  for network in truth.networks:
    assert network["samples"] == [s for s in (0, 1, 2) if network["choices"] in draws[s]]
  # A file from before networks recorded it gets it when its command is run again.
  old = dataclasses.replace(truth, networks=tuple(
      {k: v for k, v in n.items() if k != "samples"} for n in truth.networks))
  with pytest.raises(ValueError, match="the file does not record which sample drew"):
    old.drawn_only_by([2])
  assert gt_lib.merge_plan(old, gt_lib.plan("small", 8, [0], epochs=1,
                                            samples=[0, 1, 2])).networks == truth.networks
  own = [c for c in draws[2] if c not in draws[0] and c not in draws[1]]
  assert [n["choices"] for n in truth.drawn_only_by([2])] == own and own
  filled = _filled(truth, [0])
  assert filled.as_rank_truth([0], samples=[2])["archs"] == sorted(own)
  assert len(filled.as_rank_truth([0])["archs"]) == len(truth.networks)
  # What a benchmark reads: the sample's own networks, every network of the file scored.
  path = str(tmp_path / "gt.json")
  filled.save(path)
  request = gt_lib.TruthRequest(space="small", input_size=32, seeds=(0,), epochs=1, file=path,
                                samples=(2,))
  gt = gt_lib.for_ranking(request, str(tmp_path))
  assert gt["archs"] == gt["to_score"] == sorted(own)
  with pytest.raises(ValueError, match=r"only 0 networks are trained in every seed of \[0\] and "
                                       r"drawn by samples \[7\] alone"):
    gt_lib.for_ranking(dataclasses.replace(request, samples=(7,)), str(tmp_path))


@pytest.mark.slow
def test_a_real_build_trains_each_pair_once_and_a_rerun_trains_nothing(tmp_path):
  path = str(tmp_path / "gt.json")
  logs = []
  truth = gt_lib.build(path, gt_lib.plan("micro", 3, [0], epochs=1), workers=1, log=logs.append)
  assert logs[0] == "3 of 3 trainings to go" and truth.missing() == []
  for network in truth.networks:
    result = network["results"]["0"]
    assert 0.0 < result["eval_top1"] <= 1.0 and result["eval_loss"] > 0
    assert result["images"] == 50 * 64   # one epoch of cluttered digits' 3,234 training canvases
  logs.clear()
  again = gt_lib.build(path, gt_lib.plan("micro", 3, [0], epochs=1), workers=1, log=logs.append)
  assert logs[0] == "0 of 3 trainings to go"
  assert [n["results"] for n in again.networks] == [n["results"] for n in truth.networks]
  assert len(again.provenance["runs"]) == 2 and "tensorflow" in again.provenance["runs"][0]["packages"]


def test_cli_errors_exit_1_with_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "betanas_tf.bench.ground_truth", "--seeds=0,x",
                           f"--out={tmp_path / 'gt.json'}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == "ground_truth: error: --seeds must be integers, got 0,x"
  assert not os.path.exists(tmp_path / "gt.json")


def test_the_shipped_small_ground_truth_is_two_cost_stratified_samples():
  truth = gt_lib.GroundTruth.load(gt_lib.shipped_path("small"))
  assert (truth.space, truth.input_size, truth.dataset) == ("small", 32, "cluttered_digits")
  assert truth.sample == {"kind": "cost_stratified", "count": 64, "seeds": [0, 1]}
  space = spaces.get_space("small")
  first = gt_lib.cost_stratified_sample(space, 64, 0)
  assert [n["choices"] for n in truth.networks] == first + [
      c for c in gt_lib.cost_stratified_sample(space, 64, 1) if c not in first]
  assert len(truth.networks) == 125 and len(truth.complete()) >= 64
  # Which sample drew each network (three were drawn by both).
  assert [n["samples"] for n in truth.networks] == [
      [s for s in (0, 1) if n["choices"] in gt_lib.cost_stratified_sample(space, 64, s)]
      for n in truth.networks]
  assert sum(n["samples"] == [0, 1] for n in truth.networks) == 3
  assert truth.seeds == (0, 1, 2) and truth.recipe == gt_lib.recipe_record("cluttered_digits", 8)
  assert truth.provenance["command"] == (
      "python -m betanas_tf.bench.ground_truth --space=small --archs=64 --samples=0,1 "
      "--seeds=0,1,2 --epochs=8 --dataset=cluttered_digits")


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
