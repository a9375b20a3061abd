"""Architecture parameters and the maths of Phase 2 (DESIGN.md §1, Eq. 2-7).

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

NEG_INF = -1e9  # masked logits: exp() underflows to exactly 0 in float32


class ArchParameters:
  """alpha, active mask, Phase-1 counts and the current path, as Keras variables."""

  def __init__(self, space: spaces_lib.SearchSpace):
    self.num_blocks = len(space)
    self.num_candidates = np.array([b.num_candidates for b in space.choice_blocks], np.int32)
    width = int(self.num_candidates.max())
    self.valid = np.arange(width)[None, :] < self.num_candidates[:, None]
    shape = (self.num_blocks, width)
    self.alpha = keras.Variable(np.zeros(shape, np.float32), name="alpha")
    self.active = keras.Variable(self.valid.astype(np.float32), trainable=False, name="active")
    self.counts = keras.Variable(np.zeros(shape, np.float32), trainable=False, name="counts")
    self.path = keras.Variable(np.zeros(self.num_blocks, np.int32), trainable=False, name="path",
                               dtype="int32")

  def checkpoint_items(self) -> Dict[str, keras.Variable]:
    return {"alpha": self.alpha, "active": self.active, "counts": self.counts, "path": self.path}

  # numpy views (host side decisions: sampling, dropping, logging) --------------

  def alpha_np(self) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(self.alpha))

  def active_np(self) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(self.active)) > 0.5

  def counts_np(self) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(self.counts)).astype(np.int64)

  def probabilities_np(self) -> np.ndarray:
    return softmax_np(self.alpha_np(), self.active_np())

  def add_counts(self, path: Sequence[int]):
    counts = keras.ops.convert_to_numpy(self.counts).copy()
    counts[np.arange(self.num_blocks), np.asarray(path)] += 1
    self.counts.assign(counts)

  def set_path(self, path: Sequence[int]):
    self.path.assign(np.asarray(path, np.int32))

  def drop(self, block: int, candidate: int):
    active = keras.ops.convert_to_numpy(self.active).copy()
    active[block, candidate] = 0.0
    self.active.assign(active)

  def argmax(self) -> Tuple[int, ...]:
    """Per block, the active op with the largest alpha (ties: the first)."""
    masked = np.where(self.active_np(), self.alpha_np(), -np.inf)
    return tuple(int(i) for i in masked.argmax(axis=1))


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
  raise ValueError(f"cost form must be linear or absolute, got {form!r}")


# Host-side sampling ------------------------------------------------------------

def rng_for(seed: int, step: int, stream: int) -> np.random.Generator:
  """A generator that depends only on (seed, step, stream): same path on every replica
  and after a resume."""
  return np.random.default_rng([seed, stream, step])


def sample_uniform(mask: np.ndarray, rng: np.random.Generator) -> Tuple[int, ...]:
  """One op per block, uniform over the ops where mask is True (balanced training)."""
  return tuple(int(rng.choice(np.flatnonzero(row))) for row in mask)


def sample_by_probability(probs: np.ndarray, rng: np.random.Generator) -> Tuple[int, ...]:
  return tuple(int(rng.choice(len(row), p=row / row.sum())) for row in probs)


def sample_pairs(probs: np.ndarray, rng: np.random.Generator) -> List[Tuple[int, ...]]:
  """Per block, two distinct ops drawn by probability without replacement (one if
  only one op is left)."""
  pairs = []
  for row in probs:
    alive = int((row > 0).sum())
    pairs.append(tuple(int(i) for i in rng.choice(len(row), size=min(2, alive), replace=False,
                                                  p=row / row.sum())))
  return pairs


# Selective drop ------------------------------------------------------------------

def ops_to_drop(alpha: np.ndarray, active: np.ndarray, rule: str, threshold: float
                ) -> List[Tuple[int, int, float]]:
  """(block, op, p) of every op the rule removes; a block never loses its last op.

  prob:  p_m < threshold / M'  (M' = ops still active in the block)
  alpha: alpha_m < threshold   (the paper's literal th_alpha)
  """
  probs = softmax_np(alpha, active)
  dropped = []
  for l in range(alpha.shape[0]):
    alive = np.flatnonzero(active[l])
    if rule == "prob":
      below = [m for m in alive if probs[l, m] < threshold / len(alive)]
    elif rule == "alpha":
      below = [m for m in alive if alpha[l, m] < threshold]
    else:
      raise ValueError(f"drop rule must be prob or alpha, got {rule!r}")
    if len(below) == len(alive):  # keep the strongest of the block
      below.remove(max(alive, key=lambda m: alpha[l, m]))
    dropped.extend((l, int(m), float(probs[l, m])) for m in below)
  return dropped
