"""The rank benchmark's statistics against scipy and against cases whose answer is known."""

import sys

import numpy as np
import pytest
from scipy import stats

from betanas_tf.bench import rank_stats


def test_strata_are_consecutive_in_macs_equal_in_size_and_keep_ties_together():
  macs = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11, 12]
  strata = rank_stats.strata_of(macs, 3)
  assert [sorted(np.asarray(macs)[s].tolist()) for s in strata] == [
      [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
  tied = rank_stats.strata_of([1, 2, 3, 3, 3, 4, 5, 6, 7], 3)
  # The 3 networks tied at 3 MACs straddle the equal-size cut (after 3 networks): the cuts
  # move to the nearest cost changes, sizes 2, 3, 4 (not 5, 1, 3 nor a split tie).
  assert [np.asarray([1, 2, 3, 3, 3, 4, 5, 6, 7])[s].tolist() for s in tied] == [
      [1, 2], [3, 3, 3], [4, 5, 6, 7]]
  # The case: four tied at 3 across the first cut and into the second group.
  four = np.asarray([1, 2, 3, 3, 3, 3, 4, 5, 6])
  groups = [four[s].tolist() for s in rank_stats.strata_of(four, 3)]
  assert groups == [[1, 2], [3, 3, 3, 3], [4, 5, 6]]
  # Shuffled input: the indices point at the networks, every network in one stratum.
  rng = np.random.default_rng(0)
  costs = rng.integers(0, 6, size=30)
  strata = rank_stats.strata_of(costs, 4)
  assert sorted(np.concatenate(strata).tolist()) == list(range(30))
  for first, second in zip(strata, strata[1:]):
    assert costs[first].max() < costs[second].min()   # no tie on both sides of a cut
  with pytest.raises(ValueError, match="12 networks hold 2 distinct MACs values: too few "
                                       "for 3 strata"):
    rank_stats.strata_of([1] * 6 + [2] * 6, 3)
  with pytest.raises(ValueError, match="4 strata of 9 networks leave fewer than 3 per stratum"):
    rank_stats.strata_of(range(9), 4)


def test_strata_tau_is_the_mean_of_scipys_tau_inside_each_stratum():
  rng = np.random.default_rng(0)
  truth, scores = rng.normal(size=12), rng.normal(size=12)
  strata = rank_stats.strata_of(np.arange(12), 3)
  by_hand = np.mean([stats.kendalltau(scores[s], truth[s])[0] for s in strata])
  assert rank_stats.strata_tau(scores, truth, strata) == pytest.approx(by_hand)
  assert rank_stats.ranking_tau([scores, truth], truth, strata) == pytest.approx((by_hand + 1) / 2)


def test_paired_bootstrap_of_a_perfect_ranking_against_a_cost_count():
  rng = np.random.default_rng(1)
  macs = np.arange(24, dtype=float)
  # Truth rises with MACs across strata but is shuffled within them: MACs rank well over
  # all networks and at chance within a stratum; the truth itself ranks perfectly.
  truth = macs // 8 * 10 + rng.permutation(24) % 8
  seeds = np.stack([truth + rng.normal(0, 0.01, 24) for _ in range(3)])
  strata = rank_stats.strata_of(macs, 3)
  result = rank_stats.paired_bootstrap({"MACs": [macs], "oracle": [truth, truth]}, seeds, strata,
                                       "MACs", rounds=200, within=True)
  assert result["MACs"]["diff"] == 0 and result["MACs"]["diff_ci"] == [0.0, 0.0]
  oracle = result["oracle"]
  assert oracle["tau"] == pytest.approx(rank_stats.strata_tau(truth, seeds.mean(0), strata))
  assert oracle["diff"] == pytest.approx(oracle["tau"] - result["MACs"]["tau"])
  assert oracle["diff_ci"][0] > 0 and oracle["diff_above_zero"] == 1.0
  overall = rank_stats.paired_bootstrap({"MACs": [macs], "oracle": [truth]}, seeds, strata,
                                        "MACs", rounds=200, within=False)
  assert overall["MACs"]["tau"] == pytest.approx(stats.kendalltau(macs, seeds.mean(0))[0])
  assert overall["MACs"]["ci"][0] <= overall["MACs"]["tau"] <= overall["MACs"]["ci"][1]


def test_the_bootstrap_is_paired_a_shared_error_cancels_in_the_difference():
  rng = np.random.default_rng(4)
  truth = rng.normal(size=(3, 30))
  # Two rankings that are the same noisy guess but for one swapped pair: each tau on its
  # own is uncertain (wide interval), their difference hardly at all -- if, and only if,
  # every round scores both on the same networks, truth seeds and search seeds.
  guess = truth.mean(0) + rng.normal(0, 1.0, size=30)
  other = guess.copy()
  low, high = np.argsort(guess)[[14, 15]]
  other[[low, high]] = other[[high, low]]
  strata = rank_stats.strata_of(np.arange(30), 2)
  for within in (False, True):
    boot = rank_stats.paired_bootstrap({"a": [guess], "b": [other]}, truth, strata, "b",
                                       rounds=300, within=within)
    alone = boot["a"]["ci"][1] - boot["a"]["ci"][0]
    paired = boot["a"]["diff_ci"][1] - boot["a"]["diff_ci"][0]
    assert alone > 0.15 and paired < alone / 5


def test_rankings_are_averaged_over_the_same_strata():
  # Stratum 2's networks share one cost: MACs have no tau there. The other ranking is
  # averaged over stratum 1 alone too, not over both.
  macs = np.array([1, 2, 3, 4, 5, 6, 7, 7, 7, 7, 7, 7], float)
  truth = np.array([[1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1]], float)
  strata = [np.arange(6), np.arange(6, 12)]
  guess = truth[0].copy()
  guess[6:] = -guess[6:]   # perfect in stratum 1, reversed in stratum 2
  boot = rank_stats.paired_bootstrap({"MACs": [macs], "guess": [guess]}, truth, strata,
                                     "MACs", rounds=50, within=True)
  assert boot["MACs"]["tau"] == pytest.approx(1.0)
  assert boot["guess"]["tau"] == pytest.approx(1.0) and boot["guess"]["diff"] == pytest.approx(0)
  # On its own, the guess averages over both strata.
  assert rank_stats.strata_tau(guess, truth[0], strata) == pytest.approx(0.0)
  assert np.isnan(rank_stats.stratum_taus(macs, truth[0], strata)[1])


def test_an_ensemble_is_scored_on_its_searches_mean_rank():
  rng = np.random.default_rng(3)
  truth = rng.normal(size=(2, 40))
  # Three searches, each the truth plus its own noise: averaging their ranks removes part of
  # the noise, so the ensemble ranks better than the searches do one by one.
  searches = truth.mean(0) + rng.normal(0, 1.0, size=(3, 40))
  assert rank_stats.ensemble_scores([[0.1, 0.5, 0.3], [3.0, 1.0, 2.0]]).tolist() == [2.0, 2.0, 2.0]
  strata = rank_stats.strata_of(np.arange(40), 2)
  boot = rank_stats.paired_bootstrap({"alone": searches, "together": searches,
                                      "MACs": [rng.normal(size=40)]}, truth, strata, "MACs",
                                     rounds=300, within=False, ensembles=["together"])
  mean_rank = np.mean([stats.rankdata(s) for s in searches], 0)
  assert boot["together"]["tau"] == pytest.approx(stats.kendalltau(mean_rank, truth.mean(0))[0])
  assert boot["alone"]["tau"] == pytest.approx(
      np.mean([stats.kendalltau(s, truth.mean(0))[0] for s in searches]))
  assert boot["together"]["tau"] > boot["alone"]["tau"] + 0.05
  assert boot["together"]["diff"] == pytest.approx(boot["together"]["tau"] - boot["MACs"]["tau"])
  low, high = boot["together"]["ci"]
  assert low < boot["together"]["tau"] < high


def test_noise_ceiling_is_each_seed_against_the_mean_of_the_others():
  rng = np.random.default_rng(2)
  rows = rng.normal(size=(3, 10))
  ceiling = rank_stats.noise_ceiling(rows)
  rest = [stats.kendalltau(rows[s], np.delete(rows, s, 0).mean(0))[0] for s in range(3)]
  pairs = [stats.kendalltau(rows[a], rows[b])[0] for a, b in ((0, 1), (0, 2), (1, 2))]
  assert ceiling == {"seeds": 3, "seed_vs_rest": pytest.approx(np.mean(rest)),
                     "seed_vs_seed": pytest.approx(np.mean(pairs))}
  assert rank_stats.noise_ceiling(rows[:1])["seed_vs_rest"] is None


def test_macs_tau_ranks_loss_by_fewer_macs():
  macs, top1, loss = [1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4], [0.9, 0.8, 0.85, 0.5]
  assert rank_stats.macs_tau(macs, top1, loss) == {
      "top1": pytest.approx(stats.kendalltau(macs, top1)[0]),
      "loss": pytest.approx(stats.kendalltau(-np.asarray(macs), loss)[0])}


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
