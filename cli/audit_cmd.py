"""``swapmeet audit [FILE...] [--json]``: audit the local ledger store or export files.

With no FILE the chains in this node's ledger store are audited (a home with
no ledger yet is an empty, clean audit); with files, the entries of every
export file together, as one set of chains. Exit codes: 0 clean, 1 findings,
2 unusable input (a missing, truncated or garbage file, a damaged database),
with a one-line error.

Human output is a totals line, then one line per finding with its key
evidence (ids shortened; ``--json`` has them in full, with the proofs). A
progress bar is drawn on stderr only when stderr is a terminal. Everything
heavy (the audit, rich) is imported inside the command so that the CLI
starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from swapmeet.protocol.errors import SwapmeetError

from .context import App, pass_app
from .progress import progress_bar

if TYPE_CHECKING:
    from swapmeet.ledger.audit import AuditReport
    from swapmeet.ledger.audit_findings import Finding
    from swapmeet.ledger.store import LedgerStore


class UnusableInput(SwapmeetError):
    """An audit input that cannot be read at all."""

    exit_code = 2


class _Files:
    """The entries of several export files, re-readable (the audit may make a second pass for evidence)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __iter__(self) -> Iterator[bytes]:
        from swapmeet.ledger.export_file import read_export

        for path in self.paths:
            yield from read_export(path)


class _Store:
    """Every entry of the local store, fork entries included, re-readable."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def __iter__(self) -> Iterator[bytes]:
        return self.store.iter_raw()


def _short(value: Any) -> str:
    text = str(value)
    if text.startswith("12D3KooW") and len(text) > 24:
        return f"{text[:12]}…{text[-6:]}"
    if len(text) > 24 and all(c in "0123456789abcdef" for c in text):
        return f"{text[:12]}…"
    return text


def _value(key: str, value: Any) -> str:
    if key == "proof":
        return f"{len(value) // 2} bytes (--json for the hex)"
    if isinstance(value, list):
        return ",".join(_value(key, v) for v in value)
    if isinstance(value, dict):
        return "{" + " ".join(f"{k}={_value(k, v)}" for k, v in value.items()) + "}"
    return _short(value)


def finding_line(finding: Finding) -> str:
    """One human-readable line: the kind, then the evidence as key=value (ids shortened)."""
    data = finding.to_json()
    kind = data.pop("kind")
    fields = " ".join(f"{k}={_value(k, v)}" for k, v in data.items() if v not in (None, [], {}, ""))
    return f"{kind:<24} {fields}"


def _totals_line(report: AuditReport) -> str:
    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    verdict = "clean" if report.clean else count(len(report.findings), "finding")
    return (
        f"audited {count(report.chains, 'chain')}, {count(report.entries, 'entry').replace('entrys', 'entries')}, "
        f"{count(report.exchanges, 'exchange')}, {count(report.parties, 'party').replace('partys', 'parties')}: "
        f"{verdict}"
    )


@click.command("audit")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Verifying processes [default: all cores].")
@pass_app
def audit(app: App, files: tuple[Path, ...], as_json: bool, workers: int | None) -> None:
    """Audit the local ledger, or the export FILEs: every signature, link, fork, exchange, listing, rating, IOU.

    Exit code 0 when clean, 1 with findings, 2 when the input is unusable.
    """
    from swapmeet.ledger.audit import audit as run_audit
    from swapmeet.ledger.errors import LedgerMissing
    from swapmeet.ledger.export_file import validate_export
    from swapmeet.ledger.store import LedgerStore

    workers = workers or os.cpu_count() or 1
    store: LedgerStore | None = None
    source: Any
    try:
        if files:
            for path in files:
                if not path.is_file():
                    raise UnusableInput(f"{path}: {'not a file' if path.exists() else 'no such file'}")
            # A bad file fails on its own as it is read; a bar needs the total first (a cheap framing-only pass).
            total: int | None = sum(validate_export(path) for path in files) if sys.stderr.isatty() else None
            source = _Files(list(files))
        else:
            try:
                store = LedgerStore.open(app.home().ledger_db, readonly=True)
            except LedgerMissing:
                source, total = [], 0
            else:
                counts = store.counts()
                source, total = _Store(store), counts.entries + counts.forks
        with progress_bar("auditing", total, cumulative=True) as progress:
            report = run_audit(source, workers=workers, progress=progress)
    finally:
        if store is not None:
            store.close()
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(_totals_line(report))
        for finding in report.findings:
            click.echo(finding_line(finding))
    click.get_current_context().exit(0 if report.clean else 1)
