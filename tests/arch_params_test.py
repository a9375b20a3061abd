"""Phase-2 maths on plain arrays: masked softmax, Eq. 4, cost term, drop rules, sampling."""

import numpy as np
import pytest
import tensorflow as tf

from betanas_tf import arch_params as ap


def test_masked_softmax_is_zero_off_mask_and_normalised():
  alpha = tf.constant([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
  mask = tf.constant([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
  p = ap.masked_softmax(alpha, mask).numpy()
  assert p[0, 1] == 0.0 and p[1, 2] == 0.0 and p[1, 3] == 0.0
  np.testing.assert_allclose(p.sum(axis=1), [1.0, 1.0], atol=1e-6)
  expected = np.exp([0.5, 2.0, 0.0]) / np.exp([0.5, 2.0, 0.0]).sum()
  np.testing.assert_allclose(p[0, [0, 2, 3]], expected, atol=1e-6)
  np.testing.assert_allclose(ap.softmax_np(alpha.numpy(), mask.numpy() > 0), p, atol=1e-6)


def test_gate_gradient_equals_equation_4():
  rng = np.random.default_rng(0)
  gates = rng.normal(size=(3, 5))
  mask = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [0, 0, 1, 0, 1]], float)
  gates = gates * mask
  p = ap.softmax_np(rng.normal(size=(3, 5)), mask > 0)
  got = ap.gate_alpha_gradient(tf.constant(gates), tf.constant(p)).numpy()
  want = np.zeros_like(gates)
  for l in range(3):
    for m in range(5):
      if mask[l, m]:
        want[l, m] = sum(gates[l, j] * p[l, j] * ((m == j) - p[l, m]) for j in range(5) if mask[l, j])
  np.testing.assert_allclose(got, want, atol=1e-12)


def test_cost_term_gradient_points_to_the_cheapest_op():
  alpha = tf.Variable(tf.zeros((2, 3)))
  active = tf.constant([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
  table = tf.constant([[1.0, 2.0, 4.0], [3.0, 1.0, 0.0]])
  with tf.GradientTape() as tape:
    expected = ap.expected_cost(alpha, active, table, 10.0)
    penalty = ap.cost_penalty(expected, "linear", 2.0, 0.0, 5.0)
  grad = tape.gradient(penalty, alpha).numpy()
  # E = 10 + 7/3 + 4/2; d/dalpha_m (beta/ref) p_m (c_m - E_l)
  np.testing.assert_allclose(float(expected), 10 + 7 / 3 + 2, rtol=1e-6)
  p = 1 / 3
  np.testing.assert_allclose(grad[0], [0.4 * p * (c - 7 / 3) for c in (1, 2, 4)], atol=1e-6)
  np.testing.assert_allclose(grad[1], [0.4 * 0.5 * (3 - 2), 0.4 * 0.5 * (1 - 2), 0.0], atol=1e-6)
  assert np.argmin(grad[0]) == 0 and np.argmin(grad[1][:2]) == 1
  absolute = ap.cost_penalty(tf.constant(12.0), "absolute", 2.0, 10.0, 1.0)
  assert float(absolute) == pytest.approx(0.4)
  with pytest.raises(ValueError, match="cost form must be linear or absolute, got 'square'"):
    ap.cost_penalty(tf.constant(1.0), "square", 1.0, 1.0, 1.0)


def _dropped(alpha, active, rule, threshold):
  mask = ap.drop_mask(tf.constant(alpha, tf.float32), tf.constant(active, tf.float32), rule, threshold)
  return [tuple(int(i) for i in x) for x in np.argwhere(mask.numpy() > 0.5)]


def test_drop_rules_and_last_op_survives():
  active = np.array([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
  alpha = np.array([[2.0, 0.0, -1.5, 1.0], [0.0, -5.0, 0.0, 0.0], [-9.0, 0.0, 0.0, 0.0]])
  # block 0: threshold 0.3/4 = 0.075; p = [.61, .08, .02, .22] -> only op 2
  assert _dropped(alpha, active, "prob", 0.3) == [(0, 2), (1, 1)]
  assert _dropped(alpha, active, "alpha", -1.0) == [(0, 2), (1, 1)]  # block 2's last op stays
  assert _dropped(alpha, active, "alpha", 100.0) == [(0, 1), (0, 2), (0, 3), (1, 1)]
  # Every op of a balanced block below the threshold: the strongest (first on ties) stays.
  assert _dropped(np.zeros((1, 4)), np.ones((1, 4), bool), "prob", 1.5) == [(0, 1), (0, 2), (0, 3)]
  with pytest.raises(ValueError, match=r"drop rule must be one of \('prob', 'alpha'\), got 'x'"):
    ap.drop_mask(alpha, active, "x", 0.1)


def test_sampling_respects_the_active_mask_and_is_stateless():
  active = tf.constant([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
  seen = np.zeros((2, 4), int)
  for step in range(900):
    path = ap.sample_uniform(active, ap.stream_seed(3, ap.STREAM_PHASE1, step)).numpy()
    seen[0, path[0]] += 1
    seen[1, path[1]] += 1
  assert seen[0, 1] == 0 and seen[1].tolist() == [0, 900, 0, 0]
  assert all(250 < seen[0, m] < 350 for m in (0, 2, 3))  # uniform: 300 each
  same = lambda: ap.sample_uniform(active, ap.stream_seed(3, 1, 7)).numpy().tolist()
  assert same() == same()
  assert ap.stream_seed(3, 1, 7).numpy().tolist() != ap.stream_seed(3, 2, 7).numpy().tolist()
  alpha = tf.constant([[3.0, 0, 0, 0]])
  p = ap.softmax_np(alpha.numpy(), np.ones((1, 4), bool))
  picks = [int(ap.sample_by_probability(alpha, tf.ones((1, 4)), ap.stream_seed(0, 2, s))[0])
           for s in range(500)]
  assert abs(picks.count(0) / 500 - p[0, 0]) < 0.06
  pairs = [ap.sample_pairs(tf.zeros((1, 4)), active[:1], ap.stream_seed(0, 2, s)).numpy()[0]
           for s in range(200)]
  assert all(pair.sum() == 2 and pair[1] == 0 for pair in pairs)
  counts = np.sum(pairs, axis=0)
  assert all(110 < counts[m] < 157 for m in (0, 2, 3))  # each op in 2/3 of the pairs: 133
  assert ap.sample_pairs(tf.zeros((1, 4)), active[1:], ap.stream_seed(0, 2, 0)).numpy().tolist() == [[0, 1, 0, 0]]


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
