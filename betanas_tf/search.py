"""BetaNAS search command line.

    python -m betanas_tf.search --flagfile=configs/demo.flags --out_dir=/tmp/demo
    python -m betanas_tf.search --flagfile=configs/a.flags --out_dir=runs/a

Re-running the same command with the same --out_dir resumes from the last
checkpoint. SIGTERM / SIGINT save a checkpoint at the step the run is at and exit 143
/ 130; a second run on the same --out_dir is refused (75); a run whose loss became NaN
stops (3) with its last good checkpoint kept; bad flags or data give one clear error
and exit status 1 (the exit-code contract is cli's).
"""

import contextlib
import dataclasses
import os
import sys

from absl import app
from absl import flags
from absl import logging

# Only modules that load without TensorFlow: a flag error or --help answers before it loads
# (the rest is imported in main).
from betanas_tf import cli
from betanas_tf import dir_lock
from betanas_tf import drop_schedules
from betanas_tf import engine_config
from betanas_tf import family
from betanas_tf import io_utils
from betanas_tf import policies
from betanas_tf import stop_signal
from betanas_tf import targets as targets_lib

FLAGS = flags.FLAGS
D = engine_config.EngineConfig()

# What to search, on what.
def define_flags():
  """Defines this program's flags (only when it runs as a program, so that importing
  several betanas_tf modules into one process never defines a flag twice)."""
  cli.define_space_flags("micro")
  flags.DEFINE_enum("strategy", "betanas", policies.POLICIES.names(), "Search strategy (policy).")
  cli.define_data_flags()
  flags.DEFINE_string("out_dir", None, "Output directory (resumes if it holds a checkpoint).")
  # Phase 1.
  flags.DEFINE_integer("max_steps", D.max_steps, "Phase-1 (weight) steps.", lower_bound=1)
  flags.DEFINE_integer("batch_size", D.batch_size, "Global Phase-1 batch.", lower_bound=1)
  flags.DEFINE_float("lr", D.lr, "Peak SGD learning rate (cosine decay to 0).", lower_bound=0.0)
  flags.DEFINE_integer("lr_warmup_steps", D.lr_warmup_steps, "Linear LR warm-up steps.", lower_bound=0)
  flags.DEFINE_float("momentum", D.momentum, "SGD momentum.", lower_bound=0.0, upper_bound=0.999)
  flags.DEFINE_bool("nesterov", D.nesterov, "Nesterov momentum.")
  flags.DEFINE_float("weight_decay", D.weight_decay, "L2 weight decay of conv/dense kernels.",
                     lower_bound=0.0)
  flags.DEFINE_float("label_smoothing", D.label_smoothing, "Label smoothing.", lower_bound=0.0,
                     upper_bound=0.99)
  flags.DEFINE_bool("balanced", True, "Phase 1 samples uniformly among active ops (--nobalanced: by p).")
  flags.DEFINE_bool("fair", False, "Strictly fair Phase-1 sampling (FairNAS): every active op of "
                    "a block once in every M' consecutive steps, in a random order (betanas, spos).")
  # Phase 2.
  flags.DEFINE_integer("arch_update_every", D.arch_update_every, "Phase-1 steps per alpha step.",
                       lower_bound=1)
  flags.DEFINE_integer("arch_warmup_steps", D.arch_warmup_steps, "Weight-only steps before alpha steps.",
                       lower_bound=0)
  flags.DEFINE_integer("arch_batch_size", D.arch_batch_size, "Global Phase-2 batch.", lower_bound=1)
  flags.DEFINE_float("arch_lr", D.arch_lr, "Adam learning rate of alpha.", lower_bound=0.0)
  flags.DEFINE_float("arch_beta1", D.arch_beta1, "Adam beta1 of alpha.", lower_bound=0.0, upper_bound=0.999)
  flags.DEFINE_float("arch_beta2", D.arch_beta2, "Adam beta2 of alpha.", lower_bound=0.0, upper_bound=0.99999)
  flags.DEFINE_float("arch_epsilon", D.arch_epsilon, "Adam epsilon of alpha.", lower_bound=0.0)
  flags.DEFINE_enum("arch_data", D.arch_data, list(engine_config.ARCH_DATA), "The alpha step's "
                    "batches: 'train' = training transform and label smoothing (as Phase 1), "
                    "'eval' = evaluation transform and plain cross-entropy (ProxylessNAS).")
  flags.DEFINE_enum("gate_mode", D.gate_mode, ["full", "two"], "Binary gates over every active op, "
                    "or ProxylessNAS' two sampled ops with rescaling.")
  # Cost.
  cli.define_cost_flags()
  flags.DEFINE_float("beta", D.beta, "Weight of the cost term.", lower_bound=0.0)
  flags.DEFINE_enum("cost_form", D.cost_form, list(engine_config.COST_FORMS),
                    "linear: beta*E[cost]/ref (paper); absolute: beta*|E[cost]/target-1| (TuNAS).")
  # Selective drop.
  flags.DEFINE_bool("drop", True, "Selective drop (--nodrop disables it).")
  flags.DEFINE_enum("drop_rule", D.drop_rule, list(engine_config.DROP_RULES),
                    "prob: p < drop_threshold / M' ; alpha: alpha < drop_threshold (paper's th_alpha).")
  flags.DEFINE_float("drop_threshold", D.drop_threshold, "Threshold of the drop rule.")
  flags.DEFINE_enum("drop_schedule", D.drop_schedule, drop_schedules.DROP_SCHEDULES.names(),
                    "When ops leave: threshold (every op below the rule, the paper's), top_k "
                    "(each block keeps its --drop_keep most probable), gradual (at most one per "
                    "block per alpha step, the weakest below the rule).")
  flags.DEFINE_integer("drop_keep", D.drop_keep, "Ops a block keeps (--drop_schedule=top_k).",
                       lower_bound=1)
  flags.DEFINE_integer("drop_warmup_steps", D.drop_warmup_steps, "No drops before this step.",
                       lower_bound=0)
  # Selection (spos) and evaluation.
  flags.DEFINE_integer("evolution_population", 20, "SPOS evolution population.", lower_bound=2)
  flags.DEFINE_integer("evolution_generations", 5, "SPOS evolution generations.", lower_bound=1)
  flags.DEFINE_integer("eval_batches", 10, "Arch-split batches to score a subnet.", lower_bound=1)
  flags.DEFINE_integer("calibration_batches", 5, "Train batches to recalibrate BN of a subnet.",
                       lower_bound=1)
  # Running.
  flags.DEFINE_float("se_ratio", 0.0, "Squeeze-excite ratio inside the supernet's candidates.",
                     lower_bound=0.0, upper_bound=0.99)
  cli.define_distribution_flag()
  cli.define_precision_flag()
  flags.DEFINE_bool("jit_compile", D.jit_compile, "Compile the Phase-1 step's forward and "
                    "backward pass with XLA (for GPUs; on this CPU: minutes of compilation, then 10x "
                    "slower a step).")
  flags.DEFINE_integer("checkpoint_every", 50, "Steps between checkpoints.", lower_bound=1)
  flags.DEFINE_integer("log_every", 10, "Steps between TensorBoard scalars.", lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Random seed (paths, data order, initialisation).")
  flags.DEFINE_bool("deterministic", False, "Enable TF op determinism (bit-identical resumes).")
  flags.DEFINE_bool("progress", True, "Show a progress bar.")
  # A family: one pick per target from this search's supernet (`family`).
  family.define_specialise_flags()
  flags.DEFINE_enum("family", "post_hoc", ["post_hoc", "in_search"], "With --targets: "
                    "post_hoc specialises the trained supernet to each target (spos, --nodrop); "
                    "in_search keeps one alpha per target in Phase 2 (betanas, proxyless).")

  # Combinations are checked by the configs themselves (EngineConfig, RunSettings,
  # runner.check_settings), for Python callers as for this program.


def engine_config_from_flags() -> engine_config.EngineConfig:
  """Every EngineConfig field comes from the flag of the same name."""
  return cli.config_from_flags(engine_config.EngineConfig)


@cli.reports_errors("search", stops="at_safe_points")
def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  from betanas_tf import distribution
  from betanas_tf import runner
  # pylint: enable=import-outside-toplevel
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint chatter; -v 0 brings it back
    tf.get_logger().setLevel("WARNING")
  if FLAGS.deterministic:
    tf.config.experimental.enable_op_determinism()
  if os.path.exists(FLAGS.out_dir) and not os.path.isdir(FLAGS.out_dir):
    raise ValueError(f"--out_dir {FLAGS.out_dir} is an existing file, not a directory")
  # Every setting is checked before anything is written.
  policy = policies.POLICIES.get(FLAGS.strategy).with_ablations(drop=FLAGS.drop,
                                                                balanced=FLAGS.balanced,
                                                                fair=FLAGS.fair)
  settings = runner.RunSettings(
      out_dir=FLAGS.out_dir, space=FLAGS.space, input_size=FLAGS.input_size,
      width_multiplier=FLAGS.width_multiplier,
      dataset=cli.data_source_from_flags(), cost=FLAGS.cost,
      cost_target=FLAGS.cost_target, latency_table=FLAGS.latency_table,
      checkpoint_every=FLAGS.checkpoint_every,
      log_every=FLAGS.log_every, eval_batches=FLAGS.eval_batches,
      calibration_batches=FLAGS.calibration_batches,
      evolution_population=FLAGS.evolution_population,
      evolution_generations=FLAGS.evolution_generations, progress=FLAGS.progress)
  config = engine_config_from_flags()
  targets = targets_lib.parse_targets(FLAGS.targets) if FLAGS.targets else ()
  in_search = bool(targets) and FLAGS.family == "in_search"
  if targets and not in_search and policy.drop:
    raise ValueError(f"--family=post_hoc specialises the supernet after the search, and "
                     f"{policy.name}'s selective drop leaves dropped ops with the weights they "
                     "had then: use --strategy=spos, --nodrop, or --family=in_search")
  if in_search:
    settings = dataclasses.replace(settings, targets=tuple(str(t) for t in targets))
  runner.check_settings(settings, policy, config)
  try:
    strategy = distribution.make_strategy(FLAGS.distribution)
  except RuntimeError as error:   # e.g. multiworker without a usable TF_CONFIG
    raise ValueError(str(error)) from None
  stop_signal.reinstall()   # the multi-worker strategy took SIGTERM over
  # One run per directory: the chief takes the lock before it writes anything there, and
  # holds it to the end (SearchRun.run takes it again, nested, for Python callers).
  lock = dir_lock.DirectoryLock(FLAGS.out_dir) if distribution.is_chief(strategy) else None
  with lock or contextlib.nullcontext():
    if lock:
      io_utils.atomic_write_text(os.path.join(FLAGS.out_dir, "flags.txt"),
                                 FLAGS.flags_into_string())
    run = runner.SearchRun(settings, policy, config, strategy)
    summary = run.run()
    made = None
    if in_search:
      made = run.family
    elif targets:
      made = family.specialise_run(
          run, targets, os.path.join(FLAGS.out_dir, "family"),
          family.specialise_config_from_flags(config.seed),
          log=lambda m: print(f"search: family: {m}", file=sys.stderr))
  print(f"architecture: {summary['choices_string']}")
  print(f"MACs {summary['macs'] / 1e6:.2f}M  params {summary['params'] / 1e6:.3f}M  "
        f"cost {summary['cost']['value']:.3f} {summary['cost']['unit']}"
        + (f" (target {summary['cost']['target']:.3f}: "
           f"{'met' if summary['cost']['meets_target'] else 'NOT met'})" if summary['cost']['target'] else ""))
  validation = summary["cost"].get("table_validation")
  if summary["cost"]["kind"] == "latency":
    print(f"latency table: {summary['cost']['table_runtime']}")
    print("latency table: " + (f"validated on {validation['n']} whole networks, mean |error| "
                               f"{validation['mean_abs_error_pct']:.2f} %, max "
                               f"{validation['max_abs_error_pct']:.2f} %"
                               + (f" ({validation['rescaled_mean_abs_error_pct']:.2f} % / "
                                  f"{validation['rescaled_max_abs_error_pct']:.2f} % at the "
                                  "machine's speed then)" if "rescaled_mean_abs_error_pct" in validation else "")
                               if validation else
                               "never validated (python -m betanas_tf.latency validate)"))
  if summary["supernet_top1_arch_split"] is not None:
    print(f"supernet top-1 on the arch split (BN recalibrated): {summary['supernet_top1_arch_split']:.4f}")
  print(f"drops: {len(summary['drops'])}  outputs in {FLAGS.out_dir}")
  if made:
    print(f"family of {len(targets)} in {os.path.join(FLAGS.out_dir, 'family')}:")
    family.print_family(made, made["seconds"])
  return 0


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("out_dir")
  app.run(main)
