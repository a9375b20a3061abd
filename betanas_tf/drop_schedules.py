"""When selective drop removes an op: schedules are objects the engine calls after every alpha
step (`--drop_schedule=NAME`, `EngineConfig.drop_schedule`), in the graph, on the device.

* ``threshold`` (the paper's, the default): after `drop_warmup_steps`, every active op the
  drop rule puts below its threshold leaves (`arch_params.drop_mask`: ``prob``, p < threshold
  / M'; ``alpha``, alpha < threshold), several at once if the rule says so.
* ``top_k``: after `drop_warmup_steps`, each block keeps its `drop_keep` most probable active
  ops and drops the others at once: a milder, fixed-size drop (on `small`, `drop_keep=2` leaves
  2^5 = 32 networks, so the ranking among survivors measures something).
* ``gradual``: after `drop_warmup_steps`, at most one op per block per alpha step: the least
  probable, and only if the rule puts it below its threshold (the rule's verdict, spread
  over time instead of in one step).

A block never loses its last op (nor, under ``top_k``, one of its `drop_keep` best). A new
schedule is a `DropSchedule` subclass registered in `DROP_SCHEDULES`, in any file.

The registry imports without TensorFlow (programs define --drop_schedule from its names
before TensorFlow loads); a schedule's graph code imports it, and `arch_params`, when the
engine first calls it.
"""

from betanas_tf.registry import Registry


class DropSchedule:
  """Decides, after an alpha step, which active ops leave for good."""

  name: str = ""

  def dropped(self, alpha, active, step, config):
    """[L, M] float32, 1.0 where an op leaves now, from alpha, the active mask [L, M], the
    Phase-1 step (int64 tensor) and the `EngineConfig`; never an op already gone, never a
    block's last op."""
    raise NotImplementedError

  @staticmethod
  def due(step, config):
    """1.0 once drops may happen (`drop_warmup_steps`), else 0.0 (a float32 tensor)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf.cast(step >= config.drop_warmup_steps, tf.float32)


class Threshold(DropSchedule):
  name = "threshold"

  def dropped(self, alpha, active, step, config):
    from betanas_tf import arch_params as ap  # pylint: disable=import-outside-toplevel
    return ap.drop_mask(alpha, active, config.drop_rule, config.drop_threshold) * self.due(step, config)


class TopK(DropSchedule):
  name = "top_k"

  def dropped(self, alpha, active, step, config):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from betanas_tf import arch_params as ap  # pylint: disable=import-outside-toplevel
    alpha = tf.convert_to_tensor(alpha, tf.float32)
    alive = tf.convert_to_tensor(active, tf.float32)
    logits = tf.where(alive > 0.5, alpha, ap.NEG_INF)
    # An op's rank among its block's active ops (0: the most probable); ties by index.
    order = tf.argsort(logits, axis=1, direction="DESCENDING", stable=True)
    rank = tf.argsort(order, axis=1, stable=True)
    outside = tf.logical_and(rank >= config.drop_keep, alive > 0.5)
    return tf.cast(outside, tf.float32) * self.due(step, config)


class Gradual(DropSchedule):
  name = "gradual"

  def dropped(self, alpha, active, step, config):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from betanas_tf import arch_params as ap  # pylint: disable=import-outside-toplevel
    below = ap.drop_mask(alpha, active, config.drop_rule, config.drop_threshold)
    alpha = tf.convert_to_tensor(alpha, tf.float32)
    # Of the ops the rule would drop, only the weakest of each block.
    logits = tf.where(below > 0.5, alpha, -ap.NEG_INF)
    weakest = tf.one_hot(tf.argmin(logits, axis=1), tf.shape(alpha)[1])
    return weakest * below * self.due(step, config)


DROP_SCHEDULES: Registry = Registry("drop schedule")
for _schedule in (Threshold(), TopK(), Gradual()):
  DROP_SCHEDULES.register(_schedule.name, _schedule)
