"""Analytic cost model: multiply-accumulates and trainable parameters from the spec.

MACs count what TensorFlow's profiler counts as Conv2D, DepthwiseConv2dNative
and MatMul work at batch 1 (BatchNorm, activations, adds and pooling are not
counted: BN folds into the convolutions on export). Parameters count trainable
weights exactly as Keras does (conv kernels without bias, BN gamma and beta,
squeeze-excite convs with bias, the classifier with bias). The formulas of the
pieces live in primitives.py, a block's in its op's entry (ops.py).

The search's cost term reads `space_costs`: the cost of every (choice block,
candidate) at its exact input shape, with the stem, fixed blocks and head
counted separately.
"""

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

from betanas_tf import arch as arch_lib
from betanas_tf import primitives
from betanas_tf import spaces as spaces_lib


Cost = primitives.Cost


def block_cost(block: arch_lib.Block, shape: arch_lib.BlockShape, se_ratio: float = 0.0) -> Cost:
  """Cost of one block at its input shape (its op's entry in ops.OPS knows it)."""
  return block.op_type.cost(block, shape, se_ratio)


def stem_cost(arch: arch_lib.Architecture) -> Cost:
  return primitives.conv_bn_cost(arch.input_size, arch.input_channels, arch.stem.filters,
                                 arch.stem.kernel, arch.stem.stride)


def head_cost(arch: arch_lib.Architecture) -> Cost:
  conv = primitives.conv_bn_cost(arch.final_size, arch.final_channels, arch.head.filters, 1, 1)
  dense = arch.head.filters * arch.num_classes
  return conv + Cost(dense, dense + arch.num_classes)


def breakdown(arch: arch_lib.Architecture) -> List[Tuple[str, Cost]]:
  """(structural name, cost) for the stem, every block and the head."""
  rows = [("stem", stem_cost(arch))]
  for position, (block, shape) in enumerate(zip(arch.blocks, arch.block_shapes())):
    rows.append((arch_lib.block_name(position, block), block_cost(block, shape, arch.se_ratio)))
  rows.append(("head", head_cost(arch)))
  return rows


def architecture_cost(arch: arch_lib.Architecture) -> Cost:
  total = Cost()
  for _, cost in breakdown(arch):
    total += cost
  return total


@dataclasses.dataclass(frozen=True)
class SpaceCosts:
  """Costs of a space's parts: `fixed` (stem + fixed blocks + head) and per candidate."""
  fixed: Cost
  candidates: Tuple[Tuple[Cost, ...], ...]   # [choice block][candidate]

  def of_choices(self, choices) -> Cost:
    total = self.fixed
    for block_costs, choice in zip(self.candidates, choices):
      total += block_costs[choice]
    return total

  def macs_table(self) -> List[List[int]]:
    return [[c.macs for c in row] for row in self.candidates]


def space_costs(space: spaces_lib.SearchSpace, se_ratio: float = 0.0) -> SpaceCosts:
  skeleton = space.skeleton()
  fixed = stem_cost(skeleton) + head_cost(skeleton)
  for block, shape in zip(space.fixed_blocks, skeleton.block_shapes()):
    fixed += block_cost(block, shape, se_ratio)
  candidates = tuple(tuple(block_cost(c, b.shape, se_ratio) for c in b.candidates)
                     for b in space.choice_blocks)
  return SpaceCosts(fixed, candidates)


def summary(arch: arch_lib.Architecture) -> Dict[str, int]:
  cost = architecture_cost(arch)
  return {"macs": cost.macs, "params": cost.params}


@dataclasses.dataclass(frozen=True)
class CostTable:
  """The Phase-2 cost of every candidate of every choice block ([blocks, max
  candidates], 0 where padded) plus the fixed parts, in `unit` (MMACs or ms)."""
  fixed: float
  table: np.ndarray
  unit: str
  target: float = 0.0      # 0: no target
  reference: float = 1.0   # normaliser of the linear cost term

  def of_choices(self, choices) -> float:
    return float(self.fixed + sum(self.table[l, c] for l, c in enumerate(choices)))


def cost_table(space: spaces_lib.SearchSpace, rows, fixed: float, unit: str,
               target: float) -> CostTable:
  """A CostTable from per-block rows; the linear term is normalised by the target,
  or else by the expected cost at uniform p."""
  table = space.pad_table(rows)
  uniform = fixed + sum(float(np.mean(row)) for row in rows)
  return CostTable(float(fixed), table, unit, target, target or uniform)


def macs_cost_table(space: spaces_lib.SearchSpace, target_macs: float = 0.0,
                    se_ratio: float = 0.0) -> CostTable:
  """Per-candidate MACs in millions (squeeze-excite included when se_ratio > 0)."""
  costs = space_costs(space, se_ratio)
  rows = [[c.macs / 1e6 for c in row] for row in costs.candidates]
  return cost_table(space, rows, costs.fixed.macs / 1e6, "MMACs", target_macs / 1e6)
