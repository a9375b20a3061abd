"""Test session set-up: quiet TensorFlow, tests importable from the repository root."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
  # Under `-n 2` two test processes share the cores: one intra-op thread each (and in the
  # programs the tests start, which inherit it) instead of TensorFlow's one per core in
  # each, which oversubscribes the machine and made the suite slower.
  os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # pylint: disable=wrong-import-position


@pytest.fixture(scope="session")
def tiny_imagenet(tmp_path_factory):
  """A tiny imagenet2012 (5 synsets x 40 train JPEGs, 50 validation JPEGs) in the
  layout users download, prepared once per session by tfds' own builder, offline."""
  from betanas_tf.bench import tiny_imagenet  # pylint: disable=import-outside-toplevel
  return tiny_imagenet.prepare(str(tmp_path_factory.mktemp("tfds")))


def pytest_collection_modifyitems(config, items):
  """Slow tests first (a stable sort: each module's order is kept): under `-n 2` the long
  ones start first and short ones fill in at the end, instead of one long test running
  alone at the end."""
  del config
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)
