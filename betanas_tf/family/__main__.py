"""python -m betanas_tf.family: specialise a finished search's supernet to targets.

    python -m betanas_tf.family --search_dir=runs/spos \\
        --targets=macs:5e6,macs:8e6,latency:host_cpu.json:0.5 [--out_dir=runs/spos/family]

(docs/family.md). Rerun with more targets: the scores cached in the output directory serve,
and the targets already there keep their picks.
"""

import os
import sys
import time

from absl import app
from absl import flags

from betanas_tf import cli
from betanas_tf import family
from betanas_tf import targets as targets_lib

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("search_dir", None, "A finished search's output directory.")
  flags.DEFINE_string("out_dir", None, "Where the family goes (default: SEARCH_DIR/family). "
                      "Rerun with more targets: the scores cached there are reused.")
  flags.DEFINE_string("ground_truth", None, "A bench.ground_truth file of the same space: its "
                      "true front is drawn in family.png.")
  family.define_specialise_flags()
  cli.define_distribution_flag()


@cli.reports_errors("family")
def main(argv):
  del argv
  targets = targets_lib.parse_targets(FLAGS.targets)   # before TensorFlow is imported
  out_dir = FLAGS.out_dir or os.path.join(FLAGS.search_dir, "family")
  if not os.path.isdir(FLAGS.search_dir):
    raise ValueError(f"--search_dir {FLAGS.search_dir} is not a directory")
  from betanas_tf import distribution  # pylint: disable=import-outside-toplevel
  from betanas_tf import runner  # pylint: disable=import-outside-toplevel
  strategy = distribution.make_strategy(FLAGS.distribution)
  run = runner.recorded_run(FLAGS.search_dir, strategy)
  truth = None
  if FLAGS.ground_truth:
    from betanas_tf.bench import ground_truth as gt_lib  # pylint: disable=import-outside-toplevel
    known = gt_lib.GroundTruth.load(FLAGS.ground_truth)
    if (known.space, known.input_size) != (run.space.name, run.space.input_size):
      raise ValueError(f"--ground_truth {FLAGS.ground_truth} is of {known.space} at "
                       f"{known.input_size} px, the search of {run.space.name} at "
                       f"{run.space.input_size} px")
    truth = known.as_rank_truth()
  start = time.time()
  run.restore_finished()
  made = family.specialise_run(run, targets, out_dir,
                               family.specialise_config_from_flags(run.config.seed),
                               truth, log=lambda m: print(f"family: {m}", file=sys.stderr))
  family.print_family(made, time.time() - start)
  return 0


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("search_dir")
  flags.mark_flag_as_required("targets")
  app.run(main)
