"""Retraining: it learns on real digits, resumes after SIGKILL, and options change cost as predicted."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from betanas_tf import arch as arch_lib
from betanas_tf import builder
from betanas_tf import cost
from betanas_tf import profiler
from betanas_tf import spaces

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--dataset=digits", "--batch_size=64", "--lr=0.2", "--warmup_epochs=1", "--dropout=0.1",
        "--weight_decay=4e-5", "--verbose=0", "--seed=0"]


PLAIN_KERAS_LOAD = """
import sys
import keras
import numpy as np
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], np.asarray(model(np.load(sys.argv[2]))))
assert not any(name.startswith("betanas_tf") for name in sys.modules), "betanas_tf was imported"
bn = [l for l in model.layers if "BatchNormalization" in type(l).__name__][0]
print(type(bn).__name__, type(bn).__module__)
"""


def _arch(tmp_path):
  space = spaces.get_space("micro")
  path = tmp_path / "arch.json"
  space.arch_from_choices(space.choices_from_string("k3e6-k5e3-k3e3")).save(str(path))
  return str(path)


def _command(arch, out, *extra):
  return [sys.executable, "-m", "betanas_tf.train", f"--arch={arch}", f"--out_dir={out}", *FAST, *extra]


def _run(*command_args, timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(_command(*command_args), cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


@pytest.mark.slow
def test_learns_digits_and_writes_outputs(tmp_path):
  out = tmp_path / "run"
  result = _run(_arch(tmp_path), out, "--epochs=8")
  assert result.returncode == 0, result.stderr[-3000:]
  evaluation = json.load(open(out / "eval.json"))
  # Chance is 10 %. P(>= 60 % of 360 test digits right by guessing) = binomial tail
  # P(X >= 216; n=360, p=0.1) < 1e-100: this bound cannot pass by luck.
  assert evaluation["top1"] >= 0.6 and evaluation["eval_examples"] == 360
  assert evaluation["top5"] >= evaluation["top1"]
  for name in ("model.keras", "model.weights.h5", "arch.json", "flags.txt", "history.json"):
    assert os.path.getsize(out / name) > 0
  history = json.load(open(out / "history.json"))
  assert [e["epoch"] for e in history] == list(range(1, 9))
  assert history[-1]["lr"] < history[1]["lr"]  # cosine decay after the warm-up
  # model.keras opens in a plain Keras process that never imports betanas_tf, and computes
  # what the trained weights compute.
  images = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32)
  np.save(tmp_path / "images.npy", images)
  plain = subprocess.run([sys.executable, "-c", PLAIN_KERAS_LOAD, str(out / "model.keras"),
                          str(tmp_path / "images.npy"), str(tmp_path / "logits.npy")],
                         capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
  assert plain.returncode == 0, plain.stderr[-3000:]
  assert plain.stdout.strip() == "BatchNormalization keras.src.layers.normalization.batch_normalization"
  model = builder.build_model(arch_lib.Architecture.load(str(out / "arch.json")))
  model.load_weights(str(out / "model.weights.h5"))
  np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), np.asarray(model(images)), atol=1e-5)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """(arch file, out_dir) of one uninterrupted 5-epoch retraining."""
  tmp_path = tmp_path_factory.mktemp("retrain")
  arch, out = _arch(tmp_path), tmp_path / "straight"
  result = _run(arch, out, "--epochs=5")
  assert result.returncode == 0, result.stderr[-3000:]
  return arch, out


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_schedule(tmp_path, straight):
  arch, straight = straight
  killed = tmp_path / "killed"
  env = dict(os.environ, PYTHONPATH=ROOT)
  process = subprocess.Popen(_command(arch, killed, "--epochs=5"), cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  history_path = killed / "history.json"
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if history_path.exists() and len(json.load(open(history_path))) >= 2:
      break
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, "training finished before it could be killed"
  done = len(json.load(open(history_path)))
  assert 2 <= done < 5 and not (killed / "eval.json").exists()
  resumed = _run(arch, killed, "--epochs=5")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  a, b = json.load(open(straight / "history.json")), json.load(open(history_path))
  assert [e["epoch"] for e in b] == [1, 2, 3, 4, 5]
  # The learning rate of every epoch equals the uninterrupted run's: the schedule resumed
  # where it was (a restart would have repeated the warm-up).
  np.testing.assert_allclose([e["lr"] for e in b], [e["lr"] for e in a], rtol=1e-6)


@pytest.mark.slow
def test_sigterm_saves_at_its_step_and_the_resume_ends_identical(tmp_path, straight):
  arch, straight = straight
  out = tmp_path / "stopped"
  env = dict(os.environ, PYTHONPATH=ROOT)
  process = subprocess.Popen(_command(arch, out, "--epochs=5"), cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if (out / "history.json").exists():   # epoch 1 is done: stop inside epoch 2
      break
    time.sleep(0.02)
  time.sleep(0.3)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 143, stderr[-3000:]
  state = json.load(open(out / "backup" / "state.json"))
  steps_per_epoch = 1437 // 64   # digits' TRAIN with the arch split's examples, batch 64
  assert state["step"] % steps_per_epoch != 0, "stopped at an epoch end: not a step-level save"
  assert stderr.strip().splitlines()[-1] == (
      f"train: stopped by SIGTERM at step {state['step']} (epoch {state['step'] // steps_per_epoch + 1}"
      f", batch {state['step'] % steps_per_epoch}); state saved in {out / 'backup'}; rerun the same "
      "command to resume")
  assert not (out / "model.keras").exists()
  resumed = _run(arch, out, "--epochs=5")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  # The same weights as the uninterrupted run: the optimizer, the schedule and the data
  # order resumed at the step, not at the epoch's start.
  models = []
  for directory in (straight, out):
    model = builder.build_model(arch_lib.Architecture.load(str(directory / "arch.json")))
    model.load_weights(str(directory / "model.weights.h5"))
    models.append(model)
  for a, b in zip(models[0].weights, models[1].weights):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, err_msg=a.path)
  assert json.load(open(out / "eval.json"))["top1"] == json.load(open(straight / "eval.json"))["top1"]


@pytest.mark.slow
def test_divergence_exits_3_and_writes_no_model(tmp_path):
  out = tmp_path / "nan"
  result = _run(_arch(tmp_path), out, "--epochs=2", "--lr=1e6", timeout=300)
  assert result.returncode == 3, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("train: ")]
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert lines[0].startswith("train: diverged: ") and lines[0].endswith("no model written")
  for name in ("model.keras", "model.weights.h5", "eval.json"):
    assert not (out / name).exists(), name


def test_se_swish_width_change_params_and_macs_as_predicted():
  space = spaces.get_space("micro")
  base = space.arch_from_choices([1, 2, 0])
  plain = base.for_retraining(10)
  variants = [base.for_retraining(10, se_ratio=0.0625),
              base.for_retraining(10, activation="swish"),
              base.for_retraining(10, width_multiplier=1.4, dropout=0.2)]
  assert variants[0].se_ratio == 0.0625 and variants[1].activation == "swish"
  assert variants[2].stem.filters == 24 and variants[2].blocks[1].filters == 32
  for arch in [plain] + variants:
    model = builder.build_model(arch, drop_connect=0.2)
    predicted = cost.architecture_cost(arch)
    assert predicted.params == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert predicted.macs == profiler.profiled_macs(model)
  assert cost.architecture_cost(variants[0]).params > cost.architecture_cost(plain).params
  assert cost.architecture_cost(variants[1]) == cost.architecture_cost(plain)  # swish is free in MACs
  assert cost.architecture_cost(variants[2]).macs > 1.5 * cost.architecture_cost(plain).macs


def test_drop_connect_is_stochastic_depth_on_residual_blocks_only():
  space = spaces.get_space("micro")
  arch = space.arch_from_choices([0, 0, 0])  # blocks 0 and 2 are residual
  model = builder.build_model(arch, drop_connect=0.3)
  drops = {l.name: l.rate for l in model.layers if l.name.endswith("_drop")}
  assert drops == {"block02_k3e3_drop": pytest.approx(0.3 * 2 / 3)}  # block 0 gets rate 0
  assert "block01_k3e3_drop" not in drops


@pytest.mark.slow
def test_init_from_supernet_copies_the_searched_path(tmp_path):
  import dataclasses  # pylint: disable=import-outside-toplevel
  import keras  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from betanas_tf import arch as arch_lib, supernet, train  # pylint: disable=import-outside-toplevel
  search = tmp_path / "search"
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable, "-m", "betanas_tf.search", f"--out_dir={search}",
                           "--flagfile=configs/demo.flags", "--max_steps=6", "--arch_warmup_steps=0",
                           "--noprogress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  arch = arch_lib.Architecture.load(str(search / "arch.json"))
  model = builder.build_model(arch)
  copied = train._init_from_supernet(model, str(search), 10)  # pylint: disable=protected-access
  assert copied == len([l for l in model.layers if l.weights])
  net = supernet.Supernet(dataclasses.replace(spaces.get_space("micro"), num_classes=10))
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(search / "checkpoints")))
  for i, variable in enumerate(net.weights):  # every supernet weight, BN statistics included, is saved
    variable.assign(reader.get_tensor(f"supernet_weights/{i}/.ATTRIBUTES/VARIABLE_VALUE"))
  leaves = {l.name: l for l in net._flatten_layers(include_self=False, recursive=True)}  # pylint: disable=protected-access
  for layer in model.layers:
    for mine, theirs in zip(layer.weights, leaves[layer.name].weights if layer.weights else []):
      np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs))
  assert not np.allclose(keras.ops.convert_to_numpy(model.get_layer("stem_conv").kernel),
                         keras.ops.convert_to_numpy(builder.build_model(arch).get_layer("stem_conv").kernel))
  with pytest.raises(ValueError, match="not a search output directory"):
    train._init_from_supernet(model, str(tmp_path / "none"), 10)  # pylint: disable=protected-access


@pytest.mark.slow
def test_bad_input(tmp_path):
  result = _run("/nonexistent.json", tmp_path / "x", "--epochs=1", timeout=120)
  assert result.returncode == 1 and "train: error: /nonexistent.json: cannot read architecture file" in result.stderr


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
