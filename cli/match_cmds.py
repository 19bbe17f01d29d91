"""``swapmeet match``: barter rings, from a TradeMaximizer want-list file or from the running node's book.

- ``swapmeet match --wants FILE [--max-parties K] [--json]`` reads TradeMaximizer's want-list
  format (:mod:`swapmeet.protocol.matching.wantlist`), solves it here, without a node, and prints
  the trade loops and the item summary in TradeMaximizer's style. Each fault in the file is one
  ``swapmeet: line N: ...`` line on stderr (unless ``#! HIDE-ERRORS``); the rest is still read.
- ``swapmeet match [--max-parties K] [--json] [--propose]`` asks the running node for the rings
  through this node in the book it holds; ``--propose`` proposes the rings this node coordinates
  (it has the smallest PeerID among the ring's parties) through the normal N-party settlement.

``--max-parties 0`` means no cap; the default is 8, the settlement's limit. ``--json`` prints
one line, last: for a file ``{"items_traded", "users_trading", "rings": [[{"user", "gives",
"receives"}, ...], ...], "elapsed_s", "bound", "optimal", "gap", "max_parties", "problems"}``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from swapmeet.protocol.errors import SwapmeetError

from .context import App, pass_app
from .output import json_option, print_json

MAX_WANTS_FILE = 64 * 1024 * 1024
DEFAULT_PARTIES = 8
LIVE_PARTIES = 8  # the settlement's limit


class BadWantsFile(SwapmeetError):
    """The want-list file cannot be read at all (missing, too large, not text) or is too large to solve."""


def _read(path: str) -> str:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_WANTS_FILE:
            raise BadWantsFile(f"{path}: {size} bytes, at most {MAX_WANTS_FILE}")
        return p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadWantsFile(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise BadWantsFile(f"{path}: {err.strerror or err}") from None


def solve_wants(text: str, max_parties: int, budget_s: float) -> tuple[Any, Any, float]:
    """(want list, solution, seconds): the file's text parsed and solved."""
    from swapmeet.protocol.matching import graph as wg
    from swapmeet.protocol.matching import wantlist
    from swapmeet.protocol.matching.solve import solve

    started = time.perf_counter()
    wl = wantlist.parse(text)
    try:
        solution = solve(wl.graph(), max_parties, budget_s=budget_s)
    except wg.GraphTooLarge as err:
        raise BadWantsFile(f"the want lists are too large to solve: {err}") from None
    return wl, solution, time.perf_counter() - started


def wants_json(wl: Any, solution: Any, elapsed_s: float, max_parties: int) -> dict[str, Any]:
    from swapmeet.protocol.matching import wantlist

    return {
        "items_traded": solution.items_traded,
        "users_trading": solution.users_trading,
        "rings": [
            [{"user": s.user, "gives": s.gives, "receives": s.receives} for s in loop]
            for loop in wantlist.loops(wl, solution.rings)
        ],
        "elapsed_s": round(elapsed_s, 4),
        "bound": solution.bound,
        "optimal": solution.optimal,
        "gap": round(solution.gap, 6),
        "max_parties": max_parties,
        "problems": [str(p) for p in wl.problems],
    }


def _print_wants(wl: Any, solution: Any, elapsed_s: float, max_parties: int) -> None:
    from swapmeet.protocol.matching import wantlist

    if not wl.has("HIDE-ERRORS"):
        for problem in wl.problems:
            click.echo(f"swapmeet: {problem}", err=True)
    if wl.options:
        click.echo("Options: " + " ".join(wl.options))
    if wl.inert:
        click.echo("Options without effect here: " + " ".join(wl.inert))
    cap = "no cap" if max_parties == 0 else f"at most {max_parties} items a loop"
    status = "optimal" if solution.optimal else f"best found, bound {solution.bound} (gap {solution.gap:.1%})"
    click.echo(f"Rings: {cap}; {status}")
    click.echo()
    for line in wantlist.report(wl, solution.rings, elapsed_s, solution.users_trading):
        click.echo(line)


@click.command("match")
@click.option("--wants", "wants", metavar="FILE", default=None, help="A TradeMaximizer want-list file to solve.")
@click.option(
    "--max-parties",
    "max_parties",
    type=click.IntRange(min=0),
    default=DEFAULT_PARTIES,
    show_default=True,
    help="At most K parties (items) a ring; 0 for no cap (the live book keeps the settlement's limit of 8).",
)
@click.option(
    "--budget",
    "budget",
    type=click.FloatRange(min=0.1, max=600),
    default=20.0,
    show_default=True,
    help="Seconds the capped solver may search before it reports its best and the bound.",
)
@click.option("--propose", is_flag=True, help="Propose the rings this node coordinates (live book only).")
@json_option
@pass_app
def match(app: App, wants: str | None, max_parties: int, budget: float, propose: bool, as_json: bool) -> None:
    """Find barter rings that move the most items."""
    if max_parties == 1:
        raise click.UsageError("--max-parties is 0 (no cap) or at least 2")
    if wants is not None:
        if propose:
            raise click.UsageError("--propose works on the live book, not with --wants")
        wl, solution, elapsed = solve_wants(_read(wants), max_parties, budget)
        if as_json:
            print_json(wants_json(wl, solution, elapsed, max_parties))
        else:
            _print_wants(wl, solution, elapsed, max_parties)
        return
    if max_parties > LIVE_PARTIES:
        raise click.UsageError(
            f"--max-parties: the live book's rings have at most {LIVE_PARTIES} parties (0: {LIVE_PARTIES})"
        )
    client = app.client(timeout=2 * budget + 60)  # the solver's budget, twice at worst, and loading the book
    result = client.match(max_parties, budget, propose)
    if as_json:
        print_json(result)
    else:
        _print_live(result, client.status()["peer_id"])


def _print_live(result: dict[str, Any], me: str) -> None:
    from .output import items_text, short, short_peer

    def who(peer: str) -> str:
        return "me" if peer == me else short_peer(peer)

    s = result
    status = "optimal" if s["optimal"] else f"best found, bound {s['bound']} (gap {s['gap']:.1%})"
    click.echo(
        f"{s['listings']} listings matched ({s['left_out']} left out: reserved or already in a trade of yours),"
        f" {s['acceptances']['explicit']} explicit and {s['acceptances']['implicit']} implicit acceptances;"
        f" rings of at most {s['max_parties']}: {s['items_traded']} listings would trade in"
        f" {s['rings_in_book']} rings ({status}), {s['elapsed_s']:.2f} s"
    )
    for note in s["notes"]:
        click.echo(f"note: {note}")
    if not s["rings"]:
        click.echo("no ring through you")
        return
    for i, ring in enumerate(s["rings"], start=1):
        size = len({leg["from"] for leg in ring["legs"]})
        click.echo()
        click.echo(f"ring {i}: {size} parties, coordinated by {who(ring['coordinator'])}")
        for leg in ring["legs"]:
            click.echo(
                f"  {who(leg['from'])} gives {who(leg['to'])} {items_text(leg['items'])}"
                f"  ({short(leg['listing'])} {leg['title']})"
            )
        if ring["proposed"]:
            click.echo(f"  proposed: trade {short(ring['proposed'])}; each party signs it with swapmeet sign")
        elif ring["refused"]:
            click.echo(f"  not proposed: {ring['refused']}")
        elif ring["mine"]:
            click.echo("  you coordinate it: swapmeet match --propose proposes it")
        else:
            click.echo(f"  {who(ring['coordinator'])} coordinates it; its proposal will wait in swapmeet trades")


COMMANDS = [match]
