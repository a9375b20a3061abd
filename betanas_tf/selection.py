"""Picking subnets from a trained supernet under a cost budget (SPOS and random baselines).

`evolutionary_search` follows Single-Path One-Shot (Guo et al. 2020): a
population of architectures within the budget, the top-k as parents, children
by mutation and crossover, every subnet scored by the caller (top-1 on the
arch split after BatchNorm recalibration). `random_within_budget` is the
random-search baseline. `most_probable_within_budget` is the argmax of a search's
architecture distribution under the budget: the single path with the largest product of
per-block probabilities whose cost fits, found exactly over additive per-block costs.

`SELECTORS` names how a search's result is picked (a policy's `selection`): each is a
function of a `Context` (what a trained search offers: its distribution, its costs, a
supernet score) returning (choices, extra summary fields).
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from betanas_tf.registry import Registry

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


# Each op the drops removed costs this much log-probability: one is used only when the ops
# left cannot meet the budget, and then as few of them as meet it.
DROPPED_LOG_PROB = -1e6


def most_probable_within_budget(probabilities: np.ndarray, active: np.ndarray,
                                costs: np.ndarray, fixed: float, budget: Optional[float],
                                num_candidates: Sequence[int]) -> Choices:
  """argmax over paths of sum_l log p_l(c_l) subject to fixed + sum_l costs[l, c_l] <= budget.

  `probabilities`, `active` and `costs` are [blocks, max candidates] (padding beyond
  `num_candidates`); a dropped op costs DROPPED_LOG_PROB. Ties go to the lower op index.
  Raises BudgetError if even the cheapest path does not fit.
  """
  probabilities, active = np.asarray(probabilities, np.float64), np.asarray(active) > 0.5
  with np.errstate(divide="ignore"):
    log_p = np.where(active, np.log(probabilities), DROPPED_LOG_PROB)
  log_p = np.where(np.isfinite(log_p), log_p, DROPPED_LOG_PROB)
  return best_additive_within_budget(log_p, costs, fixed, budget, num_candidates)


def best_additive_within_budget(utility: np.ndarray, costs: np.ndarray, fixed: float,
                                budget: Optional[float], num_candidates: Sequence[int]) -> Choices:
  """argmax over paths of sum_l utility[l, c_l] subject to fixed + sum_l costs[l, c_l] <= budget.

  Exact for additive costs (MACs, a latency table) and an additive utility (log-probabilities,
  an additive accuracy predictor): a dynamic programme over blocks that keeps, for every
  reachable cost, only paths not beaten by a cheaper one (the Pareto front of cost against
  utility), so its size is bounded by the distinct costs, not the number of paths. Ties go
  to the lower op index. Raises BudgetError if even the cheapest path does not fit.
  """
  utility, costs = np.asarray(utility, np.float64), np.asarray(costs, np.float64)
  cheapest = fixed + sum(float(costs[l, :n].min()) for l, n in enumerate(num_candidates))
  if budget is None:
    budget = np.inf
  if cheapest > budget:
    raise BudgetError(f"no architecture with cost <= {budget:g}: the cheapest costs {cheapest:g}")
  # The cheapest completion of every suffix: a partial path that cannot fit is cut early.
  rest = np.zeros(len(num_candidates) + 1)
  for l in reversed(range(len(num_candidates))):
    rest[l] = rest[l + 1] + costs[l, :num_candidates[l]].min()
  front = [(float(fixed), 0.0, ())]   # (cost, utility, choices), cost ascending
  for l, n in enumerate(num_candidates):
    grown = [(cost + costs[l, m], score + utility[l, m], choices + (m,))
             for cost, score, choices in front for m in range(n)
             if cost + costs[l, m] + rest[l + 1] <= budget * (1 + 1e-12)]
    grown.sort(key=lambda t: (t[0], -t[1], t[2]))
    front, best = [], -np.inf
    for entry in grown:
      if entry[1] > best:
        front.append(entry)
        best = entry[1]
  top = max(front, key=lambda t: (t[1], [-c for c in t[2]]))
  return tuple(int(c) for c in top[2])


@dataclasses.dataclass(frozen=True)
class Context:
  """What a finished search offers a selector."""
  num_candidates: Sequence[int]
  cost: Callable[[Choices], float]          # a path's cost (the budget's unit)
  budget: Optional[float]                   # None: no budget
  rng: np.random.Generator
  probabilities: np.ndarray                 # [blocks, max candidates], over active ops
  active: np.ndarray                        # [blocks, max candidates] 1 = not dropped
  cost_table: np.ndarray                    # [blocks, max candidates], additive
  fixed_cost: float                         # stem, fixed blocks and head
  score: Callable[[Choices], float]         # the supernet's score of a subnet (higher better)
  describe: Callable[[Choices], str]        # a path in the compact form
  population: int = 20
  generations: int = 5


def most_probable_or_within_budget(probabilities: np.ndarray, active: np.ndarray,
                                   cost: Callable[[Choices], float], costs: np.ndarray,
                                   fixed: float, budget: Optional[float],
                                   num_candidates: Sequence[int]) -> Tuple[Choices, Optional[Choices]]:
  """The argmax of the distribution over active ops if it fits the budget, else the most
  probable path within it (`most_probable_within_budget`). Returns (choices, the argmax
  when it was over the budget, else None)."""
  masked = np.where(np.asarray(active) > 0.5, probabilities, -np.inf)
  argmax = tuple(int(i) for i in masked.argmax(axis=1))
  if budget is None or cost(argmax) <= budget * (1 + 1e-12):
    return argmax, None
  return most_probable_within_budget(probabilities, active, costs, fixed, budget,
                                     num_candidates), argmax


def select_most_probable(ctx: Context) -> Tuple[Choices, Dict]:
  """The argmax of the distribution; over the budget, the most probable path within it."""
  choices, over = most_probable_or_within_budget(ctx.probabilities, ctx.active, ctx.cost,
                                                 ctx.cost_table, ctx.fixed_cost, ctx.budget,
                                                 ctx.num_candidates)
  if over is None:
    return choices, {}
  return choices, {"argmax_over_budget": {"choices_string": ctx.describe(over),
                                          "cost": round(ctx.cost(over), 6)}}


def select_by_evolution(ctx: Context) -> Tuple[Choices, Dict]:
  best, best_score, log = evolutionary_search(ctx.num_candidates, ctx.score, ctx.cost, ctx.budget,
                                              ctx.rng, ctx.population, ctx.generations)
  return best, {"evolution": log, "evolution_best_score": best_score}


def select_at_random(ctx: Context) -> Tuple[Choices, Dict]:
  return random_within_budget(ctx.num_candidates, ctx.cost, ctx.budget, ctx.rng), {}


SELECTORS: Registry = Registry("selection")
SELECTORS.register("argmax", select_most_probable)
SELECTORS.register("evolution", select_by_evolution)
SELECTORS.register("random", select_at_random)
