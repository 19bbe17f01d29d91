"""Crash-safe file writes, shared by the ledger and the node's own files.

One way to write a file that must survive a crash (``kill -9``, power loss):
:func:`durable_file` / :func:`write_durably`. A reader then finds the old
contents or the new ones, never a torn mix, and a file that was acknowledged
stays. The steps, each for a reason:

1. a temporary file in the *same directory* (a rename is atomic only within
   one file system), created with ``O_EXCL | O_NOFOLLOW`` (never through a
   planted link, never someone else's file) and with its final ``mode`` from
   the moment it exists (a secret is never briefly readable by others);
2. write, flush, ``fsync`` (the data is on disk before the name points at it);
3. rename over the target (``replace=True``), or hard-link it in place so an
   existing target is never clobbered (``replace=False``, for files such as an
   identity key that must never be overwritten by a race);
4. ``fsync`` the directory (the new directory entry survives power loss too).

On any failure the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# Where hard links are unsupported (some FUSE and network file systems) a no-clobber write falls back to
# check-then-replace, which leaves a small race but still never overwrites a file that existed before.
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


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


@contextlib.contextmanager
def durable_file(path: str | os.PathLike[str], *, mode: int = 0o600, replace: bool = True) -> Iterator[BinaryIO]:
    """Write ``path`` crash-safely: yields a binary file; on a clean exit it becomes ``path``.

    ``mode`` is the new file's permission bits (the umask still applies, as for any created file).
    With ``replace=False`` an existing ``path`` is never overwritten.

    Raises :class:`OSError` when the directory cannot be written, :class:`FileExistsError` when
    ``replace`` is False and ``path`` exists; callers turn these into their own one-line errors.
    Whatever the exception (the block's own too), the temporary file is removed.
    """
    target = Path(path)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, target)
        else:
            _link_no_clobber(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(target.parent)


def write_durably(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, replace: bool = True) -> None:
    """:func:`durable_file` for data already in memory (raises as it does)."""
    with durable_file(path, mode=mode, replace=replace) as f:
        f.write(data)


def _link_no_clobber(tmp: Path, path: Path) -> None:
    """Put ``tmp`` at ``path`` atomically, never replacing an existing ``path`` (FileExistsError).

    A hard link fails if the target exists, which closes the race between two writers (two
    concurrent ``swapmeet init``).
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
        os.replace(tmp, path)
