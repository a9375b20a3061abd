"""The rank benchmark's quick plan end to end: outputs, and its statistics against scipy."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from betanas_tf.bench import ground_truth as gt_lib
from betanas_tf.bench import rank
from betanas_tf.bench import rank_stages
from betanas_tf.bench import rank_stats


def test_statistics_on_a_fixed_example():
  scores = [0.1, 0.4, 0.35, 0.8, 0.7, 0.2]
  truth = [1, 3, 2, 6, 5, 4]
  c = rank_stats.correlations(scores, truth)
  assert c["kendall_tau"] == pytest.approx(stats.kendalltau(scores, truth)[0])
  assert c["kendall_tau"] == pytest.approx(11 / 15)   # 13 concordant, 2 discordant pairs
  assert c["spearman_rho"] == pytest.approx(1 - 6 * 6 / (6 * 35))   # rank differences 0,1,1,0,0,2
  assert c["spearman_rho"] == pytest.approx(stats.spearmanr(scores, truth)[0])
  assert rank_stats.top_overlap(scores, truth, k=2) == 2 and rank_stats.top_overlap(scores, truth, k=1) == 1
  assert rank_stats.percentile_of(5, [1, 2, 5, 7]) == pytest.approx(62.5)
  low, high = rank_stats.bootstrap_tau([scores, truth], truth, rounds=300)
  assert low <= (11 / 15 + 1) / 2 <= high and high <= 1.0


@pytest.mark.slow
def test_quick_plan_writes_consistent_results(tmp_path):
  from betanas_tf import cost as cost_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  out = str(tmp_path / "rank")
  result = rank.run(out, rank.QUICK, log=lambda m: None, workers=2)   # stages in 2 processes
  plan = rank.QUICK
  assert len(result["archs"]) == plan.gt_max_trials
  ranking, chosen = result["ranking"], result["selection"]
  assert set(ranking["strategies"]) == set(plan.strategies)
  gt = [json.load(open(os.path.join(out, f"ground_truth_seed{s}", "results.json")))
        for s in plan.gt_seeds]
  truth = {t["choices_string"]: t["eval_top1"] for t in gt[0]["trials"]}
  assert result["truth_top1"] == pytest.approx([truth[a] for a in result["archs"]])
  strata = [[result["archs"].index(a) for a in s] for s in ranking["strata"]]
  assert sorted(i for s in strata for i in s) == list(range(6)) and len(strata) == plan.strata
  assert result["score_split"] == "arch" and set(result["ranking_other_splits"]) == {"eval"}
  for name in plan.strategies:
    scores = json.load(open(os.path.join(out, "searches", f"{name}_seed0", "scores_arch.json")))
    on_eval = json.load(open(os.path.join(out, "searches", f"{name}_seed0", "scores_eval.json")))
    assert scores["archs"] == result["archs"] == on_eval["archs"]
    assert scores["split"] == "arch" and scores["scoring_digest"] != on_eval["scoring_digest"]
    assert result["ranking_other_splits"]["eval"]["strategies"][name]["top1"]["per_seed"][0] == (
        pytest.approx(stats.kendalltau(on_eval["top1"], result["truth_top1"])[0], nan_ok=True))
    entry = ranking["strategies"][name]
    # The reported taus are scipy's on the written scores and the ground truth.
    assert entry["top1"]["per_seed"][0] == pytest.approx(
        stats.kendalltau(scores["top1"], result["truth_top1"])[0], nan_ok=True)
    assert entry["loss"]["per_seed"][0] == pytest.approx(
        stats.kendalltau(scores["loss"], result["truth_loss"])[0], nan_ok=True)
    assert entry["loss"]["per_seed_strata"][0] == pytest.approx(rank_stats.strata_tau(
        scores["loss"], result["truth_loss"], strata), nan_ok=True)
    assert entry["top1"]["strata"]["diff"] == pytest.approx(
        entry["top1"]["strata"]["tau"] - ranking["macs"]["top1"]["strata"]["tau"], nan_ok=True)
  # MACs as a ranking: scipy's tau of MACs against top-1 and of -MACs against loss.
  assert ranking["macs"]["top1"]["all"]["tau"] == pytest.approx(
      stats.kendalltau(result["macs"], result["truth_top1"])[0])
  assert ranking["macs"]["loss"]["all"]["tau"] == pytest.approx(
      stats.kendalltau(-np.asarray(result["macs"]), result["truth_loss"])[0])
  # The biggest network within the budget, over the whole space; the budget is the median.
  space = spaces.get_space("micro", 16)
  costs = cost_lib.space_costs(space)
  macs = {space.choices_to_string(c): costs.of_choices(c).macs for c in space.enumerate()}
  assert result["budget_macs"] == pytest.approx(np.median(list(macs.values())))
  fits = {a: m for a, m in macs.items() if m <= result["budget_macs"]}
  top = max(fits.values())
  assert chosen["biggest"]["networks"] == sorted(a for a, m in fits.items() if m == top) or (
      sorted(chosen["biggest"]["networks"]) == sorted(a for a, m in fits.items() if m == top))
  assert len(chosen["random"]["networks"]) == 1 and chosen["random"]["networks"][0] in fits
  # Selected networks outside the ground truth were trained with its recipe and seeds.
  values = []
  for network in chosen["biggest"]["networks"]:
    if network in result["archs"]:
      values.append(result["truth_top1"][result["archs"].index(network)])
    else:
      selections = json.load(open(os.path.join(out, "selections.json")))
      entry = [n for n in selections["networks"] if n["choices"] == network][0]
      values.append(entry["results"]["0"]["eval_top1"])
  assert chosen["biggest"]["top1"] == pytest.approx(np.mean(values))
  for name in plan.selection_strategies:
    summary = json.load(open(os.path.join(out, "searches", f"{name}_seed0", "summary.json")))
    entry = chosen["strategies"][name]
    assert entry["selected"] == [summary["choices_string"]]
    assert entry["vs_biggest"]["mean"] == pytest.approx(entry["top1"][0] - chosen["biggest"]["top1"])
    assert entry["vs_biggest"]["search_seeds"] == 1
  for oracle in ("random", "bayesian"):
    assert chosen["multi_trial"][oracle]["trials"][0] >= 1
  for path in result["figures"]:
    assert os.path.getsize(path) > 10_000
  report = open(os.path.join(out, "report.md")).read()
  assert "| betanas (1 seeds) |" in report and "Biggest networks within the budget" in report
  assert "Supernets score on the arch split (disjoint from the eval split" in report
  assert "### The scoring split side by side" in report
  assert f"| MACs alone | {ranking['macs']['top1']['all']['tau']:.3f}" in report
  assert np.isfinite(result["seconds"])


def test_search_seeds_are_the_seeds_named_and_selection_seeds_follow_them():
  plan = rank.RankPlan(search_seeds=(20, 21, 22), selection_seeds=5,
                       strategies=("betanas", "spos"), selection_strategies=("betanas",))
  assert plan.all_search_seeds() == [20, 21, 22, 23, 24]
  runs = rank.search_runs(plan)
  assert [(n, s) for n, s, score in runs if score] == [
      ("betanas", 20), ("betanas", 21), ("betanas", 22), ("spos", 20), ("spos", 21), ("spos", 22)]
  assert [(n, s) for n, s, score in runs if not score] == [("betanas", 23), ("betanas", 24)]
  with pytest.raises(ValueError, match="unknown strategy 'tpe'"):
    rank.RankPlan(strategies=("tpe",))
  with pytest.raises(ValueError, match=r"selection_seeds \(2\) must count at least the 3"):
    rank.RankPlan(selection_seeds=2)
  # Multi-trial searches: each oracle on the first `multi_trial_seeds` selection seeds.
  plan = rank.RankPlan(search_seeds=(20, 21, 22), selection_seeds=5, multi_trial_seeds=2,
                       multi_trial_oracles=("random", "bayesian"))
  assert plan.multi_trials() == [("random", 20), ("random", 21), ("bayesian", 20), ("bayesian", 21)]
  assert rank.RankPlan(multi_trial_seeds=None).multi_trials() == [("random", s) for s in range(8)]
  assert rank.RankPlan().multi_trials() == [("random", 0), ("random", 1), ("random", 2)]
  assert rank.RankPlan(selection=False).multi_trials() == []
  with pytest.raises(ValueError, match="unknown multi-trial oracle 'hyperband'; known: random, bayesian"):
    rank.RankPlan(multi_trial_oracles=("hyperband",))
  with pytest.raises(ValueError, match="multi_trial_seeds must be at least 1, got 0"):
    rank.RankPlan(multi_trial_seeds=0)
  with pytest.raises(ValueError, match="score_splits must be distinct names of arch, eval, got "
                                       "arch, arch"):
    rank.RankPlan(score_splits=("arch", "arch"))
  with pytest.raises(ValueError, match="gt_samples selects networks of a ground-truth file"):
    rank.RankPlan(gt_samples=(2,))


def test_selections_are_paired_differences_over_search_and_training_seeds():
  from betanas_tf.bench import rank_analysis  # pylint: disable=import-outside-toplevel
  plan = rank.RankPlan(search_seeds=(0, 1), selection_seeds=4, strategies=("spos",),
                       selection_strategies=("betanas",), multi_trial_seeds=2, bootstrap=300,
                       multi_trial_oracles=("random",))
  summary = lambda c, macs: {"summary": {"choices_string": c, "cost": {"value": macs,
                                                                        "meets_target": True}}}
  searches = {"betanas": [dict(summary(c, 7.0), seed=s) for s, c in enumerate("abcd")],
              "spos": [dict(summary("e", 8.0), seed=1)]}   # seed 0 of spos did not run
  # Two training seeds per network: the second always 0.02 above the first.
  means = {"a": 0.90, "b": 0.80, "c": 0.86, "d": 0.70, "e": 0.84, "big1": 0.85, "big2": 0.87,
           "r0": 0.91, "r1": 0.70, "r2": 0.80, "r3": 0.75, "m0": 0.82, "m1": 0.88}
  truth = {c: [m - 0.01, m + 0.01] for c, m in means.items()}
  multi = {"random": [{"trials": 3, "images": 9.0, "best": "m0"},
                      {"trials": 3, "images": 9.0, "best": "m1"}]}
  picks = {"biggest": ["big1", "big2"], "random": ["r0", "r1", "r2", "r3"]}
  chosen = rank_analysis.selections(plan, searches, multi, picks, truth, 7.5)
  # The two networks tied at the largest cost count as their mean, 0.86.
  assert chosen["biggest"]["top1"] == pytest.approx(0.86)
  betanas, spos = chosen["strategies"]["betanas"], chosen["strategies"]["spos"]
  assert betanas["seeds_run"] == [0, 1, 2, 3]
  assert betanas["top1"] == pytest.approx([0.90, 0.80, 0.86, 0.70])
  assert betanas["vs_biggest"]["mean"] == pytest.approx(0.815 - 0.86)
  assert betanas["vs_biggest"]["per_seed"] == pytest.approx([0.04, -0.06, 0.0, -0.16])
  low, high = betanas["vs_biggest"]["ci"]
  assert -0.16 <= low < 0.815 - 0.86 < high <= 0.04
  # Each seed against its own random network: (a - r0, b - r1, c - r2, d - r3).
  assert betanas["vs_random"]["per_seed"] == pytest.approx([-0.01, 0.10, 0.06, -0.05])
  assert spos["seeds_run"] == [1] and spos["vs_random"]["per_seed"] == pytest.approx([0.14])
  # Against the multi-trial search of the same seed (seeds 0 and 1 ran one).
  versus = betanas["vs_multi_trial"]["random"]
  assert versus["per_seed"] == pytest.approx([0.90 - 0.82, 0.80 - 0.88])
  assert chosen["multi_trial"]["random"]["seeds"] == [0, 1]
  # Selective drop's effect on selection is read on the seeds both ran: seed 1 only here.
  pair = chosen["pairs"]["betanas - spos"]
  assert pair["seeds"] == [1] and pair["mean"] == pytest.approx(0.80 - 0.84)
  assert pair["ci"] == [pytest.approx(-0.04), pytest.approx(-0.04)]


def test_a_paired_difference_reads_search_and_training_seeds_together():
  first = [[0.9, 0.8], [0.7, 0.6], [0.8, 0.9]]
  second = [[0.8, 0.8], [0.7, 0.7], [0.9, 0.7]]
  d = rank_stats.seed_paired_difference(first, second, rounds=500)
  assert d["mean"] == pytest.approx(np.mean(np.subtract(first, second)))
  assert d["per_seed"] == pytest.approx([0.05, -0.05, 0.05])
  assert (d["search_seeds"], d["training_seeds"]) == (3, 2)
  assert d["ci"][0] < d["mean"] < d["ci"][1]
  with pytest.raises(ValueError, match=r"two equal \(search seeds x training seeds\) tables, "
                                       r"got \(3, 2\) and \(2, 2\)"):
    rank_stats.seed_paired_difference(first, second[:2], rounds=10)


def test_engine_overrides_are_typed_engine_config_fields():
  assert rank.engine_overrides(["max_steps=9", "beta=0.25", "nesterov=false"]) == (
      ("max_steps", 9), ("beta", 0.25), ("nesterov", False))
  with pytest.raises(ValueError, match="an EngineConfig field, got 'speed=3'"):
    rank.engine_overrides(["speed=3"])
  with pytest.raises(ValueError, match="--engine max_steps: 'x' is not a int"):
    rank.engine_overrides(["max_steps=x"])
  plan = rank.RankPlan(engine_overrides=(("beta", 0.25),))
  assert rank_stages.engine_config(plan, 3).beta == 0.25
  assert rank_stages.engine_config(plan, 3).seed == 3


def test_a_plan_from_the_shipped_file_reads_its_settings():
  from betanas_tf.bench import ground_truth as gt_lib  # pylint: disable=import-outside-toplevel
  plan = rank.plan_from_file(gt_lib.shipped_path("small"), search_steps=100)
  assert (plan.space, plan.input_size, plan.gt_seeds, plan.gt_epochs) == ("small", 32, (0, 1, 2), 8)
  assert plan.search_steps == 100


def test_the_confirmatory_plan_is_the_one_registered_in_docs_rank_md():
  plan = rank.confirmatory_plan()
  assert (plan.strategies, plan.search_seeds, plan.search_steps) == (("spos",), tuple(range(100, 108)), 4800)
  assert (plan.strata, plan.ensembles, plan.selection, plan.gt_samples) == (4, True, False, (2,))
  assert plan.score_splits[0] == "arch" and plan.ground_truth_file == gt_lib.shipped_path("small")
  registered = " ".join(open(os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), "docs", "rank.md")).read().split())
  for words in ("spos' supernet after 4,800 Phase-1 steps", "Kendall τ within 4 MACs strata",
                "Search seeds 100-107", "the third cost-stratified sample of `small`",
                "networks also drawn by samples 0 or 1 are left out of the confirmatory set"):
    assert words in registered


def test_picks_trained_before_are_read_and_only_new_picks_train(tmp_path, monkeypatch):
  from betanas_tf.bench import ground_truth as gt_lib  # pylint: disable=import-outside-toplevel
  plan = rank.plan_from_file(gt_lib.shipped_path("small"),
                             selections_file=gt_lib.shipped_selections_path("small"))
  shipped = gt_lib.GroundTruth.load(plan.selections_file)
  assert shipped.seeds == (0, 1, 2) and len(shipped.networks) == 19
  def no_training(path, seed, choices, scratch):
    raise RuntimeError(f"would train {choices} seed {seed}")
  monkeypatch.setattr(gt_lib, "_train_one", no_training)
  gt = gt_lib.for_ranking(rank.truth_request(plan), str(tmp_path))
  pick = shipped.networks[0]
  in_gt = gt["archs"][5]
  truth = rank_stages.selection_truth(plan, gt, [pick["choices"], in_gt], str(tmp_path / "a"))
  expected = [pick["results"][s]["eval_top1"] for s in ("0", "1", "2")]
  assert truth[pick["choices"]] == pytest.approx(expected, abs=1e-12)
  assert truth[in_gt] == pytest.approx(np.array(gt["top1"])[:, 5].tolist(), abs=1e-12)
  known = set(gt["archs"]) | {n["choices"] for n in shipped.networks}
  space_choices, _ = rank_stages.space_networks(plan)
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  space = spaces.get_space("small", 32)
  new = next(s for s in (space.choices_to_string(c) for c in space_choices) if s not in known)
  with pytest.raises(RuntimeError, match=f"would train {new} seed 0"):
    rank_stages.selection_truth(plan, gt, [pick["choices"], new], str(tmp_path / "b"))
  # Without the file every pick the ground truth lacks trains.
  import dataclasses  # pylint: disable=import-outside-toplevel
  with pytest.raises(RuntimeError, match=f"would train {pick['choices']} seed 0"):
    rank_stages.selection_truth(dataclasses.replace(plan, selections_file=None), gt, [pick["choices"]],
                         str(tmp_path / "c"))


def test_a_grown_ground_truth_scores_only_its_new_networks_without_searching_again(tmp_path):
  import dataclasses  # pylint: disable=import-outside-toplevel
  plan = dataclasses.replace(rank.QUICK, search_steps=20, eval_batches=2, calibration_batches=2,
                             score_splits=("arch",))
  archs = ["k3e3-k3e3-id", "k5e3-k3e3-id", "k3e6-k3e6-k5e3", "k3e3-k5e3-k3e6", "id-k5e3-k3e6"]
  whole = rank_stages.one_search(plan, "spos", 0, str(tmp_path / "whole"), 1e9, {"archs": archs}, True)
  grown = str(tmp_path / "grown")
  first = rank_stages.one_search(plan, "spos", 0, grown, 1e9, {"archs": archs[:3]}, True)
  assert first["scores"]["arch"]["archs"] == sorted(archs[:3])
  history = os.path.join(grown, "searches", "spos_seed0", "history.jsonl")
  steps = [json.loads(line)["step"] for line in open(history)]
  before = sorted(os.listdir(os.path.join(grown, "searches", "spos_seed0", "checkpoints")))
  second = rank_stages.one_search(plan, "spos", 0, grown, 1e9, {"archs": archs}, True)
  # Restored, not searched again: the history is the first run's, and the scores of every
  # network equal those of a search that scored all five at once.
  assert [json.loads(line)["step"] for line in open(history)] == steps
  checkpoints = os.path.join(grown, "searches", "spos_seed0", "checkpoints")
  assert sorted(os.listdir(checkpoints)) == before
  assert second["summary"] == json.loads(json.dumps(first["summary"]))
  assert second["summary"]["resumed_from_step"] == 0
  assert second["scores"]["arch"]["archs"] == whole["scores"]["arch"]["archs"] == sorted(archs)
  for metric in ("top1", "loss"):
    assert second["scores"]["arch"][metric] == pytest.approx(whole["scores"]["arch"][metric], abs=1e-6)
  assert second["summary"]["choices_string"] == first["summary"]["choices_string"]
  # Another plan in the same directory is refused before anything is read, in one line.
  for change, named in ((dict(search_steps=30), "engine.max_steps"),
                        (dict(eval_batches=3), "selection")):
    with pytest.raises(ValueError, match=r"spos_seed0 holds a search with other settings \(.*"
                       + named.replace(".", r"\.") + r".*\); use a new --out_dir"):
      rank_stages.one_search(dataclasses.replace(plan, **change), "spos", 0, grown, 1e9,
                             {"archs": archs}, True)
  # Scores cached under another scoring digest (another supernet, batch or version) are
  # not reused: they are computed again, and it is said.
  path = os.path.join(grown, "searches", "spos_seed0", "scores_arch.json")
  cached = json.load(open(path))
  json.dump(dict(cached, scoring_digest="another", top1=[0.0] * len(cached["top1"])), open(path, "w"))
  logged = []
  third = rank_stages.one_search(plan, "spos", 0, grown, 1e9, {"archs": archs}, True,
                                 log=logged.append)
  assert logged == ["spos seed 0: scores_arch.json was scored by another supernet or setup "
                    "(scoring digest differs); scored again"]
  assert third["scores"]["arch"]["top1"] == pytest.approx(second["scores"]["arch"]["top1"], abs=1e-6)
  assert third["scores"]["arch"]["scoring_digest"] == cached["scoring_digest"]
  # A search that did not reach its last step is not scored as if it had.
  import shutil  # pylint: disable=import-outside-toplevel
  from betanas_tf import runner  # pylint: disable=import-outside-toplevel
  shutil.rmtree(checkpoints)
  unfinished = runner.SearchRun(*rank_stages.search_settings(plan, "spos", 0, grown, 1e9))
  with pytest.raises(ValueError, match="spos_seed0 stopped at step 0 of 20: run it to the end first"):
    unfinished.restore_finished()


def test_a_supernet_equal_to_a_scored_one_takes_its_scores(tmp_path):
  import dataclasses  # pylint: disable=import-outside-toplevel
  plan = dataclasses.replace(rank.QUICK, search_steps=20, eval_batches=2, calibration_batches=2,
                             score_splits=("arch",))
  archs = ["k3e3-k3e3-id", "k5e3-k3e3-id", "k3e6-k3e6-k5e3", "id-k5e3-k3e6"]
  out, logged = str(tmp_path / "rank"), []
  spos = rank_stages.one_search(plan, "spos", 0, out, 1e9, {"archs": archs}, True)
  # --nodrop's alpha step changes no weight: its supernet is spos' to the bit, so its scores
  # are spos' (taken, and said so), and it is scored for a network spos was not asked about.
  nodrop = rank_stages.one_search(plan, "betanas_nodrop", 0, out, 1e9,
                           {"archs": archs + ["k3e3-k3e6-k5e3"]}, True, log=logged.append)
  assert nodrop["scores"]["arch"]["scoring_digest"] == spos["scores"]["arch"]["scoring_digest"]
  assert nodrop["scores"]["arch"]["shared"] == {"spos_seed0": 4}
  assert logged == ["betanas_nodrop seed 0: the supernet of spos_seed0, to the bit; "
                    "4 of its scores taken, not recomputed"]
  theirs = {m: dict(zip(spos["scores"]["arch"]["archs"], spos["scores"]["arch"][m]))
            for m in ("top1", "loss")}
  mine = {m: dict(zip(nodrop["scores"]["arch"]["archs"], nodrop["scores"]["arch"][m]))
          for m in ("top1", "loss")}
  assert {m: {a: mine[m][a] for a in archs} for m in mine} == theirs
  alone = rank_stages.one_search(plan, "spos", 0, str(tmp_path / "alone"), 1e9,
                          {"archs": ["k3e3-k3e6-k5e3"]}, True)
  for metric in ("top1", "loss"):
    assert mine[metric]["k3e3-k3e6-k5e3"] == pytest.approx(alone["scores"]["arch"][metric][0], abs=1e-6)
  # Another seed trains other weights: nothing is taken.
  other = rank_stages.one_search(plan, "spos", 1, out, 1e9, {"archs": archs}, True)
  assert other["scores"]["arch"]["scoring_digest"] != spos["scores"]["arch"]["scoring_digest"]
  assert other["scores"]["arch"]["shared"] == {}
  assert other["scores"]["arch"]["top1"] != spos["scores"]["arch"]["top1"] or (
      other["scores"]["arch"]["loss"] != spos["scores"]["arch"]["loss"])


def test_a_strategys_searches_are_also_ranked_together():
  import dataclasses  # pylint: disable=import-outside-toplevel
  from betanas_tf.bench import rank_analysis  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  archs = [f"net{i:02d}" for i in range(12)]
  top1 = rng.uniform(0.5, 0.9, size=(2, 12))
  gt = {"archs": archs, "choices": [[0]] * 12, "macs": list(range(12)), "top1": top1.tolist(),
        "loss": (1 - top1).tolist()}
  runs = [{"seed": seed, "summary": {"balance_max_min_per_block": [[2, 1]]},
           "scores": {"archs": archs, "top1": (top1.mean(0) + rng.normal(0, 0.1, 12)).tolist(),
                      "loss": rng.normal(size=12).tolist()}} for seed in (0, 1, 2)]
  plan = dataclasses.replace(rank.QUICK, strata=2, bootstrap=50)
  result = rank_analysis.ranking(plan, gt, {"spos": runs})
  assert set(result["strategies"]) == {"spos", "spos_ensemble"}
  together = result["strategies"]["spos_ensemble"]
  mean_rank = np.mean([stats.rankdata(r["scores"]["top1"]) for r in runs], 0)
  assert together["top1"]["per_seed"] == [pytest.approx(stats.kendalltau(mean_rank, top1.mean(0))[0])]
  assert together["top1"]["all"]["tau"] == pytest.approx(together["top1"]["per_seed"][0])
  assert together["seeds"] == [0, 1, 2] and together["top1"]["survivors"] == []
  alone = rank_analysis.ranking(dataclasses.replace(plan, ensembles=False), gt, {"spos": runs})
  assert set(alone["strategies"]) == {"spos"}
  assert alone["strategies"]["spos"]["top1"] == result["strategies"]["spos"]["top1"]


def test_scores_are_read_by_network_and_a_missing_one_is_named():
  from betanas_tf.bench import rank_analysis  # pylint: disable=import-outside-toplevel
  run = {"seed": 2, "scores": {"archs": ["a", "b", "c"], "top1": [0.1, 0.2, 0.3]}}
  assert rank_analysis._scores_of(run, "top1", ["c", "a"], "spos").tolist() == [0.3, 0.1]  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=r"spos seed 2 did not score d \(and 0 more\)"):
    rank_analysis._scores_of(run, "top1", ["a", "d"], "spos")  # pylint: disable=protected-access


def test_ranking_pairs_say_whether_drop_changes_the_ranking():
  from betanas_tf.bench import rank_analysis  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(3)
  n = 12
  archs = [f"n{i}" for i in range(n)]
  top1 = rng.uniform(0.6, 0.9, (2, n))
  gt = {"archs": archs, "macs": list(range(n)), "top1": top1.tolist(),
        "loss": (1 - top1).tolist(), "choices": [[0, 0, 0]] * n}

  def run(name, seed, noise):
    scores = top1.mean(0) + noise * rng.standard_normal(n)
    return {"seed": seed, "scores": {"archs": archs, "top1": scores.tolist(), "loss": (1 - scores).tolist()},
            "summary": {"active": [[1, 1, 1, 1]] * 3, "balance_max_min_per_block": [[1, 1]] * 3}}
  searches = {"betanas": [run("betanas", s, 0.01) for s in (0, 1)],
              "betanas_nodrop": [run("betanas_nodrop", s, 0.2) for s in (0, 1)]}
  plan = rank.RankPlan(strategies=("betanas", "betanas_nodrop"), strata=2, bootstrap=200)
  result = rank_analysis.ranking(plan, gt, searches)
  pair = result["pairs"]["betanas - betanas_nodrop"]
  strata = rank_stats.strata_of(np.arange(n), 2)
  truth = np.asarray(gt["top1"])
  expected = rank_stats.paired_bootstrap(
      {k: [np.asarray(r["scores"]["top1"]) for r in v] for k, v in searches.items()}, truth,
      strata, "betanas_nodrop", 200, True)["betanas"]
  assert pair["top1"]["strata"] == expected
  # Scores 20x less noisy rank better: the difference is positive.
  assert pair["top1"]["all"]["diff"] > 0 and pair["loss"]["all"]["diff"] > 0
