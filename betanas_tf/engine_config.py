"""The supernet's training settings (`EngineConfig`) and the names they choose among.

Imports nothing heavy: a program defines its flags from these (bounds, enums, defaults) and
answers a flag error or --help before TensorFlow loads; `engine` trains with them.
"""

import dataclasses

from betanas_tf import drop_schedules
from betanas_tf import numbers
from betanas_tf.setting_names import ARCH_DATA, COST_FORMS, DROP_RULES, GATE_MODES, PRECISIONS  # pylint: disable=unused-import
# EngineConfig's numeric limits (numbers.check_limits; the search's flag bounds are the same).
ENGINE_LIMITS = {
    "batch_size": (1, None), "arch_batch_size": (1, None), "max_steps": (1, None),
    "lr": (0.0, None), "lr_warmup_steps": (0, None), "momentum": (0.0, 1.0, "open"),
    "weight_decay": (0.0, None), "label_smoothing": (0.0, 1.0, "open"), "arch_lr": (0.0, None),
    "arch_beta1": (0.0, 1.0, "open"), "arch_beta2": (0.0, 1.0, "open"),
    "arch_epsilon": (0.0, None), "arch_update_every": (1, None), "arch_warmup_steps": (0, None),
    "beta": (0.0, None), "drop_warmup_steps": (0, None), "drop_keep": (1, None),
    "se_ratio": (0.0, 1.0, "open")}


@dataclasses.dataclass(frozen=True)
class EngineConfig:
  """Training settings of the supernet (defaults: ProxylessNAS, docs/design.md)."""
  batch_size: int = 64
  arch_batch_size: int = 64
  max_steps: int = 100
  lr: float = 0.05
  lr_warmup_steps: int = 0
  momentum: float = 0.9
  nesterov: bool = True
  weight_decay: float = 4e-5
  label_smoothing: float = 0.1
  arch_lr: float = 1e-3
  arch_beta1: float = 0.0
  arch_beta2: float = 0.999
  arch_epsilon: float = 1e-8
  arch_update_every: int = 5
  arch_warmup_steps: int = 0
  gate_mode: str = "full"
  beta: float = 0.0
  cost_form: str = "linear"
  drop_rule: str = "prob"
  drop_threshold: float = 0.3
  drop_warmup_steps: int = 0
  drop_schedule: str = "threshold"   # when drops happen (drop_schedules.DROP_SCHEDULES)
  drop_keep: int = 2                 # ops a block keeps under the top_k schedule
  se_ratio: float = 0.0
  seed: int = 0
  arch_data: str = "train"   # the alpha step's batches: "train" = the training transform and
                             # label smoothing (as Phase 1); "eval" = the evaluation transform
                             # and plain cross-entropy (ProxylessNAS' reference code)
  mixed_precision: str = "none"   # "bfloat16" | "float16": the supernet computes in it
                                  # (precision.py); everything of alpha stays float32
  jit_compile: bool = False       # XLA for the Phase-1 step's forward and backward pass

  def __post_init__(self):
    numbers.check_limits(self, ENGINE_LIMITS)
    if self.mixed_precision not in PRECISIONS:
      raise ValueError(f"mixed_precision must be one of {', '.join(PRECISIONS)}, got "
                       f"{self.mixed_precision!r}")
    if self.arch_data not in ARCH_DATA:
      raise ValueError(f"arch_data must be one of {', '.join(ARCH_DATA)}, got {self.arch_data!r}")
    for name, known in (("gate_mode", GATE_MODES), ("cost_form", COST_FORMS),
                        ("drop_rule", DROP_RULES)):
      if getattr(self, name) not in known:
        raise ValueError(f"--{name} must be one of {', '.join(known)}, got {getattr(self, name)!r}")
    if self.drop_schedule not in drop_schedules.DROP_SCHEDULES.names():
      raise ValueError(f"--drop_schedule must be one of "
                       f"{', '.join(drop_schedules.DROP_SCHEDULES.names())}, got "
                       f"{self.drop_schedule!r}")
    if self.drop_rule == "prob" and not 0 < self.drop_threshold < 1:
      raise ValueError("--drop_threshold must be in (0, 1) with --drop_rule=prob (p < threshold "
                       "/ M'; >= 1 would drop every op of a balanced block)")

  def arch_steps_before(self, step: int) -> int:
    """How many alpha steps a search runs before Phase-1 step `step` (alpha steps
    follow the steps s with (s + 1) % arch_update_every == 0 and s >= arch_warmup_steps)."""
    every, warmup = self.arch_update_every, self.arch_warmup_steps
    return max(0, step // every - warmup // every) if step > warmup else 0


def demo_config(max_steps: int = 600, seed: int = 0) -> EngineConfig:
  """configs/demo.flags' supernet settings (tests/search_test.py holds the two equal), its
  warm-ups scaled with the Phase-1 budget: lr over steps/30, alpha steps from steps/6, drops
  from steps/4 (600 steps: 20, 100, 150)."""
  return EngineConfig(
      batch_size=64, arch_batch_size=64, max_steps=max_steps, lr=0.1,
      lr_warmup_steps=max(1, max_steps // 30), weight_decay=4e-5, label_smoothing=0.1,
      arch_update_every=2, arch_warmup_steps=max_steps // 6, arch_lr=0.02, gate_mode="full",
      beta=0.5, cost_form="linear", drop_rule="prob", drop_threshold=0.3,
      drop_warmup_steps=max_steps // 4, seed=seed)
