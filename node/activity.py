"""What the node has been doing lately: counts of gossip and sync per minute, for the last hour.

Rooms that move objects note what they did (:meth:`Activity.note`); the local
API reads :meth:`Activity.last_hour` for ``swapmeet node status`` and the
web UI's network page. Bounded: one slot per minute, 60 slots, a fixed set of
event names, whatever peers do.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: The events counted; anything else is a programming error (a typo must not grow the table).
EVENTS = (
    "gossip_in",  # verified objects received by gossip (new or not)
    "gossip_new",  # of those, new to our book or chains
    "gossip_out",  # gossip messages we published
    "sync_sessions",  # book-sync and ledger-sync sessions finished (either side)
    "sync_objects",  # objects fetched or pushed in book sync, entries pulled in ledger sync
    "refused",  # messages, frames or objects refused at the boundary or over a budget
)
MINUTES = 60


@dataclass
class _Minute:
    start: int  # Unix minute (seconds // 60)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENTS, 0))


class Activity:
    """Per-minute counters of :data:`EVENTS` over the last :data:`MINUTES` minutes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._minutes: deque[_Minute] = deque(maxlen=MINUTES)

    def note(self, event: str, count: int = 1) -> None:
        """Count ``count`` occurrences of ``event`` in the current minute."""
        if event not in EVENTS:
            raise ValueError(f"unknown activity event {event!r}")
        minute = int(self._clock()) // 60
        if not self._minutes or self._minutes[-1].start != minute:
            self._minutes.append(_Minute(minute))
        self._minutes[-1].counts[event] += count

    def last_hour(self) -> list[dict[str, int]]:
        """One row per minute of the last hour, oldest first, minutes without events included:
        ``[{"minute": unix_seconds, "gossip_in": n, ...}, ...]`` (60 rows)."""
        now = int(self._clock()) // 60
        by_minute = {m.start: m.counts for m in self._minutes}
        empty = dict.fromkeys(EVENTS, 0)
        return [{"minute": m * 60, **by_minute.get(m, empty)} for m in range(now - MINUTES + 1, now + 1)]

    def totals(self) -> dict[str, int]:
        """Each event's count over the last hour."""
        rows = self.last_hour()
        return {e: sum(r[e] for r in rows) for e in EVENTS}
