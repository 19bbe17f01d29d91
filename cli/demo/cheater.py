"""The villain of ``swapmeet demo``: a deliberately dishonest node. Never use it for anything else.

An honest node never signs an exchange that would make it give, out of one of
its listings, more than the listing has (settlement rule R4, enforced by
:meth:`swapmeet.protocol.settlement.reservations.Reservations.over_commit`, the
one place the machine checks quantities). To show that the audit catches a peer
who does it anyway, the demo runs one node through this entry point instead of
``swapmeet node run``: the very same node, with that one check switched off, so
that its owner can sell a one-piece listing to two takers. The two complete
exchanges then sit on the cheater's chain and on its victims' chains, and
``swapmeet audit`` reports an ``overcommit`` finding whose evidence names both
exchanges.

No swapmeet module imports this one (tests/test_demo.py does, to check the cheat). It is started
only by :mod:`swapmeet.cli.demo.play` through :class:`swapmeet.cli.localswarm.LocalSwarm`
(``node_module``), as::

    python -m swapmeet.cli.demo.cheater --home HOME node run --listen ... --net ... [--no-mdns] [--bootstrap ...]

It accepts the options of ``swapmeet node run`` that a local swarm passes and
runs the node exactly as that command does (settings through
:func:`swapmeet.node.config.load_config`, then :func:`swapmeet.node.runtime.run_node`).
It refuses to run without the ``node run`` words, so that it is never mistaken
for the ``swapmeet`` command.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from swapmeet.protocol.errors import SwapmeetError

BANNER = "DEMO CHEATER: this node does not check over-commitment (settlement rule R4); it exists only for swapmeet demo"


def disable_over_commit_check() -> None:
    """Make every settlement machine of this process sign over-commitments (the cheat)."""
    from swapmeet.protocol.settlement.reservations import Reservations

    def over_commit(self: Reservations, exchange: object) -> str | None:
        return None  # the cheat: never refuse for quantity

    Reservations.over_commit = over_commit  # type: ignore[method-assign]


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m swapmeet.cli.demo.cheater", description=BANNER)
    parser.add_argument("--home", required=True)
    parser.add_argument("words", nargs=2, metavar="node run")
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--bootstrap", action="append", default=[])
    parser.add_argument("--net", default=None)
    parser.add_argument("--api-port", type=int, default=None)
    parser.add_argument("--mdns", dest="mdns", action="store_true", default=None)
    parser.add_argument("--no-mdns", dest="mdns", action="store_false")
    parser.add_argument("--dht", dest="dht", action="store_true", default=None)
    parser.add_argument("--no-dht", dest="dht", action="store_false")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if args.words != ["node", "run"]:
        parser.error("expected: --home HOME node run [OPTIONS]")
    return args


def _settings(effective: object, run_node: Callable[..., object]) -> dict[str, Any]:
    """Every setting ``run_node`` takes, from the merged configuration, as ``node run`` passes them
    (tuples as lists): whatever settings the node gains, the cheater runs with the same ones."""
    names = [p for p in inspect.signature(run_node).parameters if p not in ("home", "identity", "debug")]
    values = {name: getattr(effective, name) for name in names if hasattr(effective, name)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    from swapmeet.node.config import load_config
    from swapmeet.node.home import Home
    from swapmeet.node.identity_store import load_identity
    from swapmeet.node.runtime import run_node

    home = Home.resolve(args.home)
    flags = {
        "listen": tuple(args.listen),
        "bootstrap": tuple(args.bootstrap),
        "net": args.net,
        "api_port": args.api_port,
        "mdns": args.mdns,
        "dht": args.dht,
    }
    try:
        effective = load_config(home, flags=flags)
        identity = load_identity(home)
        disable_over_commit_check()
        print(BANNER, file=sys.stderr, flush=True)
        run_node(home, identity, debug=args.debug, **_settings(effective, run_node))
    except SwapmeetError as err:
        print(f"demo cheater: error: {' '.join(str(err).split())}", file=sys.stderr)
        return int(getattr(err, "exit_code", 2))
    except KeyboardInterrupt:
        return 0
    finally:
        logging.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
