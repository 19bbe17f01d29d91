"""Running the ``swapmeet`` command as a user does: a subprocess, no stdin, none of the caller's SWAPMEET_* settings."""

from __future__ import annotations

import os
import subprocess
import sys

CLI = [sys.executable, "-m", "swapmeet.cli.main"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without SWAPMEET_* (a developer's own settings must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWAPMEET_")}
    return {**env, **extra}


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``swapmeet ARGS...`` with ``env`` (default: :func:`clean_env`) and no standard input."""
    return subprocess.run(
        [*CLI, *args],
        env=env if env is not None else clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The command failed with ``code``, printed nothing, and said why in one line (no traceback); returns it."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "", proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("swapmeet: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
