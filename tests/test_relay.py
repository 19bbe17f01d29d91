"""The relay among peers (node/host/relay.py), with real hosts in one process on 127.0.0.1.

A relay host R; peers A and B connect only to R and are never told each other's address, so
the only way from A to B is a circuit through R (docs/LIBP2P.md §40). Then R's caps under
abuse: reservation after reservation from one peer, bytes pushed through a circuit without
end, more circuits than one peer may hold; R keeps serving the others. And failover: a relay
goes away, and the peers move to another and still reach each other; a relay that failed a
reservation is asked again once it is back on a new connection. Streams opened at once to a
peer behind a relay share one circuit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p.connection_types import ConnectionType
from swapmeet.node.host import FramedStream, P2PError, P2PHost, open_host, protocol_id
from swapmeet.node.host.relay import HOP, RelayLimits, is_relayed

from tests.p2p_helpers import LOOPBACK, seed

NET = "test"
ECHO = protocol_id(NET, "echo")
LIMIT_S = 20.0


async def wait_for(predicate: object, what: str, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.05)


@asynccontextmanager
async def relay_and_two(limits: RelayLimits | None = None) -> AsyncIterator[tuple[P2PHost, P2PHost, P2PHost]]:
    """R offers the relay; A and B know only R, and each holds a reservation on it."""
    async with open_host(seed("relay"), LOOPBACK, net=NET, relay_limits=limits) as r:
        boot = [r.listen_addrs()[0]]
        async with (
            # No listen address: like a laptop behind a NAT, nobody can dial them.
            open_host(seed("home-a"), (), net=NET, bootstrap=boot, relay_service=False) as a,
            open_host(seed("home-b"), (), net=NET, bootstrap=boot, relay_service=False) as b,
        ):

            async def echo(stream: FramedStream) -> None:
                async for frame in stream:
                    await stream.send(frame)

            b.set_stream_handler(ECHO, echo, max_frame_size=1 << 20)
            await wait_for(lambda: a.relay_status()["reservations"] == [r.peer_id], "A's reservation")
            await wait_for(lambda: b.relay_status()["reservations"] == [r.peer_id], "B's reservation")
            yield r, a, b


class _Conn:
    """A connection as is_relayed sees it: a type, and addresses that count how often they were read."""

    def __init__(self, kind: ConnectionType, addr: str) -> None:
        self.kind, self.addr, self.addr_reads = kind, addr, 0

    def get_connection_type(self) -> ConnectionType:
        return self.kind

    def get_transport_addresses(self) -> list[str]:
        self.addr_reads += 1
        return [self.addr]


def test_is_relayed_trusts_a_known_type_and_reads_addresses_only_for_an_unknown_one() -> None:
    circuit = "/ip4/198.18.0.1/tcp/4001/p2p/12D3KooWRelay/p2p-circuit"
    relayed, direct = _Conn(ConnectionType.RELAYED, circuit), _Conn(ConnectionType.DIRECT, "/ip4/198.18.0.2/tcp/1")
    assert is_relayed(relayed) and not is_relayed(direct)  # type: ignore[arg-type]
    assert relayed.addr_reads == direct.addr_reads == 0  # the scan each second stringifies no address
    unknown_circuit, unknown_tcp = _Conn(ConnectionType.UNKNOWN, circuit), _Conn(ConnectionType.UNKNOWN, "/ip4/1/tcp/1")
    assert is_relayed(unknown_circuit) and not is_relayed(unknown_tcp)  # type: ignore[arg-type]
    assert unknown_circuit.addr_reads == unknown_tcp.addr_reads == 1


async def test_a_peer_behind_a_relay_is_reached_through_it() -> None:
    with trio.fail_after(LIMIT_S):
        async with relay_and_two() as (r, a, b):
            await wait_for(lambda: r.reachability() == "public", "R found public by A's and B's dial-backs")
            await wait_for(lambda: a.reachability() == "private", "A found private")
            assert r.relay_status()["reservations"] == []
            assert any(f"/p2p/{r.peer_id}/p2p-circuit/p2p/{b.peer_id}" in x for x in b.circuit_addrs())
            assert a.known_addrs(b.peer_id) == []  # nothing to dial directly
            async with await a.open_stream(b.peer_id, ECHO) as s:
                await s.send(b"hello through the relay")
                assert await s.receive() == b"hello through the relay"
            (conn,) = a.connections(b.peer_id)
            assert conn["relayed"] is True and f"/p2p/{r.peer_id}/p2p-circuit" in conn["addr"]
            assert [c["relayed"] for c in a.connections(r.peer_id)] == [False]
            assert r.relay_status()["circuits_relayed"] == 1 and r.relay_status()["bytes_relayed"] > 0


async def test_two_streams_opened_at_once_to_a_peer_behind_a_relay_share_one_circuit() -> None:
    # The NAT lab's flake (test_reach_lab.py): a trade's stream and the DHT's discovery both found no
    # connection to the other home and each dialled it through the relay: two circuits, two connections.
    with trio.fail_after(LIMIT_S):
        async with relay_and_two() as (r, a, b):
            echoed: list[bytes] = []

            async def echo_once(text: bytes) -> None:
                async with await a.open_stream(b.peer_id, ECHO) as s:
                    await s.send(text)
                    echoed.append(await s.receive())

            async with trio.open_nursery() as nursery:
                for text in (b"one", b"two", b"three"):
                    nursery.start_soon(echo_once, text)
            assert sorted(echoed) == [b"one", b"three", b"two"]
            assert [c["relayed"] for c in a.connections(b.peer_id)] == [True]
            assert r.relay_status()["circuits_relayed"] == 1


async def test_reservation_after_reservation_hits_the_per_peer_cap() -> None:
    limits = RelayLimits(reserve_per_minute=4)
    with trio.fail_after(LIMIT_S):
        async with relay_and_two(limits) as (r, a, b):
            relay = a.relay_client
            target = next(iter(relay.held))
            answers = [await relay.reserve(target) for _ in range(6)]
            # A used one request for its first reservation: three more pass, then the cap.
            assert answers == [True, True, True, False, False, False]
            assert r.relay_service.stats.reservations_refused == 3
            # B, another peer, is not affected.
            assert await b.relay_client.reserve(target) is True


async def test_bytes_pushed_without_end_are_cut_at_the_circuit_cap() -> None:
    limits = RelayLimits(circuit_bytes=256 * 1024)
    with trio.fail_after(LIMIT_S):
        async with relay_and_two(limits) as (r, a, b):
            async with await a.open_stream(b.peer_id, ECHO, max_frame_size=1 << 20) as s:
                with pytest.raises(P2PError):
                    for _ in range(64):  # 4 MiB, far past the cap
                        await s.send(b"x" * 65536)
                        await s.receive()
            await wait_for(lambda: r.relay_service.stats.circuits_cut == 1, "the circuit cut")
            assert r.relay_service.stats.bytes_relayed <= limits.circuit_bytes
            # The relay still serves: a new circuit carries a message.
            await wait_for(lambda: not a.is_connected(b.peer_id), "the cut connection to close")
            async with await a.open_stream(b.peer_id, ECHO) as s:
                await s.send(b"again")
                assert await s.receive() == b"again"


async def test_circuits_per_peer_are_capped() -> None:
    limits = RelayLimits(max_circuits_per_peer=1)
    with trio.fail_after(LIMIT_S):
        async with relay_and_two(limits) as (r, a, b):
            async with await a.open_stream(b.peer_id, ECHO) as s:
                await s.send(b"one")
                assert await s.receive() == b"one"
            # A second circuit between the same two peers, while the first is open: refused.
            relay_id = a.relay_client.held and next(iter(a.relay_client.held))
            with pytest.raises(ConnectionError, match="RESOURCE_LIMIT_EXCEEDED"):
                await a.relay_client.dial(relay_id, b._my_id)
            assert r.relay_service.stats.circuits_refused == 1


async def test_when_a_relay_goes_away_the_peers_move_to_another_and_still_reach_each_other() -> None:
    stop_r1 = trio.Event()

    async def run_r1(*, task_status: trio.TaskStatus[P2PHost] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_host(seed("relay-1"), LOOPBACK, net=NET) as r1:
            task_status.started(r1)
            await stop_r1.wait()  # then r1 goes away, without a goodbye to anyone's reservation

    with trio.fail_after(3 * LIMIT_S):
        async with open_host(seed("relay-2"), LOOPBACK, net=NET) as r2, trio.open_nursery() as nursery:
            r1 = await nursery.start(run_r1)
            boot = [r1.listen_addrs()[0]]  # both reserve on r1 first
            one = {"relay_service": False, "relay_reservations": 1}
            async with (
                open_host(seed("mover-a"), (), net=NET, bootstrap=boot, **one) as a,  # type: ignore[arg-type]
                open_host(seed("mover-b"), (), net=NET, bootstrap=boot, **one) as b,  # type: ignore[arg-type]
            ):

                async def echo(stream: FramedStream) -> None:
                    async for frame in stream:
                        await stream.send(frame)

                b.set_stream_handler(ECHO, echo)
                for home in (a, b):
                    await wait_for(lambda h=home: h.relay_status()["reservations"] == [r1.peer_id], "r1 reservation")
                    await home.connect(r2.listen_addrs()[0])  # they also know r2, holding nothing there
                assert r2.relay_status()["reservations"] == [] and not r2.relay_service.reservations
                stop_r1.set()
                for home in (a, b):
                    await wait_for(
                        lambda h=home: h.relay_status()["reservations"] == [r2.peer_id], "a reservation on r2", 15.0
                    )
                async with await a.open_stream(b.peer_id, ECHO) as s:
                    await s.send(b"still trading")
                    assert await s.receive() == b"still trading"
                assert [c["relayed"] for c in a.connections(b.peer_id)] == [True]
                assert r2.relay_status()["circuits_relayed"] == 1


async def test_a_relay_that_failed_a_reservation_is_asked_again_once_back_on_a_new_connection() -> None:
    # The NAT lab's flake (test_reach_lab.py, three relays): a home asked a stalled relay for a
    # reservation just as liveness closed its silent connection; the failure kept that relay out for
    # 60 s, so after it came back (redialled) the home held no reservation on it for the rest of the test.
    asked: list[str] = []

    async def fail(stream: object) -> None:  # a relay that fails every reservation, as a stalled one does
        asked.append(str(stream.muxed_conn.peer_id))  # type: ignore[attr-defined]
        await stream.reset()  # type: ignore[attr-defined]

    with trio.fail_after(LIMIT_S):
        async with open_host(seed("relay"), LOOPBACK, net=NET) as r:
            r._host.set_stream_handler(HOP, fail)
            boot = [r.listen_addrs()[0]]
            async with open_host(seed("home-a"), (), net=NET, bootstrap=boot, relay_service=False) as a:
                await wait_for(lambda: asked, "A's request for a reservation")
                r.relay_service.start()  # it answers again, on the connection it failed A on
                await trio.sleep(1.5)  # A looks every second: that connection is passed over for a while
                assert a.relay_status()["reservations"] == [] and asked == [a.peer_id]
                # What liveness does to a silent connection, then its redial: a new connection.
                await a.disconnect(r.peer_id)
                await a.connect(boot[0])
                await wait_for(lambda: a.relay_status()["reservations"] == [r.peer_id], "a reservation on R", 5.0)


async def test_hole_punching_gives_up_and_says_so_and_answers_only_relayed_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from swapmeet.node.host import holepunch

    # Sessions back to back, looked for five times a second: the bound, not the pacing, is tested.
    monkeypatch.setattr(holepunch, "RETRY_S", 0.0)
    monkeypatch.setattr(holepunch, "_LOOK_S", 0.2)
    bound = holepunch.SESSIONS_PER_PEER
    with trio.fail_after(LIMIT_S):
        async with relay_and_two() as (r, a, b):
            async with await a.open_stream(b.peer_id, ECHO) as s:
                await s.send(b"over the relay")
                assert await s.receive() == b"over the relay"
            # B accepted the relayed connection, so B drives DCUtR; neither listens anywhere, so no
            # dial can succeed: B stops after SESSIONS_PER_PEER sessions, and both say why.
            await wait_for(lambda: str(b.hole_punch(a.peer_id)).startswith("failed: "), "B gives up", 15.0)
            assert b.hole_puncher is not None and b.hole_puncher.punches[a._my_id].sessions == bound
            await trio.sleep(0.6)  # no fourth session (B looks every 0.2 s)
            assert b.hole_puncher.punches[a._my_id].sessions == bound
            assert b.relay_status()["hole_punches"] == {"direct": 0, "failed": 1}
            assert str(a.hole_punch(b.peer_id)).startswith("failed: ")
            assert [c["relayed"] for c in a.connections(b.peer_id)] == [True]
            assert a.hole_punch(r.peer_id) is None  # reached directly: never punched
            # A DCUtR session over a direct connection is refused (reset) before anything is read.
            with pytest.raises(Exception):  # noqa: B017 - reset or end of stream, either way refused
                stream = await r._host.new_stream(a._my_id, [holepunch.PROTOCOL])
                await holepunch._read(stream)


async def test_a_peer_reached_through_a_relay_is_dialled_directly_once_it_can_be(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # docs/LIBP2P.md §47: nothing in the library dials a peer we are connected to, relayed or not.
    from swapmeet.node.host import holepunch

    monkeypatch.setattr(holepunch, "DIRECT_FIRST_S", 0.3)
    monkeypatch.setattr(holepunch, "RELAY_GRACE_S", 0.3)
    with trio.fail_after(LIMIT_S):
        async with relay_and_two() as (r, a, _):
            boot = [r.listen_addrs()[0]]
            # P listens (on loopback: A can dial it) and holds a reservation on R by hand.
            async with open_host(seed("direct-p"), LOOPBACK, net=NET, bootstrap=boot, relay_reservations=0) as p:
                await wait_for(lambda: p.is_connected(r.peer_id), "P connected to R")
                relay = next(iter(a.relay_client.held))
                assert await p.relay_client.reserve(relay)
                await a.relay_client.dial(relay, p._my_id)  # A reaches P through R first
                assert [c["relayed"] for c in a.connections(p.peer_id)] == [True]
                # A then dials P's own addresses (learnt from identify), and leaves the relay.
                await wait_for(lambda: [c["relayed"] for c in a.connections(p.peer_id)] == [False], "A direct to P")
                assert a.hole_punch(p.peer_id) is None  # no DCUtR session was needed
