"""Two latency tables side by side: how far two runtimes (or machines) agree."""

import re
from typing import Dict, List

import numpy as np

from betanas_tf.latency import table as latency_table


def op_label(key: str) -> str:
  """The op a layer key times, without its shape: k<kernel>e<expand> for an MBConv, else the
  key's layer name (Conv, Conv_1, Logits, ...)."""
  kernel, expand = re.search(r"-kernel:(\d+)", key), re.search(r"-expand:(\d+)", key)
  if kernel and expand:
    return f"k{kernel.group(1)}e{expand.group(1)}"
  return key.split("-input", 1)[0]


def compare(first: latency_table.LatencyTable, second: latency_table.LatencyTable, space,
            n: int = 100, seed: int = 0) -> Dict:
  """How far two tables agree: over their common keys, Kendall's tau of the entries and
  each key's second / first ratio (summarised per op); over `n` random networks of `space`
  (when both tables cover it), tau of the two predictions and their ratio."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  common = sorted(set(first.entries) & set(second.entries))
  if len(common) < 2:
    raise ValueError(f"the tables share {len(common)} key(s); comparing needs at least 2 (built "
                     "for the same space, input size and width?)")
  a = np.array([first.lookup(k) for k in common])
  b = np.array([second.lookup(k) for k in common])
  ratios = dict(zip(common, (b / np.maximum(a, 1e-12)).tolist()))
  per_op: Dict[str, List[float]] = {}
  for key, ratio in ratios.items():
    per_op.setdefault(op_label(key), []).append(ratio)
  summary = lambda r: {"n": len(r), "median": float(np.median(r)), "min": float(np.min(r)),
                       "max": float(np.max(r))}
  result = {"runtimes": [first.runtime_words(), second.runtime_words()],
            "common_keys": len(common), "only_first": len(set(first.entries) - set(common)),
            "only_second": len(set(second.entries) - set(common)),
            "entries_tau": float(stats.kendalltau(a, b)[0]), "ratio": summary(list(ratios.values())),
            "per_op": {op: summary(r) for op, r in sorted(per_op.items())}, "ratios": ratios,
            "networks": None}
  keys = latency_table.space_keys(space)
  lacking = [name for name, table in (("first", first), ("second", second)) if table.missing(keys)]
  if lacking:
    result["networks_skipped"] = (f"the {' and '.join(lacking)} table(s) lack keys of "
                                  f"{space.name} at {space.input_size} px")
    return result
  rng = np.random.default_rng(seed)
  archs = [space.arch_from_choices(space.sample(rng)) for _ in range(n)]
  p = np.array([first.predict(x) for x in archs])
  q = np.array([second.predict(x) for x in archs])
  result["networks"] = dict(n=n, seed=seed, tau=float(stats.kendalltau(p, q)[0]), **{
      f"ratio_{k}": v for k, v in summary((q / p).tolist()).items() if k != "n"})
  return result


def compare_text(result: Dict, first: str, second: str) -> str:
  lines = [f"first:  {first} ({result['runtimes'][0]})",
           f"second: {second} ({result['runtimes'][1]})",
           f"{result['common_keys']} common keys ({result['only_first']} only in the first, "
           f"{result['only_second']} only in the second); Kendall tau of their entries "
           f"{result['entries_tau']:.3f}; second / first per key: median "
           f"{result['ratio']['median']:.3f}, range {result['ratio']['min']:.3f} - "
           f"{result['ratio']['max']:.3f}"]
  nets = result["networks"]
  if nets:
    lines.append(f"{nets['n']} random networks: Kendall tau of the predictions {nets['tau']:.3f}; "
                 f"second / first median {nets['ratio_median']:.3f}, range "
                 f"{nets['ratio_min']:.3f} - {nets['ratio_max']:.3f}")
  else:
    lines.append(f"random networks not compared: {result['networks_skipped']}")
  lines.append("op      keys  second/first: median   min     max")
  for op, r in result["per_op"].items():
    lines.append(f"{op:<8}{r['n']:>4}  {r['median']:>19.3f} {r['min']:>7.3f} {r['max']:>7.3f}")
  return "\n".join(lines)
