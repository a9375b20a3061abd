"""The search engine on the micro space: balanced Phase 1, binary-gate Phase 2, drops, BN."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from betanas_tf import builder
from betanas_tf import cost
from betanas_tf import engine as engine_lib
from betanas_tf import evaluation
from betanas_tf import policies
from betanas_tf import spaces

BATCH = 16


def _space():
  return spaces.get_space("micro")


def _engine(policy="betanas", **overrides):
  space = _space()
  settings = dict(batch_size=BATCH, arch_batch_size=BATCH, max_steps=50, lr=0.1,
                  weight_decay=1e-3, arch_update_every=1)
  settings.update(overrides)
  return engine_lib.SearchEngine(space, policies.POLICIES.get(policy),
                                 engine_lib.EngineConfig(**settings), cost.macs_cost_table(space))


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(BATCH, 16, 16, 3)).astype(np.float32),
          rng.integers(10, size=BATCH).astype(np.int32))


def _batches(seed=0):
  """An endless distributed stream of distinct random batches."""
  def generate():
    k = seed
    while True:
      yield _batch(k)
      k += 1
  spec = (tf.TensorSpec((BATCH, 16, 16, 3), tf.float32), tf.TensorSpec((BATCH,), tf.int32))
  return lambda ctx: tf.data.Dataset.from_generator(generate, output_signature=spec)


def _train(eng, steps, seed=0):
  """`steps` Phase-1 steps through the supernet's own Keras train function."""
  eng.supernet.make_train_function()
  iterator = iter(eng.distribute(_batches(seed)))
  for _ in range(steps):
    eng.arch.stop_step.assign(eng.arch.step_np() + 1)
    eng.supernet.train_function(iterator)


def _np(v):
  return keras.ops.convert_to_numpy(v).copy()


def _path(eng, step):
  return tuple(_np(eng.supernet.phase1_path(tf.constant(step, tf.int64))).tolist())


def test_phase1_leaves_unsampled_candidates_and_their_slots_bit_identical():
  eng = _engine()
  # Train until every candidate has been sampled, so that all have non-zero momentum.
  while (eng.arch.counts_np()[eng.arch.valid] == 0).any():
    _train(eng, 1, seed=eng.arch.step_np())
  step = eng.arch.step_np()
  momenta = {id(v): eng.weight_opt.momentums[eng.weight_opt._get_variable_index(v)]
             for v in eng.supernet.trainable_variables}
  assert all(np.abs(_np(m)).max() > 0 for m in momenta.values())
  before = {id(v): (_np(v), _np(momenta[id(v)])) for v in eng.supernet.trainable_variables}
  path = _path(eng, step)
  _train(eng, 1, seed=step)
  assert tuple(_np(eng.arch.path).tolist()) == path  # the step trained the path sampled for it
  owned = {id(v): (l, m) for l, m, v in eng.supernet.candidate_variables()}
  changed_shared = 0
  for v in eng.supernet.trainable_variables:
    old_value, old_slot = before[id(v)]
    moved = not np.array_equal(_np(v), old_value)
    if id(v) in owned:
      l, m = owned[id(v)]
      if m == path[l]:
        assert moved, f"sampled {v.path} did not change"
      else:
        assert np.array_equal(_np(v), old_value), v.path
        assert np.array_equal(_np(momenta[id(v)]), old_slot), v.path
    else:
      changed_shared += moved
  assert changed_shared == len([v for v in eng.supernet.trainable_variables if id(v) not in owned])
  assert eng.arch.counts_np().sum() == (step + 1) * len(_space())
  assert eng.arch.step_np() == step + 1


@pytest.mark.slow
def test_train_function_stops_at_stop_step_and_never_retraces():
  eng = _engine(arch_update_every=4)
  eng.supernet.make_train_function()
  iterator = iter(eng.distribute(_batches()))
  eng.arch.stop_step.assign(6)
  eng.supernet.train_function(iterator)
  assert eng.arch.step_np() == 4  # one execution = arch_update_every steps
  eng.arch.drop(0, 1)
  eng.supernet.train_function(iterator)
  assert eng.arch.step_np() == 6  # the last execution is cut at stop_step
  eng.supernet.train_function(iterator)
  assert eng.arch.step_np() == 6
  arch_iterator = iter(eng.distribute(_batches(100)))
  eng.arch_step(arch_iterator, 4)
  eng.arch_step(arch_iterator, 9)
  assert eng.supernet.train_function.experimental_get_tracing_count() == 1
  for function in (eng._sample_steps[0], eng._supernet_pass, eng._update_steps[0]):
    assert function.experimental_get_tracing_count() == 1


def _independent_alpha_gradient(eng, images, labels, path, gate_set):
  """Eq. 4 evaluated directly from the candidates' outputs and the upstream gradient."""
  net = eng.supernet
  loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1,
                                                 reduction="none")
  with tf.GradientTape() as tape:
    h = net.features(images, training=True)
    inputs, outputs = [], []
    for l, choice in enumerate(net.choices):
      inputs.append(h)
      h = choice.candidates[path[l]](h, training=True)
      outputs.append(h)
    logits = builder.apply_head(net.head, h, training=True)
    loss = tf.reduce_sum(loss_fn(tf.one_hot(labels, 10), logits)) / len(labels)
  upstream = tape.gradient(loss, outputs)
  alpha, active = eng.arch.alpha_np(), eng.arch.active_np()
  grad = np.zeros_like(alpha, np.float64)
  for l, choice in enumerate(net.choices):
    members = [m for m in range(choice.choice.num_candidates) if gate_set[l, m] and active[l, m]]
    gates = {j: float(tf.reduce_sum(upstream[l] * choice.candidates[j](inputs[l], training=True)))
             for j in members}
    z = np.exp([alpha[l, j] for j in members])
    p = dict(zip(members, z / z.sum()))
    for m in members:
      grad[l, m] = sum(gates[j] * p[j] * ((m == j) - p[m]) for j in members)
  return grad


@pytest.mark.parametrize("gate_mode", ["full", "two"])
def test_gate_gradient_matches_equation_4(gate_mode):
  eng = _engine(gate_mode=gate_mode, beta=0.0)
  _train(eng, 4)
  eng.arch.alpha.assign(np.random.default_rng(1).normal(size=eng.arch.valid.shape).astype(np.float32))
  eng.arch.drop(2, 0)
  path, gate_set = (_np(t) for t in eng.phase2_sample(tf.constant(3, tf.int64)))
  if gate_mode == "two":
    assert (gate_set.sum(axis=1) == 2).all()
    assert all(gate_set[l, path[l]] == 1 for l in range(len(path)))
  assert gate_set[2, 0] == 0 and path[2] != 0
  eng.arch.path.assign(path)
  images, labels = _batch(5)
  got = eng.arch_gradient(tf.constant(images), tf.constant(labels), tf.constant(gate_set))[0]
  want = _independent_alpha_gradient(eng, images, labels, tuple(path), gate_set)
  np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
  assert np.abs(want).max() > 1e-4  # the comparison is not between zeros
  assert got.numpy()[2, 0] == 0.0


@pytest.mark.slow
def test_cost_term_alone_moves_alpha_to_the_cheapest_op():
  eng = _engine(beta=50.0, arch_lr=0.05)
  table = eng.costs.table
  cheapest = [int(np.argmin(table[l, :n])) for l, n in enumerate(eng.arch.num_candidates)]
  weights = [_np(v) for v in eng.supernet.weights]
  start = eng.arch.probabilities_np()
  iterator = iter(eng.distribute(_batches()))
  for step in range(15):
    eng.arch_step(iterator, step)
  p = eng.arch.probabilities_np()
  assert list(eng.arch.argmax()) == cheapest
  for l, m in enumerate(cheapest):
    assert p[l, m] > start[l, m] + 0.05
  # Phase 2 changed no weight, BatchNorm statistics included.
  for v, w in zip(eng.supernet.weights, weights):
    assert np.array_equal(_np(v), w), v.path
  assert eng.metrics()["phase2/expected_cost"] > 0


@pytest.mark.slow
def test_dropped_ops_get_no_gradient_probability_or_training():
  eng = _engine(beta=1.0)
  eng.arch.drop(1, 2)
  eng.arch.drop(0, 0)
  alpha_before = eng.arch.alpha_np()
  for step in range(40):
    assert _path(eng, step)[1] != 2 and _path(eng, step)[0] != 0
    path, gate_set = (_np(t) for t in eng.phase2_sample(tf.constant(step, tf.int64)))
    assert path[1] != 2 and gate_set[1, 2] == 0
  images, labels = _batch(0)
  eng.arch.path.assign(_np(eng.phase2_sample(tf.constant(0, tf.int64))[0]))
  grad = eng.arch_gradient(tf.constant(images), tf.constant(labels),
                           tf.constant(eng.arch.active_np().astype(np.float32)))[0].numpy()
  assert grad[1, 2] == 0.0 and grad[0, 0] == 0.0 and np.abs(grad).max() > 0
  iterator = iter(eng.distribute(_batches()))
  for step in range(3):
    eng.arch_step(iterator, step)
  assert eng.arch.probabilities_np()[1, 2] == 0.0 and eng.arch.probabilities_np()[0, 0] == 0.0
  assert eng.arch.alpha_np()[1, 2] == alpha_before[1, 2]  # Adam with beta1 = 0: zero grad, no move
  assert eng.arch.argmax()[1] != 2


def test_selective_drop_logs_on_the_device_and_never_empties_a_block():
  eng = _engine(beta=200.0, arch_lr=0.5, drop_threshold=0.9, drop_warmup_steps=5)
  iterator = iter(eng.distribute(_batches()))
  for step in range(30):
    eng.arch_step(iterator, step)
  active = eng.arch.active_np()
  assert (active.sum(axis=1) >= 1).all()
  drops = eng.arch.drop_log([b.labels for b in _space().choice_blocks])
  assert len(drops) == int(eng.arch.valid.sum() - active.sum()) > 0
  assert [(d["step"], d["block"], d["index"]) for d in drops] == sorted(
      (d["step"], d["block"], d["index"]) for d in drops)
  for drop in drops:
    assert set(drop) == {"step", "block", "op", "index", "p"}
    assert drop["step"] >= 5  # nothing before drop_warmup_steps
    assert not active[drop["block"], drop["index"]]
    assert drop["op"] == _space().choice_blocks[drop["block"]].labels[drop["index"]]
    assert 0.0 < drop["p"] < 0.9 / 2


@pytest.mark.slow
def test_two_path_rescale_keeps_the_pair_mass():
  eng = _engine(gate_mode="two", beta=0.0, arch_lr=0.3)  # the cost term moves every op
  iterator = iter(eng.distribute(_batches()))
  for step in range(3):
    before = eng.arch.alpha_np()
    eng.arch_step(iterator, step)
    after = eng.arch.alpha_np()
    moved = np.abs(after - before) > 0
    for l in range(after.shape[0]):
      pair = np.flatnonzero(moved[l])
      assert len(pair) <= 2
      assert len(pair) == 2
      np.testing.assert_allclose(np.log(np.exp(after[l, pair]).sum()),
                                 np.log(np.exp(before[l, pair]).sum()), atol=1e-5)


def test_proxyless_samples_by_probability_and_spos_uniformly_over_all():
  proxyless = _engine("proxyless")
  alpha = np.zeros(proxyless.arch.valid.shape, np.float32)
  alpha[0, 3] = 3.0
  proxyless.arch.alpha.assign(alpha)
  picks = [_path(proxyless, s)[0] for s in range(300)]
  p = proxyless.arch.probabilities_np()[0, 3]
  assert abs(picks.count(3) / 300 - p) < 0.08 and p > 0.8
  spos = _engine("spos")
  spos.arch.drop(0, 3)  # spos ignores the active mask: every op stays trainable
  assert {_path(spos, s)[0] for s in range(100)} == {0, 1, 2, 3}
  betanas = _engine("betanas")
  betanas.arch.drop(0, 3)
  picks = [_path(betanas, s)[0] for s in range(600)]
  assert 3 not in picks and all(160 < picks.count(m) < 240 for m in (0, 1, 2))  # uniform: 200


def test_fair_sampling_trains_every_op_once_per_cycle_of_its_block():
  from betanas_tf import arch_params as ap  # pylint: disable=import-outside-toplevel
  betanas = _engine("betanas", seed=4)
  betanas.supernet.phase1 = policies.POLICIES.get("betanas").with_ablations(fair=True).phase1
  assert betanas.supernet.phase1 == "fair_active"
  betanas.arch.drop(0, 3)
  valid = betanas.arch.valid.sum(axis=1)                   # micro: 4, 3, 3 candidates
  paths = np.array([_path(betanas, s) for s in range(24)])
  for l, n in enumerate([3] + list(valid[1:])):
    for cycle in range(24 // n):                           # each cycle: a permutation
      assert sorted(paths[cycle * n:(cycle + 1) * n, l]) == list(range(n)), (l, cycle)
  assert 3 not in paths[:, 0]
  # Cycles are shuffled (not the same order every time) and the same on every call.
  assert len({tuple(paths[c * 3:(c + 1) * 3, 0]) for c in range(8)}) > 1
  assert [_path(betanas, s) for s in range(6)] == [tuple(p) for p in paths[:6]]
  mask = tf.constant([[1, 1, 0, 1]], tf.float32)
  seed = tf.constant([9, ap.STREAM_PHASE1], tf.int64)
  picks = [int(ap.sample_fair(mask, seed, s)[0]) for s in range(9)]
  assert all(sorted(picks[i:i + 3]) == [0, 1, 3] for i in (0, 3, 6))
  spos = policies.POLICIES.get("spos").with_ablations(fair=True)
  assert spos.phase1 == "fair_all"
  assert policies.POLICIES.get("proxyless").with_ablations(fair=True).phase1 == "probability"


def test_arch_data_eval_takes_plain_cross_entropy_in_the_alpha_step():
  with pytest.raises(ValueError, match="arch_data must be one of train, eval, got 'test'"):
    engine_lib.EngineConfig(arch_data="test")
  smoothed, plain = _engine(label_smoothing=0.1), _engine(label_smoothing=0.1, arch_data="eval")
  images, labels = _batch(3)
  gate_set = tf.convert_to_tensor(plain.arch.active)
  per_example = {}
  for name, eng in (("smoothed", smoothed), ("plain", plain)):
    eng.arch.path.assign([0, 0, 0])
    _, per_example[name], _, logits = eng.arch_gradient(images, labels, gate_set)
  log_p = tf.nn.log_softmax(logits).numpy()
  np.testing.assert_allclose(per_example["plain"], -log_p[np.arange(BATCH), labels], rtol=1e-5)
  smooth = -(0.91 * log_p[np.arange(BATCH), labels] + 0.01 * (log_p.sum(-1) - log_p[np.arange(BATCH), labels]))
  np.testing.assert_allclose(per_example["smoothed"], smooth, rtol=1e-5)


def test_supernet_path_equals_standalone_model():
  eng = _engine()
  _train(eng, 3)
  choices = (3, 1, 2)
  model = builder.build_model(eng.supernet.arch_for(choices))
  assert builder.copy_weights_by_name(eng.supernet, model) == len([l for l in model.layers if l.weights])
  images, _ = _batch(4)
  np.testing.assert_allclose(np.asarray(model(images, training=False)),
                             np.asarray(eng.supernet(images, path=tf.constant(choices), training=False)),
                             atol=1e-5)


@pytest.mark.slow
def test_bn_recalibration_averages_batch_statistics_and_restores():
  eng = _engine()
  _train(eng, 3)
  saved = eng.evaluator.bn_statistics()
  batches = [_batch(10 + i) for i in range(3)]
  eng.evaluator.recalibrate_bn((0, 0, 0), batches)
  stem_bn = eng.supernet.stem["bn"]
  conv = eng.supernet.stem["conv"]
  means = [np.asarray(conv(images)).mean(axis=(0, 1, 2)) for images, _ in batches]
  np.testing.assert_allclose(_np(stem_bn.moving_mean), np.mean(means, axis=0), atol=1e-4)
  # Off-path candidates keep their statistics.
  off = eng.supernet.choices[1].candidates[2].parts["dw"]["bn"]
  index = [id(l) for l in evaluation.batchnorm_layers(eng.supernet)].index(id(off))
  np.testing.assert_allclose(_np(off.moving_mean), saved[2 * index], atol=1e-6)
  eng.evaluator.set_bn_statistics(saved)
  accuracy = eng.evaluator.evaluate_path((0, 0, 0), [_batch(20)], batches)
  assert 0.0 <= accuracy <= 1.0
  for now, before in zip(eng.evaluator.bn_statistics(), saved):
    assert np.array_equal(now, before)


def test_arch_steps_before_counts_the_alpha_steps_of_a_run():
  config = engine_lib.EngineConfig(arch_update_every=5, arch_warmup_steps=12)
  due = [s for s in range(100) if (s + 1) % 5 == 0 and s >= 12]
  for step in (0, 12, 14, 15, 19, 20, 57, 99):
    assert config.arch_steps_before(step) == len([s for s in due if s < step]), step



def test_an_in_search_family_keeps_one_alpha_per_target_taking_alpha_steps_in_turn():
  space = _space()
  costs = [cost.macs_cost_table(space, 1.0e6), cost.macs_cost_table(space, 2.0e6)]
  eng = engine_lib.SearchEngine(
      space, policies.POLICIES.get("betanas"),
      engine_lib.EngineConfig(batch_size=BATCH, arch_batch_size=BATCH, max_steps=50,
                              arch_update_every=1, arch_lr=0.05, beta=1.0,
                              drop_warmup_steps=1000),
      cost.macs_cost_table(space), target_costs=costs)
  assert [t.index for t in eng.targets] == [0, 1]
  # Ops gone for one target stay in Phase 1; gone for both, they leave it.
  for target, gone in zip(eng.targets, ([(0, 1), (1, 0)], [(0, 1), (2, 2)])):
    active = _np(target.active)
    for l, m in gone:
      active[l, m] = 0.0
    target.active.assign(active)
  iterator = iter(eng.distribute(_batches(7)))
  alphas = lambda: [_np(eng.arch.alpha)] + [_np(t.alpha) for t in eng.targets]
  start = alphas()
  eng.arch_step(iterator, 0)        # alpha step 0: target 0
  first = alphas()
  assert np.array_equal(first[0], start[0]) and np.array_equal(first[2], start[2])
  assert not np.array_equal(first[1], start[1])
  eng.arch_step(iterator, 1)        # alpha step 1: target 1
  second = alphas()
  assert np.array_equal(second[1], first[1]) and not np.array_equal(second[2], first[2])
  union = eng.arch.active_np()
  assert not union[0, 1] and union[1, 0] and union[2, 2]
  assert union.sum() == eng.arch.valid.sum() - 1
  # Each target's own cost term moves its alpha towards cheap ops: the expected MACs of
  # both fall below what their active ops cost at uniform p.
  for step in range(2, 12):
    eng.arch_step(iterator, step)
  for k, target in enumerate(eng.targets):
    active = target.active_np()
    uniform = active / active.sum(axis=1, keepdims=True)
    expected = lambda p: costs[k].fixed + float(np.sum(p * costs[k].table))
    assert expected(target.probabilities_np()) < expected(uniform)
  # The supernet's pass (the big graph) was traced once for both targets.
  assert eng._supernet_pass.experimental_get_tracing_count() == 1
  assert [f.experimental_get_tracing_count() for f in eng._update_steps] == [1, 1]
  # The checkpoint holds every target's alpha, mask and Adam.
  checkpoint = eng.checkpoint()
  assert all(hasattr(checkpoint, name) for name in (
      "alpha_target0", "alpha_target1", "active_target1", "arch_opt_target0", "arch_opt_target1"))


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
