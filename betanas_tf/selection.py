"""Picking subnets from a trained supernet under a cost budget (SPOS and random baselines).

`evolutionary_search` follows Single-Path One-Shot (Guo et al. 2020): a
population of architectures within the budget, the top-k as parents, children
by mutation and crossover, every subnet scored by the caller (top-1 on the
arch split after BatchNorm recalibration). `random_within_budget` is the
random-search baseline.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

Choices = Tuple[int, ...]


class BudgetError(ValueError):
  """No architecture of the space meets the cost budget."""


def random_within_budget(num_candidates: Sequence[int], cost: Callable[[Choices], float],
                         budget: Optional[float], rng: np.random.Generator,
                         max_tries: int = 100_000) -> Choices:
  """A uniformly random architecture whose cost is <= budget (any, if budget is None)."""
  for _ in range(max_tries):
    choices = tuple(int(rng.integers(n)) for n in num_candidates)
    if budget is None or cost(choices) <= budget:
      return choices
  raise BudgetError(f"no architecture with cost <= {budget} in {max_tries} random draws")


def evolutionary_search(num_candidates: Sequence[int], score: Callable[[Choices], float],
                        cost: Callable[[Choices], float], budget: Optional[float],
                        rng: np.random.Generator, population: int = 20, generations: int = 5,
                        parents: int = 5, mutation_prob: float = 0.1
                        ) -> Tuple[Choices, float, List[Dict[str, float]]]:
  """Returns (best choices, best score, per-generation log)."""
  cache: Dict[Choices, float] = {}

  def evaluate(choices):
    if choices not in cache:
      cache[choices] = score(choices)
    return cache[choices]

  def within(choices):
    return budget is None or cost(choices) <= budget

  pool = []
  for _ in range(50 * population):  # small spaces may hold fewer than `population` nets
    candidate = random_within_budget(num_candidates, cost, budget, rng)
    if candidate not in pool:
      pool.append(candidate)
    if len(pool) == population:
      break
  log = []
  for generation in range(generations):
    ranked = sorted(set(pool), key=lambda c: -evaluate(c))
    top = ranked[:parents]
    log.append({"generation": generation, "best": evaluate(top[0]),
                "mean_top": float(np.mean([evaluate(c) for c in top])), "evaluated": len(cache)})
    if generation == generations - 1:
      break
    children, tries = [], 0
    while len(children) < population - len(top) and tries < 100 * population:
      tries += 1
      if rng.random() < 0.5:
        parent = top[rng.integers(len(top))]
        child = tuple(int(rng.integers(n)) if rng.random() < mutation_prob else c
                      for c, n in zip(parent, num_candidates))
      else:
        a, b = top[rng.integers(len(top))], top[rng.integers(len(top))]
        child = tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))
      if within(child) and child not in top and child not in children:
        children.append(child)
    pool = list(top) + children
  best = max(cache, key=cache.get)
  return best, cache[best], log
