"""Runs a search end to end: resume, alternate phases, checkpoint, select, write outputs.

Output directory:
  flags.txt        resolved flags (written by the CLI at start)
  run.json         the settings that must match for a resume
  checkpoints/     weights, alpha, active masks, counts, both optimizers, step
  history.jsonl    one line per alpha step (alpha, p, active, counts, drops, CE, cost)
  tensorboard/     scalars
  arch.json        the found Architecture
  summary.json     MACs, params, cost vs target, supernet accuracy, wall time, images/s, drops
  figures/         trajectories.png, training_frequency.png, architecture.png
"""

import dataclasses
import json
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
import tqdm

from betanas_tf import arch_params as ap
from betanas_tf import cost as cost_lib
from betanas_tf import data as data_lib
from betanas_tf import engine as engine_lib
from betanas_tf import figures
from betanas_tf import io_utils
from betanas_tf import latency as latency_lib
from betanas_tf import selection
from betanas_tf import spaces as spaces_lib
from betanas_tf.policies import Policy

STREAM_SELECTION = 3


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored; the message names the file."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
  out_dir: str
  space: str = "micro"
  dataset: str = "digits"
  cost: str = "macs"
  cost_target: float = 0.0
  checkpoint_every: int = 50
  log_every: int = 10
  eval_batches: int = 10
  calibration_batches: int = 5
  evolution_population: int = 20
  evolution_generations: int = 5
  latency_table: Optional[str] = None
  dataset_options: Optional[Dict] = None
  progress: bool = True


def macs_cost_table(space: spaces_lib.SearchSpace, target_macs: float) -> engine_lib.CostTable:
  """Per-candidate MACs in millions; the linear term is normalised by the target, or
  else by the expected cost at uniform p."""
  costs = cost_lib.space_costs(space)
  width = max(b.num_candidates for b in space.choice_blocks)
  table = np.zeros((len(space), width))
  for l, row in enumerate(costs.candidates):
    table[l, :len(row)] = [c.macs / 1e6 for c in row]
  fixed = costs.fixed.macs / 1e6
  uniform = fixed + sum(table[l, :b.num_candidates].mean() for l, b in enumerate(space.choice_blocks))
  target = target_macs / 1e6
  return engine_lib.CostTable(fixed, table, "MMACs", target, target or uniform)


def latency_cost_table(space: spaces_lib.SearchSpace, table_path: str,
                       target_ms: float) -> engine_lib.CostTable:
  """Per-candidate latency (ms) from a lookup table; missing keys are an error listing them."""
  table = latency_lib.LatencyTable.load(table_path)
  needed = latency_lib.space_keys(space)
  missing = table.missing(needed)
  if missing:
    raise ValueError(f"{table_path} lacks {len(missing)} key(s) of {space.name} with "
                     f"{space.num_classes} classes: {', '.join(missing[:5])}"
                     + (" ..." if len(missing) > 5 else "") +
                     "; build one with python -m betanas_tf.latency build")
  skeleton = space.arch_from_choices([0] * len(space))
  width = max(b.num_candidates for b in space.choice_blocks)
  grid = np.zeros((len(space), width))
  for l, choice in enumerate(space.choice_blocks):
    for m, candidate in enumerate(choice.candidates):
      if not candidate.is_identity:
        grid[l, m] = table.lookup(latency_lib.block_key(skeleton, candidate, choice.shape))
  fixed = table.lookup(latency_lib.stem_key(skeleton)) + sum(table.lookup(k) for k in latency_lib.head_keys(skeleton))
  for block, shape in zip(space.fixed_blocks, skeleton.block_shapes()):
    fixed += table.lookup(latency_lib.block_key(skeleton, block, shape))
  scale = table.scale if table.scale is not None else 1.0  # same figures as LatencyTable.predict
  grid, fixed = grid * scale, fixed * scale
  uniform = fixed + sum(grid[l, :b.num_candidates].mean() for l, b in enumerate(space.choice_blocks))
  return engine_lib.CostTable(fixed, grid, "ms", target_ms, target_ms or uniform)


def make_strategy(name: str) -> tf.distribute.Strategy:
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multiworker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"distribution must be default, mirrored or multiworker, got {name!r}")


class SearchRun:
  """One search in one output directory (re-running the same command resumes)."""

  def __init__(self, settings: RunSettings, policy: Policy, config: engine_lib.EngineConfig,
               strategy: Optional[tf.distribute.Strategy] = None):
    self.settings, self.policy, self.config = settings, policy, config
    base = spaces_lib.get_space(settings.space)
    options = dict(settings.dataset_options or {})
    if settings.dataset == "synthetic":
      options.setdefault("num_classes", base.num_classes)  # random labels of the space's classes
    self.dataset = data_lib.load(settings.dataset, input_size=base.input_size, seed=config.seed,
                                 **options)
    self.space = dataclasses.replace(base, num_classes=self.dataset.num_classes)
    if settings.cost == "latency":
      if not settings.latency_table:
        raise ValueError("--cost=latency needs --latency_table")
      self.costs = latency_cost_table(self.space, settings.latency_table, settings.cost_target)
    else:
      self.costs = macs_cost_table(self.space, settings.cost_target)
    self.engine = engine_lib.SearchEngine(self.space, policy, config, self.costs, strategy)
    self.out = settings.out_dir
    os.makedirs(os.path.join(self.out, "figures"), exist_ok=True)
    self.checkpoint = self.engine.checkpoint()
    self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(self.out, "checkpoints"),
                                              max_to_keep=2)
    self.history_path = os.path.join(self.out, "history.jsonl")

  # ---- state --------------------------------------------------------------------

  def _run_identity(self) -> Dict:
    return {"space": self.settings.space, "dataset": self.settings.dataset,
            "strategy": self.policy.name, "policy": dataclasses.asdict(self.policy),
            "engine": dataclasses.asdict(self.config), "cost": self.settings.cost,
            "cost_target": self.settings.cost_target, "latency_table": self.settings.latency_table}

  def _resume(self) -> int:
    identity_path = os.path.join(self.out, "run.json")
    identity = self._run_identity()
    if os.path.exists(identity_path):
      with open(identity_path) as handle:
        previous = json.load(handle)
      changed = sorted(k for k in identity if k != "engine" and previous.get(k) != identity[k])
      changed += sorted(f"engine.{k}" for k in identity["engine"]
                        if k != "max_steps" and previous["engine"].get(k) != identity["engine"][k])
      if changed:
        raise ValueError(f"{self.out} holds a search with other settings ({', '.join(changed)}); "
                         "use a new --out_dir")
    io_utils.atomic_write_json(identity_path, identity)
    latest = self.manager.latest_checkpoint
    if latest is None:
      io_utils.atomic_write_text(self.history_path, "")
      return 0
    try:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError) as error:
      raise CheckpointError(f"cannot restore checkpoint {latest}: {type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''}") from None
    step = int(self.engine.step.numpy())
    self._truncate_history(step)
    return step

  def _truncate_history(self, step: int):
    """Drops history written after the checkpoint we resume from."""
    kept = [line for line in self._read_history() if line["step"] < step]
    io_utils.atomic_write_text(self.history_path, "".join(json.dumps(r) + "\n" for r in kept))

  def _read_history(self) -> List[Dict]:
    if not os.path.exists(self.history_path):
      return []
    with open(self.history_path) as handle:
      return [json.loads(line) for line in handle if line.strip()]

  def _append_history(self, record: Dict):
    with open(self.history_path, "a") as handle:
      handle.write(json.dumps(record) + "\n")

  def _save(self, step: int):
    self.engine.step.assign(step)
    self.manager.save(checkpoint_number=step)

  # ---- the loop -------------------------------------------------------------------

  def run(self) -> Dict:
    start_time = time.time()
    start = self._resume()
    config, engine = self.config, self.engine
    writer = tf.summary.create_file_writer(os.path.join(self.out, "tensorboard"))
    trains = self.policy.phase1 != "none"
    steps = config.max_steps if trains else 0
    train_batches = self.dataset.train.batches(config.batch_size, start)
    arch_batches = self.dataset.arch.batches(config.arch_batch_size, start // config.arch_update_every)
    phase1_time, phase1_images = 0.0, 0
    bar = tqdm.tqdm(total=steps, initial=start, desc=f"search {self.policy.name}", unit="step",
                    disable=not self.settings.progress, file=sys.stderr, mininterval=1.0)
    metrics = {}
    for step in range(start, steps):
      images, labels = next(train_batches)
      tick = time.time()
      metrics = engine.weight_step(step, images, labels)
      phase1_time += time.time() - tick
      phase1_images += len(labels)
      record = None
      if (step + 1) % config.arch_update_every == 0:
        arch_images, arch_labels = next(arch_batches)
        record = {"step": step, "type": "phase1"}
        if self.policy.phase2 and step >= config.arch_warmup_steps:
          record = self._arch_update(step, arch_images, arch_labels)
        record.update(self._state_record())
        self._append_history(record)
      if (step + 1) % self.settings.log_every == 0 or step + 1 == steps:
        with writer.as_default(step=step):
          tf.summary.scalar("phase1/loss", metrics["loss"])
          tf.summary.scalar("phase1/accuracy", metrics["acc"])
          if record and "ce" in record:
            tf.summary.scalar("phase2/ce", record["ce"])
            tf.summary.scalar("phase2/expected_cost", record["expected_cost"])
            tf.summary.scalar("phase2/active_ops", float(np.sum(record["active"])))
      bar.update(1)
      bar.set_postfix(loss=f"{metrics['loss']:.3f}", alive=int(engine.arch.active_np().sum()))
      if (step + 1) % self.settings.checkpoint_every == 0 or step + 1 == steps:
        self._save(step + 1)
    bar.close()
    writer.flush()
    return self._finish(start, phase1_time, phase1_images, time.time() - start_time)

  def _arch_update(self, step: int, images, labels) -> Dict:
    result = self.engine.arch_step(step, images, labels)
    for drop in result["drops"]:
      tqdm.tqdm.write(f"drop: step {drop['step']} block {drop['block']} op {drop['op']} "
                      f"p={drop['p']:.4f}", file=sys.stderr)
    return {"step": step, "type": "phase2", "ce": result["ce"], "acc": result["acc"],
            "expected_cost": result["expected_cost"], "drops": result["drops"]}

  def _state_record(self) -> Dict:
    arch = self.engine.arch
    return {"alpha": arch.alpha_np().round(6).tolist(), "p": arch.probabilities_np().round(6).tolist(),
            "active": arch.active_np().astype(int).tolist(), "counts": arch.counts_np().tolist()}

  # ---- result -----------------------------------------------------------------------

  def _select(self):
    engine, settings = self.engine, self.settings
    budget = self.costs.target or None
    cost_of = self.costs.of_choices
    rng = ap.rng_for(self.config.seed, 0, STREAM_SELECTION)
    num_candidates = [b.num_candidates for b in self.space.choice_blocks]
    if self.policy.selection == "argmax":
      return engine.arch.argmax(), {}
    if self.policy.selection == "random":
      return selection.random_within_budget(num_candidates, cost_of, budget, rng), {}
    score = lambda choices: engine.evaluate_path(choices, self._eval_batches(), self._calibration())
    best, best_score, log = selection.evolutionary_search(
        num_candidates, score, cost_of, budget, rng, settings.evolution_population,
        settings.evolution_generations)
    return best, {"evolution": log, "evolution_best_score": best_score}

  def _eval_batches(self):
    batches = self.dataset.arch.eval_batches(self.config.arch_batch_size)
    return [b for _, b in zip(range(self.settings.eval_batches), batches)]

  def _calibration(self):
    batches = self.dataset.train.batches(self.config.batch_size, 10**6)
    return [next(batches) for _ in range(self.settings.calibration_batches)]

  def _finish(self, start: int, phase1_time: float, phase1_images: int, wall: float) -> Dict:
    choices, extra = self._select()
    arch = self.engine.supernet.arch_for(choices, name=f"{self.space.name}_{self.policy.name}")
    arch.save(os.path.join(self.out, "arch.json"))
    total = cost_lib.architecture_cost(arch)
    trained = self.policy.phase1 != "none"
    accuracy = (self.engine.evaluate_path(choices, self._eval_batches(), self._calibration())
                if trained else None)
    history = self._read_history()
    drops = [d for r in history for d in r.get("drops", [])]
    counts, active = self.engine.arch.counts_np(), self.engine.arch.active_np()
    balance = [(int(counts[l][active[l]].max()), int(counts[l][active[l]].min()))
               for l in range(len(self.space))]
    predicted = self.costs.of_choices(choices)
    if self.settings.cost == "latency":  # the same figure, from the whole-network prediction
      predicted = latency_lib.LatencyTable.load(self.settings.latency_table).predict(arch)
    summary = {
        "strategy": self.policy.name, "space": self.space.name, "dataset": self.dataset.name,
        "steps": self.config.max_steps if trained else 0, "resumed_from_step": start,
        "choices": list(choices), "choices_string": self.space.choices_to_string(choices),
        "architecture": arch.to_compact(), "macs": total.macs, "params": total.params,
        "cost": {"kind": self.settings.cost, "unit": self.costs.unit, "value": predicted,
                 "target": self.costs.target or None,
                 "meets_target": (predicted <= self.costs.target) if self.costs.target else None},
        "supernet_top1_arch_split": accuracy,
        "wall_time_s": round(wall, 3),
        "phase1_images_per_s": round(phase1_images / phase1_time, 2) if phase1_time else None,
        "drops": drops, "balance_max_min_per_block": balance,
        "alpha": self.engine.arch.alpha_np().round(6).tolist(),
        "p": self.engine.arch.probabilities_np().round(6).tolist(),
        "active": active.astype(int).tolist(), "counts": counts.tolist(), **extra,
    }
    io_utils.atomic_write_json(os.path.join(self.out, "summary.json"), summary)
    labels = [b.labels for b in self.space.choice_blocks]
    figs = os.path.join(self.out, "figures")
    figures.plot_trajectories(history, labels, os.path.join(figs, "trajectories.png"),
                              f"{self.policy.name} on {self.space.name}: p per block (x = drop)")
    figures.plot_training_frequency(counts, active, labels, os.path.join(figs, "training_frequency.png"),
                                    f"{self.policy.name}: Phase-1 steps per op (hatched = dropped)")
    figures.plot_architecture(arch, os.path.join(figs, "architecture.png"),
                              f"{arch.name}: {total.macs / 1e6:.1f}M MACs, {total.params / 1e6:.2f}M params")
    return summary
