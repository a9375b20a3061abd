"""Keras block layers: serialization, structural names, equality with the flat builder."""

import numpy as np
import keras
import pytest

from betanas_tf import arch as arch_lib
from betanas_tf import blocks
from betanas_tf import builder


def _leaf_names(layer):
  return sorted(l.name for l in layer._flatten_layers(include_self=False, recursive=True))


def test_mbconv_config_round_trip_and_names():
  layer = blocks.MBConv(16, 24, 5, 3, 2, activation="swish", se_ratio=0.25, name="block03_k5e3")
  config = layer.get_config()
  for key, value in dict(in_channels=16, filters=24, kernel=5, expand=3, stride=2,
                         activation="swish", se_ratio=0.25, bn_momentum=0.9, bn_epsilon=1e-3,
                         name="block03_k5e3").items():
    assert config[key] == value
  again = blocks.MBConv.from_config(config)
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
  layer = blocks.MBConv(16, 16, 3, 1, 1, name="block00_k3e1")
  layer(np.zeros((1, 4, 4, 16), "float32"))
  names = _leaf_names(layer)
  assert "block00_k3e1_expand" not in names and "block00_k3e1_add" in names
  strided = blocks.MBConv(16, 16, 3, 6, 2, name="block01_k3e6")
  strided(np.zeros((1, 4, 4, 16), "float32"))
  assert "block01_k3e6_add" not in _leaf_names(strided)


def test_invalid_block_is_rejected():
  with pytest.raises(ValueError, match=r"block00_k4e3.kernel: must be a positive odd integer, got 4"):
    blocks.MBConv(16, 16, 4, 3, 1, name="block00_k4e3")


def test_keras_save_load_gives_equal_outputs(tmp_path):
  inputs = keras.Input((8, 8, 16))
  x = blocks.MBConv(16, 16, 3, 6, 1, se_ratio=0.25, name="block01_k3e6")(inputs)
  x = blocks.Identity(name="block02_id")(x)
  model = keras.Model(inputs, x)
  data = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype("float32")
  # Move BN statistics away from their initial values so the check is meaningful.
  model(data, training=True)
  path = str(tmp_path / "block.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  np.testing.assert_allclose(loaded.predict(data, verbose=0), model.predict(data, verbose=0), atol=0)
  assert isinstance(loaded.get_layer("block01_k3e6"), blocks.MBConv)
  assert loaded.get_layer("block01_k3e6").get_config() == model.get_layer("block01_k3e6").get_config()
  identity = blocks.Identity(name="block02_id")
  assert blocks.Identity.from_config(identity.get_config()).get_config() == identity.get_config()


def test_mbconv_layer_equals_flat_builder_block():
  """The supernet's MBConv layer and the standalone model's primitives compute the same thing."""
  arch = arch_lib.Architecture(8, 3, arch_lib.Stem(8, 3, 1), (arch_lib.mbconv(5, 3, 8, 1),),
                               arch_lib.Head(16), se_ratio=0.25, activation="swish")
  flat = builder.build_model(arch)
  layer = blocks.make_block_layer(0, 8, arch.blocks[0], "swish", 0.25)
  x = np.random.default_rng(1).normal(size=(2, 8, 8, 8)).astype("float32")
  layer(x)
  by_name = {l.name: l for l in flat.layers}
  for sub in layer._flatten_layers(include_self=False, recursive=True):
    sub.set_weights(by_name[sub.name].get_weights())
  stem_out = flat.get_layer("stem_conv_act").output
  block_out = flat.get_layer("block00_k5e3_add").output
  probe = keras.Model(flat.input, [stem_out, block_out])
  image = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
  features, expected = probe(image)
  np.testing.assert_allclose(layer(features), expected, atol=1e-5)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
