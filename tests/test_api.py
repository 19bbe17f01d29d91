"""The local API over a real hypercorn socket on 127.0.0.1, against an in-memory fake node.

The fake implements :class:`swapmeet.node.api.NodeAPI` with real signed
objects, so these tests pin the HTTP contract (auth, shapes, error bodies,
shutdown) independently of the libp2p runtime. Requests go through the CLI's
own synchronous client (in a worker thread) or raw ``http.client`` when the
point is what goes on the wire. Every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from swapmeet.node import api
from swapmeet.node.api import AmbiguousPrefix, Conflict, ListingSpec, UnknownObject
from swapmeet.node.api_client import ApiClient, NodeError, NodeNotRunning, live_addrs
from swapmeet.node.home import Home
from swapmeet.protocol.build import make_withdrawal, parse_item
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import Identity, peer_id
from swapmeet.protocol.objects import Listing, SignedObject, Withdrawal

ALICE = Identity(b"\x01" * 32)
BOB = Identity(b"\x02" * 32)
LIMIT_S = 20  # no test may take longer


class FakeNode:
    """An in-memory NodeAPI: a dict of objects, no network."""

    def __init__(self, identity: Identity = ALICE) -> None:
        self.identity = identity
        self.objects: dict[bytes, SignedObject] = {}
        self.withdrawn: set[bytes] = set()  # series
        self.stopped = trio.Event()

    def status(self) -> dict[str, Any]:
        pid = peer_id(self.identity.public_key)
        listings = sum(isinstance(o, Listing) for o in self.objects.values())
        return {
            "peer_id": pid,
            "net": "test",
            "addrs": [f"/ip4/127.0.0.1/tcp/4001/p2p/{pid}"],
            "peers": 1,
            "book": {"listings": listings, "offers": 0, "withdrawals": len(self.withdrawn)},
            "uptime_s": 1.5,
            "version": "0.1.0",
        }

    def peers(self) -> list[dict[str, Any]]:
        return [{"peer_id": peer_id(BOB.public_key), "addrs": ["/ip4/127.0.0.1/tcp/4002"]}]

    async def publish(self, spec: ListingSpec) -> Listing:
        listing = spec.to_listing(self.identity, now=int(time.time()))
        self.objects[listing.id] = listing
        return listing

    def add(self, listing: Listing) -> None:
        self.objects[listing.id] = listing

    async def withdraw(self, listing_id: bytes) -> Withdrawal:
        listing = self.objects.get(listing_id)
        if not isinstance(listing, Listing):
            raise UnknownObject(f"no listing with id {listing_id.hex()}")
        if listing.series in self.withdrawn:
            raise Conflict(f"listing {listing_id.hex()[:12]} is already withdrawn")
        withdrawal = make_withdrawal(self.identity, listing, created=int(time.time()))
        self.withdrawn.add(listing.series)
        self.objects[withdrawal.id] = withdrawal
        return withdrawal

    async def listings(
        self,
        query: str | None = None,
        *,
        type: str | None = None,
        category: str | None = None,
        author: bytes | None = None,
        wants: str | None = None,
        limit: int = api.DEFAULT_LIMIT,
    ) -> list[Listing]:
        found = [
            o
            for o in self.objects.values()
            if isinstance(o, Listing)
            and o.series not in self.withdrawn
            and (query is None or query.lower() in o.title.lower())
            and (type is None or o.type == type)
            and (category is None or o.category == category)
            and (author is None or o.author == author)
            and (wants is None or any(wants in i.item for i in o.want))
        ]
        return found[:limit]

    async def resolve(self, prefix_hex: str) -> bytes:
        matches = [i for i in self.objects if i.hex().startswith(prefix_hex)]
        if not matches:
            raise UnknownObject(f"no object with an id starting with {prefix_hex}")
        if len(matches) > 1:
            raise AmbiguousPrefix(f"{len(matches)} objects have an id starting with {prefix_hex}: give more digits")
        return matches[0]

    async def get(self, id: bytes) -> SignedObject | None:
        return self.objects.get(id)

    async def stop(self) -> None:
        self.stopped.set()


_: api.NodeAPI = FakeNode()  # the fake must satisfy the protocol (checked by type checkers)


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
    token = api.new_token()
    home = Home(tmp_path / "home")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(api.serve_api, api.create_app(node, token), port=0))
        api.write_cookie(home, port, token)
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
            r.client.cookie = api.Cookie(port=r.port, token="stale", pid=0)
            with pytest.raises(NodeError, match="refused the token") as info:
                await r.call("status")
            assert info.value.status == 401 and "\n" not in str(info.value)


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
            listing = ListingSpec(title=f"thing {n}", have=[parse_item("1 x thing")]).to_listing(ALICE, now=now)
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
        app = api.create_app(FakeNode(), "t")
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(api.serve_api, app, port=0, shutdown_trigger=stop.wait))
            assert not await trio.to_thread.run_sync(port_closed, port)
            stop.set()
        # serve_api returned by itself (the nursery exited without being cancelled)
        assert await trio.to_thread.run_sync(port_closed, port)


# --- the cookie ---


def test_cookie_is_0600_atomic_and_only_removed_by_its_owner(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    assert api.read_cookie(home) is None
    cookie = api.write_cookie(home, 4242, "tok")
    assert stat.S_IMODE(home.api_cookie.stat().st_mode) == 0o600
    assert json.loads(home.api_cookie.read_text()) == {"port": 4242, "token": "tok", "pid": cookie.pid}
    assert api.read_cookie(home) == cookie
    api.write_cookie(home, 4343, "newer")  # replaces a stale cookie
    assert [p.name for p in home.root.iterdir()] == ["api.cookie"]  # no temp file left
    api.remove_cookie(home, token="tok")  # not ours any more: kept
    assert api.read_cookie(home) is not None and api.read_cookie(home).port == 4343
    api.remove_cookie(home, token="newer")
    assert not home.api_cookie.exists()
    api.remove_cookie(home)  # idempotent
    home.api_cookie.write_text("{damaged")
    assert api.read_cookie(home) is None
    assert len(api.new_token()) >= 43


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
            assert peers[0].split() == ["PEER", "ID", "ADDRS"] and peer_id(BOB.public_key) in peers[1]

            text = ok(await cli(home, "withdraw", published["id"][:12]))
            assert text.startswith(f"withdrew listing {published['id'][:12]}")
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
