"""The local API over a real hypercorn socket on 127.0.0.1, against an in-memory fake node.

The fake implements :class:`swapmeet.node.contract.MarketAPI` and
:class:`~swapmeet.node.contract.TradingAPI` with real signed objects, so these
tests pin the HTTP contract (auth, shapes, error bodies, shutdown) independently
of the libp2p runtime. Requests go through the CLI's own synchronous client (in
a worker thread) or raw ``http.client`` when the point is what goes on the wire.
Every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from swapmeet.cli.client import ApiClient, NodeError, NodeNotRunning, live_addrs
from swapmeet.ledger.audit import AuditReport
from swapmeet.node import contract, cookie
from swapmeet.node.activity import EVENTS, Activity
from swapmeet.node.contract import MAX_IMPORT, AmbiguousPrefix, Conflict, UnknownObject
from swapmeet.node.events import EventFeed
from swapmeet.node.home import Home
from swapmeet.node.http.app import create_app
from swapmeet.node.http.guard import TokenGuard
from swapmeet.node.http.server import serve_api
from swapmeet.node.ingest import BOOK_KINDS
from swapmeet.node.ledgerview import ChainHeld, Reputation
from swapmeet.node.matching import MatchResult, RingFound, propose_ring
from swapmeet.protocol import settlement as st
from swapmeet.protocol.batch import decode_objects
from swapmeet.protocol.build import (
    make_offer,
    make_rating,
    make_receipt,
    make_withdrawal,
    parse_item,
    sign_exchange,
    sign_listing,
)
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import Identity, peer_id
from swapmeet.protocol.listing_spec import ListingSpec
from swapmeet.protocol.matching.book import coordinator, ring_legs, want_graph
from swapmeet.protocol.matching.solve import solve
from swapmeet.protocol.objects import (
    Exchange,
    Item,
    LedgerEntry,
    Leg,
    Listing,
    Notice,
    Offer,
    Rating,
    Receipt,
    SignedObject,
    Withdrawal,
)
from swapmeet.protocol.settlement import Settlement

ALICE = Identity(b"\x01" * 32)
BOB = Identity(b"\x02" * 32)
CAROL = Identity(b"\x03" * 32)
LIMIT_S = 20  # no test may take longer


class FakeNode:
    """An in-memory NodeAPI: a dict of objects, no network.

    Settlement runs the real sans-IO machine (:class:`Settlement`) and drops what it would send; tests
    play the other parties by feeding it events (:meth:`receive`).
    """

    def __init__(self, identity: Identity = ALICE) -> None:
        self.identity = identity
        self.objects: dict[bytes, SignedObject] = {}
        self.withdrawn: set[bytes] = set()  # series
        self.withdrawn_ids: set[bytes] = set()  # replaced versions
        self.stopped = trio.Event()
        self.settlement = Settlement(identity)
        self.confirmed: dict[bytes, set[int]] = {}
        self.rated: dict[bytes, list[bytes]] = {}
        self.forked_keys: list[bytes] = []
        self.activity_log = Activity()
        self.events = EventFeed()
        self.photos: dict[bytes, bytes] = {}
        self.entries: list[LedgerEntry] = []  # this node's own chain, newest last

    def status(self) -> dict[str, Any]:
        pid = peer_id(self.identity.public_key)
        listings = sum(isinstance(o, Listing) for o in self.objects.values())
        return {
            "peer_id": pid,
            "net": "test",
            "addrs": [f"/ip4/127.0.0.1/tcp/4001/p2p/{pid}"],
            "peers": 1,
            "book": {"listings": listings, "offers": 0, "withdrawals": len(self.withdrawn)},
            "trades": {"offers_to_answer": 1, "awaiting_you": 0, "pending": 1, "complete": 2, "lapsed": 0},
            "uptime_s": 1.5,
            "version": "0.1.0",
            "activity": self.activity_log.totals(),
        }

    def activity(self) -> list[dict[str, int]]:
        return self.activity_log.last_hour()

    def peers(self) -> list[dict[str, Any]]:
        return [
            {
                "peer_id": peer_id(BOB.public_key),
                "addrs": ["/ip4/127.0.0.1/tcp/4002"],
                "connections": [{"relayed": False, "addr": "/ip4/127.0.0.1/tcp/4002"}],
                "hole_punch": None,
            }
        ]

    async def publish(self, spec: ListingSpec, *, replaces: bytes | None = None) -> Listing:
        for i, h in enumerate(spec.photos):
            if h not in self.photos:
                raise InvalidObject(f"photos[{i}]", "this node holds no such photo: upload it first", "photo")
        series, rev = None, 0
        if replaces is not None:
            old = self.objects.get(replaces)
            if not isinstance(old, Listing) or old.author != self.identity.public_key:
                raise UnknownObject(f"no listing of ours with id {replaces.hex()}")
            series, rev = old.series, old.rev + 1
            self.withdrawn_ids.add(old.id)
        listing = sign_listing(self.identity, spec, created=int(time.time()), series=series, rev=rev)
        self.objects[listing.id] = listing
        self.events.publish("listing", listing.id)
        return listing

    async def publish_many(self, specs: Sequence[ListingSpec]) -> list[Listing]:
        now = int(time.time())
        listings = []
        for i, spec in enumerate(specs):  # all checked and signed before any is kept, as the node does
            try:
                listings.append(sign_listing(self.identity, spec, created=now))
            except InvalidObject as err:
                raise err.under(f"listings[{i}]") from None
        for listing in listings:
            self.add(listing)
        return listings

    async def relay(self, raws: Sequence[bytes]) -> list[tuple[SignedObject, bool]]:
        if not 1 <= len(raws) <= MAX_IMPORT:
            raise InvalidObject("objects", f"expected 1 to {MAX_IMPORT} objects", "length")
        objects = decode_objects(raws, kinds=BOOK_KINDS, now=int(time.time()), path="objects")
        out = [(obj, obj.id not in self.objects) for obj in objects]  # type: ignore[attr-defined]
        for obj, _ in out:
            self.objects[obj.id] = obj
        return out

    def add(self, listing: Listing) -> None:
        self.objects[listing.id] = listing
        self.events.publish("listing", listing.id)

    async def withdraw(self, listing_id: bytes) -> Withdrawal:
        listing = self.objects.get(listing_id)
        if not isinstance(listing, Listing):
            raise UnknownObject(f"no listing with id {listing_id.hex()}")
        if listing.series in self.withdrawn:
            raise Conflict(f"listing {listing_id.hex()[:12]} is already withdrawn")
        withdrawal = make_withdrawal(self.identity, listing, created=int(time.time()))
        self.withdrawn.add(listing.series)
        self.objects[withdrawal.id] = withdrawal
        self.events.publish("withdrawal", withdrawal.id)
        return withdrawal

    async def listings(
        self,
        query: str | None = None,
        *,
        type: str | None = None,
        category: str | None = None,
        author: bytes | None = None,
        wants: str | None = None,
        tag: str | None = None,
        loc: str | None = None,
        limit: int = contract.DEFAULT_LIMIT,
    ) -> list[Listing]:
        found = [
            o
            for o in self.objects.values()
            if isinstance(o, Listing)
            and o.series not in self.withdrawn
            and o.id not in self.withdrawn_ids
            and (tag is None or tag in o.tags)
            and (loc is None or (o.loc or "").startswith(loc))
            and (query is None or query.lower() in o.title.lower())
            and (type is None or o.type == type)
            and (category is None or o.category == category)
            and (author is None or o.author == author)
            and (wants is None or any(wants in i.item for i in o.want))
        ]
        return found[:limit]

    async def resolve(self, prefix_hex: str) -> bytes:
        known = {
            *self.objects,
            *(v.offer.id for v in self.settlement.offers()),
            *(v.exchange.id for v in self.settlement.exchanges()),
        }
        matches = [i for i in known if i.hex().startswith(prefix_hex)]
        if not matches:
            raise UnknownObject(f"no object with an id starting with {prefix_hex}")
        if len(matches) > 1:
            raise AmbiguousPrefix(f"{len(matches)} objects have an id starting with {prefix_hex}: give more digits")
        return matches[0]

    async def get(self, id: bytes) -> SignedObject | None:
        return self.objects.get(id)

    async def stop(self) -> None:
        self.stopped.set()

    # --- the live feed, photos, the ledger ---

    def subscribe(self) -> Any:
        return self.events.subscribe()

    async def add_photo(self, data: bytes) -> bytes:
        from swapmeet.node.imaging import reencode

        photo = reencode(data)
        h = hashlib.sha256(photo).digest()
        self.photos[h] = photo
        return h

    async def photo(self, photo_hash: bytes, author: bytes | None = None) -> bytes | None:
        return self.photos.get(photo_hash)

    async def reputation(self, authors: Sequence[bytes]) -> dict[bytes, Reputation]:
        return {a: Reputation(len(self.entries) if a == self.identity.public_key else None, 0, None) for a in authors}

    async def chains(self) -> list[ChainHeld]:
        if not self.entries:
            return []
        return [ChainHeld(self.identity.public_key, len(self.entries), self.entries[-1].id, False)]

    async def chain(self, author: bytes, limit: int = contract.DEFAULT_LIMIT) -> list[LedgerEntry]:
        return list(reversed(self.entries))[:limit] if author == self.identity.public_key else []

    async def audit(self, progress: Any = None) -> AuditReport:
        from swapmeet.ledger.audit import audit

        raws = [e.raw for e in self.entries]
        if progress is not None:
            progress(0, len(raws))
        return await trio.to_thread.run_sync(lambda: audit(raws, workers=1))

    # --- settlement, on the real state machine ---

    def receive(self, event: st.Event) -> list[st.Decision]:
        """Feed the machine an event (a peer's object, a tick) and carry out what it asks, as the node would."""
        decisions = self.settlement.handle(event)
        for d in decisions:
            if isinstance(d, st.Refuse):
                if d.code == "unknown":
                    raise UnknownObject(d.reason + (f": {d.ref.hex()[:12]}" if d.ref else ""))
                raise Conflict(d.reason)
        for d in decisions:
            if isinstance(d, st.Send | st.Announce) and not isinstance(d.obj, Exchange):
                self.objects[d.obj.id] = d.obj
            elif isinstance(d, st.AppendToLedger):
                self.receive(st.Appended(d.exchange.id))
        return decisions

    def _made(self, decisions: list[st.Decision], kind: type[Offer] | type[Notice]) -> Any:
        return next(d.obj for d in decisions if isinstance(d, st.Send) and isinstance(d.obj, kind))

    def _view(self, exchange_id: bytes) -> contract.Trade:
        view = self.settlement.exchange(exchange_id)
        if view is None:
            raise UnknownObject(f"no exchange {exchange_id.hex()} with this node as a party")
        return contract.Trade(
            view, tuple(sorted(self.confirmed.get(exchange_id, ()))), tuple(self.rated.get(exchange_id, ()))
        )

    async def make_offer(
        self,
        listing_id: bytes,
        give: list[Item],
        take: list[Item] | None = None,
        *,
        expires_in_s: int | None = None,
        note: str = "",
    ) -> Offer:
        listing = self.objects.get(listing_id)
        if not isinstance(listing, Listing):
            raise UnknownObject(f"no listing with id {listing_id.hex()}")
        now = int(time.time())
        expires = now + (expires_in_s or contract.DEFAULT_OFFER_TTL_S)
        taking = tuple(take) if take is not None else listing.have
        event = st.MakeOffer(listing, tuple(give), taking, now, expires, note)
        return self._made(self.receive(event), Offer)

    async def offers(self, direction: str | None = None) -> list[st.OfferView]:
        me = self.identity.public_key
        views = [
            v
            for v in self.settlement.offers()
            if direction is None or (v.offer.author == me) == (direction == "outgoing")
        ]
        return sorted(views, key=lambda v: -v.offer.created)

    async def accept(self, offer_id: bytes, *, deadline_in_s: int | None = None) -> contract.Trade:
        view = self.settlement.offer(offer_id)
        if view is None:
            raise UnknownObject(f"no offer {offer_id.hex()}")
        now = int(time.time())
        deadline = now + (deadline_in_s or contract.DEFAULT_DEADLINE_S)
        self.receive(st.Accept(view.offer, now, os.urandom(16), deadline))
        exchange_id = self.settlement.offer(offer_id).exchange_id  # type: ignore[union-attr]
        assert exchange_id is not None
        return self._view(exchange_id)

    async def decline(self, offer_id: bytes, note: str = "") -> Notice:
        return self._made(self.receive(st.Decline(offer_id, int(time.time()), note)), Notice)

    async def counter(
        self,
        offer_id: bytes,
        give: list[Item],
        take: list[Item],
        *,
        expires_in_s: int | None = None,
        note: str = "",
    ) -> Offer:
        now = int(time.time())
        expires = now + (expires_in_s or contract.DEFAULT_OFFER_TTL_S)
        return self._made(self.receive(st.Counter(offer_id, tuple(give), tuple(take), now, expires, note)), Offer)

    async def cancel(self, target_id: bytes, note: str = "") -> Notice:
        return self._made(self.receive(st.Cancel(target_id, int(time.time()), note)), Notice)

    async def propose(
        self,
        parties: list[bytes],
        legs: list[Leg],
        *,
        listings: list[bytes] = (),  # type: ignore[assignment]
        deadline_in_s: int | None = None,
    ) -> contract.Trade:
        from swapmeet.protocol.build import propose_exchange

        if self.identity.public_key not in parties:
            raise InvalidObject(
                "parties", "this node must be one of the parties to an exchange it proposes", "non-party"
            )
        found = [self.objects.get(i) for i in listings]
        if not all(isinstance(x, Listing) for x in found):
            raise UnknownObject("no such listing")
        now = int(time.time())
        deadline = now + (deadline_in_s or contract.DEFAULT_DEADLINE_S)
        x = propose_exchange(parties=parties, legs=legs, created=now, deadline=deadline, listings=found)  # type: ignore[arg-type]
        self.receive(st.Propose(x, now))
        return self._view(x.id)

    async def sign(self, exchange_id: bytes) -> contract.Trade:
        self.receive(st.Sign(exchange_id, int(time.time())))
        return self._view(exchange_id)

    async def trades(self) -> list[contract.Trade]:
        views = sorted(self.settlement.exchanges(), key=lambda v: -v.exchange.created)
        return [self._view(v.exchange.id) for v in views]

    async def trade(self, exchange_id: bytes) -> contract.Trade:
        return self._view(exchange_id)

    async def match(self, max_parties: int, *, budget_s: float = 10.0, propose: bool = False) -> MatchResult:
        """The real solver over the node's listings (no exclusions); ``propose`` as the node does it."""
        book = want_graph(x for x in self.objects.values() if isinstance(x, Listing))
        s = solve(book.graph, max_parties or 8, budget_s=budget_s)
        rings = [ring_legs(book, r) for r in s.rings]
        mine = [
            RingFound(tuple(legs), coordinator(legs))
            for legs in rings
            if any(leg.giver == self.identity.public_key for leg in legs)
        ]
        if propose:
            mine = [await propose_ring(self, r) if r.coordinator == self.identity.public_key else r for r in mine]
        return MatchResult(
            self.identity.public_key,
            max_parties or 8,
            book.graph.n,
            0,
            book.explicit,
            book.implicit,
            s,
            tuple(mine),
            0.01,
        )

    def _complete(self, exchange_id: bytes) -> Exchange:
        view = self._view(exchange_id).view
        if view.state is not st.ExchangeState.COMPLETE:
            raise Conflict(f"the exchange is {view.state}, not complete")
        return view.exchange

    async def confirm(self, exchange_id: bytes, legs: list[int] | None = None) -> Receipt:
        x = self._complete(exchange_id)
        me = x.index_of(self.identity.public_key)
        mine = [i for i, leg in enumerate(x.legs) if leg.receiver == me]
        chosen = mine if legs is None else legs
        if not chosen or any(i not in mine for i in chosen):
            raise Conflict("nothing to confirm: no such leg gives to this node")
        receipt = make_receipt(self.identity, x, legs=chosen, created=int(time.time()))
        self.confirmed.setdefault(exchange_id, set()).update(chosen)
        return receipt

    async def rate(self, exchange_id: bytes, score: int, *, subject: bytes | None = None, comment: str = "") -> Rating:
        x = self._complete(exchange_id)
        others = [p for p in x.parties if p != self.identity.public_key]
        if subject is None:
            if len(others) != 1:
                raise InvalidObject("subject", "name the party to rate: the exchange has several", "required")
            subject = others[0]
        rating = make_rating(self.identity, x, subject=subject, score=score, created=int(time.time()), comment=comment)
        self.rated.setdefault(exchange_id, []).append(subject)
        return rating

    async def forked(self) -> list[bytes]:
        return list(self.forked_keys)


_market: contract.MarketAPI = FakeNode()  # the fake must satisfy both protocols (checked by type checkers)
_trading: contract.TradingAPI = FakeNode()


# --- playing the other parties (the fake node is ALICE) ---


def listing_of(
    identity: Identity, title: str = "Road bike", have: str = "2 x bike", want: str = "3 kg x apples"
) -> Listing:
    spec = ListingSpec(title=title, have=[parse_item(have)], want=[parse_item(want)])
    return sign_listing(identity, spec, created=int(time.time()))


def offer_from(
    node: FakeNode, author: Identity, listing: Listing, give: str = "3 kg x apples", take: str = "1 x bike"
) -> Offer:
    """``author`` makes an offer on ``listing`` (by the node's identity) and it arrives at the node."""
    now = int(time.time())
    offer = make_offer(
        author, listing, take=[parse_item(take)], give=[parse_item(give)], created=now, expires=now + 3600
    )
    node.receive(st.OfferReceived(offer, now))
    node.objects[offer.id] = offer
    return offer


def countersign(node: FakeNode, exchange_id: str | bytes, *signers: Identity) -> None:
    """Other parties sign the node's copy of the exchange and send it back."""
    xid = bytes.fromhex(exchange_id) if isinstance(exchange_id, str) else exchange_id
    x = node.settlement.exchange(xid).exchange  # type: ignore[union-attr]
    for signer in signers:
        x = sign_exchange(x, signer)
    node.receive(st.ExchangeReceived(x, int(time.time())))


def proposal_from(node: FakeNode, proposer: Identity, parties: list[Identity], legs: list[Leg]) -> Exchange:
    """``proposer`` proposes an exchange (signed by it) and it arrives at the node."""
    from swapmeet.protocol.build import propose_exchange

    now = int(time.time())
    x = propose_exchange(parties=[p.public_key for p in parties], legs=legs, created=now, deadline=now + 600)
    x = sign_exchange(x, proposer)
    node.receive(st.ExchangeReceived(x, now))
    return x


@dataclass
class Running:
    port: int
    token: str
    client: ApiClient
    cancel: Any  # stops the server, as the node's exit would

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A client call, in a thread (the client is synchronous, like the CLI)."""
        return await trio.to_thread.run_sync(partial(getattr(self.client, method), *args, **kwargs))

    async def raw(
        self, method: str, path: str, *, token: str | None = "default", body: bytes | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """One raw request: (status, headers, decoded JSON)."""
        token = self.token if token == "default" else token

        def go() -> tuple[int, dict[str, str], Any]:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                headers = {"Content-Type": "application/json"}
                if token is not None:
                    headers["Authorization"] = f"Bearer {token}"
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())
            finally:
                conn.close()

        return await trio.to_thread.run_sync(go)


@asynccontextmanager
async def running(node: FakeNode, tmp_path: Path) -> AsyncIterator[Running]:
    token = cookie.new_token()
    home = Home(tmp_path / "home")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_api, create_app(node, node, token), port=0))
        cookie.write_cookie(home, port, token)
        yield Running(port, token, ApiClient.for_home(home, timeout=5), nursery.cancel_scope.cancel)
        nursery.cancel_scope.cancel()


def port_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def spec(title: str = "Road bike", **kw: Any) -> dict[str, Any]:
    return {"title": title, "have": ["2 x bike"], "want": ["3 kg x apples"], **kw}


# --- auth ---


async def test_every_route_needs_the_token(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with running(FakeNode(), tmp_path) as r:
            for method, path in [
                ("GET", "/v1/status"),
                ("GET", "/v1/listings"),
                ("POST", "/v1/listings"),
                ("POST", "/v1/stop"),
                ("GET", "/openapi.json"),
                ("GET", "/no/such/path"),
            ]:
                for token in (None, "wrong", r.token[:-1], r.token + "x"):
                    status, headers, body = await r.raw(method, path, token=token, body=b"{}")
                    assert status == 401, (method, path, token)
                    assert body["code"] == "unauthorized"
                    assert "Bearer" in body["error"]
                    assert headers["www-authenticate"] == "Bearer"
            status, _, body = await r.raw("GET", "/v1/status")
            assert status == 200 and body["net"] == "test"


async def test_wrong_token_through_the_client_is_one_line(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with running(FakeNode(), tmp_path) as r:
            r.client.cookie = cookie.Cookie(port=r.port, token="stale", pid=0)
            with pytest.raises(NodeError, match="refused the token") as info:
                await r.call("status")
            assert info.value.status == 401 and "\n" not in str(info.value)


async def test_scopes_other_than_http_never_reach_the_app() -> None:
    """A WebSocket (or any non-HTTP) scope is refused by the guard: no route of another kind is reachable
    without the token, whatever is added to the app later. The server's lifespan still passes."""
    reached: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    guard = TokenGuard(app, token="secret")
    headers = [(b"authorization", b"Bearer secret")]  # even with the right token

    async def nothing() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def discard(message: dict[str, Any]) -> None:
        pass

    with trio.fail_after(LIMIT_S):
        await guard({"type": "websocket", "path": "/v1/status", "headers": headers}, nothing, discard)
        await guard({"type": "lifespan"}, nothing, discard)
    assert reached == ["lifespan"]


async def test_activity_is_an_hour_of_minutes(tmp_path: Path) -> None:
    node = FakeNode()
    node.activity_log.note("gossip_in", 3)
    node.activity_log.note("sync_sessions")
    with trio.fail_after(LIMIT_S):
        async with running(node, tmp_path) as r:
            rows = await r.call("activity")
            status = await r.call("status")
    assert len(rows) == 60 and set(rows[-1]) == {"minute", *EVENTS}
    assert rows[-1]["gossip_in"] == 3 and rows[-1]["sync_sessions"] == 1 and rows[0]["gossip_in"] == 0
    assert status["activity"]["gossip_in"] == 3 and status["activity"]["refused"] == 0


# --- round trips ---


async def test_status_and_peers(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        async with running(node, tmp_path) as r:
            status = await r.call("status")
            assert status["peer_id"] == peer_id(ALICE.public_key)
            assert status["book"] == {"listings": 0, "offers": 0, "withdrawals": 0}
            assert status["addrs"][0].endswith(status["peer_id"])
            assert await r.call("peers") == node.peers()
            addrs = await trio.to_thread.run_sync(live_addrs, r.client.home)
            assert addrs == status["addrs"]


async def test_publish_then_listings_round_trip(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        async with running(node, tmp_path) as r:
            before = int(time.time())
            published = await r.call(
                "publish",
                spec(
                    desc="barely used",
                    tags=["bikes", "road"],
                    category="sports/bikes",
                    expires_in_s=3600,
                    want=[{"item": "apples", "qty": 3, "unit": "kg"}],
                ),
            )
            assert published["kind"] == "listing"
            assert published["author"] == peer_id(ALICE.public_key)
            assert published["have"] == [{"item": "bike", "qty": 2, "unit": "pc"}]
            assert published["want"] == [{"item": "apples", "qty": 3, "unit": "kg"}]
            assert before + 3600 <= published["expires"] <= int(time.time()) + 3600
            assert published["window"] is None and published["due"] is None and published["loc"] is None
            assert bytes.fromhex(published["id"]) in node.objects

            await r.call("publish", spec("Lawn mower", type="rental", window=[before + 10, before + 86_400]))
            # accepts: listings named across revisions, {"author", "series"} in and out (PROTOCOL.md 10.10)
            assert published["accepts"] == []
            ref = {"author": peer_id(BOB.public_key), "series": "ab" * 16}
            swap = await r.call("publish", spec("Swap", accepts=[ref]))
            assert swap["accepts"] == [ref]
            await r.call("withdraw", swap["id"])
            everything = await r.call("listings")
            assert {x["title"] for x in everything} == {"Road bike", "Lawn mower"}
            assert [x["title"] for x in await r.call("listings", type="rental")] == ["Lawn mower"]
            assert [x["title"] for x in await r.call("listings", "road")] == ["Road bike"]
            by_peer_id = await r.call("listings", author=peer_id(ALICE.public_key))
            by_key = await r.call("listings", author=ALICE.public_key.hex())
            assert len(by_peer_id) == len(by_key) == 2
            assert await r.call("listings", author=peer_id(BOB.public_key)) == []
            assert len(await r.call("listings", limit=1)) == 1

            # withdraw by a short prefix, then the listing is gone and withdrawing again conflicts
            withdrawal = await r.call("withdraw", published["id"][:12])
            assert withdrawal["kind"] == "withdrawal" and withdrawal["series"] == published["series"]
            assert {x["title"] for x in await r.call("listings")} == {"Lawn mower"}
            with pytest.raises(Conflict, match="already withdrawn"):
                await r.call("withdraw", published["id"])

            got = await r.call("get", published["id"][:8], raw=True)
            assert got["id"] == published["id"]
            assert bytes.fromhex(got["raw"]) == node.objects[bytes.fromhex(published["id"])].raw
            assert await r.call("resolve", published["id"][:10]) == published["id"]


async def test_an_import_publishes_all_in_order_or_none(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        async with running(node, tmp_path) as r:
            specs = [spec(f"Jar {n}", tags=["jars"]) for n in range(3)]
            published = await r.call("publish_many", specs)
            assert [x["title"] for x in published] == ["Jar 0", "Jar 1", "Jar 2"]
            assert all(bytes.fromhex(x["id"]) in node.objects and x["tags"] == ["jars"] for x in published)
            held = len(node.objects)

            # one bad listing: the error names it, and none of the others is published
            status, _, body = await r.raw(
                "POST", "/v1/listings/import", body=json.dumps({"listings": [spec(), spec(have=["lots"])]}).encode()
            )
            assert status == 400 and body["path"] == "listings[1].have[0]", body
            with pytest.raises(InvalidObject, match=r"listings\[2\]\.listing\.body\.tags\[0\]"):
                await r.call("publish_many", [spec(), spec(), spec(tags=["Not A Tag"])])
            for bad in ([], [spec()] * (MAX_IMPORT + 1)):
                request = json.dumps({"listings": bad}).encode()
                status, _, body = await r.raw("POST", "/v1/listings/import", body=request)
                assert status == 400 and "listings" in body["error"], body
            assert len(node.objects) == held

            # the guard lets an import's body be as large as MAX_IMPORT listings need (over the 64 KiB of others)
            big = [spec(desc="x" * 1000) for _ in range(MAX_IMPORT)]
            assert len(json.dumps({"listings": big})) > 4 * 65536
            assert len(await r.call("publish_many", big)) == MAX_IMPORT


async def test_a_relay_verifies_every_object_and_keeps_all_or_none(tmp_path: Path) -> None:
    """POST /v1/objects: other authors' signed objects in hex; a forged one or bad hex names its index."""
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        async with running(node, tmp_path) as r:
            now = int(time.time())
            theirs = [
                sign_listing(who, ListingSpec(title=f"Jar {n}", have=(parse_item("1 x jar"),)), created=now)
                for n, who in enumerate((BOB, CAROL))
            ]
            relayed = await r.call("relay", [x.raw for x in theirs])
            assert [(x["kind"], x["id"], x["author"], x["new"]) for x in relayed] == [
                ("listing", x.id.hex(), peer_id(x.author), True) for x in theirs
            ]
            assert [x["new"] for x in await r.call("relay", [theirs[0].raw])] == [False]
            held = len(node.objects)

            forged = bytearray(
                sign_listing(BOB, ListingSpec(title="Jar 9", have=(parse_item("1 x jar"),)), created=now).raw
            )
            forged[-1] ^= 1  # the last byte of the signature
            with pytest.raises(InvalidObject, match=r"objects\[1\]\.listing\.signature: does not verify"):
                await r.call("relay", [theirs[0].raw, bytes(forged)])
            for bad, path in (
                ([theirs[0].raw.hex(), "zz"], "objects[1]"),
                ([], "objects"),
                (["00"] * (MAX_IMPORT + 1), "objects"),
            ):
                status, _, body = await r.raw("POST", "/v1/objects", body=json.dumps({"objects": bad}).encode())
                assert status == 400 and body["code"] == "invalid" and body["path"] == path, body
            assert len(node.objects) == held


# --- bad input: one-line JSON errors ---


async def test_malformed_item_is_a_clear_400(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with running(FakeNode(), tmp_path) as r:
            status, _, body = await r.raw("POST", "/v1/listings", body=json.dumps(spec(have=["three bikes"])).encode())
            assert status == 400
            assert body["code"] == "invalid" and body["path"] == "have[0]"
            assert "have[0]" in body["error"] and "QTY x ITEM" in body["error"] and "three bikes" in body["error"]
            assert "Traceback" not in json.dumps(body)

            with pytest.raises(InvalidObject, match=r"want\[1\]") as info:
                await r.call("publish", spec(want=["1 x pear", "pears"]))
            assert info.value.path == "want[1]"


async def test_protocol_rule_and_schema_errors_name_the_field(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with running(FakeNode(), tmp_path) as r:
            cases = [
                (spec(type="barter"), "type"),
                (spec(type="rental"), "window"),  # a rental needs a window
                (spec(tags=["Not A Tag"]), "tags[0]"),
                (spec(expires_in_s=400 * 86_400), "expires"),
                ({"have": ["1 x bike"]}, "title"),  # missing field
                (spec(have=[{"item": "bike", "qty": "many"}]), "have[0].qty"),
                (spec(colour="red"), "colour"),  # unknown field
            ]
            for body, where in cases:
                status, _, answer = await r.raw("POST", "/v1/listings", body=json.dumps(body).encode())
                assert status == 400, (body, answer)
                assert answer["code"] == "invalid", answer
                assert where in answer["error"], (where, answer)
                assert "\n" not in answer["error"]
            status, _, answer = await r.raw("POST", "/v1/listings", body=b"{not json")
            assert status == 400 and answer["code"] == "invalid"
            status, _, answer = await r.raw("POST", "/v1/listings", body=b"[" + b"1," * 40_000 + b"1]")
            assert status == 413 and answer["code"] == "too_large"
            status, _, answer = await r.raw("GET", "/v1/listings?limit=0")
            assert status == 400 and "limit" in answer["error"]
            status, _, answer = await r.raw("GET", "/v1/listings?author=bob")
            assert status == 400 and "author" in answer["error"] and "PeerID" in answer["error"]


async def test_unknown_and_ambiguous_ids(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        # sign listings until two ids share their first 4 hex digits (~300 expected, bounded)
        seen: dict[str, bytes] = {}
        now = int(time.time())
        for n in range(5000):
            listing = sign_listing(ALICE, ListingSpec(title=f"thing {n}", have=[parse_item("1 x thing")]), created=now)
            node.add(listing)
            if listing.id.hex()[:4] in seen:
                prefix = listing.id.hex()[:4]
                break
            seen[listing.id.hex()[:4]] = listing.id
        else:
            pytest.fail("no shared prefix in 5000 listings")
        async with running(node, tmp_path) as r:
            status, _, body = await r.raw("POST", f"/v1/listings/{prefix}/withdraw")
            assert status == 409 and body["code"] == "ambiguous" and prefix in body["error"]
            with pytest.raises(AmbiguousPrefix, match="more digits"):
                await r.call("resolve", prefix)

            unknown = "ff" * 32 if not any(i.hex().startswith("ffff") for i in node.objects) else "0" * 64
            status, _, body = await r.raw("GET", f"/v1/objects/{unknown}")
            assert status == 404 and body["code"] == "not_found" and unknown in body["error"]
            with pytest.raises(UnknownObject):
                await r.call("withdraw", unknown)

            for bad in ("abc", "xyz123", "a" * 65):
                status, _, body = await r.raw("GET", f"/v1/objects/{bad}")
                assert status == 400 and body["code"] == "invalid", (bad, body)
            status, _, body = await r.raw("GET", "/v1/nothing-here")
            assert status == 404 and body["code"] == "not_found" and "/v1/nothing-here" in body["error"]


async def test_internal_errors_are_one_line_500s(tmp_path: Path) -> None:
    class Broken(FakeNode):
        def peers(self) -> list[dict[str, Any]]:
            raise RuntimeError("peerstore exploded\nwith a second line")

    with trio.fail_after(LIMIT_S):
        async with running(Broken(), tmp_path) as r:
            status, _, body = await r.raw("GET", "/v1/peers")
            assert status == 500 and body["code"] == "internal"
            assert body["error"] == "internal error in the node: RuntimeError: peerstore exploded with a second line"
            with pytest.raises(NodeError) as info:
                await r.call("peers")
            assert info.value.exit_code == 70


# --- schema, stop, shutdown ---


async def test_openapi_schema_served_and_no_docs_ui(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with running(FakeNode(), tmp_path) as r:
            status, _, schema = await r.raw("GET", "/openapi.json")
            assert status == 200
            assert schema["openapi"].startswith("3.")
            assert {"/v1/status", "/v1/peers", "/v1/listings", "/v1/stop"} <= set(schema["paths"])
            assert "post" in schema["paths"]["/v1/listings"] and "get" in schema["paths"]["/v1/listings"]
            assert "HTTPBearer" in schema["components"]["securitySchemes"]
            for path in ("/docs", "/redoc"):
                status, _, body = await r.raw("GET", path)
                assert status == 404 and body["code"] == "not_found"


async def test_stop_answers_then_asks_the_node_to_stop(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        async with running(node, tmp_path) as r:
            assert await r.call("stop") == {"stopping": True}
            await node.stopped.wait()


async def test_cancellation_closes_the_port(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with running(FakeNode(), tmp_path) as r:
            await r.call("status")
            port, client = r.port, r.client
        # the nursery has exited: the server is gone and its listening socket closed
        assert await trio.to_thread.run_sync(port_closed, port)
        with pytest.raises(NodeNotRunning, match="no node is running for home"):
            await trio.to_thread.run_sync(client.status)


async def test_shutdown_trigger_stops_gracefully(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        stop = trio.Event()
        fake = FakeNode()
        app = create_app(fake, fake, "t")
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_api, app, port=0, shutdown_trigger=stop.wait))
            assert not await trio.to_thread.run_sync(port_closed, port)
            stop.set()
        # serve_api returned by itself (the nursery exited without being cancelled)
        assert await trio.to_thread.run_sync(port_closed, port)


# --- the cookie ---


def test_cookie_is_0600_atomic_and_only_removed_by_its_owner(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    assert cookie.read_cookie(home) is None
    written = cookie.write_cookie(home, 4242, "tok")
    assert stat.S_IMODE(home.api_cookie.stat().st_mode) == 0o600
    assert json.loads(home.api_cookie.read_text()) == {"port": 4242, "token": "tok", "pid": written.pid}
    assert cookie.read_cookie(home) == written
    cookie.write_cookie(home, 4343, "newer")  # replaces a stale cookie
    assert [p.name for p in home.root.iterdir()] == ["api.cookie"]  # no temp file left
    cookie.remove_cookie(home, token="tok")  # not ours any more: kept
    assert cookie.read_cookie(home) is not None and cookie.read_cookie(home).port == 4343
    cookie.remove_cookie(home, token="newer")
    assert not home.api_cookie.exists()
    cookie.remove_cookie(home)  # idempotent
    home.api_cookie.write_text("{damaged")
    assert cookie.read_cookie(home) is None
    assert len(cookie.new_token()) >= 43


# --- settlement endpoints ---


async def test_incoming_offer_accept_complete_confirm_rate(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        async with running(node, tmp_path) as r:
            published = await r.call("publish", spec())
            listing = node.objects[bytes.fromhex(published["id"])]
            assert isinstance(listing, Listing)
            offer = offer_from(node, BOB, listing)
            alice, bob = peer_id(ALICE.public_key), peer_id(BOB.public_key)

            incoming = await r.call("offers", "incoming")
            assert [o["id"] for o in incoming] == [offer.id.hex()]
            row = incoming[0]
            assert row["kind"] == "offer" and row["state"] == "open" and row["listing"] == published["id"]
            assert row["from"] == bob and row["to"] == alice and row["maker"] == alice and row["taker"] == bob
            assert row["give"] == [{"item": "apples", "qty": 3, "unit": "kg"}]
            assert row["take"] == [{"item": "bike", "qty": 1, "unit": "pc"}]
            assert row["counters"] is None and row["exchange"] is None and row["answer"] is None
            assert await r.call("offers", "outgoing") == []

            trade = await r.call("accept", offer.id.hex()[:10], deadline_in_s=300)
            assert trade["kind"] == "exchange" and trade["state"] == "pending" and trade["detail"] == "signed"
            assert trade["parties"] == [alice, bob] and trade["signed_by"] == [alice]
            assert trade["legs"] == [
                {"index": 0, "from": alice, "to": bob, "items": [{"item": "bike", "qty": 1, "unit": "pc"}]},
                {"index": 1, "from": bob, "to": alice, "items": [{"item": "apples", "qty": 3, "unit": "kg"}]},
            ]
            assert trade["offer"] == offer.id.hex() and trade["listings"] == [published["id"]]
            assert trade["deadline"] - trade["created"] == 300
            assert trade["appended"] is False and trade["confirmed_legs"] == [] and trade["rated"] == []
            assert trade["forked"] == [] and trade["notice"] is None and trade["complete"] is False
            (row,) = await r.call("offers")
            assert row["state"] == "accepted" and row["exchange"] == trade["id"]

            with pytest.raises(Conflict, match="signed"):  # the exchange, not complete yet
                await r.call("confirm", trade["id"])
            countersign(node, trade["id"], BOB)
            done = await r.call("trade", trade["id"][:8])
            assert done["state"] == done["detail"] == "complete" and done["appended"] is True
            assert done["signed_by"] == [alice, bob] and done["complete"] is True

            receipt = await r.call("confirm", trade["id"])
            assert receipt == {**receipt, "kind": "receipt", "author": alice, "exchange": trade["id"], "legs": [1]}
            with pytest.raises(Conflict, match="nothing to confirm"):
                await r.call("confirm", trade["id"], [0])  # leg 0 gives to bob
            rating = await r.call("rate", trade["id"], 5, comment="fast and friendly")
            assert rating["kind"] == "rating" and rating["subject"] == bob and rating["score"] == 5
            assert rating["author"] == alice and rating["exchange"] == trade["id"]
            assert rating["comment"] == "fast and friendly"

            node.forked_keys = [BOB.public_key]
            (listed,) = await r.call("trades", state="complete")
            assert listed["confirmed_legs"] == [1] and listed["rated"] == [bob] and listed["forked"] == [bob]
            assert await r.call("trades", state="pending") == []
            assert await r.call("forked") == [bob]
            (mine,) = await r.call("listings")
            assert mine["author_forked"] is False
            node.add(listing_of(BOB, "Lamp", "1 x lamp"))
            assert {x["title"]: x["author_forked"] for x in await r.call("listings")} == {
                "Road bike": False,
                "Lamp": True,
            }


async def test_make_cancel_decline_counter_offers(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        bikes = listing_of(BOB)
        node.add(bikes)
        async with running(node, tmp_path) as r:
            alice, bob = peer_id(ALICE.public_key), peer_id(BOB.public_key)
            made = await r.call(
                "make_offer", {"listing": bikes.id.hex()[:12], "give": ["3 kg x apples"], "note": "tomorrow?"}
            )
            assert (
                made["state"] == "open" and made["from"] == alice and made["to"] == bob and made["note"] == "tomorrow?"
            )
            assert made["take"] == [{"item": "bike", "qty": 2, "unit": "pc"}]  # default: all the listing has
            assert made["expires"] - made["created"] == contract.DEFAULT_OFFER_TTL_S
            assert [o["id"] for o in await r.call("offers", "outgoing")] == [made["id"]]

            notice = await r.call("cancel_offer", made["id"][:12], "changed my mind")
            assert notice == {
                "kind": "notice",
                "id": notice["id"],
                "author": alice,
                "action": "cancel",
                "about": made["id"],
                "about_kind": "offer",
                "note": "changed my mind",
                "created": notice["created"],
            }
            assert (await r.call("offers", "outgoing"))[0]["state"] == "cancelled"
            with pytest.raises(Conflict, match="cancelled"):
                await r.call("cancel_offer", made["id"])
            got = await r.call("get", notice["id"])  # the notice renders through /v1/objects too
            assert got["kind"] == "notice" and got["about"] == made["id"]

            mine = listing_of(ALICE, "Chairs", "4 x chair", "1 x table")
            node.add(mine)
            first = offer_from(node, BOB, mine, "1 x table", "4 x chair")
            declined = await r.call("decline", first.id.hex(), "sold already")
            assert declined["action"] == "decline" and declined["about"] == first.id.hex()
            assert declined["note"] == "sold already"

            second = offer_from(node, BOB, mine, "1 x table", "2 x chair")
            answer = await r.call(
                "counter",
                second.id.hex()[:9],
                {"give": ["1 x table", "1 x lamp"], "take": ["2 x chair"], "expires_in_s": 60},
            )
            assert answer["counters"] == second.id.hex() and answer["state"] == "open"
            assert answer["from"] == alice and answer["to"] == bob and answer["expires"] - answer["created"] == 60
            assert answer["give"] == [
                {"item": "table", "qty": 1, "unit": "pc"},
                {"item": "lamp", "qty": 1, "unit": "pc"},
            ]
            states = {o["id"]: (o["state"], o["answer"]) for o in await r.call("offers")}
            assert states[first.id.hex()] == ("declined", None)
            assert states[second.id.hex()] == ("countered", answer["id"])
            with pytest.raises(Conflict, match="countered"):
                await r.call("accept", second.id.hex())


async def test_propose_sign_and_cancel_trades(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        async with running(node, tmp_path) as r:
            alice, bob, carol = (peer_id(i.public_key) for i in (ALICE, BOB, CAROL))
            ring = await r.call(
                "propose",
                {
                    "legs": [
                        {"from": alice, "to": bob, "items": ["1 x bike"]},
                        {
                            "from": bob,
                            "to": CAROL.public_key.hex(),
                            "items": ["2 h x lessons"],
                        },
                        {"from": carol, "to": alice, "items": [{"item": "apples", "qty": 3, "unit": "kg"}]},
                    ],
                    "deadline_in_s": 120,
                },
            )
            assert ring["parties"] == [alice, bob, carol]  # order of first appearance
            assert ring["signed_by"] == [alice] and ring["detail"] == "signed" and ring["state"] == "pending"
            assert [(leg["from"], leg["to"]) for leg in ring["legs"]] == [(alice, bob), (bob, carol), (carol, alice)]
            assert ring["deadline"] - ring["created"] == 120 and ring["offer"] is None

            explicit = await r.call(
                "propose",
                {"parties": [bob, alice], "legs": [{"from": alice, "to": bob, "items": ["1 x lamp"]},
                                                    {"from": bob, "to": alice, "items": ["1 x pear"]}]},
            )  # fmt: skip
            assert explicit["parties"] == [bob, alice]
            assert explicit["deadline"] - explicit["created"] == contract.DEFAULT_DEADLINE_S

            theirs = proposal_from(
                node, BOB, [BOB, ALICE], [Leg(0, 1, (parse_item("1 x pear"),)), Leg(1, 0, (parse_item("1 x fig"),))]
            )
            waiting = await r.call("trade", theirs.id.hex())
            assert waiting["detail"] == "awaiting" and waiting["state"] == "pending" and waiting["signed_by"] == [bob]
            signed = await r.call("sign", theirs.id.hex()[:8])
            assert signed["detail"] == "complete" and signed["signed_by"] == [bob, alice]  # alice signed last
            three = proposal_from(
                node,
                BOB,
                [BOB, ALICE, CAROL],
                [
                    Leg(0, 1, (parse_item("1 x pear"),)),
                    Leg(1, 2, (parse_item("1 x fig"),)),
                    Leg(2, 0, (parse_item("1 x kiwi"),)),
                ],
            )
            signed = await r.call("sign", three.id.hex())
            assert signed["detail"] == "signed" and signed["signed_by"] == [bob, alice]
            with pytest.raises(Conflict, match="signed"):
                await r.call("cancel_trade", three.id.hex())  # a signature cannot be taken back

            other = proposal_from(
                node, BOB, [BOB, ALICE], [Leg(0, 1, (parse_item("2 x fig"),)), Leg(1, 0, (parse_item("1 x fig"),))]
            )
            notice = await r.call("cancel_trade", other.id.hex(), "no figs")
            assert (
                notice["action"] == "cancel"
                and notice["about"] == other.id.hex()
                and notice["about_kind"] == "exchange"
            )
            cancelled = await r.call("trade", other.id.hex())
            assert (
                cancelled["state"] == "lapsed"
                and cancelled["detail"] == "cancelled"
                and cancelled["notice"] == notice["id"]
            )
            with pytest.raises(Conflict, match="cancelled"):
                await r.call("sign", other.id.hex())

            assert len(await r.call("trades")) == 5
            assert {t["id"] for t in await r.call("trades", state="lapsed")} == {other.id.hex()}
            assert {t["id"] for t in await r.call("trades", state="cancelled")} == {other.id.hex()}
            assert {t["id"] for t in await r.call("trades", state="complete")} == {theirs.id.hex()}
            assert len(await r.call("trades", state="pending")) == 3
            with pytest.raises(InvalidObject, match="subject"):  # three parties: say whom
                countersign(node, ring["id"], BOB, CAROL)
                await r.call("rate", ring["id"], 4)
            assert (await r.call("rate", ring["id"], 4, subject=carol))["subject"] == carol


async def test_settlement_bad_input_unknown_and_ambiguous(tmp_path: Path) -> None:
    class Ambiguous(FakeNode):
        async def resolve(self, prefix_hex: str) -> bytes:
            if prefix_hex.startswith("abab"):
                raise AmbiguousPrefix(f"2 objects have an id starting with {prefix_hex}: give more digits")
            return await super().resolve(prefix_hex)

    with trio.fail_after(LIMIT_S):
        node = Ambiguous()
        bikes = listing_of(BOB)
        node.add(bikes)
        async with running(node, tmp_path) as r:
            bob = peer_id(BOB.public_key)
            alice = peer_id(ALICE.public_key)
            cases: list[tuple[str, str, dict[str, Any] | None, str]] = [
                ("POST", "/v1/offers", {"listing": bikes.id.hex(), "give": ["apples"]}, "give[0]"),
                ("POST", "/v1/offers", {"listing": bikes.id.hex(), "give": []}, "give"),
                ("POST", "/v1/offers", {"listing": "zz", "give": ["1 x pear"]}, "listing"),
                (
                    "POST",
                    "/v1/offers",
                    {"listing": bikes.id.hex(), "give": ["1 x pear"], "expires_in_s": 0},
                    "expires_in_s",
                ),
                ("POST", "/v1/offers", {"listing": bikes.id.hex(), "give": ["1 x pear"], "colour": 1}, "colour"),
                ("GET", "/v1/offers?direction=sideways", None, "direction"),
                ("GET", "/v1/trades?state=bogus", None, "state"),
                ("POST", "/v1/trades", {"legs": []}, "legs"),
                ("POST", "/v1/trades", {"legs": [{"from": "bob", "to": alice, "items": ["1 x a"]}]}, "legs[0].from"),
                ("POST", "/v1/trades", {"legs": [{"from": alice, "to": bob, "items": ["a"]}]}, "legs[0].items[0]"),
                ("POST", "/v1/trades", {"legs": [{"from": alice, "too": bob, "items": ["1 x a"]}]}, "legs[0].to"),
                (
                    "POST",
                    "/v1/trades",
                    {
                        "parties": [alice, bob],
                        "legs": [{"from": alice, "to": peer_id(CAROL.public_key), "items": ["1 x a"]}],
                    },
                    "legs[0].to",
                ),
                (
                    "POST",
                    "/v1/trades",
                    {"parties": [alice, "x"], "legs": [{"from": alice, "to": bob, "items": ["1 x a"]}]},
                    "parties[1]",
                ),
                (
                    "POST",
                    "/v1/trades",
                    {"legs": [{"from": alice, "to": bob, "items": ["1 x a"]}]},
                    "parties[0]: receives nothing",
                ),  # alice receives nothing (the boundary says so)
                ("POST", f"/v1/trades/{'ab' * 32}/rate", {"score": 9}, "score"),
                ("POST", f"/v1/trades/{'ab' * 32}/rate", {"score": 3, "subject": "carol"}, "subject"),
                ("POST", f"/v1/offers/{'ab' * 32}/accept", {"deadline_in_s": -5}, "deadline_in_s"),
                ("POST", "/v1/offers/xyz/decline", {}, "id"),
            ]
            for method, path, body, where in cases:
                data = json.dumps(body).encode() if body is not None else None
                status, _, answer = await r.raw(method, path, body=data)
                assert status == 400 and answer["code"] == "invalid", (path, body, answer)
                assert where in answer["error"] and "\n" not in answer["error"], (where, answer)

            unknown = "cd" * 32
            for method, path in [
                ("POST", f"/v1/offers/{unknown}/accept"),
                ("POST", f"/v1/offers/{unknown}/decline"),
                ("POST", f"/v1/offers/{unknown}/cancel"),
                ("GET", f"/v1/trades/{unknown}"),
                ("POST", f"/v1/trades/{unknown}/sign"),
                ("POST", f"/v1/trades/{unknown}/confirm"),
                ("GET", f"/v1/trades/{unknown[:6]}"),
            ]:
                status, _, answer = await r.raw(method, path, body=b"{}")
                assert status == 404 and answer["code"] == "not_found", (path, answer)
            status, _, answer = await r.raw(
                "POST", "/v1/offers", body=json.dumps({"listing": unknown, "give": ["1 x a"]}).encode()
            )
            assert status == 404 and answer["code"] == "not_found"
            for method, path in [
                ("POST", "/v1/offers/abab12/accept"),
                ("GET", "/v1/trades/ababab"),
                ("POST", "/v1/trades/abab/cancel"),
            ]:
                status, _, answer = await r.raw(method, path, body=b"{}")
                assert status == 409 and answer["code"] == "ambiguous" and "more digits" in answer["error"], (
                    path,
                    answer,
                )
            with pytest.raises(Conflict, match="own"):  # a settlement refusal: 409 conflict
                await r.call("make_offer", {"listing": (await r.call("publish", spec()))["id"], "give": ["1 x a"]})
            # bodies are optional where every field is
            offer = offer_from(node, BOB, listing_of(ALICE), "1 x pear", "1 x bike")
            status, _, answer = await r.raw("POST", f"/v1/offers/{offer.id.hex()}/accept")
            assert status == 200 and answer["state"] == "pending", answer

            status, _, schema = await r.raw("GET", "/openapi.json")
            assert {"/v1/offers", "/v1/trades", "/v1/trades/{exchange_id}/rate", "/v1/forked"} <= set(schema["paths"])


# --- the CLI, as real processes, against the fake node ---


async def cli(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWAPMEET_")}
    return await trio.run_process(
        [sys.executable, "-m", "swapmeet.cli.main", "--home", str(home), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout.decode()


async def test_cli_commands_against_a_running_api(tmp_path: Path) -> None:
    with trio.fail_after(60):  # about a dozen interpreter start-ups
        node = FakeNode()
        async with running(node, tmp_path) as r:
            home = r.client.home.root
            ok(await cli(home, "init", "--no-passphrase"))
            assert json.loads(ok(await cli(home, "id", "--json")))["addrs"] == node.status()["addrs"]
            assert node.status()["addrs"][0] in ok(await cli(home, "id"))

            status = json.loads(ok(await cli(home, "node", "status", "--json")))
            assert status["peer_id"] == peer_id(ALICE.public_key)
            text = ok(await cli(home, "node", "status"))
            assert "peer id" in text and "0 listings, 0 offers, 0 withdrawals" in text

            published = json.loads(
                ok(await cli(home, "publish", "--title", "Road bike", "--have", "1 x bike", "--want", "3 kg x apples",
                             "--tag", "bikes", "--expires", "6d", "--json"))
            )  # fmt: skip
            assert len(published["id"]) == 64
            text = ok(await cli(home, "publish", "--title", "Mower", "--have", "1 x mower", "--kind", "rental",
                                "--window", "1h..2d"))  # fmt: skip
            assert text.startswith("published ") and "(rental, expires in 7d)" in text  # the default

            found = json.loads(ok(await cli(home, "listings", "--json")))
            assert {x["title"] for x in found} == {"Road bike", "Mower"}
            for x in found:
                assert {"id", "author", "title", "have", "want", "expires"} <= set(x)
            table = ok(await cli(home, "listings", "bike")).splitlines()
            assert table[0].split() == ["ID", "KIND", "TITLE", "HAVE", "WANT", "AUTHOR", "EXPIRES"]
            assert table[1].startswith(published["id"][:12]) and "1 x bike" in table[1] and "3 kg x apples" in table[1]
            assert table[1].rstrip().endswith("in 6d")
            assert table[0].index("TITLE") == table[1].index("Road bike")  # aligned

            peers = ok(await cli(home, "peers")).splitlines()
            assert peers[0].split() == ["PEER", "ID", "CONNECTION", "ADDRS"] and peer_id(BOB.public_key) in peers[1]
            assert peers[1].split()[1] == "direct"

            text = ok(await cli(home, "withdraw", published["id"][:12]))
            assert text.startswith(f"withdrew {published['id'][:12]}  Road bike")
            proc = await cli(home, "withdraw", published["id"][:12])
            assert proc.returncode == 1 and b"already withdrawn" in proc.stderr

            proc = await cli(home, "node", "run", "--listen", "/ip4/127.0.0.1/tcp/0")
            assert proc.returncode == 1 and b"already running" in proc.stderr, proc.stderr

            # `node stop` returns once the node is gone: here the test plays the node's part
            async def node_exits() -> None:
                await node.stopped.wait()
                r.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(node_exits)
                assert ok(await cli(home, "node", "stop")).startswith("node stopped")


async def test_match_reports_the_rings_through_this_node(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        async with running(node, tmp_path) as r:
            mine = await r.call("publish", spec("Tent", have=["1 x tent"], want=["1 x kayak"]))
            node.add(listing_of(BOB, "Kayak", "1 x kayak", "2 hour x guitar lessons"))
            node.add(listing_of(CAROL, "Lessons", "2 hour x guitar lessons", "1 x tent"))
            found = await r.call("match", 3, 5.0, False)
            assert found["kind"] == "match" and found["items_traded"] == 3 and found["optimal"]
            assert found["acceptances"] == {"explicit": 0, "implicit": 3}
            (ring,) = found["rings"]
            assert ring["proposed"] is None and ring["mine"] == (ring["coordinator"] == peer_id(ALICE.public_key))
            legs = {(leg["from"], leg["to"], leg["title"]) for leg in ring["legs"]}
            assert (peer_id(ALICE.public_key), peer_id(CAROL.public_key), "Tent") in legs
            assert {leg["listing"] for leg in ring["legs"]} >= {mine["id"]}
            assert (await r.call("match", 2, 5.0, False))["rings"] == []
            status, _, body = await r.raw("POST", "/v1/match", body=b'{"max_parties": 9}')
            assert status == 400 and "max_parties" in json.dumps(body)
