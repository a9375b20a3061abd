"""Multi-trial architecture search with keras-tuner: ground truth and budgeted baselines.

    python -m betanas_tf.tune --space=micro --dataset=cluttered_digits --oracle=grid --out_dir=gt0
    python -m betanas_tf.tune --space=micro --dataset=cluttered_digits --oracle=random \\
        --max_trials=12 --cost_target=2.0e6 --out_dir=random0

Every trial trains one architecture of the space from scratch (standalone, the project's
retraining recipe: `train.compile_with_recipe`) on TRAIN, is scored on the held-out arch
split (the objective: ``val_top1``; loss too) and on the eval split (``eval_top1``,
``eval_loss``: for ground truth, never used to choose). `ArchitectureHyperModel` declares
one ``hp.Choice`` per choice block whose values are the candidates' labels (``k5e3``,
``id``), so keras-tuner's oracles search the space as they search any hyperparameters:

* ``grid`` enumerates it (the ground truth of a small space);
* ``random`` / ``bayesian`` / ``hyperband`` are multi-trial NAS under ``--cost_target``
  (MACs, or ms with ``--cost=latency``): their oracles only propose architectures within
  the budget; grid trials over it fail before training and are listed as skipped.

Trials are cached in ``<out_dir>/tuner`` by keras-tuner: running the same command again
resumes and trains only what is missing. A trial that fails for any other reason makes the
command fail, naming it (keras-tuner itself goes on and returns a "best" of the rest).
Outputs: ``results.json`` (every trial: choices, cost, metrics, images trained on, status),
``arch.json`` (the best by the objective) and keras-tuner's own files.
"""

import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional, Tuple

from betanas_tf import budget
from betanas_tf import cli
from betanas_tf import data as data_lib
from betanas_tf import io_utils
from betanas_tf import train as train_lib

ORACLES = ("grid", "random", "bayesian", "hyperband")
OBJECTIVE = "val_top1"
OVER_BUDGET = "over the cost budget"


class TrialsFailedError(RuntimeError):
  """At least one trial failed (not skipped for its budget); the message names them."""


@dataclasses.dataclass(frozen=True)
class TuneConfig:
  """What to search and how each trial trains (`train` holds the recipe and the data)."""
  space: str = "micro"
  input_size: Optional[int] = None         # None: the space's
  oracle: str = "grid"
  max_trials: Optional[int] = None         # grid: None = the whole space
  architectures: Tuple[str, ...] = ()      # grid: only these (compact form), in this order
  cost: str = "macs"                       # or "latency" (needs latency_table)
  cost_target: float = 0.0                 # 0 = no budget
  latency_table: Optional[str] = None
  hyperband_factor: int = 3
  bayesian_initial_points: Optional[int] = None   # None: keras-tuner's 3 x blocks
  tuner_seed: int = 0                      # the oracle's; training uses train.seed
  train: train_lib.TrainConfig = train_lib.TrainConfig(
      data=data_lib.DataSource("cluttered_digits"), epochs=8, batch_size=64, lr=0.1,
      warmup_epochs=1.0, weight_decay=4e-5, dropout=0.0, verbose=0)

  def __post_init__(self):
    budget.check(self.cost, self.latency_table)


def require_tensorboard():
  """keras-tuner imports tensorboard inside every trial; without it each trial raises and the
  search still returns a meaningless best. Fail before the first trial instead."""
  try:
    import tensorboard  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    raise ValueError("keras-tuner needs the tensorboard package (pip install tensorboard); "
                     "without it every trial fails") from None


def _space_and_costs(config: TuneConfig, num_classes: int):
  from betanas_tf import budget  # pylint: disable=import-outside-toplevel
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  space = dataclasses.replace(spaces.get_space(config.space, config.input_size),
                              num_classes=num_classes)
  return space, budget.cost_table(space, config.cost, config.cost_target, config.latency_table)


def hp_name(block: int) -> str:
  return f"block{block}"


def _make_hypermodel_class():
  import keras_tuner  # pylint: disable=import-outside-toplevel
  from keras_tuner.src.engine.tuner_utils import SaveBestEpoch  # pylint: disable=import-outside-toplevel

  class ArchitectureHyperModel(keras_tuner.HyperModel):
    """One hp.Choice per choice block (values: candidate labels); `fit` trains nothing
    over the budget (keras_tuner.FailedTrialError, listed as skipped)."""

    def __init__(self, space, costs, dataset, config: TuneConfig):
      super().__init__(name=f"{space.name}_architectures")
      self.space, self.costs, self.dataset, self.config = space, costs, dataset, config
      self.labels = [block.labels for block in space.choice_blocks]
      self._scoring = None

    def choices(self, hp) -> tuple:
      return tuple(labels.index(hp.Choice(hp_name(l), list(labels)))
                   for l, labels in enumerate(self.labels))

    def declare_hyperparameters(self, hp):
      self.choices(hp)

    def build(self, hp):
      import keras  # pylint: disable=import-outside-toplevel
      from betanas_tf import builder  # pylint: disable=import-outside-toplevel
      choices = self.choices(hp)
      c = self.config.train
      keras.utils.set_random_seed(c.seed)
      arch = self.space.arch_from_choices(choices).for_retraining(
          self.dataset.num_classes, c.se_ratio, c.activation, c.dropout)
      model = builder.build_model(arch)
      # One call of the train function per epoch: Keras' per-step host loop costs about as
      # much as a micro network's step (15 against 25 ms per step at batch 64, measured).
      train_lib.compile_with_recipe(model, c, self._steps(), steps_per_execution=self._steps())
      return model

    def _scoring_data(self):
      """The arch and eval splits as batched datasets, made once per search."""
      if self._scoring is None:
        classes = self.dataset.num_classes
        self._scoring = (train_lib.eval_data(self.dataset.arch, 256, classes),
                         train_lib.eval_data(self.dataset.eval, 256, classes))
      return self._scoring

    def _steps(self) -> int:
      c = self.config.train
      return c.steps_per_epoch or max(1, len(self.dataset.train) // c.batch_size)

    def fit(self, hp, model, *args, epochs=None, initial_epoch=0, callbacks=None, **kwargs):
      # The budget is checked here, not in `build`: keras-tuner builds the default
      # architecture once to learn the search space, whatever its cost.
      choices = self.choices(hp)
      cost = self.costs.of_choices(choices)
      if self.costs.target and cost > self.costs.target:
        raise keras_tuner.errors.FailedTrialError(
            f"{self.space.choices_to_string(choices)}: {OVER_BUDGET} ({cost:.6g} > "
            f"{self.costs.target:.6g} {self.costs.unit})")
      c = self.config.train
      classes = self.dataset.num_classes
      # Hyperband's later rounds continue a trial's weights from `initial_epoch`: the data
      # continue there too (the optimizer, as keras-tuner rebuilds the model, restarts).
      train_ds, _ = train_lib.training_data(self.dataset.train, c.batch_size, classes,
                                            c.autoaugment, c.seed, initial_epoch * self._steps())
      val_ds, eval_ds = self._scoring_data()
      epochs = epochs or c.epochs
      # The trial is scored on its final weights (below), so nothing is validated during
      # training, and keras-tuner's checkpoint callback (which would save the weights after
      # every epoch) gives way to one save of the final weights at the end.
      checkpoints = [cb for cb in callbacks or [] if isinstance(cb, SaveBestEpoch)]
      model.fit(train_ds, epochs=epochs,
                initial_epoch=initial_epoch, steps_per_epoch=self._steps(),
                callbacks=[cb for cb in callbacks or [] if cb not in checkpoints],
                verbose=c.verbose)
      for checkpoint in checkpoints:
        model.save_weights(checkpoint.filepath)
      val_loss, val_top1, _ = model.evaluate(val_ds, verbose=0)
      eval_loss, eval_top1, _ = model.evaluate(eval_ds, verbose=0)
      return {"val_top1": float(val_top1), "val_loss": float(val_loss),
              "eval_top1": float(eval_top1), "eval_loss": float(eval_loss),
              "images": float((epochs - initial_epoch) * self._steps() * c.batch_size)}

  return ArchitectureHyperModel


def _budgeted(oracle_class, feasible: Callable[[Dict], bool]):
  """`oracle_class` whose proposals all meet the budget: random draws are redrawn, and a
  model-based proposal (Bayesian) over it is replaced by a feasible random draw."""
  from keras_tuner.engine import trial as trial_module  # pylint: disable=import-outside-toplevel

  class Budgeted(oracle_class):

    def _random_values(self):
      for _ in range(10_000):
        values = super()._random_values()
        if values is None or feasible(values):
          return values
      return None

    def populate_space(self, trial_id):
      result = super().populate_space(trial_id)
      if result.get("status") == trial_module.TrialStatus.RUNNING and not feasible(result["values"]):
        values = self._random_values()
        result = {"status": trial_module.TrialStatus.RUNNING if values else
                  trial_module.TrialStatus.STOPPED, "values": values}
      return result

  Budgeted.__name__ = "Budgeted" + oracle_class.__name__
  return Budgeted


def _grid_oracle_class():
  """keras-tuner's GridSearchOracle keeps its walk through the grid in memory only: resumed
  after an interruption it fails (KeyError in its linked list of trial ids, measured with
  keras-tuner 1.4.8). This grid walks the space in `SearchSpace.enumerate` order and takes
  the first combination not yet tried; what was tried is part of the oracle's saved state."""
  import keras_tuner  # pylint: disable=import-outside-toplevel
  from keras_tuner.engine import trial as trial_module  # pylint: disable=import-outside-toplevel

  class ArchitectureGrid(keras_tuner.Oracle):

    def __init__(self, combinations: List[Dict], **kwargs):
      super().__init__(**kwargs)
      self.combinations = combinations

    def populate_space(self, trial_id):
      for values in self.combinations:
        if not self._duplicate(values):
          return {"status": trial_module.TrialStatus.RUNNING, "values": dict(values)}
      return {"status": trial_module.TrialStatus.STOPPED, "values": None}

  return ArchitectureGrid


def make_tuner(hypermodel, config: TuneConfig, directory: str):
  """The keras-tuner Tuner of `config.oracle`, its trials kept in `directory`/tuner."""
  import keras_tuner  # pylint: disable=import-outside-toplevel
  if config.oracle not in ORACLES:
    raise ValueError(f"--oracle must be one of {', '.join(ORACLES)}, got {config.oracle!r}")
  space, costs = hypermodel.space, hypermodel.costs

  def feasible(values: Dict) -> bool:
    if not costs.target:
      return True
    choices = [labels.index(values[hp_name(l)]) for l, labels in enumerate(hypermodel.labels)]
    return costs.of_choices(choices) <= costs.target

  objective = keras_tuner.Objective(OBJECTIVE, "max")
  # keras-tuner reads seed 0 as "draw a seed at random" (Oracle.__init__: `seed or randint`),
  # which made --tuner_seed=0 proposals differ from run to run: ours are offset by one.
  common = {"objective": objective, "seed": config.tuner_seed + 1,
            # Grid trials over the budget are skipped by failing them before training.
            "max_consecutive_failed_trials": space.size() + 1}
  if config.architectures and config.oracle != "grid":
    raise ValueError(f"--architectures lists what a grid trains; --oracle={config.oracle} "
                     "proposes its own")
  if config.oracle == "grid":
    grid = ([space.choices_from_string(a) for a in config.architectures] if config.architectures
            else space.enumerate())
    combinations = [{hp_name(l): hypermodel.labels[l][c] for l, c in enumerate(choices)}
                    for choices in grid]
    oracle = _grid_oracle_class()(combinations, max_trials=config.max_trials, **common)
  else:
    if not config.max_trials:
      raise ValueError(f"--oracle={config.oracle} needs --max_trials")
    if config.oracle == "random":
      oracle = _budgeted(keras_tuner.oracles.RandomSearchOracle, feasible)(
          max_trials=config.max_trials, **common)
    elif config.oracle == "bayesian":
      oracle = _budgeted(keras_tuner.oracles.BayesianOptimizationOracle, feasible)(
          max_trials=config.max_trials, num_initial_points=config.bayesian_initial_points,
          **common)
    else:
      oracle = _budgeted(keras_tuner.oracles.HyperbandOracle, feasible)(
          max_epochs=config.train.epochs, factor=config.hyperband_factor,
          hyperband_iterations=1, **common)
      oracle.max_trials = config.max_trials
  tuner_class = keras_tuner.Hyperband if config.oracle == "hyperband" else keras_tuner.Tuner
  tuner = tuner_class.__new__(tuner_class)
  keras_tuner.Tuner.__init__(tuner, oracle=oracle, hypermodel=hypermodel, directory=directory,
                             project_name="tuner", overwrite=False)
  return tuner


def _trial_rows(tuner, hypermodel) -> List[Dict]:
  rows = []
  for trial_id, trial in sorted(tuner.oracle.trials.items()):
    values = trial.hyperparameters.values
    choices = [labels.index(values[hp_name(l)]) for l, labels in enumerate(hypermodel.labels)]
    row = {"trial_id": trial_id, "choices": choices,
           "choices_string": hypermodel.space.choices_to_string(choices),
           "cost": hypermodel.costs.of_choices(choices), "status": trial.status}
    if trial.status == "COMPLETED":
      for name in ("val_top1", "val_loss", "eval_top1", "eval_loss", "images"):
        row[name] = trial.metrics.get_last_value(name)
      if "tuner/epochs" in values:
        row["epochs"] = values["tuner/epochs"]
    else:
      row["message"] = (trial.message or "").strip().splitlines()[-1:] or [""]
      row["message"] = row["message"][0]
      row["skipped"] = OVER_BUDGET in (trial.message or "")
    rows.append(row)
  return rows


CONFIG_FILE = "tune.json"   # the settings a resumed tuner run must match


def _check_recorded_config(out_dir: str, config: TuneConfig):
  """Records `config` in `out_dir`/tune.json, or, when the directory already holds a run,
  refuses another config with one line naming what differs (keras-tuner would otherwise
  resume the old trials under the new settings' name); only `max_trials` may grow."""
  record = json.loads(json.dumps(dataclasses.asdict(config)))
  path = os.path.join(out_dir, CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as handle:
      previous = json.load(handle)
    # max_trials may grow: a stopped or extended walk continues with the trials it has.
    changed = sorted(k for k in record if k not in ("train", "max_trials")
                     and previous.get(k) != record[k])
    if (record["max_trials"] or 0) < (previous.get("max_trials") or 0) or (
        previous.get("max_trials") and record["max_trials"] is None):
      changed.append("max_trials")
    changed += sorted(f"train.{k}" for k in record["train"]
                      if previous.get("train", {}).get(k) != record["train"][k])
    if changed:
      raise ValueError(f"{out_dir} holds a tuner run with other settings "
                       f"({', '.join(changed)}); use a new --out_dir")
    return
  os.makedirs(out_dir, exist_ok=True)
  io_utils.atomic_write_json(path, record)


def tune(out_dir: str, config: TuneConfig = TuneConfig()) -> Dict:
  """Runs (or resumes) the multi-trial search; writes results.json and arch.json (the best
  completed trial by val_top1) to `out_dir` and returns the results."""
  require_tensorboard()
  _check_recorded_config(out_dir, config)
  c = config.train
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  size = config.input_size or spaces.get_space(config.space).input_size
  dataset = c.data.load(size, c.seed)
  space, costs = _space_and_costs(config, dataset.num_classes)
  hypermodel = _make_hypermodel_class()(space, costs, dataset, config)
  tuner = make_tuner(hypermodel, config, out_dir)
  tuner.search(verbose=0)
  rows = _trial_rows(tuner, hypermodel)
  failed = [r for r in rows if r["status"] != "COMPLETED" and not r.get("skipped")]
  if failed:
    raise TrialsFailedError(f"{len(failed)} of {len(rows)} trials failed (first: trial "
                            f"{failed[0]['trial_id']}, {failed[0]['choices_string']}: "
                            f"{failed[0]['message']}); their messages are in "
                            f"{os.path.join(out_dir, 'tuner')}")
  completed = [r for r in rows if r["status"] == "COMPLETED"]
  if not completed:
    raise TrialsFailedError("no trial completed (every architecture was over the budget?)")
  best = max(completed, key=lambda r: (r["val_top1"], -r["val_loss"]))
  arch = space.arch_from_choices(best["choices"]).replace(name=f"{space.name}_{config.oracle}")
  arch.save(os.path.join(out_dir, "arch.json"))
  results = {"space": space.name, "input_size": space.input_size, "dataset": dataset.name,
             "oracle": config.oracle, "cost": costs.unit, "cost_target": config.cost_target or None,
             "train_seed": c.seed, "tuner_seed": config.tuner_seed, "epochs": c.epochs,
             "batch_size": c.batch_size, "trials": rows, "best": best,
             "images_total": sum(r.get("images", 0.0) for r in completed),
             "skipped_over_budget": sum(1 for r in rows if r.get("skipped"))}
  io_utils.atomic_write_json(os.path.join(out_dir, "results.json"), results)
  return results


# ---- command line ---------------------------------------------------------------------

def define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  d, t = TuneConfig(), TuneConfig().train
  cli.define_space_flags(d.space, width_multiplier=False)
  flags.DEFINE_enum("oracle", d.oracle, ORACLES, "keras-tuner oracle.")
  flags.DEFINE_integer("max_trials", None, "Trials (grid: default the whole space).", lower_bound=1)
  flags.DEFINE_list("architectures", [], "Grid: train only these architectures, in the compact "
                    "form (e.g. id-k3e3-id-k3e3-id for --space=small).")
  cli.define_cost_flags(d.cost, d.cost_target)
  flags.DEFINE_integer("hyperband_factor", d.hyperband_factor, "Hyperband's reduction factor.",
                       lower_bound=2)
  flags.DEFINE_integer("bayesian_initial_points", None, "Random trials before the Bayesian "
                       "oracle's Gaussian process (default 3 x choice blocks).", lower_bound=1)
  flags.DEFINE_integer("tuner_seed", d.tuner_seed, "The oracle's seed.")
  cli.define_data_flags(default=t.data.name)
  flags.DEFINE_integer("epochs", t.epochs, "Epochs per trial (hyperband: at most).", lower_bound=1)
  flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass of TRAIN).",
                       lower_bound=1)
  flags.DEFINE_integer("batch_size", t.batch_size, "Batch size.", lower_bound=1)
  flags.DEFINE_float("lr", t.lr, "Peak learning rate.", lower_bound=0.0)
  flags.DEFINE_float("warmup_epochs", t.warmup_epochs, "Linear warm-up epochs.", lower_bound=0.0)
  flags.DEFINE_float("weight_decay", t.weight_decay, "Coupled L2.", lower_bound=0.0)
  flags.DEFINE_float("label_smoothing", t.label_smoothing, "Label smoothing.", lower_bound=0.0)
  flags.DEFINE_integer("seed", t.seed, "Training seed (weights and data order).")
  flags.DEFINE_string("out_dir", None, "Output directory (re-running resumes).")


@cli.reports_errors("tune", TrialsFailedError)
def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  del argv
  f = flags.FLAGS
  out_dir = cli.require_out_dir()
  recipe = dataclasses.replace(
      TuneConfig().train, data=cli.data_source_from_flags(), epochs=f.epochs,
      steps_per_epoch=f.steps_per_epoch, batch_size=f.batch_size, lr=f.lr,
      warmup_epochs=f.warmup_epochs, weight_decay=f.weight_decay,
      label_smoothing=f.label_smoothing, seed=f.seed)
  config = TuneConfig(space=f.space, input_size=f.input_size, oracle=f.oracle,
                      max_trials=f.max_trials, architectures=tuple(f.architectures),
                      cost=f.cost, cost_target=f.cost_target,
                      latency_table=f.latency_table, hyperband_factor=f.hyperband_factor,
                      bayesian_initial_points=f.bayesian_initial_points,
                      tuner_seed=f.tuner_seed, train=recipe)
  results = tune(out_dir, config)
  completed = [r for r in results["trials"] if r["status"] == "COMPLETED"]
  for row in sorted(completed, key=lambda r: -r["val_top1"]):
    print(f"{row['choices_string']:24s} cost {row['cost']:.6g}  val top-1 {row['val_top1']:.4f}  "
          f"eval top-1 {row['eval_top1']:.4f}  eval loss {row['eval_loss']:.4f}")
  print(f"{len(completed)} trials completed, {results['skipped_over_budget']} skipped over the "
        f"budget; best {results['best']['choices_string']} -> {os.path.join(f.out_dir, 'arch.json')}")
  return 0


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
