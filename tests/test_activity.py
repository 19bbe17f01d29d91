"""The node's activity counters: per minute, an hour kept, a fixed set of events."""

from __future__ import annotations

import pytest
from swapmeet.node.activity import EVENTS, MINUTES, Activity


def test_counts_land_in_their_minute_and_an_hour_is_kept() -> None:
    now = [1_700_000_000.0]
    activity = Activity(clock=lambda: now[0])
    activity.note("gossip_in", 2)
    now[0] += 61
    activity.note("gossip_in")
    activity.note("refused")
    rows = activity.last_hour()
    assert len(rows) == MINUTES and rows[-1]["minute"] == int(now[0]) // 60 * 60
    assert (rows[-2]["gossip_in"], rows[-1]["gossip_in"], rows[-1]["refused"]) == (2, 1, 1)
    now[0] += 3600  # an hour later nothing of that is left
    assert activity.totals() == dict.fromkeys(EVENTS, 0)


def test_memory_is_bounded_whatever_the_clock_does() -> None:
    now = [0.0]
    activity = Activity(clock=lambda: now[0])
    for _ in range(10_000):
        now[0] += 60
        activity.note("sync_sessions")
    assert len(activity._minutes) == MINUTES
    assert activity.totals()["sync_sessions"] == MINUTES


def test_an_unknown_event_is_a_bug_not_a_new_counter() -> None:
    with pytest.raises(ValueError, match="unknown activity event"):
        Activity().note("gossip-in")
