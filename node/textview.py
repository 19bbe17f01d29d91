"""Short text for people, from the node's JSON values: the CLI's tables and the web UI read alike.

Ids are shown by their first :data:`SHORT_ID` hex digits (which every command and
page accepts back), peers by the tail of their PeerID, items as ``"8 kg x apples"``,
times relative to now.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

SHORT_ID = 12


def short(hex_id: str | None) -> str:
    return (hex_id or "")[:SHORT_ID]


def short_peer(peer_id: str) -> str:
    # every Ed25519 PeerID starts with 12D3KooW: the tail is what tells them apart
    return f"{peer_id[:4]}..{peer_id[-6:]}" if len(peer_id) > 12 else peer_id


def items_text(items: Iterable[Mapping[str, Any]]) -> str:
    """``[{"item": "apples", "qty": 8, "unit": "kg"}]`` -> ``"8 kg x apples"`` (``pc`` is left out)."""
    return ", ".join(
        f"{i['qty']} x {i['item']}" if i.get("unit", "pc") == "pc" else f"{i['qty']} {i['unit']} x {i['item']}"
        for i in items
    )


def relative(ts: int | float, now: float | None = None) -> str:
    """``"in 6d"``, ``"in 3h"``, ``"2m ago"``: the largest unit that fits, rounded to the nearest.

    Nearest, not down: a listing published for 7 days should read "in 7d", not "in 6d", a second later.
    """
    delta = int(ts - (time.time() if now is None else now))
    span = abs(delta)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if span >= size:
            text = f"{(span + size // 2) // size}{unit}"
            break
    else:
        text = f"{span}s"
    return f"in {text}" if delta >= 0 else f"{text} ago"
