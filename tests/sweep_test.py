"""Every registered search space and reference network, through everything that reads a spec.

The cases are collected from the registries (`SPACES.names()`, `REFERENCES.names()`), so a
space or reference registered later is tested here without writing a test. For a space the
network is a uniformly sampled architecture of it (seed fixed). Networks at 128 px and
above or deeper than 8 blocks are marked slow (`-m "not slow"` keeps the fast loop fast; CI runs them all).
"""

import functools

import numpy as np
import pytest

from betanas_tf import builder
from betanas_tf import cost
from betanas_tf import profiler
from betanas_tf import references
from betanas_tf import spaces
from betanas_tf import tflite


def _arch(case: str):
  kind, name = case.split(":")
  if kind == "reference":
    return references.get_reference(name)
  space = spaces.get_space(name)
  return space.arch_from_choices(space.sample(np.random.default_rng(0)), name=f"{name}_sample")


def _cases():
  cases = [f"space:{n}" for n in spaces.SPACES.names()]
  cases += [f"reference:{n}" for n in references.REFERENCES.names()]
  slow = lambda arch: arch.input_size >= 128 or len(arch.blocks) > 8
  return [pytest.param(c, marks=[pytest.mark.slow] if slow(_arch(c)) else []) for c in cases]


CASES = _cases()


@functools.lru_cache(maxsize=None)
def _model_and_images(case: str):
  """The network with random weights and BN statistics set on data (so outputs are O(1) and
  comparisons meaningful), and 4 probe images."""
  arch = _arch(case)
  rng = np.random.default_rng(1)
  shape = (4, arch.input_size, arch.input_size, arch.input_channels)
  model = builder.build_model(arch)
  builder.set_bn_statistics(model, rng.normal(size=(8,) + shape[1:]).astype(np.float32))
  return arch, model, rng.normal(size=shape).astype(np.float32)


def test_every_registry_entry_is_swept():
  names = {c.values[0] for c in CASES}
  assert len(names) == len(spaces.SPACES.names()) + len(references.REFERENCES.names()) >= 7


@pytest.mark.parametrize("case", CASES)
def test_build_matches_the_cost_model(case):
  arch, model, images = _model_and_images(case)
  trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  assert trainable == cost.architecture_cost(arch).params
  assert tuple(model(images).shape) == (4, arch.num_classes)


@pytest.mark.parametrize("case", CASES)
def test_analytic_macs_equal_the_profiler(case):
  arch, model, _ = _model_and_images(case)
  measured = profiler.profiled_macs(model)
  assert abs(cost.architecture_cost(arch).macs - measured) <= 0.001 * measured


@pytest.mark.parametrize("case", CASES)
def test_keras_save_load_round_trip(case, tmp_path):
  import keras  # pylint: disable=import-outside-toplevel
  _, model, images = _model_and_images(case)
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(model(images)))
  assert [l.name for l in loaded.layers] == [l.name for l in model.layers]


@pytest.mark.parametrize("case", CASES)
def test_litert_fp32_parity_and_op_counts(case):
  arch, model, images = _model_and_images(case)
  content = tflite.convert(model)
  ops = tflite.op_counts(content)
  assert ops == tflite.expected_op_counts(arch)
  if arch.activation == "relu6" and arch.se_ratio == 0:  # BN folded, ReLU6 fused: nothing else
    assert set(ops) <= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED"}
  expected = np.asarray(model(images, training=False))
  assert np.abs(expected).max() > 0.05  # a real comparison, not of vanishing numbers
  assert np.abs(tflite.run(content, images) - expected).max() <= 1e-4
