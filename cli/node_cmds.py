"""Commands that run a node or talk to the running one through its local API.

``node run`` starts the node in the foreground (until Ctrl-C / SIGTERM);
``node status``, ``node stop``, ``peers``, ``publish``, ``withdraw`` and
``listings`` are clients of the node running for the same home: they find its
port and token in ``<home>/api.cookie``. When none runs they say so in one line
and exit 3. Every client command takes ``--json`` for scripts (shapes in
:mod:`swapmeet.node.jsonview`); human output is an aligned table (drawn with
``rich`` only on a terminal) with short ids (the first 12 hex digits, which
``withdraw`` accepts back) and relative times.

Input is checked here before the node is contacted (items, times, ids,
authors), so a typo is reported with exit 2 even when no node runs.

Heavy modules (the runtime, rich) are imported inside the commands: ``swapmeet
--help`` must stay fast.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click
from swapmeet.node import identity_store
from swapmeet.node.config import DEFAULT_LISTEN, DEFAULT_NET, load_config
from swapmeet.protocol.errors import InvalidObject, SwapmeetError
from swapmeet.protocol.objects import LISTING_TYPES

from .context import App, pass_app

if TYPE_CHECKING:
    from swapmeet.node.home import Home

    from .client import ApiClient

SHORT_ID = 12
STOP_WAIT_S = 30.0
MAX_ITEM_NAME = 80  # the protocol's limits (PROTOCOL.md 10.8), checked before the node is asked
MAX_UNIT = 16

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


class NodeAlreadyRunning(SwapmeetError):
    """Refused: a node already answers for this home."""

    exit_code = 1


class NodeDidNotStop(SwapmeetError):
    exit_code = 1


# --- parsing the options (before any node is contacted) ---


def parse_duration(text: str) -> int | None:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` (or ``"1d12h"``) in seconds; None if not a duration."""
    text = text.strip().lower()
    if not text or not re.fullmatch(rf"(?:{_DURATION.pattern}\s*)+", text):
        return None
    return sum(int(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))


def parse_when(text: str, now: int, option: str) -> int:
    """An absolute time: a duration from ``now``, Unix seconds, or an ISO date/time (local time if no zone)."""
    text = text.strip()
    seconds = parse_duration(text)
    if seconds is not None:
        return now + seconds
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidObject(
            option, f"expected a duration (7d, 12h, 30m), Unix seconds or an ISO date, got {text!r}", "format"
        ) from None
    return int(moment.timestamp())  # naive -> local time, which is what a person typing a date means


def parse_expires(text: str) -> dict[str, int]:
    """``--expires``: a duration is sent as relative (the node's clock decides), anything else as absolute."""
    seconds = parse_duration(text)
    if seconds is not None:
        if seconds <= 0:
            raise InvalidObject("--expires", f"must be a positive duration, got {text!r}", "format")
        return {"expires_in_s": seconds}
    return {"expires": parse_when(text, int(time.time()), "--expires")}


def parse_window(text: str, now: int) -> list[int]:
    """``--window START..END`` (also ``START,END``), each end as in :func:`parse_when`."""
    parts = re.split(r"\.\.|,", text, maxsplit=1)
    if len(parts) != 2:
        raise InvalidObject("--window", f"expected START..END (e.g. 1d..3d or 2030-05-01..2030-05-03), got {text!r}")
    return [parse_when(parts[0], now, "--window"), parse_when(parts[1], now, "--window")]


def parse_items(values: Sequence[str], option: str) -> list[dict[str, Any]]:
    """``QTY [UNIT] x ITEM`` texts as item objects, each checked against the protocol's limits.

    The quantity, item and unit limits are checked here, not only at the node, so that a typo
    such as ``0 x bike`` is reported (exit 2, naming ``option``) even when no node runs.
    """
    from swapmeet.protocol.boundary import MAX_QTY
    from swapmeet.protocol.build import parse_item

    items = []
    for text in values:
        item = parse_item(text, option)
        if not 1 <= item.qty <= MAX_QTY:
            raise InvalidObject(
                option, f"the quantity must be a whole number from 1 to {MAX_QTY}, got {text!r}", "range"
            )
        if len(item.item) > MAX_ITEM_NAME or len(item.unit) > MAX_UNIT:
            raise InvalidObject(
                option, f"item names have at most {MAX_ITEM_NAME} characters, units {MAX_UNIT}, got {text!r}", "length"
            )
        items.append(item.to_cbor())
    return items


_items = parse_items  # the old private name


# --- output helpers ---


def short(hex_id: str) -> str:
    return hex_id[:SHORT_ID]


def short_peer(peer_id: str) -> str:
    # every Ed25519 PeerID starts with 12D3KooW: the tail is what tells them apart
    return f"{peer_id[:4]}..{peer_id[-6:]}" if len(peer_id) > 12 else peer_id


def relative(ts: int, now: float | None = None) -> str:
    """``"in 6d"``, ``"in 3h"``, ``"2m ago"``: the largest unit that fits, rounded to the nearest.

    Nearest, not down: a listing published for 7 days should read "in 7d", not "in 6d", a second later.
    """
    delta = int(ts - (time.time() if now is None else now))
    span = abs(delta)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if span >= size:
            text = f"{(span + size // 2) // size}{unit}"
            break
    else:
        text = f"{span}s"
    return f"in {text}" if delta >= 0 else f"{text} ago"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    parts.append(f"{minutes}m" if (minutes or hours or days) else f"{secs}s")
    return " ".join(parts)


def items_text(items: Sequence[dict[str, Any]]) -> str:
    return ", ".join(
        f"{i['qty']} x {i['item']}" if i.get("unit", "pc") == "pc" else f"{i['qty']} {i['unit']} x {i['item']}"
        for i in items
    )


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=None, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Aligned columns: a rich table on a terminal, plain text (two spaces apart) otherwise."""
    if sys.stdout.isatty():
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # Text: titles are data, never rich markup
        Console().print(table)
        return
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def print_fields(rows: Sequence[tuple[str, str | Sequence[str]]]) -> None:
    """``label  value`` lines, aligned; a list value continues on indented lines."""
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        values = [value] if isinstance(value, str) else (list(value) or ["(none)"])
        click.echo(f"{label:<{width}}  {values[0]}")
        for extra in values[1:]:
            click.echo(f"{'':<{width}}  {extra}")


def _client(app: App, timeout: float | None = None) -> ApiClient:
    from .client import DEFAULT_TIMEOUT, ApiClient

    return ApiClient.for_home(app.home(), timeout=timeout or DEFAULT_TIMEOUT)


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (see swapmeet.node.jsonview).")


# --- node run / status / stop ---


@click.group("node")
def node() -> None:
    """Run this home's node, or ask the running one how it is."""


@node.command("run")
@click.option(
    "--listen",
    multiple=True,
    metavar="MULTIADDR",
    help=f"libp2p listen address /ip4|ip6/ADDR/tcp/PORT, repeatable [default: {DEFAULT_LISTEN[0]};"
    " config: listen; env: SWAPMEET_LISTEN].",
)
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the local API on 127.0.0.1; 0: any free port, clients find it in <home>/api.cookie"
    " [default: 0; config: api_port; env: SWAPMEET_API_PORT].",
)
@click.option(
    "--net",
    default=None,
    help=f"Network name: separate markets never mix [default: {DEFAULT_NET}; config: net; env: SWAPMEET_NET].",
)
@click.option(
    "--bootstrap",
    multiple=True,
    metavar="MULTIADDR",
    help="A peer to dial, .../tcp/PORT/p2p/PEERID, repeatable [config: bootstrap; env: SWAPMEET_BOOTSTRAP].",
)
@click.option(
    "--mdns/--no-mdns",
    default=None,
    help="Discover peers on the local network [default: on; config: mdns; env: SWAPMEET_MDNS].",
)
@click.option(
    "--dht/--no-dht",
    default=None,
    help="Run the Kademlia DHT for peer routing [default: on; config: dht; env: SWAPMEET_DHT].",
)
@click.option(
    "--archive/--no-archive",
    default=None,
    help="Replicate every ledger chain heard of, not only counterparties' and followed ones"
    " [default: off; config: archive; env: SWAPMEET_ARCHIVE].",
)
@click.option(
    "--follow",
    multiple=True,
    metavar="PEERID",
    help="Also replicate this author's ledger chain, repeatable [config: follow; env: SWAPMEET_FOLLOW].",
)
@pass_app
def run(
    app: App,
    listen: tuple[str, ...],
    api_port: int | None,
    net: str | None,
    bootstrap: tuple[str, ...],
    mdns: bool | None,
    dht: bool | None,
    archive: bool | None,
    follow: tuple[str, ...],
) -> None:
    """Run the node in the foreground until Ctrl-C or SIGTERM.

    Settings come from the flags, else SWAPMEET_* environment variables, else
    <home>/config.toml, else the defaults: `swapmeet config show` prints them.
    The identity key is unlocked with SWAPMEET_PASSPHRASE, or a prompt on a
    terminal. Runs one node per home: refuses if one already answers.
    """
    home = app.home()
    # Settings first: a typo in a flag, a variable or config.toml is reported (exit 2) before anything else.
    flags = {
        "listen": listen,
        "api_port": api_port,
        "net": net,
        "bootstrap": bootstrap,
        "mdns": mdns,
        "dht": dht,
        "archive": archive,
        "follow": follow,
    }
    effective = load_config(home, flags=flags)
    _refuse_if_running(home)
    identity = identity_store.load_identity(home)
    from swapmeet.node.runtime import run_node  # libp2p: only when a node really starts

    run_node(
        home,
        identity,
        listen=list(effective.listen),
        api_port=effective.api_port,
        net=effective.net,
        bootstrap=list(effective.bootstrap),
        mdns=effective.mdns,
        dht=effective.dht,
        archive=effective.archive,
        follow=list(effective.follow),
        debug=app.debug,
    )


def _refuse_if_running(home: Home) -> None:
    from .client import ApiClient

    try:
        client = ApiClient.for_home(home, timeout=3.0)
        client.status()
    except SwapmeetError:
        return  # nothing answers: a cookie left behind is simply overwritten
    raise NodeAlreadyRunning(
        f"a node is already running for home {home} (pid {client.cookie.pid}, API port {client.cookie.port});"
        f" stop it first with: swapmeet --home {_quote(home)} node stop"
    )


def _quote(home: Home) -> str:
    import shlex

    return shlex.quote(str(home))


@node.command("status")
@_json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show the running node: peer id, listen addrs, peers, book size (exit 3 if none runs)."""
    client = _client(app)
    info = client.status()
    if as_json:
        print_json(info)
        return
    book = info.get("book", {})
    print_fields(
        [
            ("peer id", str(info.get("peer_id"))),
            ("net", str(info.get("net"))),
            ("addrs", [str(a) for a in info.get("addrs", [])]),
            ("peers", str(info.get("peers"))),
            (
                "book",
                f"{book.get('listings', 0)} listings, {book.get('offers', 0)} offers,"
                f" {book.get('withdrawals', 0)} withdrawals",
            ),
            ("trades", _trades_line(info.get("trades") or {})),
            ("uptime", duration(float(info.get("uptime_s", 0)))),
            ("version", str(info.get("version"))),
            ("api", f"127.0.0.1:{client.cookie.port} (pid {client.cookie.pid})"),
        ]
    )


def _trades_line(t: dict[str, int]) -> str:
    """``2 offers to answer, 1 awaiting your signature, 3 pending, 5 complete, 1 lapsed``."""
    parts = [
        f"{t.get('offers_to_answer', 0)} offers to answer",
        f"{t.get('awaiting_you', 0)} awaiting your signature",
        f"{t.get('pending', 0)} pending",
        f"{t.get('complete', 0)} complete",
        f"{t.get('lapsed', 0)} lapsed",
    ]
    return ", ".join(parts)


@node.command("stop")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0),
    default=STOP_WAIT_S,
    show_default=True,
    help="Seconds to wait for the node to exit (0: do not wait).",
)
@_json_option
@pass_app
def stop(app: App, wait_s: float, as_json: bool) -> None:
    """Ask the running node to shut down cleanly, and wait until it has."""
    client = _client(app)
    client.stop()
    stopped = client.wait_stopped(wait_s) if wait_s > 0 else False
    if wait_s > 0 and not stopped:
        raise NodeDidNotStop(f"the node (pid {client.cookie.pid}) is still answering after {wait_s:g}s")
    if as_json:
        print_json({"stopping": True, "stopped": stopped, "pid": client.cookie.pid})
    else:
        click.echo(f"node stopped (pid {client.cookie.pid})" if stopped else f"node stopping (pid {client.cookie.pid})")


# --- peers, publish, withdraw, listings ---


@click.command("peers")
@_json_option
@pass_app
def peers(app: App, as_json: bool) -> None:
    """List the peers the running node is connected to."""
    found = _client(app).peers()
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no peers connected")
        return
    rows = []
    for peer in found:
        addrs = [str(a) for a in peer.get("addrs", [])]
        more = f" (+{len(addrs) - 1} more)" if len(addrs) > 1 else ""
        rows.append([str(peer.get("peer_id")), (addrs[0] if addrs else "-") + more])
    print_table(["PEER ID", "ADDRS"], rows)


@click.command("publish")
@click.option("--title", required=True, help="What it is, in a few words (at most 120 characters).")
@click.option("--have", "have", multiple=True, required=True, metavar="'QTY [UNIT] x ITEM'", help="Repeatable.")
@click.option("--want", "want", multiple=True, metavar="'QTY [UNIT] x ITEM'", help="Wanted in return, repeatable.")
@click.option("--kind", type=click.Choice(LISTING_TYPES), default="goods", show_default=True)
@click.option("--desc", default="", help="A longer description.")
@click.option("--tag", "tags", multiple=True, help="A lowercase tag [a-z0-9-], repeatable.")
@click.option("--category", default="", help="A path such as tools/garden.")
@click.option("--expires", metavar="WHEN", help="7d, 12h, 30m, Unix seconds or an ISO date [default: 7d].")
@click.option("--window", default=None, metavar="START..END", help="Rental period (rentals need one), e.g. 1d..3d.")
@click.option("--due", default=None, metavar="WHEN", help="Repayment time of a loan.")
@click.option("--loc", default=None, metavar="GEOHASH", help="Rough location, a geohash of at most 5 characters.")
@_json_option
@pass_app
def publish(
    app: App,
    title: str,
    have: tuple[str, ...],
    want: tuple[str, ...],
    kind: str,
    desc: str,
    tags: tuple[str, ...],
    category: str,
    expires: str | None,
    window: str | None,
    due: str | None,
    loc: str | None,
    as_json: bool,
) -> None:
    """Sign and publish a listing: what you have and what you want for it.

    Example: swapmeet publish --title "Road bike" --have "1 x road bike" --want "20 kg x apples" --tag bikes
    """
    now = int(time.time())
    spec: dict[str, Any] = {
        "title": title,
        "have": parse_items(have, "--have"),
        "want": parse_items(want, "--want"),
        "type": kind,
        "desc": desc,
        "tags": list(tags),
        "category": category,
        **(parse_expires(expires) if expires is not None else {}),
    }
    if window is not None:
        spec["window"] = parse_window(window, now)
    if due is not None:
        spec["due"] = parse_when(due, now, "--due")
    if loc is not None:
        spec["loc"] = loc
    listing = _client(app).publish(spec)
    if as_json:
        print_json(listing)
        return
    expiry = relative(listing["expires"])
    click.echo(f"published {short(listing['id'])}  {listing['title']}  ({listing['type']}, expires {expiry})")


@click.command("withdraw")
@click.argument("listing_id", metavar="ID")
@_json_option
@pass_app
def withdraw(app: App, listing_id: str, as_json: bool) -> None:
    """Withdraw one of your listings (ID: full hex id or an unambiguous prefix, e.g. the short id)."""
    from swapmeet.node.api import parse_id

    parse_id(listing_id, "ID")  # a malformed id is a usage error, node or not
    client = _client(app)
    with _hint_on_unknown("`swapmeet listings --author` with your PeerID lists your listings and their ids"):
        # Resolve the prefix first, so that the answer can say which listing it was.
        target = client.get(listing_id)
        result = client.withdraw(target["id"])
    if as_json:
        print_json(result)
        return
    click.echo(
        f"withdrew {short(target['id'])}  {target.get('title', '')}  (withdrawal {short(result['id'])},"
        " announced to peers)"
    )


@contextlib.contextmanager
def _hint_on_unknown(hint: str) -> Iterator[None]:
    """Add what to do to the node's "no object with ..." answer (same class, same exit code)."""
    from swapmeet.node.api import UnknownObject

    try:
        yield
    except UnknownObject as err:
        raise UnknownObject(f"{err}; {hint}") from None


@click.command("listings")
@click.argument("query", nargs=-1)
@click.option("--kind", type=click.Choice(LISTING_TYPES), default=None, help="Only this kind.")
@click.option("--category", default=None, help="Only this category (e.g. tools/garden).")
@click.option("--author", default=None, metavar="PEERID", help="Only by this author (PeerID or hex public key).")
@click.option("--wants", default=None, metavar="ITEM", help="Only listings that want this item.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@_json_option
@pass_app
def listings(
    app: App,
    query: tuple[str, ...],
    kind: str | None,
    category: str | None,
    author: str | None,
    wants: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Search the live listings the node knows (QUERY: words in title, description, tags)."""
    if author is not None:
        from swapmeet.node.api import parse_author

        parse_author(author)  # fail here, with exit 2, rather than at the node
    found = _client(app).listings(
        " ".join(query) or None, type=kind, category=category, author=author, wants=wants, limit=limit
    )
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no listings found")
        return
    from .trade_cmds import peer_cell  # trade_cmds imports this module

    now = time.time()
    rows = [
        [
            short(x["id"]),
            x["type"],
            x["title"],
            items_text(x["have"]),
            items_text(x["want"]) or "-",
            peer_cell(x["author"], [x["author"]] if x.get("author_forked") else ()),
            relative(x["expires"], now),
        ]
        for x in found
    ]
    print_table(["ID", "KIND", "TITLE", "HAVE", "WANT", "AUTHOR", "EXPIRES"], rows)


COMMANDS = [node, peers, publish, withdraw, listings]
