"""A family from one supernet: targets, the accuracy predictor, specialisation against brute
force, and the search / family programs end to end."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from betanas_tf import cost as cost_lib
from betanas_tf import selection
from betanas_tf import spaces
from betanas_tf import specialise
from betanas_tf import targets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- targets ------------------------------------------------------------------------------

def test_targets_parse_name_and_print_themselves(tmp_path):
  table = tmp_path / "host cpu.json"
  table.write_text("{}")
  found = targets.parse_targets(["macs:150e6", f"latency:{table}:80", "macs:2.5e6"])
  assert [t.kind for t in found] == ["macs", "latency", "macs"]
  assert [t.bound for t in found] == [150e6, 80.0, 2.5e6]
  assert [t.name for t in found] == ["macs_150M", "latency_host_cpu_80ms", "macs_2.5M"]
  assert [str(t) for t in found] == ["macs:150000000", f"latency:{table}:80", "macs:2500000"]
  assert all(targets.Target.parse(str(t)) == t for t in found)
  odd = targets.Target("macs", 8547264.0)
  assert str(odd) == "macs:8547264" and targets.Target.parse(str(odd)) == odd
  assert targets.Target.parse(str(targets.Target("macs", 1 / 3))).bound == 1 / 3
  assert found[1].unit == "ms" and found[0].unit == "MACs"


@pytest.mark.parametrize("texts, message", [
    (["flops:3"], "target 'flops:3' is not macs:BOUND or latency:TABLE.json:BOUND_MS"),
    (["macs:lots"], "target 'macs:lots' is not macs:BOUND"),
    (["latency:80"], "target 'latency:80' is not macs:BOUND"),
    (["latency:nowhere.json:80"], "target 'latency:nowhere.json:80': latency table nowhere.json "
                                  "does not exist"),
    (["macs:0"], "target macs: the bound must be > 0, got 0.0"),
    (["macs:nan"], "target macs: the bound must be > 0, got nan"),
    (["macs:1e6", "macs:1000000"], "--targets names macs_1M more than once"),
    ([], "--targets is empty"),
])
def test_bad_targets_are_one_clear_error(texts, message):
  with pytest.raises(ValueError) as error:
    targets.parse_targets(texts)
  assert str(error.value).startswith(message), str(error.value)


def test_a_macs_target_gives_the_spaces_macs_table():
  space = spaces.get_space("micro")
  table = targets.Target.parse("macs:1.2e6").cost_table(space)
  choices = (1, 2, 0)
  assert table.of_choices(choices) * 1e6 == pytest.approx(
      cost_lib.space_costs(space).of_choices(choices).macs)
  assert table.unit == "MMACs" and table.target == 1.2


# ---- the predictor and the specialisation, on a score known exactly ---------------------

def _toy(seed=0, blocks=4, width=4, interaction=0.0):
  """A space of `blocks` x `width` ops, additive integer costs, and a score that is
  additive plus `interaction` times a pairwise term."""
  rng = np.random.default_rng(seed)
  num_candidates = [width] * blocks
  costs = rng.integers(1, 10, (blocks, width)).astype(float)
  gains = rng.normal(size=(blocks, width))
  pair = rng.normal(size=(width, width))
  def score(c):
    return float(sum(gains[l, m] for l, m in enumerate(c)) + interaction * pair[c[0], c[1]])
  cost = lambda c: 2.0 + sum(costs[l, m] for l, m in enumerate(c))
  return num_candidates, costs, score, cost


def _bound(name, cost, costs, bound):
  return specialise.Bound(name, cost, bound, costs, 2.0)


def test_the_predictor_is_exact_on_an_additive_score():
  num_candidates, _, score, _ = _toy()
  paths = list(itertools.product(*[range(n) for n in num_candidates]))
  rng = np.random.default_rng(1)
  seen = [paths[i] for i in rng.choice(len(paths), 60, replace=False)]
  predictor = specialise.AccuracyPredictor(num_candidates, ridge=1e-9).fit(seen, [score(c) for c in seen])
  errors = [abs(predictor.predict(c) - score(c)) for c in paths]
  assert max(errors) < 1e-6
  assert predictor.cross_validated_tau(seen, [score(c) for c in seen]) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["predictor", "evolution"])
def test_specialise_finds_the_best_network_within_every_bound(method):
  num_candidates, costs, score, cost = _toy(interaction=0.05)
  paths = list(itertools.product(*[range(n) for n in num_candidates]))
  quantiles = np.quantile([cost(c) for c in paths], [0.25, 0.5, 0.75])
  bounds = [_bound(f"b{k}", cost, costs, q) for k, q in enumerate(quantiles)]
  calls = []
  def score_many(todo):
    calls.append(list(todo))
    return [score(c) for c in todo]
  config = specialise.SpecialiseConfig(method=method, initial=8, rounds=3, per_round=3,
                                       population=12, generations=6)
  result = specialise.specialise(num_candidates, bounds, score_many, config)
  scored = [c for batch in calls for c in batch]
  assert len(scored) == len(set(scored)) == result["new_scores"] < len(paths) / 2
  for bound in bounds:
    best = max(score(c) for c in paths if cost(c) <= bound.bound)
    pick = result["picks"][bound.name]
    assert cost(pick) <= bound.bound
    if method == "predictor":   # nearly additive: the predictor's proposals hold the optimum
      assert score(pick) == pytest.approx(best)
    else:                       # the best of what the evolution scored within the bound
      assert score(pick) == max(score(c) for c in scored if cost(c) <= bound.bound)


def test_a_new_target_reuses_every_score_and_scores_only_its_own_proposals():
  num_candidates, costs, score, cost = _toy(interaction=0.05)
  config = specialise.SpecialiseConfig(initial=8, rounds=2, per_round=3)
  first = specialise.specialise(num_candidates, [_bound("a", cost, costs, 20.0)],
                                lambda todo: [score(c) for c in todo], config)
  asked = []
  second = specialise.specialise(
      num_candidates, [_bound("a", cost, costs, 20.0), _bound("b", cost, costs, 26.0)],
      lambda todo: asked.extend(todo) or [score(c) for c in todo], config, scored=first["scored"])
  assert not set(asked) & set(first["scored"])
  assert second["new_scores"] == len(asked) <= config.initial + config.rounds * 2 * config.per_round
  assert second["picks"]["a"] == first["picks"]["a"] or (
      score(second["picks"]["a"]) > score(first["picks"]["a"]))


def test_an_impossible_bound_is_an_error_before_anything_is_scored():
  num_candidates, costs, score, cost = _toy()
  with pytest.raises(selection.BudgetError, match="the cheapest costs"):
    specialise.specialise(num_candidates, [_bound("a", cost, costs, 20.0),
                                           _bound("tiny", cost, costs, 3.0)],
                          lambda todo: pytest.fail("scored"), specialise.SpecialiseConfig())


class _FinishedRun:
  """What `family.specialise_run` reads of a restored search (`runner.SearchRun`), with an
  additive score in place of a trained supernet's: the caching under test is the same."""

  def __init__(self, out, stop_after=None):
    self.space = spaces.get_space("micro")
    self.out, self.strategy, self.stop_after, self.calls = out, None, stop_after, 0
    self.config = type("Config", (), {"se_ratio": 0.0, "max_steps": 16})()
    self.policy = type("Policy", (), {"name": "spos"})()
    valid = np.zeros((3, 7), bool)
    for l, block in enumerate(self.space.choice_blocks):
      valid[l, :block.num_candidates] = True
    self.engine = type("Engine", (), {"arch": type("Arch", (), {
        "valid": valid, "active_np": lambda _self: valid})()})()

  def stop_point(self, where):
    if self.stop_after is not None and self.calls >= self.stop_after:
      raise KeyboardInterrupt(where)

  def scoring_digest(self, split):
    return f"digest-{split}"

  def score_paths(self, choices_list, split):
    self.calls += 1
    return [{"top1": 0.5 + 0.01 * sum((l + 1) * c for l, c in enumerate(choices))}
            for choices in choices_list]


def test_a_stopped_specialisation_keeps_every_round_and_a_rerun_scores_only_the_rest(tmp_path):
  from betanas_tf import family  # pylint: disable=import-outside-toplevel
  config = specialise.SpecialiseConfig(initial=6, rounds=2, per_round=2)
  wanted = [*targets.parse_targets(["macs:1.2e6", "macs:1.6e6"])]
  whole = family.specialise_run(_FinishedRun("s"), wanted, str(tmp_path / "whole"), config,
                                log=lambda _: None)
  out = str(tmp_path / "stopped")
  with pytest.raises(KeyboardInterrupt, match="during specialisation"):
    family.specialise_run(_FinishedRun("s", stop_after=2), wanted, out, config, log=lambda _: None)
  assert not os.path.exists(os.path.join(out, "family.json"))
  with open(os.path.join(out, "scores.json")) as handle:
    kept = json.load(handle)
  assert kept["scoring_digest"] == "digest-arch" and 0 < len(kept["archs"]) < whole["scored_networks"]
  resumed = family.specialise_run(_FinishedRun("s"), wanted, out, config, log=lambda _: None)
  # The rerun scores none of the kept networks again: the random start is complete, only
  # the predictor's rounds run.
  assert resumed["scored_networks"] == len(kept["archs"]) + resumed["new_scores"]
  assert 0 < resumed["new_scores"] <= config.rounds * len(wanted) * config.per_round
  with open(os.path.join(out, "scores.json")) as handle:
    final = json.load(handle)
  assert set(kept["archs"]) < set(final["archs"]) and len(final["archs"]) == resumed["scored_networks"]


def test_workers_whose_caches_differ_all_score_from_scratch(tmp_path, monkeypatch):
  from betanas_tf import distribution  # pylint: disable=import-outside-toplevel
  from betanas_tf import family  # pylint: disable=import-outside-toplevel
  config = specialise.SpecialiseConfig(initial=6, rounds=1, per_round=2)
  wanted = list(targets.parse_targets(["macs:1.2e6"]))
  out = str(tmp_path / "family")
  first = family.specialise_run(_FinishedRun("s"), wanted, out, config, log=lambda _: None)
  again = family.specialise_run(_FinishedRun("s"), wanted, out, config, log=lambda _: None)
  assert again["new_scores"] == 0
  # Another worker read other files: its fingerprint differs from this one's.
  monkeypatch.setattr(distribution, "gather_from_workers", lambda _strategy, mine: [mine, mine + 1])
  lines = []
  apart = family.specialise_run(_FinishedRun("s"), wanted, out, config, log=lines.append)
  assert ("the workers read different cached scores or family members; every worker scores "
          "from scratch") in lines
  assert apart["new_scores"] == apart["scored_networks"] == first["scored_networks"]


def test_best_additive_within_budget_matches_brute_force():
  rng = np.random.default_rng(3)
  for _ in range(50):
    num_candidates, costs, _, cost = _toy(int(rng.integers(1000)), blocks=4, width=3)
    utility = rng.normal(size=costs.shape)
    paths = list(itertools.product(*[range(n) for n in num_candidates]))
    budget = float(np.quantile([cost(c) for c in paths], rng.uniform(0.1, 0.9)))
    value = lambda c: sum(utility[l, m] for l, m in enumerate(c))
    best = max(value(c) for c in paths if cost(c) <= budget)
    chosen = selection.best_additive_within_budget(utility, costs, 2.0, budget, num_candidates)
    assert cost(chosen) <= budget and value(chosen) == pytest.approx(best)


# ---- the programs ---------------------------------------------------------------------------

SEARCH = ["--space=micro", "--dataset=digits", "--batch_size=32", "--arch_batch_size=32",
          "--max_steps=16", "--eval_batches=2", "--calibration_batches=2", "--noprogress",
          "--evolution_population=4", "--evolution_generations=1"]
SMALL_SPECIALISE = ["--specialise_initial=4", "--specialise_rounds=1", "--specialise_per_round=2"]


def _python(*args, timeout=300):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _host_table(path):
  """A real host latency table of micro, timed briefly."""
  from betanas_tf.latency import measure  # pylint: disable=import-outside-toplevel
  from betanas_tf.latency import timers  # pylint: disable=import-outside-toplevel
  from betanas_tf.latency import timing  # pylint: disable=import-outside-toplevel
  timer = timers.HostTimer(plan=timing.TimingPlan(invocations=3, warmup=1, min_rounds=3,
                                                  max_rounds=3))
  return measure.build_table(spaces.get_space("micro"), timer, path, progress=False)


@pytest.mark.slow
def test_search_with_targets_then_a_target_added_later_and_the_family_exported(tmp_path):
  out = str(tmp_path / "spos")
  result = _python("betanas_tf.search", f"--out_dir={out}", *SEARCH, "--strategy=spos",
                   "--targets=macs:1.0e6,macs:1.6e6", *SMALL_SPECIALISE)
  assert result.returncode == 0, result.stderr[-3000:]
  family_dir = os.path.join(out, "family")
  with open(os.path.join(family_dir, "family.json")) as handle:
    family = json.load(handle)
  space = spaces.get_space("micro")
  macs = cost_lib.space_costs(space)
  assert [m["name"] for m in family["members"]] == ["macs_1M", "macs_1.6M"]
  with open(os.path.join(family_dir, "scores.json")) as handle:
    scores = json.load(handle)
  assert family["scored_networks"] == len(scores["archs"]) == family["new_scores"] <= 4 * 2 + 2 * 2
  for member in family["members"]:
    choices = tuple(member["choices"])
    assert member["macs"] == macs.of_choices(choices).macs <= member["bound"]
    assert member["meets_bound"] is True and member["costs"] == {"macs": member["macs"]}
    # The pick is the best supernet score within its bound among the networks scored.
    within = [s for a, s in zip(scores["archs"], scores["top1"])
              if macs.of_choices(space.choices_from_string(a)).macs <= member["bound"]]
    assert member["supernet_top1"] == max(within)
    with open(os.path.join(family_dir, member["name"], "arch.json")) as handle:
      saved = json.load(handle)
    assert saved == json.loads(space.arch_from_choices(
        choices, name=f"micro_{member['name']}").to_json())
  assert os.path.getsize(os.path.join(family_dir, "family.png")) > 10_000
  assert f"family of 2 in {family_dir}" in result.stdout

  # A latency target added later, under a host table of the space: the cached scores
  # serve, the old targets' picks stay.
  table_path = str(tmp_path / "micro_host.json")
  table = _host_table(table_path)
  predicted = sorted(table.predict(space.arch_from_choices(c)) for c in space.enumerate())
  bound = round(predicted[len(predicted) * 3 // 4], 4)
  result = _python("betanas_tf.family", f"--search_dir={out}", "--out_dir=" + family_dir,
                   f"--targets=macs:1.0e6,macs:1.6e6,latency:{table_path}:{bound}",
                   *SMALL_SPECIALISE)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(family_dir, "family.json")) as handle:
    grown = json.load(handle)
  assert [m["choices"] for m in grown["members"][:2]] == [m["choices"] for m in family["members"]]
  assert grown["scored_networks"] == family["scored_networks"] + grown["new_scores"]
  assert grown["new_scores"] <= 4 + 2
  fast = grown["members"][2]
  assert fast["name"] == f"latency_micro_host_{bound:g}ms" and fast["unit"] == "ms"
  arch = space.arch_from_choices(fast["choices"])
  assert fast["cost"] == pytest.approx(table.predict(arch)) and fast["cost"] <= bound
  assert fast["costs"]["macs"] == fast["macs"]
  assert set(grown["members"][0]["costs"]) == {"macs", f"latency:{table_path}"}

  # The whole family to TFLite: each pick timed, the latency pick's bound checked.
  exported = str(tmp_path / "export")
  result = subprocess.run([sys.executable, os.path.join(ROOT, "export", "to_tflite.py"),
                           f"--family={family_dir}", f"--out_dir={exported}", "--quantize=fp32",
                           "--dataset=digits", "--runs=5", "--warmup_runs=1"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                          text=True, timeout=600)
  with open(os.path.join(exported, "family_report.json")) as handle:
    report = json.load(handle)
  assert [r["name"] for r in report["members"]] == [m["name"] for m in grown["members"]]
  for row in report["members"]:
    assert os.path.exists(os.path.join(exported, row["name"], f"{row['name']}_fp32.tflite"))
    assert row["formats"]["fp32"]["host_median_ms"] > 0 and row["weights"] is None
    [compared] = row["formats"]["fp32"]["tables"]
    assert compared["table"] == table_path and compared["error_pct"] is not None
  check = report["members"][2]["bound_check"]
  error = table.validation["mean_abs_error_pct"] if table.validation else 0.0
  assert check["allowed_ms"] == pytest.approx(bound * (1 + error / 100))
  assert check["measured_ms"] == report["members"][2]["formats"]["fp32"]["host_median_ms"]
  assert result.returncode == (0 if check["met"] else 1), result.stderr[-2000:]



@pytest.mark.slow
def test_an_in_search_family_and_the_refusals(tmp_path):
  # Post hoc on a search that drops ops is refused, one line, exit 1, nothing written.
  betanas = str(tmp_path / "betanas")
  result = _python("betanas_tf.search", f"--out_dir={betanas}", *SEARCH, "--targets=macs:1e6")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "search: error: --family=post_hoc specialises the supernet after the search, and "
      "betanas's selective drop leaves dropped ops with the weights they had then: use "
      "--strategy=spos, --nodrop, or --family=in_search")
  assert not os.path.exists(betanas)
  result = _python("betanas_tf.search", f"--out_dir={betanas}", *SEARCH, "--strategy=spos",
                   "--targets=macs:1e6", "--family=in_search")
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
      "search: error: an in-search family needs Phase 2 (one alpha per target); spos has none: "
      "specialise its supernet after the search (--family=post_hoc)")

  # In the search: one alpha per target, each pick within its bound, the first the result.
  result = _python("betanas_tf.search", f"--out_dir={betanas}", *SEARCH, "--arch_update_every=2",
                   "--arch_warmup_steps=4", "--arch_lr=0.05", "--beta=0.5",
                   "--drop_warmup_steps=8", "--drop_threshold=0.6", "--family=in_search",
                   "--targets=macs:1.0e6,macs:2.0e6")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(betanas, "family", "family.json")) as handle:
    family = json.load(handle)
  with open(os.path.join(betanas, "summary.json")) as handle:
    summary = json.load(handle)
  with open(os.path.join(betanas, "run.json")) as handle:
    assert json.load(handle)["targets"] == ["macs:1000000", "macs:2000000"]
  assert family["method"] == "in_search" and len(family["members"]) == 2
  assert summary["choices"] == family["members"][0]["choices"]
  assert summary["family"] == {m["name"]: m["choices_string"] for m in family["members"]}
  for member in family["members"]:
    assert member["meets_bound"] is True and member["macs"] <= member["bound"]
    active = np.array(member["active"], bool)
    assert all(active[l, c] for l, c in enumerate(member["choices"]))   # never a dropped op
    assert len(member["drops"]) == int((~active).sum()) - 1   # micro pads one slot (3 ops)
  # An op leaves Phase 1 only when both targets dropped it.
  both = np.logical_and(*[~np.array(m["active"], bool) for m in family["members"]])
  union = np.array(summary["active"], bool)
  assert np.array_equal(~union, both)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
