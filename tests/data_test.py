"""Datasets: real digits splits, step-determined batches, tfds paths (mocked) and fast failure."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from betanas_tf import data


def test_digits_splits_are_stratified_disjoint_and_upsampled():
  ds = data.load("digits", input_size=16)
  assert (len(ds.train), len(ds.arch), len(ds.eval)) == (1077, 360, 360)
  assert ds.train.images.shape == (1077, 16, 16, 3) and ds.num_classes == 10
  for split in (ds.train, ds.arch, ds.eval):
    counts = np.bincount(split.labels, minlength=10)
    assert counts.min() >= 0.08 * len(split) and counts.max() <= 0.12 * len(split)
  keys = lambda split: {x.tobytes() for x in split.images}
  assert not keys(ds.train) & keys(ds.arch) and not keys(ds.arch) & keys(ds.eval)
  assert abs(float(ds.train.images.mean())) < 0.1
  assert data.load("digits", input_size=32).train.images.shape[1:] == (32, 32, 3)


def test_batches_depend_only_on_the_step():
  split = data.load("digits").train
  straight = split.batches(100)
  first = [next(straight) for _ in range(15)]  # crosses epoch boundaries (1077 examples)
  resumed = split.batches(100, start_step=11)
  for step in range(11, 15):
    images, labels = next(resumed)
    assert np.array_equal(images, first[step][0]) and np.array_equal(labels, first[step][1])
  epoch = np.concatenate([b[1] for b in first[:11]])[:1077]
  assert np.array_equal(np.sort(epoch), np.sort(split.labels))  # one epoch = every example once
  eval_batches = list(data.load("digits").eval.eval_batches(100))
  assert [len(b[1]) for b in eval_batches] == [100, 100, 100, 60]


def test_synthetic():
  ds = data.load("synthetic", input_size=24, num_classes=7, synthetic_examples=64)
  images, labels = next(ds.train.batches(8))
  assert images.shape == (8, 24, 24, 3) and labels.max() < 7 and len(ds.train) == 64


@pytest.mark.parametrize("name,hint", [("cifar10", "--download"),
                                       ("imagenet2012", "downloads/manual/")])
def test_unprepared_tfds_dataset_fails_fast(tmp_path, name, hint):
  start = time.time()
  with pytest.raises(data.DatasetNotPreparedError) as error:
    data.load(name, data_dir=str(tmp_path))
  assert str(error.value).startswith(f"dataset {name!r} is not prepared in {tmp_path}: ")
  assert hint in str(error.value)
  assert time.time() - start < 5


def test_cifar10_through_tfds_with_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=40):
    ds = data.load("cifar10", data_dir=str(tmp_path), download=True, arch_split_size=5000)
    assert ds.train.split == "train[:45000]" and ds.arch.split == "train[45000:]"
    assert ds.eval.split == "test"
    images, labels = next(ds.train.batches(8))
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32 and labels.max() < 10
    # Normalised with CIFAR's mean/std: uint8 inputs land in about [-2.5, 2.8].
    assert images.min() >= -2.5 and images.max() <= 2.8
    eval_images, _ = next(ds.eval.eval_batches(4))
    assert eval_images.shape == (4, 32, 32, 3)
  with pytest.raises(ValueError, match=r"arch_split_size must be in \(0, 50000\) for cifar10"):
    with tfds.testing.mock_data(num_examples=8):
      data.load("cifar10", data_dir=str(tmp_path), download=True, arch_split_size=60000)


def test_imagenet_preprocessing_shapes():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  image = tf.cast(tf.random.uniform((300, 400, 3), 0, 255, seed=1), tf.uint8)
  train = data.imagenet_preprocess(image, 224, True, 0)
  evaluation = data.imagenet_preprocess(image, 224, False, 0)
  assert train.shape == (224, 224, 3) and evaluation.shape == (224, 224, 3)
  # Eval: shorter side resized to 256 then a centre crop: equals resizing the crop region.
  assert float(tf.reduce_max(tf.abs(evaluation))) < 3.0


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(KeyError) as error:
    data.load("mnist")
  assert str(error.value) == "unknown dataset 'mnist'; valid names: cifar10, digits, imagenet2012, synthetic"


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
