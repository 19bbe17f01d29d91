"""Fork proofs this node was sent for chains it does not hold: ``<home>/forked.cbor``, append-only and capped.

A fork proof (two different entries one author signed at one seq) marks its
author forked wherever the node shows them. Proofs for chains the node holds
are kept by the ledger store itself; the others live here:

- one proof per author, kept once: a second proof for the same author adds nothing;
- appended, never rewritten: each new proof is one CBOR item added to the end of
  the file (an RFC 8742 sequence) and fsynced before the author shows as forked,
  so a crash keeps every proof that was shown, and a flood of proofs costs one
  small write each, not a rewrite of everything kept so far;
- capped at :data:`MAX_PROOFS` authors and :data:`MAX_BYTES`: past that a proof is
  not kept (one log line), which bounds the disk and memory any number of
  throwaway keys can take;
- re-verified when loaded; a damaged tail (a write cut short) is cut off the file, logged, and
  what came before it stays, so the next proof is appended after the last good one.

Which proofs are worth keeping (authors the node has a reason to care about)
and how fast peers may send them is the caller's business (:mod:`.replication`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from swapmeet.ledger.durable import fsync_dir
from swapmeet.protocol import cbor
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.evidence import ForkProof, decode_proof

log = logging.getLogger("swapmeet.node.ledger")

MAX_PROOFS = 10_000
MAX_BYTES = 32 * 1024 * 1024
_MAX_ITEM = 1024 * 1024  # one proof's bytes, well above evidence.MAX_PROOF_SIZE


class ForkProofs:
    """The proofs in one file; :meth:`add` appends durably (blocking: call it in a worker thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proofs: dict[bytes, bytes] = {}  # author -> proof bytes
        self._size = 0
        self._full_logged = False
        self._load()

    def __contains__(self, author: bytes) -> bool:
        return author in self.proofs

    def add(self, proof: ForkProof) -> bool:
        """Keep ``proof`` (durable when this returns); False when its author has one already or the store is full."""
        if proof.author in self.proofs:
            return False
        item = cbor.encode(proof.raw)
        if len(self.proofs) >= MAX_PROOFS or self._size + len(item) > MAX_BYTES:
            if not self._full_logged:
                self._full_logged = True
                log.warning("fork proofs: %s is full (%d authors); further proofs are not kept", self.path, MAX_PROOFS)
            return False
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.write(fd, item)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)
        self._size += len(item)
        self.proofs[proof.author] = proof.raw
        return True

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        raws, good_end = _items(data, str(self.path))
        if good_end < len(data):
            with open(self.path, "r+b") as f:  # nothing after a damaged item could ever be read
                f.truncate(good_end)
                os.fsync(f.fileno())
        self._size = good_end
        for raw in raws:
            try:
                proof = decode_proof(raw)
            except (InvalidObject, TypeError) as err:
                log.warning("ignoring a fork proof in %s: %s", self.path, err)
                continue
            if isinstance(proof, ForkProof):
                self.proofs.setdefault(proof.author, proof.raw)


def _items(data: bytes, where: str) -> tuple[list[bytes], int]:
    """The proofs' bytes in a file, and where the good part ends: a CBOR sequence of byte strings, or
    (files written before the sequence) one array of them. A damaged item ends the reading, logged."""
    try:
        whole = cbor.decode(data, path="forked", max_size=len(data) or 1)
    except InvalidObject:
        whole = None
    if isinstance(whole, list):
        return [x for x in whole if isinstance(x, bytes)], len(data)
    if isinstance(whole, bytes):
        return [whole], len(data)
    items, offset = [], 0
    while offset < len(data):
        length = _item_length(data, offset)
        if length is None:
            log.warning("ignoring the damaged end of %s (from byte %d)", where, offset)
            break
        try:
            item = cbor.decode(data[offset : offset + length], path="forked", max_size=_MAX_ITEM)
        except InvalidObject as err:
            log.warning("ignoring the damaged end of %s (from byte %d): %s", where, offset, err)
            break
        if isinstance(item, bytes):
            items.append(item)
        offset += length
    return items, offset


def _item_length(data: bytes, offset: int) -> int | None:
    """The encoded length of the CBOR byte string at ``offset`` (head + payload), or None if it is not one."""
    head = data[offset]
    if head >> 5 != 2:  # major type 2: byte string
        return None
    info = head & 0x1F
    if info < 24:
        size, start = info, offset + 1
    elif info in (24, 25, 26, 27):
        n = 1 << (info - 24)
        if offset + 1 + n > len(data):
            return None
        size, start = int.from_bytes(data[offset + 1 : offset + 1 + n], "big"), offset + 1 + n
    else:
        return None
    end = start + size
    return None if end > len(data) or size > _MAX_ITEM else end - offset
