"""Prints an Architecture's blocks, MACs, params and output shape.

    python -m betanas_tf.arch_info --arch=arch.json
    python -m betanas_tf.arch_info --reference=mobilenet_v2 --width_multiplier=1.4 [--json]
    python -m betanas_tf.arch_info --space=micro --choices=k3e3-k5e3-id
    python -m betanas_tf.arch_info --reference=proxyless_k3e6 --input_size=160 --width_multiplier=0.75

Bad input gives one line on stderr naming the problem and exit status 1.
"""

import json

from absl import app
from absl import flags

from betanas_tf import arch as arch_lib
from betanas_tf import cli
from betanas_tf import cost as cost_lib

FLAGS = flags.FLAGS
def define_flags():
  """Defines this program's flags (only when it runs as a program, so that importing
  several betanas_tf modules into one process never defines a flag twice)."""
  cli.define_arch_flags(space_choices=True, input_size=True)
  flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")


def info(arch: arch_lib.Architecture) -> dict:
  total = cost_lib.architecture_cost(arch)
  return {"macs": total.macs, "params": total.params, "blocks": len(arch.blocks),
          "output_shape": [arch.num_classes], "compact": arch.to_compact(),
          "arch": arch.to_dict()}


def table(arch: arch_lib.Architecture) -> str:
  rows = [("layer", "input", "output", "MACs", "params")]
  shapes = [None] + arch.block_shapes() + [None]
  for (name, cost), shape in zip(cost_lib.breakdown(arch), shapes):
    if name == "stem":
      io = (f"{arch.input_size}x{arch.input_size}x{arch.input_channels}",
            f"{arch.stem_output_size}x{arch.stem_output_size}x{arch.stem.filters}")
    elif name == "head":
      io = (f"{arch.final_size}x{arch.final_size}x{arch.final_channels}", f"{arch.num_classes}")
    else:
      io = (f"{shape.in_size}x{shape.in_size}x{shape.in_channels}",
            f"{shape.out_size}x{shape.out_size}x{shape.out_channels}")
    rows.append((name, *io, f"{cost.macs:,}", f"{cost.params:,}"))
  total = cost_lib.architecture_cost(arch)
  rows.append(("total", "", f"{arch.num_classes}", f"{total.macs:,}", f"{total.params:,}"))
  widths = [max(len(r[i]) for r in rows) for i in range(5)]
  lines = [f"architecture {arch.name or '(unnamed)'}: {arch.to_compact()}"]
  for row in rows:
    lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
  lines.append(f"MACs {total.macs / 1e6:.1f}M  params {total.params / 1e6:.3f}M  "
               f"activation {arch.activation}  se_ratio {arch.se_ratio}  dropout {arch.dropout}")
  return "\n".join(lines)


@cli.reports_errors("arch_info", KeyError)
def main(argv):
  del argv
  arch = cli.arch_from_flags()
  print(json.dumps(info(arch), sort_keys=True) if FLAGS.json else table(arch))
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
