"""The local API's endpoints, one function each: HTTP requests in, contract calls, JSON out.

All JSON, all require ``Authorization: Bearer <token>`` (:mod:`.guard`); ``ID``
is a full 64-hex object id or an unambiguous prefix of at least
:data:`~swapmeet.node.contract.MIN_PREFIX` hex digits:

====================================  ==========================================================
``GET  /v1/status``                   the node: peer id, net, addrs, peers, book size, uptime
``GET  /v1/peers``                    connected peers ``[{"peer_id", "addrs"}]``
``GET  /v1/activity``                 gossip and sync per minute over the last hour (60 rows, oldest first)
``GET  /v1/listings``                 live listings; query ``q type category author wants tag loc limit``
``POST /v1/listings``                 publish (body: the fields of ``ListingSpec``; 201 + listing)
``POST /v1/listings/import``          publish several at once, all or none (``{"listings": [ListingSpec]}``, 1 to
                                      ``MAX_IMPORT``; 201 + the listings, in order)
``POST /v1/listings/{ID}/withdraw``   withdraw one of our listings (200 + withdrawal)
``GET  /v1/objects/{ID}``             any object the node holds (``?raw=true`` adds its hex bytes)
``POST /v1/objects``                  relay listings, withdrawals and offers other authors signed, all or none
                                      (``{"objects": [hex]}``, 1 to ``MAX_IMPORT``; 200 + ``[{"kind", "id",
                                      "author", "new"}]``; 429 ``busy`` when an author's objects wait for its pace)
``GET  /v1/resolve/{PREFIX}``         ``{"id": "<64 hex>"}``
``POST /v1/offers``                   make an offer on a listing in the book (body: ``{"listing": ID, "give":
                                      [item], "take": [item] | null, "expires_in_s", "note"}``; 201 + offer row)
``GET  /v1/offers``                   offers this node wrote or received; query ``direction=incoming|outgoing``
``POST /v1/offers/{ID}/accept``       accept an open offer to us (``{"deadline_in_s"}``, optional): the trade
``POST /v1/offers/{ID}/decline``      decline an open offer to us (``{"note"}``, optional): the notice
``POST /v1/offers/{ID}/counter``      answer it with other terms (``{"give", "take", "expires_in_s", "note"}``,
                                      from the taker's side as in the offer; 201 + offer row)
``POST /v1/offers/{ID}/cancel``       withdraw an open offer we wrote (``{"note"}``, optional): the notice
``POST /v1/trades``                   propose an N-party exchange (``{"parties": [peer] | null, "legs": [{"from":
                                      peer, "to": peer, "items": [item]}], "listings": [ID], "deadline_in_s"}``;
                                      parties default to their order of first appearance in the legs; 201 + trade)
``POST /v1/match``                    barter rings through us in the book (``{"max_parties": 0..8, "budget_s",
                                      "propose": bool}``); with ``propose``, proposes the rings we coordinate
``GET  /v1/trades``                   exchanges we are a party to, newest first; query ``state`` (coarse or fine)
``GET  /v1/trades/{ID}``              one of them
``POST /v1/trades/{ID}/sign``         consent to (sign) an exchange that waits for us: the trade
``POST /v1/trades/{ID}/cancel``       leave an exchange we have not signed (``{"note"}``, optional): the notice
``POST /v1/trades/{ID}/confirm``      confirm receipt (``{"legs": [int] | null}``; default: every leg to us): receipt
``POST /v1/trades/{ID}/rate``         rate a counterparty (``{"score": 1..5, "subject": peer | null, "comment"}``)
``GET  /v1/forked``                   authors we hold a fork proof against ``[PeerID]``
``POST /v1/photos``                   an image's bytes (any content type, up to 16 MiB): re-encoded and kept;
                                      201 ``{"hash", "bytes"}`` (the hash goes in a listing's ``photos``)
``POST /v1/ui/token``                 a one-time login address for the web UI ``{"url", "expires_in_s"}``
``POST /v1/stop``                     202 ``{"stopping": true}``; the node shuts down after answering
``GET  /openapi.json``                the OpenAPI schema (no docs UI: it would load assets from a CDN)
====================================  ==========================================================

A peer is a PeerID (``12D3KooW...``) or a 64-hex public key; an item is ``"QTY [UNIT] x ITEM"`` or
``{"item", "qty", "unit"}``. Response shapes (offer row, trade, notice, receipt, rating) are documented in
:mod:`swapmeet.node.jsonview`. Listings from ``GET /v1/listings`` also carry ``"author_forked": bool``.
Settlement refusals (the offer is not open, the exchange is already signed...) are 409 ``conflict``.

There is deliberately no ``from __future__ import annotations``: FastAPI reads these annotations at run time.
"""

import inspect
from dataclasses import fields
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from swapmeet.protocol.build import parse_item
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import peer_id
from swapmeet.protocol.listing_spec import HASH_FIELDS, ITEM_FIELDS, REF_FIELDS, ListingSpec
from swapmeet.protocol.objects import LISTING_TYPES, Item, Leg, Offer
from swapmeet.protocol.settlement import OfferState, OfferView

from .. import jsonview
from ..contract import DEFAULT_LIMIT, MAX_LIMIT, MarketAPI, Trade, TradingAPI, UnknownObject, parse_author, parse_id
from .models import (
    AcceptIn,
    ActivityMinuteOut,
    ConfirmIn,
    CounterIn,
    IdOut,
    ItemIn,
    ListingIn,
    ListingOut,
    ListingRowOut,
    ListingsIn,
    MatchIn,
    MatchOut,
    NoteIn,
    NoticeOut,
    ObjectsIn,
    OfferIn,
    OfferRowOut,
    PeerOut,
    PhotoOut,
    ProposeIn,
    RateIn,
    RatingOut,
    ReceiptOut,
    RelayedOut,
    StatusOut,
    StoppingOut,
    TradeOut,
    UiTokenOut,
    WithdrawalOut,
)

# GET /v1/trades?state=: the coarse states of jsonview.trade, then the settlement machine's own
TRADE_FILTERS = ("pending", "complete", "lapsed", "awaiting", "signed", "cancelled")

router = APIRouter()


# async: FastAPI runs a plain-function dependency in a worker thread, which costs ~0.3 ms per request.
async def _market(request: Request) -> MarketAPI:
    return request.app.state.market  # type: ignore[no-any-return]


async def _trading(request: Request) -> TradingAPI:
    return request.app.state.trading  # type: ignore[no-any-return]


Market = Annotated[MarketAPI, Depends(_market)]
Trading = Annotated[TradingAPI, Depends(_trading)]


# --- helpers shared by the routes ---


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def full_id(market: MarketAPI, text: str, what: str = "id") -> bytes:
    """The full id for a full id or an unambiguous prefix (raises as parse_id and resolve do)."""
    parsed = parse_id(text, what)
    return parsed if isinstance(parsed, bytes) else await market.resolve(parsed)


def items(values: list[str | ItemIn], path: str) -> list[Item]:
    return [
        parse_item(v, f"{path}[{i}]") if isinstance(v, str) else Item(item=v.item, qty=v.qty, unit=v.unit)
        for i, v in enumerate(values)
    ]


def listing_spec(body: Any) -> ListingSpec:
    """A ListingIn request as the one listing shape (item texts parsed, lists as tuples)."""
    values: dict[str, Any] = {}
    for f in fields(ListingSpec):
        value = getattr(body, f.name)
        if f.name in ITEM_FIELDS:
            value = tuple(items(value, f.name))
        elif f.name in REF_FIELDS:
            value = tuple(
                (parse_author(r.author, f"{f.name}[{i}].author"), bytes.fromhex(r.series)) for i, r in enumerate(value)
            )
        elif f.name in HASH_FIELDS:
            value = tuple(bytes.fromhex(v) for v in value)  # 64 hex: checked by the model
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return ListingSpec(**values)


def open_offer(x: Offer) -> dict[str, Any]:
    # a freshly made offer (or counter-offer) is open: the machine just recorded it so
    return jsonview.offer_row(OfferView(x, OfferState.OPEN, None, None))


async def trade_out(market: MarketAPI, t: Trade) -> dict[str, Any]:
    return jsonview.trade(t, set(await market.forked()))


def legs_and_parties(body: ProposeIn) -> tuple[list[bytes], list[Leg]]:
    ends = [
        (parse_author(leg.from_, f"legs[{i}].from"), parse_author(leg.to, f"legs[{i}].to"))
        for i, leg in enumerate(body.legs)
    ]
    if body.parties is not None:
        parties = [parse_author(p, f"parties[{i}]") for i, p in enumerate(body.parties)]
    else:
        parties = list(dict.fromkeys(key for pair in ends for key in pair))
    index = {key: i for i, key in enumerate(parties)}
    legs = []
    for i, ((giver, receiver), leg) in enumerate(zip(ends, body.legs, strict=True)):
        for end, key in (("from", giver), ("to", receiver)):
            if key not in index:
                raise InvalidObject(f"legs[{i}].{end}", "is not one of the parties", "non-party")
        legs.append(Leg(index[giver], index[receiver], tuple(items(leg.items, f"legs[{i}].items"))))
    return parties, legs


# --- the node and the book ---


@router.get("/v1/status", response_model=StatusOut)
async def status(market: Market) -> dict[str, Any]:
    """The node: peer id, network, listen addrs, peer count, book size, uptime, version."""
    return await _maybe_await(market.status())  # type: ignore[no-any-return]


@router.get("/v1/activity", response_model=list[ActivityMinuteOut])
async def activity(market: Market) -> list[dict[str, int]]:
    """Gossip and sync per minute over the last hour, oldest first."""
    return market.activity()


@router.get("/v1/peers", response_model=list[PeerOut])
async def peers(market: Market) -> list[dict[str, Any]]:
    """Connected peers."""
    return await _maybe_await(market.peers())  # type: ignore[no-any-return]


@router.get("/v1/listings", response_model=list[ListingRowOut])
async def listings(
    market: Market,
    q: Annotated[str | None, Query(description="full-text search over title, description, tags")] = None,
    type: Annotated[str | None, Query(description=f"one of {', '.join(LISTING_TYPES)}")] = None,
    category: str | None = None,
    author: Annotated[str | None, Query(description="PeerID or 64-hex public key")] = None,
    wants: Annotated[str | None, Query(description="listings that want this item")] = None,
    tag: Annotated[str | None, Query(description="listings with this tag")] = None,
    loc: Annotated[str | None, Query(description="listings whose geohash starts with this")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """Live listings, filtered."""
    if type is not None and type not in LISTING_TYPES:
        raise InvalidObject("type", f"must be one of {', '.join(LISTING_TYPES)}, got {type!r}", "format")
    found = await market.listings(
        q or None,
        type=type,
        category=category or None,
        author=parse_author(author) if author else None,
        wants=wants or None,
        tag=tag or None,
        loc=loc or None,
        limit=limit,
    )
    forked = set(await market.forked()) if found else set()
    return [{**jsonview.listing(x), "author_forked": x.author in forked} for x in found]


@router.post("/v1/listings", response_model=ListingOut, status_code=201)
async def publish(market: Market, body: ListingIn) -> dict[str, Any]:  # type: ignore[valid-type]
    """Sign, store and announce a new listing."""
    return jsonview.listing(await market.publish(listing_spec(body)))


@router.post("/v1/listings/import", response_model=list[ListingOut], status_code=201)
async def publish_many(market: Market, body: ListingsIn) -> list[dict[str, Any]]:
    """Sign, store and announce several new listings at once (all or none)."""
    specs = []
    for i, listing in enumerate(body.listings):
        try:
            specs.append(listing_spec(listing))
        except InvalidObject as err:
            raise err.under(f"listings[{i}]") from None
    return [jsonview.listing(x) for x in await market.publish_many(specs)]


@router.post("/v1/listings/{listing_id}/withdraw", response_model=WithdrawalOut)
async def withdraw(market: Market, listing_id: str) -> dict[str, Any]:
    """Withdraw one of this node's listings (every version of its series)."""
    return jsonview.withdrawal(await market.withdraw(await full_id(market, listing_id)))


@router.get("/v1/objects/{object_id}", response_model=dict[str, Any])
async def get_object(market: Market, object_id: str, raw: bool = False) -> dict[str, Any]:
    """Any object the node holds, by id or unambiguous prefix."""
    oid = await full_id(market, object_id)
    obj = await market.get(oid)
    if obj is None:
        raise UnknownObject(f"no object with id {oid.hex()}")
    rendered = jsonview.render(obj)
    if raw:
        rendered["raw"] = obj.raw.hex()
    return rendered


@router.post("/v1/objects", response_model=list[RelayedOut])
async def relay(market: Market, body: ObjectsIn) -> list[dict[str, Any]]:
    """Verify, store and publish objects other authors signed (all or none)."""
    raws = []
    for i, text in enumerate(body.objects):
        try:
            raws.append(bytes.fromhex(text))
        except ValueError:
            raise InvalidObject(f"objects[{i}]", "expected the object's bytes in hex", "format") from None
    return [
        {"kind": obj.kind, "id": obj.id.hex(), "author": peer_id(obj.author), "new": new}
        for obj, new in await market.relay(raws)
    ]


@router.get("/v1/resolve/{prefix}", response_model=IdOut)
async def resolve(market: Market, prefix: str) -> dict[str, str]:
    """The full id for an unambiguous hex prefix."""
    return {"id": (await full_id(market, prefix)).hex()}


@router.get("/v1/forked", response_model=list[str])
async def forked(market: Market) -> list[str]:
    """Authors this node holds a verified fork proof against (PeerIDs)."""
    return [peer_id(key) for key in await market.forked()]


@router.post("/v1/stop", response_model=StoppingOut, status_code=202)
async def stop(market: Market, background: BackgroundTasks) -> dict[str, bool]:
    """Shut the node down; answered before the shutdown starts."""
    background.add_task(market.stop)  # runs after the response is sent
    return {"stopping": True}


# --- offers ---


@router.post("/v1/offers", response_model=OfferRowOut, status_code=201)
async def make_offer(market: Market, trading: Trading, body: OfferIn) -> dict[str, Any]:
    """Offer ``give`` for ``take`` out of a listing in the book; sent to its author."""
    made = await trading.make_offer(
        await full_id(market, body.listing, "listing"),
        items(body.give, "give"),
        items(body.take, "take") if body.take is not None else None,
        expires_in_s=body.expires_in_s,
        note=body.note,
    )
    return open_offer(made)


@router.get("/v1/offers", response_model=list[OfferRowOut])
async def offers(
    trading: Trading,
    direction: Annotated[str | None, Query(description="incoming or outgoing; default both")] = None,
) -> list[dict[str, Any]]:
    """Offers this node wrote or received, newest first, with their state."""
    if direction is not None and direction not in ("incoming", "outgoing"):
        raise InvalidObject("direction", f"must be incoming or outgoing, got {direction!r}", "format")
    return [jsonview.offer_row(v) for v in await trading.offers(direction)]


@router.post("/v1/offers/{offer_id}/accept", response_model=TradeOut)
async def accept(market: Market, trading: Trading, offer_id: str, body: AcceptIn | None = None) -> dict[str, Any]:
    """Accept an open offer to this node: sign the exchange that settles it (pending until countersigned)."""
    deadline = body.deadline_in_s if body is not None else None
    return await trade_out(market, await trading.accept(await full_id(market, offer_id), deadline_in_s=deadline))


@router.post("/v1/offers/{offer_id}/decline", response_model=NoticeOut)
async def decline(market: Market, trading: Trading, offer_id: str, body: NoteIn | None = None) -> dict[str, Any]:
    """Decline an open offer to this node (a signed notice to its author)."""
    return jsonview.notice(await trading.decline(await full_id(market, offer_id), body.note if body else ""))


@router.post("/v1/offers/{offer_id}/counter", response_model=OfferRowOut, status_code=201)
async def counter(market: Market, trading: Trading, offer_id: str, body: CounterIn) -> dict[str, Any]:
    """Answer an open offer to this node with other terms (a counter-offer naming it)."""
    made = await trading.counter(
        await full_id(market, offer_id),
        items(body.give, "give"),
        items(body.take, "take"),
        expires_in_s=body.expires_in_s,
        note=body.note,
    )
    return open_offer(made)


@router.post("/v1/offers/{offer_id}/cancel", response_model=NoticeOut)
async def cancel_offer(market: Market, trading: Trading, offer_id: str, body: NoteIn | None = None) -> dict[str, Any]:
    """Withdraw an open offer this node wrote (a signed notice)."""
    return jsonview.notice(await trading.cancel(await full_id(market, offer_id), body.note if body else ""))


# --- trades ---


@router.post("/v1/trades", response_model=TradeOut, status_code=201)
async def propose(market: Market, trading: Trading, body: ProposeIn) -> dict[str, Any]:
    """Propose an N-party exchange (this node among the parties): signed here first, sent to every party."""
    parties, legs = legs_and_parties(body)
    listing_ids = [await full_id(market, x, f"listings[{i}]") for i, x in enumerate(body.listings)]
    proposed = await trading.propose(parties, legs, listings=listing_ids, deadline_in_s=body.deadline_in_s)
    return await trade_out(market, proposed)


@router.post("/v1/match", response_model=MatchOut)
async def match(trading: Trading, body: MatchIn) -> dict[str, Any]:
    """The barter rings through this node in the book it holds; with ``propose``, propose those it coordinates."""
    result = await trading.match(body.max_parties, budget_s=body.budget_s, propose=body.propose)
    return jsonview.match(result)


@router.get("/v1/trades", response_model=list[TradeOut])
async def trades(
    market: Market,
    trading: Trading,
    state: Annotated[str | None, Query(description=f"one of {', '.join(TRADE_FILTERS)}: coarse or fine state")] = None,
) -> list[dict[str, Any]]:
    """Exchanges this node is a party to, newest first."""
    if state is not None and state not in TRADE_FILTERS:
        raise InvalidObject("state", f"must be one of {', '.join(TRADE_FILTERS)}, got {state!r}", "format")
    forked_keys = set(await market.forked())
    rendered = [jsonview.trade(t, forked_keys) for t in await trading.trades()]
    return [t for t in rendered if state is None or state in (t["state"], t["detail"])]


@router.get("/v1/trades/{exchange_id}", response_model=TradeOut)
async def trade(market: Market, trading: Trading, exchange_id: str) -> dict[str, Any]:
    """One exchange this node is a party to."""
    return await trade_out(market, await trading.trade(await full_id(market, exchange_id)))


@router.post("/v1/trades/{exchange_id}/sign", response_model=TradeOut)
async def sign(market: Market, trading: Trading, exchange_id: str) -> dict[str, Any]:
    """Consent to (sign) an exchange that waits for this node's signature."""
    return await trade_out(market, await trading.sign(await full_id(market, exchange_id)))


@router.post("/v1/trades/{exchange_id}/cancel", response_model=NoticeOut)
async def cancel_trade(
    market: Market, trading: Trading, exchange_id: str, body: NoteIn | None = None
) -> dict[str, Any]:
    """Leave an exchange this node has not signed (a signed promise never to sign it)."""
    return jsonview.notice(await trading.cancel(await full_id(market, exchange_id), body.note if body else ""))


@router.post("/v1/trades/{exchange_id}/confirm", response_model=ReceiptOut)
async def confirm(market: Market, trading: Trading, exchange_id: str, body: ConfirmIn | None = None) -> dict[str, Any]:
    """Confirm receipt of legs of a complete exchange (a receipt entry on this node's chain)."""
    legs = body.legs if body is not None else None
    return jsonview.receipt(await trading.confirm(await full_id(market, exchange_id), legs))


@router.post("/v1/trades/{exchange_id}/rate", response_model=RatingOut)
async def rate(market: Market, trading: Trading, exchange_id: str, body: RateIn) -> dict[str, Any]:
    """Rate a counterparty of a complete exchange (a rating entry on this node's chain)."""
    subject = parse_author(body.subject, "subject") if body.subject is not None else None
    rated = await trading.rate(await full_id(market, exchange_id), body.score, subject=subject, comment=body.comment)
    return jsonview.rating(rated)


# --- photos and the web UI ---


@router.post("/v1/photos", response_model=PhotoOut, status_code=201)
async def add_photo(market: Market, request: Request) -> dict[str, Any]:
    """Re-encode an image (at most 1600 px and 300 KB, metadata such as EXIF and GPS stripped) and keep it."""
    data = await request.body()
    h = await market.add_photo(data)
    stored = await market.photo(h)
    return {"hash": h.hex(), "bytes": len(stored or b"")}


@router.post("/v1/ui/token", response_model=UiTokenOut, status_code=201)
async def ui_token(request: Request) -> dict[str, Any]:
    """A one-time login address for the web UI: the token is in the fragment, good once, for a short time."""
    from ..ui.session import LOGIN_TTL_S

    token = request.app.state.ui_sessions.mint_login()
    port = (request.scope.get("server") or ("", 0))[1]
    return {"url": f"http://127.0.0.1:{port}/ui/login#{token}", "expires_in_s": LOGIN_TTL_S}
