"""Datasets: real digits, step-determined batches positioned in O(1), per-worker shards,
tfds through the real ImageNet layout (prepared offline) and CIFAR-10 (mocked), fast failure."""

import os
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from betanas_tf import data
from betanas_tf.data import preprocess


def _take(ds, n):
  return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_the_flags_name_every_dataset_the_package_registers():
  from betanas_tf import cli  # pylint: disable=import-outside-toplevel
  assert list(cli.BUNDLED_DATASETS) == sorted(data.DATASETS.names())


def test_digits_splits_are_stratified_disjoint_uint8_and_upsampled():
  ds = data.load("digits", input_size=16)
  assert (len(ds.train), len(ds.arch), len(ds.eval), len(ds.full_train)) == (1077, 360, 360, 1437)
  assert ds.train.images.shape == (1077, 16, 16, 3) and ds.train.images.dtype == np.uint8
  assert ds.num_classes == 10
  for split in (ds.train, ds.arch, ds.eval):
    counts = np.bincount(split.labels, minlength=10)
    assert counts.min() >= 0.08 * len(split) and counts.max() <= 0.12 * len(split)
  keys = lambda split: {x.tobytes() for x in split.images}
  assert not keys(ds.train) & keys(ds.arch) and not keys(ds.arch) & keys(ds.eval)
  # The normalisation statistics are the training split's own.
  assert ds.mean[0] == pytest.approx(float(ds.train.images.mean()), rel=1e-6)
  assert abs(float(ds.train.normalize(ds.train.images).mean())) < 1e-3
  assert data.load("digits", input_size=32).train.images.shape[1:] == (32, 32, 3)


def test_batches_depend_only_on_the_step_and_cover_each_epoch():
  split = data.load("digits").train
  straight = _take(split.train_dataset(100), 15)  # crosses epoch boundaries (1077 examples)
  resumed = _take(split.train_dataset(100, start_step=11), 4)
  for k, (images, labels) in enumerate(resumed):
    assert np.array_equal(images, straight[11 + k][0]) and np.array_equal(labels, straight[11 + k][1])
  epoch = np.concatenate([b[1] for b in straight[:11]])[:1077]
  assert np.array_equal(np.sort(epoch), np.sort(split.labels))  # one epoch = every example once
  other_seed = _take(split.train_dataset(100, seed=5), 1)[0][1]
  assert not np.array_equal(other_seed, straight[0][1])
  eval_batches = list(data.load("digits").eval.eval_batches(100))
  assert [len(b[1]) for b in eval_batches] == [100, 100, 100, 60]
  assert eval_batches[0][0].dtype == np.float32


def test_workers_and_replicas_read_disjoint_slices_of_the_global_batch():
  split = data.load("digits").train
  whole = _take(split.train_dataset(64), 3)
  # 2 workers x 2 replicas each: every worker's pipeline yields its 2 replicas' batches in turn.
  shards = [_take(split.train_dataset(64, input_context=tf.distribute.InputContext(2, w, 4)), 6)
            for w in range(2)]
  for step in range(3):
    parts = [shards[w][2 * step + r] for w in range(2) for r in range(2)]
    assert all(p[0].shape == (16, 16, 16, 3) for p in parts)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), whole[step][1])
    assert np.array_equal(np.concatenate([p[0] for p in parts]), whole[step][0])
  with pytest.raises(ValueError, match="`global_batch_size` 10 is not divisible by `num_replicas_in_sync` 4"):
    split.train_dataset(10, input_context=tf.distribute.InputContext(2, 0, 4))


def test_synthetic():
  ds = data.load("synthetic", input_size=24, num_classes=7, synthetic_examples=64)
  images, labels = _take(ds.train.train_dataset(8), 1)[0]
  assert images.shape == (8, 24, 24, 3) and images.dtype == np.uint8
  assert labels.max() < 7 and len(ds.train) == 64


def test_imagenet_from_the_manual_tars_resumes_at_a_bounded_cost(tiny_imagenet):
  ds = data.load("imagenet2012", data_dir=tiny_imagenet, input_size=32, arch_split_size=50)
  assert (len(ds.train), len(ds.arch), len(ds.eval)) == (150, 50, 50) and ds.num_classes == 1000
  split = ds.train
  straight = _take(split.train_dataset(8), 45)  # 360 records: more than two epochs of 150
  assert straight[0][0].shape == (8, 32, 32, 3) and straight[0][0].dtype == np.uint8
  labels = np.concatenate([b[1] for b in straight])
  assert set(labels.tolist()) <= set(range(5))  # the five synsets written
  epoch_records = len(split)
  for start in (0, 7, 19, 33):
    epoch, group, skip = split.position(start * 8)
    assert epoch == start * 8 // epoch_records and skip == start * 8 % epoch_records
    assert skip < epoch_records  # a resume skips at most one group of encoded records
    resumed = _take(split.train_dataset(8, start_step=start), 3)
    for k, (images, labels) in enumerate(resumed):
      assert np.array_equal(images, straight[start + k][0]), start
      assert np.array_equal(labels, straight[start + k][1]), start
  # Each epoch reads every training record once, in a new order.
  first = labels_of = lambda e: np.concatenate([b[1] for b in straight])[e * 150:(e + 1) * 150]
  assert sorted(labels_of(0).tolist()) == sorted(labels_of(1).tolist())
  assert not np.array_equal(first(0), first(1))
  with pytest.raises(ValueError, match=r"train\[:150\] has 1 record file\(s\), fewer than the 2 input pipelines"):
    split.train_dataset(8, input_context=tf.distribute.InputContext(2, 1, 2))
  evaluation = list(ds.eval.eval_dataset(16))
  assert [len(b[1]) for b in evaluation] == [16, 16, 16, 2]
  assert evaluation[0][0].shape == (16, 32, 32, 3)


def test_imagenet_augmentation_is_stateless_in_its_seed():
  from PIL import Image  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel
  pixels = np.random.default_rng(1).integers(0, 255, (300, 400, 3)).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="JPEG")
  encoded = tf.constant(buffer.getvalue())
  seed = tf.constant([3, 4], tf.int64)
  a = preprocess.imagenet_preprocess(encoded, 64, True, seed)
  b = preprocess.imagenet_preprocess(encoded, 64, True, seed)
  c = preprocess.imagenet_preprocess(encoded, 64, True, tf.constant([3, 5], tf.int64))
  assert a.shape == (64, 64, 3) and a.dtype == tf.uint8
  assert np.array_equal(a, b) and not np.array_equal(a, c)
  evaluation = preprocess.imagenet_preprocess(encoded, 224, False, seed)
  assert evaluation.shape == (224, 224, 3)


@pytest.mark.parametrize("name,hint", [("cifar10", "--download"),
                                       ("imagenet2012", "downloads/manual/")])
def test_unprepared_tfds_dataset_fails_fast(tmp_path, name, hint):
  start = time.time()
  with pytest.raises(data.DatasetNotPreparedError) as error:
    data.load(name, data_dir=str(tmp_path))
  assert str(error.value).startswith(f"dataset {name!r} is not prepared in {tmp_path}: ")
  assert hint in str(error.value)
  assert time.time() - start < 5


def test_cifar10_splits_and_preprocessing(tmp_path):
  # The record-file path itself is exercised on the prepared ImageNet above; mock_data
  # has no files, so here: the split layout, the default arch split and the augmentation.
  with tfds.testing.mock_data(num_examples=40):
    ds = data.load("cifar10", data_dir=str(tmp_path), download=True)
    assert ds.train.split == "train[:45000]" and ds.arch.split == "train[45000:]"
    assert ds.eval.split == "test" and ds.full_train.split == "train"
    assert ds.mean == pytest.approx(preprocess.CIFAR_MEAN)
  with pytest.raises(ValueError, match=r"arch_split_size must be in \(0, 50000\) for cifar10"):
    with tfds.testing.mock_data(num_examples=8):
      data.load("cifar10", data_dir=str(tmp_path), download=True, arch_split_size=60000)
  pixels = np.random.default_rng(2).integers(0, 255, (32, 32, 3)).astype(np.uint8)
  encoded = tf.io.encode_png(pixels)
  seed = tf.constant([1, 2], tf.int64)
  train = preprocess.cifar_preprocess(encoded, 32, True, seed)
  assert train.dtype == tf.uint8 and np.array_equal(train, preprocess.cifar_preprocess(encoded, 32, True, seed))
  assert np.array_equal(preprocess.cifar_preprocess(encoded, 32, False, seed), pixels)


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(KeyError) as error:
    data.load("mnist")
  assert str(error.value) == "unknown dataset 'mnist'; valid names: cifar10, cluttered_digits, digits, folder, imagenet2012, synthetic"


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))


def test_a_data_source_survives_the_flags_of_a_child_process():
  # The exporter runs QAT in its own process; the child must read the same DataSource.
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  source = data.DataSource("imagenet2012", "/data/tfds", True, 512, 50)
  script = ("import sys; from absl import flags; from betanas_tf import cli; "
            "cli.define_data_flags(); flags.FLAGS(sys.argv); print(repr(cli.data_source_from_flags()))")
  from betanas_tf import cli  # pylint: disable=import-outside-toplevel
  result = subprocess.run([sys.executable, "-c", script, *cli.data_source_flags(source)], cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=root))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == repr(source)
