"""Search strategies as policies over the one search engine.

A policy says how Phase 1 samples a path, whether Phase 2 (alpha updates
through binary gates) runs, whether selective drop runs, and how the final
architecture is chosen. Nothing else differs between strategies.

* ``betanas``   — uniform over ACTIVE ops in Phase 1 (balanced training),
                  binary-gate alpha updates, selective drop, argmax.
* ``proxyless`` — Phase 1 samples by p (rich ops get richer: the imbalanced
                  baseline), binary gates, no drop, argmax.
* ``spos``      — uniform over all ops, no Phase 2; the result is picked by
                  evolutionary search over subnets evaluated on the arch split
                  with BatchNorm statistics recalibrated, under the cost budget.
* ``--fair``      — betanas' or spos' uniform Phase-1 sampling made strictly fair
                  (FairNAS: each op of a block once in every M' consecutive steps).
* ``random``    — no supernet training: a uniformly random architecture that
                  meets the cost budget.
"""

import dataclasses

import numpy as np

from betanas_tf import selection
from betanas_tf.registry import Registry


def _uniform_active(arch, seed, step):
  from betanas_tf import arch_params as ap  # pylint: disable=import-outside-toplevel
  return ap.sample_uniform(arch.active, ap.stream_seed(seed, ap.STREAM_PHASE1, step))


def _uniform_all(arch, seed, step):
  from betanas_tf import arch_params as ap  # pylint: disable=import-outside-toplevel
  return ap.sample_uniform(arch.valid.astype(np.float32), ap.stream_seed(seed, ap.STREAM_PHASE1, step))


def _probability(arch, seed, step):
  from betanas_tf import arch_params as ap  # pylint: disable=import-outside-toplevel
  return ap.sample_by_probability(arch.alpha, arch.active,
                                  ap.stream_seed(seed, ap.STREAM_PHASE1, step))


def _fair_active(arch, seed, step):
  from betanas_tf import arch_params as ap  # pylint: disable=import-outside-toplevel
  return ap.sample_fair(arch.active, ap.stream_key(seed, ap.STREAM_PHASE1), step)


def _fair_all(arch, seed, step):
  from betanas_tf import arch_params as ap  # pylint: disable=import-outside-toplevel
  return ap.sample_fair(arch.valid.astype(np.float32), ap.stream_key(seed, ap.STREAM_PHASE1), step)


# Phase-1 samplers: name -> function(arch: ArchParameters, seed, step) -> the [blocks] int32
# path that step trains, computed in the graph (the same on every replica and after a resume).
# The registry imports without TensorFlow (programs define --strategy from POLICIES' names
# before TensorFlow loads); a sampler imports `arch_params`, and with it TensorFlow, when the
# engine first traces it.
SAMPLERS: Registry = Registry("Phase-1 sampler")
SAMPLERS.register("uniform_active", _uniform_active)
SAMPLERS.register("uniform_all", _uniform_all)
SAMPLERS.register("probability", _probability)
SAMPLERS.register("fair_active", _fair_active)
SAMPLERS.register("fair_all", _fair_all)
NO_TRAINING = "none"   # a policy whose Phase 1 trains nothing (random search)
FAIR = {"uniform_active": "fair_active", "uniform_all": "fair_all"}


@dataclasses.dataclass(frozen=True)
class Policy:
  name: str
  phase1: str         # a SAMPLERS name, or "none"
  phase2: bool        # alpha updates through binary gates
  drop: bool          # selective drop after alpha updates
  selection: str      # a selection.SELECTORS name

  def __post_init__(self):
    samplers = SAMPLERS.names() + [NO_TRAINING]
    if self.phase1 not in samplers:
      raise ValueError(f"phase1 must be one of {', '.join(samplers)}, got {self.phase1!r}")
    if self.selection not in selection.SELECTORS.names():
      raise ValueError(f"selection must be one of {', '.join(selection.SELECTORS.names())}, "
                       f"got {self.selection!r}")
    if self.drop and not self.phase2:
      raise ValueError(f"policy {self.name}: selective drop needs Phase 2")
    if self.selection == "argmax" and not self.phase2:
      raise ValueError(f"policy {self.name}: argmax selection needs Phase 2")

  @property
  def trains_weights(self) -> bool:
    return self.phase1 != NO_TRAINING

  def sample_phase1(self, arch, seed: int, step):
    """The path Phase 1 trains at `step` (`SAMPLERS`)."""
    return SAMPLERS.get(self.phase1)(arch, seed, step)

  def with_ablations(self, drop: bool = None, balanced: bool = None, fair: bool = None) -> "Policy":
    """`--nodrop`, `--balanced=false` and `--fair` switches (betanas ablations; `fair`: the
    uniform samplers of betanas and spos made strictly fair, FairNAS-style)."""
    policy = self
    if drop is not None and policy.phase2:
      policy = dataclasses.replace(policy, drop=drop)
    if balanced is not None and policy.phase1 in ("uniform_active", "probability"):
      policy = dataclasses.replace(policy, phase1="uniform_active" if balanced else "probability")
    if fair and policy.phase1 in FAIR:
      policy = dataclasses.replace(policy, phase1=FAIR[policy.phase1])
    return policy


POLICIES: Registry = Registry("search strategy")
POLICIES.register("betanas", Policy("betanas", "uniform_active", True, True, "argmax"))
POLICIES.register("proxyless", Policy("proxyless", "probability", True, False, "argmax"))
POLICIES.register("spos", Policy("spos", "uniform_all", False, False, "evolution"))
POLICIES.register("random", Policy("random", "none", False, False, "random"))
