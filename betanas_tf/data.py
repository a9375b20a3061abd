"""Datasets for search and retraining: train / arch (held out of TRAIN) / eval splits.

* ``digits``: scikit-learn's bundled real 8x8 digits (1,797 images, offline),
  upsampled bilinearly to the space's input size, stratified 60/20/20 into
  train / arch / eval with a fixed seed.
* ``synthetic``: random images and labels, for smoke and speed runs.
* ``cifar10`` and ``imagenet2012``: tensorflow-datasets from ``--data_dir``;
  the arch split is the last ``arch_split_size`` examples of TRAIN (paper:
  50,000 ImageNet images), the eval split is the official test/validation set.
  A dataset that is not prepared fails at once with instructions; nothing
  touches the network unless ``download=True``.

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
import math
import os
from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

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
                    input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
    """Endless per-replica batches (uint8 images, int32 labels) of the global batch
    `batch_size`, from step `start_step` on; `seed` overrides the split's own."""
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


class ArraySplit(Split):
  """An in-memory split; example position p is example shuffle_(seed, p // N)(p % N)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int = 0,
               mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)):
    if images.dtype != np.uint8:
      raise ValueError(f"ArraySplit holds uint8 pixels, got {images.dtype}")
    self.images, self.labels, self.seed = images, labels.astype(np.int32), seed
    self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

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

  def train_dataset(self, batch_size, start_step=0, seed=None, input_context=None):
    context = _context(input_context)
    per_replica, local_replicas, per_worker = _shares(batch_size, context)
    if per_replica > len(self):
      raise ValueError(f"per-replica batch {per_replica} exceeds the split's {len(self)} examples")
    seed = self.seed if seed is None else seed
    images, labels = tf.constant(self.images), tf.constant(self.labels)
    worker = context.input_pipeline_id

    def batch_of(unit):  # unit = step * local_replicas + replica of this worker
      step, replica = unit // local_replicas, unit % local_replicas
      first = step * batch_size + worker * per_worker + replica * per_replica
      index = self.positions_order(first + tf.range(per_replica, dtype=tf.int64), seed)
      return tf.gather(images, index), tf.gather(labels, index)

    units = tf.data.Dataset.range(start_step * local_replicas, np.iinfo(np.int64).max)
    return units.map(batch_of, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)

  def eval_dataset(self, batch_size):
    return tf.data.Dataset.from_tensor_slices((self.images, self.labels)).batch(batch_size)


@dataclasses.dataclass
class Dataset:
  name: str
  input_size: int
  num_classes: int
  train: Split
  arch: Split
  eval: Split
  full_train: Split   # train + arch: what retraining trains on

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
        f"dataset {name!r} is not prepared in {data_dir}: {TFDS_INSTRUCTIONS[name]}")


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

  def train_dataset(self, batch_size, start_step=0, seed=None, input_context=None):
    context = _context(input_context)
    per_replica, _, per_worker = _shares(batch_size, context)
    seed = self.seed if seed is None else seed
    worker, workers = context.input_pipeline_id, context.num_input_pipelines
    start_record = start_step * per_worker
    records = self._stream(seed, start_record, worker, workers).enumerate(start=start_record)

    def example(position, serialized):
      image, label = self._parse(serialized)
      augment_seed = tf.stack([tf.constant(seed * 1_000 + worker, tf.int64), position])
      return self.preprocess(image, self.input_size, True, augment_seed), label

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


def imagenet_preprocess(encoded, size: int, train: bool, seed):
  """Train: random-resized crop (8-100 % area, 3/4-4/3), cropped before decoding,
  + flip. Eval: shorter side to size/0.875, centre crop. Stateless in `seed`."""
  if train:
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
    image = tf.image.resize(image, (size, size))
    image = tf.image.stateless_random_flip_left_right(
        image, tf.random.experimental.stateless_fold_in(seed, 1))
  else:
    image = tf.io.decode_jpeg(encoded, channels=3)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / 0.875) / tf.reduce_min(shape)
    image = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
    image = tf.image.resize_with_crop_or_pad(image, size, size)
  return _pixels(image)


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


def _load_tfds(name: str, eval_split: str, classes: int, preprocess: Callable, mean, std,
               input_size: int, seed: int, data_dir: Optional[str], arch_split_size: int,
               download: bool = False, **unused_options) -> Dataset:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if not download:
    _check_prepared(name, data_dir)
  builder = tfds.builder(name, data_dir=data_dir)
  if download:
    builder.download_and_prepare()
  splits = builder.info.splits
  total = splits["train"].num_examples if "train" in splits else TRAIN_SIZES[name]
  if not 0 < arch_split_size < total:
    raise ValueError(f"arch_split_size must be in (0, {total}) for {name}, got {arch_split_size}")
  make = lambda split, s: TfdsSplit(builder, split, input_size, s, preprocess, mean, std)
  return Dataset(name, input_size, classes, make(f"train[:{total - arch_split_size}]", seed),
                 make(f"train[{total - arch_split_size}:]", seed + 1), make(eval_split, 0),
                 make("train", seed))


@DATASETS.decorator("cifar10")
def load_cifar10(input_size: int = 32, seed: int = 0, data_dir: Optional[str] = None,
                 arch_split_size: Optional[int] = None, **options) -> Dataset:
  return _load_tfds("cifar10", "test", 10, cifar_preprocess, CIFAR_MEAN, CIFAR_STD, input_size,
                    seed, data_dir, arch_split_size or 5000, **options)


@DATASETS.decorator("imagenet2012")
def load_imagenet(input_size: int = 224, seed: int = 0, data_dir: Optional[str] = None,
                  arch_split_size: Optional[int] = None, **options) -> Dataset:
  return _load_tfds("imagenet2012", "validation", 1000, imagenet_preprocess, IMAGENET_MEAN,
                    IMAGENET_STD, input_size, seed, data_dir, arch_split_size or 50_000, **options)


def load(name: str, **options) -> Dataset:
  """Loads a registered dataset. Every loader takes input_size, seed, num_classes (used by
  synthetic), data_dir, download, synthetic_examples and arch_split_size (None: the
  dataset's default) and ignores those it has no use for."""
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
