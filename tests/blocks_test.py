"""The supernet's candidate layer: serialization, structural names, equality with the flat builder."""

import numpy as np
import keras
import pytest

from betanas_tf import arch as arch_lib
from betanas_tf import blocks
from betanas_tf import builder
from betanas_tf import ops
from betanas_tf import spaces


def _leaf_names(layer):
  return sorted(l.name for l in layer._flatten_layers(include_self=False, recursive=True))


def test_mbconv_config_round_trip_and_names():
  layer = blocks.Candidate(16, arch_lib.Block("mbconv", 24, 2, kernel=5, expand=3), activation="swish", se_ratio=0.25,
                           name="block03_k5e3")
  config = layer.get_config()
  for key, value in dict(in_channels=16, activation="swish", se_ratio=0.25, bn_momentum=0.9,
                         bn_epsilon=1e-3, name="block03_k5e3",
                         block={"op": "mbconv", "kernel": 5, "expand": 3, "filters": 24,
                                "stride": 2}).items():
    assert config[key] == value
  again = blocks.Candidate.from_config(config)
  assert again.get_config() == config
  layer(np.zeros((1, 8, 8, 16), "float32"))
  assert _leaf_names(layer) == sorted([
      "block03_k5e3_expand", "block03_k5e3_expand_bn", "block03_k5e3_expand_act",
      "block03_k5e3_dw", "block03_k5e3_dw_bn", "block03_k5e3_dw_act",
      "block03_k5e3_se_pool", "block03_k5e3_se_reduce", "block03_k5e3_se_act",
      "block03_k5e3_se_expand", "block03_k5e3_se_gate", "block03_k5e3_se_mul",
      "block03_k5e3_project", "block03_k5e3_project_bn"])
  # 16->48 expand (no bias) + BN, 5x5 dw + BN, SE 48->12->48 with bias, 48->24 project + BN.
  expected = 16 * 48 + 96 + 25 * 48 + 96 + (48 * 12 + 12 + 12 * 48 + 48) + 48 * 24 + 48
  assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == expected


def test_expand_one_has_no_expand_conv_and_residual_only_when_shape_kept():
  layer = blocks.Candidate(16, arch_lib.Block("mbconv", 16, 1, kernel=3, expand=1), name="block00_k3e1")
  layer(np.zeros((1, 4, 4, 16), "float32"))
  names = _leaf_names(layer)
  assert "block00_k3e1_expand" not in names and "block00_k3e1_add" in names
  strided = blocks.Candidate(16, arch_lib.Block("mbconv", 16, 2, kernel=3, expand=6), name="block01_k3e6")
  strided(np.zeros((1, 4, 4, 16), "float32"))
  assert "block01_k3e6_add" not in _leaf_names(strided)


def test_invalid_block_is_rejected():
  with pytest.raises(ValueError, match=r"block00_k4e3.kernel: must be a positive odd integer, got 4"):
    blocks.Candidate(16, arch_lib.Block("mbconv", 16, 1, kernel=4, expand=3), name="block00_k4e3")
  with pytest.raises(TypeError, match=r"block: missing field\(s\) \['kernel'\]"):
    blocks.Candidate.from_config({"in_channels": 16, "block": {"op": "mbconv", "expand": 3,
                                                               "filters": 16, "stride": 1}})


def test_keras_save_load_gives_equal_outputs(tmp_path):
  inputs = keras.Input((8, 8, 16))
  x = blocks.Candidate(16, arch_lib.Block("mbconv", 16, 1, kernel=3, expand=6), se_ratio=0.25, name="block01_k3e6")(inputs)
  x = blocks.Candidate(16, arch_lib.Block("identity", 16), name="block02_id")(x)
  model = keras.Model(inputs, x)
  data = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype("float32")
  # Move BN statistics away from their initial values so the check is meaningful.
  model(data, training=True)
  path = str(tmp_path / "block.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  np.testing.assert_allclose(loaded.predict(data, verbose=0), model.predict(data, verbose=0), atol=0)
  for name in ("block01_k3e6", "block02_id"):
    assert isinstance(loaded.get_layer(name), blocks.Candidate)
    assert loaded.get_layer(name).get_config() == model.get_layer(name).get_config()


def _blocks_of_every_op():
  """(label, in_channels, block): one candidate of each label found in the registered
  spaces (the narrowest), strided where the space has one."""
  found = {}
  for name in spaces.SPACES.names():
    for choice in spaces.get_space(name).choice_blocks:
      for block in choice.candidates:
        key = (block.label, block.stride)
        if key not in found or choice.shape.in_channels < found[key][1]:
          found[key] = (block.label, choice.shape.in_channels, block)
  return sorted(found.values(), key=str)


def test_every_registered_op_is_a_candidate_of_some_space():
  """So the sweeps below (and the space/reference sweeps elsewhere) reach every op."""
  assert {block.op for _, _, block in _blocks_of_every_op()} == set(ops.OPS.names())


@pytest.mark.parametrize("label,in_channels,block", _blocks_of_every_op(),
                         ids=lambda v: v if isinstance(v, str) else str(getattr(v, "stride", v)))
@pytest.mark.parametrize("se_ratio,activation", [(0.0, "relu6"), (0.25, "swish")])
def test_candidate_layer_equals_flat_builder_block(label, in_channels, block, se_ratio, activation):
  """The supernet's candidate layer and the standalone model's primitives compute the same
  thing, for every op (identity included) with and without SE and swish."""
  arch = arch_lib.Architecture(8, 3, arch_lib.Stem(in_channels, 3, 1), (block,),
                               arch_lib.Head(16), se_ratio=se_ratio, activation=activation)
  flat = builder.build_model(arch)
  layer = blocks.make_block_layer(0, in_channels, block, activation, se_ratio)
  assert layer.name == f"block00_{label}"
  x = np.random.default_rng(1).normal(size=(2, 8, 8, in_channels)).astype("float32")
  layer(x)
  by_name = {l.name: l for l in flat.layers}
  copied = 0
  for sub in layer._flatten_layers(include_self=False, recursive=True):
    sub.set_weights(by_name[sub.name].get_weights())
    copied += bool(sub.weights)
  # Every weighted layer of the flat model but the stem conv + BN, head conv + BN, classifier.
  assert copied == len([l for l in flat.layers if l.weights]) - 5
  probe = keras.Model(flat.input, [flat.get_layer("stem_conv_act").output,
                                   flat.get_layer("head_conv").input])
  image = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
  features, expected = probe(image)
  np.testing.assert_allclose(layer(features), expected, atol=1e-5)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
