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
tensorboard/, backup/ (keras.callbacks.BackupAndRestore: re-running the same
command after a kill continues from the last finished epoch, with the optimizer
and so the learning-rate schedule where they were).
"""

import json
import os
import sys

from absl import app
from absl import flags

from betanas_tf import arch as arch_lib
from betanas_tf import data as data_lib
from betanas_tf import io_utils
from betanas_tf import references

FLAGS = flags.FLAGS
def define_flags():
  """Defines this program's flags (only when it runs as a program, so that importing
  several betanas_tf modules into one process never defines a flag twice)."""
  flags.DEFINE_string("arch", None, "Architecture JSON (e.g. a search's arch.json).")
  flags.DEFINE_enum("reference", None, references.REFERENCES.names(), "A reference architecture.")
  flags.DEFINE_float("width_multiplier", 1.0, "Width multiplier (BetaNet-A x1.4).", lower_bound=0.05)
  flags.DEFINE_float("se_ratio", None, "Squeeze-excite ratio (paper 0.0625); default: the arch's.",
                     lower_bound=0.0, upper_bound=0.99)
  flags.DEFINE_enum("activation", None, list(arch_lib.ACTIVATIONS), "Activation; default: the arch's.")
  flags.DEFINE_float("dropout", 0.2, "Dropout before the classifier.", lower_bound=0.0, upper_bound=0.99)
  flags.DEFINE_float("drop_connect", 0.0, "Stochastic depth of the last residual block (paper 0.2).",
                     lower_bound=0.0, upper_bound=0.99)
  flags.DEFINE_enum("dataset", "digits", data_lib.DATASETS.names(), "Dataset.")
  flags.DEFINE_string("data_dir", None, "tensorflow-datasets directory.")
  flags.DEFINE_bool("download", False, "Let tensorflow-datasets download/prepare the dataset.")
  flags.DEFINE_integer("epochs", 350, "Epochs.", lower_bound=1)
  flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over TRAIN).",
                       lower_bound=1)
  flags.DEFINE_integer("batch_size", 2048, "Global batch.", lower_bound=1)
  flags.DEFINE_float("lr", 1.4, "Peak learning rate (for --batch_size).", lower_bound=0.0)
  flags.DEFINE_float("warmup_epochs", 5.0, "Linear warm-up epochs.", lower_bound=0.0)
  flags.DEFINE_float("momentum", 0.9, "SGD nesterov momentum.", lower_bound=0.0, upper_bound=0.999)
  flags.DEFINE_float("weight_decay", 2e-5, "L2 weight decay of conv and dense kernels.", lower_bound=0.0)
  flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing.", lower_bound=0.0, upper_bound=0.99)
  flags.DEFINE_bool("autoaugment", False, "RandAugment (Keras) on training images.")
  flags.DEFINE_bool("ema", False, "Exponential moving average of the weights (used at the end).")
  flags.DEFINE_float("ema_decay", 0.9999, "EMA decay.", lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_enum("distribution", "default", ["default", "mirrored", "multiworker"], "tf.distribute strategy.")
  flags.DEFINE_string("init_from_supernet", None, "A search's out_dir: start from its supernet weights.")
  flags.DEFINE_integer("seed", 0, "Seed.")
  flags.DEFINE_integer("verbose", 2, "Keras fit verbosity (1 = progress bar).", lower_bound=0, upper_bound=2)
  flags.DEFINE_string("out_dir", None, "Output directory (re-running resumes).")


def _training_data(dataset, batch_size: int, num_classes: int, autoaugment: bool, seed: int):
  """TRAIN (the search's arch split included) as a batched tf.data pipeline of normalised
  images and one-hot labels, in the data layer's (seed, step) order."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  split = dataset.full_train
  mean, std = tf.constant(split.mean, tf.float32), tf.constant(split.std, tf.float32)
  ds = split.train_dataset(batch_size, 0, seed=seed).map(
      lambda x, y: ((tf.cast(x, tf.float32) - mean) / std, y), num_parallel_calls=tf.data.AUTOTUNE)
  if autoaugment:
    import keras  # pylint: disable=import-outside-toplevel
    augment = keras.layers.RandAugment(value_range=(-3.0, 3.0), num_ops=2, factor=0.5, seed=seed)
    ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)))
  return ds.prefetch(tf.data.AUTOTUNE), max(1, len(split) // batch_size)


def _eval_data(dataset, batch_size: int, num_classes: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  batches = list(dataset.eval.eval_batches(batch_size))
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  return tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, num_classes))).batch(batch_size)


def _init_from_supernet(model, search_dir: str, num_classes: int) -> int:
  """Copies the weights of a search's supernet into `model` by structural layer name."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from betanas_tf import spaces, supernet  # pylint: disable=import-outside-toplevel
  try:
    with open(os.path.join(search_dir, "run.json")) as handle:
      run = json.load(handle)
  except OSError as error:
    raise ValueError(f"{search_dir}: not a search output directory ({error.strerror})") from None
  space = dataclasses.replace(spaces.get_space(run["space"]), num_classes=num_classes)
  net = supernet.Supernet(space, se_ratio=run["engine"]["se_ratio"])
  latest = tf.train.latest_checkpoint(os.path.join(search_dir, "checkpoints"))
  if latest is None:
    raise ValueError(f"{search_dir}: no supernet checkpoint")
  status = tf.train.Checkpoint(supernet_weights=list(net.weights)).restore(latest)
  status.expect_partial()  # the optimizers and alpha stay behind
  try:
    status.assert_existing_objects_matched()
  except AssertionError as error:
    raise ValueError(f"{latest}: not a checkpoint of this supernet ({str(error)[:200]})") from None
  return supernet.copy_weights_by_name(net, model)


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


def train(arch: arch_lib.Architecture, out_dir: str):
  import keras  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from betanas_tf import builder, distribution, path_sgd  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(FLAGS.seed)
  dataset = data_lib.load(FLAGS.dataset, input_size=arch.input_size, seed=FLAGS.seed,
                          **({"data_dir": FLAGS.data_dir, "download": FLAGS.download}
                             if FLAGS.dataset in ("cifar10", "imagenet2012") else
                             {"num_classes": arch.num_classes} if FLAGS.dataset == "synthetic" else {}))
  arch = arch.for_retraining(dataset.num_classes, FLAGS.se_ratio, FLAGS.activation,
                            FLAGS.dropout, FLAGS.width_multiplier)
  arch.save(os.path.join(out_dir, "arch.json"))
  train_ds, steps = _training_data(dataset, FLAGS.batch_size, dataset.num_classes,
                                   FLAGS.autoaugment, FLAGS.seed)
  steps = FLAGS.steps_per_epoch or steps
  strategy = distribution.make_strategy(FLAGS.distribution)
  with strategy.scope():
    model = builder.build_model(arch, drop_connect=FLAGS.drop_connect)
    if FLAGS.init_from_supernet:
      copied = _init_from_supernet(model, FLAGS.init_from_supernet, dataset.num_classes)
      print(f"initialised {copied} layers from {FLAGS.init_from_supernet}")
    total, warmup = FLAGS.epochs * steps, int(FLAGS.warmup_epochs * steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else FLAGS.lr, max(1, total - warmup), alpha=0.0,
        warmup_target=FLAGS.lr if warmup else None, warmup_steps=warmup)
    # Coupled L2 on conv/dense kernels (the paper's PyTorch-style weight decay); with no
    # path bound, PathMaskedSGD is plain SGD plus that decay.
    optimizer = path_sgd.PathMaskedSGD(schedule, momentum=FLAGS.momentum, nesterov=True,
                                       l2=FLAGS.weight_decay, use_ema=FLAGS.ema,
                                       ema_momentum=FLAGS.ema_decay)
    optimizer.bind(model.trainable_variables, None, [])
    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=FLAGS.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                           keras.metrics.TopKCategoricalAccuracy(5, name="top5")])
  eval_ds = _eval_data(dataset, min(FLAGS.batch_size, 256), dataset.num_classes)
  callbacks = [keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup")),
               _epoch_log(optimizer, os.path.join(out_dir, "history.json")),
               keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"))]
  history = model.fit(train_ds, epochs=FLAGS.epochs, steps_per_epoch=steps, validation_data=eval_ds,
                      callbacks=callbacks, verbose=FLAGS.verbose)
  _, top1, top5 = model.evaluate(eval_ds, verbose=0)
  model.save(os.path.join(out_dir, "model.keras"))
  model.save_weights(os.path.join(out_dir, "model.weights.h5"))
  result = {"top1": float(top1), "top5": float(top5), "eval_examples": len(dataset.eval),
            "epochs": FLAGS.epochs, "dataset": dataset.name, "architecture": arch.to_compact(),
            "ema": FLAGS.ema, "autoaugment": "keras.layers.RandAugment" if FLAGS.autoaugment else None}
  io_utils.atomic_write_json(os.path.join(out_dir, "eval.json"), result)
  del tf, history
  return result


def main(argv):
  if len(argv) > 1:
    print(f"train: error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 1
  try:
    arch = references.resolve_architecture(FLAGS.arch, FLAGS.reference, None, None, 1.0)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    io_utils.atomic_write_text(os.path.join(FLAGS.out_dir, "flags.txt"), FLAGS.flags_into_string())
    result = train(arch, FLAGS.out_dir)
  except (ValueError, KeyError, data_lib.DatasetNotPreparedError) as error:
    print(f"train: error: {error}", file=sys.stderr)
    return 1
  print(f"eval top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  ({result['eval_examples']} "
        f"examples)  outputs in {FLAGS.out_dir}")
  return 0


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("out_dir")
  app.run(main)
