"""Drop schedules: what each removes after an alpha step, on tensors whose answer is known,
and a schedule registered in this file alone reaching a real search."""

import dataclasses
import sys

import numpy as np
import pytest
import tensorflow as tf

from betanas_tf import arch_params as ap
from betanas_tf import drop_schedules
from betanas_tf import engine

# Two blocks of 4 candidates; block 1's last op is already gone.
ALPHA = np.array([[2.0, 0.0, -3.0, -2.5], [1.0, 1.2, -4.0, 0.0]], np.float32)
ACTIVE = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], np.float32)


def _dropped(name, step=10, **changes):
  config = dataclasses.replace(engine.EngineConfig(drop_warmup_steps=5), drop_schedule=name,
                               **changes)
  schedule = drop_schedules.DROP_SCHEDULES.get(name)
  return schedule.dropped(ALPHA, ACTIVE, tf.constant(step, tf.int64), config).numpy()


def test_threshold_is_the_drop_rule_after_the_warm_up():
  expected = ap.drop_mask(ALPHA, ACTIVE, "prob", 0.3).numpy()
  # p < 0.3 / 4 in block 0: ops 2 and 3 (p 0.005, 0.009); block 1: op 2 (p 0.003 < 0.1).
  assert expected.tolist() == [[0, 0, 1, 1], [0, 0, 1, 0]]
  assert _dropped("threshold").tolist() == expected.tolist()
  assert _dropped("threshold", step=4).sum() == 0


def test_top_k_keeps_each_blocks_k_most_probable_active_ops():
  assert _dropped("top_k", drop_keep=2).tolist() == [[0, 0, 1, 1], [0, 0, 1, 0]]
  assert _dropped("top_k", drop_keep=3).tolist() == [[0, 0, 1, 0], [0, 0, 0, 0]]
  assert _dropped("top_k", drop_keep=1).tolist() == [[0, 1, 1, 1], [1, 0, 1, 0]]
  assert _dropped("top_k", step=4, drop_keep=1).sum() == 0


def test_gradual_drops_only_the_weakest_the_rule_condemns_per_block():
  # Block 0: ops 2 and 3 are below the rule, op 2 is the weaker; block 1: op 2.
  assert _dropped("gradual").tolist() == [[0, 0, 1, 0], [0, 0, 1, 0]]
  assert _dropped("gradual", step=4).sum() == 0


def test_an_unknown_schedule_is_named_with_the_valid_ones():
  with pytest.raises(ValueError, match="--drop_schedule must be one of gradual, threshold, top_k, "
                                       "got 'soon'"):
    engine.EngineConfig(drop_schedule="soon")
  with pytest.raises(ValueError, match="drop_keep"):
    engine.EngineConfig(drop_keep=0)


class KeepFirst(drop_schedules.DropSchedule):
  """A toy schedule: every op but the first leaves at the first alpha step after warm-up."""
  name = "keep_first"

  def dropped(self, alpha, active, step, config):
    keep = tf.one_hot(tf.zeros(tf.shape(alpha)[:1], tf.int32), tf.shape(alpha)[1])
    return (1.0 - keep) * tf.convert_to_tensor(active, tf.float32) * self.due(step, config)


@pytest.fixture
def keep_first_registered():
  drop_schedules.DROP_SCHEDULES.register(KeepFirst.name, KeepFirst())
  yield
  drop_schedules.DROP_SCHEDULES.unregister(KeepFirst.name)


def test_a_schedule_registered_in_its_own_file_runs_in_a_search(tmp_path, keep_first_registered):
  from betanas_tf import data, policies, runner  # pylint: disable=import-outside-toplevel
  config = dataclasses.replace(engine.demo_config(24, 0), drop_schedule="keep_first",
                               drop_warmup_steps=12)
  settings = runner.RunSettings(out_dir=str(tmp_path / "s"), space="micro",
                                dataset=data.DataSource("digits"), progress=False)
  summary = runner.SearchRun(settings, policies.POLICIES.get("betanas"), config).run()
  # Every block keeps only its first op, dropped at the first alpha step at or after step 12.
  assert summary["choices_string"] == "k3e3-k3e3-k3e3"
  steps = {d["step"] for d in summary["drops"]}
  assert len(steps) == 1 and 12 <= steps.pop() < 16
  assert [list(map(bool, row)) for row in summary["active"]] == [
      [True] + [False] * (len(row) - 1) for row in summary["active"]]


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
