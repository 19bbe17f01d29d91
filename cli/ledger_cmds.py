"""``swapmeet ledger``: show, export, import and verify the chains in the local ledger store.

Read-only commands (``show``, ``export``, ``verify``) open the database
read-only and never create it; a home without a ledger simply has no chains.
``import`` creates the home and the database if needed.

Exit codes (the table in :mod:`swapmeet.cli.main`): 0 ok; 1 entries refused
(import) or problems found (verify); 2 bad input (an unknown author, a bad
export file, a damaged database).

``--json`` shapes are rendered by :mod:`swapmeet.node.jsonview` (its ledger store
section), like every other JSON the CLI and the local API print.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import click
from swapmeet.protocol.errors import SwapmeetError

from .context import App, pass_app
from .progress import progress_bar

# The ledger and protocol modules (and jsonview, which renders the JSON) pull in PyNaCl,
# cbor2 and sqlite3: imported inside the commands, so `swapmeet --help` and unrelated
# commands stay fast.
if TYPE_CHECKING:
    from swapmeet.ledger.store import LedgerStore
    from swapmeet.protocol.objects import Item, LedgerEntry

MAX_REFUSALS_SHOWN = 20


class UnknownAuthor(SwapmeetError):
    """The AUTHOR argument names no chain held, or several."""

    exit_code = 2


class ExportExists(SwapmeetError):
    """Refused: the export file exists (use --force)."""

    exit_code = 1


# --------------------------------------------------------------------------- helpers


def _open_readonly(app: App) -> LedgerStore | None:
    """The store opened read-only, or None when this home has no ledger yet."""
    from swapmeet.ledger.errors import LedgerMissing
    from swapmeet.ledger.store import LedgerStore

    try:
        return LedgerStore.open(app.home().ledger_db, readonly=True)
    except LedgerMissing:
        return None


def resolve_author(text: str, known: Iterable[bytes]) -> bytes:
    """The public key an AUTHOR argument names: a full PeerID, or an unambiguous prefix of a held one.

    A prefix may be of the PeerID (``12D3KooW...``) or of the public key in hex.
    """
    from swapmeet.protocol.errors import InvalidObject
    from swapmeet.protocol.identity import public_key_from_peer_id

    known = list(known)
    if text.startswith("12D3KooW"):
        with contextlib.suppress(InvalidObject):
            key = public_key_from_peer_id(text)
            if key in known:
                return key
            raise UnknownAuthor(f"no chain held for author {text}")
    lowered = text.lower()
    matches = [k for k in known if peer_id(k).startswith(text) or (len(text) >= 4 and k.hex().startswith(lowered))]
    if not matches:
        raise UnknownAuthor(f"no chain held for an author matching {text!r}")
    if len(matches) > 1:
        names = ", ".join(peer_id(k) for k in matches[:3])
        more = f" and {len(matches) - 3} more" if len(matches) > 3 else ""
        raise UnknownAuthor(f"{text!r} matches {len(matches)} authors ({names}{more}); give more characters")
    return matches[0]


def peer_id(key: bytes) -> str:
    """The PeerID text of a public key (protocol.identity, imported on first use)."""
    from swapmeet.protocol.identity import peer_id as text_of

    return text_of(key)


def _short(key: bytes) -> str:
    text = peer_id(key)
    return f"{text[:14]}…"


def _items(items: Iterable[Item]) -> str:
    return ", ".join(str(i) for i in items) or "nothing"


def summarize(entry: LedgerEntry) -> str:
    """One line saying what an entry records, from its author's point of view."""
    from swapmeet.protocol.objects import Exchange, Rating, Receipt

    payload = entry.payload
    if isinstance(payload, Exchange):
        me = payload.index_of(entry.author)
        gives = [i for leg in payload.legs if leg.giver == me for i in leg.items]
        gets = [i for leg in payload.legs if leg.receiver == me for i in leg.items]
        others = ", ".join(_short(p) for p in payload.parties if p != entry.author)
        return f"with {others}: gives {_items(gives)}; gets {_items(gets)}"
    if isinstance(payload, Rating):
        comment = f" {payload.comment!r}" if payload.comment else ""
        return f"rates {_short(payload.subject)} {payload.score}/5{comment}"
    if isinstance(payload, Receipt):
        legs = ",".join(str(leg) for leg in payload.legs)
        return f"received legs {legs} of exchange {payload.exchange_id.hex()[:16]}"
    return payload.kind


def _time(t: int) -> str:
    try:
        return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(t)  # beyond what datetime can show: the protocol allows times up to 2**40


def _table(rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> Iterator[str]:
    """Rows as aligned columns (two spaces apart); columns in ``right`` are right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        yield "  ".join(cells).rstrip()


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


# --------------------------------------------------------------------------- commands


@click.group("ledger")
def ledger() -> None:
    """Show, export, import and verify the local ledger (every chain this node holds)."""


@ledger.command("show")
@click.argument("author", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def show(app: App, author: str | None, as_json: bool) -> None:
    """Summarize all chains, or list the entries of AUTHOR's chain.

    AUTHOR is a PeerID (12D3KooW...) or an unambiguous prefix of one held.
    """
    store = _open_readonly(app)
    with contextlib.ExitStack() as stack:
        if store is not None:
            stack.enter_context(store)
        if author is None:
            _show_summary(store, as_json)
        else:
            if store is None:
                raise UnknownAuthor(f"no chain held for {author!r}: this home has no ledger yet")
            _show_chain(store, resolve_author(author, store.heads()), as_json)


def _show_summary(store: LedgerStore | None, as_json: bool) -> None:
    from swapmeet.node import jsonview

    heads = sorted(store.heads().items()) if store else []
    forked = store.forked_authors() if store else set()
    summary = jsonview.ledger(heads, forked, store.counts() if store else None)
    if as_json:
        click.echo(json.dumps(summary))
        return
    chains, totals = summary["chains"], summary["totals"]
    if not chains:
        click.echo("no chains held yet")
        return
    rows = [("AUTHOR", "LENGTH", "HEAD", "FORKED")]
    rows += [(c["author"], str(c["length"]), c["head"]["id"][:16], "FORKED" if c["forked"] else "-") for c in chains]
    for line in _table(rows, right=(1,)):
        click.echo(line)
    forks = f", {_plural(totals['fork_entries'], 'fork entry', 'fork entries')}" if totals["fork_entries"] else ""
    click.echo(f"\n{_plural(totals['chains'], 'chain')}, {_plural(totals['entries'], 'entry', 'entries')}{forks}")


def _show_chain(store: LedgerStore, key: bytes, as_json: bool) -> None:
    head = store.head(key)
    forked = key in store.forked_authors()
    # iter_raw gives the chain entry first at each seq, then any fork entries at that seq.
    entries = _entries_with_forks(store, key)
    if as_json:
        _show_chain_json(key, head, forked, entries)
        return
    length = head[0] if head else 0
    state = "FORKED (see `swapmeet audit`)" if forked else "not forked"
    click.echo(f"chain of {peer_id(key)}: {_plural(length, 'entry', 'entries')}, {state}")
    # Fixed column widths (the seq column sized by the head) so a long chain streams, aligned, without buffering.
    seq_width = max(len("SEQ"), len(str(length)))

    def line(seq: object, time: str, kind: str, id_: str, summary: str) -> str:
        return f"{seq:>{seq_width}}  {time:<19}  {kind:<15}  {id_:<16}  {summary}"

    click.echo(line("SEQ", "TIME (UTC)", "KIND", "ID", "SUMMARY"))
    for entry, is_fork in entries:
        kind = f"{entry.payload.kind}{' (FORK)' if is_fork else ''}"
        click.echo(line(entry.seq, _time(entry.time), kind, entry.id.hex()[:16], summarize(entry)))


def _entries_with_forks(store: LedgerStore, key: bytes) -> Iterator[tuple[LedgerEntry, bool]]:
    from swapmeet.protocol import boundary

    last_seq = 0
    for raw in store.iter_raw(key):
        entry: LedgerEntry = boundary.decode(raw, kind="entry")
        yield entry, entry.seq == last_seq
        last_seq = entry.seq


def _show_chain_json(
    key: bytes, head: tuple[int, bytes] | None, forked: bool, entries: Iterator[tuple[LedgerEntry, bool]]
) -> None:
    # jsonview's "chain with entries", streamed as it is produced: a long chain never sits in
    # memory as one JSON document.
    from swapmeet.node import jsonview

    info = jsonview.chain(key, head, forked)
    out = sys.stdout
    out.write(json.dumps(info)[:-1] + ', "entries": [')
    forks: list[dict[str, Any]] = []
    first = True
    for entry, is_fork in entries:
        row = jsonview.chain_entry(entry, summarize(entry))
        if is_fork:
            forks.append(row)
            continue
        out.write(("" if first else ", ") + json.dumps(row))
        first = False
    out.write(f'], "forks": {json.dumps(forks)}}}\n')
    out.flush()


@ledger.command("export")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@click.option("--author", "author", metavar="AUTHOR", help="Export only this author's chain (and its forks).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: file, entries, author.")
@pass_app
def export(app: App, file: str, author: str | None, force: bool, as_json: bool) -> None:
    """Write the ledger (or one author's chain) to FILE, a CBOR sequence any swapmeet can import or audit."""
    if os.path.exists(file) and not force:
        raise ExportExists(f"{file} exists; use --force to overwrite it")
    from swapmeet.ledger.export_file import write_export

    store = _open_readonly(app)
    with contextlib.ExitStack() as stack:
        if store is not None:
            stack.enter_context(store)
        key = resolve_author(author, store.heads() if store else ()) if author is not None else None
        raws = store.iter_raw(key) if store is not None else iter(())
        count = write_export(file, raws, author=key)
    if as_json:
        from swapmeet.node import jsonview

        click.echo(json.dumps(jsonview.export_result(file, count, key)))
        return
    whose = f"the chain of {peer_id(key)}" if key else "the ledger"
    click.echo(f"exported {_plural(count, 'entry', 'entries')} of {whose} to {file}")


@ledger.command("import")
@click.argument("file", type=click.Path())  # the reader refuses anything but a regular file, in one line
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def import_(app: App, file: str, as_json: bool) -> None:
    """Import a ledger export FILE: every entry is verified; chains are extended, forks kept as evidence.

    The file is checked in full before anything is stored: a truncated,
    garbage or wrong-kind file imports nothing (exit 2). Entries that do not
    verify or do not link are refused and listed (exit 1); the rest is stored.
    """
    from swapmeet.ledger.export_file import read_export, validate_export
    from swapmeet.ledger.store import LedgerStore

    total = validate_export(file)  # framing of the whole file first: a bad file stores nothing
    home = app.home().ensure()
    with LedgerStore.open(home.ledger_db) as store, progress_bar("importing", total, cumulative=False) as progress:
        result = store.ingest(read_export(file), progress=progress)
    if as_json:
        from swapmeet.node import jsonview

        click.echo(json.dumps(jsonview.import_result(file, total, result)))
    else:
        click.echo(
            f"imported {file}: {_plural(result.accepted, 'new entry', 'new entries')},"
            f" {result.duplicates} already held, {_plural(len(result.forks), 'fork entry', 'fork entries')},"
            f" {result.refused} refused"
        )
        for refusal in result.refusals[:MAX_REFUSALS_SHOWN]:
            click.echo(f"  refused {refusal}")
        if result.refused > MAX_REFUSALS_SHOWN:
            click.echo(f"  ... and {result.refused - MAX_REFUSALS_SHOWN} more (use --json for the full list)")
        if result.forks:
            authors = {a for a, _ in result.forks}
            click.echo(f"  {_plural(len(authors), 'author')} forked: kept as evidence (see `swapmeet audit`)")
    if result.refused:
        click.get_current_context().exit(1)


@ledger.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def verify(app: App, as_json: bool) -> None:
    """Re-verify every stored entry (signatures, payload rules, links, indexes); exit 1 on any problem.

    Forks are not problems of the store: they are kept as evidence and
    reported by `swapmeet audit`.
    """
    store = _open_readonly(app)
    if store is None:
        report = None
    else:
        with store:
            counts = store.counts()
            with progress_bar("verifying", counts.entries + counts.forks, cumulative=False) as progress:
                report = store.verify(progress=progress)
    if as_json:
        from swapmeet.node import jsonview

        click.echo(json.dumps(jsonview.verify_report(report)))
    elif report is None:
        click.echo("no ledger yet: nothing to verify")
    else:
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        forks = ""
        if report.forks:
            forks = (
                f", {_plural(report.forks, 'fork entry', 'fork entries')}"
                f" ({_plural(report.forked_authors, 'forked author')}, kept as evidence)"
            )
        status = "ok" if report.ok else f"FAILED, {_plural(report.problem_count, 'problem')} found"
        click.echo(
            f"verified {_plural(report.entries, 'entry', 'entries')} in {_plural(report.chains, 'chain')}{forks}:"
            f" {status}"
        )
    if report is not None and not report.ok:
        click.get_current_context().exit(1)


COMMANDS = [ledger]
