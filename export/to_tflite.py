"""Exports an Architecture to TFLite (fp32 / fp16 / int8), checks parity, measures latency.

    python export/to_tflite.py --arch=runs/a/arch.json --weights=runs/a/model.keras \\
        --quantize=fp32,fp16,int8 --dataset=imagenet2012 --data_dir=... --out_dir=export_a
    python export/to_tflite.py --reference=mobilenet_v2 --quantize=fp32,int8 --dataset=synthetic \\
        --out_dir=/tmp/mnv2 [--latency_table=configs/pixel1_latency.json] [--android --adb_serial=X]

Without --weights the network is randomly initialised (BatchNorm statistics set
on representative data so activations are in range) and the report says the
figures are latency-only. Writes <name>_<format>.tflite, report.json and
report.md to --out_dir; fp32 parity worse than 1e-4 fails the export.
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from betanas_tf import android  # pylint: disable=g-import-not-at-top
from betanas_tf import arch as arch_lib
from betanas_tf import data as data_lib
from betanas_tf import io_utils
from betanas_tf import references

FLAGS = flags.FLAGS
def define_flags():
  """Defines this program's flags (only when it runs as a program, so that importing
  several betanas_tf modules into one process never defines a flag twice)."""
  flags.DEFINE_string("arch", None, "Architecture JSON file.")
  flags.DEFINE_enum("reference", None, references.REFERENCES.names(), "A reference architecture.")
  flags.DEFINE_float("width_multiplier", 1.0, "Width multiplier of --reference.", lower_bound=0.05)
  flags.DEFINE_string("weights", None, "Trained weights: a .keras model or a .weights.h5 file.")
  flags.DEFINE_list("quantize", ["fp32"], "Formats among fp32, fp16, int8, int8_qat (QAT needs "
                    "--weights=<model.keras>; it runs betanas_tf.qat in its own process).")
  flags.DEFINE_integer("qat_epochs", 2, "Fine-tuning epochs of int8_qat.", lower_bound=1)
  flags.DEFINE_bool("int8_io", False, "int8 model inputs and outputs (with int8).")
  flags.DEFINE_enum("dataset", "synthetic", data_lib.DATASETS.names(),
                    "Representative / parity data.")
  flags.DEFINE_string("data_dir", None, "tensorflow-datasets directory.")
  flags.DEFINE_integer("parity_examples", 128, "Inputs for the parity checks (>= 100).", lower_bound=16)
  flags.DEFINE_integer("representative_examples", 64, "Calibration inputs for int8.", lower_bound=1)
  flags.DEFINE_integer("threads", 1, "Host interpreter threads (1, as on a phone core).", lower_bound=1)
  flags.DEFINE_integer("warmup_runs", 10, "Warm-up invocations.", lower_bound=0)
  flags.DEFINE_integer("runs", 50, "Timed invocations.", lower_bound=1)
  flags.DEFINE_string("latency_table", None, "Latency table for the predicted latency and its error.")
  flags.DEFINE_bool("android", False, "Also time each .tflite on a phone (adb + benchmark_model).")
  flags.DEFINE_string("adb", "adb", "adb executable.")
  flags.DEFINE_string("adb_serial", None, "Phone serial (adb -s).")
  flags.DEFINE_string("benchmark_binary", "/data/local/tmp/benchmark_model", "benchmark_model on the phone.")
  flags.DEFINE_string("out_dir", None, "Output directory.")
  flags.DEFINE_string("name", None, "File name stem (default: the architecture's name).")
  flags.DEFINE_float("fp32_tolerance", 1e-4, "Largest allowed fp32 max abs difference.", lower_bound=0)

FP32_PARITY_EXAMPLES = 16


class ExportError(RuntimeError):
  pass


def _load_arch():
  given = [f for f in ("arch", "reference") if getattr(FLAGS, f)]
  if len(given) != 1:
    raise ValueError("give exactly one of --arch, --reference")
  if FLAGS.arch:
    arch = arch_lib.Architecture.load(FLAGS.arch)
    return arch if FLAGS.width_multiplier == 1.0 else arch.with_width(FLAGS.width_multiplier)
  return references.get_reference(FLAGS.reference, FLAGS.width_multiplier)


def _load_weights(model, path):
  import keras  # pylint: disable=import-outside-toplevel
  from betanas_tf import supernet  # pylint: disable=import-outside-toplevel
  if not os.path.exists(path):
    raise ValueError(f"{path}: weights file not found")
  if path.endswith(".weights.h5"):
    model.load_weights(path)
    return
  if path.endswith(".keras"):
    trained = keras.saving.load_model(path, compile=False)
    copied = supernet.copy_weights_by_name(trained, model)
    expected = len([l for l in model.layers if l.weights])
    if copied != expected:
      raise ValueError(f"{path}: only {copied} of {expected} layers match the architecture by name")
    return
  raise ValueError(f"{path}: --weights must be a .keras model or a .weights.h5 file")


def _images(arch, count, seed):
  """`count` input images for the architecture, from --dataset."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  options = dict(input_size=arch.input_size, seed=seed)
  if FLAGS.dataset in ("cifar10", "imagenet2012"):
    options.update(data_dir=FLAGS.data_dir)
  elif FLAGS.dataset == "synthetic":
    options.update(num_classes=arch.num_classes, synthetic_examples=max(count, 16))
  dataset = data_lib.load(FLAGS.dataset, **options)
  images = np.concatenate([b for b, _ in dataset.eval.eval_batches(64)] +
                          [b for b, _ in dataset.train.eval_batches(64)])
  if len(images) < count:
    images = np.concatenate([images] * (count // len(images) + 1))
  return images[:count].astype(np.float32)


def _calibrate_bn(model, images):
  """Random weights: set BN moving statistics from data so activations stay in range."""
  import keras  # pylint: disable=import-outside-toplevel
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = 0.0
  model(images, training=True)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = 0.9


def export(arch, out_dir, name):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from betanas_tf import builder, cost, latency, tflite  # pylint: disable=import-outside-toplevel
  formats = [f.strip() for f in FLAGS.quantize]
  unknown = sorted(set(formats) - set(tflite.FORMATS) - {"int8_qat"})
  if unknown or not formats:
    raise ValueError(f"--quantize takes a subset of {','.join(tflite.FORMATS)},int8_qat, "
                     f"got {','.join(FLAGS.quantize)}")
  if "int8_qat" in formats and not (FLAGS.weights or "").endswith(".keras"):
    raise ValueError("--quantize=int8_qat needs --weights=<a trained model.keras>")
  qat = "int8_qat" in formats
  formats = [f for f in formats if f != "int8_qat"]
  model = builder.build_model(arch)
  parity_images = _images(arch, FLAGS.parity_examples, seed=1)
  if FLAGS.weights:
    _load_weights(model, FLAGS.weights)
  else:
    _calibrate_bn(model, _images(arch, 64, seed=2))
  float_out = np.asarray(model.predict(parity_images, batch_size=32, verbose=0))
  representative = _images(arch, FLAGS.representative_examples, seed=3)
  total = cost.architecture_cost(arch)
  report = {"name": name, "architecture": arch.to_compact(), "macs": total.macs,
            "params": total.params, "weights": FLAGS.weights,
            "latency_only": FLAGS.weights is None, "dataset": FLAGS.dataset,
            "threads": FLAGS.threads, "formats": {}}
  table = latency.LatencyTable.load(FLAGS.latency_table) if FLAGS.latency_table else None
  if table is not None:
    report["predicted_latency_ms"] = table.predict(arch)
    report["latency_table_target"] = table.target
  bench = None
  if FLAGS.android:
    bench = android.AndroidBenchmark(FLAGS.adb, FLAGS.adb_serial, FLAGS.benchmark_binary)
    try:
      bench.serial = bench.check()
    except android.AndroidError as error:
      report["android_error"] = str(error)
      bench = None
  for fmt in formats:
    content = tflite.convert(model, fmt, lambda: (x[None] for x in representative),
                             int8_io=FLAGS.int8_io and fmt == "int8")
    path = os.path.join(out_dir, f"{name}_{fmt}.tflite")
    io_utils.atomic_write_bytes(path, content)
    outputs = tflite.run(content, parity_images, FLAGS.threads)
    entry = {"file": os.path.basename(path), "bytes": len(content),
             "host_latency": tflite.measure_latency(content, FLAGS.threads, FLAGS.warmup_runs, FLAGS.runs),
             "ops": tflite.op_counts(content)}
    if fmt == "fp32":
      diff = float(np.abs(outputs[:FP32_PARITY_EXAMPLES] - float_out[:FP32_PARITY_EXAMPLES]).max())
      entry["max_abs_diff_vs_keras"] = diff
      entry["parity_examples"] = FP32_PARITY_EXAMPLES
      if diff > FLAGS.fp32_tolerance:
        report["formats"][fmt] = entry
        io_utils.atomic_write_json(os.path.join(out_dir, "report.json"), report)
        raise ExportError(f"fp32 parity failed: max abs diff {diff:.3g} > {FLAGS.fp32_tolerance:g}")
    elif fmt == "fp16":
      entry["max_abs_diff_vs_keras"] = float(np.abs(outputs - float_out).max())
      entry["parity_examples"] = len(parity_images)
    else:
      agree = float(np.mean(outputs.argmax(-1) == float_out.argmax(-1)))
      entry["top1_agreement_vs_float"] = agree
      entry["parity_examples"] = len(parity_images)
    if bench is not None:
      try:
        entry["android_avg_ms"] = bench.measure(path, FLAGS.threads, FLAGS.warmup_runs, FLAGS.runs)
      except android.AndroidError as error:
        report["android_error"] = str(error)
        bench = None
    if table is not None and fmt == "fp32":
      # The error only means something against the kind of target the table was measured on.
      on_host = table.target.get("kind") == "host"
      measured = entry["host_latency"]["median_ms"] if on_host else entry.get("android_avg_ms")
      if measured:
        entry["lut_error_pct"] = 100.0 * (report["predicted_latency_ms"] - measured) / measured
    report["formats"][fmt] = entry
  if qat:
    report["int8_qat"] = _quantization_aware(arch, out_dir, name)
  io_utils.atomic_write_json(os.path.join(out_dir, "report.json"), report)
  io_utils.atomic_write_text(os.path.join(out_dir, "report.md"), markdown(report))
  return report


def _quantization_aware(arch, out_dir, name):
  """Runs betanas_tf.qat in its own process (tfmot flips tf.keras process-wide) and returns
  its report: float / PTQ int8 / QAT int8 top-1 on the eval split and host latency."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory(dir=out_dir) as work:
    arch_path = os.path.join(work, "arch.json")
    arch.replace(name=name).save(arch_path)
    command = [sys.executable, "-m", "betanas_tf.qat", f"--model={FLAGS.weights}", f"--arch={arch_path}",
               f"--dataset={FLAGS.dataset}", f"--epochs={FLAGS.qat_epochs}", f"--out_dir={work}",
               f"--threads={FLAGS.threads}", f"--runs={FLAGS.runs}"]
    if FLAGS.data_dir:
      command.append(f"--data_dir={FLAGS.data_dir}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
      raise ExportError(f"quantization-aware training failed: {result.stderr.strip().splitlines()[-1]}")
    os.replace(os.path.join(work, f"{name}_int8_qat.tflite"), os.path.join(out_dir, f"{name}_int8_qat.tflite"))
    with open(os.path.join(work, "qat_report.json")) as handle:
      return json.load(handle)


def markdown(report) -> str:
  lines = [f"# TFLite export: {report['name']}", "",
           f"`{report['architecture']}`", "",
           f"MACs {report['macs'] / 1e6:.1f}M, params {report['params'] / 1e6:.3f}M, "
           f"host threads {report['threads']}."]
  if report["latency_only"]:
    lines += ["", "**Randomly initialised weights: latency figures only** (accuracy-free parity)."]
  if "predicted_latency_ms" in report:
    error = report["formats"].get("fp32", {}).get("lut_error_pct")
    lines += ["", f"Latency table ({report['latency_table_target'].get('kind', '?')}) predicts "
                  f"{report['predicted_latency_ms']:.3f} ms" +
              (f", {error:+.1f} % vs measured fp32." if error is not None else
               " (no fp32 measurement on the table's target to compare).")]
  lines += ["", "| format | size (KB) | host median (ms) | host p90 (ms) | parity | Android avg (ms) |",
            "|---|---|---|---|---|---|"]
  for fmt, entry in report["formats"].items():
    if "top1_agreement_vs_float" in entry:
      parity = f"top-1 agreement {entry['top1_agreement_vs_float']:.3f} ({entry['parity_examples']} inputs)"
    else:
      parity = f"max abs diff {entry['max_abs_diff_vs_keras']:.2e} ({entry['parity_examples']} inputs)"
    phone = f"{entry['android_avg_ms']:.3f}" if "android_avg_ms" in entry else "-"
    lines.append(f"| {fmt} | {entry['bytes'] / 1024:.1f} | {entry['host_latency']['median_ms']:.3f} | "
                 f"{entry['host_latency']['p90_ms']:.3f} | {parity} | {phone} |")
  if "int8_qat" in report:
    q = report["int8_qat"]
    lines += ["", f"Quantization-aware int8 ({q['qat_epochs']} epochs) on {q['eval_examples']} eval "
                  f"examples: top-1 float {q['float_top1']:.4f}, int8 PTQ {q['ptq_int8_top1']:.4f}, "
                  f"int8 QAT {q['qat_int8_top1']:.4f}; host median {q['qat_int8_latency']['median_ms']:.3f} ms."]
  if "android_error" in report:
    lines += ["", f"Android: not measured ({report['android_error']})."]
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    print(f"to_tflite: error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 1
  try:
    arch = _load_arch()
    name = FLAGS.name or arch.name or "model"
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    report = export(arch, FLAGS.out_dir, name)
  except (ValueError, KeyError, ExportError, data_lib.DatasetNotPreparedError) as error:
    print(f"to_tflite: error: {error}", file=sys.stderr)
    return 1
  print(markdown(report))
  if "android_error" in report:
    print(f"to_tflite: error: Android measurement failed: {report['android_error']}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("out_dir")
  app.run(main)
