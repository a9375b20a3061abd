"""Analytic cost model vs TensorFlow's profiler and Keras' own parameter count."""

import os

import numpy as np
import pytest

from betanas_tf import builder
from betanas_tf import cost
from betanas_tf import profiler
from betanas_tf import references
from betanas_tf import spaces


def _trainable(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _check_against_tensorflow(arch):
  model = builder.build_model(arch)
  analytic = cost.architecture_cost(arch)
  assert analytic.params == _trainable(model)
  measured = profiler.profiled_macs(model)
  assert abs(analytic.macs - measured) <= 0.001 * measured
  return analytic, measured


@pytest.mark.slow
def test_mobilenet_v2_golden_numbers():
  analytic, measured = _check_against_tensorflow(references.mobilenet_v2())
  assert analytic == cost.Cost(macs=300_774_272, params=3_504_872)
  assert measured == 300_774_272
  wide, measured = _check_against_tensorflow(references.mobilenet_v2(1.4))
  assert wide == cost.Cost(582_195_824, 6_108_776) and measured == 582_195_824


@pytest.mark.parametrize("name,golden", [
    ("proxyless_k3e6", cost.Cost(472_620_800, 4_684_776)),
    ("proxyless_k7e6", cost.Cost(606_590_720, 5_103_336)),
    ("proxyless_minimal", cost.Cost(102_528_896, 2_154_984)),
])
def test_proxyless_reference_golden_numbers(name, golden):
  analytic, measured = _check_against_tensorflow(references.get_reference(name))
  assert analytic == golden and measured == golden.macs


@pytest.mark.slow
def test_random_proxyless_architectures_agree_with_profiler():
  space = spaces.get_space("proxyless_mobile")
  rng = np.random.default_rng(7)
  for _ in range(5):
    _check_against_tensorflow(space.arch_from_choices(space.sample(rng)))


@pytest.mark.slow
def test_every_micro_architecture_agrees_with_profiler():
  space = spaces.get_space("micro")
  for choices in space.enumerate():
    _check_against_tensorflow(space.arch_from_choices(choices))


def test_se_and_swish_counted():
  space = spaces.get_space("micro")
  arch = space.arch_from_choices([1, 2, 0]).replace(se_ratio=0.25, activation="swish")
  analytic, _ = _check_against_tensorflow(arch)
  plain = cost.architecture_cost(arch.replace(se_ratio=0.0))
  # SE on mid channels 96, 48, 72: two 1x1 convs each, plus biases.
  se = [(96, 24), (48, 12), (72, 18)]
  assert analytic.macs - plain.macs == sum(2 * m * s for m, s in se)
  assert analytic.params - plain.params == sum(2 * m * s + m + s for m, s in se)


def test_space_costs_match_whole_architectures():
  space = spaces.get_space("proxyless_mobile")
  table = cost.space_costs(space)
  assert len(table.candidates) == 21 and len(table.candidates[2]) == 7
  assert table.candidates[2][6] == cost.Cost(0, 0)  # identity
  rng = np.random.default_rng(3)
  for _ in range(20):
    choices = space.sample(rng)
    assert table.of_choices(choices) == cost.architecture_cost(space.arch_from_choices(choices))
  assert references.cheapest_choices(space)[1] == 6  # identity where allowed
  assert references.cheapest_choices(space)[0] == 0  # k3e3 where not


@pytest.mark.parametrize("se_ratio", [0.0, 0.25])
def test_macs_cost_table_is_the_cost_model_padded(se_ratio):
  space = spaces.get_space("proxyless_mobile")
  table = cost.macs_cost_table(space, 315e6, se_ratio=se_ratio)
  assert table.table.shape == (21, 7) and table.unit == "MMACs" and table.target == 315.0
  assert table.table[0, 6] == 0.0  # block 0 has 6 candidates: padding
  rng = np.random.default_rng(5)
  for _ in range(10):
    choices = space.sample(rng)
    arch = space.arch_from_choices(choices).replace(se_ratio=se_ratio)
    assert table.of_choices(choices) * 1e6 == pytest.approx(cost.architecture_cost(arch).macs, rel=1e-9)
  untargeted = cost.macs_cost_table(space, se_ratio=se_ratio)
  uniform = untargeted.fixed + sum(np.mean(untargeted.table[l, :b.num_candidates])
                                   for l, b in enumerate(space.choice_blocks))
  assert untargeted.target == 0.0 and untargeted.reference == pytest.approx(uniform)


def test_latency_cost_table_predicts_like_the_lookup_table():
  from betanas_tf.latency import table as latency_table  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "pixel1_latency.json")
  space = spaces.get_space("proxyless_mobile")
  table = cost.CostTable  # the type latency_cost_table returns
  lut = latency_table.LatencyTable.load(path)
  costs = latency_table.latency_cost_table(space, path, 80.0)
  assert isinstance(costs, table) and costs.unit == "ms" and costs.target == 80.0
  rng = np.random.default_rng(6)
  for _ in range(10):
    choices = space.sample(rng)
    assert costs.of_choices(choices) == pytest.approx(lut.predict(space.arch_from_choices(choices)),
                                                      rel=1e-9)
  with pytest.raises(ValueError, match=r"lacks \d+ key\(s\) of cifar_mobile"):
    latency_table.latency_cost_table(spaces.get_space("cifar_mobile"), path)


def test_latency_cost_table_applies_the_in_network_correction(tmp_path):
  from betanas_tf.latency import table as latency_table  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "pixel1_latency.json")
  lut = latency_table.LatencyTable.load(path)
  lut.correction = {"factor": 1.05, "deep_factor": 1.1, "per_layer_ms": 0.3}
  corrected_path = str(tmp_path / "corrected.json")
  lut.save(corrected_path)
  space = spaces.get_space("proxyless_mobile")
  costs = latency_table.latency_cost_table(space, corrected_path)
  rng = np.random.default_rng(2)
  for _ in range(5):
    arch = space.arch_from_choices(space.sample(rng))
    choices = space.choices_from_arch(arch)
    assert costs.of_choices(choices) == pytest.approx(lut.predict(arch), rel=1e-9)
    assert lut.predict(arch) != pytest.approx(lut.layer_sum(arch), rel=1e-3)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
