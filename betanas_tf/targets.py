"""A family's targets: each a cost and a bound, named on the command line as

    macs:150e6                          at most 150 million multiply-accumulates
    latency:configs/pixel1_latency.json:80   at most 80 ms under that latency table

A target knows its name (a directory name: `macs_150M`, `latency_pixel1_latency_80ms`) and
gives the space's additive cost table in its unit (`budget.cost_table`), so every piece of
the package that works under one budget (the search's cost term, selection, the exporter's
latency check) works under each target of a family. Parsing imports no TensorFlow.
"""

import dataclasses
import os
import re
from typing import Optional, Sequence, Tuple

from betanas_tf import budget

SYNTAX = "macs:BOUND or latency:TABLE.json:BOUND_MS (e.g. macs:150e6, latency:host_cpu.json:5)"


@dataclasses.dataclass(frozen=True)
class Target:
  kind: str                    # budget.COSTS: "macs" or "latency"
  bound: float                 # MACs, or ms
  table: Optional[str] = None  # the latency table (kind "latency")

  def __post_init__(self):
    if self.kind not in budget.COSTS:
      raise ValueError(f"target kind must be one of {', '.join(budget.COSTS)}, got {self.kind!r}")
    if not self.bound > 0:   # also refuses NaN
      raise ValueError(f"target {self.kind}: the bound must be > 0, got {self.bound!r}")
    if (self.kind == "latency") != bool(self.table):
      raise ValueError(f"target {self.kind}: " + ("needs a latency table" if self.table is None
                                                  else "takes no latency table"))

  @classmethod
  def parse(cls, text: str) -> "Target":
    """`macs:150e6` or `latency:PATH:80`; a ValueError naming the text otherwise."""
    kind, _, rest = text.strip().partition(":")
    table = None
    if kind == "latency":
      table, _, rest = rest.rpartition(":")
    try:
      bound = float(rest)
    except ValueError:
      bound = None
    if kind not in budget.COSTS or bound is None or (kind == "latency" and not table):
      raise ValueError(f"target {text!r} is not {SYNTAX}")
    if table is not None and not os.path.isfile(table):
      raise ValueError(f"target {text!r}: latency table {table} does not exist (build one with "
                       "python -m betanas_tf.latency build)")
    return cls(kind, bound, table)

  def __str__(self) -> str:
    """The target as typed, its bound exact (parsing it gives this very target)."""
    bound = self.bound
    text = str(int(bound)) if bound.is_integer() and abs(bound) < 1e16 else repr(float(bound))
    return f"macs:{text}" if self.kind == "macs" else f"latency:{self.table}:{text}"

  @property
  def unit(self) -> str:
    return "MACs" if self.kind == "macs" else "ms"

  @property
  def name(self) -> str:
    """A directory name for the target's outputs."""
    if self.kind == "macs":
      return f"macs_{self.bound / 1e6:g}M"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(os.path.basename(self.table))[0])
    return f"latency_{stem}_{self.bound:g}ms"

  def cost_table(self, space, se_ratio: float = 0.0):
    """The space's additive `cost.CostTable` with the bound as its target, both in the
    table's unit (MMACs for a MACs target, ms for a latency one)."""
    return budget.cost_table(space, self.kind, self.bound, self.table, se_ratio)


def parse_targets(texts: Sequence[str]) -> Tuple[Target, ...]:
  """Targets of a comma-separated flag; empty or repeated names are an error."""
  found = tuple(Target.parse(t) for t in texts if t.strip())
  if not found:
    raise ValueError(f"--targets is empty; give at least one target: {SYNTAX}")
  names = [t.name for t in found]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f"--targets names {', '.join(repeated)} more than once")
  return found
