"""Figures of a search: probability trajectories with drops, training balance, the result.

* `plot_trajectories`: p (softmax over active ops) of every op of every block
  over the alpha steps, with each selective drop marked where it happened.
* `plot_training_frequency`: Phase-1 training count of every (block, op) — the
  paper's Fig. 5: balanced training keeps the alive ops of a block level.
* `plot_architecture`: the found network as a row of blocks (the paper's Fig.
  3 style): each block's op draws its box (ops.Op.figure_box): an MBConv's width
  grows with the expansion ratio, its height with the kernel, colour by kernel;
  identity blocks are thin grey bars.
* `plot_family`: a family of picks from one supernet: supernet score against MACs of every
  network scored, each target's pick and bound, reference networks, the true front.
"""

from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from betanas_tf import arch as arch_lib
from betanas_tf import io_utils

def save(fig, path: str):
  """Writes `fig` as a PNG atomically and closes it."""
  import io  # pylint: disable=import-outside-toplevel
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  io_utils.atomic_write_bytes(path, buffer.getvalue())


def _grid(num_blocks: int):
  cols = min(7, num_blocks)
  rows = -(-num_blocks // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.1 * rows), squeeze=False,
                           sharex=True, sharey=True)
  return fig, axes.ravel()


def plot_trajectories(history: List[Dict], labels: Sequence[Sequence[str]], path: str,
                      title: str = ""):
  """p per op over alpha steps, one panel per choice block, drops marked with x."""
  records = [r for r in history if "p" in r]
  fig, axes = _grid(len(labels))
  steps = np.array([r["step"] for r in records])
  probs = np.array([r["p"] for r in records]) if records else np.zeros((0, len(labels), 1))
  cmap = plt.get_cmap("tab10")
  for l, ax in enumerate(axes):
    if l >= len(labels):
      ax.axis("off")
      continue
    for m, label in enumerate(labels[l]):
      if len(steps):
        ax.plot(steps, probs[:, l, m], color=cmap(m), lw=1.3, label=label)
    for record in records:
      for drop in record.get("drops", []):
        if drop["block"] == l:
          ax.plot(drop["step"], drop["p"], "x", color=cmap(drop["index"]), ms=7, mew=2)
    ax.set_title(f"block {l}", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("p", fontsize=8)
  handles = {}
  for ax in axes:
    for handle, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, handle)
  if handles:
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, -0.02))
  else:
    fig.text(0.5, 0.5, "no alpha steps in this run", ha="center", fontsize=10)
  fig.suptitle(title or "Architecture probabilities per block (x = selective drop)", fontsize=10)
  fig.tight_layout(rect=(0, 0.04, 1, 0.97))
  save(fig, path)


def plot_training_frequency(counts: np.ndarray, active: np.ndarray, labels: Sequence[Sequence[str]],
                            path: str, title: str = ""):
  """Heat map of Phase-1 training counts per (block, op); dropped ops hatched."""
  num_blocks, width = counts.shape
  all_labels = sorted({lab for row in labels for lab in row}, key=lambda s: (s == "id", s))
  column = {lab: i for i, lab in enumerate(all_labels)}
  grid = np.full((len(all_labels), num_blocks), np.nan)
  for l in range(num_blocks):
    for m, label in enumerate(labels[l]):
      grid[column[label], l] = counts[l, m]
  fig, ax = plt.subplots(figsize=(max(5, 0.55 * num_blocks + 2), 0.45 * len(all_labels) + 1.6))
  image = ax.imshow(grid, aspect="auto", cmap="viridis")
  for l in range(num_blocks):
    for m, label in enumerate(labels[l]):
      value = int(counts[l, m])
      dead = not active[l, m]
      ax.text(l, column[label], f"{value}", ha="center", va="center", fontsize=6,
              color="white" if not dead else "#ff9999")
      if dead:
        ax.add_patch(plt.Rectangle((l - 0.5, column[label] - 0.5), 1, 1, fill=False, hatch="///",
                                   edgecolor="#ff9999", lw=0))
  ax.set_xticks(range(num_blocks))
  ax.set_xticklabels(range(num_blocks), fontsize=7)
  ax.set_yticks(range(len(all_labels)))
  ax.set_yticklabels(all_labels, fontsize=8)
  ax.set_xlabel("choice block")
  fig.colorbar(image, ax=ax, label="Phase-1 training steps")
  ax.set_title(title or "Training frequency per op (hatched: dropped)", fontsize=10)
  fig.tight_layout()
  save(fig, path)


def plot_architecture(arch: arch_lib.Architecture, path: str, title: str = ""):
  """The network as a row of blocks: width ~ expansion, height ~ kernel, colour ~ kernel."""
  fig, ax = plt.subplots(figsize=(max(6, 0.62 * (len(arch.blocks) + 2)), 2.8))
  x = 0.0
  def box(width, height, colour, label, sub):
    nonlocal x
    ax.add_patch(plt.Rectangle((x, -height / 2), width, height, color=colour, ec="black", lw=0.6))
    ax.text(x + width / 2, height / 2 + 0.12, label, ha="center", va="bottom", fontsize=7, rotation=90)
    ax.text(x + width / 2, -height / 2 - 0.12, sub, ha="center", va="top", fontsize=6, rotation=90)
    x += width + 0.15
  box(0.5, 1.0, "#999999", "stem", f"{arch.stem_output_size}x{arch.stem.filters}")
  legend = {}
  for block, shape in zip(arch.blocks, arch.block_shapes()):
    width, height, colour = block.op_type.figure_box(block)
    box(width, height, colour, block.label, f"{shape.out_size}x{block.filters}")
    legend.update((text, c) for c, text in block.op_type.legend())
  box(0.5, 1.0, "#999999", "head", f"{arch.head.filters}->{arch.num_classes}")
  ax.set_xlim(-0.2, x)
  ax.set_ylim(-2.6, 2.6)
  ax.axis("off")
  handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in legend.values()]
  ax.legend(handles, list(legend), loc="upper right", fontsize=7, ncol=3, frameon=False)
  ax.set_title(title or arch.name or "architecture", fontsize=10)
  save(fig, path)


def plot_latency_validation(rows: List[Dict], path: str, title: str = ""):
  """Predicted vs measured latency of whole networks (a latency table's validation), with
  the measurement's 95 % interval as error bars and the +-5 % band; rows with a
  ``rescaled_predicted_ms`` (at the machine's speed during validation) add those points."""
  measured = np.array([r["measured_ms"] for r in rows])
  predicted = np.array([r["predicted_ms"] for r in rows])
  rescaled = all("rescaled_predicted_ms" in r for r in rows)
  fig, (ax, hist) = plt.subplots(1, 2, figsize=(9.5, 4.2), gridspec_kw={"width_ratios": [3, 2]})
  shown = np.concatenate([measured, predicted] + (
      [[r["rescaled_predicted_ms"] for r in rows]] if rescaled else []))
  low, high = 0.95 * shown.min(), 1.05 * shown.max()
  line = np.array([low, high])
  ax.fill_between(line, 0.95 * line, 1.05 * line, color="#dddddd", label="+-5 %")
  ax.plot(line, line, color="black", lw=0.8, label="predicted = measured")
  spread = [r.get("measured_ci_ms") for r in rows]
  if all(s is not None for s in spread):
    xerr = np.abs(np.array(spread).T - measured)
    ax.errorbar(measured, predicted, xerr=xerr, fmt="o", ms=3.5, color="#4C72B0", elinewidth=0.8,
                label="networks (95 % CI of the measurement)")
  else:
    ax.plot(measured, predicted, "o", ms=3.5, color="#4C72B0", label="networks")
  if rescaled:
    ax.plot(measured, [r["rescaled_predicted_ms"] for r in rows], "x", ms=4, color="#C44E52",
            label="at the machine's speed now (drift curve)")
  ax.set_xlim(low, high)
  ax.set_ylim(low, high)
  ax.set_xlabel("measured (ms)")
  ax.set_ylabel("predicted by the table (ms)")
  ax.legend(fontsize=7, loc="upper left")
  ax.grid(alpha=0.3)
  bins = min(20, max(5, len(rows) // 3))
  hist.hist([r["error_pct"] for r in rows], bins=bins, color="#4C72B0", alpha=0.7, label="as built")
  if rescaled:
    hist.hist([r["rescaled_error_pct"] for r in rows], bins=bins, color="#C44E52", alpha=0.6,
              label="at the speed now")
    hist.legend(fontsize=7)
  hist.axvline(0, color="black", lw=0.8)
  hist.set_xlabel("error (%)")
  hist.set_ylabel("networks")
  fig.suptitle(title or "latency table validation", fontsize=10)
  fig.tight_layout()
  save(fig, path)


def plot_family(points, members: List[Dict], references, front, path: str, title: str = ""):
  """`points`: (MACs, supernet top-1) of every scored network; `members`: family.json's
  members; `references`: (name, MACs); `front`: (MACs, true top-1) of a ground truth, or
  None (drawn as its Pareto front on a second axis: the two top-1s are on different data
  and training, only their shapes compare)."""
  fig, ax = plt.subplots(figsize=(7.5, 4.6))
  macs = np.array([p[0] for p in points]) / 1e6
  ax.plot(macs, [p[1] for p in points], "o", ms=3, color="#bbbbbb", label="networks scored")
  cmap = plt.get_cmap("tab10")
  for k, member in enumerate(members):
    colour = cmap(k % 10)
    ax.plot(member["macs"] / 1e6, member["supernet_top1"], "*", ms=14, color=colour,
            markeredgecolor="black", label=f"pick for {member['target']}")
    if member["kind"] == "macs":
      ax.axvline(member["bound"] / 1e6, color=colour, ls="--", lw=1)
  for name, value in references:
    ax.axvline(value / 1e6, color="#555555", ls=":", lw=0.8)
    ax.annotate(name, (value / 1e6, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                fontsize=7, va="top", ha="right")
  if front:
    order = sorted(front)
    best, xs, ys = -np.inf, [], []
    for x, y in order:
      if y > best:
        best = y
        xs.append(x / 1e6)
        ys.append(y)
    twin = ax.twinx()
    twin.step(xs, ys, where="post", color="#2ca02c", lw=1.5, label="true front (ground truth)")
    twin.set_ylabel("true top-1 (ground truth, mean over seeds)", color="#2ca02c")
    twin.legend(fontsize=7, loc="lower right")
  ax.set_xlabel("MACs (millions)")
  ax.set_ylabel("supernet top-1 (arch split, BN recalibrated)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper left")
  ax.set_title(title, fontsize=10)
  fig.tight_layout()
  save(fig, path)
