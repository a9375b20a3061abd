"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or a kill never leaves a half-written file under the final name.
"""

import json
import os
import tempfile
from typing import Any


def atomic_write_bytes(path: str, data: bytes):
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as handle:
      handle.write(data)
      handle.flush()
      os.fsync(handle.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_text(path: str, text: str):
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, data: Any):
  atomic_write_text(path, json.dumps(data, sort_keys=True, indent=2) + "\n")
