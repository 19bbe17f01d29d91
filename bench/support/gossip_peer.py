"""One bare-gossipsub peer for the baseline of ``bench/swarm.py`` (a plain process, driven over stdin/stdout).

"Bare" means: ``swapmeet.node.host.open_host`` (so exactly the node's TCP +
Noise + Yamux + GossipSub configuration: heartbeat, degree, no spam cap, no
adaptive gossip, content message ids, StrictSign, the same peer-queue and
subscription-buffer sizes) with an accept-all validator, one topic, and
nothing else: no decoding or signature checks of the payload, no SQLite, no
local API, no DHT, no mDNS, no catch-up sync and no publish coalescing.

Protocol (one line each way):

  stdin   ``D <multiaddr> ...``   dial these peers (concurrently); answers ``C <peers>``
          ``P <tag-hex> <size>``  publish ``size`` bytes that start with the 8-byte tag
          ``S``                   answers ``S <peers> <mesh peers>``
          ``Q``                   leave (EOF on stdin does the same)
  SIGTERM / SIGINT: leave cleanly (exit code 0)
  stdout  ``READY <multiaddr>``   once listening and subscribed
          ``R <originator> <tag-hex>``  a message arrived (our own publishes are not reported)

``--fastpath`` turns on the node's host fast path and liveness pings (``open_host(fastpath=True)``);
without it (``bench/swarm.py``'s baseline) the pubsub path is the library's own, unpatched.

Run: ``python bench/support/gossip_peer.py --port P --net NAME`` (``bench/swarm.py`` does).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from typing import Any

import trio
from swapmeet.node import host as p2p

TOPIC_NAME = "listings"


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _lines(stream: trio.abc.ReceiveStream):  # type: ignore[no-untyped-def]
    buf = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            if buf:
                yield buf.decode()
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()


async def main(port: int, net: str, fastpath: bool) -> None:
    topic = p2p.topic(net, TOPIC_NAME)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        await serve(topic, port, net, signals, fastpath)


async def serve(topic: str, port: int, net: str, signals: Any, fastpath: bool) -> None:
    async with p2p.open_host(
        os.urandom(32),
        [f"/ip4/127.0.0.1/tcp/{port}"],
        net=net,
        gossip_topics=[TOPIC_NAME],
        fastpath=fastpath,
        liveness=p2p.LivenessSettings() if fastpath else None,
    ) as host:
        sub = await host.subscribe(topic, lambda from_peer, data: True)
        me = host.peer_id
        out(f"READY {host.listen_addrs()[0]}")

        async def read_gossip() -> None:
            async for from_peer, data in sub:
                if from_peer != me:
                    out(f"R {from_peer[-8:]} {data[:8].hex()}")

        async def dial(addr: str) -> None:
            try:
                await host.connect(addr, timeout=10.0)
            except (p2p.P2PError, ValueError) as exc:
                out(f"E dial {addr}: {exc}")

        async def stop_on_signal() -> None:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_gossip)
            nursery.start_soon(stop_on_signal)
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            async for line in _lines(stdin):
                parts = line.split()
                if not parts:
                    continue
                if parts[0] == "D":
                    async with trio.open_nursery() as dials:
                        for addr in parts[1:]:
                            dials.start_soon(dial, addr)
                    out(f"C {len(host.connected_peers())}")
                elif parts[0] == "P":
                    tag, size = bytes.fromhex(parts[1]), int(parts[2])
                    await host.publish(topic, tag + os.urandom(max(0, size - len(tag))))
                elif parts[0] == "S":
                    out(f"S {len(host.connected_peers())} {len(host.mesh_peers(topic))}")
                elif parts[0] == "Q":
                    break
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--net", default="bench")
    parser.add_argument(
        "--fastpath",
        action="store_true",
        help="our host fast path (docs/LIBP2P.md §60-§67); the baseline is without it: the library as it comes",
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C during shutdown
        trio.run(main, args.port, args.net, args.fastpath)
