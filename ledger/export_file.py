"""The ledger export file: a CBOR sequence (RFC 8742) of signed ledger entries, read and written streaming.

Format (every item is deterministic CBOR; items are simply concatenated)::

    item 0       ["swapmeet/1", "ledger-export", {? "author": bstr .size 32}]
    item 1..n    bstr   -- the exact signed bytes of one ledger entry
    item n+1     ["swapmeet/1", "ledger-export-end", {"entries": n}]

- Entries come in (author, seq) order, a chain's entry before any fork entries
  at the same seq, so importing a file rebuilds the same chains and forks.
- ``author`` in the header says the file holds that one author's chain (``ledger
  export --author``); then every entry must be by that author.
- The end marker makes truncation detectable even when the file is cut exactly
  between two items, and its count is checked against the entries read.
- Every item head is the shortest for its value (deterministic CBOR), so one list of
  entries has exactly one export file.

The file layer only checks framing: sizes, item types, that every item is
a ledger entry by its envelope prefix (so a listing or a fork proof in the wrong
place is caught here), header and end marker. It does not verify signatures:
every entry still goes through ``boundary.decode`` in whoever consumes it (the
store's ingest, the audit).

Reading is streaming and bounded: one entry in memory at a time, each at most
``MAX_SIZE["entry"]`` bytes, checked against the length in the item's head
*before* reading, so a hostile length cannot make us allocate. Anything wrong
raises :class:`ExportFileError` (exit code 2) naming the file, the item number
and the byte offset. Reuse::

    for raw in read_export(path):      # raises ExportFileError on a bad file
        entry = boundary.decode(raw, kind="entry")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from swapmeet.protocol import boundary, cbor
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.objects import DOMAIN, KIND_ENTRY, KIND_EXCHANGE, KINDS

from .durable import durable_file
from .errors import ExportFileError
from .localfile import open_regular

FILE_KIND = "ledger-export"
END_KIND = "ledger-export-end"
MAX_ENTRY_SIZE = boundary.MAX_SIZE[KIND_ENTRY]
MAX_MARKER_SIZE = 1024  # header and end marker are a few dozen bytes
_MAX_MARKER_DEPTH = 4

# A canonical single-author object starts with a fixed prefix: array(5), domain, kind.
_PREFIXES: dict[bytes, str] = {b"\x85" + cbor.encode(DOMAIN) + cbor.encode(k): k for k in KINDS if k != KIND_EXCHANGE}
_PREFIXES[b"\x84" + cbor.encode(DOMAIN) + cbor.encode(KIND_EXCHANGE)] = KIND_EXCHANGE
ENTRY_PREFIX = b"\x85" + cbor.encode(DOMAIN) + cbor.encode(KIND_ENTRY)
_AUTHOR_HEAD = b"\x58\x20"  # bstr of 32 bytes


@dataclass(frozen=True, slots=True)
class ExportHeader:
    """What the first item says: ``author`` when the file holds one author's chain only."""

    author: bytes | None = None


def write_export(path: str | os.PathLike[str], raws: Iterable[bytes], *, author: bytes | None = None) -> int:
    """Write ``raws`` (ledger entries' signed bytes) as an export file; returns how many were written.

    Crash-safe (:func:`swapmeet.ledger.durable.durable_file`): a crash never leaves a
    half-written export under the final name.
    """
    path = Path(path)
    header: dict[str, object] = {} if author is None else {"author": author}
    count = 0
    try:
        # 0o666 (less the umask) as for any file a user writes: an export is meant to be handed on.
        with durable_file(path, mode=0o666) as f:
            f.write(cbor.encode([DOMAIN, FILE_KIND, header]))
            for raw in raws:
                f.write(cbor.encode(bytes(raw)))
                count += 1
            f.write(cbor.encode([DOMAIN, END_KIND, {"entries": count}]))
    except OSError as exc:
        raise ExportFileError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return count


def read_export(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """Stream the entries' signed bytes from an export file; raises ExportFileError on a bad file.

    The error may come after some entries were yielded (the file is read
    lazily): a consumer that must not act on a bad file either validates first
    (:func:`validate_export`) or undoes its work on the error, as the store's
    import does by rolling back its transaction.
    """
    return iter(ExportReader(path))


def validate_export(path: str | os.PathLike[str]) -> int:
    """Read the whole file's framing without keeping anything; the number of entries, or ExportFileError."""
    return sum(1 for _ in read_export(path))


class ExportReader:
    """One pass over an export file. ``header`` is set once iteration starts; ``count`` once it ends."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.header: ExportHeader | None = None
        self.count = 0
        self._pos = 0
        self._item = 0

    # ------------------------------------------------------------------ errors

    def _fail(self, reason: str, offset: int | None = None) -> ExportFileError:
        where = f"item {self._item} at byte {self._pos if offset is None else offset}"
        return ExportFileError(f"{self.path}: {where}: {reason}")

    # ------------------------------------------------------------------ reading

    def _read(self, f: BinaryIO, n: int, what: str) -> bytes:
        data = f.read(n)
        if len(data) != n:
            raise self._fail(f"truncated: the file ends inside {what} ({len(data)} of {n} bytes)", self._pos)
        self._pos += n
        return data

    def _head(self, f: BinaryIO) -> tuple[int, int, bytes] | None:
        """(major type, argument, the head's bytes) of the next item, or None at a clean end of file."""
        first = f.read(1)
        if not first:
            return None
        self._pos += 1
        major, info = first[0] >> 5, first[0] & 0x1F
        if info < 24:
            return major, info, first
        if info > 27:
            raise self._fail("not CBOR this format allows (indefinite length or reserved value)", self._pos - 1)
        extra = self._read(f, 1 << (info - 24), "an item head")
        arg = int.from_bytes(extra, "big")
        # Deterministic CBOR: the shortest head for the argument (major type 7 holds floats there, not lengths).
        if major != 7 and arg < (24 if info == 24 else 1 << (8 << (info - 25))):
            raise self._fail(
                "not deterministic CBOR (an item head longer than its value needs)", self._pos - len(extra) - 1
            )
        return major, arg, first + extra

    def _rest_of_item(self, f: BinaryIO, major: int, arg: int, budget: int, depth: int) -> bytes:
        """The bytes after the head of a small item (header or end marker), at most ``budget`` of them."""
        if depth > _MAX_MARKER_DEPTH:
            raise self._fail("the header or end marker is nested too deeply")
        if major in (2, 3):
            if arg > budget:
                raise self._fail(f"the header or end marker is larger than {MAX_MARKER_SIZE} bytes")
            return self._read(f, arg, "the header or end marker")
        if major in (4, 5):
            out = b""
            for _ in range(arg * (2 if major == 5 else 1)):
                head = self._head(f)
                if head is None:
                    raise self._fail("truncated: the file ends inside the header or end marker")
                sub_major, sub_arg, head_bytes = head
                out += head_bytes + self._rest_of_item(f, sub_major, sub_arg, budget - len(out), depth + 1)
                if len(out) > budget:
                    raise self._fail(f"the header or end marker is larger than {MAX_MARKER_SIZE} bytes")
            return out
        if major == 6:
            raise self._fail("CBOR tags are not allowed")
        return b""  # integers and simple values are all head

    def _marker(self, f: BinaryIO, major: int, arg: int, head: bytes, expected: str) -> dict[str, object]:
        start = self._pos - len(head)
        if major != 4:
            raise self._fail(f"expected the {expected} array", start)
        data = head + self._rest_of_item(f, major, arg, MAX_MARKER_SIZE, 1)
        try:
            value = cbor.decode(data, path=expected, max_size=MAX_MARKER_SIZE + 16)
        except InvalidObject as exc:
            raise self._fail(str(exc), start) from None
        if type(value) is not list or len(value) != 3 or value[0] != DOMAIN or type(value[2]) is not dict:
            raise self._fail(f'expected ["{DOMAIN}", "{expected}", {{...}}]', start)
        if value[1] != expected:
            kind = value[1] if isinstance(value[1], str) else repr(value[1])
            raise self._fail(f"expected the {expected}, found a {kind!s:.40}", start)
        return value[2]

    def __iter__(self) -> Iterator[bytes]:
        try:
            f = open_regular(self.path)
        except OSError as exc:
            raise ExportFileError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        with f:
            yield from self._entries(f)

    def _entries(self, f: BinaryIO) -> Iterator[bytes]:
        head = self._head(f)
        if head is None:
            raise ExportFileError(f"{self.path}: empty file, not a ledger export")
        major, arg, head_bytes = head
        if major == 4 and arg in (4, 5):
            # Looks like a single swapmeet object (a listing, an entry, a fork proof): say so.
            peek = head_bytes + f.read(32)
            kind = next((k for p, k in _PREFIXES.items() if peek.startswith(p)), None)
            if kind is not None:
                raise ExportFileError(f"{self.path}: this is a single swapmeet {kind}, not a ledger export")
            raise ExportFileError(f"{self.path}: not a ledger export (the first item is not its header)")
        if major != 4 or arg != 3:
            raise ExportFileError(f"{self.path}: not a ledger export (it does not start with the export header)")
        fields = self._header_fields(f, major, arg, head_bytes)
        self.header = ExportHeader(author=fields)
        author = self.header.author
        while True:
            self._item += 1
            start = self._pos
            head = self._head(f)
            if head is None:
                raise self._fail(f"truncated: the file ends after {self.count} entries without the end marker")
            major, arg, head_bytes = head
            if major == 2:
                if arg > MAX_ENTRY_SIZE:
                    raise self._fail(f"an entry of {arg} bytes exceeds the limit of {MAX_ENTRY_SIZE} bytes", start)
                raw = self._read(f, arg, f"entry {self.count + 1}")
                self._check_entry(raw, author, start)
                self.count += 1
                yield raw
            elif major == 4:
                end = self._marker(f, major, arg, head_bytes, END_KIND)
                self._check_end(end, start)
                if f.read(1):
                    raise self._fail("unexpected data after the end marker", self._pos)
                return
            else:
                raise self._fail("expected an entry (a CBOR byte string) or the end marker", start)

    def _header_fields(self, f: BinaryIO, major: int, arg: int, head: bytes) -> bytes | None:
        fields = self._marker(f, major, arg, head, FILE_KIND)
        unknown = set(fields) - {"author"}
        if unknown:
            raise self._fail(f"unknown header field {sorted(map(str, unknown))[0]!r}", 0)
        author = fields.get("author")
        if author is not None and (type(author) is not bytes or len(author) != 32):
            raise self._fail("header author must be a 32-byte public key", 0)
        return author

    def _check_entry(self, raw: bytes, author: bytes | None, start: int) -> None:
        if not raw.startswith(ENTRY_PREFIX):
            kind = next((k for p, k in _PREFIXES.items() if raw.startswith(p)), None)
            found = f"a {kind}" if kind else "bytes that are not a swapmeet object"
            raise self._fail(f"expected a ledger entry, found {found}", start)
        if author is not None:
            at = len(ENTRY_PREFIX)
            if raw[at : at + 2] != _AUTHOR_HEAD or raw[at + 2 : at + 34] != author:
                raise self._fail("an entry by another author in a one-author export", start)

    def _check_end(self, end: dict[str, object], start: int) -> None:
        if set(end) != {"entries"} or type(end["entries"]) is not int:
            raise self._fail('the end marker must be {"entries": count}', start)
        if end["entries"] != self.count:
            raise self._fail(f"the end marker says {end['entries']} entries but the file holds {self.count}", start)
