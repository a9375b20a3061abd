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


def test_drop_rules_and_last_op_survives():
  active = np.array([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
  alpha = np.array([[2.0, 0.0, -1.5, 1.0], [0.0, -5.0, 0.0, 0.0], [-9.0, 0.0, 0.0, 0.0]])
  p = ap.softmax_np(alpha, active)
  dropped = ap.ops_to_drop(alpha, active, "prob", 0.3)
  # block 0: threshold 0.3/4 = 0.075; p = [.61, .08, .02, .22] -> only op 2
  assert [(l, m) for l, m, _ in dropped] == [(0, 2), (1, 1)]
  assert dropped[0][2] == pytest.approx(p[0, 2])
  by_alpha = ap.ops_to_drop(alpha, active, "alpha", -1.0)
  assert [(l, m) for l, m, _ in by_alpha] == [(0, 2), (1, 1)]  # block 2's last op stays
  everything = ap.ops_to_drop(alpha, active, "alpha", 100.0)
  assert sorted((l, m) for l, m, _ in everything) == [(0, 1), (0, 2), (0, 3), (1, 1)]
  with pytest.raises(ValueError, match="drop rule must be prob or alpha, got 'x'"):
    ap.ops_to_drop(alpha, active, "x", 0.1)


def test_sampling_respects_the_active_mask():
  active = np.array([[True, False, True, True], [False, True, False, False]])
  seen = np.zeros((2, 4), int)
  for step in range(900):
    path = ap.sample_uniform(active, ap.rng_for(3, step, 1))
    seen[0, path[0]] += 1
    seen[1, path[1]] += 1
  assert seen[0, 1] == 0 and seen[1].tolist() == [0, 900, 0, 0]
  assert all(250 < seen[0, m] < 350 for m in (0, 2, 3))  # uniform: 300 each
  assert ap.sample_uniform(active, ap.rng_for(3, 7, 1)) == ap.sample_uniform(active, ap.rng_for(3, 7, 1))
  probs = ap.softmax_np(np.array([[3.0, 0, 0, 0]]), np.ones((1, 4), bool))
  picks = [ap.sample_by_probability(probs, ap.rng_for(0, s, 2))[0] for s in range(500)]
  assert abs(picks.count(0) / 500 - probs[0, 0]) < 0.06
  for s in range(50):
    pair = ap.sample_pairs(ap.softmax_np(np.zeros((1, 4)), active[:1]), ap.rng_for(0, s, 2))[0]
    assert len(set(pair)) == 2 and 1 not in pair
  assert ap.sample_pairs(ap.softmax_np(np.zeros((1, 4)), active[1:]), ap.rng_for(0, 0, 2)) == [(1,)]


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
