"""Building and signing swapmeet objects.

Every builder encodes a body, signs it, and then passes the bytes through
:func:`swapmeet.protocol.boundary.decode`, so what you build is exactly what a
peer will accept (or you get the same :class:`InvalidObject` the peer would
raise, with its field path). Times are passed in explicitly: protocol code
never reads the clock.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from . import boundary, cbor
from .errors import InvalidObject
from .identity import Identity
from .listing_spec import ListingSpec
from .objects import (
    DOMAIN,
    KIND_ENTRY,
    KIND_EXCHANGE,
    KIND_LISTING,
    KIND_NOTICE,
    KIND_OFFER,
    KIND_RATING,
    KIND_RECEIPT,
    KIND_WITHDRAWAL,
    Exchange,
    Item,
    LedgerEntry,
    Leg,
    Listing,
    Notice,
    Offer,
    Payload,
    Rating,
    Receipt,
    Withdrawal,
)

_ITEM_TEXT = re.compile(r"\s*([0-9]+)\s*(?:([^\W\d_]\S*)\s+)?[xX×]\s+(\S.*?)\s*")


def parse_item(text: str, path: str = "item") -> Item:
    """Parse ``"QTY x ITEM"`` or ``"QTY UNIT x ITEM"`` (``"3 x chairs"``, ``"2 kg x apples"``).

    The unit defaults to ``pc`` (pieces). Raises :class:`InvalidObject` with an
    example of the expected form.
    """
    match = _ITEM_TEXT.fullmatch(text)
    if not match:
        raise InvalidObject(
            path, f"expected 'QTY x ITEM' or 'QTY UNIT x ITEM' (e.g. '2 kg x apples'), got {text!r}", "format"
        )
    qty, unit, item = match.groups()
    return Item(item=item, qty=int(qty), unit=unit or "pc")


def sign(identity: Identity, kind: str, body: dict[str, object]) -> bytes:
    """The wire bytes of a single-author object: ``[domain, kind, author, body, signature]``."""
    message = cbor.encode([DOMAIN, kind, identity.public_key, body])
    signature = identity.sign(message)
    # The envelope is the signed array plus one element: same items, array head 0x84 -> 0x85.
    return b"\x85" + message[1:] + cbor.encode(signature)


def _items(items: Iterable[Item]) -> list[dict[str, object]]:
    return [i.to_cbor() for i in items]


def make_listing(
    identity: Identity,
    *,
    created: int,
    expires: int,
    series: bytes | None = None,
    rev: int = 0,
    **content: Any,
) -> Listing:
    """A new listing, or (same ``series``, higher ``rev``) a new version of one.

    ``content``: the fields of :class:`~swapmeet.protocol.listing_spec.ListingSpec` (``title``, ``have``,
    ``want``...). Raises :class:`InvalidObject` naming the bad field, and TypeError for a name that is
    not a listing field.
    """
    return sign_listing(identity, ListingSpec(**content), created=created, expires=expires, series=series, rev=rev)


def sign_listing(
    identity: Identity,
    spec: ListingSpec,
    *,
    created: int,
    expires: int | None = None,
    series: bytes | None = None,
    rev: int = 0,
) -> Listing:
    """Sign ``spec`` as a listing created at ``created``; ``expires`` defaults to ``spec.expiry(created)``.

    Raises :class:`InvalidObject` with the path of the field the boundary refuses.
    """
    body: dict[str, object] = {
        **spec.content(),
        "rev": rev,
        "series": series if series is not None else os.urandom(boundary.SERIES_SIZE),
        "created": created,
        "expires": expires if expires is not None else spec.expiry(created),
    }
    return boundary.decode(sign(identity, KIND_LISTING, body), kind=KIND_LISTING)


def make_withdrawal(identity: Identity, listing: Listing, *, created: int) -> Withdrawal:
    if listing.author != identity.public_key:
        raise InvalidObject("withdrawal", "only the listing's author can withdraw it", "party")
    body = {"series": listing.series, "created": created}
    return boundary.decode(sign(identity, KIND_WITHDRAWAL, body), kind=KIND_WITHDRAWAL)


def make_offer(
    identity: Identity,
    listing: Listing,
    *,
    take: Sequence[Item],
    give: Sequence[Item],
    created: int,
    expires: int,
    taker: bytes | None = None,
    counters: Offer | None = None,
    note: str = "",
) -> Offer:
    """An offer by a taker, or (``counters`` given) a counter-offer by either side.

    ``give``/``take`` are always from the taker's side. A counter names the
    offer it answers and keeps that offer's taker.
    """
    if counters is not None:
        taker = counters.taker
    elif taker is None:
        taker = identity.public_key
    body: dict[str, object] = {
        "give": _items(give),
        "take": _items(take),
        "taker": taker,
        "created": created,
        "expires": expires,
        "listing": listing.raw,
    }
    if counters is not None:
        body["counters"] = counters.id
    if note:
        body["note"] = note
    return boundary.decode(sign(identity, KIND_OFFER, body), kind=KIND_OFFER)


def propose_exchange(
    *,
    parties: Sequence[bytes],
    legs: Sequence[Leg],
    created: int,
    deadline: int,
    listings: Sequence[Listing] = (),
    offer: Offer | None = None,
    nonce: bytes | None = None,
) -> Exchange:
    """An exchange with no signatures yet; each party then calls :func:`sign_exchange`."""
    body: dict[str, object] = {
        "legs": [leg.to_cbor() for leg in legs],
        "nonce": nonce if nonce is not None else os.urandom(boundary.NONCE_SIZE),
        "parties": list(parties),
        "created": created,
        "deadline": deadline,
        "listings": [x.raw for x in listings],
    }
    if offer is not None:
        body["offer"] = offer.raw
    return _encode_exchange(body, [None] * len(parties))


def exchange_for_offer(offer: Offer, *, created: int, deadline: int, nonce: bytes | None = None) -> Exchange:
    """The two-party exchange that settles ``offer`` exactly (maker first, then taker)."""
    legs = [Leg(0, 1, offer.take)]
    if offer.give:
        legs.append(Leg(1, 0, offer.give))
    return propose_exchange(
        parties=[offer.maker, offer.taker],
        legs=legs,
        listings=[offer.listing],
        offer=offer,
        created=created,
        deadline=deadline,
        nonce=nonce,
    )


def _body_of(exchange: Exchange) -> object:
    return cbor.decode(exchange.raw, max_size=boundary.MAX_SIZE[KIND_EXCHANGE])[2]


def _encode_exchange(body: object, signatures: list[bytes | None]) -> Exchange:
    data = cbor.encode([DOMAIN, KIND_EXCHANGE, body, signatures])
    return boundary.decode(data, kind=KIND_EXCHANGE)


def sign_exchange(exchange: Exchange, identity: Identity) -> Exchange:
    """``exchange`` with ``identity``'s signature added in its slot."""
    if identity.public_key not in exchange.parties:
        raise InvalidObject("exchange.parties", "the signer is not a party to this exchange", "non-party")
    index = exchange.index_of(identity.public_key)
    message = boundary.signing_bytes_of_exchange(exchange.raw, exchange.signatures)
    signatures = list(exchange.signatures)
    signatures[index] = identity.sign(message)
    return _encode_exchange(_body_of(exchange), signatures)


def merge_signatures(exchange: Exchange, other: Exchange) -> Exchange:
    """The union of the signatures two copies of the same exchange carry."""
    if other.id != exchange.id:
        raise InvalidObject("exchange", "cannot merge signatures of two different exchanges", "mismatch")
    merged = [a if a is not None else b for a, b in zip(exchange.signatures, other.signatures, strict=True)]
    if merged == list(exchange.signatures):
        return exchange
    return _encode_exchange(_body_of(exchange), merged)


def make_entry(identity: Identity, *, seq: int, prev: bytes, time: int, payload: Payload) -> LedgerEntry:
    body = {"seq": seq, "prev": prev, "time": time, "payload": payload.raw}
    return boundary.decode(sign(identity, KIND_ENTRY, body), kind=KIND_ENTRY)


def make_rating(
    identity: Identity, exchange: Exchange, *, subject: bytes, score: int, created: int, comment: str = ""
) -> Rating:
    body = {"score": score, "comment": comment, "created": created, "subject": subject, "exchange": exchange.raw}
    return boundary.decode(sign(identity, KIND_RATING, body), kind=KIND_RATING)


def make_receipt(identity: Identity, exchange: Exchange, *, legs: Sequence[int], created: int) -> Receipt:
    body = {"legs": sorted(set(legs)), "created": created, "exchange": exchange.id}
    return boundary.decode(sign(identity, KIND_RECEIPT, body), kind=KIND_RECEIPT)


def make_notice(identity: Identity, target: Offer | Exchange, *, action: str, created: int, note: str = "") -> Notice:
    """A signed ``decline`` or ``cancel`` of an offer, or ``cancel`` of an exchange (see :class:`Notice`)."""
    body: dict[str, object] = {"action": action, "created": created}
    body["exchange" if isinstance(target, Exchange) else "offer"] = target.raw
    if note:
        body["note"] = note
    return boundary.decode(sign(identity, KIND_NOTICE, body), kind=KIND_NOTICE)
