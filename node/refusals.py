"""Refused input, logged so that no peer can fill our disk with our own log lines.

Everything a peer sends that the node refuses (a message that fails the trust
boundary, a frame that breaks a protocol, an object over a budget, a stream
over a limit) is reported here with :meth:`RefusalLog.refused`. The first
refusal from a peer in a window (a minute) is one INFO line,
``rejected <what> from <peer>: <reason>``; the rest of that peer's refusals in
the window are counted, and said in one line when its next window starts
(``rejected N more from <peer> in the last minute: <what>: <reason>`` with the
last of them). Peers are many and free to make, so the first lines themselves
have a budget per window; past it, refusals from any peer only count, and one
line says how many when the window ends. Bounded: a fixed number of peers
remembered, least recent forgotten first.

Every refusal is also counted in the node's activity (``refused``). A traceback
is for our own bugs only, never for bad remote input.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .activity import Activity

WINDOW_S = 60.0
MAX_FIRST_LINES = 100  # per window, over all peers
MAX_PEERS = 4096  # peers remembered (their counts); the least recent is forgotten first


@dataclass
class _Window:
    start: float
    more: int = 0  # refusals after the first one in this window
    last: str = ""


class RefusalLog:
    """Per-peer, rate-limited refusal lines for one logger."""

    def __init__(
        self, logger: logging.Logger, activity: Activity | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.log = logger
        self._activity = activity
        self._clock = clock
        self._peers: OrderedDict[str, _Window] = OrderedDict()
        self._window_start = clock()
        self._first_lines = 0
        self._suppressed = 0  # refusals not logged because the first-line budget was spent

    def refused(self, peer: str, what: str, reason: str) -> None:
        """Note that ``what`` (e.g. "a listings message", "a book-sync frame") from ``peer`` was refused."""
        if self._activity is not None:
            self._activity.note("refused")
        now = self._clock()
        self._roll(now)
        short = peer[-8:]
        window = self._peers.pop(peer, None)
        if window is not None and now - window.start < WINDOW_S:
            window.more += 1
            window.last = f"{what}: {reason}"
        else:
            if window is not None and window.more:
                self.log.info("rejected %d more from %s in the last minute: %s", window.more, short, window.last)
            if self._first_lines < MAX_FIRST_LINES:
                self._first_lines += 1
                self.log.info("rejected %s from %s: %s", what, short, reason)
            else:
                self._suppressed += 1
            window = _Window(now)
        self._peers[peer] = window
        while len(self._peers) > MAX_PEERS:
            self._peers.popitem(last=False)

    def _roll(self, now: float) -> None:
        """Start a new window for the first-line budget; say what the last one suppressed."""
        if now - self._window_start < WINDOW_S:
            return
        if self._suppressed:
            self.log.info(
                "rejected %d more messages, frames or objects from other peers in the last minute", self._suppressed
            )
        self._window_start = now
        self._first_lines = 0
        self._suppressed = 0
