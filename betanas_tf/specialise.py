"""Specialising one trained supernet to several targets: a pick per cost bound.

The supernet's score of a subnet (top-1 on the arch split, BN recalibrated) is what every
method here maximises under each target's bound; the caller supplies it (`score_many`), so
this module is plain numpy and knows nothing of TensorFlow. Every score is kept in one cache
shared by the targets (a network scored for one target counts for all), which is also what a
later target starts from.

Two methods:

* ``predictor`` (the default, once-for-all's recipe, Cai et al. 2020): score a few random
  networks within each bound, fit an accuracy predictor on every score so far, and score only
  the networks the predictor ranks best within each bound; a few rounds of that. The
  predictor is additive (ridge regression on the one-hot choices: a weight per op per block),
  so the best predicted network within an additive bound is found exactly
  (`selection.best_additive_within_budget`) and an evolution over the predictor (thousands of
  predictions a millisecond) supplies the runners-up. A new target for a finished family
  fits on the cached scores at once and scores only its own few candidates.
* ``evolution``: Single-Path One-Shot's evolution per target over supernet scores (the
  selector spos uses), the targets sharing the cache.

Either way the pick of a target is the network with the best supernet score within its bound
among those scored: the predictor proposes, the supernet decides.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from betanas_tf import selection

Choices = Tuple[int, ...]
METHODS = ("predictor", "evolution")
STREAM = 8191   # the random draws of specialisation: a stream of their own


@dataclasses.dataclass(frozen=True)
class SpecialiseConfig:
  method: str = "predictor"
  initial: int = 24            # predictor: random networks scored per target before the first fit
  rounds: int = 3              # predictor: fit, propose, score
  per_round: int = 4           # predictor: networks scored per target per round
  ridge: float = 1.0           # predictor: L2 penalty of the ridge regression
  proposal_population: int = 64     # predictor: the evolution that proposes runners-up
  proposal_generations: int = 12
  population: int = 20         # evolution: SPOS' settings
  generations: int = 5
  seed: int = 0

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
    for name in ("initial", "rounds", "per_round", "proposal_population", "proposal_generations",
                 "population", "generations"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if not self.ridge >= 0:
      raise ValueError(f"ridge must be >= 0, got {self.ridge}")


@dataclasses.dataclass(frozen=True)
class Bound:
  """One target as this module sees it: an additive cost of a path and its bound."""
  name: str
  cost: Callable[[Choices], float]
  bound: float
  table: np.ndarray            # [blocks, max candidates] additive costs
  fixed: float


class AccuracyPredictor:
  """Ridge regression of supernet top-1 on one-hot choices: predicted score = intercept +
  sum over blocks of a weight for the block's op."""

  def __init__(self, num_candidates: Sequence[int], ridge: float = 1.0):
    self.num_candidates = list(num_candidates)
    self.offsets = np.concatenate([[0], np.cumsum(self.num_candidates)])
    self.ridge = ridge
    self.weights = np.zeros((len(self.num_candidates), max(self.num_candidates)))
    self.intercept = 0.0

  def encode(self, choices_list: Sequence[Choices]) -> np.ndarray:
    features = np.zeros((len(choices_list), int(self.offsets[-1])))
    for row, choices in enumerate(choices_list):
      features[row, self.offsets[:-1] + np.asarray(choices)] = 1.0
    return features

  def _model(self):
    # scikit-learn loads here, not with the module: the programs that define flags from
    # SpecialiseConfig answer a flag error before it loads (~1.5 s).
    from sklearn import linear_model  # pylint: disable=import-outside-toplevel
    return linear_model.Ridge(alpha=self.ridge)

  def fit(self, choices_list: Sequence[Choices], scores: Sequence[float]) -> "AccuracyPredictor":
    model = self._model().fit(self.encode(choices_list), np.asarray(scores, np.float64))
    self.intercept = float(model.intercept_)
    self.weights = np.zeros_like(self.weights)
    for l, n in enumerate(self.num_candidates):
      self.weights[l, :n] = model.coef_[self.offsets[l]:self.offsets[l] + n]
    return self

  def predict(self, choices: Choices) -> float:
    return self.intercept + float(sum(self.weights[l, c] for l, c in enumerate(choices)))

  def cross_validated_tau(self, choices_list: Sequence[Choices], scores: Sequence[float],
                          folds: int = 5) -> Optional[float]:
    """Kendall tau between the scores and the predictions of models fitted without them
    (k-fold); None with too few scores to tell."""
    if len(scores) < 2 * folds:
      return None
    from scipy import stats  # pylint: disable=import-outside-toplevel
    from sklearn import model_selection  # pylint: disable=import-outside-toplevel
    predicted = model_selection.cross_val_predict(
        self._model(), self.encode(choices_list), np.asarray(scores, np.float64),
        cv=model_selection.KFold(folds, shuffle=True, random_state=0))
    tau = stats.kendalltau(predicted, scores).statistic
    return None if np.isnan(tau) else float(tau)


def _fits(bound: Bound, choices: Choices) -> bool:
  return bound.cost(choices) <= bound.bound * (1 + 1e-12)


def best_scored(bound: Bound, scored: Dict[Choices, float]) -> Optional[Choices]:
  """The best-scoring network within `bound` (ties: the cheaper, then the lower indices)."""
  within = [c for c in scored if _fits(bound, c)]
  if not within:
    return None
  return min(within, key=lambda c: (-scored[c], bound.cost(c), c))


def _proposals(predictor: AccuracyPredictor, bound: Bound, num_candidates: Sequence[int],
               rng: np.random.Generator, config: SpecialiseConfig) -> List[Choices]:
  """Networks within `bound`, best predicted first: the exact best, then what an evolution
  over the predictor met."""
  exact = selection.best_additive_within_budget(predictor.weights, bound.table, bound.fixed,
                                                bound.bound, num_candidates)
  met: Dict[Choices, float] = {}

  def predicted(choices):
    met[choices] = predictor.predict(choices)
    return met[choices]

  selection.evolutionary_search(num_candidates, predicted, bound.cost, bound.bound, rng,
                                config.proposal_population, config.proposal_generations)
  met.pop(exact, None)
  return [exact] + sorted((c for c in met if _fits(bound, c)), key=lambda c: (-met[c], c))


def specialise(num_candidates: Sequence[int], bounds: Sequence[Bound],
               score_many: Callable[[List[Choices]], List[float]], config: SpecialiseConfig,
               scored: Optional[Dict[Choices, float]] = None,
               log: Callable[[str], None] = lambda message: None) -> Dict:
  """Picks a network per bound. `scored`: supernet scores already known (a cache; it is
  not changed). Returns {"picks": {name: choices}, "scored": {choices: score} (every score,
  old and new), "predicted": {name: predicted score of the pick} (predictor only),
  "predictor_cv_tau", "new_scores"}."""
  rng = np.random.default_rng([config.seed, STREAM])
  scored = dict(scored or {})
  before = len(scored)

  def score(todo: List[Choices]):
    todo = [c for c in dict.fromkeys(todo) if c not in scored]
    if todo:
      scored.update(zip(todo, (float(s) for s in score_many(todo))))

  for bound in bounds:   # an impossible bound is an error before anything is scored
    selection.best_additive_within_budget(np.zeros_like(bound.table), bound.table, bound.fixed,
                                          bound.bound, num_candidates)
  predictor = AccuracyPredictor(num_candidates, config.ridge)
  predicted: Dict[str, float] = {}
  if not bounds:
    pass
  elif config.method == "evolution":
    for bound in bounds:
      def one(choices):
        score([choices])
        return scored[choices]
      selection.evolutionary_search(num_candidates, one, bound.cost, bound.bound, rng,
                                    config.population, config.generations)
      log(f"{bound.name}: {len(scored) - before} networks scored so far")
  else:
    initial = []
    for bound in bounds:
      have = sum(_fits(bound, c) for c in scored)
      for _ in range(max(0, config.initial - have)):
        initial.append(selection.random_within_budget(num_candidates, bound.cost, bound.bound, rng))
    score(initial)
    for round_ in range(config.rounds):
      choices_list = list(scored)
      predictor.fit(choices_list, [scored[c] for c in choices_list])
      todo = []
      for bound in bounds:
        fresh = [c for c in _proposals(predictor, bound, num_candidates, rng, config)
                 if c not in scored and c not in todo]
        todo += fresh[:config.per_round]
      log(f"round {round_ + 1} of {config.rounds}: {len(todo)} proposals to score "
          f"({len(scored)} scored)")
      if not todo:
        break
      score(todo)
    choices_list = list(scored)
    predictor.fit(choices_list, [scored[c] for c in choices_list])
  picks = {bound.name: best_scored(bound, scored) for bound in bounds}
  result = {"picks": picks, "scored": scored, "new_scores": len(scored) - before,
            "predicted": {}, "predictor_cv_tau": None}
  if config.method == "predictor" and bounds:
    result["predicted"] = {name: predictor.predict(c) for name, c in picks.items()}
  if config.method == "predictor" and scored:
    choices_list = list(scored)
    result["predictor_cv_tau"] = predictor.cross_validated_tau(choices_list,
                                                               [scored[c] for c in choices_list])
  return result
