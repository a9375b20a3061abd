"""The budget-constrained argmax of an architecture distribution, against brute force."""

import itertools
import sys

import numpy as np
import pytest

from betanas_tf import selection


def _problem(rng, blocks=5, width=5):
  num_candidates = [int(rng.integers(2, width + 1)) for _ in range(blocks)]
  probabilities = np.zeros((blocks, width))
  active = np.zeros((blocks, width))
  costs = np.zeros((blocks, width))
  for l, n in enumerate(num_candidates):
    alive = rng.random(n) < 0.7
    alive[rng.integers(n)] = True
    active[l, :n] = alive
    p = rng.random(n) * alive
    probabilities[l, :n] = p / p.sum()
    costs[l, :n] = rng.integers(1, 9, n)   # integers: many equal-cost paths and ties
  return probabilities, active, costs, num_candidates


def _score(probabilities, active, choices):
  return sum(np.log(probabilities[l, c]) if active[l, c] else selection.DROPPED_LOG_PROB
             for l, c in enumerate(choices))


def test_matches_brute_force_over_random_problems():
  rng = np.random.default_rng(0)
  checked = 0
  for _ in range(200):
    probabilities, active, costs, num_candidates = _problem(rng)
    fixed = 3.0
    paths = list(itertools.product(*[range(n) for n in num_candidates]))
    cost = lambda c: fixed + sum(costs[l, m] for l, m in enumerate(c))
    budget = float(np.quantile([cost(c) for c in paths], rng.uniform(0.05, 0.9)))
    fits = [c for c in paths if cost(c) <= budget]
    best = max(_score(probabilities, active, c) for c in fits)
    chosen = selection.most_probable_within_budget(probabilities, active, costs, fixed, budget,
                                                   num_candidates)
    assert cost(chosen) <= budget
    assert _score(probabilities, active, chosen) == pytest.approx(best, abs=1e-9)
    # Among the equally probable best paths, the first in index order.
    tied = [c for c in fits if abs(_score(probabilities, active, c) - best) < 1e-9]
    assert chosen == min(tied)
    checked += 1
  assert checked == 200


def test_the_argmax_when_it_fits_and_dropped_ops_only_when_needed():
  probabilities = np.array([[0.6, 0.4, 0.0], [0.0, 0.3, 0.7]])
  active = np.array([[1, 1, 0], [0, 1, 1]])
  costs = np.array([[5.0, 3.0, 1.0], [4.0, 6.0, 8.0]])
  args = (probabilities, active, costs, 0.0)
  assert selection.most_probable_within_budget(*args, 13.0, [3, 3]) == (0, 2)   # argmax: 13
  assert selection.most_probable_within_budget(*args, 12.0, [3, 3]) == (1, 2)   # 0.4 * 0.7
  assert selection.most_probable_within_budget(*args, 10.0, [3, 3]) == (1, 1)   # 0.4 * 0.3 (9)
  # 8 fits only with a dropped op; the one dropped op that does it, with the likelier rest.
  assert selection.most_probable_within_budget(*args, 8.0, [3, 3]) == (1, 0)    # 3 + 4
  assert selection.most_probable_within_budget(*args, 5.0, [3, 3]) == (2, 0)    # 1 + 4: two dropped
  with pytest.raises(selection.BudgetError,
                     match=r"^no architecture with cost <= 4: the cheapest costs 5$"):
    selection.most_probable_within_budget(*args, 4.0, [3, 3])


def test_exact_on_a_space_of_seven_ops_in_21_blocks():
  # proxyless_mobile's shape: 7^21 paths, far beyond enumeration. The programme must fit the
  # budget and beat (or equal) greedy repair of the argmax, which trades the smallest loss of
  # log-probability per unit of cost saved until the path fits.
  rng = np.random.default_rng(1)
  blocks, width = 21, 7
  costs = np.round(rng.uniform(0.1, 3.0, (blocks, width)), 3)
  probabilities = rng.dirichlet(np.ones(width) * 0.5, blocks)
  active = np.ones((blocks, width))
  log_p = np.log(probabilities)
  choices = list(log_p.argmax(axis=1))
  budget = 0.8 * sum(costs[l, c] for l, c in enumerate(choices))
  total = lambda c: sum(costs[l, m] for l, m in enumerate(c))
  while total(choices) > budget:
    moves = [((log_p[l, choices[l]] - log_p[l, m]) / (costs[l, choices[l]] - costs[l, m]), l, m)
             for l in range(blocks) for m in range(width) if costs[l, m] < costs[l, choices[l]]]
    _, l, m = min(moves)
    choices[l] = m
  greedy = sum(log_p[l, c] for l, c in enumerate(choices))
  chosen = selection.most_probable_within_budget(probabilities, active, costs, 0.0, budget,
                                                 [width] * blocks)
  assert total(chosen) <= budget
  assert sum(log_p[l, c] for l, c in enumerate(chosen)) >= greedy - 1e-9


def _context(arch, costs, space, budget):
  return selection.Context(
      num_candidates=[b.num_candidates for b in space.choice_blocks], cost=costs.of_choices,
      budget=budget, rng=np.random.default_rng(0), probabilities=arch.probabilities_np(),
      active=arch.active_np(), cost_table=costs.table, fixed_cost=costs.fixed,
      score=lambda c: 0.0, describe=space.choices_to_string)


def test_a_search_result_over_the_budget_becomes_the_most_probable_within_it():
  from betanas_tf import arch_params, cost, spaces  # pylint: disable=import-outside-toplevel
  space = spaces.get_space("micro", 16)
  arch = arch_params.ArchParameters(space)
  costs = cost.macs_cost_table(space)
  # alpha favours each block's costliest op, second the next costliest.
  alpha = np.zeros(arch.valid.shape, np.float32)
  for l, row in enumerate(costs.table):
    n = space.choice_blocks[l].num_candidates
    alpha[l, :n] = np.argsort(np.argsort(row[:n]))   # rank by cost: costliest largest
  arch.alpha.assign(alpha)
  argmax = arch.argmax()
  select = selection.SELECTORS.get("argmax")
  assert select(_context(arch, costs, space, costs.of_choices(argmax))) == (argmax, {})
  assert select(_context(arch, costs, space, None)) == (argmax, {})
  budget = costs.fixed + sum(np.median(row[:b.num_candidates])
                             for row, b in zip(costs.table, space.choice_blocks))
  choices, extra = select(_context(arch, costs, space, budget))
  assert costs.of_choices(choices) <= budget < costs.of_choices(argmax)
  assert choices == selection.most_probable_within_budget(
      arch.probabilities_np(), arch.active_np(), costs.table, costs.fixed, budget,
      [b.num_candidates for b in space.choice_blocks])
  assert extra == {"argmax_over_budget": {"choices_string": space.choices_to_string(argmax),
                                          "cost": round(costs.of_choices(argmax), 6)}}


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
