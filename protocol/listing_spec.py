"""The unsigned listing: what an author writes, before it is signed.

One shape for every layer that handles a listing someone is about to publish:
``swapmeet publish`` builds its options from these fields, the local API builds
its request and response models from them, and the builder
(:func:`swapmeet.protocol.build.sign_listing`) signs them. A new listing field
is added here (with its help text) and, with its validation rule, in
:mod:`swapmeet.protocol.boundary` and :class:`swapmeet.protocol.objects.Listing`;
nothing else names the fields one by one.

Field metadata (``dataclasses.field(metadata=...)``):

- ``help``: one sentence for people (CLI ``--help``, the API's OpenAPI schema).
- ``metavar``: how a value is written on the command line, where it is not plain text.
- ``option``: the CLI option's name where it differs from ``--<field>``.
- ``choices``: the values a text field takes.
- ``min_items``: the least number of items a list field takes.
- ``omit_empty``: an empty value is left out of the signed body (a field added after the first
  listings were signed: those stay byte-identical, and older nodes still accept listings without it).
- ``form``: False for a field the web UI's publish form leaves out (``accepts``: picking listings
  needs the book, which the form does not show).
- ``expiry``: the field says when the listing expires; it is not part of the signed content as such
  (the signed ``expires`` is computed from it, see :meth:`ListingSpec.expiry`).

This module is light on purpose (no CBOR, no signatures): the CLI imports it to build its options, and
``swapmeet --help`` must stay fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

from .errors import InvalidObject
from .objects import LISTING_TYPES, Item

DEFAULT_LISTING_TTL_S = 7 * 86_400


@dataclass(frozen=True, slots=True, kw_only=True)
class ListingSpec:
    """A listing as its author writes it; the node signs it with its identity and its clock.

    Expiry: ``expires`` (absolute Unix seconds) or ``expires_in_s`` (relative to the node's clock), at
    most one of them; neither means :data:`DEFAULT_LISTING_TTL_S`. ``window`` is required for a rental
    and forbidden otherwise, ``due`` only for a loan (the protocol's rules, enforced by the boundary).
    """

    title: str = field(metadata={"help": "What it is, in a few words (at most 120 characters)."})
    type: str = field(
        default="goods",
        metadata={"help": f"One of {', '.join(LISTING_TYPES)}.", "option": "kind", "choices": LISTING_TYPES},
    )
    have: Sequence[Item] = field(
        metadata={"help": "What you offer, repeatable.", "metavar": "'QTY [UNIT] x ITEM'", "min_items": 1}
    )
    want: Sequence[Item] = field(
        default=(), metadata={"help": "Wanted in return, repeatable.", "metavar": "'QTY [UNIT] x ITEM'"}
    )
    desc: str = field(default="", metadata={"help": "A longer description."})
    tags: Sequence[str] = field(
        default=(), metadata={"help": "A lowercase tag [a-z0-9-], repeatable.", "option": "tag"}
    )
    category: str = field(default="", metadata={"help": "A path such as tools/garden."})
    window: tuple[int, int] | None = field(
        default=None, metadata={"help": "Rental period (rentals need one).", "metavar": "START..END"}
    )
    due: int | None = field(default=None, metadata={"help": "Repayment time of a loan.", "metavar": "WHEN"})
    loc: str | None = field(
        default=None, metadata={"help": "Rough location, a geohash of at most 5 characters.", "metavar": "GEOHASH"}
    )
    photos: Sequence[bytes] = field(
        default=(),
        metadata={
            "help": "A photo of the thing, repeatable (at most 4); the node re-encodes it and names it by its hash.",
            "option": "photo",
            "metavar": "FILE",
            "omit_empty": True,
        },
    )
    accepts: tuple[tuple[bytes, bytes], ...] = field(
        default=(),
        metadata={
            "help": "A listing you would take in return for all of this one, repeatable (at most 32).",
            "option": "accept",
            "metavar": "LISTING",
            "omit_empty": True,
            "form": False,
        },
    )
    expires: int | None = field(
        default=None, metadata={"help": "When it expires, absolute Unix seconds.", "expiry": True}
    )
    expires_in_s: int | None = field(
        default=None, metadata={"help": "When it expires, seconds from the node's clock.", "expiry": True}
    )

    def expiry(self, now: int) -> int:
        """The absolute expiry time for a listing created at ``now``.

        Raises :class:`InvalidObject` (path ``expires`` or ``expires_in_s``) when both are given or the
        relative one is not positive.
        """
        if self.expires is not None and self.expires_in_s is not None:
            raise InvalidObject("expires", "give either an absolute expiry or a relative one, not both")
        if self.expires is not None:
            return self.expires
        if self.expires_in_s is not None:
            if self.expires_in_s <= 0:
                raise InvalidObject("expires_in_s", f"must be a positive number of seconds, got {self.expires_in_s}")
            return now + self.expires_in_s
        return now + DEFAULT_LISTING_TTL_S

    def content(self) -> dict[str, Any]:
        """The fields of the signed body this spec decides (items as maps, sequences as lists, None left out,
        and an empty ``omit_empty`` field left out)."""
        body: dict[str, Any] = {}
        for name in CONTENT_FIELDS:
            value = getattr(self, name)
            if value is None or (name in OMIT_EMPTY and not value):
                continue
            if isinstance(value, tuple | list):
                value = [v.to_cbor() if isinstance(v, Item) else list(v) if isinstance(v, tuple) else v for v in value]
            body[name] = value
        return body


#: The listing's own content, in the order the local API and the CLI present them (expiry excluded).
CONTENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ListingSpec) if not f.metadata.get("expiry"))
#: Fields left out of the signed body when empty (added to the protocol after listings existed).
OMIT_EMPTY: frozenset[str] = frozenset(f.name for f in fields(ListingSpec) if f.metadata.get("omit_empty"))
#: The fields that hold items (``"QTY [UNIT] x ITEM"`` on the command line).
ITEM_FIELDS: tuple[str, ...] = tuple(
    name for name, hint in get_type_hints(ListingSpec).items() if hint == Sequence[Item]
)
#: The fields that name other listings across revisions, as (author, series) pairs: ``{"author": PEERID,
#: "series": HEX}`` in JSON; a listing id or unambiguous prefix on the command line, looked up first.
REF_FIELDS: tuple[str, ...] = tuple(
    name for name, hint in get_type_hints(ListingSpec).items() if hint == tuple[tuple[bytes, bytes], ...]
)
#: The fields that hold 32-byte hashes (hex in JSON; ``--photo FILE`` on the command line, uploaded first).
HASH_FIELDS: tuple[str, ...] = tuple(
    name for name, hint in get_type_hints(ListingSpec).items() if hint == Sequence[bytes]
)
