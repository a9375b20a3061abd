"""The family benchmark: its analysis on known numbers, and the quick plan end to end."""

import json
import os
import sys

import numpy as np
import pytest

from betanas_tf.bench import family as family_bench


def test_analysis_pairs_each_pick_with_what_it_is_compared_with_on_the_same_seed():
  # Two search seeds, three training seeds; truths chosen so every difference is known.
  truth = {"a": [0.80, 0.81, 0.82], "b": [0.70, 0.71, 0.72], "c": [0.75, 0.75, 0.75],
           "big1": [0.60, 0.60, 0.60], "big2": [0.70, 0.70, 0.70], "r0": [0.5, 0.5, 0.5],
           "r1": [0.6, 0.6, 0.6], "best": [0.9, 0.9, 0.9]}
  records = [{"post_hoc": {"t": "a"}, "in_search": {"t": "b"}, "separate": {"t": "c"}},
             {"post_hoc": {"t": "b"}, "in_search": {"t": "b"}, "separate": {"t": "c"}}]
  base = {"t": {"biggest": ["big1", "big2"], "random": ["r0", "r1"]}}
  result = family_bench.analyse(records, truth, base, {"t": truth["best"]}, rounds=200)["t"]
  assert result["truth"]["post_hoc"] == pytest.approx(0.76)
  post_hoc = result["post_hoc"]
  assert post_hoc["separate"]["mean"] == pytest.approx(0.01)
  assert post_hoc["separate"]["per_seed"] == pytest.approx([0.06, -0.04])
  assert post_hoc["biggest"]["mean"] == pytest.approx(0.76 - 0.65)
  assert post_hoc["random"]["per_seed"] == pytest.approx([0.31, 0.11])
  assert post_hoc["oracle"]["mean"] == pytest.approx(0.76 - 0.9)
  assert result["in_search"]["separate"]["mean"] == pytest.approx(-0.04)
  low, high = post_hoc["separate"]["ci"]   # two seeds of +0.06 and -0.04: it spans 0
  assert low < 0 < 0.01 < high and high - low < 0.15


def test_costs_are_ratios_to_one_separate_search():
  records = [{"seconds": {"spos_search": 100.0, "specialise": 20.0, "in_search": 130.0,
                          "separate_a": 90.0, "separate_b": 110.0}, "added_target_seconds": 9.0},
             {"seconds": {"spos_search": 120.0, "specialise": 40.0, "in_search": 150.0,
                          "separate_a": 100.0, "separate_b": 100.0}, "added_target_seconds": 11.0}]
  c = family_bench.costs(records)
  assert c["one_separate_search_s"] == 100.0 and c["separate_searches_s"] == 200.0
  assert c["post_hoc_ratio"] == pytest.approx(1.4) and c["in_search_ratio"] == pytest.approx(1.4)
  assert c["added_target_s"] == [9.0, 11.0]


@pytest.mark.slow
def test_the_quick_plan_end_to_end_and_cached(tmp_path):
  out = str(tmp_path / "family")
  plan = family_bench.QUICK.__class__(**{**family_bench.QUICK.__dict__, "search_seeds": (0,)})
  result = family_bench.run(out, plan, log=lambda m: None)
  [record] = result["records"]
  names = [t.name for t in family_bench.targets_of(plan, plan.quantiles)]
  for key in ("post_hoc", "in_search", "separate"):
    assert sorted(record[key]) == sorted(names)
  searches = sorted(os.listdir(os.path.join(out, "searches")))
  assert searches == sorted(["spos_seed0", "betanas_family_seed0"]
                            + [f"betanas_{n}_seed0" for n in names])
  # The added target was specialised from the cache: only its own proposals scored.
  assert 0 < record["added_target_new_scores"] <= plan.specialise.initial + plan.specialise.per_round
  with open(os.path.join(out, "families", "post_hoc_seed0", "family.json")) as handle:
    assert len(json.load(handle)["members"]) == len(plan.quantiles) + 1
  assert result["costs"]["post_hoc_ratio"] > 0 and "selection" not in result
  with open(os.path.join(out, "report.md")) as handle:
    assert "A target added to a finished family" in handle.read()
  # A rerun reads every stage from disk.
  assert family_bench.run(out, plan, log=lambda m: pytest.fail(m))["records"] == [record]


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
