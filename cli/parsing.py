"""Options as people type them: durations and times, items. Checked before any node is contacted.

Shared by :mod:`.node_cmds` and :mod:`.trade_cmds`, so that a typo is reported (exit 2,
naming the option) even when no node runs. Light on purpose: the protocol's item parser
is imported only when items are parsed.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from typing import Any

from swapmeet.protocol.errors import InvalidObject

MAX_ITEM_NAME = 80  # the protocol's limits (PROTOCOL.md 10.8), checked before the node is asked
MAX_UNIT = 16

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_duration(text: str) -> int | None:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` (or ``"1d12h"``) in seconds; None if not a duration."""
    text = text.strip().lower()
    if not text or not re.fullmatch(rf"(?:{_DURATION.pattern}\s*)+", text):
        return None
    return sum(int(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))


def parse_when(text: str, now: int, option: str) -> int:
    """An absolute time: a duration from ``now``, Unix seconds, or an ISO date/time (local time if no zone)."""
    text = text.strip()
    seconds = parse_duration(text)
    if seconds is not None:
        return now + seconds
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidObject(
            option, f"expected a duration (7d, 12h, 30m), Unix seconds or an ISO date, got {text!r}", "format"
        ) from None
    return int(moment.timestamp())  # naive -> local time, which is what a person typing a date means


def parse_in_s(text: str, option: str) -> int:
    """A relative time in seconds: a duration (``10m``, ``1d``) or an absolute time (Unix seconds, ISO date)
    converted to seconds from now. Must be in the future."""
    seconds = parse_duration(text)
    if seconds is None:
        seconds = parse_when(text, int(time.time()), option) - int(time.time())
    if seconds <= 0:
        raise InvalidObject(option, f"must be a time in the future, got {text!r}", "format")
    return seconds


def parse_expires(text: str) -> dict[str, int]:
    """``--expires``: a duration is sent as relative (the node's clock decides), anything else as absolute."""
    seconds = parse_duration(text)
    if seconds is not None:
        if seconds <= 0:
            raise InvalidObject("--expires", f"must be a positive duration, got {text!r}", "format")
        return {"expires_in_s": seconds}
    return {"expires": parse_when(text, int(time.time()), "--expires")}


def parse_window(text: str, now: int) -> list[int]:
    """``--window START..END`` (also ``START,END``), each end as in :func:`parse_when`."""
    parts = re.split(r"\.\.|,", text, maxsplit=1)
    if len(parts) != 2:
        raise InvalidObject("--window", f"expected START..END (e.g. 1d..3d or 2030-05-01..2030-05-03), got {text!r}")
    return [parse_when(parts[0], now, "--window"), parse_when(parts[1], now, "--window")]


def parse_items(values: Sequence[str], option: str) -> list[dict[str, Any]]:
    """``QTY [UNIT] x ITEM`` texts as item objects, each checked against the protocol's limits.

    The quantity, item and unit limits are checked here, not only at the node, so that a typo
    such as ``0 x bike`` is reported (exit 2, naming ``option``) even when no node runs.
    """
    from swapmeet.protocol.boundary import MAX_QTY
    from swapmeet.protocol.build import parse_item

    items = []
    for text in values:
        item = parse_item(text, option)
        if not 1 <= item.qty <= MAX_QTY:
            raise InvalidObject(
                option, f"the quantity must be a whole number from 1 to {MAX_QTY}, got {text!r}", "range"
            )
        if len(item.item) > MAX_ITEM_NAME or len(item.unit) > MAX_UNIT:
            raise InvalidObject(
                option, f"item names have at most {MAX_ITEM_NAME} characters, units {MAX_UNIT}, got {text!r}", "length"
            )
        items.append(item.to_cbor())
    return items
