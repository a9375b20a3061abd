"""Architecture parameters and the maths of Phase 2 (docs/design.md §1, Eq. 2-7).

Per choice block l: alpha_l (one per candidate, equal at start), an active
mask (ops not dropped) and Phase-1 training counts. Blocks have different
numbers of candidates, so everything is padded to [L, M_max]; padding is never
active. p_l = softmax(alpha_l) over ACTIVE ops only.

Binary-gate gradient (ProxylessNAS): with G_j = <dL/dO_l, o_j(x_l)> the gate
gradient of candidate j and p^S the softmax over the gate set S (all active ops
for ``--gate_mode=full``, the sampled pair for ``two``),

    dL/dalpha_m = sum_j G_j p_j (delta_mj - p_m) = p_m (G_m - sum_j p_j G_j),   m in S.
"""

from typing import Dict, List, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from betanas_tf import spaces as spaces_lib
from betanas_tf.setting_names import COST_FORMS, DROP_RULES

NEG_INF = -1e9  # masked logits: exp() underflows to exactly 0 in float32


STREAM_PHASE1, STREAM_PHASE2, STREAM_SELECTION = 1, 2, 3
NEVER = -1  # dropped_at of an op that is still alive


def _state(value, name, dtype="float32"):
  # Every replica computes the same update (same seed, same path), so the first
  # replica's write is the truth: "sum" would compound, "none" would diverge.
  return keras.Variable(value, dtype=dtype, trainable=False, name=name,
                        aggregation="only_first_replica")


class _AlphaViews:
  """numpy views of an alpha, its active mask and its drop log (read at log intervals and
  at the end), shared by a search's parameters and each target's of an in-search family."""

  def alpha_np(self) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(self.alpha))

  def active_np(self) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(self.active)) > 0.5

  def probabilities_np(self) -> np.ndarray:
    return softmax_np(self.alpha_np(), self.active_np())

  def drop_log(self, labels: Sequence[Sequence[str]]) -> List[Dict]:
    """Every drop so far, in (step, block, op) order, from the on-device log."""
    at = np.asarray(keras.ops.convert_to_numpy(self.dropped_at))
    p = np.asarray(keras.ops.convert_to_numpy(self.p_at_drop))
    drops = [{"step": int(at[l, m]), "block": int(l), "op": labels[l][m], "index": int(m),
              "p": float(p[l, m])} for l, m in zip(*np.nonzero(at != NEVER))]
    return sorted(drops, key=lambda d: (d["step"], d["block"], d["index"]))

  def argmax(self) -> Tuple[int, ...]:
    """Per block, the active op with the largest alpha (ties: the first)."""
    masked = np.where(self.active_np(), self.alpha_np(), -np.inf)
    return tuple(int(i) for i in masked.argmax(axis=1))


class TargetAlpha(_AlphaViews):
  """One target's alpha, active mask and drop log in an in-search family (Phase 2 keeps
  one per target on the shared weights); Phase 1 samples among the ops still active for
  any target (the search's own mask, their union)."""

  def __init__(self, valid: np.ndarray, index: int):
    self.index = index
    self.alpha = keras.Variable(np.zeros(valid.shape, np.float32), name=f"alpha_target{index}")
    self.active = _state(valid.astype(np.float32), f"active_target{index}")
    self.dropped_at = _state(np.full(valid.shape, NEVER, np.int64), f"dropped_at_target{index}",
                             "int64")
    self.p_at_drop = _state(np.zeros(valid.shape, np.float32), f"p_at_drop_target{index}")

  def checkpoint_items(self) -> Dict[str, keras.Variable]:
    k = self.index
    return {f"alpha_target{k}": self.alpha, f"active_target{k}": self.active,
            f"dropped_at_target{k}": self.dropped_at, f"p_at_drop_target{k}": self.p_at_drop}


class ArchParameters(_AlphaViews):
  """alpha, active mask, Phase-1 counts, the current path, the step and the drop log.

  All of it lives on the device as Keras variables; sampling and dropping are
  graph ops over them (below), so a search step never reads them back to the host.
  """

  def __init__(self, space: spaces_lib.SearchSpace):
    self.num_blocks = len(space)
    self.num_candidates = np.array([b.num_candidates for b in space.choice_blocks], np.int32)
    width = int(self.num_candidates.max())
    self.valid = np.arange(width)[None, :] < self.num_candidates[:, None]
    shape = (self.num_blocks, width)
    self.alpha = keras.Variable(np.zeros(shape, np.float32), name="alpha")
    self.active = _state(self.valid.astype(np.float32), "active")
    self.counts = _state(np.zeros(shape, np.float32), "counts")
    self.path = _state(np.zeros(self.num_blocks, np.int32), "path", "int32")
    self.step = _state(0, "step", "int64")
    self.dropped_at = _state(np.full(shape, NEVER, np.int64), "dropped_at", "int64")
    self.p_at_drop = _state(np.zeros(shape, np.float32), "p_at_drop")
    # Where the current fit() stops (set by the host once per fit; not checkpointed).
    self.stop_step = _state(0, "stop_step", "int64")
    # The first step whose Phase-1 loss [0] / alpha-step cross-entropy [1] was not finite
    # (NEVER: none), set in the graph, read by the host at log intervals and before every
    # checkpoint; not checkpointed, since no checkpoint is written after one.
    self.nonfinite = _state(np.full(2, NEVER, np.int64), "nonfinite", "int64")

  def checkpoint_items(self) -> Dict[str, keras.Variable]:
    return {"alpha": self.alpha, "active": self.active, "counts": self.counts, "path": self.path,
            "step": self.step, "dropped_at": self.dropped_at, "p_at_drop": self.p_at_drop}

  def note_nonfinite(self, which: int, values, step):
    """Records `step` as the first non-finite one of quantity `which` (0: Phase-1 loss,
    1: alpha-step cross-entropy) if `values` hold a NaN or infinity (graph ops only)."""
    bad = tf.logical_not(tf.reduce_all(tf.math.is_finite(values)))
    first = tf.logical_and(bad, tf.equal(self.nonfinite[which], NEVER))
    self.nonfinite.assign(tf.tensor_scatter_nd_update(
        tf.convert_to_tensor(self.nonfinite), [[which]],
        tf.reshape(tf.where(first, tf.cast(step, tf.int64), self.nonfinite[which]), [1])))

  # numpy views beyond _AlphaViews' --------------------------------------------------

  def counts_np(self) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(self.counts)).astype(np.int64)

  def step_np(self) -> int:
    return int(keras.ops.convert_to_numpy(self.step))

  def drop(self, block: int, candidate: int):
    """Removes one op by hand (tests, ablations); the search drops in the graph."""
    active = keras.ops.convert_to_numpy(self.active).copy()
    active[block, candidate] = 0.0
    self.active.assign(active)


def softmax_np(alpha: np.ndarray, mask: np.ndarray) -> np.ndarray:
  logits = np.where(mask, alpha.astype(np.float64), -np.inf)
  logits = logits - logits.max(axis=1, keepdims=True)
  e = np.where(mask, np.exp(logits), 0.0)
  return e / e.sum(axis=1, keepdims=True)


def masked_softmax(alpha, mask):
  """softmax over the entries where mask == 1; exactly 0 elsewhere."""
  logits = tf.where(mask > 0.5, alpha, tf.fill(tf.shape(alpha), tf.constant(NEG_INF, alpha.dtype)))
  return tf.nn.softmax(logits, axis=-1) * tf.cast(mask > 0.5, alpha.dtype)


def gate_alpha_gradient(gate_grads, probs_in_set):
  """dL/dalpha from gate gradients G [L, M] and p^S [L, M] (zero outside the set)."""
  expected = tf.reduce_sum(gate_grads * probs_in_set, axis=-1, keepdims=True)
  return probs_in_set * (gate_grads - expected)


def expected_cost(alpha, active, cost_table, fixed_cost: float):
  """fixed + sum_l sum_m p_lm cost_lm: differentiable in alpha through softmax."""
  return fixed_cost + tf.reduce_sum(masked_softmax(alpha, active) * cost_table)




def cost_penalty(expected, form: str, beta: float, target: float, reference: float):
  """The cost term of the Phase-2 loss.

  linear:   beta * E[cost] / reference       (the paper's term, made unit-free)
  absolute: beta * |E[cost] / target - 1|    (TuNAS-style: seek the target)
  """
  if form == "linear":
    return beta * expected / reference
  if form == "absolute":
    return beta * tf.abs(expected / target - 1.0)
  raise ValueError(f"cost form must be {' or '.join(COST_FORMS)}, got {form!r}")


# In-graph sampling: stateless, keyed by (seed, stream, step) ----------------------

def stream_key(seed: int, stream: int):
  """The stateless-RNG key of one stream (Phase 1, Phase 2, selection) of a run's seed."""
  return tf.constant([seed, stream], tf.int64)


def stream_seed(seed: int, stream: int, step):
  """A stateless-RNG seed that depends only on (seed, stream, step): the same path
  on every replica and worker, and after a resume."""
  return tf.random.experimental.stateless_fold_in(stream_key(seed, stream), tf.cast(step, tf.int64))


def _masked_logits(logits, mask):
  return tf.where(mask > 0.5, logits, tf.fill(tf.shape(logits), tf.constant(NEG_INF, logits.dtype)))


def sample_uniform(mask, seed):
  """One op per block, uniform over the ops where mask == 1 (balanced training)."""
  mask = tf.convert_to_tensor(mask, tf.float32)
  return tf.cast(tf.random.stateless_categorical(
      _masked_logits(tf.zeros_like(mask), mask), 1, seed)[:, 0], tf.int32)


def sample_fair(mask, seed, step):
  """Strict fairness (FairNAS, Chu et al. 2021): block l with n_l ops in `mask` takes them
  in a random order, one per step, so every op trains exactly once in each n_l consecutive
  steps; the order of cycle c = step // n_l is a stateless permutation keyed by (seed, l,
  c). A block whose mask shrinks (selective drop) starts a new order with its new n_l."""
  mask = tf.convert_to_tensor(mask, tf.float32)
  step = tf.cast(step, tf.int64)
  picks = []
  for l in range(mask.shape[0]):
    alive = mask[l] > 0.5
    n = tf.maximum(tf.reduce_sum(tf.cast(alive, tf.int64)), 1)
    block_seed = tf.random.experimental.stateless_fold_in(seed, l)
    keys = tf.random.stateless_uniform([mask.shape[1]], tf.random.experimental.stateless_fold_in(
        block_seed, step // n))
    order = tf.argsort(tf.where(alive, keys, 2.0 + keys), stable=True)   # active ops first
    picks.append(tf.gather(order, step % n))
  return tf.cast(tf.stack(picks), tf.int32)


def sample_by_probability(alpha, mask, seed):
  """One op per block with probability softmax(alpha) over the mask."""
  return tf.cast(tf.random.stateless_categorical(
      _masked_logits(tf.convert_to_tensor(alpha, tf.float32), mask), 1, seed)[:, 0], tf.int32)


def sample_pairs(alpha, mask, seed):
  """Per block, two distinct ops drawn by probability without replacement (Gumbel
  top-2), or the one op left; returns the [L, M] 0/1 gate set."""
  logits = _masked_logits(tf.convert_to_tensor(alpha, tf.float32), mask)
  uniform = tf.random.stateless_uniform(tf.shape(logits), seed, minval=1e-12, maxval=1.0)
  keys = logits - tf.math.log(-tf.math.log(uniform))
  width = tf.shape(logits)[1]
  top = tf.math.top_k(keys, k=2).indices
  pair = tf.one_hot(top[:, 0], width) + tf.one_hot(top[:, 1], width)
  return pair * tf.cast(tf.convert_to_tensor(mask) > 0.5, tf.float32)


# Selective drop ------------------------------------------------------------------



def drop_mask(alpha, active, rule: str, threshold: float):
  """[L, M] 1.0 where the rule removes an op; a block never loses its last op.

  prob:  p_m < threshold / M'  (M' = ops still active in the block)
  alpha: alpha_m < threshold   (the paper's literal th_alpha)
  """
  alpha = tf.convert_to_tensor(alpha, tf.float32)
  alive = tf.convert_to_tensor(active, tf.float32) > 0.5
  if rule == "prob":
    probs = masked_softmax(alpha, tf.cast(alive, tf.float32))
    count = tf.reduce_sum(tf.cast(alive, tf.float32), axis=1, keepdims=True)
    below = probs < threshold / tf.maximum(count, 1.0)
  elif rule == "alpha":
    below = alpha < threshold
  else:
    raise ValueError(f"drop rule must be one of {DROP_RULES}, got {rule!r}")
  below = tf.logical_and(below, alive)
  emptied = tf.reduce_all(tf.logical_or(below, tf.logical_not(alive)), axis=1, keepdims=True)
  strongest = tf.one_hot(tf.argmax(_masked_logits(alpha, tf.cast(alive, tf.float32)), axis=1),
                         tf.shape(alpha)[1]) > 0.5
  keep = tf.logical_and(emptied, strongest)
  return tf.cast(tf.logical_and(below, tf.logical_not(keep)), tf.float32)
