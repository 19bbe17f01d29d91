"""The web UI's pages and form actions, one function each; every page reads without JavaScript.

====================================  ========================================================
``GET  /ui/login``, ``POST``          exchange the one-time token (URL fragment) for a session
``GET  /ui/market``                   search and browse the book (``q kind tag loc wants``)
``GET  /ui/market/rows``              the result rows alone (the live page re-fetches them)
``GET  /ui/listings/{ID}``            one listing: photos, author, offer form
``GET  /ui/photos/{HASH}``            a photo (fetched from peers and checked if not held)
``GET  /ui/mine``, ``POST``           my listings; publish (photos included)
``GET  /ui/mine/{ID}/replace``        the form, filled in, to publish the next version
``POST /ui/listings/{ID}/withdraw``   withdraw one of mine
``GET  /ui/trades``, ``.../part``     offers in and out, proposals to sign, trades
``GET  /ui/trades/{ID}``, ``/part``   one trade: legs, signatures, deadline (live)
``POST /ui/offers``                   make an offer on a listing
``POST /ui/offers/{ID}/{ACTION}``     accept, decline, counter, cancel
``POST /ui/trades/{ID}/{ACTION}``     sign, cancel, confirm, rate
``GET  /ui/ledger``                   chains held, and one chain's entries with their exchanges
``GET  /ui/network``                  peers, reachability, book size, the last hour's activity
``GET  /ui/matches``                  barter rings through me in the book (``?run=1&max_parties=K`` finds them)
``POST /ui/matches/propose``          propose the rings I coordinate (``max_parties``)
====================================  ========================================================

Forms post and the answer redirects (303) to the page to show next (``next``,
a ``/ui/`` path), so reloading never posts twice. Errors are pages (see
:mod:`.app`); the publish form is shown again with each error next to its field.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from swapmeet.protocol.build import parse_item
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import peer_id
from swapmeet.protocol.objects import LISTING_TYPES, Listing

from .. import jsonview
from ..contract import MarketAPI, TradingAPI, UnknownObject, parse_author, parse_id
from ..matching import MAX_PARTIES
from . import forms, views
from .render import render

router = APIRouter()
MARKET_LIMIT = 100
CHAIN_LIMIT = 200
FILTERS = ("q", "kind", "tag", "loc", "wants")
MATCH_BUDGET_S = 5.0  # the solver's time on a page load: a person is waiting


def _market(request: Request) -> MarketAPI:
    return request.app.state.market  # type: ignore[no-any-return]


def _trading(request: Request) -> TradingAPI:
    return request.app.state.trading  # type: ignore[no-any-return]


async def _me(market: MarketAPI) -> tuple[bytes, str]:
    status = market.status()
    if hasattr(status, "__await__"):
        status = await status  # type: ignore[misc]
    pid = status["peer_id"]
    from swapmeet.protocol.identity import public_key_from_peer_id

    return public_key_from_peer_id(pid), pid


async def _full_id(market: MarketAPI, text: str, what: str = "id") -> bytes:
    parsed = parse_id(text, what)
    return parsed if isinstance(parsed, bytes) else await market.resolve(parsed)


def _back(form: Any, default: str) -> RedirectResponse:
    target = str(form.get("next") or default)
    if not target.startswith("/ui/") or target.startswith("//"):
        target = default  # never redirect off this server
    return RedirectResponse(target, status_code=303)


def _items(text: str, path: str) -> list[Any]:
    return [parse_item(line, f"{path}[{i}]") for i, line in enumerate(x for x in text.splitlines() if x.strip())]


# --- login ---


@router.get("/ui")
@router.get("/ui/")
async def home(request: Request) -> Response:
    return RedirectResponse("/ui/market", status_code=303)


@router.get("/ui/login")
async def login_page(request: Request) -> Response:
    """The login page: its script posts the token from the URL fragment (without script: paste it)."""
    return render(request, "login.html", title="Log in")


@router.post("/ui/login")
async def login(request: Request) -> Response:
    """Exchange a one-time login token for a session cookie (HttpOnly, SameSite=Strict, Path=/ui)."""
    form = await request.form()
    session_id = request.app.state.sessions.exchange(str(form.get("token") or "").strip())
    if session_id is None:
        message = "This login link was already used or has expired. Run `swapmeet ui` again for a new one."
        return render(request, "login.html", http_status=403, title="Log in", message=message)
    response = RedirectResponse("/ui/market", status_code=303)
    response.set_cookie(
        request.state.ui_cookie, session_id, httponly=True, samesite="strict", path="/ui", max_age=12 * 3600
    )
    return response


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    request.app.state.sessions.end(request.cookies.get(request.state.ui_cookie))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(request.state.ui_cookie, path="/ui")
    return response


# --- the market ---


async def _market_rows(request: Request) -> dict[str, Any]:
    market = _market(request)
    args = {k: (request.query_params.get(k) or "").strip() for k in FILTERS}
    kind = args["kind"] if args["kind"] in LISTING_TYPES else None
    found = await market.listings(
        args["q"] or None,
        type=kind,
        tag=args["tag"].lower() or None,
        loc=args["loc"].lower() or None,
        wants=args["wants"] or None,
        limit=MARKET_LIMIT,
    )
    me, _ = await _me(market)
    forked = set(await market.forked()) if found else set()
    reps = await market.reputation(list({x.author for x in found})) if found else {}
    rows = [views.listing_row(x, me, forked, reps.get(x.author)) for x in found]
    query = urllib.parse.urlencode({k: v for k, v in args.items() if v})
    return {"rows": rows, "args": args, "query": query, "kinds": LISTING_TYPES, "limit": MARKET_LIMIT}


@router.get("/ui/market")
async def market_page(request: Request) -> Response:
    """Search and browse the book; the rows update live as listings arrive or are withdrawn."""
    return render(request, "market.html", title="Market", **await _market_rows(request))


@router.get("/ui/market/rows")
async def market_rows(request: Request) -> Response:
    return render(request, "_market_rows.html", **await _market_rows(request))


@router.get("/ui/listings/{listing_id}")
async def listing_page(request: Request, listing_id: str) -> Response:
    """One listing with its photos, its author's trades and ratings, and the offer form."""
    market = _market(request)
    obj = await market.get(await _full_id(market, listing_id))
    if not isinstance(obj, Listing):
        raise UnknownObject(f"no listing {listing_id} in the book")
    me, _ = await _me(market)
    reps = await market.reputation([obj.author])
    row = views.listing_row(obj, me, set(await market.forked()), reps.get(obj.author))
    return render(request, "listing.html", title=obj.title, x=row)


@router.get("/ui/photos/{photo_hash}")
async def photo(request: Request, photo_hash: str, author: str | None = None) -> Response:
    """A listing photo: from this node, or fetched from the author's node or a peer and checked by hash."""
    if len(photo_hash) != 64:
        raise InvalidObject("photo", "a photo is named by 64 hex digits", "format")
    h = parse_id(photo_hash, "photo")
    data = await _market(request).photo(h, parse_author(author) if author else None)  # type: ignore[arg-type]
    if data is None:
        raise UnknownObject("no reachable node holds this photo right now")
    # the bytes match the hash: they cannot change, so the browser may keep them
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400, immutable"})


# --- my listings ---


async def _mine(request: Request, **context: Any) -> Response:
    market = _market(request)
    me, _ = await _me(market)
    mine = await market.listings(author=me, limit=1000)
    rows = [views.listing_row(x, me, set(), None) for x in mine]
    context.setdefault("values", {"expires": forms.DEFAULT_EXPIRES})
    context.setdefault("errors", {})
    return render(request, "mine.html", title="My listings", rows=rows, fields=forms.form_fields(), **context)


@router.get("/ui/mine")
async def mine_page(request: Request) -> Response:
    """My listings, and the form to publish a new one."""
    return await _mine(request)


@router.get("/ui/mine/{listing_id}/replace")
async def replace_page(request: Request, listing_id: str) -> Response:
    """The publish form filled in with one of my listings: what it publishes is its next version."""
    market = _market(request)
    obj = await market.get(await _full_id(market, listing_id))
    if not isinstance(obj, Listing):
        raise UnknownObject(f"no listing {listing_id} in the book")
    values = forms.form_values(jsonview.listing(obj))
    values["expires"] = forms.DEFAULT_EXPIRES
    return await _mine(request, values=values, replaces=obj.id.hex())


@router.post("/ui/mine")
async def publish(request: Request) -> Response:
    """Publish a listing from the form (photos uploaded first); errors are shown next to their field."""
    market = _market(request)
    form = await request.form()
    values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    replaces = values.get("replaces") or None
    try:
        hashes = []
        uploads = [f for f in form.getlist("photos") if not isinstance(f, str) and f.filename]
        if len(uploads) > 4:
            raise InvalidObject("photos", f"at most 4 photos, got {len(uploads)}", "length")
        for i, upload in enumerate(uploads):
            try:
                hashes.append(await market.add_photo(await upload.read()))
            except InvalidObject as err:
                raise InvalidObject(f"photos[{i}]", f"{upload.filename}: {err.reason}", err.code) from None
        spec = forms.spec_from_form(values, hashes)
        await market.publish(spec, replaces=bytes.fromhex(replaces) if replaces else None)
    except InvalidObject as err:
        errors = {forms.field_of(err.path): err.reason}
        return await _mine(request, values=values, errors=errors, replaces=replaces, http_status=400)
    return RedirectResponse("/ui/mine", status_code=303)


@router.post("/ui/listings/{listing_id}/withdraw")
async def withdraw(request: Request, listing_id: str) -> Response:
    market = _market(request)
    await market.withdraw(await _full_id(market, listing_id))
    return _back(await request.form(), "/ui/mine")


# --- offers and trades ---


async def _trades(request: Request) -> dict[str, Any]:
    market, trading = _market(request), _trading(request)
    _, me = await _me(market)
    forked = set(await market.forked())
    offers = [views.offer_row(jsonview.offer_row(v), me) for v in await trading.offers()]
    trades = [views.trade_row(t, forked, me) for t in await trading.trades()]
    return {
        "incoming": [o for o in offers if o["incoming"]],
        "outgoing": [o for o in offers if not o["incoming"]],
        "to_sign": [t for t in trades if t["detail"] == "awaiting"],
        "trades": [t for t in trades if t["detail"] != "awaiting"],
    }


@router.get("/ui/trades")
async def trades_page(request: Request) -> Response:
    """Offers in and out, proposals waiting for my signature, and every trade; live."""
    return render(request, "trades.html", title="Offers and trades", **await _trades(request))


@router.get("/ui/trades/part")
async def trades_part(request: Request) -> Response:
    return render(request, "_trades.html", **await _trades(request))


async def _trade(request: Request, exchange_id: str) -> dict[str, Any]:
    market = _market(request)
    _, me = await _me(market)
    t = await _trading(request).trade(await _full_id(market, exchange_id))
    return {"t": views.trade_row(t, set(await market.forked()), me)}


@router.get("/ui/trades/{exchange_id}")
async def trade_page(request: Request, exchange_id: str) -> Response:
    """One trade: its legs, who signed, its deadline; live."""
    context = await _trade(request, exchange_id)
    return render(request, "trade.html", title=f"Trade {context['t']['short']}", **context)


@router.get("/ui/trades/{exchange_id}/part")
async def trade_part(request: Request, exchange_id: str) -> Response:
    return render(request, "_trade.html", **await _trade(request, exchange_id))


@router.post("/ui/offers")
async def make_offer(request: Request) -> Response:
    """Offer what the form gives for what it takes (default: everything the listing has)."""
    market = _market(request)
    form = await request.form()
    listing_id = await _full_id(market, str(form.get("listing") or ""), "listing")
    take_text = str(form.get("take") or "")
    await _trading(request).make_offer(
        listing_id,
        _items(str(form.get("give") or ""), "give"),
        _items(take_text, "take") if take_text.strip() else None,
        note=str(form.get("note") or ""),
    )
    return _back(form, "/ui/trades")


@router.post("/ui/offers/{offer_id}/{action}")
async def answer_offer(request: Request, offer_id: str, action: str) -> Response:
    """Accept, decline, counter (with ``give`` and ``take`` from the taker's side) or cancel an offer."""
    market, trading = _market(request), _trading(request)
    form = await request.form()
    oid = await _full_id(market, offer_id, "offer")
    note = str(form.get("note") or "")
    if action == "accept":
        await trading.accept(oid)
    elif action == "decline":
        await trading.decline(oid, note)
    elif action == "counter":
        give = _items(str(form.get("give") or ""), "give")
        await trading.counter(oid, give, _items(str(form.get("take") or ""), "take"), note=note)
    elif action == "cancel":
        await trading.cancel(oid, note)
    else:
        raise UnknownObject(f"no offer action {action!r}")
    return _back(form, "/ui/trades")


@router.post("/ui/trades/{exchange_id}/{action}")
async def act_on_trade(request: Request, exchange_id: str, action: str) -> Response:
    """Sign, cancel (leave unsigned), confirm receipt of, or rate (``score``, ``comment``) a trade."""
    market, trading = _market(request), _trading(request)
    form = await request.form()
    xid = await _full_id(market, exchange_id, "exchange")
    if action == "sign":
        await trading.sign(xid)
    elif action == "cancel":
        await trading.cancel(xid, str(form.get("note") or ""))
    elif action == "confirm":
        await trading.confirm(xid)
    elif action == "rate":
        score = str(form.get("score") or "")
        if score not in ("1", "2", "3", "4", "5"):
            raise InvalidObject("score", f"a score is 1 to 5, got {score!r}", "range")
        subject = str(form.get("subject") or "")
        await trading.rate(
            xid, int(score), subject=parse_author(subject) if subject else None, comment=str(form.get("comment") or "")
        )
    else:
        raise UnknownObject(f"no trade action {action!r}")
    return _back(form, f"/ui/trades/{xid.hex()}")


# --- the ledger and the network ---


@router.get("/ui/ledger")
async def ledger_page(request: Request, author: str | None = None) -> Response:
    """Every chain held, and one chain (mine unless ``author`` says) with each entry's exchange."""
    market = _market(request)
    me, _ = await _me(market)
    key = parse_author(author) if author else me
    chains = [
        {
            "author": peer_id(c.author),
            "short": views.short_peer(peer_id(c.author)),
            "length": c.length,
            "forked": c.forked,
            "mine": c.author == me,
        }
        for c in await market.chains()
    ]
    entries = [views.entry_row(x) for x in await market.chain(key, CHAIN_LIMIT)]
    return render(
        request,
        "ledger.html",
        title="Ledger",
        chains=chains,
        entries=entries,
        author=peer_id(key),
        mine=key == me,
        limit=CHAIN_LIMIT,
    )


def _max_parties(text: object) -> int:
    try:
        value = int(str(text or MAX_PARTIES))
    except ValueError:
        raise InvalidObject("max_parties", f"a number from 2 to {MAX_PARTIES}, got {str(text)[:20]!r}") from None
    if not 2 <= value <= MAX_PARTIES:
        raise InvalidObject("max_parties", f"a number from 2 to {MAX_PARTIES}, got {value}")
    return value


@router.get("/ui/matches")
async def matches_page(
    request: Request, run: bool = False, max_parties: str | None = None, proposed: int = 0, refused: int = 0
) -> Response:
    """The rings through me that the solver finds in the book; reading only (finding rings changes nothing)."""
    parties = _max_parties(max_parties)
    found = None
    if run:
        found = views.match_view(jsonview.match(await _trading(request).match(parties, budget_s=MATCH_BUDGET_S)))
    return render(
        request,
        "matches.html",
        title="Matches",
        found=found,
        max_parties=parties,
        choices=range(2, MAX_PARTIES + 1),
        proposed=proposed,
        refused=refused,
    )


@router.post("/ui/matches/propose")
async def propose_matches(request: Request) -> Response:
    """Propose every ring I coordinate (the smallest PeerID of a ring proposes it; the others sign by hand)."""
    form = await request.form()
    parties = _max_parties(form.get("max_parties"))
    result = await _trading(request).match(parties, budget_s=MATCH_BUDGET_S, propose=True)
    mine = [r for r in result.rings if r.coordinator == result.me]
    done = sum(1 for r in mine if r.proposed is not None)
    query = urllib.parse.urlencode({"max_parties": parties, "proposed": done, "refused": len(mine) - done})
    return RedirectResponse(f"/ui/matches?{query}", status_code=303)


@router.get("/ui/network")
async def network_page(request: Request) -> Response:
    """Peers, reachability, book size, and gossip and sync over the last hour as a chart."""
    market = _market(request)
    status = market.status()
    if hasattr(status, "__await__"):
        status = await status  # type: ignore[misc]
    peers = market.peers()
    if hasattr(peers, "__await__"):
        peers = await peers  # type: ignore[misc]
    chart = views.activity_chart(market.activity())
    return render(
        request,
        "network.html",
        title="Network",
        status=status,
        peers=peers,
        chart=chart,
        reachability=status.get("reachability", "unknown"),
    )
