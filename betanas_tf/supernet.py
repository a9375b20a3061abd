"""The supernet: every candidate of every choice block, one path run per step.

Built from the same block code as the standalone model (`blocks.py`,
`builder.head_layers`), so a candidate's primitive layers carry the names the
standalone model gives them (``block07_k5e3_dw``) and weights move by name.

A path is an int32 tensor with one candidate index per choice block. Each
choice block runs only the chosen candidate with `tf.switch_case` (measured:
1.01x the lone block; a one-hot gate sum runs every branch, 4.35x), and the
path is a tensor argument, so changing it or the active set never retraces.

`Supernet.train_step` is the Phase-1 (weight) step, so a search is `fit()`:
the path is sampled in the graph from a stateless RNG keyed by (seed, step)
over the active mask on the device, every replica draws the same path, the
Phase-1 counts and the step advance on the device, and nothing is read back
to the host. `make_train_function` runs `steps_per_execution` such steps in
one `tf.function` (Keras' own multi-step loop fails under every
tf.distribute strategy, keras-team/keras#19246; docs/design.md), and stops at
`stop_step` so the last execution of a run may be shorter. The Phase-2 alpha
step runs between executions (`engine.py`).
"""

from typing import List, Sequence, Tuple

import numpy as np

import keras
import tensorflow as tf

from betanas_tf import arch as arch_lib
from betanas_tf import arch_params as ap
from betanas_tf import blocks
from betanas_tf import builder
from betanas_tf import fused_bn
from betanas_tf import policies
from betanas_tf import primitives
from betanas_tf import spaces as spaces_lib


class ChoiceBlock(keras.layers.Layer):
  """Holds one choice block's candidate layers; runs the one picked by `index`."""

  def __init__(self, choice: spaces_lib.ChoiceBlock, activation: str, se_ratio: float = 0.0,
               **kwargs):
    super().__init__(name=kwargs.pop("name", f"choice{choice.position:02d}"), **kwargs)
    self.choice = choice
    self.candidates = [blocks.make_block_layer(choice.position, choice.shape.in_channels, c,
                                               activation, se_ratio)
                       for c in choice.candidates]

  def build(self, input_shape):
    for candidate in self.candidates:
      candidate.build(input_shape)
    super().build(input_shape)

  def call(self, inputs, index, training=None):
    branches = [lambda c=c: c(inputs, training=training) for c in self.candidates]
    return tf.switch_case(tf.convert_to_tensor(index, tf.int32), branches)

  def candidate_output(self, inputs, candidate: int, training=None):
    return self.candidates[candidate](inputs, training=training)

  def compute_output_shape(self, input_shape):
    return self.candidates[0].compute_output_shape(input_shape)


class Supernet(keras.Model):
  """Stem, fixed blocks, choice blocks, head; `call(images, path)` runs one path.

  Args:
    space: the search space.
    se_ratio, dropout: applied to every candidate / the head, as in the result.
    phase1: how `train_step` samples its path, a `policies.SAMPLERS` name: "uniform_active"
      (balanced), "probability" (by softmax(alpha)), "uniform_all" (SPOS), "fair_*" (FairNAS).
    seed: seed of the path sampling.
    label_smoothing: of the cross-entropy.
    jit_compile: compile each step's forward and backward pass with XLA.
    input_mean, input_std: per-channel normalisation applied on the device to
      the (uint8 or float) images of a batch; the model itself takes normalised
      float images, as the standalone and exported networks do.
  """

  def __init__(self, space: spaces_lib.SearchSpace, se_ratio: float = 0.0, dropout: float = 0.0,
               phase1: str = "uniform_active", seed: int = 0, label_smoothing: float = 0.0,
               input_mean: Sequence[float] = (0.0, 0.0, 0.0),
               input_std: Sequence[float] = (1.0, 1.0, 1.0), jit_compile: bool = False, **kwargs):
    super().__init__(name=kwargs.pop("name", f"supernet_{space.name}"), **kwargs)
    self.space = space
    # Not Keras' own `jit_compile` attribute, which compile() resolves ("auto") for the
    # train function Keras would build; this model builds its own (make_train_function).
    self.xla_step = bool(jit_compile)
    self._compiled_forward_backward = None
    self.phase1, self.seed = phase1, int(seed)
    self.input_mean = tf.constant(np.asarray(input_mean, np.float32))
    self.input_std = tf.constant(np.asarray(input_std, np.float32))
    skeleton = space.skeleton().replace(se_ratio=se_ratio, dropout=dropout)
    self.skeleton = skeleton
    self.stem = primitives.conv_bn_act(fused_bn.LAYERS, "stem_conv", skeleton.stem.filters,
                                       skeleton.stem.kernel, skeleton.stem.stride, skeleton.activation)
    shapes = skeleton.block_shapes()
    self.fixed = [blocks.make_block_layer(i, shapes[i].in_channels, b, skeleton.activation, se_ratio)
                  for i, b in enumerate(space.fixed_blocks)]
    self.choices = [ChoiceBlock(c, skeleton.activation, se_ratio) for c in space.choice_blocks]
    self.head = builder.head_layers(fused_bn.LAYERS, skeleton)
    self.phase1_loss = keras.metrics.Mean(name="loss")
    self.phase1_accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    self.build((None, space.input_size, space.input_size, skeleton.input_channels))
    # A plain object, so Keras does not track its variables as the model's weights:
    # alpha is no weight of Phase 1, and the checkpoint lists the state explicitly.
    self.arch = ap.ArchParameters(space)
    self.loss_fn = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=label_smoothing, reduction="none")

  def build(self, input_shape):
    batch = input_shape[0]
    self.stem["conv"].build(input_shape)
    size = self.skeleton.stem_output_size
    self.stem["bn"].build((batch, size, size, self.skeleton.stem.filters))
    for layer, shape in zip(self.fixed + self.choices, self.skeleton.block_shapes()):
      layer.build((batch, shape.in_size, shape.in_size, shape.in_channels))
    final = self.skeleton.final_size
    self.head["conv"]["conv"].build((batch, final, final, self.skeleton.final_channels))
    self.head["conv"]["bn"].build((batch, final, final, self.skeleton.head.filters))
    self.head["classifier"].build((batch, self.skeleton.head.filters))
    self.built = True

  def features(self, images, training=None):
    """Stem and fixed blocks: the input of the first choice block."""
    x = primitives.apply_conv_bn_act(self.stem, images, training)
    for layer in self.fixed:
      x = layer(x, training=training)
    return x

  def call(self, images, path=None, training=None):
    if path is None:
      path = self.arch.path
    return self.forward_with_block_io(images, path, training)[0]

  # ---- Phase 1 as a Keras train step ------------------------------------------------

  @property
  def metrics(self):
    return [self.phase1_loss, self.phase1_accuracy]

  def normalize(self, images):
    """uint8 (or float) pixels -> the normalised float input of the network."""
    return (tf.cast(images, tf.float32) - self.input_mean) / self.input_std

  def phase1_path(self, step):
    """The path Phase 1 trains at `step`, sampled in the graph (same on every replica) by
    the sampler named `phase1` (`policies.SAMPLERS`)."""
    return policies.SAMPLERS.get(self.phase1)(self.arch, self.seed, step)

  def cross_entropy(self, labels, logits, smoothing: bool = True):
    """Per-example cross-entropy (with the configured label smoothing, or without)."""
    if not smoothing:
      return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), logits)
    onehot = tf.one_hot(tf.cast(labels, tf.int32), self.space.num_classes)
    return self.loss_fn(onehot, logits)

  def _forward_backward(self, images, labels, path):
    """(per-example loss, logits, gradients) of one replica's batch on `path`: the step's
    compute, compiled with XLA when `jit_compile` (the path is sampled outside it:
    XLA has no kernel for stateless_categorical)."""
    variables = self.trainable_variables
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    with tf.GradientTape() as tape:
      logits = self(self.normalize(images), path=path, training=True)
      per_example = self.cross_entropy(labels, logits)
      # Mean over the GLOBAL batch: the all-reduce sums the replicas' gradients.
      loss = tf.reduce_mean(per_example) / replicas
      scaled = self.optimizer.scale_loss(loss)   # float16: times the dynamic loss scale
    grads = tape.gradient(scaled, variables)
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    return per_example, logits, grads

  def train_step(self, data):
    images, labels = data
    path = self.phase1_path(self.arch.step)
    self.arch.path.assign(path)
    if self._compiled_forward_backward is None:
      self._compiled_forward_backward = (tf.function(self._forward_backward, jit_compile=True)
                                         if self.xla_step else self._forward_backward)
    per_example, logits, grads = self._compiled_forward_backward(images, labels, path)
    # Metrics first: they depend on the forward pass only and overlap the backward pass.
    self.phase1_loss.update_state(per_example)
    self.phase1_accuracy.update_state(labels, logits)
    if self.optimizer.loss_scale is None:
      # Divergence, noted on the device (float16's loss scale skips such a step instead:
      # the host counts skipped steps at its log interval).
      self.arch.note_nonfinite(0, per_example, self.arch.step)
    self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
    # A float16 step skipped for non-finite gradients trained nothing: it counts nothing
    # (the step itself advances: it is the clock of the data order and the path RNG).
    applied = self.optimizer.step_applied()
    self.arch.counts.assign_add(tf.one_hot(path, self.arch.valid.shape[1]) * applied)
    self.arch.step.assign_add(1)
    return {}

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # Keras would pull (and, under a strategy, all-reduce) a batch to build the
    # model symbolically; the supernet and its optimizer are built at construction.
    del iterator, data_batch

  def make_train_function(self, force=False):
    """Runs up to `steps_per_execution` Phase-1 steps per call, never past `stop_step`.

    Returns no logs: metrics are read by the callbacks at their log interval
    only, so a call never waits on the device.
    """
    if self.train_function is not None and not force:
      return self.train_function
    strategy = self.distribute_strategy
    per_execution = int(self.steps_per_execution)

    @tf.function
    def train_function(iterator):
      steps = tf.clip_by_value(self.arch.stop_step - self.arch.step, 0, per_execution)
      for _ in tf.range(steps):
        strategy.run(self.train_step, args=(next(iterator),))
      return {}

    self.train_function = train_function
    return train_function

  def forward_with_block_io(self, images, path, training=None
                            ) -> Tuple[tf.Tensor, List[Tuple[tf.Tensor, tf.Tensor]]]:
    """Logits and, per choice block, its (input, output) on the given path."""
    path = tf.convert_to_tensor(path, tf.int32)
    x = self.features(images, training)
    block_io = []
    for l, choice in enumerate(self.choices):
      y = choice(x, path[l], training=training)
      block_io.append((x, y))
      x = y
    # Under a mixed precision the blocks compute in bfloat16 / float16; the classifier
    # computes in float32 (builder.head_layers), so losses and metrics get float32 logits.
    return builder.apply_head(self.head, x, training), block_io

  def candidate_variables(self) -> List[Tuple[int, int, keras.Variable]]:
    """(choice block, candidate, variable) for every trainable variable of a candidate."""
    owned = []
    for l, choice in enumerate(self.choices):
      for m, candidate in enumerate(choice.candidates):
        owned.extend((l, m, v) for v in candidate.trainable_variables)
    return owned

  def checkpoint_items(self):
    """What a tf.train.Checkpoint must hold: the weights (a Keras 3 model is not
    traversed by tf.train.Checkpoint, so its variables, trainable and BatchNorm
    statistics alike, are listed in the order the same space always builds them)
    and the architecture state."""
    return {"supernet_weights": list(self.weights), **self.arch.checkpoint_items()}

  def arch_for(self, choices: Sequence[int], name: str = "") -> arch_lib.Architecture:
    return self.space.arch_from_choices(choices, name=name).replace(
        se_ratio=self.skeleton.se_ratio, dropout=self.skeleton.dropout)
