"""Retrains an architecture from scratch (the paper's recipe), with resume after a kill.

    python -m betanas_tf.train --flagfile=configs/retrain_a.flags --arch=runs/a/arch.json \\
        --data_dir=/data/tfds --out_dir=runs/a_retrain
    python -m betanas_tf.train --arch=/tmp/betanas_demo/arch.json --dataset=digits --epochs=30 \\
        --batch_size=64 --lr=0.1 --out_dir=/tmp/retrain

Recipe (configs/retrain_a.flags): SGD nesterov 0.9, batch 2048, lr 1.4 with a
linear warm-up then cosine decay over 350 epochs, weight decay 2e-5 (on conv and
dense kernels), dropout 0.2, label smoothing 0.1; options --se_ratio, --activation,
--width_multiplier, --drop_connect, --autoaugment (Keras' RandAugment: the
installed packages ship no AutoAugment ImageNet policy), --ema.

Outputs: flags.txt, arch.json (what was trained, options applied), model.keras,
model.weights.h5, eval.json (top-1, top-5 on the eval split), history.json,
tensorboard/, backup/ (step_backup: saved at every epoch end and at the step where
SIGTERM / SIGINT arrives; re-running the same command continues from there, with
the optimizer, the learning-rate schedule and the data order where they were; a
non-finite loss or weight stops the run with exit status 3 and writes no model).
"""

import dataclasses
import json
import os
import shutil
from typing import Dict, Optional

from absl import app
from absl import flags

from betanas_tf import arch as arch_lib
from betanas_tf import cli
from betanas_tf import data as data_lib
from betanas_tf import io_utils

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to retrain. The defaults are the paper's ImageNet recipe (configs/retrain_a.flags)."""
  data: data_lib.DataSource = data_lib.DataSource("imagenet2012")
  width_multiplier: float = 1.0        # BetaNet-A x1.4
  input_size: Optional[int] = None     # None: the architecture's
  se_ratio: Optional[float] = None     # None: the architecture's (paper: 0.0625)
  activation: Optional[str] = None     # None: the architecture's
  dropout: float = 0.2
  drop_connect: float = 0.0            # stochastic depth of the last block (paper 0.2)
  epochs: int = 350
  steps_per_epoch: Optional[int] = None   # None: one pass over TRAIN
  batch_size: int = 2048
  lr: float = 1.4                      # peak, for batch_size
  warmup_epochs: float = 5.0
  momentum: float = 0.9                # SGD nesterov
  weight_decay: float = 2e-5           # coupled L2 on conv and dense kernels
  label_smoothing: float = 0.1
  autoaugment: bool = False            # Keras' RandAugment
  ema: bool = False
  ema_decay: float = 0.9999
  distribution: str = "default"
  mixed_precision: str = "none"        # "bfloat16" | "float16" (precision.py)
  jit_compile: bool = False            # XLA; Keras' own "auto" would turn it on for a
                                       # single GPU and off on CPU (4.6x slower here:
                                       # docs/benchmarks.md, mixed precision and XLA)
  init_from_supernet: Optional[str] = None   # a search's out_dir
  seed: int = 0
  verbose: int = 2                     # Keras fit verbosity

  def __post_init__(self):
    from betanas_tf import numbers  # pylint: disable=import-outside-toplevel
    numbers.check_limits(self, {
        "width_multiplier": (0.05, None), "input_size": (8, None), "se_ratio": (0.0, 1.0, "open"),
        "dropout": (0.0, 1.0, "open"), "drop_connect": (0.0, 1.0, "open"), "epochs": (1, None),
        "steps_per_epoch": (1, None), "batch_size": (1, None), "lr": (0.0, None),
        "warmup_epochs": (0.0, None), "momentum": (0.0, 1.0, "open"),
        "weight_decay": (0.0, None), "label_smoothing": (0.0, 1.0, "open"),
        "ema_decay": (0.0, 1.0), "verbose": (0, 2)})
    # mixed_precision is checked by `train` (the precision module imports Keras).


def define_flags():
  """Defines this program's flags (only when it runs as a program, so that importing
  several betanas_tf modules into one process never defines a flag twice)."""
  d = TrainConfig()
  cli.define_arch_flags(width_multiplier=False, input_size=True)
  cli.define_data_flags()
  flags.DEFINE_float("width_multiplier", d.width_multiplier, "Width multiplier (BetaNet-A x1.4).",
                     lower_bound=0.05)
  flags.DEFINE_float("se_ratio", d.se_ratio, "Squeeze-excite ratio (paper 0.0625); default: the arch's.",
                     lower_bound=0.0, upper_bound=0.99)
  flags.DEFINE_enum("activation", d.activation, list(arch_lib.ACTIVATIONS),
                    "Activation; default: the arch's.")
  flags.DEFINE_float("dropout", d.dropout, "Dropout before the classifier.", lower_bound=0.0,
                     upper_bound=0.99)
  flags.DEFINE_float("drop_connect", d.drop_connect, "Stochastic depth of the last residual block "
                     "(paper 0.2).", lower_bound=0.0, upper_bound=0.99)
  flags.DEFINE_integer("epochs", d.epochs, "Epochs.", lower_bound=1)
  flags.DEFINE_integer("steps_per_epoch", d.steps_per_epoch, "Steps per epoch (default: one pass "
                       "over TRAIN).", lower_bound=1)
  flags.DEFINE_integer("batch_size", d.batch_size, "Global batch.", lower_bound=1)
  flags.DEFINE_float("lr", d.lr, "Peak learning rate (for --batch_size).", lower_bound=0.0)
  flags.DEFINE_float("warmup_epochs", d.warmup_epochs, "Linear warm-up epochs.", lower_bound=0.0)
  flags.DEFINE_float("momentum", d.momentum, "SGD nesterov momentum.", lower_bound=0.0,
                     upper_bound=0.999)
  flags.DEFINE_float("weight_decay", d.weight_decay, "L2 weight decay of conv and dense kernels.",
                     lower_bound=0.0)
  flags.DEFINE_float("label_smoothing", d.label_smoothing, "Label smoothing.", lower_bound=0.0,
                     upper_bound=0.99)
  flags.DEFINE_bool("autoaugment", d.autoaugment, "RandAugment (Keras) on training images.")
  flags.DEFINE_bool("ema", d.ema, "Exponential moving average of the weights (used at the end).")
  flags.DEFINE_float("ema_decay", d.ema_decay, "EMA decay.", lower_bound=0.0, upper_bound=1.0)
  cli.define_distribution_flag()
  cli.define_precision_flag()
  flags.DEFINE_bool("jit_compile", d.jit_compile, "Compile the training step with XLA (pays on "
                    "GPUs; 4.6x slower on this CPU). Off unless asked, on every device.")
  flags.DEFINE_string("init_from_supernet", d.init_from_supernet,
                      "A search's out_dir: start from its supernet weights.")
  flags.DEFINE_integer("seed", d.seed, "Seed.")
  flags.DEFINE_integer("verbose", d.verbose, "Keras fit verbosity (1 = progress bar).",
                       lower_bound=0, upper_bound=2)
  flags.DEFINE_string("out_dir", None, "Output directory (re-running resumes).")


def training_data(split, batch_size: int, num_classes: int, autoaugment: bool, seed: int,
                  start_step: int = 0):
  """A training split (retraining: TRAIN with the search's arch split) as a batched tf.data
  pipeline of normalised images and one-hot labels, in the data layer's (seed, step) order
  from batch `start_step` (positioned in O(1)); and the steps of one pass."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  mean, std = tf.constant(split.mean, tf.float32), tf.constant(split.std, tf.float32)
  ds = split.train_dataset(batch_size, start_step, seed=seed).map(
      lambda x, y: ((tf.cast(x, tf.float32) - mean) / std, y), num_parallel_calls=tf.data.AUTOTUNE)
  if autoaugment:
    import keras  # pylint: disable=import-outside-toplevel
    augment = keras.layers.RandAugment(value_range=(-3.0, 3.0), num_ops=2, factor=0.5, seed=seed)
    ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)))
  return ds.prefetch(tf.data.AUTOTUNE), max(1, len(split) // batch_size)


def eval_data(split, batch_size: int, num_classes: int):
  """A split in order, normalised by the split's own statistics, with one-hot labels."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  batches = list(split.eval_batches(batch_size))
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  return tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, num_classes))).batch(batch_size)


def _init_from_supernet(model, search_dir: str, num_classes: int) -> int:
  """Copies the weights of a search's supernet into `model` by structural layer name."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from betanas_tf import builder, runner, supernet  # pylint: disable=import-outside-toplevel
  space, engine_config = runner.recorded_search(search_dir, num_classes)
  net = supernet.Supernet(space, se_ratio=engine_config.se_ratio)
  latest = tf.train.latest_checkpoint(os.path.join(search_dir, "checkpoints"))
  if latest is None:
    raise ValueError(f"{search_dir}: no supernet checkpoint")
  status = tf.train.Checkpoint(supernet_weights=list(net.weights)).restore(latest)
  status.expect_partial()  # the optimizers and alpha stay behind
  try:
    status.assert_existing_objects_matched()
  except AssertionError as error:
    raise ValueError(f"{latest}: not a checkpoint of this supernet ({str(error)[:200]})") from None
  return builder.copy_weights_by_name(net, model)


def _epoch_log(optimizer, path: str):
  """A callback that adds the learning rate to each epoch's logs and rewrites history.json
  (kept across resumes: entries from the epoch a resumed run restarts at are replaced)."""
  import keras  # pylint: disable=import-outside-toplevel

  class EpochLog(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      logs = dict(logs or {})
      logs["lr"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
      history = json.load(open(path)) if os.path.exists(path) else []
      history = [e for e in history if e["epoch"] < epoch + 1]
      history.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})
      io_utils.atomic_write_json(path, history)
  return EpochLog()


def compile_with_recipe(model, config: TrainConfig, steps_per_epoch: int,
                        steps_per_execution: int = 1):
  """Compiles `model` with the recipe of `config` (SGD nesterov, linear warm-up then cosine
  to 0 over config.epochs, coupled L2, label smoothing; metrics top1 / top5; float16's
  dynamic loss scale; XLA if `config.jit_compile`); returns the optimizer. Call inside
  the distribution strategy's scope. `steps_per_execution` > 1 runs
  that many steps per call of the train function (Keras' own loop: single device only, it
  fails under a tf.distribute strategy in Keras 3.15); keep it a divisor of the epoch's
  steps, or Keras rounds each epoch up to a multiple of it."""
  import keras  # pylint: disable=import-outside-toplevel
  from betanas_tf import path_sgd  # pylint: disable=import-outside-toplevel
  c = config
  total, warmup = c.epochs * steps_per_epoch, int(c.warmup_epochs * steps_per_epoch)
  schedule = keras.optimizers.schedules.CosineDecay(
      0.0 if warmup else c.lr, max(1, total - warmup), alpha=0.0,
      warmup_target=c.lr if warmup else None, warmup_steps=warmup)
  # Coupled L2 on conv/dense kernels (the paper's PyTorch-style weight decay); with no
  # path bound, PathMaskedSGD is plain SGD plus that decay.
  optimizer = path_sgd.PathMaskedSGD(schedule, momentum=c.momentum, nesterov=True,
                                     l2=c.weight_decay, use_ema=c.ema, ema_momentum=c.ema_decay)
  from betanas_tf import precision  # pylint: disable=import-outside-toplevel
  optimizer.bind(model.trainable_variables, None, [],
                 loss_scale=precision.needs_loss_scale(c.mixed_precision))
  model.compile(optimizer=optimizer, auto_scale_loss=False, jit_compile=c.jit_compile,
                loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                          label_smoothing=c.label_smoothing),
                metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                         keras.metrics.TopKCategoricalAccuracy(5, name="top5")],
                steps_per_execution=steps_per_execution)
  return optimizer


def train(arch: arch_lib.Architecture, out_dir: str, config: TrainConfig = TrainConfig(),
          strategy=None) -> Dict:
  """Retrains `arch` from scratch on `config.data` and writes the outputs (module docstring)
  to `out_dir`; calling it again with the same arguments resumes. Returns eval.json's
  contents (top-1, top-5 on the eval split). `strategy`: one already made for
  `config.distribution` (default: made here). The chief holds the directory's lock
  (`dir_lock.DirectoryBusy` if another run holds it) and writes the outputs; the other
  workers of a multi-worker run write theirs to a scratch directory beside it, removed at
  the end (their copies are identical), and restore the chief's backups."""
  from betanas_tf import distribution  # pylint: disable=import-outside-toplevel
  from betanas_tf import precision, stop_signal  # pylint: disable=import-outside-toplevel
  precision.check(config.mixed_precision)
  if strategy is None:
    strategy = distribution.make_strategy(config.distribution)
    stop_signal.reinstall()   # a multi-worker strategy takes SIGTERM over (stop_signal)
  with _chief_lock(out_dir, strategy):
    return _train_locked(arch, out_dir, config, strategy)


def _chief_lock(out_dir: str, strategy):
  """The directory's lock on the chief; nothing on the other workers (they share the
  directory with it, and would refuse each other)."""
  import contextlib  # pylint: disable=import-outside-toplevel
  from betanas_tf import dir_lock, distribution  # pylint: disable=import-outside-toplevel
  if distribution.is_chief(strategy):
    return dir_lock.DirectoryLock(out_dir)
  return contextlib.nullcontext()


def _train_locked(arch: arch_lib.Architecture, out_dir: str, c: TrainConfig, strategy) -> Dict:
  import keras  # pylint: disable=import-outside-toplevel
  from betanas_tf import builder, distribution  # pylint: disable=import-outside-toplevel
  from betanas_tf import precision, step_backup  # pylint: disable=import-outside-toplevel
  chief = distribution.is_chief(strategy)
  backup_dir = os.path.join(out_dir, "backup")   # the chief's: every worker restores it
  out_dir = distribution.scratch_dir(out_dir, strategy)
  os.makedirs(out_dir, exist_ok=True)
  keras.utils.set_random_seed(c.seed)
  dataset = c.data.load(c.input_size or arch.input_size, c.seed, arch.num_classes)
  arch = arch.for_retraining(dataset.num_classes, c.se_ratio, c.activation, c.dropout,
                             c.width_multiplier, c.input_size)
  arch.save(os.path.join(out_dir, "arch.json"))
  data_lib.save_data_info(dataset, out_dir)
  _, steps = training_data(dataset.full_train, c.batch_size, dataset.num_classes,
                           c.autoaugment, c.seed)
  steps = c.steps_per_epoch or steps
  with strategy.scope():
    with precision.building(c.mixed_precision):
      model = builder.build_model(arch, drop_connect=c.drop_connect)
    if c.init_from_supernet:
      copied = _init_from_supernet(model, c.init_from_supernet, dataset.num_classes)
      print(f"initialised {copied} layers from {c.init_from_supernet}")
    optimizer = compile_with_recipe(model, c, steps)
  eval_ds = eval_data(dataset.eval, min(c.batch_size, 256), dataset.num_classes)
  several = distribution.num_workers(strategy) > 1
  backup = step_backup.StepBackup(
      backup_dir, check_every=min(50, steps), write=chief,
      agree=(lambda value: distribution.max_over_workers(strategy, value)) if several else None)
  backup.restore(model)
  callbacks = [_epoch_log(optimizer, os.path.join(out_dir, "history.json")),
               keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"))]
  step_backup.run_fit(
      model, backup, lambda step: training_data(dataset.full_train, c.batch_size,
                                                dataset.num_classes, c.autoaugment, c.seed,
                                                start_step=step)[0],
      c.epochs, steps, validation_data=eval_ds, callbacks=callbacks, verbose=c.verbose)
  _, top1, top5 = model.evaluate(eval_ds, verbose=0)
  if c.mixed_precision != "none":   # what is saved (and exported) computes in float32
    model = precision.float32_copy(model, lambda: builder.build_model(arch, drop_connect=c.drop_connect))
  # model.keras is made of plain Keras layers only, so that any Keras 3 process loads it (a
  # user's serving or fine-tuning code never imports betanas_tf); model.weights.h5 keeps the
  # package's own layers (it loads into builder.build_model(arch), as the exporter does).
  portable = precision.float32_copy(model, lambda: builder.build_model(
      arch, backend=builder.PLAIN_KERAS, drop_connect=c.drop_connect))
  _save_model(portable, model, out_dir)
  result = {"top1": float(top1), "top5": float(top5), "eval_examples": len(dataset.eval),
            "epochs": c.epochs, "dataset": dataset.name, "architecture": arch.to_compact(),
            "ema": c.ema, "mixed_precision": c.mixed_precision, "jit_compile": c.jit_compile,
            "autoaugment": "keras.layers.RandAugment" if c.autoaugment else None}
  io_utils.atomic_write_json(os.path.join(out_dir, "eval.json"), result)
  if not chief:
    shutil.rmtree(os.path.dirname(out_dir), ignore_errors=True)
  return result


def _save_model(portable, model, out_dir: str):
  """model.keras (of `portable`) and model.weights.h5 (of `model`), each written under a
  temporary name and renamed (a kill never leaves a truncated model under the final name)."""
  for name, save in (("model.keras", portable.save), ("model.weights.h5", model.save_weights)):
    final = os.path.join(out_dir, name)
    temporary = os.path.join(out_dir, f"tmp-{os.getpid()}-{name}")
    save(temporary)
    os.replace(temporary, final)


@cli.reports_errors("train", KeyError, stops="at_safe_points")
def main(argv):
  del argv
  from betanas_tf import distribution, stop_signal  # pylint: disable=import-outside-toplevel
  arch = cli.arch_from_flags(apply_width=False)  # retraining applies it (TrainConfig)
  config = cli.config_from_flags(TrainConfig, data=cli.data_source_from_flags())
  strategy = distribution.make_strategy(config.distribution)
  stop_signal.reinstall()   # a multi-worker strategy takes SIGTERM over (stop_signal)
  with _chief_lock(FLAGS.out_dir, strategy):   # before flags.txt: a second run writes nothing
    if distribution.is_chief(strategy):
      io_utils.atomic_write_text(os.path.join(FLAGS.out_dir, "flags.txt"),
                                 FLAGS.flags_into_string())
    result = train(arch, FLAGS.out_dir, config, strategy)
  print(f"eval top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  ({result['eval_examples']} "
        f"examples)  outputs in {FLAGS.out_dir}")
  return 0


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("out_dir")
  app.run(main)
