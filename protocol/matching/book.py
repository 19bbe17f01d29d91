"""The want graph of an offer book: which listing's author would give it for which other listing.

One listing is one item of the graph, traded whole: in a ring, its author gives everything in
its ``have`` and receives everything in the next listing's ``have``. ``L -> M`` (L's author
would give L for M) when M's author is not L's and either

- **explicitly**: L's ``accepts`` names M's (author, series), i.e. M in any revision (PROTOCOL.md 10.10),
  whatever L's ``want`` says; or
- **implicitly**: L's ``want`` covers M's ``have``: every item of M's ``have`` has an item of L's
  ``want`` with the same normalised key (:func:`item_key`) and at least its quantity. L's
  author gets only things it asked for, never more than it asked for. Tags, category, type and
  location play no part.

The normalised key (documented in PROTOCOL.md 10.10 and the guide): the item name in Unicode
NFKC, case-folded, with runs of whitespace made one space and the ends trimmed; the unit the
same, then one name per unit among common spellings (:data:`UNIT_ALIASES`: ``pcs``, ``piece`` ->
``pc``; ``kilo`` -> ``kg``; ``hr``, ``hours`` -> ``hour`` ...). Units are never converted (1 kg does
not match 1000 g) and names are not stemmed (``chair`` does not match ``chairs``).

Bounded work (the listings are peers' input): at most :data:`MAX_IMPLICIT` implicit edges out of
a listing and at most :data:`MAX_SCAN` candidates looked at per wanted key, taken in id order;
the graph as a whole is held to :mod:`.graph`'s limits.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..objects import Item, Listing
from . import graph as wg

MAX_IMPLICIT = 64
MAX_SCAN = 1024
UNIT_ALIASES: dict[str, str] = {
    **dict.fromkeys(("pc", "pcs", "piece", "pieces", "item", "items", "unit", "units"), "pc"),
    **dict.fromkeys(("kg", "kgs", "kilo", "kilos", "kilogram", "kilograms"), "kg"),
    **dict.fromkeys(("g", "gram", "grams"), "g"),
    **dict.fromkeys(("l", "litre", "litres", "liter", "liters"), "l"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "hour"),
    **dict.fromkeys(("day", "days"), "day"),
    **dict.fromkeys(("week", "weeks"), "week"),
}


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def item_key(item: Item) -> tuple[str, str]:
    """(name, unit) normalised for matching a ``have`` against a ``want`` (module docstring)."""
    unit = _norm(item.unit)
    return _norm(item.item), UNIT_ALIASES.get(unit, unit)


def _totals(items: Iterable[Item]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for i in items:
        key = item_key(i)
        out[key] = out.get(key, 0) + i.qty
    return out


@dataclass(frozen=True)
class BookGraph:
    """The want graph and, per item of it, the listing it stands for (sorted by id); ``authors[o]`` is owner o."""

    graph: wg.WantGraph
    listings: tuple[Listing, ...]
    authors: tuple[bytes, ...]
    explicit: int  # edges from ``accepts``
    implicit: int  # edges from have/want


def want_graph(listings: Iterable[Listing], **limits: int) -> BookGraph:
    """The want graph of ``listings``: current, live ones, chosen by the caller (no expired, withdrawn,
    superseded or reserved ones; one revision per series, or the series' last one wins an ``accepts``).

    Raises :class:`~swapmeet.protocol.matching.graph.GraphTooLarge` past the limits.
    """
    book = sorted({x.id: x for x in listings}.values(), key=lambda x: x.id)
    index = {(x.author, x.series): i for i, x in enumerate(book)}
    authors = sorted({x.author for x in book})
    owner_of = {a: i for i, a in enumerate(authors)}
    owner = [owner_of[x.author] for x in book]
    haves = [_totals(x.have) for x in book]
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, have in enumerate(haves):
        for key in have:
            by_key.setdefault(key, []).append(i)
    accepts: list[Sequence[int]] = []
    explicit = implicit = 0
    for a, x in enumerate(book):
        out = {index[ref] for ref in x.accepts if ref in index and ref[0] != x.author}
        explicit += len(out)
        wants = _totals(x.want)
        found = 0
        for key in sorted(wants):
            for b in by_key.get(key, ())[:MAX_SCAN]:
                if found >= MAX_IMPLICIT:
                    break
                if b in out or owner[b] == owner[a]:
                    continue
                if all(wants.get(k, 0) >= q for k, q in haves[b].items()):
                    out.add(b)
                    found += 1
        implicit += found
        accepts.append(sorted(out))
    graph = wg.build(owner, accepts, **limits)
    return BookGraph(graph, tuple(book), tuple(authors), explicit, implicit)


@dataclass(frozen=True)
class RingLeg:
    """One step of a ring: ``giver`` gives ``listing``'s whole ``have`` to ``receiver``."""

    giver: bytes
    receiver: bytes
    listing: Listing


def ring_legs(book: BookGraph, ring: Sequence[int]) -> list[RingLeg]:
    """The legs of a ring of the book's graph: the author of each listing gives it to the author of the one before.

    (The ring's convention, :mod:`.graph`: the owner of ``ring[i]`` receives ``ring[i + 1]``.)
    """
    k = len(ring)
    out = []
    for i in range(k):
        x = book.listings[ring[i]]
        out.append(RingLeg(x.author, book.listings[ring[i - 1]].author, x))
    return out


def coordinator(legs: Sequence[RingLeg]) -> bytes:
    """The member that proposes a ring: the smallest public key (bytewise) among its parties."""
    return min(leg.giver for leg in legs)
