"""Datasets for search and retraining: train / arch (held out of TRAIN) / eval splits.

* ``digits``: scikit-learn's bundled real 8x8 digits (1,797 images, offline),
  upsampled bilinearly to the space's input size, stratified 60/20/20 into
  train / arch / eval with a fixed seed.
* ``cluttered_digits``: the same digits, each at a random place on a 32x32 canvas among
  fragments of other digits and noise (`cluttered`), split by source digit like
  ``digits``: a task on which architectures of the micro space differ (rank benchmark).
* ``synthetic``: random images and labels, for smoke and speed runs.
* ``cifar10`` and ``imagenet2012``: tensorflow-datasets from ``--data_dir``;
  the arch split is the last ``arch_split_size`` examples of TRAIN (paper:
  50,000 ImageNet images), the eval split is the official test/validation set.
  A dataset that is not prepared fails at once with instructions; nothing
  touches the network unless ``download=True``.
* ``tfds:NAME``: any prepared tfds image classification dataset, with its own
  classes and splits and generic photo preprocessing.
* ``folder``: your own photos, one sub-folder per class (Keras'
  ``image_dataset_from_directory`` layout), read as files by path
  (`FileSplit`), split by class with a fixed seed.

Every split is tf.data end to end and yields uint8 pixels (normalised on the
device with the split's ``mean`` / ``std``). `Split.train_dataset(batch,
start_step, input_context)` is an endless stream whose batch t is a function of
(seed, t) alone, positioned at ``start_step`` in O(1) of the step:

* in-memory splits: example position -> (epoch, index) -> a stateless
  permutation of the epoch (`tf.random.experimental.index_shuffle`);
* tfds splits: per epoch, the record files in a (seed, epoch) permutation,
  read in groups of ``cycle_length`` files interleaved and shuffled within the
  group; a position is (epoch, group, offset), so a resume opens the right
  group and skips at most one group's records, undecoded, and decodes nothing
  it does not train on. Augmentation uses stateless random ops seeded by
  (seed, worker, example position).

Under tf.distribute each worker reads its own share (`input_context`): for
in-memory data the worker's slice of every global batch, for tfds its own files.

Every loader takes the same keyword options (`DataSource` holds them: the search,
retraining, QAT and the exporter all load through it), ignoring those it has no
use for.
"""

import dataclasses
import json
import os
from typing import Dict, Optional

from betanas_tf import io_utils
# The loaders register themselves in DATASETS.
from betanas_tf.data import arrays, folder, tfds  # pylint: disable=unused-import
from betanas_tf.data.splits import (AUTOTUNE, DATASETS, Batch, Dataset, DatasetNotPreparedError,
                                    Split)
from betanas_tf.data.tfds import TFDS_PREFIX, load_tfds_by_name

DATA_INFO_FILE = "data.json"


def save_data_info(dataset: Dataset, directory: str):
  """Writes `dataset.describe()` (classes, input normalisation) as data.json in `directory`:
  the search and retraining leave it beside their results, the exporter reads it."""
  io_utils.atomic_write_json(os.path.join(directory, DATA_INFO_FILE), dataset.describe())


def load_data_info(directory: str) -> Optional[Dict]:
  """data.json of `directory`, or None if there is none."""
  path = os.path.join(directory, DATA_INFO_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as handle:
    return json.load(handle)


def check_name(name: str) -> str:
  """A registered dataset name or ``tfds:NAME``; else a ValueError listing the valid ones."""
  if name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX):
    return name
  DATASETS.get(name)
  return name


def load(name: str, **options) -> Dataset:
  """Loads a registered dataset or ``tfds:NAME``. Every loader takes input_size, seed,
  num_classes (used by synthetic), data_dir, download, synthetic_examples and
  arch_split_size (None: the dataset's default) and ignores those it has no use for."""
  if name.startswith(TFDS_PREFIX):
    return load_tfds_by_name(check_name(name)[len(TFDS_PREFIX):], **options)
  return DATASETS.get(name)(**options)


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Which dataset, and where it comes from: what the search, retraining, QAT and the
  exporter's calibration data share. `load` gives its splits at a network's input size."""
  name: str = "digits"
  data_dir: Optional[str] = None
  download: bool = False
  synthetic_examples: int = 256
  arch_split_size: Optional[int] = None

  def load(self, input_size: int, seed: int = 0, num_classes: Optional[int] = None) -> Dataset:
    """`num_classes`: the network's, for datasets without their own (synthetic)."""
    return load(self.name, input_size=input_size, seed=seed, num_classes=num_classes,
                data_dir=self.data_dir, download=self.download,
                synthetic_examples=self.synthetic_examples, arch_split_size=self.arch_split_size)
