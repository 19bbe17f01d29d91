"""The errors of the ledger package: a damaged or missing database, a busy one, a bad export file.

Each is a :class:`SwapmeetError` with an ``exit_code`` (see ``swapmeet.cli.main``
for the table), so the CLI prints one line and exits with the right code
without knowing the ledger's internals.
"""

from __future__ import annotations

from swapmeet.protocol.errors import SwapmeetError


class LedgerError(SwapmeetError):
    """Something is wrong with the ledger store or a ledger file."""

    exit_code = 2  # bad input: a file we cannot use


class LedgerMissing(LedgerError):
    """There is no ledger database yet (and we were asked not to create one)."""


class LedgerDamaged(LedgerError):
    """The database is not a swapmeet ledger, has an unknown schema, or failed its consistency checks.

    The store refuses to open it and never modifies it: the user keeps the file
    as it is for inspection or recovery from a backup or from peers.
    """


class LedgerBusy(LedgerError):
    """Another process held the database's write lock for longer than the busy timeout."""

    exit_code = 1  # refused; retrying later can work


class ExportFileError(LedgerError):
    """A ledger export file is truncated, garbage, of the wrong kind or too large.

    The message names the file and where it went wrong (item number and byte
    offset). Importing such a file imports nothing.
    """
