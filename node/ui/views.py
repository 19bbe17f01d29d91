"""How the web UI shows objects: short ids, short peers, item lines, relative times, plain dicts for templates.

Objects come from the contract (:mod:`swapmeet.node.contract`) and are first
rendered with :mod:`swapmeet.node.jsonview` (the stable shapes scripts read);
these helpers add what a person reads: the 12-digit short id, the short peer,
"in 3h", "2 x bike, 3 kg x apples".
"""

from __future__ import annotations

import datetime
from typing import Any

from swapmeet.protocol.identity import peer_id
from swapmeet.protocol.objects import LedgerEntry, Listing

from .. import jsonview
from ..contract import Trade
from ..ledgerview import Reputation
from ..textview import items_text, relative, short, short_peer


def utc(ts: int) -> str:
    try:
        return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def listing_row(x: Listing, me: bytes, forked: set[bytes], rep: Reputation | None) -> dict[str, Any]:
    """A listing for the market table and the listing page."""
    row = jsonview.listing(x)
    row.update(
        short=short(row["id"]),
        mine=x.author == me,
        author_short=short_peer(row["author"]),
        author_forked=x.author in forked,
        have_text=items_text(row["have"]),
        want_text=items_text(row["want"]),
        expires_in=relative(x.expires),
        trades=rep.trades if rep else None,
        ratings=rep.ratings if rep else 0,
        score=f"{rep.score:.1f}" if rep and rep.score is not None else None,
    )
    return row


def offer_row(rendered: dict[str, Any], me: str) -> dict[str, Any]:
    """An offer row (jsonview.offer_row) with what a person reads."""
    return {
        **rendered,
        "short": short(rendered["id"]),
        "incoming": rendered["to"] == me,
        "from_short": short_peer(rendered["from"]),
        "to_short": short_peer(rendered["to"]),
        "give_text": items_text(rendered["give"]),
        "take_text": items_text(rendered["take"]),
        "expires_in": relative(rendered["expires"]),
    }


def trade_row(t: Trade, forked: set[bytes], me: str) -> dict[str, Any]:
    """A trade (jsonview.trade) with its legs, who signed, and its deadline as people read them."""
    row = jsonview.trade(t, forked)
    signed = set(row["signed_by"])
    row.update(
        short=short(row["id"]),
        parties_view=[
            {
                "peer": p,
                "short": "me" if p == me else short_peer(p),
                "signed": p in signed,
                "forked": p in row["forked"],
            }
            for p in row["parties"]
        ],
        legs_view=[
            {
                **leg,
                "from_short": "me" if leg["from"] == me else short_peer(leg["from"]),
                "to_short": "me" if leg["to"] == me else short_peer(leg["to"]),
                "text": items_text(leg["items"]),
                "to_me": leg["to"] == me,
            }
            for leg in row["legs"]
        ],
        deadline_in=relative(row["deadline"]),
        deadline_utc=utc(row["deadline"]),
        others=[p for p in row["parties"] if p != me],
    )
    return row


def entry_row(x: LedgerEntry) -> dict[str, Any]:
    """A ledger entry with its payload: the exchange it records (or that the rating/receipt is about)."""
    row = jsonview.entry(x)
    payload = row["payload"]
    exchange = payload if payload["kind"] == "exchange" else None
    row.update(short=short(row["id"]), utc=utc(x.time), exchange=exchange)
    if exchange is not None:
        for leg in exchange["legs"]:
            leg["text"] = items_text(leg["items"])
            leg["from_short"] = short_peer(leg["from"])
            leg["to_short"] = short_peer(leg["to"])
    return row


def match_view(rendered: dict[str, Any]) -> dict[str, Any]:
    """A match's JSON view (:func:`swapmeet.node.jsonview.match`) with each leg's items as text."""
    for ring in rendered["rings"]:
        for leg in ring["legs"]:
            leg["text"] = items_text(leg["items"])
    return rendered


CHART_W, CHART_H = 600, 120
CHART_SERIES = (("gossip_in", "gossip received"), ("gossip_out", "gossip sent"), ("sync_objects", "synced objects"))


def activity_chart(rows: list[dict[str, int]]) -> dict[str, Any]:
    """The last hour (60 rows, one a minute) as bar geometry for an inline SVG: one group of bars per minute."""
    peak = max([1, *(r[name] for r in rows for name, _ in CHART_SERIES)])
    slot = CHART_W / max(1, len(rows))
    width = slot / (len(CHART_SERIES) + 1)
    bars = []
    for i, row in enumerate(rows):
        for j, (name, label) in enumerate(CHART_SERIES):
            height = round(CHART_H * row[name] / peak, 1)
            if height:
                x = round(i * slot + j * width, 1)
                bars.append(
                    {
                        "x": x,
                        "y": round(CHART_H - height, 1),
                        "w": round(width, 1),
                        "h": height,
                        "series": j,
                        "title": f"{label}: {row[name]} at {utc(row['minute'])}",
                    }
                )
    totals = {label: sum(r[name] for r in rows) for name, label in CHART_SERIES}
    return {
        "w": CHART_W,
        "h": CHART_H,
        "bars": bars,
        "peak": peak,
        "totals": totals,
        "series": [label for _, label in CHART_SERIES],
    }


def pid(key: bytes) -> str:
    return peer_id(key)
