"""Quantization-aware training to int8, in its own process.

    python -m betanas_tf.qat --model=runs/retrain/model.keras --dataset=digits --epochs=2 \\
        --out_dir=runs/qat

tfmot (tensorflow-model-optimization) accepts only tf_keras models, and importing
it sets TF_USE_LEGACY_KERAS=1 for the whole process (docs/design.md §4). So this
module is the only one that imports it, and only inside `main`. Order: the float
Keras 3 model is evaluated and post-training-quantized (PTQ) first; then the same
Architecture is rebuilt with tf_keras layers (the builder is backend-agnostic),
the float weights are copied by structural layer name (parity is checked),
`tfmot.quantization.keras.quantize_model` wraps it, it is fine-tuned, and
converted to an int8 TFLite model. Writes <name>_int8_qat.tflite,
<name>_int8_ptq.tflite and qat_report.json (float / PTQ / QAT top-1 on the eval
split and host latency).
"""

import dataclasses
import json
import os
from typing import Dict

from absl import app
from absl import flags

from betanas_tf import cli
from betanas_tf import data as data_lib

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class QatConfig:
  """Quantization-aware fine-tuning and the figures reported."""
  data: data_lib.DataSource = data_lib.DataSource()
  epochs: int = 2
  batch_size: int = 64
  lr: float = 0.005          # SGD (momentum 0.9) learning rate of the fine-tuning
  eval_examples: int = 0     # limit the eval split (0 = all of it)
  threads: int = 1           # interpreter threads for latency
  runs: int = 50             # timed invocations

  def __post_init__(self):
    from betanas_tf import numbers  # pylint: disable=import-outside-toplevel
    numbers.check_limits(self, {"epochs": (1, None), "batch_size": (1, None), "lr": (0.0, None),
                                "eval_examples": (0, None), "threads": (1, None),
                                "runs": (1, None)})


def define_flags():
  """Defines this program's flags (only when it runs as a program, so that importing
  several betanas_tf modules into one process never defines a flag twice)."""
  d = QatConfig()
  flags.DEFINE_string("model", None, "A trained Keras 3 model (model.keras from betanas_tf.train).")
  flags.DEFINE_string("arch", None, "Its Architecture JSON (default: arch.json beside --model).")
  cli.define_data_flags()
  flags.DEFINE_integer("epochs", d.epochs, "QAT fine-tuning epochs.", lower_bound=1)
  flags.DEFINE_integer("batch_size", d.batch_size, "Batch size.", lower_bound=1)
  flags.DEFINE_float("lr", d.lr, "SGD learning rate of the fine-tuning.", lower_bound=0.0)
  flags.DEFINE_integer("eval_examples", d.eval_examples, "Limit the eval split (0 = all of it).",
                       lower_bound=0)
  cli.define_timing_flags(threads=d.threads, warmup_runs=None, runs=d.runs)
  flags.DEFINE_string("out_dir", None, "Output directory.")


def _accuracy(content, images, labels, threads):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from betanas_tf import tflite  # pylint: disable=import-outside-toplevel
  return float(np.mean(tflite.run(content, images, threads).argmax(-1) == labels))


def run_qat(model_path: str, arch, out_dir: str, config: QatConfig = QatConfig()) -> Dict:
  """PTQ and QAT int8 of the trained Keras 3 model at `model_path` (whose Architecture is
  `arch`); writes the .tflite files and qat_report.json to `out_dir` and returns the report.
  Imports tfmot, which flips `tf.keras` for the whole process: run it in its own process
  (the CLI, or the exporter's --quantize=int8_qat, do)."""
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from betanas_tf import builder, io_utils, tflite  # pylint: disable=import-outside-toplevel
  c = config
  os.makedirs(out_dir, exist_ok=True)
  try:
    float_model = keras.saving.load_model(model_path, compile=False)
  except (OSError, ValueError) as error:
    raise ValueError(f"{model_path}: cannot load the Keras model ({error})") from None
  from betanas_tf import divergence  # pylint: disable=import-outside-toplevel
  bad = divergence.nonfinite_variables(float_model.weights)
  if bad:
    raise divergence.Diverged(f"{model_path}: {divergence.describe(bad)} hold NaN or infinity "
                              "(the training diverged); nothing quantized")
  dataset = c.data.load(arch.input_size, num_classes=arch.num_classes)
  eval_batches = list(dataset.eval.eval_batches(256))
  eval_x = np.concatenate([b[0] for b in eval_batches])
  eval_y = np.concatenate([b[1] for b in eval_batches])
  if c.eval_examples:
    eval_x, eval_y = eval_x[:c.eval_examples], eval_y[:c.eval_examples]
  train_batches = list(dataset.train.eval_batches(256))
  train_x = np.concatenate([b[0] for b in train_batches])
  train_y = np.concatenate([b[1] for b in train_batches])
  name = arch.name or "model"
  report = {"model": model_path, "architecture": arch.to_compact(), "eval_examples": len(eval_y),
            "qat_epochs": c.epochs, "threads": c.threads}

  # 1. Float and PTQ int8, entirely in Keras 3, before tfmot is imported.
  report["float_top1"] = float(np.mean(np.asarray(float_model.predict(eval_x, verbose=0)).argmax(-1) == eval_y))
  ptq = tflite.convert(float_model, "int8", lambda: (x[None] for x in train_x[:128]))
  io_utils.atomic_write_bytes(os.path.join(out_dir, f"{name}_int8_ptq.tflite"), ptq)
  report["ptq_int8_top1"] = _accuracy(ptq, eval_x, eval_y, c.threads)
  report["ptq_int8_latency"] = tflite.measure_latency(ptq, c.threads, 5, c.runs)
  fp32 = tflite.convert(float_model)
  report["fp32_latency"] = tflite.measure_latency(fp32, c.threads, 5, c.runs)

  # 2. The tf_keras rebuild, weights by name, then QAT.
  import tensorflow_model_optimization as tfmot  # pylint: disable=import-outside-toplevel
  import tf_keras  # pylint: disable=import-outside-toplevel
  legacy = builder.build_model(arch, backend=tf_keras)
  builder.copy_all_weights_by_name(float_model, legacy, model_path)
  probe = eval_x[:32]
  report["rebuild_max_abs_diff"] = float(np.abs(legacy(probe, training=False).numpy()
                                                - np.asarray(float_model(probe, training=False))).max())
  if report["rebuild_max_abs_diff"] > 1e-5:
    raise ValueError(f"tf_keras rebuild differs from the Keras 3 model by {report['rebuild_max_abs_diff']:.3g}")
  qat_model = tfmot.quantization.keras.quantize_model(legacy)
  qat_model.compile(tf_keras.optimizers.SGD(c.lr, momentum=0.9),
                    tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
  history = qat_model.fit(train_x, train_y, batch_size=c.batch_size, epochs=c.epochs, verbose=0,
                          shuffle=True)
  losses = history.history["loss"]
  if not all(np.isfinite(losses)):
    raise divergence.Diverged(f"the QAT fine-tuning loss is not finite ({losses}); no QAT "
                              "model written (lower --lr)")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  qat = converter.convert()
  io_utils.atomic_write_bytes(os.path.join(out_dir, f"{name}_int8_qat.tflite"), qat)
  report["qat_int8_top1"] = _accuracy(qat, eval_x, eval_y, c.threads)
  report["qat_int8_latency"] = tflite.measure_latency(qat, c.threads, 5, c.runs)
  report["qat_int8_bytes"], report["ptq_int8_bytes"] = len(qat), len(ptq)
  io_utils.atomic_write_json(os.path.join(out_dir, "qat_report.json"), report)
  return report


@cli.reports_errors("qat", KeyError)
def main(argv):
  # A stop signal stops it at once: QAT is one task, rerun whole (its files are written
  # atomically, each when it is complete).
  del argv
  from betanas_tf import arch as arch_lib  # pylint: disable=import-outside-toplevel
  arch_path = FLAGS.arch or os.path.join(os.path.dirname(os.path.abspath(FLAGS.model)), "arch.json")
  config = cli.config_from_flags(QatConfig, data=cli.data_source_from_flags())
  report = run_qat(FLAGS.model, arch_lib.Architecture.load(arch_path), FLAGS.out_dir, config)
  print(f"top-1 on {report['eval_examples']} eval examples: float {report['float_top1']:.4f}, "
        f"int8 PTQ {report['ptq_int8_top1']:.4f}, int8 QAT {report['qat_int8_top1']:.4f}")
  print(f"host latency ({config.threads} thread, median): fp32 {report['fp32_latency']['median_ms']:.3f} ms, "
        f"PTQ {report['ptq_int8_latency']['median_ms']:.3f} ms, QAT {report['qat_int8_latency']['median_ms']:.3f} ms")
  print("JSON " + json.dumps(report))
  return 0


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("model")
  flags.mark_flag_as_required("out_dir")
  app.run(main)
