"""Progress bars for long work (audit, import, verify): drawn on stderr, and only on a terminal.

Piped or redirected output, ``--json`` and CI logs never see a bar; the callback is then
``None`` and the work runs without reporting.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(label: str, total: int | None, *, cumulative: bool) -> Iterator[Callable[[int], None] | None]:
    """A callback for the work to report progress to, or None when stderr is not a terminal.

    ``cumulative``: the callback gets the count done so far; otherwise the count just done.
    """
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console  # imported here: keeps `swapmeet --help` fast
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        if cumulative:
            yield lambda done: bar.update(task, completed=done)
        else:
            yield lambda n: bar.advance(task, n)
