"""Benchmark: the ImageNet training pipeline on real JPEGs, and the cost of a resume.

    python -m betanas_tf.bench.input_pipeline [--images=2000 --size=350 --batch_size=64]

Writes a tiny ImageNet of `--images` real JPEGs (shorter side `--size`..2x, about the
size of ImageNet's photos at the default) in the layout users download, prepares it with
tensorflow-datasets' own builder (offline), then measures on this host:

* images/s of `TfdsSplit.train_dataset` at `--input_size` (read, crop-before-decode,
  resize, flip, batch; uint8 out), after a warm-up;
* the time to the first batch of a pipeline positioned at step 10 and at step 10,000
  (a resume), interleaved `--repeats` times, and the records each skips to get there.
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags
from betanas_tf import cli

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_integer("images", 2000, "Training JPEGs.", lower_bound=100)
  flags.DEFINE_integer("size", 350, "Shorter side of the JPEGs.", lower_bound=16)
  flags.DEFINE_integer("input_size", 224, "Network input side.", lower_bound=8)
  flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
  flags.DEFINE_integer("batches", 30, "Timed batches.", lower_bound=1)
  flags.DEFINE_integer("repeats", 5, "Resume timings per position.", lower_bound=1)
  flags.DEFINE_string("data_dir", None, "Where to prepare it (default: a temporary folder).")


@cli.reports_errors("input_pipeline")
def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  from betanas_tf import data  # pylint: disable=import-outside-toplevel
  from betanas_tf.bench import tiny_imagenet  # pylint: disable=import-outside-toplevel
  data_dir = FLAGS.data_dir or tempfile.mkdtemp(prefix="tiny_imagenet_")
  classes = 10
  if not os.path.exists(os.path.join(data_dir, "imagenet2012")):
    start = time.perf_counter()
    tiny_imagenet.prepare(data_dir, num_classes=classes, per_class=FLAGS.images // classes,
                          num_val=50, size=FLAGS.size)
    print(f"prepared {FLAGS.images} JPEGs in {time.perf_counter() - start:.1f} s in {data_dir}")
  dataset = data.load("imagenet2012", data_dir=data_dir, input_size=FLAGS.input_size,
                      arch_split_size=50)
  split = dataset.train
  iterator = iter(split.train_dataset(FLAGS.batch_size))
  for _ in range(3):
    next(iterator)
  start = time.perf_counter()
  for _ in range(FLAGS.batches):
    images, _ = next(iterator)
  elapsed = time.perf_counter() - start
  assert images.dtype.name == "uint8"
  rate = FLAGS.batches * FLAGS.batch_size / elapsed

  def first_batch(step):
    start = time.perf_counter()
    next(iter(split.train_dataset(FLAGS.batch_size, start_step=step)))
    return time.perf_counter() - start

  resume = {10: [], 10_000: []}
  for _ in range(FLAGS.repeats):
    for step in resume:
      resume[step].append(first_batch(step))
  report = {
      "images": len(split), "jpeg_shorter_side": FLAGS.size, "input_size": FLAGS.input_size,
      "batch_size": FLAGS.batch_size, "files": len(split.files), "train_images_per_s": rate,
      "resume_first_batch_s": {str(k): float(np.median(v)) for k, v in resume.items()},
      "resume_records_skipped": {str(k): split.records_to_position(FLAGS.batch_size, k)
                                 for k in resume},
      "cpus": os.cpu_count(),
  }
  print(f"training pipeline at {FLAGS.input_size}x{FLAGS.input_size}, batch {FLAGS.batch_size}: "
        f"{rate:.0f} images/s on {os.cpu_count()} CPUs")
  for step, times in resume.items():
    print(f"resume at step {step:6d}: first batch after {np.median(times):.3f} s (median of "
          f"{len(times)}), {split.records_to_position(FLAGS.batch_size, step)} records skipped")
  print("JSON " + json.dumps(report))
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
