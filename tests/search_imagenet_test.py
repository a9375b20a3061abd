"""The search through the real ImageNet path: the ILSVRC2012 tars users download, prepared
offline by tensorflow-datasets' own builder, searched end to end, killed and resumed."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import kill_support

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(data_dir, out_dir):
  # The micro space's 16x16 input: every image is cropped, decoded and resized to 16x16.
  return [sys.executable, "-m", "betanas_tf.search", f"--out_dir={out_dir}", "--space=micro",
          "--dataset=imagenet2012", f"--data_dir={data_dir}", "--arch_split_size=50",
          "--batch_size=8", "--arch_batch_size=8", "--max_steps=30", "--arch_update_every=2",
          "--arch_warmup_steps=4", "--arch_lr=0.05", "--beta=0.5", "--drop_warmup_steps=8",
          "--drop_threshold=0.6", "--checkpoint_every=10", "--log_every=10", "--eval_batches=2",
          "--calibration_batches=2", "--noprogress", "--deterministic"]


def _summary(out_dir):
  with open(os.path.join(out_dir, "summary.json")) as handle:
    return json.load(handle)


@pytest.mark.slow
def test_imagenet_search_killed_and_resumed_equals_uninterrupted(tmp_path, tiny_imagenet):
  env = dict(os.environ, PYTHONPATH=ROOT)
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  result = subprocess.run(_command(tiny_imagenet, straight), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ("summary.json", "arch.json", "figures/trajectories.png",
               "figures/training_frequency.png", "figures/architecture.png"):
    assert os.path.getsize(os.path.join(straight, name)) > 0, name
  summary = _summary(straight)
  assert summary["dataset"] == "imagenet2012" and summary["steps"] == 30
  assert 0.0 <= summary["supernet_top1_arch_split"] <= 1.0
  assert np.array(summary["counts"]).sum() == 30 * 3

  kill_support.kill_at_checkpoint(_command(tiny_imagenet, killed), ROOT, env, killed, 20)
  resumed = subprocess.run(_command(tiny_imagenet, killed), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=400)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  after = _summary(killed)
  start = after["resumed_from_step"]
  assert start in (20, 30)
  if start == 20:
    # The restore positions both streams by skipping encoded records of ONE group (one
    # record file here), never by replaying the run: train position 20 * 8 = 160 records
    # is record 10 of the second epoch of 150; the arch split (50 records) is at alpha
    # step 20 // 2 - 4 // 2 = 8, i.e. record 64 = record 14 of its second epoch.
    assert after["resume_records_skipped"] == {"train@worker:0": 10, "arch@worker:0": 14}
  assert open(os.path.join(straight, "arch.json")).read() == open(os.path.join(killed, "arch.json")).read()
  np.testing.assert_allclose(after["alpha"], summary["alpha"], atol=1e-6)
  assert after["counts"] == summary["counts"] and after["drops"] == summary["drops"]
  kill_support.assert_same_supernet_weights(straight, killed)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
