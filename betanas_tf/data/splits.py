"""What a dataset is: its splits (train / arch / eval / full train) and how a split is read as
tf.data, positioned at any step in O(1), shared over workers and replicas (the package
docstring says how)."""

import dataclasses
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from betanas_tf import errors
from betanas_tf.registry import Registry

DATASETS: Registry = Registry("dataset")   # name -> loader(**options) -> Dataset
Batch = Tuple[np.ndarray, np.ndarray]
AUTOTUNE = tf.data.AUTOTUNE


class DatasetNotPreparedError(errors.InputError):
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
  # Where a supernet scores networks (selection, rank benchmarks): more renderings of the
  # arch split's own examples where a dataset can make them (cluttered digits), so a score
  # reads as many images as the eval split without sharing any; None: the arch split.
  score: Optional[Split] = None

  @property
  def scoring(self) -> Split:
    """The split supernets score networks on (`score`, else the arch split)."""
    return self.score if self.score is not None else self.arch

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
