"""How the spec files spell numbers: strict types, and 3.0 read back as 3."""

import math
from typing import Any


def is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def normalize(value):
  """3.0 -> 3 so that a spec compares equal however its file spelled numbers."""
  if isinstance(value, float) and value.is_integer():
    return int(value)
  return value


def format_number(value) -> str:
  value = normalize(value)
  return str(value) if is_int(value) else repr(float(value))


def check_limits(config, limits) -> None:
  """Raises ValueError naming the first field of the dataclass instance `config` that is out
  of its limits: `limits` maps a field to (low, high) or (low, high, "open"): low <= value,
  and value <= high (value < high with "open"); None is no limit. The same limits as the
  programs' flag bounds, so that a Python caller gets the error a flag would."""
  for name, limit in limits.items():
    low, high = limit[0], limit[1]
    open_high = len(limit) > 2 and limit[2] == "open"
    value = getattr(config, name)
    if value is None:
      continue
    too_low = low is not None and not value >= low
    too_high = high is not None and not (value < high if open_high else value <= high)
    if too_low or too_high:
      if high is None:
        rule = f">= {low}"
      else:
        rule = f"in [{low}, {high}{')' if open_high else ']'}"
      raise ValueError(f"{name} must be {rule}, got {value!r}")
