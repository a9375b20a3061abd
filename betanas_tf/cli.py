"""Command-line plumbing shared by the programs: each shared flag is defined here once.

The library never reads flags: a program (search, train, qat, export, latency,
arch_info) defines its flags when it runs as a program, turns them into the
arguments and dataclass configs of the library functions with the helpers here,
and calls those functions, exactly as a Python user would.
"""

import dataclasses
from typing import Any, Optional

from absl import flags

from betanas_tf import arch as arch_lib
from betanas_tf import engine_config
from betanas_tf import errors as errors_lib
from betanas_tf import references
from betanas_tf import spaces

FLAGS = flags.FLAGS


def config_from_flags(config_class, **values: Any):
  """An instance of the dataclass `config_class` whose fields come from the flags of the
  same names; `values` gives the fields that are not flags (e.g. a DataSource)."""
  fields = {field.name: FLAGS[field.name].value
            for field in dataclasses.fields(config_class) if field.name not in values}
  return config_class(**fields, **values)


# ---- a program's errors and exit status -----------------------------------------------------
#
# The exit-code contract of every program (README, "Exit status"):
#   0            done
#   1            bad input (a flag, a file, a dataset): one ``PROGRAM: error: ...`` line
#   3            diverged: a loss or weight became NaN / infinite; no result written
#   75           temporarily refused: another run holds --out_dir, or a worker of the
#                cluster was lost (sysexits' EX_TEMPFAIL: rerun the same command later)
#   128 + N      stopped by signal N (143 SIGTERM, 130 SIGINT), after saving what it can
#                (what shells and schedulers expect of a signalled process)

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_DIVERGED = 3
EXIT_RETRY = 75


class TemporaryFailure(RuntimeError):
  """What a rerun of the same command gets past (exit status 75): a directory held by
  another run (dir_lock.DirectoryBusy), a lost worker (runner.WorkerLostError)."""


def exit_status_of_signal(signum: int) -> int:
  return 128 + int(signum)


def reports_errors(program: str, *errors: type, stops: str = "at_once",
                   takes_arguments: bool = False):
  """Decorates a program's main(argv) with the exit-code contract above: an exception of
  `errors` (ValueError and InputError always) is one ``PROGRAM: error: ...`` line and status 1; a
  divergence one ``PROGRAM: diverged: ...`` line and status 3; a busy directory or a lost
  worker one ``PROGRAM: error: ...`` line and status 75; a stop signal one ``PROGRAM:
  stopped by SIG...`` line and 128 + its number. `stops` is how SIGTERM / SIGINT are
  handled while main runs (stop_signal.MODES): ``at_safe_points`` for a program whose
  library saves at its safe points (search, retraining), ``at_once`` otherwise. A
  program that does not `takes_arguments` refuses positional arguments (status 1)."""
  import functools  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from betanas_tf import divergence  # pylint: disable=import-outside-toplevel
  from betanas_tf import stop_signal  # pylint: disable=import-outside-toplevel

  def decorate(main):
    @functools.wraps(main)
    def wrapped(argv):
      try:
        with stop_signal.handling(stops):
          if len(argv) > 1 and not takes_arguments:
            raise ValueError(f"unexpected arguments {argv[1:]}")
          return main(argv)
      except stop_signal.Stopped as stopped:
        print(f"{program}: {stopped}", file=sys.stderr, flush=True)
        return exit_status_of_signal(stopped.signum)
      except divergence.Diverged as error:
        print(f"{program}: diverged: {error}", file=sys.stderr, flush=True)
        return EXIT_DIVERGED
      except TemporaryFailure as error:
        print(f"{program}: error: {error}", file=sys.stderr, flush=True)
        return EXIT_RETRY
      except (ValueError, errors_lib.InputError) + errors as error:
        print(f"{program}: error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    return wrapped
  return decorate


def require_out_dir() -> str:
  if not FLAGS.out_dir:
    raise ValueError("give --out_dir")
  return FLAGS.out_dir


# ---- which space, which cost ------------------------------------------------------------

def define_space_flags(default: str, width_multiplier: bool = True, num_classes: bool = False):
  """--space, --input_size (default: the space's own) [, --width_multiplier] [, --num_classes]."""
  flags.DEFINE_enum("space", default, spaces.SPACES.names(), "Search space.")
  flags.DEFINE_integer("input_size", None, "Input resolution (default: the space's own, e.g. "
                       "micro 16, small 32, proxyless_mobile 224).", lower_bound=8)
  if width_multiplier:
    flags.DEFINE_float("width_multiplier", 1.0, "Every width of the space times this "
                       "(make_divisible 8; e.g. 0.75).", lower_bound=0.05)
  if num_classes:
    flags.DEFINE_integer("num_classes", None, "Override the space's number of classes.",
                         lower_bound=1)


def define_cost_flags(cost: str = "macs", cost_target: float = 0.0):
  """--cost, --cost_target and --latency_table (a search's or a multi-trial search's budget)."""
  flags.DEFINE_enum("cost", cost, ["macs", "latency"], "Cost of the budget (and of the Phase-2 "
                    "cost term): analytic MACs or a latency table's prediction.")
  flags.DEFINE_float("cost_target", cost_target, "Budget: MACs (e.g. 315e6) or ms with "
                     "--cost=latency; 0 = none.", lower_bound=0.0)
  flags.DEFINE_string("latency_table", None, "Latency lookup table (with --cost=latency).")


# ---- which network ------------------------------------------------------------------------

def define_arch_flags(space_choices: bool = False, width_multiplier: bool = True,
                      input_size: bool = False):
  """--arch | --reference [| --space with --choices] [--width_multiplier] [--input_size]."""
  flags.DEFINE_string("arch", None, "Architecture JSON file (e.g. a search's arch.json).")
  flags.DEFINE_enum("reference", None, references.REFERENCES.names(), "A reference architecture.")
  if space_choices:
    flags.DEFINE_enum("space", None, spaces.SPACES.names(), "A search space (with --choices).")
    flags.DEFINE_string("choices", None, "Ops of the space's choice blocks, e.g. k3e3-k5e6-id.")
  if width_multiplier:
    flags.DEFINE_float("width_multiplier", 1.0, "Width multiplier (make_divisible 8).",
                       lower_bound=0.05)
  if input_size:
    flags.DEFINE_integer("input_size", None, "Input resolution (default: the network's).",
                         lower_bound=8)


def arch_from_flags(apply_width: bool = True) -> arch_lib.Architecture:
  """The Architecture the flags name, with --width_multiplier applied unless the program
  applies it itself (retraining); a ValueError says which flags are wrong."""
  space = FLAGS["space"].value if "space" in FLAGS else None
  choices = FLAGS["choices"].value if "choices" in FLAGS else None
  width = FLAGS["width_multiplier"].value if apply_width and "width_multiplier" in FLAGS else 1.0
  arch = references.resolve_architecture(FLAGS.arch, FLAGS.reference, space, choices, width)
  size = FLAGS["input_size"].value if "input_size" in FLAGS else None
  return arch.replace(input_size=size) if size else arch


# ---- which data ---------------------------------------------------------------------------

# The data package imports TensorFlow: only programs that read data pay for it. The flags are
# defined without it (a flag error or --help answers before TensorFlow loads): the datasets the
# package registers are named here (tests/data_test.py holds the list equal to data.DATASETS),
# and a dataset registered in the user's own file is accepted by the validator, which loads
# the registry.
BUNDLED_DATASETS = ("cifar10", "cluttered_digits", "digits", "folder", "imagenet2012", "synthetic")


def define_data_flags(default: str = "digits", help_text: str = "Dataset"):
  names = (", ".join(BUNDLED_DATASETS) + " (or one registered in data.DATASETS), or tfds:NAME "
           "(any prepared tfds image classification dataset)")
  flags.DEFINE_string("dataset", default, f"{help_text}: {names}.")
  flags.register_validator("dataset", _valid_dataset, "--dataset must be one of "
                           + names)
  flags.DEFINE_string("data_dir", None, "tensorflow-datasets directory (cifar10, imagenet2012, "
                      "tfds:NAME), or the image folder of --dataset=folder.")
  flags.DEFINE_bool("download", False, "Let tensorflow-datasets download/prepare the dataset "
                    "(nothing touches the network without it).")
  flags.DEFINE_integer("synthetic_examples", 256, "Training examples of --dataset=synthetic.",
                       lower_bound=16)
  flags.DEFINE_integer("arch_split_size", None, "Examples held out of TRAIN for the search's "
                       "alpha updates (tfds datasets; default: 50,000 for ImageNet as in the "
                       "paper, 5,000 for CIFAR-10); other programs hold out the same, so their "
                       "TRAIN is the search's.", lower_bound=1)


def _valid_dataset(name: str) -> bool:
  from betanas_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  try:
    data_lib.check_name(name)
  except KeyError:
    return False
  return True


def data_source_from_flags(**changes: Any):
  """The data.DataSource the flags name, with `changes` applied."""
  from betanas_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  source = data_lib.DataSource(FLAGS.dataset, FLAGS.data_dir, FLAGS.download,
                               FLAGS.synthetic_examples, FLAGS.arch_split_size)
  return dataclasses.replace(source, **changes)


def data_source_flags(source) -> list:
  """The command-line flags that name `source` (`data_source_from_flags` reads them back),
  for a program that runs another in its own process."""
  out = [f"--dataset={source.name}", f"--synthetic_examples={source.synthetic_examples}",
         "--download" if source.download else "--nodownload"]
  if source.data_dir:
    out.append(f"--data_dir={source.data_dir}")
  if source.arch_split_size:
    out.append(f"--arch_split_size={source.arch_split_size}")
  return out


# ---- timing and phones --------------------------------------------------------------------

def define_timing_flags(threads: int = 1, warmup_runs: Optional[int] = 10,
                        runs: Optional[int] = 50):
  """How a TFLite model is timed (on this host with LiteRT, or with benchmark_model on a
  phone): --threads, and --warmup_runs / --runs unless their default is None (a program
  that does not time whole invocations)."""
  flags.DEFINE_integer("threads", threads, "Interpreter threads (1, as on one phone core).",
                       lower_bound=1)
  if warmup_runs is not None:
    flags.DEFINE_integer("warmup_runs", warmup_runs, "Warm-up invocations per model.",
                         lower_bound=0)
  if runs is not None:
    flags.DEFINE_integer("runs", runs, "Timed invocations per model.", lower_bound=1)


def define_delegate_flag(default=None):
  from betanas_tf.latency import runtime  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("delegate", default, list(runtime.HOST_DELEGATES), "CPU delegate of the "
                    "timed interpreter: xnnpack (LiteRT's default) or none (its built-in "
                    "kernels); on a phone, benchmark_model's --use_xnnpack.")


def define_android_flags():
  flags.DEFINE_bool("android", False, "Time on a phone through adb and TFLite's benchmark_model.")
  flags.DEFINE_bool("use_gpu", False, "With --android: time on the phone's GPU (TFLite's GPU "
                    "delegate, benchmark_model --use_gpu=true).")
  flags.DEFINE_string("adb", "adb", "adb executable.")
  flags.DEFINE_string("adb_serial", None, "Phone serial (adb -s).")
  flags.DEFINE_string("benchmark_binary", "/data/local/tmp/benchmark_model",
                      "benchmark_model on the phone.")


# ---- where it runs ------------------------------------------------------------------------

# distribution.make_strategy's names (distribution imports TensorFlow; the flag must not).
DISTRIBUTIONS = ("default", "mirrored", "multiworker")


def define_distribution_flag():
  flags.DEFINE_enum("distribution", "default", list(DISTRIBUTIONS),
                    "tf.distribute strategy: default (one device), mirrored (all local GPUs), "
                    "multiworker (TF_CONFIG, one process per host).")


def define_precision_flag():
  flags.DEFINE_enum("mixed_precision", "none", list(engine_config.PRECISIONS),
                    "Compute in bfloat16 (A100/H100/TPU) or float16 (with dynamic loss scaling); "
                    "variables, BatchNorm statistics, losses and alpha stay float32.")
