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

import json
import os
import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS
def define_flags():
  """Defines this program's flags (only when it runs as a program, so that importing
  several betanas_tf modules into one process never defines a flag twice)."""
  flags.DEFINE_string("model", None, "A trained Keras 3 model (model.keras from betanas_tf.train).")
  flags.DEFINE_string("arch", None, "Its Architecture JSON (default: arch.json beside --model).")
  flags.DEFINE_string("dataset", "digits", "Dataset (digits, cifar10, imagenet2012, synthetic).")
  flags.DEFINE_string("data_dir", None, "tensorflow-datasets directory.")
  flags.DEFINE_integer("epochs", 2, "QAT fine-tuning epochs.", lower_bound=1)
  flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
  flags.DEFINE_float("lr", 0.005, "SGD learning rate of the fine-tuning.", lower_bound=0.0)
  flags.DEFINE_integer("eval_examples", 0, "Limit the eval split (0 = all of it).", lower_bound=0)
  flags.DEFINE_integer("threads", 1, "Interpreter threads for latency.", lower_bound=1)
  flags.DEFINE_integer("runs", 50, "Timed invocations.", lower_bound=1)
  flags.DEFINE_string("out_dir", None, "Output directory.")


def _accuracy(content, images, labels, threads):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from betanas_tf import tflite  # pylint: disable=import-outside-toplevel
  return float(np.mean(tflite.run(content, images, threads).argmax(-1) == labels))


def run_qat(model_path: str, arch_path: str, out_dir: str):
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from betanas_tf import arch as arch_lib, builder, data, io_utils, tflite  # pylint: disable=import-outside-toplevel
  arch = arch_lib.Architecture.load(arch_path)
  try:
    float_model = keras.saving.load_model(model_path, compile=False)
  except (OSError, ValueError) as error:
    raise ValueError(f"{model_path}: cannot load the Keras model ({error})") from None
  options = {"data_dir": FLAGS.data_dir} if FLAGS.dataset in ("cifar10", "imagenet2012") else {}
  dataset = data.load(FLAGS.dataset, input_size=arch.input_size, **options)
  eval_batches = list(dataset.eval.eval_batches(256))
  eval_x = np.concatenate([b[0] for b in eval_batches])
  eval_y = np.concatenate([b[1] for b in eval_batches])
  if FLAGS.eval_examples:
    eval_x, eval_y = eval_x[:FLAGS.eval_examples], eval_y[:FLAGS.eval_examples]
  train_batches = list(dataset.train.eval_batches(256))
  train_x = np.concatenate([b[0] for b in train_batches])
  train_y = np.concatenate([b[1] for b in train_batches])
  name = arch.name or "model"
  report = {"model": model_path, "architecture": arch.to_compact(), "eval_examples": len(eval_y),
            "qat_epochs": FLAGS.epochs, "threads": FLAGS.threads}

  # 1. Float and PTQ int8, entirely in Keras 3, before tfmot is imported.
  report["float_top1"] = float(np.mean(np.asarray(float_model.predict(eval_x, verbose=0)).argmax(-1) == eval_y))
  ptq = tflite.convert(float_model, "int8", lambda: (x[None] for x in train_x[:128]))
  io_utils.atomic_write_bytes(os.path.join(out_dir, f"{name}_int8_ptq.tflite"), ptq)
  report["ptq_int8_top1"] = _accuracy(ptq, eval_x, eval_y, FLAGS.threads)
  report["ptq_int8_latency"] = tflite.measure_latency(ptq, FLAGS.threads, 5, FLAGS.runs)
  fp32 = tflite.convert(float_model)
  report["fp32_latency"] = tflite.measure_latency(fp32, FLAGS.threads, 5, FLAGS.runs)

  # 2. The tf_keras rebuild, weights by name, then QAT.
  import tensorflow_model_optimization as tfmot  # pylint: disable=import-outside-toplevel
  import tf_keras  # pylint: disable=import-outside-toplevel
  legacy = builder.build_model(arch, backend=tf_keras)
  by_name = {layer.name: layer for layer in float_model.layers if layer.weights}
  for layer in legacy.layers:
    if layer.weights:
      layer.set_weights(by_name[layer.name].get_weights())
  probe = eval_x[:32]
  report["rebuild_max_abs_diff"] = float(np.abs(legacy(probe, training=False).numpy()
                                                - np.asarray(float_model(probe, training=False))).max())
  if report["rebuild_max_abs_diff"] > 1e-5:
    raise ValueError(f"tf_keras rebuild differs from the Keras 3 model by {report['rebuild_max_abs_diff']:.3g}")
  qat_model = tfmot.quantization.keras.quantize_model(legacy)
  qat_model.compile(tf_keras.optimizers.SGD(FLAGS.lr, momentum=0.9),
                    tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
  qat_model.fit(train_x, train_y, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, verbose=0, shuffle=True)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  qat = converter.convert()
  io_utils.atomic_write_bytes(os.path.join(out_dir, f"{name}_int8_qat.tflite"), qat)
  report["qat_int8_top1"] = _accuracy(qat, eval_x, eval_y, FLAGS.threads)
  report["qat_int8_latency"] = tflite.measure_latency(qat, FLAGS.threads, 5, FLAGS.runs)
  report["qat_int8_bytes"], report["ptq_int8_bytes"] = len(qat), len(ptq)
  io_utils.atomic_write_json(os.path.join(out_dir, "qat_report.json"), report)
  return report


def main(argv):
  if len(argv) > 1:
    print(f"qat: error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 1
  arch_path = FLAGS.arch or os.path.join(os.path.dirname(os.path.abspath(FLAGS.model)), "arch.json")
  try:
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    report = run_qat(FLAGS.model, arch_path, FLAGS.out_dir)
  except (ValueError, KeyError) as error:
    print(f"qat: error: {error}", file=sys.stderr)
    return 1
  print(f"top-1 on {report['eval_examples']} eval examples: float {report['float_top1']:.4f}, "
        f"int8 PTQ {report['ptq_int8_top1']:.4f}, int8 QAT {report['qat_int8_top1']:.4f}")
  print(f"host latency ({FLAGS.threads} thread, median): fp32 {report['fp32_latency']['median_ms']:.3f} ms, "
        f"PTQ {report['ptq_int8_latency']['median_ms']:.3f} ms, QAT {report['qat_int8_latency']['median_ms']:.3f} ms")
  print("JSON " + json.dumps({k: v for k, v in report.items()}))
  return 0


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("model")
  flags.mark_flag_as_required("out_dir")
  app.run(main)
