"""docs/contributing.md's recipes for a space and a dataset, followed from this file alone: a
registered space and a registered in-memory dataset run a search end to end. (The op recipe
is tests/toy_op_test.py, the strategy recipe tests/policy_test.py.)"""

import numpy as np
import pytest

from betanas_tf import arch as arch_lib
from betanas_tf import data
from betanas_tf import engine
from betanas_tf import policies
from betanas_tf import runner
from betanas_tf import spaces
from betanas_tf.data import splits


def stripes(input_size: int = 12, seed: int = 0, **unused_options) -> splits.Dataset:
  """Two classes: horizontal or vertical stripes with noise, uint8 (a toy of one's own data)."""
  rng = np.random.default_rng(seed)

  def split(count, split_seed):
    labels = np.arange(count) % 2
    grid = np.indices((input_size, input_size)).astype(np.float32)
    images = np.where(labels[:, None, None] == 0, grid[0] % 4 < 2, grid[1] % 4 < 2) * 200.0
    images = images[..., None].repeat(3, -1) + rng.uniform(0, 55, (count, input_size, input_size, 3))
    return splits.ArraySplit(images.astype(np.uint8), labels, split_seed, (100.0,) * 3, (80.0,) * 3)

  train, arch, evaluation = split(64, seed), split(32, seed + 1), split(32, seed + 2)
  full = splits.ArraySplit(np.concatenate([train.images, arch.images]),
                           np.concatenate([train.labels, arch.labels]), seed, train.mean, train.std)
  return splits.Dataset("stripes", input_size, 2, train, arch, evaluation, full)


def tiny_space() -> spaces.SearchSpace:
  """Two choice blocks of MBConv k3/k5 (and identity where the shape holds), 12 px, 2 classes."""
  return spaces.staged_space("tiny_contrib", 12, 2, arch_lib.Stem(8, 3, 1), [],
                             [(8, 1, 1), (16, 1, 2)], spaces.mbconvs(((3, 3), (5, 3))),
                             arch_lib.Head(32))


@pytest.fixture
def registered():
  spaces.SPACES.register("tiny_contrib", tiny_space)
  data.DATASETS.register("stripes", stripes)
  yield
  data.DATASETS.unregister("stripes")
  spaces.SPACES.unregister("tiny_contrib")


@pytest.mark.slow
def test_a_registered_space_and_dataset_run_a_search(tmp_path, registered):
  space = spaces.get_space("tiny_contrib")
  assert [[c.label for c in b.candidates] for b in space.choice_blocks] == [
      ["k3e3", "k5e3", "id"], ["k3e3", "k5e3"]]
  settings = runner.RunSettings(out_dir=str(tmp_path / "run"), space="tiny_contrib",
                                dataset=data.DataSource("stripes"), checkpoint_every=8,
                                log_every=4, eval_batches=1, calibration_batches=1, progress=False)
  config = engine.EngineConfig(batch_size=16, arch_batch_size=16, max_steps=8, lr=0.05,
                               arch_update_every=2, arch_warmup_steps=2)
  summary = runner.SearchRun(settings, policies.POLICIES.get("betanas"), config).run()
  assert summary["space"] == "tiny_contrib" and summary["dataset"] == "stripes"
  assert summary["input_size"] == 12 and len(summary["choices"]) == 2
  assert np.array(summary["counts"]).sum() == 8 * 2   # one op per block per step
  assert 0.0 <= summary["supernet_top1_arch_split"] <= 1.0
  with pytest.raises(ValueError, match="^search space 'tiny_contrib' is already registered$"):
    spaces.SPACES.register("tiny_contrib", tiny_space)   # registries refuse a duplicate name
