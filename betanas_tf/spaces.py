"""Search spaces: a fixed skeleton plus choice blocks, each with candidate ops.

A space maps a tuple of choice indices (one per choice block) to an
Architecture and back. Registered spaces:

* ``proxyless_mobile``: the ProxylessNAS / MNASNet mobile space (docs/design.md §1):
  input 224, stem 3x3/2 32ch, fixed MBConv k3e1 32->16, 21 choice blocks in six
  stages (widths 24,40,80,96,192,320; 4,4,4,4,4,1 blocks; first strides
  2,2,2,1,2,1), candidates MBConv {k3,k5,k7} x {e3,e6} plus identity where the
  block keeps its shape (15 blocks), head 1x1 1280. 6^6 * 7^15 ~ 2.2e17 nets.
* ``cifar_mobile``: the same stages for 32x32 inputs, 10 classes. The stem has
  stride 1 and the stage strides are 1,2,2,1,2,1 (ImageNet: 2,2,2,1,2,1 after a
  stride-2 stem), so the feature maps are 32,32,16,8,8,4,4: the last one is 4x4.
* ``micro``: a tiny space for tests, the demo and rank benchmarks: input 16x16
  (8x8 digits upsampled), stem 3x3/1 16ch, three choice blocks
  (16->16 s1, 16->24 s2, 24->24 s1), candidates k3e3, k3e6, k5e3 plus identity
  in the two shape-keeping blocks, head 1x1 64, 10 classes: 4*3*4 = 48 nets.
* ``branches``: the paper's Fig 7 network (`bench.branches`): input 32x32, stem 3x3/2 16ch,
  two choice blocks of plain convolutions (24 s2, 24 s1), candidates conv1, conv3, conv5,
  conv7 (`SearchSpace.restricted` offers fewer), head 1x1 64, 10 classes: 16 nets.
* ``small``: micro's next size up for the separation benchmark: input 32x32, stem 3x3/1
  16ch, five choice blocks (16 s1; 24 s2, 24; 32 s2, 32), candidates k3e3, k3e6, k5e3,
  k5e6 plus identity in the three shape-keeping blocks, head 1x1 96: 5*4*5*4*5 = 2,000 nets.
"""

import dataclasses
import itertools
import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from betanas_tf import arch as arch_lib
from betanas_tf import ops as ops_lib
from betanas_tf import primitives
from betanas_tf.registry import Registry


@dataclasses.dataclass(frozen=True)
class ChoiceBlock:
  """One searchable position: where it sits and which ops it may hold."""
  position: int          # index of the block in the Architecture's block list
  shape: arch_lib.BlockShape
  stride: int
  candidates: Tuple[arch_lib.Block, ...]

  @property
  def labels(self) -> Tuple[str, ...]:
    return tuple(c.label for c in self.candidates)

  @property
  def num_candidates(self) -> int:
    return len(self.candidates)

  def index_of(self, label: str) -> int:
    try:
      return self.labels.index(label)
    except ValueError:
      raise ValueError(f"block {self.position}: op {label!r} is not a candidate here; "
                       f"valid: {', '.join(self.labels)}") from None


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """A network skeleton with choice blocks (see module docstring)."""
  name: str
  input_size: int
  num_classes: int
  stem: arch_lib.Stem
  fixed_blocks: Tuple[arch_lib.Block, ...]   # before the first choice block
  choice_blocks: Tuple[ChoiceBlock, ...]
  head: arch_lib.Head
  activation: str = "relu6"
  width_multiplier: float = 1.0   # relative to the registered space (see `scaled`)

  def scaled(self, input_size: Optional[int] = None, width_multiplier: float = 1.0) -> "SearchSpace":
    """The same space at another input resolution and/or width: every width times
    `width_multiplier` with make_divisible(8) (the head grows only when > 1), exactly as
    `Architecture.with_width` scales a network, and every block shape recomputed."""
    size = input_size or self.input_size
    if not (isinstance(size, int) and size > 0):
      raise ValueError(f"input_size must be a positive integer, got {size!r}")
    if not width_multiplier > 0:
      raise ValueError(f"width_multiplier must be positive, got {width_multiplier!r}")
    scale = lambda filters: (filters if width_multiplier == 1.0
                             else arch_lib.scale_width(filters, width_multiplier))
    wider = dataclasses.replace(
        self, input_size=size, stem=dataclasses.replace(self.stem, filters=scale(self.stem.filters)),
        fixed_blocks=tuple(b.replace(filters=scale(b.filters)) for b in self.fixed_blocks),
        choice_blocks=tuple(dataclasses.replace(
            choice, candidates=tuple(c.replace(filters=scale(c.filters)) for c in choice.candidates))
                            for choice in self.choice_blocks),
        head=self.head.scaled(width_multiplier),
        width_multiplier=self.width_multiplier * width_multiplier)
    # Every block's shape, as the network computes it.
    shapes = wider.skeleton().block_shapes()
    return dataclasses.replace(wider, choice_blocks=tuple(
        dataclasses.replace(choice, shape=shapes[choice.position]) for choice in wider.choice_blocks))

  def restricted(self, ops: Sequence[Sequence[str]]) -> "SearchSpace":
    """The same space with choice block l offering only the candidates labelled `ops[l]` (in
    the space's order): a search over part of a space (`RunSettings.ops`). A ValueError
    names a label a block does not offer."""
    if len(ops) != len(self.choice_blocks):
      raise ValueError(f"{self.name}: ops name {len(ops)} blocks, the space has "
                       f"{len(self.choice_blocks)}")
    blocks = []
    for choice, labels in zip(self.choice_blocks, ops):
      if not labels:
        raise ValueError(f"{self.name}: block {choice.position} keeps no op")
      keep = {choice.index_of(label) for label in labels}
      blocks.append(dataclasses.replace(choice, candidates=tuple(
          c for i, c in enumerate(choice.candidates) if i in keep)))
    return dataclasses.replace(self, choice_blocks=tuple(blocks))

  def size(self) -> int:
    return math.prod(c.num_candidates for c in self.choice_blocks)

  def __len__(self) -> int:
    return len(self.choice_blocks)

  def _check_choices(self, choices: Sequence[int]) -> Tuple[int, ...]:
    choices = tuple(int(c) for c in choices)
    if len(choices) != len(self.choice_blocks):
      raise ValueError(f"{self.name}: expected {len(self.choice_blocks)} choices, got {len(choices)}")
    for block, choice in zip(self.choice_blocks, choices):
      if not 0 <= choice < block.num_candidates:
        raise ValueError(f"{self.name}: block {block.position} has {block.num_candidates} "
                         f"candidates, choice {choice} is out of range")
    return choices

  def arch_from_choices(self, choices: Sequence[int], name: str = "") -> arch_lib.Architecture:
    choices = self._check_choices(choices)
    chosen = tuple(block.candidates[c] for block, c in zip(self.choice_blocks, choices))
    return arch_lib.Architecture(
        input_size=self.input_size, num_classes=self.num_classes, stem=self.stem,
        blocks=self.fixed_blocks + chosen, head=self.head, activation=self.activation,
        name=name)

  def pad_table(self, rows: Sequence[Sequence[float]], fill: float = 0.0) -> np.ndarray:
    """Per-block rows of per-candidate values -> one [blocks, max candidates] array
    (`fill` where a block has fewer candidates): the layout of alpha and the cost tables."""
    width = max(b.num_candidates for b in self.choice_blocks)
    table = np.full((len(self.choice_blocks), width), fill, np.float64)
    for l, (row, block) in enumerate(zip(rows, self.choice_blocks)):
      if len(row) != block.num_candidates:
        raise ValueError(f"row {l} has {len(row)} values, block {l} has {block.num_candidates} candidates")
      table[l, :len(row)] = row
    return table

  def skeleton(self) -> arch_lib.Architecture:
    """The network with the first candidate everywhere: the stem, fixed blocks, head
    and block shapes every candidate shares (shapes do not depend on the choices)."""
    return self.arch_from_choices([0] * len(self.choice_blocks))

  def choices_from_arch(self, arch: arch_lib.Architecture) -> Tuple[int, ...]:
    """Inverse of arch_from_choices; ValueError if `arch` is not in this space."""
    expected_len = len(self.fixed_blocks) + len(self.choice_blocks)
    if len(arch.blocks) != expected_len:
      raise ValueError(f"architecture has {len(arch.blocks)} blocks, {self.name} has {expected_len}")
    skeleton = self.skeleton()
    if (arch.input_size, arch.stem, arch.head, arch.num_classes, arch.blocks[:len(self.fixed_blocks)]) != (
        skeleton.input_size, skeleton.stem, skeleton.head, skeleton.num_classes, skeleton.blocks[:len(self.fixed_blocks)]):
      raise ValueError(f"architecture's input, stem, head or fixed blocks differ from {self.name}")
    choices = []
    for block in self.choice_blocks:
      candidate = arch.blocks[block.position]
      if candidate not in block.candidates:
        raise ValueError(f"block {block.position} ({candidate.label}, {candidate.filters}ch, "
                         f"stride {candidate.stride}) is not a candidate of {self.name}")
      choices.append(block.candidates.index(candidate))
    return tuple(choices)

  def sample(self, rng: np.random.Generator) -> Tuple[int, ...]:
    """Uniformly random choices."""
    return tuple(int(rng.integers(block.num_candidates)) for block in self.choice_blocks)

  def enumerate(self, limit: int = 100_000) -> Iterator[Tuple[int, ...]]:
    """Every choice tuple, in lexicographic order (small spaces only)."""
    if self.size() > limit:
      raise ValueError(f"{self.name} has {self.size()} architectures; enumeration is limited to {limit}")
    return itertools.product(*(range(b.num_candidates) for b in self.choice_blocks))

  def choices_to_string(self, choices: Sequence[int]) -> str:
    """Compact form with widths and strides implied by the space: ``k3e3-id-k5e6``."""
    choices = self._check_choices(choices)
    return "-".join(block.labels[c] for block, c in zip(self.choice_blocks, choices))

  def choices_from_string(self, text: str) -> Tuple[int, ...]:
    labels = text.strip().split("-")
    if len(labels) != len(self.choice_blocks):
      raise ValueError(f"{self.name}: expected {len(self.choice_blocks)} ops, got {len(labels)} in {text!r}")
    return tuple(block.index_of(label) for block, label in zip(self.choice_blocks, labels))


SPACES: Registry = Registry("search space")


def get_space(name: str, input_size: Optional[int] = None,
              width_multiplier: float = 1.0) -> SearchSpace:
  """A registered space, at another input size and/or width when given."""
  space = SPACES.get(name)()
  if (input_size or space.input_size) == space.input_size and width_multiplier == 1.0:
    return space
  return space.scaled(input_size, width_multiplier)


def staged_space(name: str, input_size: int, num_classes: int, stem: arch_lib.Stem,
                 fixed_blocks: Sequence[arch_lib.Block], stages: Sequence[Tuple[int, int, int]],
                 candidates: Sequence[Dict], head: arch_lib.Head) -> SearchSpace:
  """Builds a space from stages of (width, blocks, first stride); other blocks have stride 1.
  `candidates` are op templates, ``{"op": name, **its fields}``: every choice block offers
  each one its op allows there (`ops.Op.allowed_at`: identity only where the shape holds)."""
  size, channels = primitives.out_size(input_size, stem.stride), stem.filters
  for block in fixed_blocks:
    size, channels = primitives.out_size(size, block.stride), block.filters
  choice_blocks: List[ChoiceBlock] = []
  position = len(fixed_blocks)
  for width, count, first_stride in stages:
    for i in range(count):
      stride = first_stride if i == 0 else 1
      out_size = primitives.out_size(size, stride)
      offered = tuple(arch_lib.Block(t["op"], width, stride, **{k: v for k, v in t.items()
                                                                if k != "op"})
                      for t in candidates
                      if ops_lib.get(t["op"]).allowed_at(stride, channels, width))
      choice_blocks.append(ChoiceBlock(position, arch_lib.BlockShape(size, channels, out_size, width),
                                       stride, offered))
      size, channels, position = out_size, width, position + 1
  return SearchSpace(name=name, input_size=input_size, num_classes=num_classes, stem=stem,
                     fixed_blocks=tuple(fixed_blocks), choice_blocks=tuple(choice_blocks), head=head)


def mbconvs(pairs: Sequence[Tuple[int, float]], identity: bool = True) -> List[Dict]:
  """Candidate templates: an MBConv per (kernel, expand), then identity."""
  return ([{"op": "mbconv", "kernel": k, "expand": e} for k, e in pairs]
          + ([{"op": "identity"}] if identity else []))


MOBILE_OPS = mbconvs(((3, 3), (3, 6), (5, 3), (5, 6), (7, 3), (7, 6)))
MOBILE_WIDTHS = (24, 40, 80, 96, 192, 320)
MOBILE_DEPTHS = (4, 4, 4, 4, 4, 1)
FIRST_BLOCK = arch_lib.Block("mbconv", 16, 1, kernel=3, expand=1)   # fixed: MBConv k3 e1 -> 16


@SPACES.decorator("proxyless_mobile")
def proxyless_mobile() -> SearchSpace:
  return staged_space(
      "proxyless_mobile", 224, 1000, arch_lib.Stem(32, 3, 2), [FIRST_BLOCK],
      list(zip(MOBILE_WIDTHS, MOBILE_DEPTHS, (2, 2, 2, 1, 2, 1))), MOBILE_OPS, arch_lib.Head(1280))


@SPACES.decorator("cifar_mobile")
def cifar_mobile() -> SearchSpace:
  return staged_space(
      "cifar_mobile", 32, 10, arch_lib.Stem(32, 3, 1), [FIRST_BLOCK],
      list(zip(MOBILE_WIDTHS, MOBILE_DEPTHS, (1, 2, 2, 1, 2, 1))), MOBILE_OPS, arch_lib.Head(1280))


@SPACES.decorator("micro")
def micro() -> SearchSpace:
  return staged_space(
      "micro", 16, 10, arch_lib.Stem(16, 3, 1), [],
      [(16, 1, 1), (24, 2, 2)], mbconvs(((3, 3), (3, 6), (5, 3))), arch_lib.Head(64))


@SPACES.decorator("branches")
def branches() -> SearchSpace:
  """Two blocks of plain kxk convolutions (k = 1, 3, 5, 7): the paper's Fig 7 experiment on
  how many branches a block should share (`bench.branches`), on the 32 px cluttered canvas."""
  return staged_space(
      "branches", 32, 10, arch_lib.Stem(16, 3, 2), [], [(24, 1, 2), (24, 1, 1)],
      [{"op": "conv", "kernel": k} for k in (1, 3, 5, 7)], arch_lib.Head(64))


@SPACES.decorator("small")
def small() -> SearchSpace:
  """micro's next size up (2,000 architectures in 5 choice blocks, 32 px down to 8 px): large
  enough that a grid is no longer the way to search it, small enough to train a sample of it
  standalone (`bench.separation`). Its input is the cluttered canvas at full size: at 16 px
  one training's noise was as large as most of its architectures' differences
  (docs/history.md)."""
  return staged_space(
      "small", 32, 10, arch_lib.Stem(16, 3, 1), [],
      [(16, 1, 1), (24, 2, 2), (32, 2, 2)], mbconvs(((3, 3), (3, 6), (5, 3), (5, 6))),
      arch_lib.Head(96))
