"""The Fig 7 benchmark (`bench.branches`): what each reading trains, and a tiny run end to end
whose figures are recomputed here from the trainings' own files."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest
from scipy import stats

from betanas_tf import runner
from betanas_tf import spaces
from betanas_tf.bench import branches

FAR = ["conv1-conv1", "conv1-conv3", "conv3-conv1", "conv3-conv3"]


def test_a_space_restricted_to_some_ops_per_block():
  space = spaces.get_space("branches")
  assert space.size() == 16 and space.choice_blocks[0].labels == branches.OPS
  part = space.restricted([["conv7", "conv3"], ["conv1"]])
  assert [b.labels for b in part.choice_blocks] == [("conv3", "conv7"), ("conv1",)]
  assert part.choices_to_string((1, 0)) == "conv7-conv1" and part.size() == 2
  with pytest.raises(ValueError, match=r"block 1: op 'k3e3' is not a candidate here; valid: "
                                       r"conv1, conv3, conv5, conv7"):
    space.restricted([["conv1"], ["k3e3"]])
  with pytest.raises(ValueError, match="branches: ops name 1 blocks, the space has 2"):
    space.restricted([["conv1"]])


def test_each_reading_trains_its_tiles_for_s_2s_4s_and_shared_tiles_train_once():
  plan = branches.BranchesPlan(steps=100, seeds=(0,), experiments=("far", "close", "all16"))
  names = {t.name for t in branches.trainings(plan)}
  far = branches.EXPERIMENTS["far"][1]
  # (a) paths share: pairs with one block fixed at 2S, all four at 4S.
  assert far["paths"]["B2"] == [(("conv1",), ("conv1", "conv3")), (("conv3",), ("conv1", "conv3"))]
  assert far["paths"]["B4"] == [(("conv1", "conv3"), ("conv1", "conv3"))]
  # (b) branches per block: both candidates at 2S, those and conv5, conv7 at 4S.
  assert far["branches"]["B2"] == far["paths"]["B4"]
  assert far["branches"]["B4"] == [(branches.OPS, branches.OPS)]
  assert "conv1.conv3-conv1.conv3_s400_seed0" in names   # (a) B4
  assert "conv1.conv3-conv1.conv3_s200_seed0" in names   # (b) B2
  # all16: every path once per regime and reading.
  for reading in branches.READINGS:
    for regime, tiles in branches.EXPERIMENTS["all16"][1][reading].items():
      paths = [p for tile in tiles for p in branches._paths(*tile)]  # pylint: disable=protected-access
      assert sorted(paths) == sorted(branches._paths(branches.OPS, branches.OPS))  # pylint: disable=protected-access
  # (b)'s B4 is one supernet for far, close and all16 alike: trained once.
  assert sum(n.startswith("conv1.conv3.conv5.conv7-") for n in names) == 1
  # NS: 16 singles at S, the far four also at S/4, S/2, 2S for the plateau curve.
  singles = {n for n in names if n.count(".") == 0}
  assert len(singles) == 16 + 4 * 3
  with pytest.raises(ValueError, match="experiments must name some of far, close, all16, got fig8"):
    branches.BranchesPlan(experiments=("fig8",))


@pytest.mark.slow
def test_a_tiny_run_reports_what_its_trainings_scored(tmp_path, monkeypatch):
  plan = dataclasses.replace(branches.QUICK, steps=8, seeds=(0,))
  out = str(tmp_path / "b")
  result = branches.run(out, plan, log=lambda m: None, workers=2)
  far = result["experiments"]["far"]
  assert far["networks"] == FAR
  def read(name):
    return json.load(open(os.path.join(out, "trainings", name, "scores.json")))
  ns = [read(f"{a}-{b}_s8_seed0") for a, b in (n.split("-") for n in FAR)]
  truth = [s["eval"]["top1"][0] for s in ns]
  for reading, b2, b4 in (("paths", ["conv1-conv1.conv3_s16_seed0", "conv3-conv1.conv3_s16_seed0"],
                           ["conv1.conv3-conv1.conv3_s32_seed0"]),
                          ("branches", ["conv1.conv3-conv1.conv3_s16_seed0"],
                           ["conv1.conv3.conv5.conv7-conv1.conv3.conv5.conv7_s32_seed0"])):
    r = far["readings"][reading]
    assert r["top1"]["NS"]["mean"] == pytest.approx(truth)
    def regime(names, split):
      found = {}
      for name in names:
        s = read(name)
        found.update(zip(s["networks"], s[split]["top1"]))
      return np.array([found[n] for n in FAR])
    assert r["top1"]["B2"]["mean"] == pytest.approx(regime(b2, "eval").tolist())
    assert r["gap_b2_b4"]["per_seed"] == pytest.approx(
        [float((regime(b2, "eval") - regime(b4, "eval")).mean())])
    expected = stats.kendalltau(regime(b4, "arch"), truth)[0]
    assert r["tau"]["B4"]["per_seed"] == pytest.approx([expected], nan_ok=True)
    for value in r["top1"]["B4"]["mean"]:
      assert 0.0 <= value <= 1.0
  # Each training searched its tile of the space, and says so in its run.json.
  run = json.load(open(os.path.join(out, "trainings", "conv1-conv1.conv3_s16_seed0", "run.json")))
  assert run["ops"] == [["conv1"], ["conv1", "conv3"]] and run["engine"]["max_steps"] == 16
  assert [c["steps"] for c in result["plateau"]["curve"]] == [8, 8, 8, 16]
  for path in result["figures"]:
    assert os.path.getsize(path) > 10_000
  assert "B2 − B4 top-1" in open(os.path.join(out, "report.md")).read()
  # A rerun reads every training instead of training it again.
  monkeypatch.setattr(runner.SearchRun, "run", lambda self: pytest.fail("trained again"))
  again = branches.run(out, plan, log=lambda m: None, workers=1)
  assert json.dumps(again["experiments"], sort_keys=True) == json.dumps(result["experiments"],
                                                                       sort_keys=True)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
