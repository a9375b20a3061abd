"""Your own photos: one sub-folder per class, read as files by path, split by class with a
fixed seed."""

import os
from typing import List, Optional, Sequence

import numpy as np

from betanas_tf.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, image_preprocess
from betanas_tf.data.splits import DATASETS, Dataset, FileSplit

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
