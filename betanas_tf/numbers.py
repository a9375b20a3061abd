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
