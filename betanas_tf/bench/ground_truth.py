"""A ground truth that installs with the package: standalone results of a space's networks.

    python -m betanas_tf.bench.ground_truth --space=small --archs=64 --samples=0,1 \\
        --seeds=0,1,2 --out=betanas_tf/bench/data/small_ground_truth.json

A rank benchmark needs every sampled architecture trained standalone, several times: on
`small` one sample (64 networks x 3 seeds) is about 100 minutes of two CPU cores. This module
trains them once and keeps the results in one small, versioned JSON file (`GroundTruth`) that ships
inside the package, so `bench.rank` reads it instead of retraining. Every (architecture,
seed) pair is one task: the rank recipe (`tune`'s grid over that one architecture, exactly
as `for_ranking` trains a space it enumerates) in a scratch directory, after which its figures are merged
into the file under a lock. The file is therefore also the cache: re-running the command
trains only the pairs it lacks, so a run stopped after any task loses at most the tasks in
flight, and a partial file committed to the repository lets the next machine continue.

The file records what produced it (the sample, which sample drew each network, the
recipe, the command, Python and the package versions); a file whose settings differ from
the command's is refused, naming the setting, instead of being mixed with new results.

The module is the one owner of ground truths: sampling (`cost_stratified_sample`), training
(this file format, or a tune run per seed for a space small enough to enumerate) and reading
them as a benchmark does (`TruthRequest`, `for_ranking`); `bench.rank` and `bench.separation`
ask it, nothing else trains one.
"""

import dataclasses
import fcntl
import json
import os
import platform
import shutil
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from betanas_tf import io_utils

FORMAT = "betanas_tf.ground_truth"
VERSION = 1
PACKAGES = ("tensorflow", "keras", "keras-tuner", "numpy", "scikit-learn")
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
# The settings a file is identified by: a result trained under other settings is refused.
SETTINGS = ("space", "input_size", "dataset", "sample", "recipe")


def shipped_path(space: str) -> str:
  """Where the package keeps `space`'s ground truth."""
  return os.path.join(DATA_DIR, f"{space}_ground_truth.json")


def shipped_selections_path(space: str) -> str:
  """Where the package keeps the networks `space`'s rank benchmark selected and trained
  with the ground truth's recipe (a listed ground truth): a pick found there is not
  trained again."""
  return os.path.join(DATA_DIR, f"{space}_selections.json")


def recipe_config(dataset: str, epochs: int, seed: int):
  """The rank benchmark's standalone recipe (`tune`'s defaults) on `dataset`."""
  from betanas_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  from betanas_tf import tune  # pylint: disable=import-outside-toplevel
  return dataclasses.replace(tune.TuneConfig().train, data=data_lib.DataSource(dataset),
                             epochs=epochs, seed=seed)


# TrainConfig fields added after files were written, with the value those files imply:
# recorded only when a recipe differs from it, so that older files still match.
ADDED_LATER = {"mixed_precision": "none", "jit_compile": False}


def recipe_record(dataset: str, epochs: int) -> Dict:
  """The recipe as the file records it (every TrainConfig field but the data and seed)."""
  fields = dataclasses.asdict(recipe_config(dataset, epochs, 0))
  for name in ("data", "seed", "verbose"):
    fields.pop(name)
  for name, implied in ADDED_LATER.items():
    if fields[name] == implied:
      fields.pop(name)
  return fields


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """Per-seed standalone results of `networks` (compact form), in a fixed order."""
  space: str
  input_size: int
  dataset: str
  sample: Dict                 # {"kind": "cost_stratified", "count": N, "seeds": [S, ...]}
  recipe: Dict                 # recipe_record(...)
  seeds: Tuple[int, ...]
  networks: Tuple[Dict, ...]   # {"choices", "macs", "params", "results": {seed: {...}}}
  provenance: Dict             # the command; per run of it: start, Python and packages

  def to_json(self) -> Dict:
    body = dataclasses.asdict(self)
    body["seeds"] = list(self.seeds)
    body["networks"] = list(self.networks)
    return dict(body, format=FORMAT, version=VERSION)

  @classmethod
  def from_json(cls, body: Dict, where: str = "ground truth") -> "GroundTruth":
    if body.get("format") != FORMAT:
      raise ValueError(f"{where}: not a betanas_tf ground-truth file (format "
                       f"{body.get('format')!r})")
    if body.get("version") != VERSION:
      raise ValueError(f"{where}: version {body.get('version')!r}; this betanas_tf reads "
                       f"version {VERSION}")
    names = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(names - set(body))
    unknown = sorted(set(body) - names - {"format", "version"})
    if missing or unknown:
      raise ValueError(f"{where}: " + "; ".join(
          ([f"missing field(s) {', '.join(missing)}"] if missing else [])
          + ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])))
    fields = {n: body[n] for n in names}
    fields["seeds"] = tuple(int(s) for s in body["seeds"])
    fields["networks"] = tuple(body["networks"])
    return cls(**fields)

  @classmethod
  def load(cls, path: str) -> "GroundTruth":
    try:
      with open(path) as handle:
        body = json.load(handle)
    except FileNotFoundError:
      raise ValueError(f"no ground-truth file at {path}") from None
    except json.JSONDecodeError as error:
      raise ValueError(f"{path}: not valid JSON ({error})") from None
    return cls.from_json(body, path)

  def save(self, path: str):
    io_utils.atomic_write_json(path, self.to_json())

  def missing(self) -> List[Tuple[int, str]]:
    """(seed, choices) pairs not trained yet, network by network (every seed of one before
    the next) in a fixed shuffled order: a run stopped part way leaves networks complete in
    every seed, spread over the cost range (the sample lists them cheapest bin first)."""
    order = np.random.default_rng(0).permutation(len(self.networks))
    return [(seed, self.networks[i]["choices"]) for i in order for seed in self.seeds
            if str(seed) not in self.networks[i]["results"]]

  def complete(self, seeds: Optional[Sequence[int]] = None) -> List[Dict]:
    """The networks trained in every one of `seeds` (default: the file's)."""
    seeds = self.seeds if seeds is None else seeds
    return [n for n in self.networks if all(str(s) in n["results"] for s in seeds)]

  def drawn_only_by(self, samples: Sequence[int]) -> List[Dict]:
    """The networks that no sample but those in `samples` drew (a confirmatory sample's
    own networks: `samples=[2]` leaves out those samples 0 or 1 drew too)."""
    unrecorded = [n["choices"] for n in self.networks if "samples" not in n]
    if unrecorded:
      raise ValueError(f"the file does not record which sample drew {unrecorded[0]} (and "
                       f"{len(unrecorded) - 1} more): rerun its bench.ground_truth command "
                       "to record it")
    return [n for n in self.networks if set(n["samples"]) <= set(samples)]

  def as_rank_truth(self, seeds: Optional[Sequence[int]] = None,
                    samples: Optional[Sequence[int]] = None) -> Dict:
    """What `for_ranking` returns, over the networks complete in `seeds` (and drawn only
    by `samples`, if given), sorted by their compact form: {"archs", "choices", "macs",
    "params", "top1", "loss", "arch_top1"} with one row per seed."""
    from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
    seeds = list(self.seeds if seeds is None else seeds)
    networks = self.complete(seeds)
    if samples is not None:
      allowed = {n["choices"] for n in self.drawn_only_by(samples)}
      networks = [n for n in networks if n["choices"] in allowed]
    networks = sorted(networks, key=lambda n: n["choices"])
    space = spaces.get_space(self.space, self.input_size)
    def rows(metric):
      return [[n["results"][str(s)][metric] for n in networks] for s in seeds]
    return {"archs": [n["choices"] for n in networks],
            "choices": [list(space.choices_from_string(n["choices"])) for n in networks],
            "macs": [float(n["macs"]) for n in networks],
            "params": [int(n["params"]) for n in networks],
            "top1": rows("eval_top1"), "loss": rows("eval_loss"),
            "arch_top1": rows("arch_top1"), "seeds": seeds,
            "images_per_trial": networks[0]["results"][str(seeds[0])]["images"] if networks else 0}


def package_versions() -> Dict[str, str]:
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  versions = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = "not installed"
  return versions


def sample_seeds(sample: Dict) -> List[int]:
  """The seeds of a cost-stratified sample's record (files before several samples could be
  merged record one as "seed")."""
  return list(sample["seeds"]) if "seeds" in sample else [sample["seed"]]


POOL = 100_000   # spaces larger than this are stratified over a uniform pool of this many


def cost_stratified_sample(space, count: int, seed: int = 0) -> List[str]:
  """`count` architectures of `space` (compact form) whose MACs cover the space's range
  evenly: the range from the cheapest to the costliest is cut into `count` bins of equal
  width and one architecture is drawn uniformly from each bin that holds any; the picks
  that empty bins leave are drawn from the others, one per bin in turn. A uniform sample
  of a combinatorial space piles up around its median cost (`small`: 89 % of networks hold
  at most one identity) and misses the weak and the strong networks that an enumerated
  space (micro's ground truth) contains. Deterministic in `seed`."""
  from betanas_tf import cost as cost_lib  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  if space.size() <= POOL:
    pool = list(space.enumerate())
  else:
    pool = list(dict.fromkeys(tuple(space.sample(rng)) for _ in range(POOL)))
  costs = cost_lib.macs_cost_table(space)
  macs = np.array([costs.of_choices(c) for c in pool])
  edges = np.linspace(macs.min(), macs.max(), count + 1)
  bins = np.clip(np.searchsorted(edges, macs, side="right") - 1, 0, count - 1)
  members = [list(rng.permutation(np.flatnonzero(bins == b))) for b in range(count)]
  picks: List[int] = []
  while len(picks) < min(count, len(pool)):
    for left in members:
      if left and len(picks) < count:
        picks.append(int(left.pop()))
  return [space.choices_to_string(pool[i]) for i in picks]


def plan(space_name: str, archs: int, seeds: Sequence[int], dataset: str = "cluttered_digits",
         epochs: int = 8, input_size: Optional[int] = None, samples: Sequence[int] = (0,),
         command: str = "") -> GroundTruth:
  """An empty ground truth of `archs` cost-stratified networks of the space per sample seed
  in `samples` (networks drawn twice count once): more samples give more networks per cost
  level while the networks of the earlier samples, and their results, stay."""
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  if not samples or len(set(samples)) != len(samples):
    raise ValueError(f"give distinct sample seeds, got {list(samples)}")
  space = spaces.get_space(space_name, input_size)
  drawn_by: Dict[str, List[int]] = {}
  for sample_seed in samples:
    for choices in cost_stratified_sample(space, archs, sample_seed):
      drawn_by.setdefault(choices, []).append(int(sample_seed))
  truth = _plan_of(space, list(drawn_by),
                   {"kind": "cost_stratified", "count": archs,
                    "seeds": [int(s) for s in samples]}, seeds, dataset, epochs, command)
  networks = tuple(dict(n, samples=drawn_by[n["choices"]]) for n in truth.networks)
  return dataclasses.replace(truth, networks=networks)


def plan_listed(space_name: str, choices: Sequence[str], seeds: Sequence[int],
                dataset: str = "cluttered_digits", epochs: int = 8,
                input_size: Optional[int] = None) -> GroundTruth:
  """An empty ground truth of the networks listed (compact form; repeats count once), e.g.
  the networks a benchmark's searches selected. Continuing its file with another list adds
  the new networks."""
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  space = spaces.get_space(space_name, input_size)
  return _plan_of(space, list(dict.fromkeys(choices)), {"kind": "listed"}, seeds, dataset,
                  epochs, "")


def _plan_of(space, choices: Sequence[str], sample: Dict, seeds: Sequence[int], dataset: str,
             epochs: int, command: str) -> GroundTruth:
  from betanas_tf import cost as cost_lib  # pylint: disable=import-outside-toplevel
  if not seeds:
    raise ValueError("give at least one training seed")
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"training seeds repeat: {list(seeds)}")
  costs = cost_lib.space_costs(space)
  networks = []
  for choices_string in choices:
    cost = costs.of_choices(space.choices_from_string(choices_string))
    networks.append({"choices": choices_string, "macs": int(cost.macs),
                     "params": int(cost.params), "results": {}})
  return GroundTruth(space=space.name, input_size=space.input_size, dataset=dataset,
                     sample=sample, recipe=recipe_record(dataset, epochs),
                     seeds=tuple(int(s) for s in seeds), networks=tuple(networks),
                     provenance={"command": command, "runs": []})


def merge_plan(existing: GroundTruth, wanted: GroundTruth) -> GroundTruth:
  """`existing` extended to `wanted`'s training seeds and networks (a listed sample's new
  networks; a cost-stratified sample's further sample seeds, same count), or an error naming
  the setting that differs. A file is continued, never shrunk."""
  sample = existing.sample
  for name in SETTINGS:
    here, there = getattr(existing, name), getattr(wanted, name)
    if name == "sample" and here.get("kind") == there.get("kind") == "cost_stratified":
      here = {k: v for k, v in here.items() if k not in ("seed", "seeds")}
      there = {k: v for k, v in there.items() if k != "seeds"}
      merged = sample_seeds(existing.sample)
      sample = dict(here, seeds=merged + [s for s in sample_seeds(wanted.sample)
                                          if s not in merged])
    if here != there:
      raise ValueError(f"the file was trained with {name} = {getattr(existing, name)!r}, "
                       f"this command asks for {getattr(wanted, name)!r}; give another --out")
  seeds = tuple(existing.seeds) + tuple(s for s in wanted.seeds if s not in existing.seeds)
  known = {n["choices"] for n in existing.networks}
  drawn_by = {n["choices"]: n["samples"] for n in wanted.networks if "samples" in n}
  # Which samples drew a network: recorded (or completed, in a file from before it was) from
  # the wanted plan, which recomputes every sample it names.
  networks = tuple(dict(n, samples=sorted(set(n.get("samples", [])) | set(drawn_by[n["choices"]])))
                   if n["choices"] in drawn_by else n for n in existing.networks)
  networks += tuple(n for n in wanted.networks if n["choices"] not in known)
  return dataclasses.replace(existing, sample=sample, seeds=seeds, networks=networks)


def _train_one(path: str, seed: int, choices: str, scratch: str) -> Dict:
  """Trains one (architecture, seed) with the rank recipe and merges it into `path`."""
  import keras  # pylint: disable=import-outside-toplevel
  from betanas_tf import tune  # pylint: disable=import-outside-toplevel
  truth = GroundTruth.load(path)
  keras.backend.clear_session()
  start = time.time()
  work = tempfile.mkdtemp(prefix=f"seed{seed}_{choices}_", dir=scratch)
  try:
    config = tune.TuneConfig(space=truth.space, input_size=truth.input_size, oracle="grid",
                             architectures=(choices,), tuner_seed=0,
                             train=recipe_config(truth.dataset, truth.recipe["epochs"], seed))
    row = tune.tune(work, config)["trials"][0]
  finally:
    shutil.rmtree(work, ignore_errors=True)
  result = {"eval_top1": row["eval_top1"], "eval_loss": row["eval_loss"],
            "arch_top1": row["val_top1"], "arch_loss": row["val_loss"],
            "images": row["images"], "seconds": round(time.time() - start, 1)}
  record(path, seed, choices, result, os.path.join(scratch, "lock"))
  return result


def record(path: str, seed: int, choices: str, result: Dict, lock_path: str):
  """Merges one result into the file under an exclusive lock on `lock_path` (several
  workers write the file)."""
  with open(lock_path, "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    truth = GroundTruth.load(path)
    networks = []
    for network in truth.networks:
      if network["choices"] == choices:
        network = dict(network, results=dict(network["results"], **{str(seed): result}))
      networks.append(network)
    dataclasses.replace(truth, networks=tuple(networks)).save(path)


def build(path: str, wanted: GroundTruth, workers: int = 1, log=print) -> GroundTruth:
  """Trains what `path` lacks of `wanted` (creating it), `workers` tasks side by side."""
  from betanas_tf.bench import parallel  # pylint: disable=import-outside-toplevel
  if os.path.exists(path):
    truth = merge_plan(GroundTruth.load(path), wanted)
  else:
    truth = wanted
  command = wanted.provenance.get("command") or truth.provenance.get("command", "")
  runs = truth.provenance.get("runs", []) + [
      {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "packages": package_versions(), "workers": workers, "command": command}]
  truth = dataclasses.replace(truth, provenance=dict(truth.provenance, runs=runs,
                                                      command=command))
  truth.save(path)
  todo = truth.missing()
  log(f"{len(todo)} of {len(truth.seeds) * len(truth.networks)} trainings to go")
  scratch = tempfile.mkdtemp(prefix="ground_truth_")
  try:
    tasks = [(_train_one, (path, seed, choices, scratch)) for seed, choices in todo]
    if not parallel.run_tasks(tasks, workers, log):
      for done, (function, args) in enumerate(tasks, start=1):
        function(*args)
        log(f"  {done}/{len(tasks)} trainings done")
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return GroundTruth.load(path)


GT_SAMPLES = ("uniform", "cost_stratified")


@dataclasses.dataclass(frozen=True)
class TruthRequest:
  """The ground truth a benchmark asks for: a file (`file`) whose networks are read, or a
  training here per seed (`tune`): every network of an enumerable space (`oracle` "grid")
  or `max_trials` of them (`oracle` "random"), drawn as `sample` says: spread over the MACs
  range (`cost_stratified_sample`) or uniformly (keras-tuner's random oracle, one oracle
  seed)."""
  space: str
  input_size: int
  dataset: str = "cluttered_digits"
  seeds: Tuple[int, ...] = (0, 1)
  epochs: int = 8
  file: Optional[str] = None
  samples: Optional[Tuple[int, ...]] = None   # with a file: only the networks drawn by no
                                              # other sample (None: every network)
  max_trials: Optional[int] = None
  oracle: str = "grid"
  sample: str = "cost_stratified"

  def __post_init__(self):
    if self.sample not in GT_SAMPLES:
      raise ValueError(f"gt_sample must be one of {', '.join(GT_SAMPLES)}, got {self.sample!r}")
    if not self.seeds or len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f"ground-truth seeds must be distinct and not empty, got {self.seeds}")


def trained_seed(request: TruthRequest, seed: int, out_dir: str) -> Dict:
  """One training seed of a ground truth trained here (`tune`; cached, so a second call
  reads it)."""
  from betanas_tf import spaces  # pylint: disable=import-outside-toplevel
  from betanas_tf import tune  # pylint: disable=import-outside-toplevel
  oracle, architectures = request.oracle, ()
  if request.oracle == "random" and request.sample == "cost_stratified":
    space = spaces.get_space(request.space, request.input_size)
    oracle = "grid"
    architectures = tuple(cost_stratified_sample(space, request.max_trials))
  config = tune.TuneConfig(space=request.space, input_size=request.input_size, oracle=oracle,
                           max_trials=request.max_trials, architectures=architectures,
                           tuner_seed=0, train=recipe_config(request.dataset, request.epochs, seed))
  return tune.tune(os.path.join(out_dir, f"ground_truth_seed{seed}"), config)


def for_ranking(request: TruthRequest, out_dir: str, workers: int = 1) -> Dict:
  """{"archs": [choices string], "choices", "macs", "top1": per seed, "loss": per seed,
  "to_score"}: read from `request.file` (the networks complete in `request.seeds`), or
  trained here (the seeds side by side in `workers` processes; cached in `out_dir`)."""
  from betanas_tf.bench import parallel  # pylint: disable=import-outside-toplevel
  if request.file:
    truth = GroundTruth.load(request.file)
    here = (truth.space, truth.input_size, truth.dataset, truth.recipe["epochs"])
    wanted = (request.space, request.input_size, request.dataset, request.epochs)
    if here != wanted:
      raise ValueError(f"{request.file} holds (space, input size, dataset, epochs) "
                       f"{here}, the plan asks for {wanted}")
    missing = [s for s in request.seeds if s not in truth.seeds]
    if missing:
      raise ValueError(f"{request.file} has no training seed {missing[0]} (it has "
                       f"{list(truth.seeds)})")
    gt = truth.as_rank_truth(request.seeds, request.samples)
    # Searches score every network of the file (of the samples asked for), trained yet or
    # not, so that their cached scores still serve when a partial file has grown.
    networks = (truth.networks if request.samples is None
                else truth.drawn_only_by(request.samples))
    gt["to_score"] = sorted(n["choices"] for n in networks)
    if len(gt["archs"]) < 3:
      raise ValueError(f"{request.file}: only {len(gt['archs'])} networks are trained "
                       f"in every seed of {list(request.seeds)}"
                       + (f" and drawn by samples {list(request.samples)} alone"
                          if request.samples is not None else ""))
    return gt
  parallel.run_tasks([(trained_seed, (request, seed, out_dir)) for seed in request.seeds],
                     workers)
  per_seed = []
  for seed in request.seeds:
    results = trained_seed(request, seed, out_dir)
    per_seed.append({r["choices_string"]: r for r in results["trials"]
                     if r["status"] == "COMPLETED"})
  archs = sorted(set.intersection(*[set(p) for p in per_seed]))
  first = per_seed[0]
  return {"archs": archs, "choices": [first[a]["choices"] for a in archs],
          "macs": [first[a]["cost"] * 1e6 for a in archs],
          "top1": [[p[a]["eval_top1"] for a in archs] for p in per_seed],
          "loss": [[p[a]["eval_loss"] for a in archs] for p in per_seed],
          "images_per_trial": first[archs[0]]["images"]}


def define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import cli  # pylint: disable=import-outside-toplevel
  from betanas_tf.bench import parallel  # pylint: disable=import-outside-toplevel
  cli.define_space_flags("small", width_multiplier=False)
  flags.DEFINE_integer("archs", 64, "Cost-stratified networks per sample.", lower_bound=2)
  flags.DEFINE_list("samples", ["0"], "Sample seeds: one cost-stratified sample of --archs "
                    "networks each; adding a seed to a file's adds its networks.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.")
  flags.DEFINE_integer("epochs", 8, "Epochs per training (the rank recipe's).", lower_bound=1)
  flags.DEFINE_enum("dataset", "cluttered_digits", ["cluttered_digits", "digits"],
                    "Dataset (offline ones).")
  flags.DEFINE_integer("workers", parallel.available_cores(), "Trainings side by side, one "
                       "TensorFlow thread each.", lower_bound=1)
  flags.DEFINE_string("out", None, "The ground-truth file (created, or continued).")


def main(argv):
  from betanas_tf import cli  # pylint: disable=import-outside-toplevel
  return cli.reports_errors("ground_truth")(_main)(argv)


def _main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  from betanas_tf import stop_signal  # pylint: disable=import-outside-toplevel
  del argv
  f = flags.FLAGS
  if not f.out:
    raise ValueError("give --out")
  for name in ("seeds", "samples"):
    if not all(s.lstrip("-").isdigit() for s in f[name].value):
      raise ValueError(f"--{name} must be integers, got {','.join(f[name].value)}")
  command = " ".join(["python -m betanas_tf.bench.ground_truth"] + [
      f[name].serialize() for name in ("space", "archs", "samples", "seeds", "epochs",
                                       "dataset")])
  wanted = plan(f.space, f.archs, [int(s) for s in f.seeds], f.dataset, f.epochs,
                f.input_size, [int(s) for s in f.samples], command=command)
  try:
    truth = build(f.out, wanted, f.workers, log=lambda m: print(m, flush=True))
  except stop_signal.Stopped as stopped:
    # Every finished training is already in the file; the interrupted ones rerun.
    kept = GroundTruth.load(f.out)
    done = sum(len(n["results"]) for n in kept.networks)
    raise stop_signal.Stopped(stopped.signum, f"{stopped}; {done} finished trainings are kept "
                              f"in {f.out}; rerun the same command to train the rest") from None
  done = len(truth.complete())
  print(f"{done} of {len(truth.networks)} networks trained in every seed {list(truth.seeds)} "
        f"-> {f.out}")
  return 0


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
