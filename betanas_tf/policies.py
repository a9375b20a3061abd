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

from betanas_tf.registry import Registry

PHASE1_SAMPLING = ("uniform_active", "probability", "uniform_all", "fair_active", "fair_all",
                   "none")
FAIR = {"uniform_active": "fair_active", "uniform_all": "fair_all"}
SELECTION = ("argmax", "evolution", "random")


@dataclasses.dataclass(frozen=True)
class Policy:
  name: str
  phase1: str         # one of PHASE1_SAMPLING
  phase2: bool        # alpha updates through binary gates
  drop: bool          # selective drop after alpha updates
  selection: str      # one of SELECTION

  def __post_init__(self):
    if self.phase1 not in PHASE1_SAMPLING:
      raise ValueError(f"phase1 must be one of {PHASE1_SAMPLING}, got {self.phase1!r}")
    if self.selection not in SELECTION:
      raise ValueError(f"selection must be one of {SELECTION}, got {self.selection!r}")
    if self.drop and not self.phase2:
      raise ValueError(f"policy {self.name}: selective drop needs Phase 2")
    if self.selection == "argmax" and not self.phase2:
      raise ValueError(f"policy {self.name}: argmax selection needs Phase 2")

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
