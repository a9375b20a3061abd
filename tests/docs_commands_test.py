"""Every command in the README's, the stage pages' and docs/benchmarks.md's shell blocks parses
with the flags of the program it names: a renamed or removed flag, a bad enum value or a flag
file that no longer parses fails here instead of in a user's terminal. (benchmarks.md is a
reference: each figure with the command that reproduces it today; superseded runs are
lessons in docs/history.md, without commands.) The README's Python block runs in
readme_test.py."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ("README.md", "docs/data.md", "docs/search.md", "docs/retrain.md", "docs/export.md",
         "docs/latency.md", "docs/rank.md", "docs/drop.md", "docs/family.md", "docs/design.md",
         "docs/benchmarks.md")
# Program (as typed after `python -m`, or the exporter's script) -> (module, flag definer).
PROGRAMS = {
    "betanas_tf.search": ("betanas_tf.search", "define_flags"),
    "betanas_tf.train": ("betanas_tf.train", "define_flags"),
    "betanas_tf.tune": ("betanas_tf.tune", "define_flags"),
    "betanas_tf.arch_info": ("betanas_tf.arch_info", "define_flags"),
    "betanas_tf.family": ("betanas_tf.family.__main__", "define_flags"),
    "betanas_tf.export": ("betanas_tf.export", "define_flags"),
    "export/to_tflite.py": ("betanas_tf.export", "define_flags"),
    "betanas_tf.latency": ("betanas_tf.latency.__main__", "_define_flags"),
    "betanas_tf.bench.rank": ("betanas_tf.bench.rank", "define_flags"),
    "betanas_tf.bench.ground_truth": ("betanas_tf.bench.ground_truth", "define_flags"),
    "betanas_tf.bench.separation": ("betanas_tf.bench.separation", "define_flags"),
    "betanas_tf.bench.branches": ("betanas_tf.bench.branches", "define_flags"),
    "betanas_tf.bench.family": ("betanas_tf.bench.family", "define_flags"),
    "betanas_tf.bench.throughput": ("betanas_tf.bench.throughput", "define_flags"),
    "betanas_tf.bench.cold_layers": ("betanas_tf.bench.cold_layers", "define_flags"),
    "betanas_tf.bench.preemption": ("betanas_tf.bench.preemption", "define_flags"),
    "betanas_tf.qat": ("betanas_tf.qat", "define_flags"),   # last: it may import tfmot
}
SUBCOMMANDS = {"betanas_tf.latency": ("build", "refit", "import", "predict", "validate", "compare")}


def documented_commands():
  """(page, program, argv) of every `python -m betanas_tf...` / `python export/to_tflite.py`
  command in the pages' bash blocks (continuation lines joined, comments and redirections
  dropped, `a && b` split, the brackets of `[--optional]` flags removed)."""
  found = []
  for page in PAGES:
    text = open(os.path.join(ROOT, page)).read()
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
      for line in block.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        command = []
        for token in tokens + ["&&"]:
          if token in ("&&", ";", "|", ">", "2>&1"):
            if len(command) > 1 and command[0] == "python":
              if command[1] == "-m" and command[2] in PROGRAMS:
                found.append((page, command[2], command[3:]))
              elif command[1] in PROGRAMS:
                found.append((page, command[1], command[2:]))
            command = [] if token != ">" else ["redirected"]
          elif command != ["redirected"]:
            command.append(token.lstrip("[").rstrip("]"))   # [--optional flags]
  return found


PARSE = r'''
import importlib, json, sys
from absl import flags
requests = json.loads(sys.argv[1])
programs = json.loads(sys.argv[2])
out = []
for program in dict.fromkeys(r[0] for r in requests):
  before = set(flags.FLAGS)
  module, definer = programs[program]
  getattr(importlib.import_module(module), definer)()
  for _, argv in [r for r in requests if r[0] == program]:
    flags.FLAGS.unparse_flags()
    try:
      rest = flags.FLAGS(["prog"] + argv)
      out.append({"program": program, "argv": argv, "rest": rest[1:], "error": None})
    except flags.Error as error:
      out.append({"program": program, "argv": argv, "rest": [], "error": str(error)})
  flags.FLAGS.unparse_flags()
  for name in set(flags.FLAGS) - before:
    delattr(flags.FLAGS, name)
print("RESULTS " + json.dumps(out))
'''


def test_documented_commands_are_found_in_every_stage_page():
  commands = documented_commands()
  pages = {page for page, _, _ in commands}
  assert pages == {"README.md", "docs/data.md", "docs/search.md", "docs/retrain.md", "docs/export.md",
                   "docs/latency.md", "docs/rank.md", "docs/drop.md", "docs/family.md",
                   "docs/benchmarks.md"}
  programs = {program for _, program, _ in commands}
  assert {"betanas_tf.search", "betanas_tf.train", "export/to_tflite.py", "betanas_tf.qat",
          "betanas_tf.latency", "betanas_tf.tune", "betanas_tf.bench.rank",
          "betanas_tf.bench.branches", "betanas_tf.family", "betanas_tf.bench.family"} <= programs
  # Continuation lines are joined and comments dropped.
  assert ("README.md", "betanas_tf.arch_info", ["--arch=/tmp/betanas_demo/arch.json"]) in commands


@pytest.mark.slow
def test_every_documented_command_parses_with_its_programs_flags():
  commands = documented_commands()
  ordered = sorted(commands, key=lambda c: list(PROGRAMS).index(c[1]))
  requests = [[program, argv] for _, program, argv in ordered]
  done = subprocess.run([sys.executable, "-c", PARSE, json.dumps(requests), json.dumps(PROGRAMS)],
                        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads(done.stdout.split("RESULTS ", 1)[1])
  assert len(results) == len(commands)
  failures = [f"{page}: {program} {' '.join(argv)}: {r['error']}"
              for (page, program, argv), r in zip(ordered, results) if r["error"]]
  assert not failures, "\n".join(failures)
  for (page, program, argv), result in zip(ordered, results):
    expected = [a for a in argv if not a.startswith("-")][:1] if program in SUBCOMMANDS else []
    assert result["rest"] == expected, (page, program, argv)
    if program in SUBCOMMANDS:
      assert expected[0] in SUBCOMMANDS[program], (page, argv)


def test_a_renamed_flag_is_caught():
  done = subprocess.run(
      [sys.executable, "-c", PARSE, json.dumps([["betanas_tf.arch_info", ["--arhc=x.json"]]]),
       json.dumps(PROGRAMS)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
      capture_output=True, text=True, timeout=120)
  results = json.loads(done.stdout.split("RESULTS ", 1)[1])
  assert results[0]["error"].startswith("Unknown command line flag 'arhc'"), results
