"""Crash-safe file system helpers shared by the ledger and the node's own files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a new directory entry (a created or renamed file) durable across power loss.

    A no-op where directories cannot be opened or synced (some platforms and file systems).
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
