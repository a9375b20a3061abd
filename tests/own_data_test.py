"""Your own data: image folders, any tfds dataset by name, spaces at any resolution and width,
and the whole pipeline (search -> train -> export) on a folder of real JPEGs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from betanas_tf import cost
from betanas_tf import data
from betanas_tf.data import preprocess
from betanas_tf.latency import table as latency_table
from betanas_tf import spaces

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("cat", "dog", "fish")
COLOURS = {"cat": (200, 60, 40), "dog": (40, 180, 60), "fish": (50, 70, 210)}


def write_folder(root, per_class=40, size=40, png_every=10, seed=0):
  """`per_class` real image files per class folder (mostly JPEG, every `png_every`-th PNG):
  a noisy field of the class's colour with a bright square at a random place, so the
  classes are learnable from pixels. Plus a stray text file, which is not an image."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  for name in CLASSES:
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      pixels = np.clip(rng.normal(COLOURS[name], 40, size=(size, size + 8, 3)), 0, 255)
      y, x = rng.integers(0, size - 10, size=2)
      pixels[y:y + 10, x:x + 10] = 255
      ext = "png" if i % png_every == png_every - 1 else "jpg"
      Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(root, name, f"{name}_{i:03d}.{ext}"))
  with open(os.path.join(root, "cat", "notes.txt"), "w") as handle:
    handle.write("not an image\n")
  return root


def test_folder_splits_are_stratified_fixed_and_labelled(tmp_path):
  root = write_folder(str(tmp_path / "photos"))
  dataset = data.load("folder", data_dir=root, input_size=24, seed=0)
  assert dataset.class_names == CLASSES and dataset.num_classes == 3
  # 120 images: 24 held out for evaluation (8 per class), 19 of the other 96 for alpha steps.
  assert (len(dataset.eval), len(dataset.arch), len(dataset.train), len(dataset.full_train)) == (24, 19, 77, 96)
  per_class = lambda split: sorted(np.bincount(split.labels, minlength=3).tolist())
  assert per_class(dataset.eval) == [8, 8, 8]   # stratified: as even as the counts allow
  assert per_class(dataset.arch) == [6, 6, 7] and per_class(dataset.train) == [25, 26, 26]
  assert not set(dataset.eval.paths) & set(dataset.full_train.paths)
  for path, label in zip(dataset.train.paths, dataset.train.labels):
    assert os.path.basename(os.path.dirname(path)) == CLASSES[label]
  other_seed = data.load("folder", data_dir=root, input_size=24, seed=5)
  assert list(other_seed.eval.paths) == list(dataset.eval.paths)  # splits do not move with the seed
  info = dataset.describe()
  assert info["class_names"] == list(CLASSES) and info["mean"] == list(preprocess.IMAGENET_MEAN)


def test_folder_stream_is_positioned_in_constant_time(tmp_path):
  root = write_folder(str(tmp_path / "photos"), per_class=12)
  split = data.load("folder", data_dir=root, input_size=24).train
  stream = iter(split.train_dataset(4, start_step=0, seed=3))
  batches = [next(stream) for _ in range(7)]
  images, labels = batches[6]
  assert images.dtype.name == "uint8" and tuple(images.shape) == (4, 24, 24, 3)
  resumed_images, resumed_labels = next(iter(split.train_dataset(4, start_step=6, seed=3)))
  np.testing.assert_array_equal(resumed_images, images)
  np.testing.assert_array_equal(resumed_labels, labels)
  assert split.records_to_position(4, 6) == 0
  # The training crops differ from one epoch to the next (augmentation seeded by position).
  assert not np.array_equal(batches[0][0], next(iter(split.train_dataset(4, start_step=len(split), seed=3)))[0])


def test_an_unaugmented_stream_reads_the_evaluation_transform(tmp_path):
  # The alpha step's data with --arch_data=eval: the same examples, centre-cropped.
  root = write_folder(str(tmp_path / "photos"), per_class=6)
  split = data.load("folder", data_dir=root, input_size=24).arch
  images, labels = next(iter(split.train_dataset(3, start_step=2, seed=1, augment=False)))
  order = split.positions_order(np.arange(6, 9), 1).numpy()
  evaluation = list(split.eval_dataset(len(split)))[0]
  np.testing.assert_array_equal(images, evaluation[0].numpy()[order])
  np.testing.assert_array_equal(labels, evaluation[1].numpy()[order])
  augmented, _ = next(iter(split.train_dataset(3, start_step=2, seed=1)))
  assert not np.array_equal(augmented, images)


def test_train_and_val_subfolders_are_used_as_they_are(tmp_path):
  write_folder(str(tmp_path / "photos" / "train"), per_class=10)
  write_folder(str(tmp_path / "photos" / "val"), per_class=4, seed=1)
  dataset = data.load("folder", data_dir=str(tmp_path / "photos"), input_size=24)
  assert len(dataset.eval) == 12 and len(dataset.full_train) == 30
  assert all("/val/" in p for p in dataset.eval.paths)
  images, labels = next(iter(dataset.eval.eval_dataset(12)))
  assert tuple(images.shape) == (12, 24, 24, 3) and sorted(set(labels.numpy())) == [0, 1, 2]


@pytest.mark.parametrize("problem,message", [
    ("corrupt", "cat/cat_003.jpg: not a readable image"),
    ("one_class", "needs at least 2 class sub-folders"),
    ("tiny_class", "class 'fish' has 2 image(s); every class needs at least 3"),
    ("missing", "not a directory"),
])
def test_bad_folders_are_one_clear_error(tmp_path, problem, message):
  root = str(tmp_path / "photos")
  if problem != "missing":
    write_folder(root, per_class=6)
  if problem == "corrupt":
    with open(os.path.join(root, "cat", "cat_003.jpg"), "wb") as handle:
      handle.write(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
  elif problem == "one_class":
    for name in ("dog", "fish"):
      for f in os.listdir(os.path.join(root, name)):
        os.remove(os.path.join(root, name, f))
      os.rmdir(os.path.join(root, name))
  elif problem == "tiny_class":
    for f in sorted(os.listdir(os.path.join(root, "fish")))[2:]:
      os.remove(os.path.join(root, "fish", f))
  with pytest.raises(ValueError) as error:
    data.load("folder", data_dir=root, input_size=24)
  assert message in str(error.value)


def test_any_tfds_dataset_by_name(tiny_imagenet):
  dataset = data.load("tfds:imagenet2012", data_dir=tiny_imagenet, input_size=32,
                      arch_split_size=40)
  assert dataset.name == "tfds:imagenet2012" and dataset.num_classes == 1000
  assert dataset.class_names[:2] == ("n01440764", "n01443537")
  assert (len(dataset.train), len(dataset.arch), len(dataset.eval)) == (160, 40, 50)
  images, _ = next(iter(dataset.train.train_dataset(8, start_step=2)))
  assert tuple(images.shape) == (8, 32, 32, 3)
  with pytest.raises(data.DatasetNotPreparedError, match="'oxford_flowers102' is not prepared .* "
                     "run once with --download"):
    data.load("tfds:oxford_flowers102", data_dir=tiny_imagenet, input_size=32)
  with pytest.raises(KeyError, match="valid names: cifar10, cluttered_digits, digits, folder, imagenet2012, synthetic"):
    data.check_name("flowers")


def test_scaled_space_is_the_width_and_resolution_of_every_network():
  base = spaces.get_space("proxyless_mobile")
  scaled = spaces.get_space("proxyless_mobile", input_size=160, width_multiplier=0.75)
  assert (scaled.input_size, scaled.width_multiplier, scaled.size()) == (160, 0.75, base.size())
  rng = np.random.default_rng(0)
  for _ in range(5):
    choices = base.sample(rng)
    expected = base.arch_from_choices(choices).with_width(0.75).replace(input_size=160)
    assert scaled.arch_from_choices(choices) == expected
    assert scaled.choices_from_arch(expected) == tuple(choices)
  assert [b.shape.in_size for b in scaled.choice_blocks][:5] == [80, 40, 40, 40, 40]
  assert scaled.choice_blocks[-1].shape.out_channels == 240 and scaled.head.filters == 1280
  # MACs per candidate are those of the scaled networks.
  costs = cost.space_costs(scaled)
  arch = scaled.arch_from_choices([1] * len(scaled))
  assert costs.of_choices([1] * len(scaled)) == cost.architecture_cost(arch)


@pytest.mark.slow
def test_scaled_proxyless_macs_equal_the_profiler():
  from betanas_tf import builder, profiler  # pylint: disable=import-outside-toplevel
  scaled = spaces.get_space("proxyless_mobile", input_size=160, width_multiplier=0.75)
  arch = scaled.arch_from_choices(scaled.sample(np.random.default_rng(1)))
  model = builder.build_model(arch)
  measured = profiler.profiled_macs(model)
  assert abs(cost.architecture_cost(arch).macs - measured) <= 0.001 * measured
  assert cost.architecture_cost(arch).params == sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_latency_table_of_another_resolution_is_refused():
  scaled = spaces.get_space("proxyless_mobile", input_size=160, width_multiplier=0.75)
  table = os.path.join(ROOT, "configs", "pixel1_latency.json")
  with pytest.raises(ValueError) as error:
    latency_table.latency_cost_table(scaled, table)
  message = str(error.value)
  missing = len(latency_table.space_keys(scaled))
  assert (f"lacks {missing} key(s) of proxyless_mobile at 160 px, width x0.75, 1000 classes: "
          "Conv-input:160x160x3-output:80x80x24") in message
  assert message.endswith("python -m betanas_tf.latency build --space=proxyless_mobile --input_size=160 "
                          "--width_multiplier=0.75 --num_classes=1000 --out=host_cpu.json")


def _cli(*args, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_photos_to_int8_tflite_through_the_command_lines(tmp_path):
  """~120 real JPEG/PNG files in 3 class folders: search, retrain and export (fp32, int8) at a
  small input size; the exported files carry the folder names as labels."""
  photos = write_folder(str(tmp_path / "photos"))
  search, retrain, exported = (str(tmp_path / d) for d in ("search", "retrain", "export"))
  _cli("-m", "betanas_tf.search", "--flagfile=configs/demo.flags", "--dataset=folder",
       f"--data_dir={photos}", "--input_size=32", "--max_steps=40", "--batch_size=16",
       "--arch_batch_size=16", "--arch_warmup_steps=10", "--drop_warmup_steps=20",
       "--checkpoint_every=20", "--eval_batches=2", "--calibration_batches=2", "--noprogress",
       f"--out_dir={search}")
  summary = json.load(open(os.path.join(search, "summary.json")))
  assert summary["class_names"] == list(CLASSES) and summary["input_size"] == 32
  assert json.load(open(os.path.join(search, "data.json")))["class_names"] == list(CLASSES)
  _cli("-m", "betanas_tf.train", f"--arch={search}/arch.json", "--dataset=folder",
       f"--data_dir={photos}", "--epochs=6", "--batch_size=16", "--lr=0.1", "--warmup_epochs=1",
       "--dropout=0.0", "--verbose=0", f"--out_dir={retrain}")
  trained = json.load(open(os.path.join(retrain, "eval.json")))
  assert trained["top1"] >= 0.6  # 24 eval images of 3 colour classes; chance is 1/3
  _cli("export/to_tflite.py", f"--arch={retrain}/arch.json", f"--weights={retrain}/model.keras",
       "--quantize=fp32,int8", "--int8_io", "--dataset=folder", f"--data_dir={photos}",
       "--runs=5", "--warmup_runs=1", f"--out_dir={exported}")
  with open(os.path.join(exported, "labels.txt")) as handle:
    assert handle.read().split("\n") == list(CLASSES) + [""]
  report = json.load(open(os.path.join(exported, "report.json")))
  assert report["class_names"] == list(CLASSES) and report["input"]["mean"] == list(preprocess.IMAGENET_MEAN)
  assert report["input"]["from"].endswith("retrain/data.json") and report["input"]["shape"] == [1, 32, 32, 3]
  assert report["formats"]["int8"]["top1_agreement_vs_float"] >= 0.8
  assert os.path.exists(os.path.join(exported, "micro_betanas_int8.tflite"))
  assert "labels.txt" in open(os.path.join(exported, "report.md")).read()


@pytest.mark.slow
def test_one_search_step_of_proxyless_mobile_at_160_and_width_075():
  """The whole supernet of the scaled space takes a Phase-1 step: the same `train_step` the
  compiled loop runs (tested on smaller spaces), here eagerly, since tracing this 147-candidate
  graph once costs about 2 minutes on 2 cores."""
  from betanas_tf import engine as engine_lib, policies  # pylint: disable=import-outside-toplevel
  space = spaces.get_space("proxyless_mobile", input_size=160, width_multiplier=0.75)
  synthetic = data.load("synthetic", input_size=160, num_classes=space.num_classes,
                        synthetic_examples=16)
  config = engine_lib.EngineConfig(batch_size=2, arch_batch_size=2, max_steps=1)
  search = engine_lib.SearchEngine(space, policies.POLICIES.get("spos"), config,
                                   cost.macs_cost_table(space), input_mean=synthetic.mean,
                                   input_std=synthetic.std)
  weights = search.supernet.trainable_weights
  before = [w.numpy().copy() for w in weights]
  search.supernet.train_step(next(iter(synthetic.train.train_dataset(2, 0))))
  assert int(search.arch.counts_np().sum()) == len(space)   # one op of every block trained once
  leaves = {w.path.split("/")[-2] for b, w in zip(before, weights) if not np.array_equal(b, w.numpy())}
  moved_blocks = {"_".join(leaf.split("_")[:2]) for leaf in leaves if leaf.startswith("block")}
  path = search.arch.path.numpy()
  on_path = {f"block{c.position:02d}_{c.labels[p]}" for c, p in zip(space.choice_blocks, path)
             if c.labels[p] != "id"}
  assert moved_blocks == on_path | {"block00_k3e1"}   # the fixed block and the sampled ops only
  assert search.supernet.stem["conv"].kernel.shape[-1] == 24   # 32 x 0.75
