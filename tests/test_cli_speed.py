"""``swapmeet --help`` and friends stay fast: they never import the heavy stacks.

Importing libp2p costs ~1 s, and the ASGI stack (fastapi, hypercorn), trio and
rich add more; only ``node run`` (and commands that draw a table on a terminal)
need them. Timing assertions would be flaky on a loaded CI machine, so these
tests check the cause instead: which modules a real process imported, from
``python -X importtime`` (every module a process imports is listed there once).
The time itself is measured in the benchmarks (issue 6's goal: ``swapmeet
--help`` under 0.4x the time of ``python -c "import libp2p"``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("libp2p", "fastapi", "hypercorn", "trio", "rich", "multiaddr", "starlette", "pydantic")

COMMANDS = [
    ["--help"],
    ["config", "show"],
    ["config", "show", "--json"],
    ["listings", "--help"],
    ["ledger", "--help"],
    ["node", "run", "--help"],
    ["completion", "bash"],
]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SWAPMEET_")}


def imported_modules(args: list[str], home: Path) -> set[str]:
    """Top-level names of every module a ``swapmeet`` process imported while running ``args``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "swapmeet.cli.main", "--home", str(home), *args],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip(), "the command printed nothing"
    # "import time: self [us] | cumulative | imported package", the name indented by nesting depth
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "click" in names, "no -X importtime output: the check would pass vacuously"
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_light_commands_import_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    heavy = sorted(imported_modules(args, tmp_path) & set(HEAVY))
    assert heavy == [], f"`swapmeet {' '.join(args)}` imported {heavy}: import them inside the command instead"


def test_every_help_imports_nothing_heavy(tmp_path: Path) -> None:
    """All ``--help`` pages of the whole command tree, walked in one process."""
    code = """
import json, sys
import click
from swapmeet.cli.main import cli

def walk(command, path):
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, [*path, name])

paths = list(walk(cli, []))
for path in paths:
    try:
        cli.main(args=[*path, "--help"], prog_name="swapmeet", standalone_mode=False)
    except SystemExit:
        pass
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
print(json.dumps({"paths": len(paths), "heavy": heavy}), file=sys.stderr)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code, *HEAVY],
        env={**clean_env(), "SWAPMEET_HOME": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result["paths"] > 10  # the walk really saw the tree
    assert result["heavy"] == []
