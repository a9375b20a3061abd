"""Benchmark: host TFLite latency of MobileNetV2 built from our spec vs Keras' own MobileNetV2.

    python -m betanas_tf.bench.reference_latency [--runs=50 --threads=1 --width_multiplier=1.0]

Both networks are converted to fp32, fp16 and int8 (PTQ calibrated on the same
random images) and timed with the LiteRT interpreter, interleaved run by run so
machine noise hits both alike. Prints medians and ours/Keras ratios.
"""

import json
import statistics
import time

from absl import app
from absl import flags
from betanas_tf import cli

FLAGS = flags.FLAGS
def define_flags():
  """Defines this program's flags (only when it runs as a program, so that importing
  several betanas_tf modules into one process never defines a flag twice)."""
  cli.define_timing_flags(warmup_runs=5)
  flags.DEFINE_float("width_multiplier", 1.0, "MobileNetV2 width.")


@cli.reports_errors("reference_latency")
def main(argv):
  del argv
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from betanas_tf import builder, references, tflite  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  calibration = rng.normal(size=(16, 224, 224, 3)).astype(np.float32)
  models = {"ours": builder.build_model(references.mobilenet_v2(FLAGS.width_multiplier)),
            "keras": keras.applications.MobileNetV2(weights=None, alpha=FLAGS.width_multiplier)}
  runners = {}
  for name, model in models.items():
    for fmt in tflite.FORMATS:
      content = tflite.convert(model, fmt, lambda: (x[None] for x in calibration))
      runner = tflite.interpreter(content, FLAGS.threads)
      source = runner.get_input_details()[0]
      runner.set_tensor(source["index"], np.zeros(source["shape"], source["dtype"]))
      for _ in range(FLAGS.warmup_runs):
        runner.invoke()
      runners[(name, fmt)] = (runner, len(content))
  times = {key: [] for key in runners}
  for _ in range(FLAGS.runs):
    for key, (runner, _) in runners.items():
      start = time.perf_counter()
      runner.invoke()
      times[key].append((time.perf_counter() - start) * 1000)
  report = {"threads": FLAGS.threads, "runs": FLAGS.runs, "width_multiplier": FLAGS.width_multiplier,
            "formats": {}}
  print(f"MobileNetV2-{FLAGS.width_multiplier} 224, {FLAGS.threads} thread(s), median of {FLAGS.runs} "
        "interleaved runs:")
  for fmt in tflite.FORMATS:
    ours, theirs = (statistics.median(times[(n, fmt)]) for n in ("ours", "keras"))
    sizes = {n: runners[(n, fmt)][1] for n in ("ours", "keras")}
    report["formats"][fmt] = {"ours_ms": ours, "keras_ms": theirs, "ratio": ours / theirs,
                              "ours_bytes": sizes["ours"], "keras_bytes": sizes["keras"]}
    print(f"  {fmt}: ours {ours:.3f} ms ({sizes['ours'] / 1e6:.1f} MB), keras.applications "
          f"{theirs:.3f} ms ({sizes['keras'] / 1e6:.1f} MB), ratio {ours / theirs:.3f}")
  print("JSON " + json.dumps(report))


if __name__ == "__main__":
  define_flags()
  app.run(main)
