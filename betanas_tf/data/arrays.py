"""In-memory datasets: scikit-learn's digits, the cluttered digits canvas and synthetic data."""

import dataclasses
import functools
from typing import Optional

import numpy as np
import tensorflow as tf

from betanas_tf.data.splits import DATASETS, ArraySplit, Dataset

def _to_uint8(images: np.ndarray) -> np.ndarray:
  return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def _array_dataset(name, input_size, num_classes, seed, train, arch, evaluation,
                   score=None) -> Dataset:
  """Splits of uint8 arrays with the training split's global pixel mean / std."""
  mean, std = float(train[0].mean()), float(train[0].std()) + 1e-8
  make = lambda xy, s: ArraySplit(xy[0], xy[1], s, (mean,) * 3, (std,) * 3)
  full = (np.concatenate([train[0], arch[0]]), np.concatenate([train[1], arch[1]]))
  return Dataset(name, input_size, num_classes, make(train, seed), make(arch, seed + 1),
                 make(evaluation, seed + 2), make(full, seed),
                 score=make(score, seed + 3) if score is not None else None)


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
  eval digit (generated apart) against `copies` per train / arch digit; the scoring split
  renders the arch digits `score_copies` times more (generated apart), so a supernet scores
  on as many images as the eval split holds, none of them an eval digit."""
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
  score_canvases, score_source = cluttered.generate(
      digits.images[arch_index] / 16.0, dataclasses.replace(spec, copies=spec.score_copies),
      seed=cluttered.GENERATION_SEED + 2)
  splits = (split(train_index), split(arch_index),
            (to_pixels(eval_canvases), labels[eval_index][eval_source]),
            (to_pixels(score_canvases), labels[arch_index][score_source]))
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
