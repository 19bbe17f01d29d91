"""Strangers who attack: a raw libp2p peer does its worst to a real node process, and the node holds.

Each test is one way a single peer (or many) could exhaust a node -- memory,
streams, catch-up, storage, logs -- and asserts the bound that stops it while
an honest peer keeps its service. The attacker is a bare host of our own host
package (the same libp2p stack as a node) in this process, on 127.0.0.1; the
victims are real ``swapmeet node run`` processes (LocalSwarm). Every wait is
bounded; every figure a test compares is measured in the same run.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from swapmeet.cli.localswarm import LocalSwarm
from swapmeet.node import host as p2p
from swapmeet.protocol import build
from swapmeet.protocol.identity import Identity

pytestmark = pytest.mark.slow

WAIT_S = 20.0


def rss_mb(pid: int) -> float:
    """The resident memory of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[LocalSwarm]:
    """One honest node of its own (fresh per test: a test may leave it hurt)."""
    with LocalSwarm(1, net=f"hostile-{secrets.token_hex(3)}", base_dir=tmp_path / "swarm") as swarm:
        yield swarm


@asynccontextmanager
async def attacker(swarm: LocalSwarm, i: int = 0) -> AsyncIterator[p2p.P2PHost]:
    """A bare host on the victim's network, connected to node ``i``."""
    async with p2p.open_host(secrets.token_bytes(32), ["/ip4/127.0.0.1/tcp/0"], net=swarm.net) as host:
        with trio.fail_after(WAIT_S):
            await host.connect(swarm.addr(i))
        yield host


def valid_offer() -> bytes:
    """A valid signed offer between two throwaway keys (what the settle stream accepts)."""
    maker, taker = Identity.generate(), Identity.generate()
    now = int(time.time())
    listing = build.make_listing(
        maker, title="bait", have=[build.parse_item("1 x bait")], created=now, expires=now + 3600
    )
    offer = build.make_offer(
        taker, listing, take=[build.parse_item("1 x bait")], give=[build.parse_item("1 x hook")], created=now,
        expires=now + 600,
    )
    return offer.raw


# --------------------------------------------------------------------------- memory


async def test_bytes_past_the_receive_window_are_not_buffered(victim: LocalSwarm) -> None:
    """A peer that ignores Yamux flow control on a stream nobody reads any more: before the fix the node
    buffered every byte for as long as the connection lived (96 MB sent took it from 115 to 212 MB)."""
    pid = victim.pid(0)
    assert pid is not None
    sent = 0
    async with attacker(victim) as host:
        settle = p2p.protocol_id(victim.net, "settle")
        stream = await host.open_stream(victim.peer_id(0), settle)
        await stream.send(valid_offer())  # the node's handler reads this one frame, answers, and stops reading
        with trio.fail_after(WAIT_S):
            assert await stream.receive() == b""
        before = rss_mb(pid)
        raw = stream._stream  # below the framing: what a hostile implementation writes
        raw.muxed_stream.send_window = 1 << 40  # ignore the window the node granted
        chunk = b"\x00" * (1 << 20)
        with trio.move_on_after(WAIT_S):
            try:
                while sent < 96 * (1 << 20):
                    await raw.write(chunk)
                    sent += len(chunk)
            except Exception:
                pass  # cut off: the point
        await trio.sleep(1.0)  # let the node take in what is on the wire
        grown = rss_mb(pid) - before
        assert grown < 32, f"the node grew by {grown:.0f} MiB after {sent >> 20} MiB sent past its window"
        with trio.fail_after(WAIT_S):
            while host.is_connected(victim.peer_id(0)):
                await trio.sleep(0.05)  # the node cut the violator off
    assert "past the receive window" in victim.log_text(0)
    # and it still serves honest peers
    assert victim.client(0).status()["peer_id"] == victim.peer_id(0)
