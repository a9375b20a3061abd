"""bench.throughput: the figures a GPU user reproduces, measured here on CPU."""

import pytest

from betanas_tf import data
from betanas_tf.bench import throughput


@pytest.mark.slow
def test_throughput_measures_every_step_kind_on_micro():
  results = throughput.measure("micro", None, 16, 7, 2, 5, "bfloat16", False, "default",
                               data.DataSource("digits"), 3)
  assert results["steps"] == 5            # whole executions of 5 Phase-1 steps
  assert results["retrain_arch"] == "k3e6-k3e6-k3e6"   # micro's costliest network
  assert results["replicas"] == 1 and results["input_size"] == 16
  for key in ("phase1_images_per_s_per_replica", "retrain_images_per_s_per_replica",
              "pipeline_images_per_s", "alpha_ms_per_step", "peak_rss_mb"):
    assert results[key] > 0, key
  assert results["phase1_peak_mb"] is None   # CPU: TensorFlow reports no device memory
  header, rule, row = throughput.table(results).splitlines()
  assert header.count("|") == rule.count("|") == row.count("|") == 13
  assert "| micro | 16 | 16 | 1 | bfloat16 | no / no |" in row
