"""How the client commands print: short ids and peers, relative times, item lists, tables, JSON.

Shared by :mod:`.node_cmds`, :mod:`.trade_cmds` and :mod:`.demo_cmd`. Human output is an
aligned table (drawn with ``rich`` only on a terminal, imported only then) with short ids
(the first ``SHORT_ID`` hex digits, which the commands accept back) and relative times
(:mod:`swapmeet.node.textview`, shared with the web UI);
``--json`` (:data:`json_option`) prints the node's answer as one line, in the shapes of
:mod:`swapmeet.node.jsonview`. Light on purpose: imported when ``swapmeet --help`` runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Sequence
from typing import Any

import click
from swapmeet.node.textview import SHORT_ID, items_text, relative, short, short_peer

FORKED = " (forked)"
__all__ = ["SHORT_ID", "items_text", "relative", "short", "short_peer"]  # part of this module's job

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (see swapmeet.node.jsonview).")


def peer_cell(peer: str, forked: Collection[str] = (), me: str | None = None) -> str:
    """A peer for a table: ``me``, or its short form, marked ``(forked)`` if this node holds a fork proof
    against it.

    For ``swapmeet listings``: ``peer_cell(x["author"], [x["author"]] if x.get("author_forked") else ())``.
    """
    text = "me" if me is not None and peer == me else short_peer(peer)
    return text + FORKED if peer in forked else text


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
