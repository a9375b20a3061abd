"""The task-separation benchmark: the same sampled architectures in every seed, its figures
against scipy, clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from betanas_tf import spaces
from betanas_tf.bench import ground_truth
from betanas_tf.bench import separation


def test_small_space_is_micros_next_size():
  space = spaces.get_space("small")
  assert space.size() == 5 * 4 * 5 * 4 * 5 == 2000 and len(space) == 5
  arch = space.arch_from_choices([0] * 5)
  assert space.input_size == 32
  assert [s.out_size for s in arch.block_shapes()] == [32, 16, 16, 8, 8]
  assert [b.labels for b in space.choice_blocks][:2] == [("k3e3", "k3e6", "k5e3", "k5e6", "id"),
                                                         ("k3e3", "k3e6", "k5e3", "k5e6")]


@pytest.mark.slow
def test_every_seed_trains_the_same_sample_and_tau_is_scipys(tmp_path):
  out = str(tmp_path / "sep")
  plan = separation.plan_for("small", archs=3, input_size=16, epochs=1, dataset="digits")
  result = separation.separation(out, plan, bootstrap=50)
  trials = [json.load(open(os.path.join(out, f"ground_truth_seed{s}", "results.json")))["trials"]
            for s in (0, 1)]
  assert [t["choices"] for t in trials[0]] == [t["choices"] for t in trials[1]]
  assert len({t["choices_string"] for t in trials[0]}) == 3 == len(result["archs"])
  # The default sample, trained for real: exactly the cost-stratified picks, in their order.
  assert [t["choices_string"] for t in trials[0]] == ground_truth.cost_stratified_sample(
      spaces.get_space("small", 16), 3)
  by_arch = [{t["choices_string"]: t for t in seed} for seed in trials]
  top1 = [[seed[a]["eval_top1"] for a in result["archs"]] for seed in by_arch]
  loss = [[seed[a]["eval_loss"] for a in result["archs"]] for seed in by_arch]
  assert result["seed_tau_top1"]["mean"] == pytest.approx(stats.kendalltau(*top1)[0], nan_ok=True)
  assert result["seed_tau_loss"]["mean"] == pytest.approx(stats.kendalltau(*loss)[0])
  mean = np.mean(top1, axis=0)
  assert result["top1_range"] == pytest.approx([mean.min(), mean.max()])
  assert result["meets"]["spread"] == (mean.max() - mean.min() >= 0.10)
  assert result["macs_tau"]["loss"] == pytest.approx(
      stats.kendalltau(-np.asarray(result["macs"]), np.mean(loss, axis=0))[0])
  # Cached: a second call trains nothing and returns the same figures.
  again = separation.separation(out, plan, bootstrap=50)
  assert again["top1"] == result["top1"] and again["archs"] == result["archs"]


def test_the_plan_trains_at_the_spaces_own_input_size_unless_told():
  assert separation.plan_for("small", 4).input_size == 32
  assert separation.plan_for("micro", 4).input_size == 16
  assert separation.plan_for("small", 4, input_size=24).input_size == 24


def test_one_seed_is_refused():
  with pytest.raises(ValueError, match="at least two training seeds"):
    separation.separation("/nonexistent", separation.plan_for("small", 4, seeds=(0,)))


def test_cli_errors_exit_1_with_one_line(tmp_path):
  command = [sys.executable, "-m", "betanas_tf.bench.separation", f"--out_dir={tmp_path}",
             "--seeds=0,x"]
  done = subprocess.run(command, capture_output=True, text=True, timeout=120)
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1] == "separation: error: --seeds must be integers, got 0,x"
  assert os.listdir(tmp_path) == []


def test_disjoint_splits_count_every_unordered_pair_of_groups():
  assert [len(separation.disjoint_splits(6, k)) for k in (1, 2, 3)] == [15, 45, 10]
  assert separation.disjoint_splits(4, 2) == [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
  assert separation.disjoint_splits(3, 2) == []


def test_group_tau_is_scipys_tau_of_group_means_averaged_over_splits():
  rng = np.random.default_rng(3)
  truth = np.linspace(0.6, 0.8, 7)
  per_seed = truth + rng.normal(0.0, 0.03, size=(4, 7))
  single = separation.group_tau(per_seed, 1, bootstrap=0)
  pairs = [stats.kendalltau(per_seed[a], per_seed[b])[0] for a in range(4) for b in range(a + 1, 4)]
  assert single["splits"] == 6 and single["mean"] == pytest.approx(np.mean(pairs))
  double = separation.group_tau(per_seed, 2, bootstrap=200)
  by_hand = [stats.kendalltau(per_seed[list(a)].mean(0), per_seed[list(b)].mean(0))[0]
             for a, b in (((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2)))]
  assert double["taus"] == pytest.approx(by_hand) and double["mean"] == pytest.approx(np.mean(by_hand))
  assert double["ci"][0] <= double["mean"] <= double["ci"][1] <= 1.0
  with pytest.raises(ValueError, match="4 seeds hold no two disjoint groups of 3"):
    separation.group_tau(per_seed, 3, bootstrap=0)


def test_seeds_needed_is_the_fewest_trainings_reaching_the_goal():
  def result(single, groups):
    return {"seed_tau_top1": {"mean": single},
            "group_tau_top1": [{"k": k, "mean": m} for k, m in groups]}
  assert separation.seeds_needed(result(0.72, [])) == 1
  assert separation.seeds_needed(result(0.55, [(2, 0.66), (3, 0.71)])) == 3
  assert separation.seeds_needed(result(0.55, [(2, 0.66), (3, 0.69)])) is None


def _macs(space, strings):
  from betanas_tf import cost  # pylint: disable=import-outside-toplevel
  table = cost.macs_cost_table(space)
  return np.array([table.of_choices(space.choices_from_string(s)) for s in strings])


def test_a_cost_stratified_sample_spreads_over_the_spaces_macs_range():
  space = spaces.get_space("small")
  picks = ground_truth.cost_stratified_sample(space, 32)
  assert len(set(picks)) == 32 and picks == ground_truth.cost_stratified_sample(space, 32)
  assert picks != ground_truth.cost_stratified_sample(space, 32, seed=1)
  every = _macs(space, [space.choices_to_string(c) for c in space.enumerate()])
  edges = np.linspace(every.min(), every.max(), 33)
  bins = np.clip(np.searchsorted(edges, _macs(space, picks), side="right") - 1, 0, 31)
  occupied = set(np.clip(np.searchsorted(edges, every, side="right") - 1, 0, 31))
  # One pick from every bin the space fills, the rest from the filled bins again.
  assert set(bins) == occupied and len(set(bins[:len(occupied)])) == len(occupied)
  assert "k5e6-k5e6-k5e6-k5e6-k5e6" in picks   # the costliest is alone in the last bin
  # A uniform draw of 32 holds about 0.26 three-identity networks; this one holds some.
  assert sum(p.count("id") == 3 for p in picks) >= 1
  # Asked for at least the whole space, it returns the whole space.
  micro = spaces.get_space("micro")
  assert sorted(ground_truth.cost_stratified_sample(micro, 60)) == sorted(
      micro.choices_to_string(c) for c in micro.enumerate())


def test_a_space_too_large_to_enumerate_is_stratified_over_a_uniform_pool(monkeypatch):
  monkeypatch.setattr(ground_truth, "POOL", 300)
  space = spaces.get_space("small")
  picks = ground_truth.cost_stratified_sample(space, 10, seed=3)
  assert len(set(picks)) == 10 and picks == ground_truth.cost_stratified_sample(space, 10, seed=3)


def test_a_stratified_ground_truth_trains_the_sample_as_a_grid(monkeypatch):
  from betanas_tf import tune  # pylint: disable=import-outside-toplevel
  configs = []
  monkeypatch.setattr(tune, "tune", lambda out, config: configs.append((out, config)) or {})
  plan = separation.plan_for("small", 6)   # the default sample
  assert (plan.oracle, plan.sample, plan.max_trials) == ("random", "cost_stratified", 6)
  ground_truth.trained_seed(plan, 3, "/out")
  out, config = configs[0]
  assert out == "/out/ground_truth_seed3" and config.train.seed == 3
  assert config.oracle == "grid" and config.architectures == tuple(
      ground_truth.cost_stratified_sample(spaces.get_space("small"), 6))
  uniform = separation.plan_for("small", 6, sample="uniform")
  ground_truth.trained_seed(uniform, 0, "/out")
  assert (configs[1][1].oracle, configs[1][1].architectures) == ("random", ())
  with pytest.raises(ValueError, match=r"gt_sample must be one of uniform, cost_stratified, "
                     r"got 'even'"):
    separation.plan_for("small", 6, sample="even")
