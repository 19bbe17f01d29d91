"""Hosts on loopback for the host tests (tests/test_p2p.py, tests/test_libp2p_behaviour.py)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from swapmeet.node.host import P2PHost, open_host

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


def seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def accept_all(from_peer: str, data: bytes) -> bool:
    return True


@asynccontextmanager
async def line(n: int, net: str, label: str | None = None, **kwargs: Any) -> AsyncIterator[list[P2PHost]]:
    """n hosts of network ``net``, each connected to the next: h0 - h1 - ... - h(n-1).

    Each host runs in its own task so that they shut down concurrently, as the
    nodes of a real swarm would (closing a host with a connection costs ~0.2 s).
    Their keys come from ``label`` (default: the network name) and their index.
    """
    hosts: list[P2PHost] = []
    stop = trio.Event()

    async def run(i: int, *, task_status: trio.TaskStatus[None]) -> None:
        async with open_host(seed(f"{label or net}-{i}"), LOOPBACK, net=net, **kwargs) as host:
            hosts.append(host)
            task_status.started()
            await stop.wait()

    async with trio.open_nursery() as nursery:
        for i in range(n):
            await nursery.start(run, i)
        try:
            with trio.fail_after(10):
                for left, right in itertools.pairwise(hosts):
                    await left.connect(right.listen_addrs()[0])
            yield hosts
        finally:
            stop.set()


async def wait_line_mesh(hosts: list[P2PHost], topic_id: str) -> None:
    """Both directions of every link are in the GossipSub mesh (docs/LIBP2P.md §24)."""
    with trio.fail_after(10):
        for left, right in itertools.pairwise(hosts):
            await left.wait_for_mesh(topic_id, [right.peer_id])
            await right.wait_for_mesh(topic_id, [left.peer_id])
