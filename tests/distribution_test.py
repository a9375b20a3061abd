"""MirroredStrategy over 2 logical CPU devices: same path on both replicas, and one
distributed step equals a single-device step on the same global batch.

BatchNorm statistics are per replica (synchronised BN cannot run inside
tf.switch_case under a strategy), so the global batch here is two identical
halves: then per-replica and global batch statistics agree, and any remaining
difference would come from gradient aggregation, weight decay or the optimizers.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
import keras
import numpy as np
from betanas_tf import engine as engine_lib, policies, runner, spaces

space = spaces.get_space("micro")
config = engine_lib.EngineConfig(batch_size=16, arch_batch_size=16, max_steps=10, weight_decay=1e-3,
                                 beta=0.5, arch_lr=0.01)
make = lambda strategy=None: engine_lib.SearchEngine(
    space, policies.POLICIES.get("betanas"), config, runner.macs_cost_table(space, 0.0), strategy)
single = make()
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored = make(strategy)
for a, b in zip(single.supernet.weights, mirrored.supernet.weights):
  b.assign(keras.ops.convert_to_numpy(a))
rng = np.random.default_rng(0)
half_x = rng.normal(size=(8, 16, 16, 3)).astype("float32")
half_y = rng.integers(10, size=8).astype("int32")
x, y = np.concatenate([half_x, half_x]), np.concatenate([half_y, half_y])
out = {"replicas": strategy.num_replicas_in_sync, "paths": [], "replica_paths": [], "loss": []}
for step in range(3):
  r1, r2 = single.weight_step(step, x, y), mirrored.weight_step(step, x, y)
  out["paths"].append([list(r1["path"]), list(r2["path"])])
  out["replica_paths"].append([v.numpy().tolist() for v in
                               strategy.experimental_local_results(mirrored.arch.path.value)])
  out["loss"].append([r1["loss"], r2["loss"]])
weights = lambda e: [keras.ops.convert_to_numpy(v) for v in e.supernet.weights]
out["weight_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(weights(single), weights(mirrored)))
a1, a2 = single.arch_step(4, x, y), mirrored.arch_step(4, x, y)
out["arch_ce"] = [a1["ce"], a2["ce"]]
out["alpha_diff"] = float(np.abs(single.arch.alpha_np() - mirrored.arch.alpha_np()).max())
out["alpha_moved"] = float(np.abs(single.arch.alpha_np()).max())
print("RESULT " + json.dumps(out))
'''


def test_mirrored_step_equals_single_device_step(tmp_path):
  script = tmp_path / "mirrored.py"
  script.write_text(SCRIPT)
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  line = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")][0]
  out = json.loads(line[len("RESULT "):])
  assert out["replicas"] == 2
  for single_path, mirrored_path in out["paths"]:
    assert single_path == mirrored_path
  for replica_paths, (single_path, _) in zip(out["replica_paths"], out["paths"]):
    assert replica_paths == [single_path, single_path]  # both replicas ran the same path
  for single_loss, mirrored_loss in out["loss"]:
    assert mirrored_loss == pytest.approx(single_loss, abs=1e-5)
  assert out["weight_diff"] < 1e-5
  assert out["arch_ce"][1] == pytest.approx(out["arch_ce"][0], abs=1e-5)
  assert out["alpha_diff"] < 1e-6 and out["alpha_moved"] > 1e-3


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
