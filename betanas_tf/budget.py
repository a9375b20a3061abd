"""The budget a search or a multi-trial search works under: analytic MACs or a latency
table's prediction, as the per-(block, candidate) cost table both read."""

from typing import Optional

COSTS = ("macs", "latency")


def check(cost: str, latency_table: Optional[str]):
  """The errors every program prints for a budget it cannot build."""
  if cost not in COSTS:
    raise ValueError(f"--cost must be macs or latency, got {cost!r}")
  if cost == "latency" and not latency_table:
    raise ValueError("--cost=latency needs --latency_table")


def cost_table(space, cost: str, target: float = 0.0, latency_table: Optional[str] = None,
               se_ratio: float = 0.0):
  """The space's `cost.CostTable`: MACs (target in MACs) or a latency table's corrected
  predictions (target in ms)."""
  from betanas_tf import cost as cost_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf.latency import table as latency_lib  # pylint: disable=import-outside-toplevel
  check(cost, latency_table)
  if cost == "latency":
    return latency_lib.latency_cost_table(space, latency_table, target)
  return cost_lib.macs_cost_table(space, target, se_ratio)
