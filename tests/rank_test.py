"""The rank benchmark's quick plan end to end: outputs, and its statistics against scipy."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from betanas_tf.bench import rank


def test_statistics_on_a_fixed_example():
  scores = [0.1, 0.4, 0.35, 0.8, 0.7, 0.2]
  truth = [1, 3, 2, 6, 5, 4]
  c = rank.correlations(scores, truth)
  assert c["kendall_tau"] == pytest.approx(stats.kendalltau(scores, truth)[0])
  assert c["kendall_tau"] == pytest.approx(11 / 15)   # 13 concordant, 2 discordant pairs
  assert c["spearman_rho"] == pytest.approx(1 - 6 * 6 / (6 * 35))   # rank differences 0,1,1,0,0,2
  assert c["spearman_rho"] == pytest.approx(stats.spearmanr(scores, truth)[0])
  assert rank.top_overlap(scores, truth, k=2) == 2 and rank.top_overlap(scores, truth, k=1) == 1
  assert rank.percentile_of(5, [1, 2, 5, 7]) == pytest.approx(62.5)
  low, high = rank.bootstrap_tau([scores, truth], truth, rounds=300)
  assert low <= (11 / 15 + 1) / 2 <= high and high <= 1.0


@pytest.mark.slow
def test_quick_plan_writes_consistent_results(tmp_path):
  out = str(tmp_path / "rank")
  result = rank.run(out, rank.QUICK, log=lambda m: None, workers=2)   # stages in 2 processes
  plan = rank.QUICK
  assert len(result["archs"]) == plan.gt_max_trials
  assert set(result["strategies"]) == set(plan.strategies)
  gt = [json.load(open(os.path.join(out, f"ground_truth_seed{s}", "results.json")))
        for s in plan.gt_seeds]
  truth = {t["choices_string"]: t["eval_top1"] for t in gt[0]["trials"]}
  assert result["truth_top1"] == pytest.approx([truth[a] for a in result["archs"]])
  for name in plan.strategies:
    scores = json.load(open(os.path.join(out, "searches", f"{name}_seed0", "scores.json")))
    entry = result["strategies"][name]
    # The reported tau is scipy's on the written scores and the ground truth.
    assert entry["tau_top1"][0] == pytest.approx(stats.kendalltau(scores["top1"], result["truth_top1"])[0])
    assert entry["tau_loss"][0] == pytest.approx(stats.kendalltau(scores["loss"], result["truth_loss"])[0])
    low, high = entry["tau_loss_ci"]
    assert -1 <= low <= high <= 1
    summary = json.load(open(os.path.join(out, "searches", f"{name}_seed0", "summary.json")))
    assert entry["selected"] == [summary["choices_string"]]
    if summary["choices_string"] in result["archs"]:
      i = result["archs"].index(summary["choices_string"])
      assert entry["selected_top1"][0] == pytest.approx(result["truth_top1"][i])
  # MACs as a ranking: scipy's tau of MACs against top-1 and of -MACs against loss.
  assert result["macs_tau"]["top1"] == pytest.approx(
      stats.kendalltau(result["macs"], result["truth_top1"])[0])
  assert result["macs_tau"]["loss"] == pytest.approx(
      stats.kendalltau(-np.asarray(result["macs"]), result["truth_loss"])[0])
  # Random within the budget: exactly the ground truth of the architectures within it.
  within = [t for t, m in zip(result["truth_top1"], result["macs"]) if m <= result["budget_macs"]]
  assert result["random_within_budget"]["mean_top1"] == pytest.approx(np.mean(within))
  assert result["feasible"] == len(within) == len(result["random_within_budget"]["values"])
  for oracle in ("random", "bayesian"):
    assert result["multi_trial"][oracle]["trials"][0] >= 1
  for path in result["figures"]:
    assert os.path.getsize(path) > 10_000
  report = open(os.path.join(out, "report.md")).read()
  assert "| betanas |" in report and "Random architecture within the budget" in report
  assert f"MACs alone rank the ground truth at Kendall tau {result['macs_tau']['top1']:.3f}" in report
  assert np.isfinite(result["seconds"])
