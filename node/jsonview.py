"""Stable JSON renderings of swapmeet objects, for the local API and the CLI's ``--json``.

These shapes are an interface: scripts parse them. Add fields when needed,
never rename or drop one. Conventions: ids, series and other hashes are
lowercase hex; authors and parties are PeerIDs (``12D3KooW...``, see
:func:`swapmeet.protocol.identity.peer_id`); times are integer Unix seconds;
absent optional fields are ``null``, never missing. Every rendering of an object
carries ``"kind"`` so a mixed list (``GET /v1/objects/...``) can be told apart;
the ledger store's views at the end (``swapmeet ledger ... --json``, documented
field by field in docs/GUIDE.md) are not objects and have no ``"kind"`` of their own.

item::

    {"item": str, "qty": int, "unit": str}          # unit "pc" = pieces

listing::

    {"kind": "listing", "id": hex, "author": PeerID, "title": str,
     "type": "goods"|"service"|"rental"|"loan"|"task",
     "have": [item], "want": [item], "desc": str, "tags": [str], "category": str,
     "window": [start, end] | null, "due": int | null, "loc": geohash | null,
     "photos": [hex] (SHA-256 of each photo, [] when none),
     "accepts": [{"author": peer, "series": hex}] (listings taken in return, [] when none),
     "created": int, "expires": int, "series": hex, "rev": int}

    (the content fields are those of ``swapmeet.protocol.listing_spec.ListingSpec``, in its order)

    (``swapmeet listings`` rows add ``"author_forked": bool``: this node holds a
    fork proof against the author.)

withdrawal::

    {"kind": "withdrawal", "id": hex, "author": PeerID, "series": hex, "created": int}

offer::

    {"kind": "offer", "id": hex, "author": PeerID, "listing": hex (the listing's id),
     "maker": PeerID, "taker": PeerID, "give": [item], "take": [item],
     "counters": hex | null, "note": str, "created": int, "expires": int}

offer row (``GET /v1/offers``, ``swapmeet offers --json``; an offer with this node's view of it)::

    offer + {"from": PeerID (its author), "to": PeerID (who has to answer it),
             "state": "open"|"accepted"|"declined"|"countered"|"cancelled"|"expired",
             "exchange": hex | null (the exchange that settles it, once accepted),
             "answer": hex | null (the counter-offer that answered it, once countered)}

exchange (any copy, as stored; ``legs`` name parties by PeerID, ``index`` is the leg's
position, which receipts refer to)::

    {"kind": "exchange", "id": hex, "parties": [PeerID],
     "legs": [{"index": int, "from": PeerID, "to": PeerID, "items": [item]}],
     "signed_by": [PeerID], "complete": bool, "created": int, "deadline": int,
     "offer": hex | null (the offer it settles), "listings": [hex]}

trade (``GET /v1/trades``, ``swapmeet trades --json``; an exchange this node is a party to)::

    exchange + {"state": "pending"|"complete"|"lapsed",
                "detail": "awaiting"|"signed"|"complete"|"lapsed"|"cancelled",
                "appended": bool (on this node's chain), "confirmed_legs": [int] (by this node's receipts),
                "rated": [PeerID] (parties this node rated), "forked": [PeerID] (parties with a fork proof),
                "notice": hex | null (the cancel notice that ended it)}

    ``state`` is coarse and stable for scripts: awaiting and signed are "pending"; lapsed and
    cancelled are "lapsed" (it will never complete). ``detail`` is the settlement machine's state:
    "awaiting" means waiting for this node's signature, "signed" for the other parties'.

notice::

    {"kind": "notice", "id": hex, "author": PeerID, "action": "decline"|"cancel",
     "about": hex (the offer or exchange), "about_kind": "offer"|"exchange", "note": str, "created": int}

rating::

    {"kind": "rating", "id": hex, "author": PeerID, "exchange": hex, "subject": PeerID,
     "score": 1..5, "comment": str, "created": int}

receipt::

    {"kind": "receipt", "id": hex, "author": PeerID, "exchange": hex, "legs": [int], "created": int}

entry (a ledger chain link)::

    {"kind": "entry", "id": hex, "author": PeerID, "seq": int, "prev": hex, "time": int,
     "payload": exchange | rating | receipt}

match (``POST /v1/match``, ``swapmeet match --json``; the rings through this node)::

    {"kind": "match", "max_parties": int, "listings": int, "left_out": int,
     "acceptances": {"explicit": int, "implicit": int},
     "items_traded": int, "users_trading": int, "rings_in_book": int,   # the whole book's solution
     "bound": int, "optimal": bool, "gap": float, "tiebreak": str, "notes": [str], "elapsed_s": float,
     "rings": [{"coordinator": PeerID, "mine": bool, "proposed": hex | null, "refused": str | null,
                "legs": [{"from": PeerID, "to": PeerID, "listing": hex, "title": str, "items": [item]}]}]}

The local ledger store (``swapmeet ledger show|export|import|verify --json``):

chain (a chain held; ``head`` is null only for a chain not held)::

    {"author": PeerID, "public_key": hex, "length": int, "head": {"seq": int, "id": hex} | null,
     "forked": bool}

ledger (``ledger show``)::

    {"chains": [chain], "totals": {"chains": int, "entries": int, "fork_entries": int, "forked_authors": int}}

chain with entries (``ledger show AUTHOR``; written as a stream, see :func:`chain`)::

    chain + {"entries": [chain entry], "forks": [chain entry]}

chain entry (one line of ``ledger show AUTHOR``; ``kind`` is the payload's, ``summary`` the human line)::

    {"seq": int, "id": hex, "prev": hex, "time": int, "kind": "exchange"|"rating"|"receipt",
     "payload_id": hex, "summary": str}

export (``ledger export``)::

    {"file": str, "entries": int, "author": PeerID | null}

import (``ledger import``)::

    {"file": str, "entries": int, "accepted": int, "duplicates": int,
     "forks": [{"author": PeerID, "seq": int}], "refused": int,
     "refusals": [{"index": int, "author": PeerID | null, "seq": int | null, "code": str, "reason": str}]}

verify (``ledger verify``; a home without a ledger verifies as ok with zeros)::

    {"ok": bool, "chains": int, "entries": int, "fork_entries": int, "forked_authors": int,
     "problem_count": int, "problems": [str]}
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from swapmeet.protocol.identity import peer_id
from swapmeet.protocol.listing_spec import CONTENT_FIELDS
from swapmeet.protocol.objects import (
    Exchange,
    Item,
    LedgerEntry,
    Listing,
    Notice,
    Offer,
    Rating,
    Receipt,
    SignedObject,
    Withdrawal,
)

if TYPE_CHECKING:
    from swapmeet.ledger.store import IngestResult, LedgerCounts, Refusal, VerifyReport
    from swapmeet.protocol.settlement import OfferView

    from .contract import Trade
    from .matching import MatchResult

# ExchangeState -> the coarse state scripts rely on
TRADE_STATES: dict[str, str] = {
    "awaiting": "pending",
    "signed": "pending",
    "complete": "complete",
    "lapsed": "lapsed",
    "cancelled": "lapsed",
}


def items(values: Iterable[Item]) -> list[dict[str, Any]]:
    return [{"item": i.item, "qty": i.qty, "unit": i.unit} for i in values]


def listing(x: Listing) -> dict[str, Any]:
    """A signed listing: its envelope, then its content in :data:`CONTENT_FIELDS` order, then times and series."""
    out: dict[str, Any] = {"kind": "listing", "id": x.id.hex(), "author": peer_id(x.author)}
    for name in CONTENT_FIELDS:
        out[name] = _value(getattr(x, name))
    out.update(created=x.created, expires=x.expires, series=x.series.hex(), rev=x.rev)
    return out


def _value(value: Any) -> Any:
    """A listing field as JSON: items as item objects, hashes as hex, tuples as lists, the rest as it is."""
    if isinstance(value, tuple):
        return [_element(v) for v in value]
    return value


def _element(v: Any) -> Any:
    if isinstance(v, Item):
        return {"item": v.item, "qty": v.qty, "unit": v.unit}
    if isinstance(v, tuple):  # a listing reference (accepts): (author, series)
        return {"author": peer_id(v[0]), "series": v[1].hex()}
    return v.hex() if isinstance(v, bytes) else v


def withdrawal(x: Withdrawal) -> dict[str, Any]:
    return {
        "kind": "withdrawal",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "series": x.series.hex(),
        "created": x.created,
    }


def offer(x: Offer) -> dict[str, Any]:
    return {
        "kind": "offer",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "listing": x.listing.id.hex(),
        "maker": peer_id(x.maker),
        "taker": peer_id(x.taker),
        "give": items(x.give),
        "take": items(x.take),
        "counters": x.counters.hex() if x.counters is not None else None,
        "note": x.note,
        "created": x.created,
        "expires": x.expires,
    }


def offer_row(view: OfferView) -> dict[str, Any]:
    """An offer with this node's view of it (state, settling exchange, answering counter-offer)."""
    x = view.offer
    return {
        **offer(x),
        "from": peer_id(x.author),
        "to": peer_id(x.recipient),
        "state": str(view.state),
        "exchange": view.exchange_id.hex() if view.exchange_id is not None else None,
        "answer": view.answer_id.hex() if view.answer_id is not None else None,
    }


def exchange(x: Exchange) -> dict[str, Any]:
    parties = [peer_id(p) for p in x.parties]
    return {
        "kind": "exchange",
        "id": x.id.hex(),
        "parties": parties,
        "legs": [
            {"index": i, "from": parties[leg.giver], "to": parties[leg.receiver], "items": items(leg.items)}
            for i, leg in enumerate(x.legs)
        ],
        "signed_by": [peer_id(p) for p in x.signed_by],
        "complete": x.complete,
        "created": x.created,
        "deadline": x.deadline,
        "offer": x.offer.id.hex() if x.offer is not None else None,
        "listings": [listing.id.hex() for listing in x.listings],
    }


def match(r: MatchResult) -> dict[str, Any]:
    """The rings through this node that a match found (:class:`swapmeet.node.matching.MatchResult`)."""
    s = r.solution
    return {
        "kind": "match",
        "max_parties": r.max_parties,
        "listings": r.listings,
        "left_out": r.left_out,
        "acceptances": {"explicit": r.explicit, "implicit": r.implicit},
        "items_traded": s.items_traded,
        "users_trading": s.users_trading,
        "rings_in_book": len(s.rings),
        "bound": s.bound,
        "optimal": s.optimal,
        "gap": round(s.gap, 6),
        "tiebreak": s.tiebreak,
        "notes": list(r.notes),
        "elapsed_s": round(r.elapsed_s, 4),
        "rings": [
            {
                "coordinator": peer_id(ring.coordinator),
                "mine": ring.coordinator == r.me,
                "proposed": ring.proposed.hex() if ring.proposed is not None else None,
                "refused": ring.refused,
                "legs": [
                    {
                        "from": peer_id(leg.giver),
                        "to": peer_id(leg.receiver),
                        "listing": leg.listing.id.hex(),
                        "title": leg.listing.title,
                        "items": items(leg.listing.have),
                    }
                    for leg in ring.legs
                ],
            }
            for ring in r.rings
        ],
    }


def trade(t: Trade, forked: Collection[bytes] = ()) -> dict[str, Any]:
    """An exchange this node is a party to; ``forked``: authors this node holds a fork proof against."""
    view = t.view
    x = view.exchange
    detail = str(view.state)
    return {
        **exchange(x),
        "state": TRADE_STATES.get(detail, detail),
        "detail": detail,
        "appended": view.appended,
        "confirmed_legs": sorted(t.confirmed_legs),
        "rated": [peer_id(p) for p in t.rated],
        "forked": [peer_id(p) for p in x.parties if p in forked],
        "notice": view.notice.id.hex() if view.notice is not None else None,
    }


def notice(x: Notice) -> dict[str, Any]:
    return {
        "kind": "notice",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "action": x.action,
        "about": x.target_id.hex(),
        "about_kind": "offer" if x.offer is not None else "exchange",
        "note": x.note,
        "created": x.created,
    }


def rating(x: Rating) -> dict[str, Any]:
    return {
        "kind": "rating",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "exchange": x.exchange.id.hex(),
        "subject": peer_id(x.subject),
        "score": x.score,
        "comment": x.comment,
        "created": x.created,
    }


def receipt(x: Receipt) -> dict[str, Any]:
    return {
        "kind": "receipt",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "exchange": x.exchange_id.hex(),
        "legs": list(x.legs),
        "created": x.created,
    }


def entry(x: LedgerEntry) -> dict[str, Any]:
    return {
        "kind": "entry",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "seq": x.seq,
        "prev": x.prev.hex(),
        "time": x.time,
        "payload": render(x.payload),
    }


def render(obj: SignedObject) -> dict[str, Any]:
    """The JSON rendering of any object, by kind."""
    if isinstance(obj, Listing):
        return listing(obj)
    if isinstance(obj, Withdrawal):
        return withdrawal(obj)
    if isinstance(obj, Offer):
        return offer(obj)
    if isinstance(obj, Exchange):
        return exchange(obj)
    if isinstance(obj, Notice):
        return notice(obj)
    if isinstance(obj, Rating):
        return rating(obj)
    if isinstance(obj, Receipt):
        return receipt(obj)
    if isinstance(obj, LedgerEntry):
        return entry(obj)
    raise TypeError(f"no JSON rendering for {type(obj).__name__}")


# --- the local ledger store (``swapmeet ledger ... --json``) ---


def chain(author: bytes, head: tuple[int, bytes] | None, forked: bool) -> dict[str, Any]:
    """A chain held: its author, its head ``(seq, id)`` (None: no chain held) and whether it forked."""
    return {
        "author": peer_id(author),
        "public_key": author.hex(),
        "length": head[0] if head else 0,
        "head": {"seq": head[0], "id": head[1].hex()} if head else None,
        "forked": forked,
    }


def ledger_totals(counts: LedgerCounts | None) -> dict[str, int]:
    """What the store holds (``counts``: None for a home without a ledger)."""
    return {
        "chains": counts.chains if counts else 0,
        "entries": counts.entries if counts else 0,
        "fork_entries": counts.forks if counts else 0,
        "forked_authors": counts.forked_authors if counts else 0,
    }


def ledger(
    heads: Iterable[tuple[bytes, tuple[int, bytes]]], forked: Collection[bytes], counts: LedgerCounts | None
) -> dict[str, Any]:
    """Every chain held (``heads``: ``(author, (seq, id))`` in the order to list them) and the totals."""
    return {"chains": [chain(a, head, a in forked) for a, head in heads], "totals": ledger_totals(counts)}


def chain_entry(x: LedgerEntry, summary: str) -> dict[str, Any]:
    """An entry as a line of its chain: ``kind`` is the payload's; ``summary`` is the line a person reads."""
    return {
        "seq": x.seq,
        "id": x.id.hex(),
        "prev": x.prev.hex(),
        "time": x.time,
        "kind": x.payload.kind,
        "payload_id": x.payload.id.hex(),
        "summary": summary,
    }


def identity_created(peer: str, public_key: bytes, key_file: str, encrypted: bool) -> dict[str, Any]:
    """``swapmeet init --json``: the new identity and where its key is."""
    return {"peer_id": peer, "public_key": public_key.hex(), "key_file": key_file, "encrypted": encrypted}


def identity(peer: str, public_key: bytes, addrs: list[str]) -> dict[str, Any]:
    """``swapmeet id --json``: the identity and the running node's addresses ([] when none runs)."""
    return {"peer_id": peer, "public_key": public_key.hex(), "addrs": addrs}


def node_stop(stopped: bool, pid: int) -> dict[str, Any]:
    """``swapmeet node stop --json``: whether the node had exited when the command returned."""
    return {"stopping": True, "stopped": stopped, "pid": pid}


def export_result(file: str, entries: int, author: bytes | None) -> dict[str, Any]:
    """A ledger export written to ``file``: ``entries`` written, of ``author``'s chain or (None) all."""
    return {"file": file, "entries": entries, "author": peer_id(author) if author else None}


def refusal(r: Refusal) -> dict[str, Any]:
    return {
        "index": r.index,
        "author": peer_id(r.author) if r.author else None,
        "seq": r.seq,
        "code": r.code,
        "reason": r.reason,
    }


def import_result(file: str, entries: int, result: IngestResult) -> dict[str, Any]:
    """The import of ``file`` (``entries`` in it) into the store."""
    return {
        "file": file,
        "entries": entries,
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "forks": [{"author": peer_id(a), "seq": s} for a, s in result.forks],
        "refused": result.refused,
        "refusals": [refusal(r) for r in result.refusals],
    }


def verify_report(report: VerifyReport | None) -> dict[str, Any]:
    """The store's verification (``report``: None for a home without a ledger, which verifies as ok)."""
    return {
        "ok": report.ok if report else True,
        "chains": report.chains if report else 0,
        "entries": report.entries if report else 0,
        "fork_entries": report.forks if report else 0,
        "forked_authors": report.forked_authors if report else 0,
        "problem_count": report.problem_count if report else 0,
        "problems": report.problems if report else [],
    }
