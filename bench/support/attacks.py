"""What a hostile peer sends, for the attack tests (tests/test_hostile.py) and ``bench/hostile.py``.

A raw attacker is a bare host of our own host package (the same libp2p stack a
node runs) that does what an honest node never would: pushes past the Yamux
window, holds streams open without a word, floods every path with valid
objects by throwaway keys, sends garbage. Each ``flood_*`` runs until
cancelled or done and returns what it managed to send, so a benchmark can
report the attack's own rate next to the victim's health.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from swapmeet.node import host as p2p
from swapmeet.protocol import batch, build, evidence
from swapmeet.protocol import replication as wire
from swapmeet.protocol.booksync import frames
from swapmeet.protocol.boundary import ZERO_ID
from swapmeet.protocol.evidence import ForkProof
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.objects import Leg

CONNECT_S = 20.0


def rss_mb(pid: int) -> float:
    """The resident memory of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@asynccontextmanager
async def attacker(net: str, addr: str, seed: bytes | None = None) -> AsyncIterator[p2p.P2PHost]:
    """A bare host on network ``net``, connected to the node at ``addr``."""
    async with p2p.open_host(seed or secrets.token_bytes(32), ["/ip4/127.0.0.1/tcp/0"], net=net) as host:
        with trio.fail_after(CONNECT_S):
            await host.connect(addr)
        yield host


def valid_offer() -> bytes:
    """A valid signed offer between two throwaway keys (what the settle stream accepts)."""
    maker, taker = Identity.generate(), Identity.generate()
    now = int(time.time())
    listing = build.make_listing(
        maker, title="bait", have=[build.parse_item("1 x bait")], created=now, expires=now + 3600
    )
    offer = build.make_offer(
        taker,
        listing,
        take=[build.parse_item("1 x bait")],
        give=[build.parse_item("1 x hook")],
        created=now,
        expires=now + 600,
    )
    return offer.raw


def fresh_listings(author: Identity, n: int) -> list[bytes]:
    """``n`` valid listings by ``author``, created now."""
    now = int(time.time())
    return [
        build.make_listing(
            author, title=f"flood {k}", have=[build.parse_item("1 x junk")], created=now, expires=now + 3600
        ).raw
        for k in range(n)
    ]


def fork_proof(forker: Identity | None = None) -> ForkProof:
    """Valid evidence that ``forker`` (a throwaway key by default) signed two different entries at seq 1."""
    forker, friend = forker or Identity.generate(), Identity.generate()
    now = int(time.time())
    entries = []
    for what in ("1 x kite", "1 x kettle"):
        x = build.propose_exchange(
            parties=[forker.public_key, friend.public_key],
            legs=[Leg(0, 1, (build.parse_item(what),)), Leg(1, 0, (build.parse_item("1 x thanks"),))],
            created=now,
            deadline=now + 600,
        )
        x = build.sign_exchange(build.sign_exchange(x, forker), friend)
        entries.append(build.make_entry(forker, seq=1, prev=ZERO_ID, time=now, payload=x))
    return evidence.fork_proof(*entries)


def fork_alert_about_a_stranger() -> bytes:
    """A valid fork alert: a throwaway key signed two different entries at seq 1."""
    return wire.fork_alert(fork_proof())


async def push_by_book_sync(host: p2p.P2PHost, victim: str, raws: list[bytes]) -> int:
    """Push signed objects with book-sync ``put`` frames (no reconciliation asked); how many were sent."""
    stream = await host.open_stream(victim, p2p.protocol_id(host.net, "book-sync"))
    sent = 0
    async with stream:
        for data in batch.pack(raws):
            await stream.send(frames.encode_frame("put", data))
            sent += len(batch.split_batch(data))
        await stream.send(frames.encode_frame("end", None))
    return sent


async def flood_gossip(host: p2p.P2PHost, topic_name: str, messages: list[bytes]) -> int:
    """Publish ``messages`` on a topic as fast as the host takes them; how many went out."""
    topic = p2p.topic(host.net, topic_name)
    sent = 0
    for data in messages:
        try:
            await host.publish(topic, data)
        except p2p.P2PError:
            continue
        sent += 1
    return sent


async def flood_settle_requests(host: p2p.P2PHost, victim: str, n: int) -> tuple[int, int]:
    """``n`` settle requests with valid offers; (answered, refused)."""
    protocol = p2p.protocol_id(host.net, "settle")
    answered = refused = 0
    for _ in range(n):
        try:
            await host.request(victim, protocol, valid_offer(), timeout=CONNECT_S)
            answered += 1
        except p2p.P2PError:
            refused += 1
    return answered, refused


async def hold_stalled_streams(host: p2p.P2PHost, victim: str, protocol_name: str, n: int) -> int:
    """Open ``n`` streams and never write on them (until cancelled); how many opened."""
    opened = []
    for _ in range(n):
        try:
            opened.append(await host.open_stream(victim, p2p.protocol_id(host.net, protocol_name)))
        except p2p.P2PError:
            break
    return len(opened)


async def push_past_the_window(host: p2p.P2PHost, victim: str, megabytes: int) -> int:
    """Send a valid settle request, then ``megabytes`` MiB more on the same stream, ignoring the window the
    victim granted; how many MiB went out before it cut us off."""
    stream = await host.open_stream(victim, p2p.protocol_id(host.net, "settle"))
    await stream.send(valid_offer())  # the victim's handler reads this one frame, answers, and stops reading
    with trio.fail_after(CONNECT_S):
        await stream.receive()
    raw = stream._stream  # below the framing: what a hostile implementation writes
    raw.muxed_stream.send_window = 1 << 40
    chunk = b"\x00" * (1 << 20)
    sent = 0
    try:
        while sent < megabytes:
            await raw.write(chunk)
            sent += 1
    except Exception:
        pass  # cut off: the point
    return sent
