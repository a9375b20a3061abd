"""Search spaces: structure of proxyless_mobile / cifar_mobile / micro and the choice mappings."""

import numpy as np
import pytest

from betanas_tf import spaces
from betanas_tf.registry import Registry, UnknownNameError


def test_proxyless_mobile_structure():
  space = spaces.get_space("proxyless_mobile")
  assert len(space) == 21
  assert space.size() == 6 ** 6 * 7 ** 15 == 221502229807900608
  with_identity = [b.position for b in space.choice_blocks if "id" in b.labels]
  assert len(with_identity) == 15
  # Identity is absent in the first block of every stage (shape changes) and the 96/320 stages' first.
  assert [b.position for b in space.choice_blocks if "id" not in b.labels] == [1, 5, 9, 13, 17, 21]
  assert space.choice_blocks[0].labels == ("k3e3", "k3e6", "k5e3", "k5e6", "k7e3", "k7e6")
  assert [b.stride for b in space.choice_blocks if b.stride == 2] == [2, 2, 2, 2]
  assert [b.stride for b in space.choice_blocks].index(2, 1) == 4
  arch = space.arch_from_choices([0] * 21)
  assert arch.input_size == 224 and arch.stem.filters == 32 and arch.stem.stride == 2
  assert arch.blocks[0].label == "k3e1" and arch.blocks[0].filters == 16
  assert [s.out_size for s in arch.block_shapes()][::4] == [112, 56, 28, 14, 14, 7]
  assert sorted({b.filters for b in arch.blocks}) == [16, 24, 40, 80, 96, 192, 320]
  assert arch.final_size == 7 and arch.head.filters == 1280


def test_cifar_mobile_ends_at_4x4():
  space = spaces.get_space("cifar_mobile")
  arch = space.arch_from_choices([1] * len(space))
  assert arch.input_size == 32 and arch.stem.stride == 1 and arch.num_classes == 10
  sizes = [s.out_size for s in arch.block_shapes()]
  assert sizes[0] == 32 and arch.final_size == 4
  assert sorted(set(sizes), reverse=True) == [32, 16, 8, 4]


def test_micro_is_small_and_enumerable():
  space = spaces.get_space("micro")
  assert space.size() == 48 <= 100 and len(space) == 3
  assert space.input_size == 16
  assert sum("id" in b.labels for b in space.choice_blocks) == 2
  every = list(space.enumerate())
  assert len(every) == 48 == len(set(every))
  archs = [space.arch_from_choices(c) for c in every]
  assert len(set(a.to_compact() for a in archs)) == 48
  for choices, arch in zip(every, archs):
    assert space.choices_from_arch(arch) == choices


def test_sample_is_uniform_and_strings_round_trip():
  space = spaces.get_space("proxyless_mobile")
  rng = np.random.default_rng(0)
  draws = np.array([space.sample(rng) for _ in range(3000)])
  counts = np.bincount(draws[:, 1], minlength=7)  # block 2 has 7 candidates
  assert counts.min() > 3000 / 7 * 0.8 and counts.max() < 3000 / 7 * 1.2
  for row in draws[:20]:
    text = space.choices_to_string(row)
    assert space.choices_from_string(text) == tuple(row)
    assert space.choices_from_arch(space.arch_from_choices(row)) == tuple(row)


def test_errors():
  space = spaces.get_space("micro")
  with pytest.raises(ValueError, match="expected 3 choices, got 2"):
    space.arch_from_choices([0, 0])
  with pytest.raises(ValueError, match="block 1 has 3 candidates, choice 3 is out of range"):
    space.arch_from_choices([0, 3, 0])
  with pytest.raises(ValueError, match=r"block 1: op 'id' is not a candidate here; valid: k3e3, k3e6, k5e3"):
    space.choices_from_string("k3e3-id-id")
  other = spaces.get_space("proxyless_mobile").arch_from_choices([0] * 21)
  with pytest.raises(ValueError, match="architecture has 22 blocks, micro has 3"):
    space.choices_from_arch(other)
  with pytest.raises(UnknownNameError) as error:
    spaces.get_space("nope")
  assert str(error.value) == "unknown search space 'nope'; valid names: branches, cifar_mobile, micro, proxyless_mobile, small"


def test_registry_rejects_duplicates():
  registry = Registry("thing")
  registry.register("a", 1)
  with pytest.raises(ValueError, match="thing 'a' is already registered"):
    registry.register("a", 2)
  assert registry.get("a") == 1 and list(registry) == ["a"]
  registry.register("b", 3)
  assert registry.unregister("a") == 1 and list(registry) == ["b"] and "a" not in registry
  with pytest.raises(UnknownNameError, match="unknown thing 'a'; valid names: b"):
    registry.unregister("a")


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
