"""Reference networks, expressed as Architectures (never as separate model code).

* ``mobilenet_v2``: Sandler et al. 2018, t,c,n,s = 1,16,1,1 / 6,24,2,2 / 6,32,3,2 /
  6,64,4,2 / 6,96,3,1 / 6,160,3,2 / 6,320,1,1 after a 3x3/2 32ch stem, head 1280.
* ``proxyless_k3e6``, ``proxyless_k7e6``: every choice block of proxyless_mobile
  set to that op (all-k3e6 is MobileNetV2-like in the MNASNet stage layout).
* ``proxyless_minimal``: the cheapest candidate (by MACs) in every block of
  proxyless_mobile: identity where allowed, k3e3 elsewhere.

Width multipliers are applied with `Architecture.with_width`.
"""

from betanas_tf import arch as arch_lib
from betanas_tf import cost as cost_lib
from betanas_tf import spaces as spaces_lib
from betanas_tf.registry import Registry

REFERENCES: Registry = Registry("reference architecture")

MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(width_multiplier: float = 1.0, num_classes: int = 1000,
                 input_size: int = 224) -> arch_lib.Architecture:
  blocks = []
  for expand, filters, count, stride in MOBILENET_V2_STAGES:
    for i in range(count):
      blocks.append(arch_lib.Block("mbconv", filters, stride if i == 0 else 1, kernel=3,
                                   expand=expand))
  arch = arch_lib.Architecture(input_size, num_classes, arch_lib.Stem(32, 3, 2), tuple(blocks),
                               arch_lib.Head(1280), name="mobilenet_v2")
  return arch if width_multiplier == 1.0 else arch.with_width(width_multiplier)


def uniform(space: spaces_lib.SearchSpace, label: str) -> arch_lib.Architecture:
  """Every choice block set to the op `label` (e.g. "k3e6")."""
  choices = [block.index_of(label) for block in space.choice_blocks]
  return space.arch_from_choices(choices, name=f"{space.name}_{label}")


def cheapest_choices(space: spaces_lib.SearchSpace):
  """Per block, the candidate with the fewest MACs (ties: the first listed)."""
  table = cost_lib.space_costs(space).macs_table()
  return [row.index(min(row)) for row in table]


def minimal(space: spaces_lib.SearchSpace) -> arch_lib.Architecture:
  return space.arch_from_choices(cheapest_choices(space), name=f"{space.name}_minimal")


REFERENCES.register("mobilenet_v2", mobilenet_v2)
REFERENCES.register("proxyless_k3e6", lambda: uniform(spaces_lib.get_space("proxyless_mobile"), "k3e6"))
REFERENCES.register("proxyless_k7e6", lambda: uniform(spaces_lib.get_space("proxyless_mobile"), "k7e6"))
REFERENCES.register("proxyless_minimal", lambda: minimal(spaces_lib.get_space("proxyless_mobile")))


def get_reference(name: str, width_multiplier: float = 1.0) -> arch_lib.Architecture:
  arch = REFERENCES.get(name)()
  return arch if width_multiplier == 1.0 else arch.with_width(width_multiplier)


def resolve_architecture(arch_path, reference, space, choices, width_multiplier) -> arch_lib.Architecture:
  """The Architecture named by exactly one of --arch, --reference, --space+--choices."""
  given = [name for name, value in (("--arch", arch_path), ("--reference", reference),
                                    ("--space", space)) if value]
  if len(given) != 1:
    raise ValueError("give exactly one of --arch, --reference, --space (with --choices); got "
                     + (", ".join(given) or "none"))
  if (choices is None) != (space is None):
    raise ValueError("--space and --choices go together")
  if arch_path:
    arch = arch_lib.Architecture.load(arch_path)
  elif reference:
    arch = get_reference(reference)
  else:
    search_space = spaces_lib.get_space(space)
    arch = search_space.arch_from_choices(search_space.choices_from_string(choices))
  return arch if width_multiplier == 1.0 else arch.with_width(width_multiplier)
