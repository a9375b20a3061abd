"""Latency tables: the real Pixel-1 table, keys, prediction, building and validating on the host."""

import dataclasses
import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
import yaml

from betanas_tf import builder
from betanas_tf.latency import compare as latency_compare
from betanas_tf.latency import fitting
from betanas_tf.latency import measure as latency
from betanas_tf.latency import table as latency_table
from betanas_tf.latency import timers as latency_timers
from betanas_tf import references
from betanas_tf import spaces
from betanas_tf.latency import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIXEL1_YAML = os.path.join(ROOT, "tests", "data", "pixel1_latency_proxyless.yaml")
PIXEL1_JSON = os.path.join(ROOT, "configs", "pixel1_latency.json")


@pytest.fixture(scope="module")
def pixel1():
  return latency_table.import_proxyless_yaml(PIXEL1_YAML)


def test_pixel1_table_covers_every_choice_of_proxyless_mobile(pixel1):
  assert len(pixel1.entries) == 72
  space = spaces.get_space("proxyless_mobile")
  keys = latency_table.space_keys(space)
  assert len(keys) == 70 and pixel1.missing(keys) == []
  raw = yaml.safe_load(open(PIXEL1_YAML))
  stem = "Conv-input:224x224x3-output:112x112x32"
  assert pixel1.entries[stem]["mean"] == raw[stem]["mean"] and pixel1.entries[stem]["count"] == 982
  assert pixel1.entries[stem]["std"] == pytest.approx(np.sqrt(raw[stem]["var"]))
  # The bundled JSON is this very table converted.
  assert latency_table.LatencyTable.load(PIXEL1_JSON).entries == pixel1.entries


def test_identity_costs_nothing_and_all_k3e3_sum(pixel1):
  space = spaces.get_space("proxyless_mobile")
  raw = yaml.safe_load(open(PIXEL1_YAML))
  k3e3 = references.uniform(space, "k3e3")
  # Independent sum straight from the YAML file, keys written out from the space's shapes.
  expected = raw["Conv-input:224x224x3-output:112x112x32"]["mean"]
  expected += raw["expanded_conv-input:112x112x32-output:112x112x16-expand:1-kernel:3-stride:1-idskip:0"]["mean"]
  for shape, block in zip(k3e3.block_shapes()[1:], k3e3.blocks[1:]):
    skip = int(block.stride == 1 and shape.in_channels == shape.out_channels)
    expected += raw[f"expanded_conv-input:{shape.in_size}x{shape.in_size}x{shape.in_channels}-output:"
                    f"{shape.out_size}x{shape.out_size}x{shape.out_channels}-expand:3-kernel:3-"
                    f"stride:{block.stride}-idskip:{skip}"]["mean"]
  expected += raw["Conv_1-input:7x7x320-output:7x7x1280"]["mean"] + raw["Logits-input:7x7x1280-output:1000"]["mean"]
  assert pixel1.predict(k3e3) == pytest.approx(expected, rel=1e-12)
  assert pixel1.predict(k3e3) == pytest.approx(76.048, abs=1e-3)
  choices = list(space.choices_from_arch(k3e3))
  with_id = list(choices)
  with_id[1] = space.choice_blocks[1].index_of("id")
  dropped_key = latency_table.block_key(k3e3, k3e3.blocks[2], k3e3.block_shapes()[2])
  assert pixel1.predict(space.arch_from_choices(with_id)) == pytest.approx(
      pixel1.predict(k3e3) - raw[dropped_key]["mean"])
  assert pixel1.predict(references.get_reference("proxyless_k3e6")) == pytest.approx(136.466, abs=1e-3)
  assert pixel1.predict(references.get_reference("proxyless_minimal")) == pytest.approx(29.609, abs=1e-3)


def test_missing_keys_are_listed(pixel1):
  with pytest.raises(latency_table.MissingEntriesError) as error:
    pixel1.predict(references.mobilenet_v2())
  message = str(error.value)
  assert message.startswith("latency table lacks 8 key(s): ")  # 12 blocks, 8 distinct shapes
  assert "expanded_conv-input:56x56x24-output:28x28x32-expand:6-kernel:3-stride:2-idskip:0" in message


def test_bad_table_files(tmp_path):
  path = tmp_path / "t.json"
  path.write_text(json.dumps({"format": "other"}))
  with pytest.raises(ValueError, match=r"t\.json: not a latency table"):
    latency_table.LatencyTable.load(str(path))
  path.write_text(json.dumps({"format": latency_table.FORMAT, "version": 1, "unit": "ms",
                              "entries": {"k": {"std": 1}}}))
  with pytest.raises(ValueError, match=r"entry 'k' has no numeric 'mean'"):
    latency_table.LatencyTable.load(str(path))


@pytest.mark.slow
def test_build_on_host_is_complete_resumable_calibrated_and_validated(tmp_path):
  space = spaces.get_space("micro")
  timer = latency_timers.HostTimer(plan=timing.TimingPlan(invocations=3, warmup=1, min_rounds=3,
                                                         max_rounds=4))
  calls = []
  original = timer.time_models
  timer.time_models = lambda models, cold=(): calls.append(sorted(models)) or original(models, cold)
  out = str(tmp_path / "micro.json")
  table = latency.build_table(space, timer, out, progress=False, chunk=5)
  keys = latency_table.space_keys(space)
  assert len(keys) == 1 + 3 * 3 + 2 and sorted(table.entries) == sorted(keys)  # stem, 9 MBConvs, head
  # The empty model, then chunks timed interleaved, each with the three anchor networks.
  anchor_keys = [k for k in calls[1] if k.startswith("__anchor")]
  assert [len(c) for c in calls] == [1, 8, 8, 5] and len(anchor_keys) == 3
  assert all(set(anchor_keys) <= set(c) for c in calls[1:])
  data = json.load(open(out))
  assert data["format"] == "betanas_tf.latency_table" and data["target"]["threads"] == 1
  assert (data["target"]["quantize"], data["target"]["delegate"]) == ("fp32", "xnnpack")
  assert data["target"]["kind"] == "host" and data["target"]["space"] == "micro"
  assert data["target"]["timing"]["invocations"] == 3 and data["target"]["input_size"] == 16
  for entry in data["entries"].values():
    assert 3 <= entry["rounds"] <= 4 and entry["count"] + entry["outliers"] == entry["rounds"]
    assert 0 <= entry["ci_low"] <= entry["median"] <= entry["ci_high"] and entry["std"] >= 0
    assert len(entry["anchor_ms"]) == 3 and min(entry["anchor_ms"]) > 0
  per_call = sorted({tuple(e["anchor_ms"]) for e in data["entries"].values()})
  assert len(per_call) == 3   # one set of anchor times per chunk
  # Anchors: per block the cheapest, median and dearest candidate (micro: id/k3e3, k5e3, k3e6).
  assert data["anchor"]["choices"] == [[3, 0, 3], [2, 2, 2], [1, 1, 1]]
  assert data["anchor"]["ms"] == pytest.approx([sorted(c[k] for c in per_call)[1] for k in range(3)])
  assert data["target"]["pinned_cpus"] == [max(os.sched_getaffinity(0))]
  calls.clear()
  latency.build_table(space, timer, out, progress=False)
  assert calls == []  # nothing left to measure
  arch = space.arch_from_choices([1, 2, 3])
  assert table.correction is None and table.predict(arch) == pytest.approx(table.layer_sum(arch))
  calibrated = latency.build_table(space, timer, out, progress=False, calibrate=4)
  assert calls == [["0", "1", "2", "3"] + sorted(anchor_keys)]  # four networks and the anchors
  assert sorted(calibrated.correction) == ["deep_factor", "factor", "per_layer_ms"]
  # micro at 16 px has no layer at 2 px or less: the deep factor keeps its prior.
  assert calibrated.correction["deep_factor"] == pytest.approx(1.0, abs=1e-12)
  reloaded = latency_table.LatencyTable.load(out)
  assert reloaded.correction == calibrated.correction and reloaded.target["calibration_networks"] == 4
  # The calibration networks are kept: their choices, their times as timed and at the
  # reference speed (what the correction was fitted on).
  assert reloaded.calibration == calibrated.calibration and len(reloaded.calibration["ms"]) == 4
  assert all(len(c) == 3 for c in reloaded.calibration["choices"])
  assert all(0 < ms for ms in reloaded.calibration["call_ms"])
  fitted = reloaded.correction
  assert reloaded.predict(arch) == pytest.approx(  # micro [1, 2, 3]: stem, 2 MBConvs, 2 head layers
      fitted["factor"] * reloaded.layer_sum(arch) + 5 * fitted["per_layer_ms"])
  plot = str(tmp_path / "scatter.png")
  calls.clear()
  report = latency.validate(reloaded, space, 3, timer, seed=1, plot=plot)
  assert report["n"] == 3 and len(report["rows"]) == 3 and os.path.getsize(plot) > 10_000
  # One call: the three networks, the four calibration networks again and the anchors.
  assert calls == [sorted(["0", "1", "2"] + [f"calibration{i}" for i in range(4)] + anchor_keys)]
  assert (report["drift_source"], report["drift_networks"]) == ("calibration", 4)
  for row in report["rows"]:
    assert row["predicted_ms"] > 0 and row["measured_ms"] > 0
    assert row["error_pct"] == pytest.approx(100 * (row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"])
  errors = [abs(r["error_pct"]) for r in report["rows"]]
  assert report["max_abs_error_pct"] == pytest.approx(max(errors))
  assert report["mean_abs_error_pct"] == pytest.approx(sum(errors) / 3)
  assert report["speed_ratios"] == pytest.approx(
      [now / ref for now, ref in zip(report["anchor_ms"], reloaded.anchor["ms"])])


def test_gpu_target_without_a_gpu_is_one_clear_error():
  with pytest.raises(ValueError, match=r"no GPU visible to TensorFlow .*--target=tf_cpu times the "
                     "same path on the CPU"):
    latency_timers.TensorFlowTimer("/GPU:0")


@pytest.mark.slow
def test_tensorflow_target_builds_and_validates_through_the_gpu_code_path(tmp_path):
  """--target=gpu's code path (TensorFlow graphs at a batch size), run on the CPU here."""
  space = spaces.get_space("micro")
  timer = latency_timers.TensorFlowTimer("/CPU:0", batch_size=4, plan=timing.TimingPlan(
      invocations=3, warmup=1, min_rounds=3, max_rounds=3))
  out = str(tmp_path / "tf_cpu.json")
  table = latency.build_table(space, timer, out, progress=False, calibrate=3)
  assert sorted(table.entries) == sorted(latency_table.space_keys(space))
  target = json.load(open(out))["target"]
  assert (target["kind"], target["device"], target["batch_size"]) == ("tensorflow", "/CPU:0", 4)
  assert all(e["median"] >= 0 and e["rounds"] == 3 for e in table.entries.values())
  report = latency.validate(table, space, 2, timer, seed=3)
  assert report["n"] == 2 and all(r["measured_ms"] > 0 for r in report["rows"])


class DriftingTimer:
  """A machine whose speed changes from one timing call to the next: a model's time is its
  parameter count x 1e-5 ms (additive over a network's layers, like real costs are meant to
  be) x the speed of the call, or x `speed(params)` when the call's speed is a function."""

  def __init__(self, speeds):
    self.speeds, self.calls = list(speeds), 0

  def time_models(self, models, cold=()):
    speed = self.speeds[self.calls % len(self.speeds)]
    self.calls += 1
    at = lambda p: speed(p) if callable(speed) else speed
    return {k: {"median": m.count_params() * 1e-5 * at(m.count_params()), "mean": 0.0}
            for k, m in models.items()}

  def time_model(self, model):
    return self.time_models({"m": model})["m"]

  def describe(self):
    return {"kind": "fake"}


def _params(arch):
  return builder.build_model(arch).count_params()


def test_a_target_registered_in_its_own_file_is_what_the_program_times_on(tmp_path):
  """The contributor recipe (docs/contributing.md): a timer class and one registration in
  `latency.timers.TARGETS`; `python -m betanas_tf.latency --target=NAME` picks it by name."""
  import types  # pylint: disable=import-outside-toplevel
  from betanas_tf.latency import __main__ as program  # pylint: disable=import-outside-toplevel
  made = []

  @latency_timers.TARGETS.decorator("params_count_test")
  def _factory(options, runtime, plan):
    made.append((options.batch_size, runtime.threads, plan.invocations))
    return DriftingTimer([0.0, 1.0])   # call 0: the empty model
  try:
    options = types.SimpleNamespace(target="params_count_test", android=False, invocations=4,
                                    warmup_runs=1, min_rounds=3, max_rounds=3, rel_ci=0.01,
                                    batch_size=2)
    timer = program._timer(options, latency_timers.runtime_lib.Runtime(threads=1))  # pylint: disable=protected-access
    assert made == [(2, 1, 4)] and isinstance(timer, DriftingTimer)
    space = spaces.get_space("micro")
    table = latency.build_table(space, timer, str(tmp_path / "t.json"), progress=False)
    arch = space.arch_from_choices(space.sample(np.random.default_rng(0)))
    assert table.target["kind"] == "fake"
    assert table.layer_sum(arch) == pytest.approx(_params(arch) * 1e-5, rel=1e-9)
    with pytest.raises(ValueError, match="give --android or --target, not both"):
      program._timer(types.SimpleNamespace(**dict(vars(options), android=True)),  # pylint: disable=protected-access
                     latency_timers.runtime_lib.Runtime())
  finally:
    latency_timers.TARGETS.unregister("params_count_test")


def test_the_anchors_remove_machine_drift_from_entries_calibration_and_validation(tmp_path):
  """Chunks timed at 1.0x, 1.5x, 0.7x, 1.2x the speed, calibration at 1.3x: read through the
  anchors every entry is at one reference speed (the median chunk's) and the fitted
  correction is 1. Validation on a machine that slowed by 25 % for small networks and less
  for large ones (linear in log size): the table as built is off by that drift; moved
  along the drift curve the anchors measured, it is exact."""
  space = spaces.get_space("micro")
  timer = DriftingTimer([0.0, 1.0, 1.5, 0.7, 1.2, 1.3])  # call 0: the empty model (0 params)
  table = latency.build_table(space, timer, str(tmp_path / "t.json"), progress=False, chunk=3,
                              calibrate=6)
  assert timer.calls == 6 and table.overhead_ms == 0.0
  reference = float(np.median([1.0, 1.5, 0.7, 1.2]))
  anchors = [space.arch_from_choices(c) for c in table.anchor["choices"]]
  assert table.anchor["ms"] == pytest.approx([reference * _params(a) * 1e-5 for a in anchors])
  rng = np.random.default_rng(3)
  for arch in [space.arch_from_choices(space.sample(rng)) for _ in range(5)]:
    assert table.layer_sum(arch) == pytest.approx(reference * _params(arch) * 1e-5, rel=1e-9)
  assert table.correction["factor"] == pytest.approx(1.0, abs=1e-6)
  assert table.correction["deep_factor"] == pytest.approx(1.0, abs=1e-12)  # no deep layers
  assert table.correction["per_layer_ms"] == pytest.approx(0.0, abs=1e-9)
  small, large = _params(anchors[0]), _params(anchors[2])
  slow = lambda p: reference * (1.25 - 0.15 * np.log(p / small) / np.log(large / small))
  timer.speeds, timer.calls = [slow], 0
  report = latency.validate(table, space, 6, timer, seed=1)
  assert report["speed_ratios"][0] == pytest.approx(1.25) and report["speed_ratios"][2] == pytest.approx(1.10)
  assert all(-20.0 < r["error_pct"] < -9.0 for r in report["rows"])   # 1/1.25 .. 1/1.10
  assert report["rescaled_max_abs_error_pct"] < 1e-6


def test_retimed_calibration_networks_measure_the_drift_the_anchors_misjudge(tmp_path):
  """Built on a steady machine; validated on one 20 % slower for every network, where the
  anchors' own measurements are off (the cheapest read 6 % fast, the dearest 5 % slow, as
  one noisy sample can be): moved along the anchors' curve the table looks several per cent
  wrong, along the line through the re-timed calibration networks it is exact."""
  space = spaces.get_space("micro")
  timer = DriftingTimer([0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
  table = latency.build_table(space, timer, str(tmp_path / "t.json"), progress=False, chunk=3,
                              calibrate=8)
  archs = [space.arch_from_choices(c) for c in table.calibration["choices"]]
  assert table.calibration["ms"] == pytest.approx([_params(a) * 1e-5 for a in archs])
  assert table.calibration["call_ms"] == pytest.approx(table.calibration["ms"])
  picks = fitting.drift_networks(table, 4)
  ordered = np.argsort(table.calibration["ms"], kind="stable")
  assert picks == sorted(int(ordered[p]) for p in (0, 2, 5, 7))   # evenly over their times

  class NoisyAnchors(DriftingTimer):
    def time_models(self, models, cold=()):
      timed = super().time_models(models, cold)
      anchors = sorted(k for k in timed if k.startswith("__anchor"))
      for key, error in zip(anchors, (0.94, 1.0, 1.05)):
        timed[key] = dict(timed[key], median=timed[key]["median"] * error)
      return timed

  noisy = NoisyAnchors([1.2])
  by_anchors = latency.validate(table, space, 6, noisy, seed=1, drift_networks=0)
  assert by_anchors["drift_source"] == "anchors" and by_anchors["drift_networks"] == 0
  assert by_anchors["rescaled_max_abs_error_pct"] > 3.0
  by_networks = latency.validate(table, space, 6, noisy, seed=1, drift_networks=4)
  assert (by_networks["drift_source"], by_networks["drift_networks"]) == ("calibration", 4)
  # Within the re-timed networks' range the line is exact; beyond it the curve leans toward
  # the anchor on that side (here one that read 6 % fast or 5 % slow).
  low, high = min(table.calibration["ms"]), max(table.calibration["ms"])
  inside = [r for r in by_networks["rows"] if low <= r["predicted_ms"] <= high]
  assert len(inside) >= 3 and all(abs(r["rescaled_error_pct"]) < 1e-6 for r in inside)
  assert all(r["drift"] == pytest.approx(1.2) for r in inside)
  assert all(1.2 * 0.94 - 1e-9 <= r["drift"] <= 1.2 * 1.05 + 1e-9 for r in by_networks["rows"])
  assert by_networks["mean_abs_error_pct"] == pytest.approx(100 * (1 - 1 / 1.2))


def test_beyond_the_calibration_networks_the_drift_curve_follows_the_anchors(tmp_path):
  """A machine that, at validation, runs every network of the calibration networks' range
  20 % slower and networks cheaper than all of them up to 50 % slower (linearly in log
  size down to the cheapest anchor): the curve through the re-timed networks, joined to the
  cheapest anchor's ratio, places those cheap networks exactly; held at the line's end (no
  anchors), it is off by up to 20 %."""
  space = spaces.get_space("micro")
  timer = DriftingTimer([0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
  table = latency.build_table(space, timer, str(tmp_path / "t.json"), progress=False, chunk=3,
                              calibrate=8)
  cheapest = min(_params(space.arch_from_choices(c)) for c in table.calibration["choices"])
  smallest_anchor = _params(space.arch_from_choices(table.anchor["choices"][0]))
  assert smallest_anchor < cheapest
  def speed(p):
    below = np.clip(np.log(cheapest / p) / np.log(cheapest / smallest_anchor), 0.0, 1.0)
    return 1.2 + 0.3 * below
  timer.speeds, timer.calls = [speed], 0
  report = latency.validate(table, space, 40, timer, seed=2, drift_networks=8)
  below = [r for r in report["rows"] if r["predicted_ms"] < min(table.calibration["ms"]) - 1e-12]
  assert len(below) >= 3 and report["rescaled_max_abs_error_pct"] < 1e-6
  assert max(r["drift"] for r in below) > 1.25
  now = [ms * speed(ms / 1e-5) for ms in table.calibration["ms"]]
  held = fitting.calibration_drift(table, space, list(range(8)), now)
  archs = {r["arch"]: space.arch_from_choices(space.choices_from_string(r["arch"])) for r in below}
  assert all(held(a) == pytest.approx(1.2) for a in archs.values())
  assert max(abs(1.2 * r["predicted_ms"] / r["measured_ms"] - 1) for r in below) > 0.1


class StallingTimer:
  """A machine where a model's time is its parameter count x 1e-5 ms, whole networks
  (anchors, calibration and validation networks) time exactly that, and one-layer models
  (entries: keys with 'input:') report it in one of their statistics and a per-key error
  in the other: `stalls` puts an upward error (0-40 %) on the median (a layer that waited
  for its second thread in some rounds), otherwise a downward one on the 10th percentile."""

  def __init__(self, stalls):
    self.stalls = stalls

  def time_models(self, models, cold=()):
    timed = {}
    for key, model in models.items():
      ms = model.count_params() * 1e-5
      error = 0.4 * (zlib.crc32(key.encode()) / 2**32)
      entry = {"median": ms, "p10": ms, "mean": ms}
      if "input:" in key:
        if self.stalls:
          entry.update(median=ms * (1 + error), mean=ms * (1 + error))
        else:
          entry.update(p10=ms * (1 - error))
      timed[key] = entry
    return timed

  def time_model(self, model):
    return self.time_models({"m": model})["m"]

  def describe(self):
    return {"kind": "fake"}


@pytest.mark.parametrize("stalls", [True, False])
def test_the_fit_reads_entries_by_the_statistic_that_predicts_the_calibration_networks(tmp_path, stalls):
  """Entries whose median carries stalls that networks do not have: the 10th percentile
  predicts every calibration network left out exactly and is kept, the median is off; with
  the error in the 10th percentile instead, the median is kept. Validation agrees, and
  `latency refit` reaches the same fit from the stored calibration times alone."""
  space = spaces.get_space("micro")
  out = str(tmp_path / "t.json")
  table = latency.build_table(space, StallingTimer(stalls), out, progress=False, chunk=4, calibrate=8)
  right, wrong = ("p10", "median") if stalls else ("median", "p10")
  loo = table.calibration["loo_mean_abs_error_pct"]
  assert table.statistic == right and loo[right] < 1e-6 and loo[wrong] > 1.0
  assert table.correction["factor"] == pytest.approx(1.0, abs=1e-6)
  assert table.correction["per_layer_ms"] == pytest.approx(0.0, abs=1e-9)
  arch = space.arch_from_choices([1, 2, 3])
  assert table.lookup(latency_table.stem_key(arch)) == table.entries[latency_table.stem_key(arch)][right]
  report = latency.validate(table, space, 6, StallingTimer(stalls), seed=1)
  assert report["max_abs_error_pct"] < 1e-6
  # Forced onto the other statistic, predictions are off; refit (no timing) restores the fit.
  table.statistic = wrong
  assert latency.validate(table, space, 6, StallingTimer(stalls), seed=1)["max_abs_error_pct"] > 1.0
  table.correction = {"factor": 2.0, "deep_factor": 2.0, "per_layer_ms": 1.0}
  table.save(out)
  result = subprocess.run([sys.executable, "-m", "betanas_tf.latency", "refit", f"--lut={out}",
                           "--space=micro"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"entries read as the {right} of their samples" in result.stdout
  refitted = latency_table.LatencyTable.load(out)
  assert refitted.statistic == right and refitted.correction == pytest.approx(
      {"factor": 1.0, "deep_factor": 1.0, "per_layer_ms": 0.0}, abs=1e-6)


class CacheTimer:
  """A machine with caches: a model's time is its parameter count x 1e-5 ms plus a per-call
  cost of 0.01 ms timed hot or 0.05 ms timed cold, and a one-layer model timed hot runs
  10-30 % faster (by key) than inside a network (its weights stay in the caches); networks
  are timed hot.
  Records which models each call times cold."""

  def __init__(self, evict_mb):
    self.evict_mb, self.cold_calls = evict_mb, []

  def time_models(self, models, cold=()):
    self.cold_calls.append(sorted(cold))
    timed = {}
    for key, model in models.items():
      ms = model.count_params() * 1e-5
      if key in cold:
        ms += 0.05
      else:
        gain = 0.7 + 0.2 * zlib.crc32(key.encode()) / 2**32 if "input:" in key else 1.0
        ms = ms * gain + 0.01
      timed[key] = {"median": ms, "mean": ms}
    return timed

  def time_model(self, model):
    return self.time_models({"m": model})["m"]

  def describe(self):
    return {"kind": "fake", "timing": {"evict_mb": self.evict_mb}}


def test_layers_timed_cold_add_up_to_networks_and_lose_their_own_overhead(tmp_path):
  """With eviction every one-layer model (and a second empty model, whose time is the
  entries' overhead) is timed cold, the anchors and networks hot: entries, fit and
  validation are exact. Timed hot, the layers' gains in the caches differ by layer: no
  correction of the fit removes them exactly."""
  space = spaces.get_space("micro")
  timer = CacheTimer(evict_mb=64)
  table = latency.build_table(space, timer, str(tmp_path / "cold.json"), progress=False, chunk=4,
                              calibrate=8)
  assert table.overhead_ms == pytest.approx(0.01) and table.target["layer_overhead_ms"] == pytest.approx(0.05)
  assert latency.layer_overhead_ms(table) == pytest.approx(0.05) and latency.evict_mb(table) == 64
  keys = latency_table.space_keys(space)
  assert timer.cold_calls[:2] == [[], ["empty"]]
  assert timer.cold_calls[2:5] == [sorted(keys[i:i + 4]) for i in range(0, len(keys), 4)]
  assert timer.cold_calls[5:] == [[]]   # the calibration networks, hot
  arch = space.arch_from_choices([1, 2, 3])
  assert table.predict(arch) == pytest.approx(_params(arch) * 1e-5, rel=1e-9)
  assert table.correction == pytest.approx({"factor": 1.0, "deep_factor": 1.0, "per_layer_ms": 0.0}, abs=1e-9)
  assert latency.validate(table, space, 6, timer, seed=1)["max_abs_error_pct"] < 1e-6
  hot = latency.build_table(space, CacheTimer(evict_mb=0), str(tmp_path / "hot.json"),
                            progress=False, chunk=4, calibrate=8)
  assert "layer_overhead_ms" not in hot.target and latency.layer_overhead_ms(hot) == hot.overhead_ms
  assert latency.validate(hot, space, 6, CacheTimer(0), seed=1)["max_abs_error_pct"] > 0.5


class FakeClock:
  """Time that only advances when a fake model runs: model costs are known exactly."""

  def __init__(self):
    self.now, self.calls = 0.0, 0

  def __call__(self):
    return self.now

  def model(self, ms, burst_every=0, burst_ms=0.0):
    def run():
      self.calls += 1
      extra = burst_ms if burst_every and self.calls % burst_every == 0 else 0.0
      self.now += (ms + extra) / 1000.0
    return run


def test_interleaved_timing_recovers_known_costs_through_bursts():
  clock = FakeClock()
  # Every 7th invocation anywhere is 40 ms slow (another job on the machine).
  runners = {"a": clock.model(2.0, 7, 40.0), "b": clock.model(1.0, 7, 40.0), "c": clock.model(0.5, 7, 40.0)}
  plan = timing.TimingPlan(invocations=5, warmup=2, min_rounds=5, max_rounds=20, rel_ci=0.01)
  result = timing.interleaved(runners, plan, clock=clock)
  assert {k: v["median"] for k, v in result.items()} == pytest.approx({"a": 2.0, "b": 1.0, "c": 0.5})
  assert all(v["rounds"] == 5 and v["ci_high"] - v["ci_low"] < 1e-9 for v in result.values())
  assert clock.calls == 3 * (2 + 5 * 5)


def test_cold_models_are_timed_after_an_untimed_eviction():
  """A model costs 3 ms with its caches cold, 1 ms warm; eviction costs 50 ms of clock. The
  cold model is evicted before every timed call and none of that time is counted; the other
  model finds its caches warm again after its first call."""
  clock, warm, evictions = FakeClock(), set(), []

  def model(key):
    def run():
      clock.now += (1.0 if key in warm else 3.0) / 1000.0
      warm.add(key)
    return run

  def evict():
    evictions.append(clock.now)
    clock.now += 0.05
    warm.clear()

  plan = timing.TimingPlan(invocations=5, warmup=1, min_rounds=4, max_rounds=4, evict_mb=64)
  result = timing.interleaved({"a": model("a"), "b": model("b")}, plan, clock=clock,
                              cold=["a"], evict=evict)
  assert (result["a"]["median"], result["b"]["median"]) == pytest.approx((3.0, 1.0))
  assert len(evictions) == 4 * 5
  with pytest.raises(ValueError, match="cold names models not timed here: c"):
    timing.interleaved({"a": model("a")}, plan, clock=clock, cold=["c"], evict=evict)
  # Without evict_mb and without an evictor given, nothing is evicted.
  assert timing.interleaved({"a": model("a")}, dataclasses.replace(plan, evict_mb=0), clock=clock,
                            cold=["a"])["a"]["median"] == pytest.approx(1.0)


def test_the_default_eviction_is_twice_the_largest_cache(tmp_path):
  def cache(cpu, index, size):
    path = tmp_path / f"cpu{cpu}" / "cache" / f"index{index}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "size").write_text(size + "\n")

  assert timing.default_evict_mb(str(tmp_path)) == timing.FALLBACK_EVICT_MB == 64
  cache(0, 0, "48K")
  cache(0, 2, "1024K")
  assert timing.default_evict_mb(str(tmp_path)) == 2
  cache(1, 3, "32768K")   # this machine's L3
  assert timing.default_evict_mb(str(tmp_path)) == 64
  cache(1, 4, "3M")
  cache(0, 5, "unknown")
  assert timing.default_evict_mb(str(tmp_path)) == 64


def test_interleaved_timing_keeps_sampling_until_the_median_is_tight():
  clock = FakeClock()
  rng = np.random.default_rng(0)
  noisy = lambda: setattr(clock, "now", clock.now + rng.uniform(0.9, 1.1) / 1000.0)
  plan = timing.TimingPlan(invocations=1, warmup=0, min_rounds=5, max_rounds=400, rel_ci=0.01)
  result = timing.interleaved({"x": noisy}, plan, clock=clock)["x"]
  assert 5 < result["rounds"] < 400   # +-10 % noise needs more than 5 rounds for +-1 %
  assert result["ci_high"] - result["ci_low"] <= 0.02 * result["median"]
  assert result["median"] == pytest.approx(1.0, abs=0.02)


def test_median_ci_and_outliers():
  assert timing.median_ci(list(range(1, 101))) == (41, 60)
  kept, rejected = timing.reject_outliers([1.0, 1.1, 0.9, 1.0, 1.05, 9.0])
  assert rejected == 1 and 9.0 not in kept


def test_fitted_correction_recovers_a_known_bias(pixel1):
  """A world where every early layer inside a network runs 3 % slower than alone, every
  deep one (28 px and below) 9 % slower, and each hands its output on for 0.4 ms: the fit on
  30 calibration networks recovers all three, predicts held-out networks exactly, and the
  plain layer sum is off by several per cent."""
  space = spaces.get_space("proxyless_mobile")
  def measure(arch):
    early, deep = pixel1.group_sums(arch)
    return 1.03 * early + 1.09 * deep + 0.4 * len(latency_table.layer_keys(arch))
  rng = np.random.default_rng(0)
  calibration = [space.arch_from_choices(space.sample(rng)) for _ in range(30)]
  def fit(archs, ridge):
    early, deep = zip(*[pixel1.group_sums(a) for a in archs])
    return fitting.fit_correction(early, deep, [len(latency_table.layer_keys(a)) for a in archs],
                                  [measure(a) for a in archs], ridge=ridge)
  fitted = fit(calibration, 1e-9)
  assert fitted["factor"] == pytest.approx(1.03, rel=1e-5)
  assert fitted["deep_factor"] == pytest.approx(1.09, rel=1e-5)
  assert fitted["per_layer_ms"] == pytest.approx(0.4, rel=1e-4)
  corrected = latency_table.LatencyTable(pixel1.entries, pixel1.target, correction=fitted)
  held_out = [space.arch_from_choices(space.sample(rng)) for _ in range(20)]
  for arch in held_out:
    assert corrected.predict(arch) == pytest.approx(measure(arch), rel=1e-6)
  plain = min(abs(pixel1.predict(a) / measure(a) - 1) for a in held_out)
  assert plain > 0.06
  # The ridge pulls a fit from few networks toward no correction (factors 1, nothing per layer).
  shrunk = fit(calibration[:3], 10.0)
  assert 1.0 < shrunk["deep_factor"] < 1.09 and 0.0 < shrunk["per_layer_ms"] < 0.4
  assert abs(shrunk["factor"] - 1.0) < 0.03


def test_deep_layers_are_those_at_an_eighth_of_the_input_resolution_or_less(pixel1):
  arch = spaces.get_space("proxyless_mobile").skeleton()
  deep = {k.split("-")[1]: latency_table.is_deep(k, 224) for k in latency_table.layer_keys(arch)}
  assert deep == {"input:224x224x3": False, "input:112x112x32": False, "input:112x112x16": False,
                  "input:56x56x24": False, "input:28x28x40": True, "input:14x14x80": True,
                  "input:14x14x96": True, "input:7x7x192": True, "input:7x7x320": True,
                  "input:7x7x1280": True}
  early, deep_sum = pixel1.group_sums(arch)
  assert early + deep_sum == pytest.approx(pixel1.layer_sum(arch)) and min(early, deep_sum) > 0
  # The previous build's correction has one factor for every layer: it still predicts.
  older = latency_table.LatencyTable(pixel1.entries, pixel1.target,
                               correction={"factor": 1.05, "per_layer_ms": 0.3})
  assert older.predict(arch) == pytest.approx(
      1.05 * pixel1.layer_sum(arch) + 0.3 * len(latency_table.layer_keys(arch)))


def test_a_per_stage_correction_of_an_older_build_is_one_clear_error(tmp_path, pixel1):
  path = tmp_path / "old.json"
  data = pixel1.to_dict()
  data["correction"] = {"224": 0.83, "112": 1.12}
  path.write_text(json.dumps(data))
  with pytest.raises(ValueError, match=r"old.json: the table's correction is not \{factor, "
                     r"deep_factor, per_layer_ms\} .*rerun `latency build` with --calibrate"):
    latency_table.LatencyTable.load(str(path))


def test_cli_import_and_predict(tmp_path, pixel1):
  out = tmp_path / "p.json"
  env = dict(os.environ, PYTHONPATH=ROOT)
  run = lambda *args: subprocess.run([sys.executable, "-m", "betanas_tf.latency", *args], cwd=ROOT,
                                     env=env, capture_output=True, text=True, timeout=120)
  result = run("import", f"--yaml={PIXEL1_YAML}", f"--out={out}")
  assert result.returncode == 0 and "72 entries imported" in result.stdout
  arch = tmp_path / "a.json"
  references.get_reference("proxyless_minimal").save(str(arch))
  result = run("predict", f"--lut={out}", f"--arch={arch}")
  assert result.returncode == 0 and result.stdout.strip() == "29.609 ms"
  bad = run("frobnicate")
  assert bad.returncode == 1 and ("latency: error: give one command: build | refit | import | "
                                  "predict | validate | compare") in bad.stderr
  # An imported table was never timed here: nothing to refit its correction on.
  bad = run("refit", f"--lut={out}")
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1] == (
      f"latency: error: {out} keeps no timed calibration networks to refit on (build it with "
      "--calibrate)")


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
