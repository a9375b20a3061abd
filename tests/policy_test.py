"""A search strategy is a policy of registered parts: a toy one, added from this file alone,
runs through the engine and the runner."""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from betanas_tf import cost
from betanas_tf import engine
from betanas_tf import policies
from betanas_tf import runner
from betanas_tf import selection
from betanas_tf import spaces


@pytest.fixture
def toy_policy():
  """A toy strategy in the registries for one test (other tests in the same process list
  the registered strategies): Phase 1 trains the last op of every block; the result is
  each block's cheapest op."""
  policies.SAMPLERS.register("last_op", lambda arch, seed, step: tf.constant(
      arch.num_candidates - 1, tf.int32))
  selection.SELECTORS.register("cheapest", lambda ctx: (tuple(
      int(np.argmin(row[:n])) for row, n in zip(ctx.cost_table, ctx.num_candidates)), {"toy": 1}))
  yield policies.POLICIES.register("toy", policies.Policy("toy", "last_op", False, False, "cheapest"))
  policies.POLICIES.unregister("toy")
  selection.SELECTORS.unregister("cheapest")
  policies.SAMPLERS.unregister("last_op")


def test_a_toy_strategy_runs_through_the_engine_and_the_runner(tmp_path, toy_policy):
  policy = toy_policy
  space = spaces.get_space("micro")
  out = str(tmp_path / "toy")
  settings = runner.RunSettings(out_dir=out, space="micro", checkpoint_every=6, log_every=3,
                                eval_batches=1, calibration_batches=1, progress=False)
  config = engine.EngineConfig(batch_size=16, arch_batch_size=16, max_steps=6, lr=0.05)
  summary = runner.SearchRun(settings, policy, config).run()
  last = [b.num_candidates - 1 for b in space.choice_blocks]
  counts = np.array(summary["counts"])
  for l, n in enumerate(last):
    assert counts[l, n] == 6 and counts[l].sum() == 6   # only the sampler's op trained
  table = cost.macs_cost_table(space).table
  cheapest = [int(np.argmin(row[:n + 1])) for row, n in zip(table, last)]
  assert summary["choices"] == cheapest and summary["toy"] == 1
  assert summary["strategy"] == "toy" and summary["supernet_top1_arch_split"] is not None
  identity = json.load(open(os.path.join(out, "run.json")))
  assert identity["policy"] == {"name": "toy", "phase1": "last_op", "phase2": False,
                                "drop": False, "selection": "cheapest"}


def test_a_registered_strategy_is_one_of_the_rank_benchmarks_choices(toy_policy):
  from betanas_tf.bench import rank  # pylint: disable=import-outside-toplevel
  assert toy_policy.name == "toy"
  assert rank.strategies() == {
      "betanas": ("betanas", {}), "betanas_nodrop": ("betanas", {"drop": False}),
      "betanas_nobalanced": ("betanas", {"balanced": False}),
      "betanas_fair": ("betanas", {"fair": True}), "proxyless": ("proxyless", {}),
      "spos": ("spos", {}), "spos_fair": ("spos", {"fair": True}), "toy": ("toy", {})}
  assert rank.RankPlan(strategies=("toy",), selection_strategies=("toy",)).strategies == ("toy",)
  with pytest.raises(ValueError, match="^unknown strategy 'random'; known: betanas, "):
    rank.RankPlan(strategies=("random",))   # random search trains no supernet to rank with


def test_unknown_parts_are_named():
  with pytest.raises(ValueError, match="^phase1 must be one of .*uniform_active.*, got 'zigzag'$"):
    policies.Policy("x", "zigzag", False, False, "evolution")
  with pytest.raises(ValueError, match="^selection must be one of argmax, .*, got 'vote'$"):
    policies.Policy("x", "uniform_all", False, False, "vote")


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
