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
import functools
import json
import math
import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from betanas_tf import io_utils
from betanas_tf.registry import Registry

DATASETS: Registry = Registry("dataset")
Batch = Tuple[np.ndarray, np.ndarray]
AUTOTUNE = tf.data.AUTOTUNE


class DatasetNotPreparedError(RuntimeError):
  """The dataset's files are not in data_dir; the message says how to prepare them."""


def _context(input_context: Optional[tf.distribute.InputContext]) -> tf.distribute.InputContext:
  return input_context or tf.distribute.InputContext()


def _shares(batch_size: int, context: tf.distribute.InputContext) -> Tuple[int, int, int]:
  """(per-replica batch, replicas of this worker, per-worker batch) of a global batch."""
  per_replica = context.get_per_replica_batch_size(batch_size)
  per_worker = batch_size // context.num_input_pipelines
  if per_worker % per_replica or batch_size % context.num_input_pipelines:
    raise ValueError(f"batch {batch_size} does not split evenly over {context.num_input_pipelines} "
                     f"worker(s) and {context.num_replicas_in_sync} replicas")
  return per_replica, per_worker // per_replica, per_worker


class Split:
  """What every split offers; `mean` / `std` are per-channel pixel statistics."""
  mean: Tuple[float, float, float]
  std: Tuple[float, float, float]

  def __len__(self) -> int:
    raise NotImplementedError

  def train_dataset(self, batch_size: int, start_step: int = 0, seed: Optional[int] = None,
                    input_context: Optional[tf.distribute.InputContext] = None,
                    augment: bool = True) -> tf.data.Dataset:
    """Endless per-replica batches (uint8 images, int32 labels) of the global batch
    `batch_size`, from step `start_step` on; `seed` overrides the split's own. `augment`:
    the training transform of image files (else the evaluation one); in-memory arrays
    are never augmented."""
    raise NotImplementedError

  def eval_dataset(self, batch_size: int) -> tf.data.Dataset:
    """One ordered pass (uint8 images, int32 labels); the last batch may be smaller."""
    raise NotImplementedError

  def records_to_position(self, batch_size: int, start_step: int,
                          input_context: Optional[tf.distribute.InputContext] = None) -> int:
    """How many records `train_dataset(batch_size, start_step, ...)` reads (undecoded)
    and throws away before its first batch: the cost of a resume."""
    return 0

  def normalize(self, images):
    return ((np.asarray(images, np.float32) - np.asarray(self.mean, np.float32))
            / np.asarray(self.std, np.float32))

  def eval_batches(self, batch_size: int) -> Iterator[Batch]:
    """One ordered pass as normalised float numpy batches (for host-side tools:
    export calibration, QAT, retraining's evaluation)."""
    for images, labels in self.eval_dataset(batch_size):
      yield self.normalize(images.numpy()), labels.numpy().astype(np.int32)


class IndexedSplit(Split):
  """A split of N indexable examples; stream position p is example
  shuffle_(seed, p // N)(p % N), so any position is reached in O(1)."""

  labels: np.ndarray

  def __len__(self):
    return len(self.labels)

  def positions_order(self, positions, seed: int):
    """Example indices of consecutive stream positions (fewer than N of them): a
    stateless permutation per epoch; a batch spans at most two epochs."""
    n = len(self)
    positions = tf.cast(positions, tf.int64)
    epochs, offsets = positions // n, positions % n
    first = epochs[0]
    shuffle = lambda epoch: tf.random.experimental.index_shuffle(
        offsets, tf.stack([tf.constant(seed, tf.int64), epoch]), n - 1)
    return tf.where(epochs == first, shuffle(first), shuffle(first + 1))

  def replica_positions(self, batch_size: int, input_context):
    """(per-replica batch, units -> the stream positions of that replica batch), where unit =
    step * local replicas + replica: each worker's slice of every global batch."""
    context = _context(input_context)
    per_replica, local_replicas, per_worker = _shares(batch_size, context)
    if per_replica > len(self):
      raise ValueError(f"per-replica batch {per_replica} exceeds the split's {len(self)} examples")
    worker = context.input_pipeline_id

    def positions(unit):
      step, replica = unit // local_replicas, unit % local_replicas
      first = step * batch_size + worker * per_worker + replica * per_replica
      return first + tf.range(per_replica, dtype=tf.int64)
    return per_replica, local_replicas, positions


class ArraySplit(IndexedSplit):
  """An in-memory split of uint8 images."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int = 0,
               mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)):
    if images.dtype != np.uint8:
      raise ValueError(f"ArraySplit holds uint8 pixels, got {images.dtype}")
    self.images, self.labels, self.seed = images, labels.astype(np.int32), seed
    self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

  def train_dataset(self, batch_size, start_step=0, seed=None, input_context=None, augment=True):
    del augment  # in-memory arrays are never augmented
    _, local_replicas, positions = self.replica_positions(batch_size, input_context)
    seed = self.seed if seed is None else seed
    images, labels = tf.constant(self.images), tf.constant(self.labels)

    def batch_of(unit):
      index = self.positions_order(positions(unit), seed)
      return tf.gather(images, index), tf.gather(labels, index)

    units = tf.data.Dataset.range(start_step * local_replicas, np.iinfo(np.int64).max)
    return units.map(batch_of, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)

  def eval_dataset(self, batch_size):
    return tf.data.Dataset.from_tensor_slices((self.images, self.labels)).batch(batch_size)


class FileSplit(IndexedSplit):
  """Image files named by path (only the paths are in memory), read and decoded in the
  pipeline, positioned like an in-memory split (O(1) in the step)."""

  def __init__(self, paths: Sequence[str], labels: Sequence[int], input_size: int, seed: int,
               preprocess: Callable, mean, std):
    self.paths, self.labels = np.array(list(paths), dtype=str), np.asarray(labels, np.int32)
    self.input_size, self.seed, self.preprocess = input_size, seed, preprocess
    self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

  def train_dataset(self, batch_size, start_step=0, seed=None, input_context=None, augment=True):
    per_replica, local_replicas, positions = self.replica_positions(batch_size, input_context)
    seed = self.seed if seed is None else seed
    paths, labels = tf.constant(self.paths), tf.constant(self.labels)

    def replica_batch(unit):
      where = positions(unit)
      return tf.data.Dataset.from_tensor_slices((where, self.positions_order(where, seed)))

    def example(position, index):
      augment_seed = tf.stack([tf.constant(seed, tf.int64), position])
      image = self.preprocess(tf.io.read_file(tf.gather(paths, index)), self.input_size,
                              augment, augment_seed)
      return image, tf.gather(labels, index)

    units = tf.data.Dataset.range(start_step * local_replicas, np.iinfo(np.int64).max)
    return (units.flat_map(replica_batch)
            .map(example, num_parallel_calls=AUTOTUNE, deterministic=True)
            .batch(per_replica, drop_remainder=True).prefetch(AUTOTUNE))

  def eval_dataset(self, batch_size):
    def example(path, label):
      image = self.preprocess(tf.io.read_file(path), self.input_size, False, tf.zeros([2], tf.int64))
      return image, label
    return (tf.data.Dataset.from_tensor_slices((self.paths, self.labels))
            .map(example, num_parallel_calls=AUTOTUNE, deterministic=True).batch(batch_size))


@dataclasses.dataclass
class Dataset:
  name: str
  input_size: int
  num_classes: int
  train: Split
  arch: Split
  eval: Split
  full_train: Split   # train + arch: what retraining trains on
  class_names: Optional[Tuple[str, ...]] = None   # label i's name (stored with results)

  def describe(self) -> Dict:
    """What a model trained on this data needs at inference: its classes and the input
    normalisation (pixel values 0..255 RGB; the model takes (pixel - mean) / std)."""
    return {"dataset": self.name, "input_size": self.input_size, "num_classes": self.num_classes,
            "class_names": list(self.class_names or [str(i) for i in range(self.num_classes)]),
            "mean": list(self.mean), "std": list(self.std)}

  @property
  def mean(self):
    return self.train.mean

  @property
  def std(self):
    return self.train.std


def _to_uint8(images: np.ndarray) -> np.ndarray:
  return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def _array_dataset(name, input_size, num_classes, seed, train, arch, evaluation) -> Dataset:
  """Splits of uint8 arrays with the training split's global pixel mean / std."""
  mean, std = float(train[0].mean()), float(train[0].std()) + 1e-8
  make = lambda xy, s: ArraySplit(xy[0], xy[1], s, (mean,) * 3, (std,) * 3)
  full = (np.concatenate([train[0], arch[0]]), np.concatenate([train[1], arch[1]]))
  return Dataset(name, input_size, num_classes, make(train, seed), make(arch, seed + 1),
                 make(evaluation, seed + 2), make(full, seed))


@DATASETS.decorator("digits")
def load_digits(input_size: int = 16, seed: int = 0, **unused_options) -> Dataset:
  """Real handwritten digits bundled with scikit-learn, upsampled to input_size."""
  from sklearn import datasets as sk_datasets  # pylint: disable=import-outside-toplevel
  from sklearn import model_selection  # pylint: disable=import-outside-toplevel
  digits = sk_datasets.load_digits()
  images = digits.images.astype(np.float32)[..., None] / 16.0
  images = tf.image.resize(images, (input_size, input_size), method="bilinear").numpy()
  images = _to_uint8(np.repeat(images, 3, axis=-1))
  labels = digits.target.astype(np.int32)
  rest_x, eval_x, rest_y, eval_y = model_selection.train_test_split(
      images, labels, test_size=0.2, stratify=labels, random_state=0)
  train_x, arch_x, train_y, arch_y = model_selection.train_test_split(
      rest_x, rest_y, test_size=0.25, stratify=rest_y, random_state=0)
  return _array_dataset("digits", input_size, 10, seed, (train_x, train_y), (arch_x, arch_y),
                        (eval_x, eval_y))


@DATASETS.decorator("cluttered_digits")
def load_cluttered_digits(input_size: int = 32, seed: int = 0, **unused_options) -> Dataset:
  """The digits, each enlarged onto a 32x32 canvas at a random place among fragments of
  other digits and noise (`cluttered.generate`), resized to input_size; split by source
  digit exactly as ``digits`` is (no digit in two splits), with `eval_copies` canvases per
  eval digit (generated apart) against `copies` per train / arch digit."""
  return _array_dataset("cluttered_digits", input_size, 10, seed, *_cluttered_splits(input_size))


@functools.lru_cache(maxsize=4)
def _cluttered_splits(input_size: int):
  """(train, arch, eval) (images, labels) of `load_cluttered_digits`, generated once per
  process and size (a rank benchmark loads it for every search), read-only."""
  from sklearn import datasets as sk_datasets  # pylint: disable=import-outside-toplevel
  from sklearn import model_selection  # pylint: disable=import-outside-toplevel
  from betanas_tf import cluttered  # pylint: disable=import-outside-toplevel
  digits = sk_datasets.load_digits()
  spec = cluttered.ClutterSpec()
  def to_pixels(canvases):
    images = canvases[..., None]
    if input_size != spec.canvas:
      images = tf.image.resize(images, (input_size, input_size), method="bilinear").numpy()
    return _to_uint8(np.repeat(images, 3, axis=-1))
  canvases, source = cluttered.generate(digits.images / 16.0, spec)
  images = to_pixels(canvases)
  labels = digits.target.astype(np.int32)
  index = np.arange(len(labels))
  rest, eval_index = model_selection.train_test_split(index, test_size=0.2, stratify=labels,
                                                      random_state=0)
  train_index, arch_index = model_selection.train_test_split(
      rest, test_size=0.25, stratify=labels[rest], random_state=0)
  def split(sources):
    chosen = np.isin(source, sources)
    return images[chosen], labels[source[chosen]]
  eval_canvases, eval_source = cluttered.generate(
      digits.images[eval_index] / 16.0, dataclasses.replace(spec, copies=spec.eval_copies),
      seed=cluttered.GENERATION_SEED + 1)
  splits = (split(train_index), split(arch_index),
            (to_pixels(eval_canvases), labels[eval_index][eval_source]))
  for array in (a for pair in splits for a in pair):
    array.flags.writeable = False
  return splits




@DATASETS.decorator("synthetic")
def load_synthetic(input_size: int = 32, num_classes: Optional[int] = None, seed: int = 0,
                   synthetic_examples: int = 256, **unused_options) -> Dataset:
  """Random uint8 images with random labels (nothing to learn: for speed and smoke runs) of
  `num_classes` classes (default 10: give the network's)."""
  num_classes = num_classes or 10
  rng = np.random.default_rng(seed)
  def split(n):
    return (rng.integers(0, 256, size=(n, input_size, input_size, 3), dtype=np.uint8),
            rng.integers(num_classes, size=n).astype(np.int32))
  small = max(16, synthetic_examples // 4)
  return _array_dataset("synthetic", input_size, num_classes, seed, split(synthetic_examples),
                        split(small), split(small))


# tensorflow-datasets ---------------------------------------------------------------

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
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)


def _pixels(image):
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _crop_window(shape, seed):
  """A random-resized-crop window (8-100 % of the area, aspect 3/4-4/3) of an image of
  `shape`, stateless in `seed`: (offset_y, offset_x, height, width)."""
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
      aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])


def _resize_and_flip(image, size: int, seed):
  image = tf.image.resize(image, (size, size))
  return tf.image.stateless_random_flip_left_right(
      image, tf.random.experimental.stateless_fold_in(seed, 1))


def _centre_crop(image, size: int):
  """Shorter side to size / 0.875, then the centre size x size."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = (size / 0.875) / tf.reduce_min(shape)
  image = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
  return tf.image.resize_with_crop_or_pad(image, size, size)


def imagenet_preprocess(encoded, size: int, train: bool, seed):
  """JPEG bytes. Train: random-resized crop, cropped before decoding, + flip. Eval: shorter
  side to size/0.875, centre crop. Stateless in `seed`."""
  if train:
    window = _crop_window(tf.image.extract_jpeg_shape(encoded), seed)
    image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
    return _pixels(_resize_and_flip(image, size, seed))
  return _pixels(_centre_crop(tf.io.decode_jpeg(encoded, channels=3), size))


def image_preprocess(encoded, size: int, train: bool, seed):
  """`imagenet_preprocess` for any image file TensorFlow decodes (JPEG, PNG, BMP, GIF's first
  frame): JPEGs are still cropped before decoding, the others decoded whole."""
  def other():
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    if train:
      window = _crop_window(tf.shape(image), seed)
      image = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
      return _pixels(_resize_and_flip(image, size, seed))
    return _pixels(_centre_crop(image, size))
  return tf.cond(tf.io.is_jpeg(encoded), lambda: imagenet_preprocess(encoded, size, train, seed),
                 other)


def cifar_preprocess(encoded, size: int, train: bool, seed):
  """Train: pad 4, random crop, flip (stateless in `seed`)."""
  image = tf.cast(tf.io.decode_png(encoded, channels=3), tf.float32)
  if size != 32:
    image = tf.image.resize(image, (size, size))
  if train:
    image = tf.image.resize_with_crop_or_pad(image, size + 8, size + 8)
    image = tf.image.stateless_random_crop(image, (size, size, 3), seed)
    image = tf.image.stateless_random_flip_left_right(
        image, tf.random.experimental.stateless_fold_in(seed, 1))
  return _pixels(image)


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


# Image folders -------------------------------------------------------------------------

FOLDER_SPLIT_SEED = 0   # the same splits for every run and stage: retraining never sees eval


def _list_folder(root: str, class_names: Optional[List[str]] = None):
  """(paths, labels, class names) of ``root/<class>/.../<image>`` as Keras'
  `image_dataset_from_directory` lists them (classes sorted; only .jpeg/.jpg/.png/.bmp/.gif
  files count as images, anything else is not an example)."""
  import keras  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(root):
    raise ValueError(f"{root}: not a directory (--dataset=folder needs --data_dir=ROOT holding "
                     "one sub-folder of images per class)")
  try:
    listing = keras.utils.image_dataset_from_directory(
        root, labels="inferred", class_names=class_names, shuffle=False, batch_size=None,
        verbose=False)
  except ValueError as error:
    raise ValueError(f"{root}: {error}") from None
  names = list(listing.class_names)
  paths = list(listing.file_paths)
  if len(names) < 2 or not paths:
    raise ValueError(f"{root}: found {len(paths)} images in {len(names)} class folder(s); "
                     "--dataset=folder needs at least 2 class sub-folders of images")
  labels = [names.index(os.path.relpath(p, root).split(os.sep)[0]) for p in paths]
  return paths, labels, names


def check_images(paths: Sequence[str]):
  """One clear error naming the first file that is not a readable image."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  for path in paths:
    try:
      with Image.open(path) as image:
        image.verify()
    except Exception as error:  # pylint: disable=broad-except
      raise ValueError(f"{path}: not a readable image ({type(error).__name__}: {error}); "
                       "remove or replace it") from None


def _stratified(paths, labels, count: int, names):
  """(rest, held out) with `count` examples held out, stratified by class, fixed seed."""
  from sklearn import model_selection  # pylint: disable=import-outside-toplevel
  counts = np.bincount(labels, minlength=len(names))
  if counts.min() < 3:
    small = names[int(counts.argmin())]
    raise ValueError(f"class {small!r} has {counts.min()} image(s); every class needs at least 3 "
                     "(for the train, arch and eval splits)")
  count = min(max(count, len(names)), len(paths) - len(names))
  rest_p, held_p, rest_y, held_y = model_selection.train_test_split(
      list(paths), list(labels), test_size=count, stratify=list(labels),
      random_state=FOLDER_SPLIT_SEED)
  return (rest_p, rest_y), (held_p, held_y)


@DATASETS.decorator("folder")
def load_folder(input_size: int = 224, seed: int = 0, data_dir: Optional[str] = None,
                arch_split_size: Optional[int] = None, **unused_options) -> Dataset:
  """Your own photos: ``data_dir/<class>/<image>`` (class names = folder names, sorted), or
  ``data_dir/train/<class>/...`` with ``data_dir/val/<class>/...`` for evaluation. Without
  val/, 20 % of each class is held out for evaluation; the arch split is `arch_split_size`
  (default 20 %) of what remains; all stratified by class with a fixed seed. Every image
  is checked once at load (a corrupt one is an error naming it)."""
  if not data_dir:
    raise ValueError("--dataset=folder needs --data_dir=ROOT holding one sub-folder of images "
                     "per class")
  train_dir, val_dir = os.path.join(data_dir, "train"), os.path.join(data_dir, "val")
  if os.path.isdir(train_dir) and os.path.isdir(val_dir):
    paths, labels, names = _list_folder(train_dir)
    eval_paths, eval_labels, _ = _list_folder(val_dir, names)
    rest, evaluation = (paths, labels), (eval_paths, eval_labels)
  else:
    paths, labels, names = _list_folder(data_dir)
    rest, evaluation = _stratified(paths, labels, round(0.2 * len(paths)), names)
  train, arch = _stratified(rest[0], rest[1], arch_split_size or round(0.2 * len(rest[0])),
                            names)
  check_images(list(rest[0]) + list(evaluation[0]))
  make = lambda split, s: FileSplit(split[0], split[1], input_size, s, image_preprocess,
                                    IMAGENET_MEAN, IMAGENET_STD)
  return Dataset("folder", input_size, len(names), make(train, seed), make(arch, seed + 1),
                 make(evaluation, seed + 2), make(rest, seed), class_names=tuple(names))


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


def names_help() -> str:
  return ", ".join(DATASETS.names()) + ", or tfds:NAME (any prepared tfds image classification dataset)"


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
