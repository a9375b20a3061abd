"""tensorflow-datasets: CIFAR-10, ImageNet and any prepared ``tfds:NAME``, read from their
record files (nothing touches the network without ``download``)."""

import dataclasses
import math
import os
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from betanas_tf.data.preprocess import (CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD,
                                        cifar_preprocess, image_preprocess, imagenet_preprocess)
from betanas_tf.data.splits import (AUTOTUNE, DATASETS, Dataset, DatasetNotPreparedError, Split,
                                    _context, _shares)

TFDS_GENERIC_INSTRUCTIONS = ("run once with --download (needs internet), or copy a prepared "
                             "tensorflow_datasets/{name} directory into --data_dir")
TFDS_INSTRUCTIONS = {
    "cifar10": "run once with --download (needs internet), or copy a prepared "
               "tensorflow_datasets/cifar10 directory into --data_dir",
    "imagenet2012": "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar by hand from "
                    "image-net.org into <data_dir>/downloads/manual/, then run once with --download "
                    "to prepare the TFRecords (no internet is needed for that step)",
}


def _check_prepared(name: str, data_dir: Optional[str]):
  """Fails fast, before tfds can try the network, if `name` is not prepared in data_dir."""
  data_dir = data_dir or os.path.expanduser("~/tensorflow_datasets")
  root = os.path.join(data_dir, name)
  prepared = os.path.isdir(root) and any(
      os.path.exists(os.path.join(dirpath, "dataset_info.json")) for dirpath, _, _ in os.walk(root))
  if not prepared:
    raise DatasetNotPreparedError(
        f"dataset {name!r} is not prepared in {data_dir}: "
        + TFDS_INSTRUCTIONS.get(name, TFDS_GENERIC_INSTRUCTIONS.format(name=name)))


class TfdsSplit(Split):
  """A tensorflow-datasets split read from its record files (see the module docstring).

  Args:
    builder: a prepared tfds builder.
    split: a split name, possibly sliced (``train[:-50000]``).
    input_size: the output side.
    preprocess: (encoded image, size, train, stateless seed) -> uint8 [size, size, 3].
    mean, std: per-channel pixel statistics of the dataset.
    cycle_length: record files read at once (the shuffling group).
    shuffle_buffer: records shuffled within a group (undecoded).
  """

  def __init__(self, builder, split: str, input_size: int, seed: int, preprocess: Callable,
               mean, std, cycle_length: int = 16, shuffle_buffer: int = 10_000):
    self.builder, self.split, self.input_size, self.seed = builder, split, input_size, seed
    self.preprocess, self.mean, self.std = preprocess, tuple(mean), tuple(std)
    self.cycle_length, self.shuffle_buffer = cycle_length, shuffle_buffer
    self._instructions = None

  def _files(self):
    """(file names, records to skip, records to take) of the split's record files."""
    if self._instructions is None:
      instructions = self.builder.info.splits[self.split].file_instructions
      self._instructions = (np.array([str(i.filename) for i in instructions]),
                            np.array([i.skip for i in instructions], np.int64),
                            np.array([i.take for i in instructions], np.int64))
    return self._instructions

  @property
  def files(self):
    return self._files()[0]

  @property
  def takes(self):
    return self._files()[2]

  def __len__(self):
    return int(self.takes.sum())

  # ---- records ---------------------------------------------------------------------

  def _file_records(self, index):
    files, skips, takes = (tf.constant(a) for a in self._files())
    return tf.data.TFRecordDataset(tf.gather(files, index)).skip(tf.gather(skips, index)).take(
        tf.gather(takes, index))

  def _parse(self, serialized):
    """Image bytes (still encoded) and label of one record."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    example = self.builder.info.features.deserialize_example(
        serialized, decoders={"image": tfds.decode.SkipDecoding()})
    return example["image"], tf.cast(example["label"], tf.int32)

  def epoch_files(self, epoch: int, worker: int = 0, workers: int = 1) -> np.ndarray:
    """Indices of the files `worker` reads in `epoch`, in order."""
    order = tf.random.experimental.stateless_shuffle(
        tf.range(len(self.files), dtype=tf.int64), seed=tf.constant([self.seed, epoch], tf.int64))
    return order.numpy()[worker::workers]

  def position(self, record: int, worker: int = 0, workers: int = 1) -> Tuple[int, int, int]:
    """(epoch, group, records to skip in the group) of the worker's record position."""
    if worker >= len(self.files):
      raise ValueError(f"{self.split} has {len(self.files)} record file(s), fewer than the "
                       f"{workers} input pipelines reading it: every worker needs a file of its own")
    epoch = 0
    while True:
      files = self.epoch_files(epoch, worker, workers)
      groups = [int(self.takes[files[g:g + self.cycle_length]].sum())
                for g in range(0, len(files), self.cycle_length)]
      if record < sum(groups):
        break
      record -= sum(groups)
      epoch += 1
    group = 0
    while record >= groups[group]:
      record -= groups[group]
      group += 1
    return epoch, group, record

  def records_to_position(self, batch_size, start_step, input_context=None):
    context = _context(input_context)
    per_worker = _shares(batch_size, context)[2]
    return self.position(start_step * per_worker, context.input_pipeline_id,
                         context.num_input_pipelines)[2]

  def _stream(self, seed: int, start_record: int, worker: int, workers: int) -> tf.data.Dataset:
    """The worker's endless record stream from `start_record` (undecoded)."""
    start_epoch, start_group, skip = self.position(start_record, worker, workers)
    count = len(self.files)
    groups_per_epoch = math.ceil(len(range(worker, count, workers)) / self.cycle_length)

    def epoch_stream(epoch):
      order = tf.random.experimental.stateless_shuffle(
          tf.range(count, dtype=tf.int64), seed=tf.stack([tf.constant(self.seed, tf.int64), epoch]))
      files = order[worker::workers]
      first = tf.where(epoch == start_epoch, tf.constant(start_group, tf.int64), 0)

      def group_stream(group):
        members = files[group * self.cycle_length:(group + 1) * self.cycle_length]
        records = tf.data.Dataset.from_tensor_slices(members).interleave(
            self._file_records, cycle_length=self.cycle_length, block_length=1,
            num_parallel_calls=AUTOTUNE, deterministic=True)
        shuffle_seed = ((seed * 1_000_003 + epoch) * 10_007 + worker) * 1_009 + group
        # A graph-level seed of this function's own: the order must not depend on the
        # process-wide seed (and TF cannot combine a global seed of 0 with a tensor seed).
        tf.compat.v1.set_random_seed(1)
        return records.shuffle(self.shuffle_buffer, seed=shuffle_seed)

      stream = tf.data.Dataset.range(first, groups_per_epoch).flat_map(group_stream)
      return stream.skip(tf.where(epoch == start_epoch, tf.constant(skip, tf.int64), 0))

    return tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_stream)

  # ---- datasets ----------------------------------------------------------------------

  def train_dataset(self, batch_size, start_step=0, seed=None, input_context=None, augment=True):
    context = _context(input_context)
    per_replica, _, per_worker = _shares(batch_size, context)
    seed = self.seed if seed is None else seed
    worker, workers = context.input_pipeline_id, context.num_input_pipelines
    start_record = start_step * per_worker
    records = self._stream(seed, start_record, worker, workers).enumerate(start=start_record)

    def example(position, serialized):
      image, label = self._parse(serialized)
      augment_seed = tf.stack([tf.constant(seed * 1_000 + worker, tf.int64), position])
      return self.preprocess(image, self.input_size, augment, augment_seed), label

    return (records.map(example, num_parallel_calls=AUTOTUNE, deterministic=True)
            .batch(per_replica, drop_remainder=True).prefetch(AUTOTUNE))

  def eval_dataset(self, batch_size):
    records = tf.data.Dataset.range(len(self.files)).flat_map(self._file_records)

    def example(serialized):
      image, label = self._parse(serialized)
      return self.preprocess(image, self.input_size, False, tf.zeros([2], tf.int64)), label

    return records.map(example, num_parallel_calls=AUTOTUNE, deterministic=True).batch(
        batch_size).prefetch(AUTOTUNE)


# Official TRAIN sizes, used when the builder's metadata does not list its splits
# (e.g. under tfds.testing.mock_data).

TRAIN_SIZES = {"cifar10": 50_000, "imagenet2012": 1_281_167}


def _load_tfds(name: str, eval_split: Optional[str], preprocess: Callable, mean, std,
               input_size: int, seed: int, data_dir: Optional[str], arch_split_size: Optional[int],
               default_arch_split: Callable[[int], int], download: bool = False,
               **unused_options) -> Dataset:
  """A prepared tfds image classification dataset (features "image" and "label"); the arch
  split is the end of TRAIN; `eval_split` None: "test", else "validation"."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if not download:
    _check_prepared(name, data_dir)
  builder = tfds.builder(name, data_dir=data_dir)
  if download:
    builder.download_and_prepare()
  features, splits = builder.info.features, builder.info.splits
  if "image" not in features or "label" not in features:
    raise ValueError(f"tfds dataset {name!r} is not an image classification dataset (features: "
                     f"{', '.join(features)}; it needs 'image' and 'label')")
  if "train" in splits:
    total = splits["train"].num_examples
  elif name in TRAIN_SIZES:  # tfds.testing.mock_data's builders list no splits
    total = TRAIN_SIZES[name]
  else:
    raise ValueError(f"tfds dataset {name!r} has no train split (splits: {', '.join(splits)})")
  eval_split = eval_split or next((s for s in ("test", "validation") if s in splits), None)
  if eval_split is None:
    raise ValueError(f"tfds dataset {name!r} has no test or validation split to evaluate on "
                     f"(splits: {', '.join(splits)})")
  arch_split_size = arch_split_size or default_arch_split(total)
  if not 0 < arch_split_size < total:
    raise ValueError(f"arch_split_size must be in (0, {total}) for {name}, got {arch_split_size}")
  make = lambda split, s: TfdsSplit(builder, split, input_size, s, preprocess, mean, std)
  label = features["label"]
  return Dataset(name, input_size, label.num_classes, make(f"train[:{total - arch_split_size}]", seed),
                 make(f"train[{total - arch_split_size}:]", seed + 1), make(eval_split, 0),
                 make("train", seed), class_names=tuple(label.names))


@DATASETS.decorator("cifar10")
def load_cifar10(input_size: int = 32, seed: int = 0, data_dir: Optional[str] = None,
                 arch_split_size: Optional[int] = None, **options) -> Dataset:
  return _load_tfds("cifar10", "test", cifar_preprocess, CIFAR_MEAN, CIFAR_STD, input_size,
                    seed, data_dir, arch_split_size, lambda total: 5000, **options)


@DATASETS.decorator("imagenet2012")
def load_imagenet(input_size: int = 224, seed: int = 0, data_dir: Optional[str] = None,
                  arch_split_size: Optional[int] = None, **options) -> Dataset:
  return _load_tfds("imagenet2012", "validation", imagenet_preprocess, IMAGENET_MEAN,
                    IMAGENET_STD, input_size, seed, data_dir, arch_split_size, lambda total: 50_000,
                    **options)


TFDS_PREFIX = "tfds:"


def load_tfds_by_name(tfds_name: str, input_size: int = 224, seed: int = 0,
                      data_dir: Optional[str] = None, arch_split_size: Optional[int] = None,
                      **options) -> Dataset:
  """Any prepared tfds image classification dataset (``--dataset=tfds:oxford_flowers102``):
  its own classes and splits (evaluated on "test", else "validation"), the arch split 10 %
  of TRAIN (at most 50,000), and generic photo preprocessing (random-resized crop + flip for
  training, resize + centre crop for evaluation, any image format) with ImageNet statistics."""
  dataset = _load_tfds(tfds_name, None, image_preprocess, IMAGENET_MEAN, IMAGENET_STD,
                       input_size, seed, data_dir, arch_split_size,
                       lambda total: min(50_000, max(1, total // 10)), **options)
  return dataclasses.replace(dataset, name=TFDS_PREFIX + tfds_name)
