"""Runs a search end to end: resume, fit() with alpha steps, checkpoint, select, write outputs.

Output directory (written by the chief alone under multi-worker training):
  flags.txt        resolved flags (written by the CLI at start)
  run.json         the settings that must match for a resume
  checkpoints/     weights, alpha, active mask, counts, drop log, both optimizers, step
  history.jsonl    one line per log interval (alpha, p, active, counts, drops, metrics)
  tensorboard/     scalars
  arch.json        the found Architecture
  summary.json     MACs, params, cost vs target, supernet accuracy, wall time, images/s, drops
  figures/         trajectories.png, training_frequency.png, architecture.png
"""

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
import tqdm

import betanas_tf
from betanas_tf import arch_params as ap
from betanas_tf import budget
from betanas_tf import cli
from betanas_tf import cost as cost_lib
from betanas_tf import data as data_lib
from betanas_tf import dir_lock
from betanas_tf import errors
from betanas_tf import distribution
from betanas_tf import divergence
from betanas_tf import engine as engine_lib
from betanas_tf import figures
from betanas_tf import io_utils
from betanas_tf.latency import table as latency_lib
from betanas_tf import selection
from betanas_tf import spaces as spaces_lib
from betanas_tf import stop_signal
from betanas_tf import targets as targets_lib
from betanas_tf.policies import Policy

CALIBRATION_SEED_OFFSET = 7919  # calibration reads TRAIN in an order of its own
MAX_CACHED_EVAL_BYTES = 512 << 20


class CheckpointError(errors.InputError):
  """No checkpoint that can be restored; the message names the file."""


class WorkerLostError(cli.TemporaryFailure):
  """A collective failed because another worker of the cluster died or became unreachable;
  the message names the checkpoint a restart resumes from."""


# What a collective raises when a peer is gone: gRPC's "connection reset" / "unavailable",
# or the coordination service's missed heartbeats (TensorFlow's default: 10 s).
PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                 tf.errors.DeadlineExceededError)


def _cause(error: Exception) -> str:
  """The line of a TensorFlow error that says what happened (its first line is usually
  "Graph execution error:")."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  for line in lines:
    if any(word in line.lower() for word in ("aborted by", "heartbeat", "connection", "unavailable")):
      return line
  return lines[0] if lines else type(error).__name__


@dataclasses.dataclass(frozen=True)
class RunSettings:
  out_dir: str
  space: str = "micro"
  input_size: Optional[int] = None     # None: the space's own
  width_multiplier: float = 1.0
  dataset: data_lib.DataSource = data_lib.DataSource()
  cost: str = "macs"
  cost_target: float = 0.0
  checkpoint_every: int = 50
  log_every: int = 10
  eval_batches: int = 10
  calibration_batches: int = 5
  evolution_population: int = 20
  evolution_generations: int = 5
  latency_table: Optional[str] = None
  progress: bool = True
  # Per choice block, the candidate labels searched (None: all): `SearchSpace.restricted`.
  ops: Optional[Tuple[Tuple[str, ...], ...]] = None
  # An in-search family: one alpha per target (`targets.Target` strings), each with its
  # own cost term and drops; the result is a pick per target (`family`).
  targets: Tuple[str, ...] = ()

  def __post_init__(self):
    budget.check(self.cost, self.latency_table)
    object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))
    if self.targets:
      targets_lib.parse_targets(self.targets)


def _crossed(before: int, after: int, every: int) -> bool:
  return after // every > before // every


RUN_FILE = "run.json"   # the settings a resume must match (`SearchRun._run_identity`)


def recorded_search(search_dir: str, num_classes: Optional[int] = None):
  """(space, EngineConfig) of the search whose output directory is `search_dir`, as its
  run.json records them (the space with `num_classes` if given); a ValueError if the
  directory holds no search."""
  try:
    with open(os.path.join(search_dir, RUN_FILE)) as handle:
      run = json.load(handle)
  except OSError as error:
    raise ValueError(f"{search_dir}: not a search output directory ({error.strerror})") from None
  space = spaces_lib.get_space(run["space"], run.get("input_size"), run.get("width_multiplier", 1.0))
  if run.get("ops"):
    space = space.restricted(run["ops"])
  if num_classes:
    space = dataclasses.replace(space, num_classes=num_classes)
  known = {f.name for f in dataclasses.fields(engine_lib.EngineConfig)}
  return space, engine_lib.EngineConfig(**{k: v for k, v in run["engine"].items() if k in known})


def recorded_run(search_dir: str, strategy: Optional[tf.distribute.Strategy] = None,
                 progress: bool = False) -> "SearchRun":
  """The `SearchRun` of the search whose output directory is `search_dir`, with the
  settings its run.json records (for restoring a finished search: `restore_finished`)."""
  try:
    with open(os.path.join(search_dir, RUN_FILE)) as handle:
      run = json.load(handle)
  except OSError as error:
    raise ValueError(f"{search_dir}: not a search output directory ({error.strerror})") from None
  picked = run.get("selection", {})
  settings = RunSettings(
      out_dir=search_dir, space=run["space"], input_size=run.get("input_size"),
      width_multiplier=run.get("width_multiplier", 1.0),
      dataset=data_lib.DataSource(**run.get("data_source", {"name": run["dataset"]})),
      cost=run["cost"], cost_target=run["cost_target"], latency_table=run["latency_table"],
      progress=progress, ops=tuple(tuple(labels) for labels in run["ops"]) if run.get("ops") else None,
      targets=tuple(run.get("targets") or ()),
      **{k: v for k, v in picked.items() if k in {f.name for f in dataclasses.fields(RunSettings)}})
  policy = Policy(**run["policy"])
  defaults = dataclasses.asdict(engine_lib.EngineConfig())
  config = engine_lib.EngineConfig(**{k: run["engine"].get(k, defaults[k]) for k in defaults})
  return SearchRun(settings, policy, config, strategy)


def run_identity(settings: RunSettings, policy: Policy, config: engine_lib.EngineConfig,
                 input_size: int) -> Dict:
  """What run.json records: every setting the search's outputs depend on (`input_size`:
  the space's, resolved). A resume must match it (`check_recorded_identity`)."""
  runtime = None
  if settings.cost == "latency":   # what the table describes (format, threads, delegate, where)
    runtime = latency_lib.LatencyTable.load(settings.latency_table).runtime_words()
  return {"space": settings.space, "input_size": input_size,
          "width_multiplier": settings.width_multiplier,
          "dataset": settings.dataset.name, "data_source": dataclasses.asdict(settings.dataset),
          "strategy": policy.name, "policy": dataclasses.asdict(policy),
          "engine": dataclasses.asdict(config), "cost": settings.cost,
          "cost_target": settings.cost_target, "latency_table": settings.latency_table,
          "latency_table_runtime": runtime,
          "ops": [list(labels) for labels in settings.ops] if settings.ops else None,
          "targets": list(settings.targets),
          # What selection reads: the scored batches and the evolution's size.
          "selection": {"eval_batches": settings.eval_batches,
                        "calibration_batches": settings.calibration_batches,
                        "evolution_population": settings.evolution_population,
                        "evolution_generations": settings.evolution_generations}}


def check_recorded_identity(out_dir: str, identity: Dict):
  """A ValueError naming every setting in which the search recorded in `out_dir`
  (run.json) differs from `identity`; nothing if there is none. Settings added to run.json
  later are taken to have had today's value in an older file."""
  identity_path = os.path.join(out_dir, RUN_FILE)
  if not os.path.exists(identity_path):
    return
  with open(identity_path) as handle:
    previous = json.load(handle)
  older = {k: identity[k] for k in ("input_size", "width_multiplier", "latency_table_runtime",
                                     "data_source", "selection")}
  older["ops"] = None
  older["targets"] = []
  older["width_multiplier"] = 1.0
  changed = sorted(k for k in identity
                   if k != "engine" and previous.get(k, older.get(k)) != identity[k])
  # An engine setting added later has its default's meaning in an older run.json.
  defaults = dataclasses.asdict(engine_lib.EngineConfig())
  changed += sorted(f"engine.{k}" for k in identity["engine"]
                    if previous["engine"].get(k, defaults[k]) != identity["engine"][k])
  if changed:
    raise ValueError(f"{out_dir} holds a search with other settings ({', '.join(changed)}); "
                     "use a new --out_dir")


def check_settings(settings: RunSettings, policy: Policy, config: engine_lib.EngineConfig):
  """What no one of the three configs can check alone (the search CLI prints these)."""
  if config.cost_form == "absolute" and not settings.cost_target > 0 and not settings.targets:
    raise ValueError("--cost_form=absolute needs --cost_target > 0 (or --targets, each "
                     "target's alpha seeking its own bound)")
  if policy.phase2 and config.arch_warmup_steps >= config.max_steps:
    raise ValueError("--arch_warmup_steps must be below --max_steps, or no alpha step ever runs")
  if settings.targets and not policy.phase2:
    raise ValueError(f"an in-search family needs Phase 2 (one alpha per target); {policy.name} "
                     "has none: specialise its supernet after the search (--family=post_hoc)")


class SearchRun:
  """One search in one output directory (re-running the same command resumes)."""

  def __init__(self, settings: RunSettings, policy: Policy, config: engine_lib.EngineConfig,
               strategy: Optional[tf.distribute.Strategy] = None):
    self.settings, self.policy, self.config = settings, policy, config
    check_settings(settings, policy, config)
    self.out = settings.out_dir
    if os.path.exists(self.out) and not os.path.isdir(self.out):
      raise ValueError(f"--out_dir {self.out} is an existing file, not a directory")
    base = spaces_lib.get_space(settings.space, settings.input_size, settings.width_multiplier)
    if settings.ops:
      base = base.restricted(settings.ops)
    self.dataset = settings.dataset.load(base.input_size, config.seed, base.num_classes)
    self.space = dataclasses.replace(base, num_classes=self.dataset.num_classes)
    self.costs = budget.cost_table(self.space, settings.cost, settings.cost_target,
                                   settings.latency_table, config.se_ratio)
    self.targets = targets_lib.parse_targets(settings.targets) if settings.targets else ()
    target_costs = [t.cost_table(self.space, config.se_ratio) for t in self.targets]
    self.strategy = strategy or tf.distribute.get_strategy()
    self.chief = distribution.is_chief(self.strategy)
    self.engine = engine_lib.SearchEngine(self.space, policy, config, self.costs, self.strategy,
                                          self.dataset.mean, self.dataset.std, target_costs)
    self.checkpoint = self.engine.checkpoint()
    # Saving is collective, but only the chief's copy is kept (the others write to a scratch
    # directory, deleted after each save); so every worker restores the CHIEF's checkpoints,
    # which is why --out_dir must be on storage every worker reads.
    shared = os.path.join(self.out, "checkpoints")
    self.checkpoint_dir = distribution.scratch_dir(shared, self.strategy)
    self.manager = tf.train.CheckpointManager(self.checkpoint, self.checkpoint_dir, max_to_keep=2)
    self.restore_manager = (self.manager if self.chief else
                            tf.train.CheckpointManager(self.checkpoint, shared, max_to_keep=2))
    self.history_path = os.path.join(self.out, "history.jsonl")
    self.labels = [b.labels for b in self.space.choice_blocks]
    self.notes: List[str] = []
    self.family: Optional[Dict] = None   # an in-search family's family.json, once made
    self.resume_records: Dict[str, int] = {}  # records each pipeline skipped to its position

  # ---- state --------------------------------------------------------------------

  def _run_identity(self) -> Dict:
    return run_identity(self.settings, self.policy, self.config, self.space.input_size)

  def _latency_runtime(self) -> Optional[str]:
    """What the latency table describes (format, threads, delegate, where), in words."""
    return self._run_identity()["latency_table_runtime"]

  def _check_identity(self):
    identity = self._run_identity()
    check_recorded_identity(self.out, identity)
    if self.chief:
      os.makedirs(self.out, exist_ok=True)
      io_utils.atomic_write_json(os.path.join(self.out, RUN_FILE), identity)

  def _restore(self) -> int:
    """Restores the newest intact checkpoint on every worker and checks that all of them
    restored the same step (one collective); returns it, 0 for a fresh run."""
    step = self._restore_local()
    steps = distribution.gather_from_workers(self.strategy, step)
    if len(set(steps)) > 1:
      shared = os.path.join(self.out, "checkpoints")
      raise CheckpointError(
          f"the workers restored different steps ({', '.join(map(str, steps))}, one per "
          f"replica; this worker: {step}): every worker restores from {shared}, the chief's "
          "checkpoints, so --out_dir must be on storage that every worker reads")
    return step

  def _restore_local(self) -> int:
    """Restores the newest intact checkpoint (falling back to the one before, saying
    so); returns its step, 0 for a fresh run."""
    candidates = list(reversed(self.restore_manager.checkpoints))
    failures = []
    for path in candidates:
      try:
        self.checkpoint.restore(path).assert_existing_objects_matched()
      except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
        reason = str(error).splitlines()[0] if str(error) else ""
        failures.append(f"{path} ({type(error).__name__}: {reason})")
        continue
      if failures:
        note = f"checkpoint {failures[0]} is unreadable; resumed from {path}"
        self.notes.append(note)
        print(f"search: warning: {note}", file=sys.stderr)
      return self.engine.arch.step_np()
    if failures:
      raise CheckpointError(f"cannot restore checkpoint {failures[0]}"
                            + (f"; the previous one {failures[1]} is unreadable too" if len(failures) > 1 else ""))
    return 0

  def _history(self) -> List[Dict]:
    if not os.path.exists(self.history_path):
      return []
    with open(self.history_path) as handle:
      return [json.loads(line) for line in handle if line.strip()]

  def _record(self, step: int, since: int) -> Dict:
    """The state at `step` (a read of the device: at log intervals only); `Diverged` if a
    loss of the interval since `since` was not finite."""
    arch = self.engine.arch
    self._check_divergence(step, since)
    metrics = self.engine.metrics()
    self.engine.reset_metrics()
    drops = [d for d in arch.drop_log(self.labels) if since <= d["step"] < step]
    return {"step": step, "alpha": arch.alpha_np().round(6).tolist(),
            "p": arch.probabilities_np().round(6).tolist(), "active": arch.active_np().astype(int).tolist(),
            "counts": arch.counts_np().tolist(), "drops": drops,
            **{k: round(v, 6) for k, v in metrics.items()}}

  # ---- failures as states: divergence, stop signals, the directory lock ------------

  def _check_divergence(self, step: int, since: int, weights: bool = False):
    """Raises `divergence.Diverged` if a Phase-1 loss or alpha-step cross-entropy was
    non-finite before `step` (the graph records the first such step; with float16 loss
    scaling a non-finite step is skipped, not divergence, unless every Phase-1 step since
    `since` was skipped), or, with `weights`, if a weight or alpha is non-finite now."""
    arch = self.engine.arch
    phase1, phase2 = (int(v) for v in keras.ops.convert_to_numpy(arch.nonfinite))
    problem = None
    if phase1 >= 0:
      problem = f"the Phase-1 loss is not finite at step {phase1}"
    elif phase2 >= 0:
      problem = f"the alpha step's cross-entropy is not finite at step {phase2}"
    elif self.engine.weight_opt.loss_scale is not None and step > since:
      applied = float(arch.counts_np().sum()) / len(self.space) - self._applied_at_log
      self._applied_at_log += applied
      if applied == 0:
        problem = (f"every Phase-1 step from {since} to {step} was skipped for non-finite "
                   "float16 gradients")
    if problem is None and weights:
      bad = divergence.nonfinite_variables(list(self.engine.supernet.weights) + [arch.alpha])
      if bad:
        problem = f"{divergence.describe(bad)} hold NaN or infinity at step {step}"
    if problem is not None:
      latest = self.restore_manager.latest_checkpoint
      kept = (f"the last good checkpoint is {latest}" if latest else "no checkpoint was written")
      raise divergence.Diverged(f"{problem}; {kept}; no result written (lower --lr, check the "
                                "data, or use loss scaling)")

  def _stop_requested(self, agree: bool = True) -> Optional[int]:
    """The stop signal this run must act on now, or None. With several workers, the
    workers agree (one small collective, so every worker must call it at the same point
    with `agree`); without `agree` they never stop there."""
    local = stop_signal.requested()
    if distribution.num_workers(self.strategy) < 2:
      return local
    if not agree:
      return None
    return distribution.max_over_workers(self.strategy, local or 0) or None

  def stop_point(self, where: str):
    """A safe point after the search (selection, specialisation): a stop signal raises
    `stop_signal.Stopped` here; the checkpoint is intact."""
    self._stop_after_phase1(self.config.max_steps if self.policy.trains_weights else 0, where)

  def _stop_after_phase1(self, step: int, where: str):
    """A safe point after Phase 1: the final checkpoint is written, nothing else is."""
    signum = self._stop_requested()
    if signum:
      raise stop_signal.Stopped(signum, f"stopped by {stop_signal.name(signum)} after Phase 1 "
                                f"(step {step}, {where}); checkpoint intact; rerun the same "
                                "command to select and write the result")

  # ---- the loop -------------------------------------------------------------------

  def run(self) -> Dict:
    """Runs (or resumes) the search to its result. The chief holds the output directory's
    lock throughout (`dir_lock.DirectoryBusy` if another run holds it)."""
    lock = dir_lock.DirectoryLock(self.out) if self.chief else None
    if lock:
      lock.acquire()
    try:
      return self._run_on_the_cluster()
    finally:
      if lock:
        lock.release()

  def _run_on_the_cluster(self) -> Dict:
    if distribution.num_workers(self.strategy) < 2:
      return self._run()
    try:
      return self._run()
    except PEER_FAILURES as error:
      shared = os.path.join(self.out, "checkpoints")
      latest = tf.train.latest_checkpoint(shared)
      resume = (f"the last checkpoint is {latest}" if latest else
                f"no checkpoint was written yet in {shared}, so it starts again")
      raise WorkerLostError(
          f"lost contact with the other workers ({type(error).__name__}: {_cause(error)}); "
          f"{resume}: restart every worker with the same command to resume") from None

  def _run(self) -> Dict:
    start_time = time.time()
    self._check_identity()
    start = self._restore()
    if self.chief:
      kept = [r for r in self._history() if r["step"] <= start]
      io_utils.atomic_write_text(self.history_path, "".join(json.dumps(r) + "\n" for r in kept))
    config, engine = self.config, self.engine
    trains = self.policy.trains_weights
    steps = config.max_steps if trains else 0
    dataset = self.dataset
    task = "{}:{}".format(*distribution.worker(self.strategy))

    def train_fn(ctx):
      if ctx.num_input_pipelines > 1:
          print(f"search: {task}: input pipeline {ctx.input_pipeline_id} of "
              f"{ctx.num_input_pipelines}, {ctx.get_per_replica_batch_size(config.batch_size)} "
              "examples per replica", file=sys.stderr)
      self.resume_records[f"train@{task}"] = dataset.train.records_to_position(
          config.batch_size, start, ctx)
      return dataset.train.train_dataset(config.batch_size, start, input_context=ctx)

    def arch_fn(position):
      def fn(ctx):
        self.resume_records[f"arch@{task}"] = dataset.arch.records_to_position(
            config.arch_batch_size, position, ctx)
        return dataset.arch.train_dataset(config.arch_batch_size, position, input_context=ctx,
                                          augment=config.arch_data == "train")
      return fn

    logger = _LogCallback(self, start, steps)
    self._applied_at_log = float(engine.arch.counts_np().sum()) / len(self.space)
    try:
      if trains:
        engine.search(engine.distribute(train_fn), arch_fn, start, callbacks=[logger])
    finally:
      logger.close()
    if logger.stopped:
      signum, step = logger.stopped
      raise stop_signal.Stopped(signum, f"stopped by {stop_signal.name(signum)} at step {step}; "
                                "checkpoint written; rerun the same command to resume")
    # The same test on every worker (a non-chief's own directory is always empty): the
    # save is collective.
    if start < steps or self.restore_manager.latest_checkpoint is None:
      self._save(steps)
    self._stop_after_phase1(steps, "before selection")
    return self._finish(start, logger.images_per_s(config.batch_size), time.time() - start_time)

  def restore_finished(self) -> int:
    """Restores a finished search's last checkpoint (its settings checked as a resume's) so
    that `score_paths` can ask its supernet about more subnets, without training or
    selecting again; returns the step. A search that has not finished is an error."""
    self._check_identity()
    step = self._restore()
    steps = self.config.max_steps if self.policy.trains_weights else 0
    if step < steps:
      raise ValueError(f"{self.out} stopped at step {step} of {steps}: run it to the end first")
    return step

  def _save(self, step: int):
    """A collective checkpoint at `step`, never from a diverged state (`Diverged` then)."""
    self._check_divergence(step, step, weights=True)
    self.manager.save(checkpoint_number=step)
    if not self.chief:  # the others' copies were only for the collective save
      shutil.rmtree(os.path.dirname(self.checkpoint_dir), ignore_errors=True)

  # ---- result -----------------------------------------------------------------------

  def _eval_batches(self):
    """The first `eval_batches` batches of the split supernets score on (`Dataset.scoring`:
    the arch split's examples, rendered more times where the dataset can), in order."""
    ds = self.dataset.scoring.eval_dataset(self.config.arch_batch_size).take(self.settings.eval_batches)
    return self._maybe_cached(ds, self.config.arch_batch_size * self.settings.eval_batches)

  def _calibration(self):
    """Training batches for BN recalibration, from their own iterator and seed."""
    seed = self.config.seed + CALIBRATION_SEED_OFFSET
    ds = self.dataset.train.train_dataset(self.config.batch_size, 0, seed=seed).take(
        self.settings.calibration_batches)
    return self._maybe_cached(ds, self.config.batch_size * self.settings.calibration_batches)

  def _maybe_cached(self, ds, examples: int):
    size = self.space.input_size
    return ds.cache() if examples * size * size * 3 <= MAX_CACHED_EVAL_BYTES else ds

  def score_paths(self, choices_list, split: str = "arch") -> List[Dict[str, float]]:
    """{"top1", "loss"} of each subnet with the supernet's weights, BN recalibrated on
    training batches (SPOS practice), on the first `eval_batches` batches of `split`
    ("arch": the held-out search split's examples as the dataset renders them for scoring,
    `Dataset.scoring`; "eval": the eval split) — how a rank benchmark asks a trained
    supernet what it thinks of every architecture."""
    if split == "arch":
      batches = self._eval_batches()
    elif split == "eval":
      batches = self._maybe_cached(
          self.dataset.eval.eval_dataset(self.config.arch_batch_size).take(self.settings.eval_batches),
          self.config.arch_batch_size * self.settings.eval_batches)
    else:
      raise ValueError(f"split must be 'arch' or 'eval', got {split!r}")
    calibration = self._calibration()
    return [self.engine.evaluator.evaluate_path_metrics(c, batches, calibration) for c in choices_list]

  def scoring_digest(self, split: str = "arch") -> str:
    """A digest of everything `score_paths(..., split)` answers from: the supernet's weights
    (BatchNorm statistics included; not the architecture parameters, which no score reads),
    the batches it reads (dataset, input size, seed, batch sizes, numbers of batches) and
    what computes it (the precision policy; betanas_tf, TensorFlow and Keras versions).
    Two searches with equal digests give every subnet the same scores: a strategy whose
    alpha step changes no weight (betanas --nodrop) ends with spos' supernet."""
    scored = self.dataset.scoring if split == "arch" else self.dataset.eval
    reads = {"split": split, "examples": len(scored), "space": self.settings.space,
             "input_size": self.space.input_size,
             "width_multiplier": self.settings.width_multiplier,
             "dataset": dataclasses.asdict(self.settings.dataset), "seed": self.config.seed,
             "batch_size": self.config.batch_size, "arch_batch_size": self.config.arch_batch_size,
             "eval_batches": self.settings.eval_batches,
             "calibration_batches": self.settings.calibration_batches,
             "mixed_precision": self.config.mixed_precision,
             "versions": {"betanas_tf": betanas_tf.__version__, "tensorflow": tf.__version__,
                          "keras": keras.__version__}}
    digest = hashlib.sha256(json.dumps(reads, sort_keys=True).encode())
    for variable in self.engine.supernet.weights:
      value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
      digest.update(f"{variable.path}:{value.dtype}:{value.shape}".encode())
      digest.update(value.tobytes())
    return digest.hexdigest()

  def _select(self):
    """The policy's selector (`selection.SELECTORS`) over what this search offers."""
    engine, settings = self.engine, self.settings
    arch = engine.arch
    eval_batches = calibration = None

    def score(choices):
      nonlocal eval_batches, calibration
      self._stop_after_phase1(self.config.max_steps, "during selection")
      if eval_batches is None:   # made once, and only for a selector that scores
        eval_batches, calibration = self._eval_batches(), self._calibration()
      return engine.evaluator.evaluate_path(choices, eval_batches, calibration)

    context = selection.Context(
        num_candidates=[b.num_candidates for b in self.space.choice_blocks],
        cost=self.costs.of_choices, budget=self.costs.target or None,
        rng=np.random.default_rng([self.config.seed, ap.STREAM_SELECTION]),
        probabilities=arch.probabilities_np(), active=arch.active_np(),
        cost_table=np.asarray(self.costs.table), fixed_cost=self.costs.fixed, score=score,
        describe=self.space.choices_to_string, population=settings.evolution_population,
        generations=settings.evolution_generations)
    return selection.SELECTORS.get(self.policy.selection)(context)

  def _finish(self, start: int, images_per_s: Optional[float], wall: float) -> Dict:
    """Selects the result, scores it, and writes arch.json, summary.json and figures (an
    in-search family: its picks to family/, and the first target's as the result)."""
    if self.targets:
      from betanas_tf import family  # pylint: disable=import-outside-toplevel
      made = self.family = family.in_search_family(self, os.path.join(self.out, "family"))
      choices = tuple(made["members"][0]["choices"])
      extra = {"family": {m["name"]: m["choices_string"] for m in made["members"]}}
    else:
      choices, extra = self._select()
    arch = self.engine.supernet.arch_for(choices, name=f"{self.space.name}_{self.policy.name}")
    trained = self.policy.trains_weights
    accuracy = (self.engine.evaluator.evaluate_path(choices, self._eval_batches(), self._calibration())
                if trained else None)
    counts, active = self.engine.arch.counts_np(), self.engine.arch.active_np()
    summary = {
        "strategy": self.policy.name, "space": self.space.name, "dataset": self.dataset.name,
        "input_size": self.space.input_size, "width_multiplier": self.space.width_multiplier,
        "class_names": self.dataset.describe()["class_names"],
        "steps": self.config.max_steps if trained else 0, "resumed_from_step": start,
        "choices": list(choices), "choices_string": self.space.choices_to_string(choices),
        "architecture": arch.to_compact(), "supernet_top1_arch_split": accuracy,
        "wall_time_s": round(wall, 3),
        "phase1_images_per_s": round(images_per_s, 2) if images_per_s else None,
        "drops": self.engine.arch.drop_log(self.labels),
        "balance_max_min_per_block": [(int(counts[l][active[l]].max()), int(counts[l][active[l]].min()))
                                      for l in range(len(self.space))],
        "alpha": self.engine.arch.alpha_np().round(6).tolist(),
        "p": self.engine.arch.probabilities_np().round(6).tolist(),
        "active": active.astype(int).tolist(), "counts": counts.tolist(),
        "distribution": distribution.cluster_description(self.strategy), "notes": self.notes,
        "resume_records_skipped": self.resume_records, **extra,
    }
    summary.update(self._cost_summary(arch, choices))
    self._stop_after_phase1(summary["steps"], "before writing the result")
    if self.chief:
      self._write_outputs(arch, summary)
    return summary

  def _cost_summary(self, arch, choices) -> Dict:
    total = cost_lib.architecture_cost(arch)
    predicted = self.costs.of_choices(choices)
    validation = None
    if self.settings.cost == "latency":  # the same figure, from the whole-network prediction
      table = latency_lib.LatencyTable.load(self.settings.latency_table)
      predicted, validation = table.predict(arch), table.validation
    target = self.costs.target
    cost = {"kind": self.settings.cost, "unit": self.costs.unit, "value": predicted,
            "target": target or None, "meets_target": (predicted <= target) if target else None}
    if self.settings.cost == "latency":
      # How far the table's predictions were from measured whole networks (`latency validate`).
      cost["table_validation"] = validation
      cost["table_runtime"] = self._latency_runtime()
    return {"macs": total.macs, "params": total.params, "cost": cost}

  def _write_outputs(self, arch, summary: Dict):
    arch.save(os.path.join(self.out, "arch.json"))
    data_lib.save_data_info(self.dataset, self.out)
    io_utils.atomic_write_json(os.path.join(self.out, "summary.json"), summary)
    counts, active = np.array(summary["counts"]), np.array(summary["active"], bool)
    figs = os.path.join(self.out, "figures")
    os.makedirs(figs, exist_ok=True)
    figures.plot_trajectories(self._history(), self.labels, os.path.join(figs, "trajectories.png"),
                              f"{self.policy.name} on {self.space.name}: p per block (x = drop)")
    figures.plot_training_frequency(counts, active, self.labels,
                                    os.path.join(figs, "training_frequency.png"),
                                    f"{self.policy.name}: Phase-1 steps per op (hatched = dropped)")
    figures.plot_architecture(arch, os.path.join(figs, "architecture.png"),
                              f"{arch.name}: {summary['macs'] / 1e6:.1f}M MACs, "
                              f"{summary['params'] / 1e6:.2f}M params")


class _LogCallback(keras.callbacks.Callback):
  """At log intervals: history line, TensorBoard scalars, progress bar; at checkpoint
  intervals: a checkpoint. Steps come from the run's start and Keras' batch counter."""

  def __init__(self, run: SearchRun, start: int, steps: int):
    super().__init__()
    self.run, self.start, self.steps, self.last = run, start, steps, start
    self.last_log = start
    self.stopped = None   # (signal, step) once a stop signal stopped the fit
    self.first = None  # (time, step) at the end of the first execution: tracing excluded
    self.writer = (tf.summary.create_file_writer(os.path.join(run.out, "tensorboard"))
                   if run.chief else tf.summary.create_noop_writer())
    self.bar = tqdm.tqdm(total=steps, initial=start, desc=f"search {run.policy.name}", unit="step",
                         disable=not (run.settings.progress and run.chief), file=sys.stderr,
                         mininterval=1.0)

  def on_train_batch_end(self, batch, logs=None):
    done = min(self.start + batch + 1, self.steps)
    before, self.last = self.last, done
    if self.first is None:
      self.first = (time.perf_counter(), done)
    settings = self.run.settings
    logged = _crossed(before, done, settings.log_every) or done == self.steps
    if logged:
      record = self.run._record(done, self.last_log)  # pylint: disable=protected-access
      self.last_log = done
      if self.run.chief:
        with open(self.run.history_path, "a") as handle:
          handle.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=done):
          for name in ("phase1/loss", "phase1/accuracy", "phase2/ce", "phase2/accuracy",
                       "phase2/expected_cost"):
            tf.summary.scalar(name, record[name])
          tf.summary.scalar("phase2/active_ops", float(np.sum(record["active"])))
        for drop in record["drops"]:
          tqdm.tqdm.write(f"drop: step {drop['step']} block {drop['block']} op {drop['op']} "
                          f"p={drop['p']:.4f}", file=sys.stderr)
      self.bar.set_postfix(loss=f"{record['phase1/loss']:.3f}",
                           alive=int(np.sum(record["active"])))
      self.bar.update(done - self.bar.n)
    saved = _crossed(before, done, settings.checkpoint_every) and done < self.steps
    if saved:
      self.run._save(done)  # pylint: disable=protected-access
    # A stop signal: under several workers they agree at log intervals (one collective
    # there); alone, it is a Python flag read after every execution.
    signum = self.run._stop_requested(agree=logged)  # pylint: disable=protected-access
    if signum and done < self.steps:
      if not saved:
        self.run._save(done)  # pylint: disable=protected-access
      self.stopped = (signum, done)
      self.model.stop_training = True

  def close(self):
    self.end = (time.perf_counter(), self.last)
    self.bar.close()
    self.writer.flush()

  def images_per_s(self, batch_size: int) -> Optional[float]:
    """Phase-1 throughput after the first execution (alpha steps and logging included)."""
    if self.first is None or self.end[1] <= self.first[1]:
      return None
    return (self.end[1] - self.first[1]) * batch_size / (self.end[0] - self.first[0])
