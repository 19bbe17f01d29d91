"""A peer that abuses a relay, for the NAT lab (not a test module).

    python tests/relay_abuser.py RELAY_ADDR NET RESERVATIONS SECONDS

Two hosts in one process, both knowing only the relay. The first asks the relay for
RESERVATIONS reservations in a row (the relay allows a few a minute per peer); then the second
opens a circuit to the first through the relay and pushes bytes into it without end, for at
most SECONDS, until the relay cuts the circuit (its per-circuit byte cap). Prints one JSON
object as its last line: reservations granted and refused, bytes pushed, whether the circuit
was cut, seconds taken.
"""

from __future__ import annotations

import json
import os
import sys
import time

import trio
from swapmeet.node.host import FramedStream, P2PError, open_host, protocol_id
from swapmeet.node.host.relay import HOP, direct_peers_speaking, relay_of

CHUNK = 60 * 1024


async def main(relay_addr: str, net: str, reservations: int, seconds: float) -> dict[str, object]:
    sink = protocol_id(net, "sink")
    out: dict[str, object] = {}
    quiet = {"relay_service": False, "relay_reservations": 0, "find_market_by_name": False}
    async with (
        open_host(os.urandom(32), (), net=net, bootstrap=[relay_addr], **quiet) as one,  # type: ignore[arg-type]
        open_host(os.urandom(32), (), net=net, bootstrap=[relay_addr], **quiet) as two,  # type: ignore[arg-type]
    ):
        relay_id = relay_addr.rsplit("/p2p/", 1)[1]
        with trio.fail_after(30):  # connected, and identify told us the relay speaks HOP
            while not (direct_peers_speaking(one._host, HOP) and two.is_connected(relay_id)):
                await trio.sleep(0.1)
        (relay,) = direct_peers_speaking(one._host, HOP)

        async def drain(stream: FramedStream) -> None:
            async for _ in stream:
                pass

        one.set_stream_handler(sink, drain, max_frame_size=CHUNK + 1024)
        answers = [await one.relay_client.reserve(relay) for _ in range(reservations)]
        out["reservations_granted"] = sum(answers)
        out["reservations_refused"] = len(answers) - sum(answers)
        started = time.monotonic()
        pushed = 0
        cut = False
        with trio.move_on_after(seconds):
            try:
                await two.connect(f"{relay_addr}/p2p-circuit/p2p/{one.peer_id}")
                assert relay_of(two.connections(one.peer_id)[0]["addr"]) is not None
                async with await two.open_stream(one.peer_id, sink, max_frame_size=CHUNK + 1024) as stream:
                    while True:
                        await stream.send(b"x" * CHUNK)
                        pushed += CHUNK
            except (P2PError, OSError, Exception) as exc:  # the relay cut it: what we are here to see
                cut = True
                out["ended_by"] = f"{type(exc).__name__}: {exc}"[:200]
        out["bytes_pushed"] = pushed
        out["cut"] = cut
        out["seconds"] = round(time.monotonic() - started, 2)
    return out


if __name__ == "__main__":
    result = trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    print(json.dumps(result), flush=True)
