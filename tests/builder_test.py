"""Standalone builder: golden parameter counts, names, and the tf_keras rebuild."""

import numpy as np
import keras
import pytest

from betanas_tf import builder
from betanas_tf import cost
from betanas_tf import references
from betanas_tf import spaces


def _trainable(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("width", [1.0, 1.4, 0.5])
def test_mobilenet_v2_matches_keras_applications(width):
  ours = builder.build_model(references.mobilenet_v2(width))
  theirs = keras.applications.MobileNetV2(weights=None, alpha=width)
  assert _trainable(ours) == _trainable(theirs)
  assert ours.output_shape == theirs.output_shape == (None, 1000)
  if width == 1.0:
    assert _trainable(ours) == 3_504_872


def test_structural_layer_names():
  space = spaces.get_space("micro")
  model = builder.build_model(space.arch_from_choices(space.choices_from_string("k3e6-k5e3-id")))
  names = [layer.name for layer in model.layers]
  assert names[:4] == ["image", "stem_conv", "stem_conv_bn", "stem_conv_act"]
  assert "block00_k3e6_expand" in names and "block01_k5e3_dw_bn" in names
  assert not any(name.startswith("block02") for name in names)  # identity adds nothing
  assert names[-3:] == ["head_conv_act", "pool", "classifier"]


def test_dropout_se_swish_change_the_graph_as_specified():
  arch = references.mobilenet_v2().replace(se_ratio=0.25, activation="swish", dropout=0.2)
  model = builder.build_model(arch)
  assert model.get_layer("dropout").rate == 0.2
  assert _trainable(model) == cost.architecture_cost(arch).params
  assert model.get_layer("block05_k3e6_se_reduce").filters == int(192 * 0.25)


def test_tf_keras_rebuild_has_same_names_and_outputs():
  import tf_keras  # pylint: disable=import-outside-toplevel
  space = spaces.get_space("micro")
  arch = space.arch_from_choices([0, 2, 3]).replace(se_ratio=0.25)
  ours = builder.build_model(arch)
  legacy = builder.build_model(arch, backend=tf_keras)
  assert isinstance(legacy, tf_keras.Model)
  assert [l.name for l in ours.layers] == [l.name for l in legacy.layers]
  for layer in ours.layers:
    legacy.get_layer(layer.name).set_weights(layer.get_weights())
  x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype("float32")
  np.testing.assert_allclose(legacy(x, training=False).numpy(), np.asarray(ours(x, training=False)),
                             atol=1e-5)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
