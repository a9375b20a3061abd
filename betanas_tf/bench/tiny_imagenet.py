"""A tiny ImageNet in the layout users download, prepared by tfds' own builder.

For tests and benchmarks of the real ImageNet path, and for users who want to check
their setup before the real tars arrive:

    python -m betanas_tf.bench.tiny_imagenet --data_dir=/tmp/tiny_tfds [--per_class=40 --size=40]

`ILSVRC2012_img_train.tar` holds one tar per synset (`n01440764.tar` ...) of small
real JPEGs; `ILSVRC2012_img_val.tar` holds `ILSVRC2012_val_%08d.JPEG` files, which
tensorflow-datasets labels from its own validation ground truth. Both go in
`<data_dir>/downloads/manual/`; `tfds.builder("imagenet2012").download_and_prepare()`
then writes the TFRecords without touching the network.
"""

import io
import os
import tarfile

import numpy as np


def _jpeg(rng: np.random.Generator, size: int, label: int) -> bytes:
  """A JPEG of size..2*size pixels a side (ImageNet's photos average about 400x350)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  height, width = int(rng.integers(size, 2 * size)), int(rng.integers(size, 2 * size))
  # A class-dependent colour and stripe frequency plus noise: learnable, not trivial.
  y, x = np.mgrid[0:height, 0:width]
  base = np.stack([np.sin((x + y * (label % 3)) * (0.1 + 0.05 * (label % 7))) * 60 + 40 * c
                   for c in range(3)], -1)
  pixels = np.clip(base + 100 + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format="JPEG", quality=85)
  return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_manual_tars(manual_dir: str, num_classes: int = 5, per_class: int = 40,
                      num_val: int = 50, size: int = 40, seed: int = 0):
  """Writes the two ILSVRC2012 tars; returns the synsets used."""
  import tensorflow_datasets.datasets.imagenet2012 as pkg  # pylint: disable=import-outside-toplevel
  labels_path = os.path.join(os.path.dirname(pkg.__file__), "labels.txt")
  with open(labels_path) as handle:
    synsets = [line.strip() for line in handle if line.strip()][:num_classes]
  rng = np.random.default_rng(seed)
  os.makedirs(manual_dir, exist_ok=True)
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), "w") as outer:
    for label, synset in enumerate(synsets):
      inner_bytes = io.BytesIO()
      with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
        for i in range(per_class):
          _add(inner, f"{synset}_{i}.JPEG", _jpeg(rng, size, label))
      _add(outer, f"{synset}.tar", inner_bytes.getvalue())
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), "w") as val:
    for i in range(1, num_val + 1):
      _add(val, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(rng, size, i % num_classes))
  return synsets


def prepare(data_dir: str, **kwargs) -> str:
  """Writes the tars under data_dir/downloads/manual and prepares imagenet2012 there."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  write_manual_tars(os.path.join(data_dir, "downloads", "manual"), **kwargs)
  builder = tfds.builder("imagenet2012", data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.path.join(data_dir, "downloads", "manual")))
  return data_dir


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=import-outside-toplevel,ungrouped-imports
  flags.DEFINE_string("data_dir", None, "tensorflow-datasets directory to prepare it in.")
  flags.DEFINE_integer("num_classes", 5, "Synsets (the first of ImageNet's 1000).", lower_bound=1,
                       upper_bound=1000)
  flags.DEFINE_integer("per_class", 40, "Training JPEGs per synset.", lower_bound=1)
  flags.DEFINE_integer("num_val", 50, "Validation JPEGs.", lower_bound=1, upper_bound=50_000)
  flags.DEFINE_integer("size", 40, "Shorter side of the JPEGs (the longer is up to twice).",
                       lower_bound=8)
  flags.mark_flag_as_required("data_dir")
  app.run(lambda argv: print(prepare(flags.FLAGS.data_dir, num_classes=flags.FLAGS.num_classes,
                                     per_class=flags.FLAGS.per_class, num_val=flags.FLAGS.num_val,
                                     size=flags.FLAGS.size)))
