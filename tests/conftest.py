"""Test session set-up: quiet TensorFlow, tests importable from the repository root."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # pylint: disable=wrong-import-position


@pytest.fixture(scope="session")
def tiny_imagenet(tmp_path_factory):
  """A tiny imagenet2012 (5 synsets x 40 train JPEGs, 50 validation JPEGs) in the
  layout users download, prepared once per session by tfds' own builder, offline."""
  from betanas_tf.bench import tiny_imagenet  # pylint: disable=import-outside-toplevel
  return tiny_imagenet.prepare(str(tmp_path_factory.mktemp("tfds")))
