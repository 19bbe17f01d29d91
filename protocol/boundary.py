"""The trust boundary: the one path from untrusted bytes to verified, typed objects.

Bytes from the network, a file or the local API enter swapmeet only through
:func:`decode`. It either returns an object from :mod:`.objects` (every rule
below held and every signature verified) or raises :class:`InvalidObject`
naming the field and the broken rule. Nothing else may store, index or
forward bytes that did not come out of here.

Wire forms (docs/PROTOCOL.md has the CDDL):

- single-author object: ``["swapmeet/1", kind, author, body, signature]``;
  the signature is Ed25519 by ``author`` over ``["swapmeet/1", kind, author, body]``
  (the same array without its last element); the id is SHA-256 of the whole.
- exchange: ``["swapmeet/1", "exchange", body, signatures]``; each party signs
  ``["swapmeet/1", "exchange", body]`` and the id is SHA-256 of that, so all
  parties name one exchange while signatures arrive. ``signatures`` has one
  slot per party: a signature, or null while that party has not signed.

Rules, in the order they are checked, each for the reason given:

 1. Size: at most ``MAX_SIZE[kind]`` bytes (or the largest of them before the
    kind is known). Bounds memory and CPU per message.
 2. Encoding: deterministic CBOR, depth <= 8, no tags (see :mod:`.cbor`). One
    value, one encoding, one id: otherwise a peer re-encodes an object to
    make it look new and defeat deduplication.
 3. Envelope: the domain string is ``swapmeet/1`` (unknown versions are refused,
    not guessed at); the kind is known and is the one the caller expects.
 4. Schema: every field known, of its exact type (integers, never floats or
    bools, for quantities and times), within its range and length; text has
    no control or bidirectional-override characters (it ends up on terminals).
 5. Signature: valid Ed25519 by the author (every signed slot, for an
    exchange) over the domain-separated structure, so a signature made for one
    kind, version or author can never be replayed as another.
 6. Embedded objects (the listing in an offer, the listings and offer in an
    exchange, the exchange in a rating, the payload of a ledger entry) go
    through this same path, recursively, so evidence carries its own proof.
 7. Kind rules (see each ``_<kind>`` function): expiry after creation and
    bounded lifetimes; an offer takes only items the listing has, in at most
    the listed quantity; every party of an exchange gives and receives; an
    exchange never makes a listing's author give more of a listed item than
    the listing has; a rating or a receipt is by a party; a ledger entry
    records only complete exchanges its author is a party to; a notice
    declines an offer (by its recipient), or cancels an offer (by its author)
    or an exchange (by a party whose slot in the copy it names is empty).
 8. Freshness (only when the caller passes ``now``, as the node does for live
    gossip, never when re-verifying stored history): nothing created more than
    ``CLOCK_SKEW`` seconds in the future; listings and offers not yet expired.

Times are integer Unix seconds. ``CLOCK_SKEW`` (5 minutes) is how far apart two
honest clocks may be.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any

from . import cbor
from .errors import InvalidObject
from .identity import verify_signature
from .objects import (
    DOMAIN,
    KIND_ENTRY,
    KIND_EXCHANGE,
    KIND_LISTING,
    KIND_NOTICE,
    KIND_OFFER,
    KIND_RATING,
    KIND_RECEIPT,
    KIND_WITHDRAWAL,
    KINDS,
    LISTING_TYPES,
    NOTICE_ACTIONS,
    NOTICE_CANCEL,
    NOTICE_DECLINE,
    Exchange,
    Item,
    LedgerEntry,
    Leg,
    Listing,
    Notice,
    Offer,
    Rating,
    Receipt,
    Signed,
    SignedObject,
    Withdrawal,
)

CLOCK_SKEW = 300
DAY = 86_400
MAX_LISTING_LIFETIME = 366 * DAY
MAX_OFFER_LIFETIME = 30 * DAY
MAX_SIGNING_WINDOW = 7 * DAY
MAX_TIME = 2**40  # year ~36800: rejects absurd times without a calendar
MAX_QTY = 10**12
MAX_PARTIES = 8
MAX_LEGS = 64
MAX_ITEMS = 16
MAX_LISTINGS_PER_EXCHANGE = 8
MAX_SEQ = 2**53
MAX_NOTE = 500  # the note of an offer or a notice
MAX_PHOTOS = 4  # photos a listing may name
MAX_ACCEPTS = 32  # listings a listing may name as acceptable in return
PHOTO_HASH_SIZE = 32  # a photo is named by the SHA-256 of its bytes

MAX_SIZE: dict[str, int] = {
    KIND_LISTING: 16 * 1024,
    KIND_WITHDRAWAL: 1024,
    KIND_OFFER: 24 * 1024,
    KIND_RECEIPT: 2048,
    # 8 listings plus an offer (which embeds a listing), with room for the legs
    KIND_EXCHANGE: 192 * 1024,
    KIND_RATING: 200 * 1024,
    # like a rating: an exchange (or an offer) plus a few fields
    KIND_NOTICE: 200 * 1024,
    # an entry carries a rating or an exchange plus its own few fields
    KIND_ENTRY: 208 * 1024,
}
MAX_ANY_SIZE = max(MAX_SIZE.values())

ID_SIZE = 32
KEY_SIZE = 32
SIG_SIZE = 64
SERIES_SIZE = 16
NONCE_SIZE = 16
ZERO_ID = bytes(ID_SIZE)

PAYLOAD_KINDS = (KIND_EXCHANGE, KIND_RATING, KIND_RECEIPT)

_SIG_TRAILER = 2 + SIG_SIZE  # a 64-byte bstr encodes as 0x58 0x40 + 64 bytes

# C0/C1 controls and bidi overrides: they rewrite what a terminal shows.
_BAD_CHARS_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_BAD_CHARS_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_TAG = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_CATEGORY = re.compile(r"([a-z0-9][a-z0-9-]{0,31})(/[a-z0-9][a-z0-9-]{0,31}){0,3}")
_GEOHASH = re.compile(r"[0-9b-hjkmnp-z]{1,5}")  # at most 5 chars: about 5 km, coarse on purpose


# --------------------------------------------------------------------------- entry point


class DecodeCache:
    """Objects recently decoded from *embedded* bytes, for reuse when the same bytes come again.

    Safe because decoding is a pure function of the bytes: once some bytes
    decoded to an object, the same bytes always decode to the same (immutable)
    object; the kinds and size a caller accepts are still checked on every use,
    and failures are never cached. Keys are the bytes themselves (exact: no
    hash collision to argue about); at most ``limit`` of them, least recently
    used dropped first. Worth it where the same listing, offer or exchange is
    embedded many times (an audit: one exchange on each party's chain, in
    every rating of it, its listing in its offer too).
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._objects: OrderedDict[bytes, Any] = OrderedDict()

    def get(self, data: bytes, kinds: tuple[str, ...] | None, max_size: int) -> Any:
        obj = self._objects.get(data)
        if obj is None or (kinds is not None and obj.kind not in kinds) or len(data) > max_size:
            return None
        self._objects.move_to_end(data)
        return obj

    def put(self, data: bytes, obj: Any) -> None:
        self._objects[data] = obj
        if len(self._objects) > self.limit:
            self._objects.popitem(last=False)


_cache: ContextVar[DecodeCache | None] = ContextVar("swapmeet_decode_cache", default=None)


def decode(
    data: bytes,
    *,
    kind: str | tuple[str, ...] | None = None,
    now: int | None = None,
    cache: DecodeCache | None = None,
) -> Any:
    """Verify ``data`` and return the typed object it encodes.

    ``kind`` restricts the accepted kinds (a str or a tuple of them); ``now``
    turns on the freshness rules for live objects; ``cache`` reuses objects
    decoded earlier from the same embedded bytes (see :class:`DecodeCache`).

    Raises :class:`InvalidObject` for anything that is not a canonical, valid,
    correctly signed object of an accepted kind (and, with ``now``, fresh): its
    ``path`` names the field (``listing.body.have[0].qty``), its ``code`` the rule.
    Never anything else, whatever the bytes.
    """
    kinds = (kind,) if isinstance(kind, str) else kind
    max_size = MAX_ANY_SIZE if kinds is None else max(MAX_SIZE[k] for k in kinds)
    label = kinds[0] if kinds and len(kinds) == 1 else "object"
    if not isinstance(data, bytes | bytearray | memoryview):
        # bytes(n) of an int would allocate n zero bytes: a field read from a damaged file must not get that far.
        raise InvalidObject(label, f"expected bytes, got {type(data).__name__}", "type")
    token = _cache.set(cache)
    try:
        obj = _decode(bytes(data), label, kinds, max_size)
    finally:
        _cache.reset(token)
    if now is not None:
        check_fresh(obj, now)
    return obj


def object_id(data: bytes) -> bytes:
    """The id of a single-author object's bytes (exchanges: use ``decode(...).id``). Raises nothing."""
    return hashlib.sha256(data).digest()


def check_fresh(obj: SignedObject, now: int) -> None:
    """Rule 8: nothing from the future; live listings and offers not expired.

    Raises :class:`InvalidObject` (codes ``future``, ``expired``, ``lapsed``).
    """
    path = f"{obj.kind}.body"
    if isinstance(obj, LedgerEntry):
        created, field = obj.time, "time"
    else:
        created, field = obj.created, "created"
    if created > now + CLOCK_SKEW:
        raise InvalidObject(f"{path}.{field}", f"{created} is in the future (now {now})", "future")
    if isinstance(obj, Listing | Offer) and obj.expires <= now:
        raise InvalidObject(f"{path}.expires", f"expired at {obj.expires} (now {now})", "expired")
    if isinstance(obj, Exchange) and not obj.complete and obj.deadline <= now:
        raise InvalidObject(f"{path}.deadline", f"signing deadline {obj.deadline} has passed", "lapsed")


def signing_bytes_of_exchange(raw: bytes, signatures: tuple[bytes | None, ...]) -> bytes:
    """The bytes every party signs, cut from a canonical exchange encoding (already checked canonical:
    raises nothing; on other bytes the result is meaningless)."""
    sigs_len = len(cbor.encode(list(signatures)))
    return b"\x83" + raw[1 : len(raw) - sigs_len]


# --------------------------------------------------------------------------- envelope


def _decode(data: bytes, path: str, kinds: tuple[str, ...] | None, max_size: int) -> Any:
    value = cbor.decode(data, path=path, max_size=max_size)
    if type(value) is not list or len(value) not in (4, 5):
        raise InvalidObject(path, "expected an envelope array of 4 or 5 elements", "envelope")
    if value[0] != DOMAIN:
        raise InvalidObject(f"{path}[0]", f"unknown protocol version {value[0]!r}, expected {DOMAIN!r}", "version")
    kind = value[1]
    if kind not in KINDS:
        raise InvalidObject(f"{path}[1]", f"unknown kind {kind!r}", "kind")
    if kinds is not None and kind not in kinds:
        raise InvalidObject(f"{path}[1]", f"expected {' or '.join(kinds)}, got {kind}", "kind")
    path = kind if path in ("object", kind) else path
    if len(data) > MAX_SIZE[kind]:
        raise InvalidObject(path, f"{len(data)} bytes exceeds the {kind} limit of {MAX_SIZE[kind]}", "size")
    if kind == KIND_EXCHANGE:
        if len(value) != 4:
            raise InvalidObject(path, "an exchange is [domain, kind, body, signatures]", "envelope")
        return _exchange(data, value, path)
    if len(value) != 5:
        raise InvalidObject(path, "expected [domain, kind, author, body, signature]", "envelope")
    author = _bytes(value[2], f"{path}.author", KEY_SIZE)
    body = value[3]
    signature = _bytes(value[4], f"{path}.signature", SIG_SIZE)
    if type(body) is not dict:
        raise InvalidObject(f"{path}.body", "expected a map", "type")
    # Check the signature before the body rules: a forged object should cost as little as possible.
    message = b"\x84" + data[1:-_SIG_TRAILER]
    if not verify_signature(author, message, signature):
        raise InvalidObject(f"{path}.signature", "does not verify for the author", "signature")
    header = (data, hashlib.sha256(data).digest(), author)
    return _BODY_RULES[kind](header, body, f"{path}.body")


def _embedded(value: Any, path: str, kind: str | tuple[str, ...]) -> Any:
    data = _bytes(value, path, None)
    kinds = (kind,) if isinstance(kind, str) else kind
    max_size = max(MAX_SIZE[k] for k in kinds)
    cache = _cache.get()
    if cache is not None and (obj := cache.get(data, kinds, max_size)) is not None:
        return obj
    obj = _decode(data, path, kinds, max_size)
    if cache is not None:
        cache.put(data, obj)
    return obj


# --------------------------------------------------------------------------- field helpers


def _fields(body: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if type(body) is not dict:
        raise InvalidObject(path, "expected a map", "type")
    for key in body:
        if key not in required and key not in optional:
            raise InvalidObject(f"{path}.{key}", "unknown field", "unknown-field")
    for key in required:
        if key not in body:
            raise InvalidObject(f"{path}.{key}", "missing", "missing-field")
    return body


def _int(value: Any, path: str, low: int, high: int) -> int:
    if type(value) is not int:  # excludes bool (a subclass of int) and float
        raise InvalidObject(path, f"must be an integer, got {type(value).__name__}", "type")
    if not low <= value <= high:
        raise InvalidObject(path, f"must be between {low} and {high}, got {value}", "range")
    return value


def _time(value: Any, path: str) -> int:
    return _int(value, path, 0, MAX_TIME)


def _bytes(value: Any, path: str, size: int | None) -> bytes:
    if type(value) is not bytes:
        raise InvalidObject(path, f"must be a byte string, got {type(value).__name__}", "type")
    if size is not None and len(value) != size:
        raise InvalidObject(path, f"must be {size} bytes, got {len(value)}", "length")
    return value


def _text(value: Any, path: str, low: int, high: int, *, multiline: bool = False) -> str:
    if type(value) is not str:
        raise InvalidObject(path, f"must be text, got {type(value).__name__}", "type")
    if not low <= len(value) <= high:
        raise InvalidObject(path, f"length must be between {low} and {high}, got {len(value)}", "length")
    bad = (_BAD_CHARS_TEXT if multiline else _BAD_CHARS_LINE).search(value)
    if bad:
        raise InvalidObject(path, f"contains control character U+{ord(bad.group()):04X}", "text")
    return value


def clean_text(text: str, max_len: int, *, multiline: bool = False) -> str:
    """``text`` without the characters the text rule refuses, cut to at most ``max_len`` characters.

    For text this node writes itself (a note on a notice it must send), where refusing would lose the
    message. It removes exactly what :func:`_text` refuses in a field of that kind: C0 and C1 control
    characters and the bidirectional overrides (tab and newline stay when ``multiline``), then cuts. So the
    result always passes :func:`_text` for a field of length 0 to ``max_len`` (``max_len`` >= 0) of the same
    ``multiline``, and text that passed already comes back unchanged but for the cut. Raises nothing (a lone
    surrogate, which no decoded text can hold, is kept: encoding it is what fails).
    """
    return (_BAD_CHARS_TEXT if multiline else _BAD_CHARS_LINE).sub("", text)[:max_len]


def _pattern(value: Any, path: str, pattern: re.Pattern[str], what: str) -> str:
    if type(value) is not str or not pattern.fullmatch(value):
        raise InvalidObject(path, f"must be {what}, got {value!r}", "format")
    return value


def _list(value: Any, path: str, low: int, high: int) -> list[Any]:
    if type(value) is not list:
        raise InvalidObject(path, f"must be an array, got {type(value).__name__}", "type")
    if not low <= len(value) <= high:
        raise InvalidObject(path, f"must have between {low} and {high} elements, got {len(value)}", "length")
    return value


def _items(value: Any, path: str, low: int) -> tuple[Item, ...]:
    items = []
    seen: set[tuple[str, str]] = set()
    for i, raw in enumerate(_list(value, path, low, MAX_ITEMS)):
        where = f"{path}[{i}]"
        f = _fields(raw, where, ("qty", "item", "unit"))
        item = Item(
            item=_text(f["item"], f"{where}.item", 1, 80),
            qty=_int(f["qty"], f"{where}.qty", 1, MAX_QTY),
            unit=_text(f["unit"], f"{where}.unit", 1, 16),
        )
        # One line per thing: two lines of the same item would let quantity checks be split.
        if item.key in seen:
            raise InvalidObject(where, f"{item.item!r} ({item.unit}) is listed twice", "duplicate")
        seen.add(item.key)
        items.append(item)
    return tuple(items)


def _lifetime(created: int, expires: int, path: str, limit: int, name: str = "expires") -> None:
    if expires <= created:
        raise InvalidObject(f"{path}.{name}", f"{expires} is not after created {created}", "expiry")
    if expires - created > limit:
        raise InvalidObject(f"{path}.{name}", f"more than {limit // DAY} days after created", "expiry")


# --------------------------------------------------------------------------- kinds

Header = tuple[bytes, bytes, bytes]  # raw bytes, id, author


def _listing(header: Header, body: Any, path: str) -> Listing:
    f = _fields(
        body,
        path,
        ("rev", "desc", "have", "tags", "type", "want", "title", "series", "created", "expires", "category"),
        ("loc", "due", "window", "photos", "accepts"),
    )
    created = _time(f["created"], f"{path}.created")
    expires = _time(f["expires"], f"{path}.expires")
    _lifetime(created, expires, path, MAX_LISTING_LIFETIME)
    listing_type = f["type"]
    if listing_type not in LISTING_TYPES:
        raise InvalidObject(
            f"{path}.type", f"must be one of {', '.join(LISTING_TYPES)}, got {listing_type!r}", "format"
        )
    window = None
    if "window" in f:
        # A rental is for a stretch of time; other kinds have no window.
        if listing_type != "rental":
            raise InvalidObject(f"{path}.window", "only a rental has a time window", "window")
        start, end = (_time(t, f"{path}.window[{i}]") for i, t in enumerate(_list(f["window"], f"{path}.window", 2, 2)))
        if end <= start:
            raise InvalidObject(f"{path}.window", f"ends ({end}) before it starts ({start})", "window")
        window = (start, end)
    elif listing_type == "rental":
        raise InvalidObject(f"{path}.window", "a rental needs a time window [start, end]", "window")
    due = None
    if "due" in f:
        if listing_type != "loan":
            raise InvalidObject(f"{path}.due", "only a loan has a repayment due time", "due")
        due = _time(f["due"], f"{path}.due")
        if due <= created:
            raise InvalidObject(f"{path}.due", "repayment is due before the loan was listed", "due")
    tags = tuple(
        _pattern(t, f"{path}.tags[{i}]", _TAG, "a lowercase tag [a-z0-9-]")
        for i, t in enumerate(_list(f["tags"], f"{path}.tags", 0, 16))
    )
    if len(set(tags)) != len(tags):
        raise InvalidObject(f"{path}.tags", "contains a tag twice", "duplicate")
    category = f["category"]
    if category != "":
        _pattern(category, f"{path}.category", _CATEGORY, "empty or a path like 'tools/garden'")
    photos = _photos(f["photos"], f"{path}.photos") if "photos" in f else ()
    accepts = _accepts(f["accepts"], f"{path}.accepts") if "accepts" in f else ()
    raw, oid, author = header
    return Listing(
        raw=raw,
        id=oid,
        author=author,
        series=_bytes(f["series"], f"{path}.series", SERIES_SIZE),
        rev=_int(f["rev"], f"{path}.rev", 0, 2**32),
        type=listing_type,
        title=_text(f["title"], f"{path}.title", 1, 120),
        desc=_text(f["desc"], f"{path}.desc", 0, 4000, multiline=True),
        category=category,
        tags=tags,
        have=_items(f["have"], f"{path}.have", 1),
        want=_items(f["want"], f"{path}.want", 0),
        window=window,
        due=due,
        loc=_pattern(f["loc"], f"{path}.loc", _GEOHASH, "a geohash of at most 5 characters") if "loc" in f else None,
        created=created,
        expires=expires,
        photos=photos,
        accepts=accepts,
    )


def _photos(value: Any, path: str) -> tuple[bytes, ...]:
    """A listing's photos: absent when it has none, else 1 to MAX_PHOTOS distinct SHA-256 hashes.

    An empty array is refused so that "no photos" has one encoding (the field left out), which keeps
    every listing written before the field existed byte-identical.
    """
    hashes = tuple(_bytes(h, f"{path}[{i}]", PHOTO_HASH_SIZE) for i, h in enumerate(_list(value, path, 1, MAX_PHOTOS)))
    if len(set(hashes)) != len(hashes):
        raise InvalidObject(path, "names a photo twice", "duplicate")
    return hashes


def _accepts(value: Any, path: str) -> tuple[tuple[bytes, bytes], ...]:
    """The listings a listing accepts in return: absent when none, else 1 to MAX_ACCEPTS distinct
    ``[author, series]`` pairs (a listing across its revisions, section 10.1).

    Like ``photos``, an empty array is refused (one encoding for "none"). Only the form is checked here:
    whether a pair names a live listing is the book's business (PROTOCOL.md 10.10).
    """
    refs = []
    for i, ref in enumerate(_list(value, path, 1, MAX_ACCEPTS)):
        author, series = _list(ref, f"{path}[{i}]", 2, 2)
        refs.append((_bytes(author, f"{path}[{i}][0]", KEY_SIZE), _bytes(series, f"{path}[{i}][1]", SERIES_SIZE)))
    if len(set(refs)) != len(refs):
        raise InvalidObject(path, "names a listing twice", "duplicate")
    return tuple(refs)


def _withdrawal(header: Header, body: Any, path: str) -> Withdrawal:
    f = _fields(body, path, ("series", "created"))
    raw, oid, author = header
    return Withdrawal(
        raw=raw,
        id=oid,
        author=author,
        series=_bytes(f["series"], f"{path}.series", SERIES_SIZE),
        created=_time(f["created"], f"{path}.created"),
    )


def _offer(header: Header, body: Any, path: str) -> Offer:
    raw, oid, author = header
    f = _fields(body, path, ("give", "take", "taker", "created", "expires", "listing"), ("note", "counters"))
    listing: Listing = _embedded(f["listing"], f"{path}.listing", KIND_LISTING)
    taker = _bytes(f["taker"], f"{path}.taker", KEY_SIZE)
    created = _time(f["created"], f"{path}.created")
    expires = _time(f["expires"], f"{path}.expires")
    _lifetime(created, expires, path, MAX_OFFER_LIFETIME)
    counters = _bytes(f["counters"], f"{path}.counters", ID_SIZE) if "counters" in f else None
    # Who may write it: the taker (an offer) or the maker answering an offer (a counter).
    if taker == listing.author:
        raise InvalidObject(f"{path}.taker", "the taker cannot be the listing's own author", "party")
    if author == listing.author:
        if counters is None:
            raise InvalidObject(f"{path}.counters", "an offer by the listing's author must counter an offer", "party")
    elif author != taker:
        raise InvalidObject(f"{path}.taker", "an offer is written by its taker or the listing's author", "party")
    # An offer cannot outlive or predate the listing it is about.
    if created + CLOCK_SKEW < listing.created:
        raise InvalidObject(f"{path}.created", "is before the listing was created", "expiry")
    if created >= listing.expires:
        raise InvalidObject(f"{path}.created", "is after the listing expired", "expiry")
    if expires > listing.expires:
        raise InvalidObject(f"{path}.expires", "is after the listing expires", "expiry")
    # The taker gives something: an exchange where one side only receives is a gift, not a barter.
    give = _items(f["give"], f"{path}.give", 1)
    take = _items(f["take"], f"{path}.take", 1)
    # An offer takes only what the listing has, and at most the listed quantity.
    for i, item in enumerate(take):
        available = listing.quantity_of(item.key)
        if available == 0:
            raise InvalidObject(f"{path}.take[{i}]", f"the listing has no {item.item!r} ({item.unit})", "not-listed")
        if item.qty > available:
            raise InvalidObject(f"{path}.take[{i}].qty", f"{item.qty} exceeds the listed {available}", "over-quantity")
    return Offer(
        raw=raw,
        id=oid,
        author=author,
        listing=listing,
        taker=taker,
        give=give,
        take=take,
        counters=counters,
        note=_text(f["note"], f"{path}.note", 0, MAX_NOTE, multiline=True) if "note" in f else "",
        created=created,
        expires=expires,
    )


def _exchange(data: bytes, value: list[Any], path: str) -> Exchange:
    body = value[2]
    f = _fields(body, f"{path}.body", ("legs", "nonce", "parties", "created", "deadline", "listings"), ("offer",))
    bpath = f"{path}.body"
    parties = tuple(
        _bytes(p, f"{bpath}.parties[{i}]", KEY_SIZE)
        for i, p in enumerate(_list(f["parties"], f"{bpath}.parties", 2, MAX_PARTIES))
    )
    if len(set(parties)) != len(parties):
        raise InvalidObject(f"{bpath}.parties", "a party is listed twice", "duplicate")
    created = _time(f["created"], f"{bpath}.created")
    deadline = _time(f["deadline"], f"{bpath}.deadline")
    _lifetime(created, deadline, bpath, MAX_SIGNING_WINDOW, "deadline")
    legs = []
    for i, raw_leg in enumerate(_list(f["legs"], f"{bpath}.legs", 1, MAX_LEGS)):
        where = f"{bpath}.legs[{i}]"
        lf = _fields(raw_leg, where, ("to", "from", "items"))
        giver = _int(lf["from"], f"{where}.from", 0, len(parties) - 1)
        receiver = _int(lf["to"], f"{where}.to", 0, len(parties) - 1)
        if giver == receiver:
            raise InvalidObject(where, "a party cannot give to itself", "self-leg")
        legs.append(Leg(giver, receiver, _items(lf["items"], f"{where}.items", 1)))
    # Every party gives something and receives something: no free riders, no gifts in disguise.
    for i in range(len(parties)):
        if not any(leg.giver == i for leg in legs):
            raise InvalidObject(f"{bpath}.parties[{i}]", "gives nothing in this exchange", "party-gives-nothing")
        if not any(leg.receiver == i for leg in legs):
            raise InvalidObject(f"{bpath}.parties[{i}]", "receives nothing in this exchange", "party-receives-nothing")
    offer: Offer | None = _embedded(f["offer"], f"{bpath}.offer", KIND_OFFER) if "offer" in f else None
    # The offer's listing is usually also in `listings`: identical bytes were just
    # verified, so reuse that object instead of checking the same signature twice.
    listings = tuple(
        offer.listing
        if offer is not None and x == offer.listing.raw
        else _embedded(x, f"{bpath}.listings[{i}]", KIND_LISTING)
        for i, x in enumerate(_list(f["listings"], f"{bpath}.listings", 0, MAX_LISTINGS_PER_EXCHANGE))
    )
    sig_values = _list(value[3], f"{path}.signatures", len(parties), len(parties))
    signatures = tuple(
        None if s is None else _bytes(s, f"{path}.signatures[{i}]", SIG_SIZE) for i, s in enumerate(sig_values)
    )
    message = signing_bytes_of_exchange(data, signatures)
    for i, sig in enumerate(signatures):
        if sig is not None and not verify_signature(parties[i], message, sig):
            raise InvalidObject(f"{path}.signatures[{i}]", "does not verify for that party", "signature")
    exchange = Exchange(
        raw=data,
        id=hashlib.sha256(message).digest(),
        parties=parties,
        legs=tuple(legs),
        listings=listings,
        offer=offer,
        created=created,
        deadline=deadline,
        nonce=_bytes(f["nonce"], f"{bpath}.nonce", NONCE_SIZE),
        signatures=signatures,
    )
    _exchange_rules(exchange, bpath)
    return exchange


def _exchange_rules(x: Exchange, path: str) -> None:
    ids = [listing.id for listing in x.listings]
    if len(set(ids)) != len(ids):
        raise InvalidObject(f"{path}.listings", "a listing is included twice", "duplicate")
    for i, listing in enumerate(x.listings):
        where = f"{path}.listings[{i}]"
        if listing.author not in x.parties:
            raise InvalidObject(where, "its author is not a party to the exchange", "party")
        if x.created >= listing.expires:
            raise InvalidObject(where, "had expired when the exchange was created", "expiry")
        # The listing's author never gives more of a listed item than the listing has.
        given = x.given_by(listing.author)
        for item in listing.have:
            if given.get(item.key, 0) > item.qty:
                raise InvalidObject(
                    where,
                    f"its author gives {given[item.key]} of {item.item!r} but listed {item.qty}",
                    "over-quantity",
                )
    if x.offer is not None:
        offer = x.offer
        if x.created >= offer.expires:
            raise InvalidObject(f"{path}.offer", "had expired when the exchange was created", "expiry")
        if offer.listing.id not in ids:
            raise InvalidObject(f"{path}.offer", "its listing is not among the exchange's listings", "offer-listing")
        if len(x.parties) == 2:
            # A two-party exchange settling an offer is exactly that offer: the
            # taker gives `give` to the maker and takes `take` from it.
            if set(x.parties) != {offer.taker, offer.maker}:
                raise InvalidObject(
                    f"{path}.parties", "must be the offer's taker and the listing's author", "offer-mismatch"
                )
            taker, maker = x.index_of(offer.taker), x.index_of(offer.maker)
            expected = {(maker, taker): _totals(offer.take), (taker, maker): _totals(offer.give)}
            actual: dict[tuple[int, int], dict[tuple[str, str], int]] = {}
            for leg in x.legs:
                bucket = actual.setdefault((leg.giver, leg.receiver), {})
                for item in leg.items:
                    bucket[item.key] = bucket.get(item.key, 0) + item.qty
            if {k: v for k, v in actual.items() if v} != {k: v for k, v in expected.items() if v}:
                raise InvalidObject(f"{path}.legs", "do not match the offer being settled", "offer-mismatch")
        elif offer.taker not in x.parties or offer.maker not in x.parties:
            raise InvalidObject(f"{path}.offer", "its taker and maker must be parties", "offer-mismatch")


def _totals(items: tuple[Item, ...]) -> dict[tuple[str, str], int]:
    return {item.key: item.qty for item in items}


def _rating(header: Header, body: Any, path: str) -> Rating:
    raw, oid, author = header
    f = _fields(body, path, ("score", "comment", "created", "subject", "exchange"))
    exchange: Exchange = _embedded(f["exchange"], f"{path}.exchange", KIND_EXCHANGE)
    subject = _bytes(f["subject"], f"{path}.subject", KEY_SIZE)
    # Only a party to a complete exchange may rate, and only another party of it.
    if not exchange.complete:
        raise InvalidObject(f"{path}.exchange", "is not complete (a party has not signed)", "incomplete")
    if author not in exchange.parties:
        raise InvalidObject(f"{path.removesuffix('.body')}.author", "is not a party to the rated exchange", "non-party")
    if subject not in exchange.parties:
        raise InvalidObject(f"{path}.subject", "is not a party to the rated exchange", "non-party")
    if subject == author:
        raise InvalidObject(f"{path}.subject", "cannot rate oneself", "self-rating")
    created = _time(f["created"], f"{path}.created")
    if created + CLOCK_SKEW < exchange.created:
        raise InvalidObject(f"{path}.created", "is before the exchange was created", "expiry")
    return Rating(
        raw=raw,
        id=oid,
        author=author,
        exchange=exchange,
        subject=subject,
        score=_int(f["score"], f"{path}.score", 1, 5),
        comment=_text(f["comment"], f"{path}.comment", 0, 500, multiline=True),
        created=created,
    )


def _receipt(header: Header, body: Any, path: str) -> Receipt:
    raw, oid, author = header
    f = _fields(body, path, ("legs", "created", "exchange"))
    legs = tuple(
        _int(x, f"{path}.legs[{i}]", 0, MAX_LEGS - 1)
        for i, x in enumerate(_list(f["legs"], f"{path}.legs", 1, MAX_LEGS))
    )
    if list(legs) != sorted(set(legs)):
        raise InvalidObject(f"{path}.legs", "must be strictly increasing leg indices", "format")
    return Receipt(
        raw=raw,
        id=oid,
        author=author,
        exchange_id=_bytes(f["exchange"], f"{path}.exchange", ID_SIZE),
        legs=legs,
        created=_time(f["created"], f"{path}.created"),
    )


def _entry(header: Header, body: Any, path: str) -> LedgerEntry:
    raw, oid, author = header
    f = _fields(body, path, ("seq", "prev", "time", "payload"))
    seq = _int(f["seq"], f"{path}.seq", 1, MAX_SEQ)
    prev = _bytes(f["prev"], f"{path}.prev", ID_SIZE)
    # The first entry has no predecessor; every later one names one.
    if (seq == 1) != (prev == ZERO_ID):
        raise InvalidObject(f"{path}.prev", "must be 32 zero bytes exactly when seq is 1", "link")
    time = _time(f["time"], f"{path}.time")
    payload = _embedded(f["payload"], f"{path}.payload", PAYLOAD_KINDS)
    if isinstance(payload, Exchange):
        # A chain records settled facts only, and only the author's own.
        if not payload.complete:
            raise InvalidObject(f"{path}.payload", "an exchange on a chain must be complete", "incomplete")
        if author not in payload.parties:
            raise InvalidObject(f"{path}.payload", "the entry's author is not a party to the exchange", "non-party")
        payload_time = payload.created
    else:
        if payload.author != author:
            raise InvalidObject(
                f"{path}.payload", f"a {payload.kind} on a chain must be by the chain's author", "non-party"
            )
        payload_time = payload.created
    if time + CLOCK_SKEW < payload_time:
        raise InvalidObject(f"{path}.time", "is before its payload was created", "expiry")
    return LedgerEntry(raw=raw, id=oid, author=author, seq=seq, prev=prev, time=time, payload=payload)


def _notice(header: Header, body: Any, path: str) -> Notice:
    raw, oid, author = header
    f = _fields(body, path, ("action", "created"), ("note", "offer", "exchange"))
    # A notice is about one thing, named by the thing itself, so it carries its own proof.
    if ("offer" in f) == ("exchange" in f):
        raise InvalidObject(path, "must name exactly one of offer or exchange", "target")
    action = f["action"]
    if action not in NOTICE_ACTIONS:
        raise InvalidObject(f"{path}.action", f"must be one of {', '.join(NOTICE_ACTIONS)}, got {action!r}", "format")
    created = _time(f["created"], f"{path}.created")
    author_path = f"{path.removesuffix('.body')}.author"
    offer: Offer | None = None
    exchange: Exchange | None = None
    if "offer" in f:
        offer = _embedded(f["offer"], f"{path}.offer", KIND_OFFER)
        # Only the one who has to answer an offer declines it; only its author withdraws it.
        if action == NOTICE_DECLINE and author != offer.recipient:
            raise InvalidObject(author_path, "only the offer's recipient can decline it", "party")
        if action == NOTICE_CANCEL and author != offer.author:
            raise InvalidObject(author_path, "only the offer's author can cancel it", "party")
        target_created = offer.created
    else:
        exchange = _embedded(f["exchange"], f"{path}.exchange", KIND_EXCHANGE)
        # An exchange is not answered but signed or not: a party leaves it by cancelling.
        if action != NOTICE_CANCEL:
            raise InvalidObject(f"{path}.action", "an exchange can only be cancelled", "action")
        if author not in exchange.parties:
            raise InvalidObject(author_path, "is not a party to the cancelled exchange", "non-party")
        # A signature cannot be taken back: a cancel is a promise not to sign, by one who has not.
        if exchange.signatures[exchange.index_of(author)] is not None:
            raise InvalidObject(f"{path}.exchange", "the author has signed it and cannot cancel it", "signed")
        target_created = exchange.created
    # A notice answers something that already existed.
    if created + CLOCK_SKEW < target_created:
        what = "offer" if offer is not None else "exchange"
        raise InvalidObject(f"{path}.created", f"is before the {what} was created", "expiry")
    return Notice(
        raw=raw,
        id=oid,
        author=author,
        action=action,
        offer=offer,
        exchange=exchange,
        note=_text(f["note"], f"{path}.note", 0, MAX_NOTE, multiline=True) if "note" in f else "",
        created=created,
    )


_BODY_RULES = {
    KIND_LISTING: _listing,
    KIND_WITHDRAWAL: _withdrawal,
    KIND_OFFER: _offer,
    KIND_RATING: _rating,
    KIND_RECEIPT: _receipt,
    KIND_ENTRY: _entry,
    KIND_NOTICE: _notice,
}

__all__ = [
    "CLOCK_SKEW",
    "MAX_NOTE",
    "MAX_SIZE",
    "InvalidObject",
    "Signed",
    "check_fresh",
    "clean_text",
    "decode",
    "object_id",
]
