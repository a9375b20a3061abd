"""Exports an Architecture to TFLite (fp32 / fp16 / int8), checks parity, measures latency.

    python export/to_tflite.py --arch=runs/a/arch.json --weights=runs/a/model.keras \\
        --quantize=fp32,fp16,int8 --dataset=imagenet2012 --data_dir=... --out_dir=export_a
    python -m betanas_tf.export --reference=mobilenet_v2 --quantize=fp32,int8 --dataset=synthetic \\
        --out_dir=/tmp/mnv2 [--latency_table=configs/pixel1_latency.json,host_int8.json] \
        [--delegate=xnnpack|none] [--android --adb_serial=X [--use_gpu]]

From Python::

    from betanas_tf import export
    report = export.export(arch, "/tmp/export", export.ExportConfig(quantize=("fp32", "int8")),
                           weights="runs/retrain/model.keras")

Without weights the network is randomly initialised (BatchNorm statistics set on
representative data so activations are in range) and the report says the figures
are latency-only. Writes <name>_<format>.tflite, report.json and report.md to the
output directory; fp32 parity worse than `fp32_tolerance` fails the export.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

from absl import app
from absl import flags

from betanas_tf.latency import android
from betanas_tf import arch as arch_lib
from betanas_tf import cli
from betanas_tf import data as data_lib
from betanas_tf import divergence
from betanas_tf import io_utils
from betanas_tf.latency import runtime as runtime_lib

FLAGS = flags.FLAGS
FP32_PARITY_EXAMPLES = 16
QUANTIZATIONS = ("fp32", "fp16", "int8", "int8_qat")


class ExportError(RuntimeError):
  """The export ran but its result is not acceptable (parity, QAT)."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """What to export, what to check it on and how to time it."""
  quantize: Tuple[str, ...] = ("fp32",)   # among QUANTIZATIONS; int8_qat needs .keras weights
  int8_io: bool = False                   # int8 model inputs and outputs (with int8)
  qat_epochs: int = 2
  data: data_lib.DataSource = data_lib.DataSource("synthetic")   # representative / parity data
  parity_examples: int = 128              # int8 top-1 agreement and fp16 parity inputs (>= 100)
  representative_examples: int = 64       # int8 calibration inputs
  threads: int = 1
  warmup_runs: int = 10
  runs: int = 50
  latency_table: Tuple[str, ...] = ()     # tables: each predicts the format it describes
  delegate: str = "xnnpack"               # CPU delegate of the host (and phone CPU) timing
  use_gpu: bool = False                   # with android: time on the phone's GPU delegate
  android: bool = False                   # also time on a phone (adb + benchmark_model)
  adb: str = "adb"
  adb_serial: Optional[str] = None
  benchmark_binary: str = "/data/local/tmp/benchmark_model"
  fp32_tolerance: float = 1e-4

  def __post_init__(self):
    object.__setattr__(self, "quantize", tuple(f.strip() for f in self.quantize))
    tables = (self.latency_table,) if isinstance(self.latency_table, str) else self.latency_table
    object.__setattr__(self, "latency_table", tuple(t for t in (tables or ()) if t))
    if self.delegate not in runtime_lib.HOST_DELEGATES:
      raise ValueError(f"delegate must be one of {', '.join(runtime_lib.HOST_DELEGATES)}, got "
                       f"{self.delegate!r}")
    if self.use_gpu and not self.android:
      raise ValueError("--use_gpu times a phone's GPU delegate: it needs --android")
    unknown = sorted(set(self.quantize) - set(QUANTIZATIONS))
    if unknown or not self.quantize:
      raise ValueError(f"--quantize takes a subset of {','.join(QUANTIZATIONS)}, "
                       f"got {','.join(self.quantize)}")
    if self.parity_examples < 100:
      raise ValueError(f"parity_examples must be >= 100 (int8 top-1 agreement), got {self.parity_examples}")


def define_flags():
  """Defines this program's flags (only when it runs as a program, so that importing
  several betanas_tf modules into one process never defines a flag twice)."""
  d = ExportConfig()
  cli.define_arch_flags()
  flags.DEFINE_string("weights", None, "Trained weights: a .keras model or a .weights.h5 file.")
  flags.DEFINE_list("quantize", list(d.quantize), "Formats among fp32, fp16, int8, int8_qat (QAT "
                    "needs --weights=<model.keras>; it runs betanas_tf.qat in its own process).")
  flags.DEFINE_integer("qat_epochs", d.qat_epochs, "Fine-tuning epochs of int8_qat.", lower_bound=1)
  flags.DEFINE_bool("int8_io", d.int8_io, "int8 model inputs and outputs (with int8).")
  cli.define_data_flags(d.data.name, "Representative / parity data")
  flags.DEFINE_integer("parity_examples", d.parity_examples, "Inputs for the fp16 and int8 parity "
                       "checks (>= 100; fp32 is checked on the first 16).", lower_bound=100)
  flags.DEFINE_integer("representative_examples", d.representative_examples,
                       "Calibration inputs for int8.", lower_bound=1)
  cli.define_timing_flags()
  flags.DEFINE_list("latency_table", list(d.latency_table),
                    "Latency tables (comma-separated): each predicts the exported format it was "
                    "built for, compared with the latency measured in the same runtime.")
  cli.define_delegate_flag(d.delegate)
  cli.define_android_flags()
  flags.DEFINE_string("out_dir", None, "Output directory.")
  flags.DEFINE_string("name", None, "File name stem (default: the architecture's name).")
  flags.DEFINE_string("family", None, "A family's directory (python -m betanas_tf.family): "
                      "exports every pick, each to OUT_DIR/NAME, with one family_report.md.")
  flags.DEFINE_float("fp32_tolerance", d.fp32_tolerance, "Largest allowed fp32 max abs difference.",
                     lower_bound=0)


def _load_weights(model, path: str):
  """Loads `path` into `model`; a file that is not what its name says (truncated, or
  another format) and weights that hold NaN or infinity are refused."""
  import zipfile  # pylint: disable=import-outside-toplevel
  import keras  # pylint: disable=import-outside-toplevel
  from betanas_tf import builder  # pylint: disable=import-outside-toplevel
  if not os.path.exists(path):
    raise ValueError(f"{path}: weights file not found")
  if path.endswith(".weights.h5"):
    try:
      model.load_weights(path)
    except OSError as error:   # h5py: "truncated file", "file signature not found"
      raise ValueError(f"{path}: not a readable .weights.h5 file ({str(error).splitlines()[0]}); "
                       "it may be truncated: write it again") from None
  elif path.endswith(".keras"):
    if not zipfile.is_zipfile(path):
      raise ValueError(f"{path}: not a readable .keras file (not a complete zip archive: "
                       f"{os.path.getsize(path)} bytes, truncated or corrupt); write it again")
    builder.copy_all_weights_by_name(keras.saving.load_model(path, compile=False), model, path)
  else:
    raise ValueError(f"{path}: --weights must be a .keras model or a .weights.h5 file")
  bad = divergence.nonfinite_variables(model.weights)
  if bad:
    raise divergence.Diverged(f"{path}: {divergence.describe(bad)} hold NaN or infinity (the "
                              "training diverged); nothing exported")


def _images(arch: arch_lib.Architecture, source: data_lib.DataSource, count: int, seed: int):
  """`count` float input images for the architecture from `source` (eval split first,
  then train; repeated if the dataset is smaller)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  if source.name == "synthetic":
    source = dataclasses.replace(source, synthetic_examples=max(count, 16))
  dataset = source.load(arch.input_size, seed, arch.num_classes)
  images = np.concatenate([b for b, _ in dataset.eval.eval_batches(64)] +
                          [b for b, _ in dataset.train.eval_batches(64)])
  if len(images) < count:
    images = np.concatenate([images] * (count // len(images) + 1))
  return images[:count].astype(np.float32)


def export(arch: arch_lib.Architecture, out_dir: str, config: ExportConfig = ExportConfig(),
           weights: Optional[str] = None, name: Optional[str] = None) -> Dict:
  """Converts `arch` (with `weights`, a .keras model or .weights.h5 file; random weights
  without) to every format of `config.quantize`, checks and times each, writes the files
  and report.json / report.md to `out_dir` and returns the report. An Android failure is
  recorded in the report's "android_error" (host results are still written)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from betanas_tf import builder, cost, tflite  # pylint: disable=import-outside-toplevel
  from betanas_tf.latency import table as latency_table  # pylint: disable=import-outside-toplevel
  c = config
  name = name or arch.name or "model"
  if "int8_qat" in c.quantize and not (weights or "").endswith(".keras"):
    raise ValueError("--quantize=int8_qat needs --weights=<a trained model.keras>")
  os.makedirs(out_dir, exist_ok=True)
  formats = [f for f in c.quantize if f != "int8_qat"]
  model = builder.build_model(arch)
  parity_images = _images(arch, c.data, c.parity_examples, seed=1)
  if weights:
    _load_weights(model, weights)
  else:
    builder.set_bn_statistics(model, _images(arch, c.data, 64, seed=2))
  float_out = np.asarray(model.predict(parity_images, batch_size=32, verbose=0))
  divergence.check_finite_outputs(float_out, "the Keras model's outputs")
  representative = _images(arch, c.data, c.representative_examples, seed=3)
  total = cost.architecture_cost(arch)
  report = {"name": name, "architecture": arch.to_compact(), "macs": total.macs,
            "params": total.params, "weights": weights, "latency_only": weights is None,
            "dataset": c.data.name, "threads": c.threads, "formats": {}}
  report.update(_labels_and_input(arch, c, weights, out_dir))
  tables = {path: latency_table.LatencyTable.load(path) for path in c.latency_table}
  report["latency_tables"] = {path: {"describes": t.runtime_words(), "predicted_ms": t.predict(arch)}
                              for path, t in tables.items()}
  report["latency_table_warnings"] = _unused_tables(tables, formats)
  bench = None
  if c.android:
    bench = android.AndroidBenchmark(c.adb, c.adb_serial, c.benchmark_binary)
    try:
      bench.serial = bench.check()
    except android.AndroidError as error:
      report["android_error"] = str(error)
      bench = None
  for fmt in formats:
    content = tflite.convert(model, fmt, lambda: (x[None] for x in representative),
                             int8_io=c.int8_io and fmt == "int8")
    path = os.path.join(out_dir, f"{name}_{fmt}.tflite")
    outputs = tflite.run(content, parity_images, c.threads)
    # No parity or agreement can pass on NaN (argmax of NaN against argmax of NaN agrees).
    divergence.check_finite_outputs(outputs, f"the {fmt} model's outputs")
    io_utils.atomic_write_bytes(path, content)
    entry = {"file": os.path.basename(path), "bytes": len(content),
             "host_latency": tflite.measure_latency(content, c.threads, c.warmup_runs, c.runs,
                                                    delegates=c.delegate == "xnnpack"),
             "ops": tflite.op_counts(content)}
    if fmt == "fp32":
      diff = float(np.abs(outputs[:FP32_PARITY_EXAMPLES] - float_out[:FP32_PARITY_EXAMPLES]).max())
      entry["max_abs_diff_vs_keras"] = diff
      entry["parity_examples"] = FP32_PARITY_EXAMPLES
      if not diff <= c.fp32_tolerance:
        report["formats"][fmt] = entry
        io_utils.atomic_write_json(os.path.join(out_dir, "report.json"), report)
        raise ExportError(f"fp32 parity failed: max abs diff {diff:.3g} > {c.fp32_tolerance:g}")
    elif fmt == "fp16":
      entry["max_abs_diff_vs_keras"] = float(np.abs(outputs - float_out).max())
      entry["parity_examples"] = len(parity_images)
    else:
      entry["top1_agreement_vs_float"] = float(np.mean(outputs.argmax(-1) == float_out.argmax(-1)))
      entry["parity_examples"] = len(parity_images)
    if bench is not None:
      try:
        entry["android_avg_ms"] = bench.measure(path, c.threads, c.warmup_runs, c.runs,
                                                "gpu" if c.use_gpu else c.delegate)
      except android.AndroidError as error:
        report["android_error"] = str(error)
        bench = None
    for table_path, table in tables.items():
      _compare_with_table(entry, fmt, table_path, table, c, report)
    report["formats"][fmt] = entry
  if "int8_qat" in c.quantize:
    report["int8_qat"] = _quantization_aware(arch, out_dir, name, weights, c)
  io_utils.atomic_write_json(os.path.join(out_dir, "report.json"), report)
  io_utils.atomic_write_text(os.path.join(out_dir, "report.md"), markdown(report))
  return report


def export_family(family_dir: str, out_dir: str, config: ExportConfig = ExportConfig()) -> Dict:
  """Exports every pick of a family (`betanas_tf.family`) to `out_dir`/NAME: in the formats
  of `config.quantize` plus the one each latency target's table describes, with every
  target's latency table compared with what is measured. A pick's weights are
  `family_dir`/NAME/model.keras where retraining put them (latency-only without). Writes
  family_report.json / .md: per pick, its bound, and predicted against measured latency
  (a latency target's pick meets its bound when measured <= bound x (1 + the table's
  validated mean error)). Returns that report."""
  from betanas_tf import family as family_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf.latency import table as latency_table  # pylint: disable=import-outside-toplevel
  family = family_lib.read_family(family_dir)
  tables = sorted({m["table"] for m in family["members"] if m["table"]} | set(config.latency_table))
  rows = []
  for member in family["members"]:
    arch = arch_lib.Architecture.load(os.path.join(family_dir, member["name"], "arch.json"))
    formats = list(config.quantize)
    table = None
    if member["kind"] == "latency":
      table_path = member["table"]
      table = latency_table.LatencyTable.load(table_path)
      runtime = table.runtime()
      needed = runtime.quantize if runtime else "fp32"
      if needed not in formats:
        formats.append(needed)
    weights = os.path.join(family_dir, member["name"], "model.keras")
    weights = weights if os.path.exists(weights) else None
    mine = dataclasses.replace(config, quantize=tuple(formats), latency_table=tuple(tables))
    report = export(arch, os.path.join(out_dir, member["name"]), mine, weights, member["name"])
    row = {"name": member["name"], "target": member["target"], "kind": member["kind"],
           "bound": member["bound"], "unit": member["unit"], "macs": member["macs"],
           "weights": weights, "formats": {}}
    for fmt, entry in report["formats"].items():
      row["formats"][fmt] = {"host_median_ms": entry["host_latency"]["median_ms"],
                             "bytes": entry["bytes"], "tables": entry.get("latency_tables", [])}
    if table is not None:
      compared = [t for entry in report["formats"].values() for t in entry.get("latency_tables", [])
                  if t["table"] == table_path and t["error_pct"] is not None]
      error = (table.validation or {}).get("mean_abs_error_pct")
      row["bound_check"] = None
      if compared:
        measured = compared[0]["measured_ms"]
        allowed = member["bound"] * (1 + (error or 0.0) / 100)
        row["bound_check"] = {"measured_ms": measured, "predicted_ms": compared[0]["predicted_ms"],
                              "table_mean_abs_error_pct": error, "allowed_ms": allowed,
                              "met": measured <= allowed}
    rows.append(row)
  result = {"family_dir": os.path.abspath(family_dir), "members": rows}
  io_utils.atomic_write_json(os.path.join(out_dir, "family_report.json"), result)
  io_utils.atomic_write_text(os.path.join(out_dir, "family_report.md"), family_markdown(result))
  return result


def family_markdown(result: Dict) -> str:
  lines = [f"# TFLite export of the family in {result['family_dir']}", "",
           "| pick | target | MACs (M) | format | host median (ms) | predicted (ms) | error |",
           "|---|---|---|---|---|---|---|"]
  for row in result["members"]:
    for fmt, entry in row["formats"].items():
      predicted = "; ".join(f"{t['predicted_ms']:.3f}" for t in entry["tables"]) or "-"
      errors = "; ".join(f"{t['error_pct']:+.1f} %" for t in entry["tables"]
                         if t["error_pct"] is not None) or "-"
      lines.append(f"| {row['name']} | {row['target']} | {row['macs'] / 1e6:.2f} | {fmt} | "
                   f"{entry['host_median_ms']:.3f} | {predicted} | {errors} |")
  for row in result["members"]:
    check = row.get("bound_check")
    if check:
      lines += ["", f"{row['name']}: measured {check['measured_ms']:.3f} ms against the bound "
                    f"{row['bound']:g} ms x (1 + the table's validated mean error "
                    f"{check['table_mean_abs_error_pct'] or 0:.2f} %) = {check['allowed_ms']:.3f} ms: "
                    + ("met" if check["met"] else "**NOT met**")]
  return "\n".join(lines) + "\n"


def _measured_runtime(fmt: str, kind: str, c: ExportConfig) -> runtime_lib.Runtime:
  """How this export timed `fmt` on the host (kind "host") or the phone."""
  delegate = "gpu" if kind == "android" and c.use_gpu else c.delegate
  return runtime_lib.Runtime(fmt, c.threads, delegate, c.int8_io and fmt == "int8")


def _unused_tables(tables: Dict, formats) -> List[str]:
  """One line per table that describes no exported format."""
  lines = []
  for path, table in tables.items():
    runtime = table.runtime()
    fmt = runtime.quantize if runtime else "fp32"
    if fmt not in formats:
      lines.append(f"latency table {path} describes {table.runtime_words()}, but this export "
                   f"makes {', '.join(formats)}: its prediction is compared with nothing")
  return lines


def _compare_with_table(entry: Dict, fmt: str, path: str, table, c: ExportConfig, report: Dict):
  """The table's prediction beside the latency measured for `fmt` in the runtime the table
  describes (host or phone, format, threads, delegate); a table of another runtime is named
  in one line of report["latency_table_warnings"]. Imported tables (no runtime recorded)
  are read as fp32 phone tables."""
  runtime = table.runtime()
  if (runtime.quantize if runtime else "fp32") != fmt:
    return
  kind = "host" if table.target.get("kind") == "host" else "android"
  measured = (entry["host_latency"]["median_ms"] if kind == "host"
              else entry.get("android_avg_ms"))
  compared = {"table": path, "predicted_ms": report["latency_tables"][path]["predicted_ms"],
              "measured_on": kind, "measured_ms": measured, "error_pct": None}
  mine = _measured_runtime(fmt, kind, c)
  differ = runtime_lib.differences(runtime, mine) if runtime else []
  if differ:
    report["latency_table_warnings"].append(
        f"latency table {path} describes {runtime.words()}; this export timed {fmt} on the "
        f"{kind} with {mine.words()} ({'; '.join(differ)}): its prediction is not compared")
  elif measured:
    compared["error_pct"] = 100.0 * (compared["predicted_ms"] - measured) / measured
  entry.setdefault("latency_tables", []).append(compared)


def _labels_and_input(arch, c: ExportConfig, weights: Optional[str], out_dir: str) -> Dict:
  """The classes and input normalisation of the model: from data.json beside the weights
  (written by the search and by retraining), else from the export's dataset. Writes
  labels.txt (line i names output i) when the class count matches the network."""
  info = data_lib.load_data_info(os.path.dirname(os.path.abspath(weights))) if weights else None
  source = os.path.join(os.path.dirname(weights), data_lib.DATA_INFO_FILE) if info else None
  if info is None:
    info = c.data.load(arch.input_size, 0, arch.num_classes).describe()
    source = f"dataset {c.data.name}"
  result = {"input": {"shape": [1, arch.input_size, arch.input_size, arch.input_channels],
                      "layout": "NHWC, RGB", "pixel_range": [0, 255],
                      "normalization": "(pixel - mean) / std per channel",
                      "mean": info["mean"], "std": info["std"], "from": source},
            "labels_file": None}
  if len(info["class_names"]) == arch.num_classes:
    io_utils.atomic_write_text(os.path.join(out_dir, "labels.txt"),
                               "".join(f"{n}\n" for n in info["class_names"]))
    result["labels_file"] = "labels.txt"
    result["class_names"] = info["class_names"]
  return result


def _quantization_aware(arch, out_dir: str, name: str, weights: str, c: ExportConfig) -> Dict:
  """Runs betanas_tf.qat in its own process (tfmot flips tf.keras process-wide) and returns
  its report: float / PTQ int8 / QAT int8 top-1 on the eval split and host latency."""
  with tempfile.TemporaryDirectory(dir=out_dir) as work:
    arch_path = os.path.join(work, "arch.json")
    arch.replace(name=name).save(arch_path)
    command = [sys.executable, "-m", "betanas_tf.qat", f"--model={weights}", f"--arch={arch_path}",
               *cli.data_source_flags(c.data), f"--epochs={c.qat_epochs}", f"--out_dir={work}",
               f"--threads={c.threads}", f"--runs={c.runs}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
      last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
      raise ExportError(f"quantization-aware training failed: {last}")
    os.replace(os.path.join(work, f"{name}_int8_qat.tflite"),
               os.path.join(out_dir, f"{name}_int8_qat.tflite"))
    with open(os.path.join(work, "qat_report.json")) as handle:
      return json.load(handle)


def markdown(report: Dict) -> str:
  lines = [f"# TFLite export: {report['name']}", "",
           f"`{report['architecture']}`", "",
           f"MACs {report['macs'] / 1e6:.1f}M, params {report['params'] / 1e6:.3f}M, "
           f"host threads {report['threads']}."]
  if report["latency_only"]:
    lines += ["", "**Randomly initialised weights: latency figures only** (accuracy-free parity)."]
  given = report["input"]
  fmt_vec = lambda v: "(" + ", ".join(f"{x:.2f}" for x in v) + ")"
  lines += ["", f"**Input**: float32 {'x'.join(str(d) for d in given['shape'])} ({given['layout']}), "
                f"pixel values 0..255 normalised as (pixel - mean) / std with mean "
                f"{fmt_vec(given['mean'])} and std {fmt_vec(given['std'])} (from {given['from']}). "
                "An `--int8_io` model takes that value quantised with its input tensor's scale and "
                "zero point. **Output**: logits, one per class"
                + (f"; `{report['labels_file']}` names them (line i = output i, "
                   f"{len(report['class_names'])} classes)." if report["labels_file"] else
                   " (no class names of this many classes were found).")]
  for fmt, entry in report["formats"].items():
    for t in entry.get("latency_tables", []):
      versus = (f"{t['error_pct']:+.1f} % vs the {t['measured_ms']:.3f} ms measured"
                if t["error_pct"] is not None else "not compared")
      lines += ["", f"{fmt}: latency table {t['table']} "
                    f"({report['latency_tables'][t['table']]['describes']}) predicts "
                    f"{t['predicted_ms']:.3f} ms on the {t['measured_on']}, {versus}."]
  for warning in report.get("latency_table_warnings", []):
    lines += ["", f"**Latency table mismatch**: {warning}."]
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
  program = os.path.splitext(os.path.basename(argv[0]))[0]  # to_tflite, or export under -m
  return cli.reports_errors(program, KeyError, ExportError)(
      _main)(argv)


def _main(argv):
  program = os.path.splitext(os.path.basename(argv[0]))[0]
  config = cli.config_from_flags(ExportConfig, data=cli.data_source_from_flags(),
                                 quantize=tuple(FLAGS.quantize))
  from betanas_tf import dir_lock  # pylint: disable=import-outside-toplevel
  if FLAGS.family:
    if FLAGS.arch or FLAGS.reference or FLAGS.name:
      raise ValueError("--family exports the picks of a family: give no --arch, --reference "
                       "or --name with it")
    with dir_lock.DirectoryLock(FLAGS.out_dir):
      result = export_family(FLAGS.family, FLAGS.out_dir, config)
    print(family_markdown(result))
    unmet = [r["name"] for r in result["members"]
             if r.get("bound_check") and not r["bound_check"]["met"]]
    if unmet:
      print(f"{program}: error: measured latency over the bound for {', '.join(unmet)}",
            file=sys.stderr)
      return 1
    return 0
  arch = cli.arch_from_flags()
  with dir_lock.DirectoryLock(FLAGS.out_dir):
    report = export(arch, FLAGS.out_dir, config, FLAGS.weights, FLAGS.name)
  print(markdown(report))
  for warning in report["latency_table_warnings"]:
    print(f"{program}: warning: {warning}", file=sys.stderr)
  if "android_error" in report:
    print(f"{program}: error: Android measurement failed: {report['android_error']}", file=sys.stderr)
    return 1
  return 0


def run():
  """The command line (also `python export/to_tflite.py`)."""
  define_flags()
  flags.mark_flag_as_required("out_dir")
  app.run(main)


if __name__ == "__main__":
  run()
