"""Cluttered translated digits: deterministic canvases, the digit really on them, splits by
source digit."""

import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from betanas_tf import cluttered
from betanas_tf import data


@pytest.fixture(scope="module")
def digits():
  return sk_datasets.load_digits().images / 16.0


def test_without_clutter_each_canvas_holds_exactly_its_enlarged_digit(digits):
  spec = cluttered.ClutterSpec(fragments=0, noise=0.0, copies=2)
  canvases, source = cluttered.generate(digits[:20], spec, seed=5)
  assert canvases.shape == (40, 32, 32) and source.tolist() == [i // 2 for i in range(40)]
  big = cluttered._enlarge(digits[:20].astype(np.float32), spec.digit)  # pylint: disable=protected-access
  positions = set()
  for canvas, k in zip(canvases, source):
    # The digit is somewhere on the canvas, untouched, and nothing else is.
    found = [(y, x) for y in range(32 - 14 + 1) for x in range(32 - 14 + 1)
             if np.allclose(canvas[y:y + 14, x:x + 14], big[k], atol=1e-6)]
    assert found
    assert canvas.sum() == pytest.approx(big[k].sum(), rel=1e-5)
    positions.add(found[0])
  assert len(positions) >= 30  # translated: positions differ


def test_clutter_is_deterministic_and_adds_pieces_and_noise(digits):
  a, _ = cluttered.generate(digits[:50])
  b, _ = cluttered.generate(digits[:50])
  c, _ = cluttered.generate(digits[:50], seed=1)
  assert np.array_equal(a, b) and not np.array_equal(a, c)
  assert a.min() >= 0.0 and a.max() <= 1.0
  clean, _ = cluttered.generate(digits[:50], cluttered.ClutterSpec(noise=0.0, fragments=0))
  # Fragments and noise light up many pixels the digit alone leaves dark.
  assert np.mean(a > 0.3) > 1.5 * np.mean(clean > 0.3)


def test_the_dataset_splits_by_source_digit_like_digits():
  ds = data.load("cluttered_digits", input_size=32)
  plain = data.load("digits", input_size=8)
  copies, eval_copies = cluttered.ClutterSpec().copies, cluttered.ClutterSpec().eval_copies
  assert (copies, eval_copies) == (3, 12)
  assert (len(ds.train), len(ds.arch), len(ds.eval)) == (3 * 1077, 3 * 360, 12 * 360)
  assert ds.train.images.shape[1:] == (32, 32, 3) and ds.train.images.dtype == np.uint8
  assert ds.eval.images.shape[1:] == (32, 32, 3) and ds.eval.images.dtype == np.uint8
  # Same source digits per split as `digits` (same stratified split): same label counts.
  for mine, theirs, n in ((ds.train, plain.train, copies), (ds.arch, plain.arch, copies),
                          (ds.eval, plain.eval, eval_copies)):
    assert np.array_equal(np.bincount(mine.labels, minlength=10),
                          n * np.bincount(theirs.labels, minlength=10))
  # The eval canvases are new images, not the training canvases' positions again.
  train_pixels = {image.tobytes() for image in ds.train.images}
  assert not any(image.tobytes() in train_pixels for image in ds.eval.images)
  # Supernets score on the arch digits rendered 12 times (as many canvases as eval holds),
  # new images too; digits without one (digits) score on their arch split.
  assert cluttered.ClutterSpec().score_copies == 12 and len(ds.scoring) == 12 * 360
  assert np.array_equal(np.bincount(ds.scoring.labels, minlength=10),
                        12 * np.bincount(plain.arch.labels, minlength=10))
  arch_pixels = {image.tobytes() for image in ds.arch.images}
  assert not any(image.tobytes() in arch_pixels | train_pixels for image in ds.scoring.images)
  assert plain.scoring is plain.arch and ds.scoring.mean == ds.train.mean
  again = data.load("cluttered_digits", input_size=24, seed=3)
  assert again.eval.images.shape[1:] == (24, 24, 3)
  assert np.array_equal(again.eval.labels, ds.eval.labels)   # the data do not follow the seed
