"""Opening a file the local user names (an export, a key file, a config file, a photo).

A path given on the command line or found in a home can be anything: a named
pipe would make a plain ``open`` block forever, a directory or a device gives
errors deep inside a reader. :func:`open_regular` is the one way every such
file is opened: it never blocks on the open, checks the opened file (not the
path, so a file swapped between check and open is still checked), and refuses
anything but a regular file with an ``OSError`` whose ``strerror`` says what
the path is, so each caller's existing "cannot read PATH: ..." line covers it.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


class NotARegularFile(OSError):
    """The path names something other than a regular file."""


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for binary reading; :class:`NotARegularFile` unless it is a regular file."""
    # O_NONBLOCK: opening a FIFO with no writer must not hang. It does not matter for
    # a regular file's reads, and is cleared below anyway.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise NotARegularFile(errno.EINVAL, f"not a regular file ({kind})", os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
