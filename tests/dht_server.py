"""A plain Kademlia DHT server for the NAT lab: a libp2p peer of no market (not a test module).

    python tests/dht_server.py ADDR_FILE /ip4/198.18.0.1/tcp/0

Runs a host with the DHT (the standard ``/ipfs/kad/1.0.0``) and nothing else: no market
protocols, no relay service, no reservations, no market lookups. Writes its dialable address
to ADDR_FILE once listening, and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import trio
from swapmeet.node.host import open_host


async def main(addr_file: Path, listen: str) -> None:
    async with open_host(
        os.urandom(32),
        [listen],
        net="plain-dht",
        enable_dht=True,
        relay_service=False,
        relay_reservations=0,
        find_market_by_name=False,
    ) as host:
        tmp = addr_file.with_suffix(".tmp")
        tmp.write_text(host.listen_addrs()[0])
        tmp.replace(addr_file)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                return


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), sys.argv[2])
