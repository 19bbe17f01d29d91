"""Commands that run a node or talk to the running one through its local API.

``node run`` starts the node in the foreground (until Ctrl-C / SIGTERM);
``node status``, ``node stop``, ``peers``, ``publish``, ``import`` (many listings from a file),
``withdraw`` and
``listings`` are clients of the node running for the same home: they find its
port and token in ``<home>/api.cookie``. When none runs they say so in one line
and exit 3. Every client command takes ``--json`` for scripts (shapes in
:mod:`swapmeet.node.jsonview`); human output is an aligned table (drawn with
``rich`` only on a terminal) with short ids (the first 12 hex digits, which
``withdraw`` accepts back) and relative times (helpers in :mod:`.output`).

Input is checked here before the node is contacted (items and times with
:mod:`.parsing`, ids, authors), so a typo is reported with exit 2 even when no
node runs.

Heavy modules (the runtime, rich) are imported inside the commands: ``swapmeet
--help`` must stay fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
from swapmeet.node import identity_store
from swapmeet.node.config import DEFAULT_LISTEN, DEFAULT_NET, load_config
from swapmeet.protocol.errors import InvalidObject, SwapmeetError
from swapmeet.protocol.objects import LISTING_TYPES

from .context import App, pass_app
from .listing_options import json_type, listing_body, listing_options, record_body, resolve_refs, upload_files
from .output import duration, items_text, json_option, peer_cell, print_fields, print_json, print_table, relative, short

if TYPE_CHECKING:
    from swapmeet.node.home import Home

STOP_WAIT_S = 30.0
MAX_CATALOGUE_BYTES = 4 * 1024 * 1024  # 256 listings of the largest size fit easily; photos are separate files


class NodeAlreadyRunning(SwapmeetError):
    """Refused: a node already answers for this home."""

    exit_code = 1


class NodeDidNotStop(SwapmeetError):
    exit_code = 1


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
    "--relay-service/--no-relay-service",
    default=None,
    help="Offer a capped Circuit Relay v2 service, so that peers behind NATs reach each other through us"
    " [default: on; config: relay_service; env: SWAPMEET_RELAY_SERVICE].",
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
    relay_service: bool | None,
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
        "relay_service": relay_service,
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
        relay_service=effective.relay_service,
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
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show the running node: peer id, listen addrs, peers, book size (exit 3 if none runs)."""
    client = app.client()
    info = client.status()
    if as_json:
        print_json(info)
        return
    book = info.get("book", {})
    print_fields(
        [
            ("peer id", str(info.get("peer_id"))),
            ("net", str(info.get("net"))),
            ("reachability", str(info.get("reachability", "unknown"))),
            ("addrs", [str(a) for a in info.get("addrs", [])]),
            ("relay", _relay_line(info.get("relay") or {})),
            ("peers", str(info.get("peers"))),
            (
                "book",
                f"{book.get('listings', 0)} listings, {book.get('offers', 0)} offers,"
                f" {book.get('withdrawals', 0)} withdrawals",
            ),
            ("trades", _trades_line(info.get("trades") or {})),
            ("last hour", _activity_line(info.get("activity") or {})),
            ("uptime", duration(float(info.get("uptime_s", 0)))),
            ("version", str(info.get("version"))),
            ("api", f"127.0.0.1:{client.cookie.port} (pid {client.cookie.pid})"),
        ]
    )


def _relay_line(r: dict[str, Any]) -> str:
    """``service on, 3 circuits, 1.2 MB relayed; reservations on 2 relays``."""
    held = r.get("reservations") or []
    service = (
        f"service on, {r.get('circuits_relayed', 0)} circuits, {r.get('bytes_relayed', 0)} bytes relayed"
        if r.get("service")
        else "service off"
    )
    punched = r.get("hole_punches") or {}
    holes = f"; hole punches {punched.get('direct', 0)} direct, {punched.get('failed', 0)} failed" if punched else ""
    return f"{service}; reservations on {len(held)} relay(s){holes}"


def _activity_line(a: dict[str, int]) -> str:
    """``gossip 120 in (30 new), 12 out; sync 4 sessions, 250 objects; 0 refused``."""
    return (
        f"gossip {a.get('gossip_in', 0)} in ({a.get('gossip_new', 0)} new), {a.get('gossip_out', 0)} out;"
        f" sync {a.get('sync_sessions', 0)} sessions, {a.get('sync_objects', 0)} objects;"
        f" {a.get('refused', 0)} refused"
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
@json_option
@pass_app
def stop(app: App, wait_s: float, as_json: bool) -> None:
    """Ask the running node to shut down cleanly, and wait until it has."""
    client = app.client()
    client.stop()
    stopped = client.wait_stopped(wait_s) if wait_s > 0 else False
    if wait_s > 0 and not stopped:
        raise NodeDidNotStop(f"the node (pid {client.cookie.pid}) is still answering after {wait_s:g}s")
    if as_json:
        from swapmeet.node import jsonview

        print_json(jsonview.node_stop(stopped, client.cookie.pid))
    else:
        click.echo(f"node stopped (pid {client.cookie.pid})" if stopped else f"node stopping (pid {client.cookie.pid})")


# --- peers, publish, withdraw, listings ---


@click.command("peers")
@json_option
@pass_app
def peers(app: App, as_json: bool) -> None:
    """List the peers the running node is connected to."""
    found = app.client().peers()
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
        conns = peer.get("connections") or []
        via = "relayed" if conns and all(c.get("relayed") for c in conns) else "direct" if conns else "-"
        if via == "relayed" and str(peer.get("hole_punch") or "").startswith("failed"):
            via = "relayed (hole punch failed)"
        rows.append([str(peer.get("peer_id")), via, (addrs[0] if addrs else "-") + more])
    print_table(["PEER ID", "CONNECTION", "ADDRS"], rows)


@click.command("publish")
@listing_options
@json_option
@pass_app
def publish(app: App, as_json: bool, **values: Any) -> None:
    """Sign and publish a listing: what you have and what you want for it.

    Example: swapmeet publish --title "Road bike" --have "1 x road bike" --want "20 kg x apples" --tag bikes
    --photo bike.jpg
    """
    spec = listing_body(values, int(time.time()))
    client = app.client()
    listing = client.publish(upload_files(resolve_refs(spec, client), client))
    if as_json:
        print_json(listing)
        return
    expiry = relative(listing["expires"])
    click.echo(f"published {short(listing['id'])}  {listing['title']}  ({listing['type']}, expires {expiry})")


@click.command("import")
@click.argument("catalogue", metavar="FILE")
@json_option
@pass_app
def import_listings(app: App, catalogue: str, as_json: bool) -> None:
    """Publish many listings at once from a JSON file: all of them, or none.

    FILE holds a list of objects keyed by publish's options without the dashes, a list for a
    repeatable one; photo paths are relative to FILE. At most 256 listings (one gossip message's
    worth): they are stored at once and reach the swarm together, 40 at once and then 8 every
    2 seconds (below the rate every node allows an author). Example FILE:

    [{"title": "Road bike", "have": "1 x road bike", "want": ["20 kg x apples"], "tag": "bikes"}]
    """
    records, now = read_catalogue(catalogue), int(time.time())
    base = os.path.dirname(os.path.abspath(catalogue))
    bodies = [record_body(r, f"{catalogue}[{i}]", base, now) for i, r in enumerate(records)]  # before the node
    client = app.client()
    bodies = [upload_files(resolve_refs(body, client), client) for body in bodies]
    try:
        published = client.publish_many(bodies)
    except InvalidObject as err:  # the node names the listing as listings[i]: say which record of the file
        if not (m := re.match(r"listings\[(\d+)\]\.", err.path)):
            raise
        reason = err.reason.removeprefix(f"{err.path}: ")
        raise InvalidObject(err.path[m.end() :], reason, err.code).under(f"{catalogue}[{m[1]}]") from None
    if as_json:
        print_json(published)
        return
    print_table(["ID", "TITLE", "EXPIRES"], [[short(x["id"]), x["title"], relative(x["expires"])] for x in published])
    click.echo(f"published {len(published)} listing(s)")


def read_catalogue(path: str) -> list[object]:
    """The records of a catalogue file: a JSON list of 1 to MAX_IMPORT objects (one-line errors)."""
    from swapmeet.ledger.localfile import open_regular
    from swapmeet.node.contract import MAX_IMPORT

    try:
        with open_regular(path) as f:
            text = f.read(MAX_CATALOGUE_BYTES + 1)
    except OSError as exc:
        raise InvalidObject(path, f"cannot read it: {exc.strerror}", "file") from None
    if len(text) > MAX_CATALOGUE_BYTES:
        raise InvalidObject(path, f"over {MAX_CATALOGUE_BYTES} bytes", "file")
    try:
        records = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidObject(path, f"not JSON: {exc}", "format") from None
    if not isinstance(records, list):
        raise InvalidObject(path, f"expected a list of listings, got {json_type(records)}", "type")
    if not 1 <= len(records) <= MAX_IMPORT:
        split = ": split the file" if records else ""
        raise InvalidObject(path, f"expected 1 to {MAX_IMPORT} listings, got {len(records)}{split}", "length")
    return records


@click.command("withdraw")
@click.argument("listing_id", metavar="ID")
@json_option
@pass_app
def withdraw(app: App, listing_id: str, as_json: bool) -> None:
    """Withdraw one of your listings (ID: full hex id or an unambiguous prefix, e.g. the short id)."""
    from swapmeet.node.contract import parse_id

    parse_id(listing_id, "ID")  # a malformed id is a usage error, node or not
    client = app.client()
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
    from swapmeet.node.contract import UnknownObject

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
@json_option
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
        from swapmeet.node.contract import parse_author

        parse_author(author)  # fail here, with exit 2, rather than at the node
    found = app.client().listings(
        " ".join(query) or None, type=kind, category=category, author=author, wants=wants, limit=limit
    )
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no listings found")
        return
    now = time.time()
    rows = [
        [
            short(x["id"]),
            x["type"],
            x["title"] + _photos_note(x),
            items_text(x["have"]),
            items_text(x["want"]) or "-",
            peer_cell(x["author"], [x["author"]] if x.get("author_forked") else ()),
            relative(x["expires"], now),
        ]
        for x in found
    ]
    print_table(["ID", "KIND", "TITLE", "HAVE", "WANT", "AUTHOR", "EXPIRES"], rows)


def _photos_note(listing: dict[str, Any]) -> str:
    count = len(listing.get("photos") or ())
    return f" [{count} photo{'s' if count > 1 else ''}]" if count else ""


COMMANDS = [node, peers, publish, import_listings, withdraw, listings]
