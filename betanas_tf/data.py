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

Every training split is a deterministic function of (seed, step): batch t of
a run is the same whether or not the run was interrupted and resumed.
"""

import dataclasses
import os
from typing import Callable, Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf

from betanas_tf.registry import Registry

DATASETS: Registry = Registry("dataset")
Batch = Tuple[np.ndarray, np.ndarray]


class DatasetNotPreparedError(RuntimeError):
  """The dataset's files are not in data_dir; the message says how to prepare them."""


class ArraySplit:
  """An in-memory split; batch t comes from a per-epoch permutation seeded by (seed, epoch)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int = 0):
    self.images, self.labels, self.seed = images, labels.astype(np.int32), seed

  def __len__(self):
    return len(self.labels)

  def _order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(len(self))

  def batches(self, batch_size: int, start_step: int = 0) -> Iterator[Batch]:
    """Endless training batches from step `start_step` on."""
    step, orders = start_step, {}
    while True:
      positions = np.arange(step * batch_size, (step + 1) * batch_size)
      epochs = positions // len(self)
      for epoch in set(epochs.tolist()) - set(orders):
        orders[epoch] = self._order(epoch)
      indices = np.array([orders[e][i] for e, i in zip(epochs, positions % len(self))])
      orders = {e: o for e, o in orders.items() if e >= epochs[-1]}
      yield self.images[indices], self.labels[indices]
      step += 1

  def eval_batches(self, batch_size: int) -> Iterator[Batch]:
    """One ordered pass over the split (the last batch may be smaller)."""
    for start in range(0, len(self), batch_size):
      yield self.images[start:start + batch_size], self.labels[start:start + batch_size]


@dataclasses.dataclass
class Dataset:
  name: str
  input_size: int
  num_classes: int
  train: object
  arch: object
  eval: object


def _normalize(images: np.ndarray) -> np.ndarray:
  return ((images - images.mean()) / (images.std() + 1e-8)).astype(np.float32)


@DATASETS.decorator("digits")
def load_digits(input_size: int = 16, seed: int = 0, **unused) -> Dataset:
  """Real handwritten digits bundled with scikit-learn, upsampled to input_size."""
  from sklearn import datasets as sk_datasets  # pylint: disable=import-outside-toplevel
  from sklearn import model_selection  # pylint: disable=import-outside-toplevel
  digits = sk_datasets.load_digits()
  images = digits.images.astype(np.float32)[..., None] / 16.0
  images = tf.image.resize(images, (input_size, input_size), method="bilinear").numpy()
  images = _normalize(np.repeat(images, 3, axis=-1))
  labels = digits.target.astype(np.int32)
  rest_x, eval_x, rest_y, eval_y = model_selection.train_test_split(
      images, labels, test_size=0.2, stratify=labels, random_state=0)
  train_x, arch_x, train_y, arch_y = model_selection.train_test_split(
      rest_x, rest_y, test_size=0.25, stratify=rest_y, random_state=0)
  return Dataset("digits", input_size, 10, ArraySplit(train_x, train_y, seed),
                 ArraySplit(arch_x, arch_y, seed + 1), ArraySplit(eval_x, eval_y, seed + 2))


@DATASETS.decorator("synthetic")
def load_synthetic(input_size: int = 32, num_classes: int = 10, seed: int = 0,
                   synthetic_examples: int = 256, **unused) -> Dataset:
  """Random normal images with random labels (nothing to learn: for speed and smoke runs)."""
  rng = np.random.default_rng(seed)
  def split(n, s):
    images = rng.normal(size=(n, input_size, input_size, 3)).astype(np.float32)
    return ArraySplit(images, rng.integers(num_classes, size=n), s)
  return Dataset("synthetic", input_size, num_classes, split(synthetic_examples, seed),
                 split(max(16, synthetic_examples // 4), seed + 1),
                 split(max(16, synthetic_examples // 4), seed + 2))


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


class TfdsSplit:
  """A tensorflow-datasets split; training order is seeded, and resuming skips records."""

  def __init__(self, builder, split: str, input_size: int, train: bool, seed: int, preprocess):
    self.builder, self.split, self.input_size = builder, split, input_size
    self.train, self.seed, self.preprocess = train, seed, preprocess

  def __len__(self):
    return self.builder.info.splits[self.split].num_examples  # e.g. "train[:45000]"

  def _records(self):
    read_config = __import__("tensorflow_datasets").ReadConfig(
        shuffle_seed=self.seed, interleave_cycle_length=1)
    return self.builder.as_dataset(split=self.split, shuffle_files=self.train,
                                   read_config=read_config, as_supervised=True)

  def batches(self, batch_size: int, start_step: int = 0) -> Iterator[Batch]:
    ds = self._records().repeat().shuffle(10 * batch_size, seed=self.seed,
                                          reshuffle_each_iteration=True)
    ds = ds.skip(start_step * batch_size)  # records are skipped before decoding
    ds = ds.map(lambda x, y: (self.preprocess(x, self.input_size, True, self.seed), y),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for images, labels in ds.batch(batch_size, drop_remainder=True).prefetch(2):
      yield images.numpy(), labels.numpy().astype(np.int32)

  def eval_batches(self, batch_size: int) -> Iterator[Batch]:
    ds = self._records().map(lambda x, y: (self.preprocess(x, self.input_size, False, 0), y),
                             num_parallel_calls=tf.data.AUTOTUNE)
    for images, labels in ds.batch(batch_size).prefetch(2):
      yield images.numpy(), labels.numpy().astype(np.int32)


# Official TRAIN sizes, used when the builder's metadata does not list its splits
# (e.g. under tfds.testing.mock_data).
TRAIN_SIZES = {"cifar10": 50_000, "imagenet2012": 1_281_167}

MEAN_RGB = tf.constant([0.485, 0.456, 0.406]) * 255.0
STDDEV_RGB = tf.constant([0.229, 0.224, 0.225]) * 255.0


def imagenet_preprocess(image, size: int, train: bool, seed: int):
  """Train: random-resized crop (8-100 % area, 3/4-4/3) + flip. Eval: resize 256/224, centre crop."""
  image = tf.cast(image, tf.float32)
  if train:
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4]), min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop_size)
    image = tf.image.resize(image, (size, size))
    image = tf.image.random_flip_left_right(image)
  else:
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / 0.875) / tf.reduce_min(shape)
    image = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
    image = tf.image.resize_with_crop_or_pad(image, size, size)
  return (image - MEAN_RGB) / STDDEV_RGB


def cifar_preprocess(image, size: int, train: bool, seed: int):
  """Train: pad 4, random crop, flip. Both: per-channel normalisation."""
  image = tf.cast(image, tf.float32)
  if size != 32:
    image = tf.image.resize(image, (size, size))
  if train:
    image = tf.image.resize_with_crop_or_pad(image, size + 8, size + 8)
    image = tf.image.random_crop(image, (size, size, 3))
    image = tf.image.random_flip_left_right(image)
  mean = tf.constant([0.4914, 0.4822, 0.4465]) * 255.0
  std = tf.constant([0.2470, 0.2435, 0.2616]) * 255.0
  return (image - mean) / std


def _load_tfds(name: str, eval_split: str, num_classes: int, preprocess: Callable,
               input_size: int, seed: int, data_dir: Optional[str], arch_split_size: int,
               download: bool = False, **unused) -> Dataset:
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
  make = lambda split, train, s: TfdsSplit(builder, split, input_size, train, s, preprocess)
  return Dataset(name, input_size, num_classes, make(f"train[:{total - arch_split_size}]", True, seed),
                 make(f"train[{total - arch_split_size}:]", True, seed + 1),
                 make(eval_split, False, 0))


@DATASETS.decorator("cifar10")
def load_cifar10(input_size: int = 32, seed: int = 0, data_dir: Optional[str] = None,
                 arch_split_size: int = 5000, **kwargs) -> Dataset:
  return _load_tfds("cifar10", "test", 10, cifar_preprocess, input_size, seed, data_dir,
                    arch_split_size, **kwargs)


@DATASETS.decorator("imagenet2012")
def load_imagenet(input_size: int = 224, seed: int = 0, data_dir: Optional[str] = None,
                  arch_split_size: int = 50_000, **kwargs) -> Dataset:
  return _load_tfds("imagenet2012", "validation", 1000, imagenet_preprocess, input_size, seed,
                    data_dir, arch_split_size, **kwargs)


def load(name: str, **kwargs) -> Dataset:
  return DATASETS.get(name)(**kwargs)
