"""Regenerate the swapmeet wire test vectors in this directory, deterministically.

    python tests/vectors/generate.py          # rewrite the JSON files
    python tests/vectors/generate.py --check  # exit 1 if a file differs from what the code gives

Fixed seeds (three of them are the RFC 8032 section 7.1 test keys), fixed times,
fixed listing series and exchange nonces, and deterministic Ed25519 make the
output identical on every run. Valid objects come from the builders in
``swapmeet.protocol.build``; invalid ones are made by re-signing edited bodies
(``cbor.encode`` + ``build.sign``) or by editing bytes by hand. Every invalid
vector states the error it must produce, and this script refuses to write a
vector whose actual error differs from the stated one, so a label can never
be wrong. See README.md for the file format.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
from swapmeet.cli import parsing
from swapmeet.node.activity import Activity
from swapmeet.protocol import batch, boundary, build, cbor, evidence, gossip
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import Identity, peer_id, peer_id_bytes
from swapmeet.protocol.objects import DOMAIN, Exchange, Item, Leg

HERE = Path(__file__).resolve().parent
FORMAT = 1

# --------------------------------------------------------------------------- keys, times

SEEDS = {
    # RFC 8032 section 7.1, TEST 1, 2 and 3: their public keys can be checked against the RFC.
    "alice": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "bob": "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "carol": "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
    "mallory": "4d" * 32,
}
ALICE, BOB, CAROL, MALLORY = (Identity(bytes.fromhex(SEEDS[n])) for n in ("alice", "bob", "carol", "mallory"))

T = 1_700_000_000  # 2023-11-14T22:13:20Z
HOUR = 3600
DAY = 86_400
SERIES_CHAIRS = bytes.fromhex("00112233445566778899aabbccddeeff")
SERIES_TABLE = bytes(range(16))
NONCES = [bytes([n]) * 16 for n in range(1, 16)]
SIG_TRAILER = 66


def it(text: str) -> Item:
    return build.parse_item(text)


def d(item: str, qty: int, unit: str = "pc") -> dict[str, Any]:
    """An item as a CBOR map (for hand-made bodies)."""
    return {"item": item, "qty": qty, "unit": unit}


# --------------------------------------------------------------------------- the valid objects


class World:
    """Every valid object the vectors use, built once with the real builders."""

    def __init__(self) -> None:
        self.chairs = build.make_listing(
            ALICE,
            title="Garden chairs",
            have=[it("3 x garden chair")],
            created=T,
            expires=T + 30 * DAY,
            series=SERIES_CHAIRS,
        )
        self.chairs_rev1 = build.make_listing(
            ALICE,
            title="Garden chairs (two left)",
            have=[it("2 x garden chair")],
            want=[it("1 x sourdough loaf")],
            created=T + 5 * DAY,
            expires=T + 30 * DAY,
            series=SERIES_CHAIRS,
            rev=1,
        )
        self.table = build.make_listing(
            ALICE,
            title="Oak table \u2014 seats 6 \U0001fa91",
            desc="Solid oak, 180 \u00d7 90 cm.\n\tPick-up only, ground floor.",
            category="furniture/tables",
            tags=["oak", "pickup-only"],
            have=[it("1 x oak table"), it("6 x oak chair")],
            want=[it("10 kg x honey"), it("4 hour x bike repair")],
            loc="u33db",
            created=T,
            expires=T + 366 * DAY,
            series=SERIES_TABLE,
        )
        self.cargo_bike = build.make_listing(
            BOB,
            type="rental",
            title="Cargo bike for a day",
            have=[it("1 day x cargo bike")],
            want=[it("20 eur x cash")],
            window=(T + 2 * DAY, T + 3 * DAY),
            created=T,
            expires=T + 2 * DAY,
            series=bytes([0xB0]) * 16,
        )
        self.loan = build.make_listing(
            CAROL,
            type="loan",
            title="Lending 50 EUR until spring",
            have=[it("50 eur x cash")],
            want=[it("50 iou x eur")],
            due=T + 120 * DAY,
            created=T,
            expires=T + 14 * DAY,
            series=bytes([0xC0]) * 16,
        )
        self.repair = build.make_listing(
            BOB,
            type="service",
            title="Bike repair at your door",
            have=[it("4 hour x bike repair")],
            want=[it("1 x sourdough loaf")],
            category="services/bikes",
            tags=["bikes"],
            created=T,
            expires=T + 60 * DAY,
            series=bytes([0xB1]) * 16,
        )
        self.task = build.make_listing(
            CAROL,
            type="task",
            title="Walk my dog this weekend",
            desc="Reward for two walks.",
            have=[it("2 kg x honey")],
            want=[it("2 x dog walk")],
            created=T,
            expires=T + 3 * DAY,
            series=bytes([0xC1]) * 16,
        )
        self.offer = build.make_offer(
            BOB,
            self.chairs,
            take=[it("2 x garden chair")],
            give=[it("1 x sourdough loaf"), it("2 iou x hour of gardening")],
            note="Can pick them up on Saturday.",
            created=T + HOUR,
            expires=T + 3 * DAY,
        )
        self.counter = build.make_offer(
            ALICE,
            self.chairs,
            counters=self.offer,
            take=[it("2 x garden chair")],
            give=[it("1 x sourdough loaf"), it("3 iou x hour of gardening")],
            created=T + 2 * HOUR,
            expires=T + 3 * DAY,
        )
        self.proposed = build.exchange_for_offer(self.offer, created=T + 3 * HOUR, deadline=T + DAY, nonce=NONCES[0])
        self.maker_signed = build.sign_exchange(self.proposed, ALICE)
        self.complete = build.sign_exchange(self.maker_signed, BOB)
        self.counter_settled = build.sign_exchange(
            build.sign_exchange(
                build.exchange_for_offer(self.counter, created=T + 3 * HOUR, deadline=T + DAY, nonce=NONCES[1]),
                BOB,
            ),
            ALICE,
        )
        ring = build.propose_exchange(
            parties=[ALICE.public_key, BOB.public_key, CAROL.public_key],
            legs=[
                Leg(0, 1, (it("1 x garden chair"),)),
                Leg(1, 2, (it("2 hour x bike repair"),)),
                Leg(2, 0, (it("1 kg x honey"), it("1 iou x dog walk"))),
            ],
            listings=[self.chairs],
            created=T + 4 * HOUR,
            deadline=T + 2 * DAY,
            nonce=NONCES[2],
        )
        for who in (CAROL, ALICE, BOB):
            ring = build.sign_exchange(ring, who)
        self.ring = ring
        self.withdrawal = build.make_withdrawal(ALICE, self.table, created=T + 5 * DAY)
        # Item keys are (item, unit) compared exactly: no case folding, trimming or Unicode normalisation.
        self.lookalikes = build.make_listing(
            CAROL,
            title="Chairs and cafe chairs",
            have=[
                Item("garden chair", 1, "pc"),
                Item("Garden chair", 1, "pc"),
                Item("garden chair ", 1, "pc"),
                Item("garden chair", 1, "kg"),
                Item("garden chair", 1, "PC"),
                Item("caf\u00e9 chair", 1, "pc"),
                Item("cafe\u0301 chair", 1, "pc"),
            ],
            want=[Item("garden chair", 2, "pc")],
            created=T,
            expires=T + 7 * DAY,
            series=bytes([0xC2]) * 16,
        )
        # Photos travel apart from the listing, named by the SHA-256 of their bytes (PROTOCOL.md 6.12).
        self.photos = [hashlib.sha256(b"photo of the bench, front").digest(), hashlib.sha256(b"and the back").digest()]
        self.bench = build.make_listing(
            ALICE,
            title="Garden bench with photos",
            have=[it("1 x garden bench")],
            photos=self.photos,
            created=T,
            expires=T + 30 * DAY,
            series=bytes([0xA5]) * 16,
        )
        # A math-trade listing: Bob would give his ladder for Alice's bench (PROTOCOL.md 10.10).
        self.ladder_for_bench = build.make_listing(
            BOB,
            title="Ladder, for the bench",
            have=[it("1 x ladder")],
            accepts=((self.bench.author, self.bench.series),),
            created=T,
            expires=T + 30 * DAY,
            series=bytes([0xB7]) * 16,
        )
        self.receipt_bob = build.make_receipt(BOB, self.complete, legs=[0], created=T + DAY)
        self.receipt_alice = build.make_receipt(ALICE, self.complete, legs=[1], created=T + DAY + HOUR)
        self.rating = build.make_rating(
            BOB, self.complete, subject=ALICE.public_key, score=5, comment="Chairs as described.", created=T + 2 * DAY
        )
        self.entry_a1 = build.make_entry(ALICE, seq=1, prev=bytes(32), time=T + 4 * HOUR, payload=self.complete)
        self.entry_a2 = build.make_entry(
            ALICE, seq=2, prev=self.entry_a1.id, time=T + DAY + HOUR, payload=self.receipt_alice
        )
        self.entry_a2_fork = build.make_entry(
            ALICE, seq=2, prev=self.entry_a1.id, time=T + DAY + 2 * HOUR, payload=self.receipt_alice
        )
        self.entry_b1 = build.make_entry(BOB, seq=1, prev=bytes(32), time=T + 4 * HOUR, payload=self.complete)
        self.entry_b2 = build.make_entry(BOB, seq=2, prev=self.entry_b1.id, time=T + 2 * DAY, payload=self.rating)
        # Two exchanges that each stay within the 3 chairs, but together give away 4.
        self.over1 = self._pair_exchange(BOB, it("1 x sourdough loaf"), NONCES[3])
        self.over2 = self._pair_exchange(CAROL, it("1 kg x honey"), NONCES[4])

    def _pair_exchange(self, who: Identity, price: Item, nonce: bytes) -> Exchange:
        x = build.propose_exchange(
            parties=[ALICE.public_key, who.public_key],
            legs=[Leg(0, 1, (it("2 x garden chair"),)), Leg(1, 0, (price,))],
            listings=[self.chairs],
            created=T + 5 * HOUR,
            deadline=T + DAY,
            nonce=nonce,
        )
        return build.sign_exchange(build.sign_exchange(x, ALICE), who)


# --------------------------------------------------------------------------- crafting helpers


def body_of(raw: bytes) -> dict[str, Any]:
    """A mutable copy of the body of a single-author object or an exchange."""
    value = cbor.decode(raw, max_size=boundary.MAX_ANY_SIZE)
    return dict(value[2] if value[1] == "exchange" else value[3])


def edit(body: dict[str, Any], drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k not in drop}
    out.update(changes)
    return out


def sign(who: Identity, kind: str, body: Any) -> bytes:
    return build.sign(who, kind, body)


def sign_message(who: Identity, message: bytes) -> bytes:
    """Envelope bytes for a (possibly hand-edited) 4-element signing structure."""
    assert message[0] == 0x84
    return b"\x85" + message[1:] + cbor.encode(who.sign(message))


def message_of(who: Identity, kind: str, body: Any) -> bytes:
    return cbor.encode([DOMAIN, kind, who.public_key, body])


def exchange_raw(body: Any, signers: list[Identity | None]) -> bytes:
    """An exchange with ``body``; slot i signed by ``signers[i]`` (None: left empty)."""
    message = cbor.encode([DOMAIN, "exchange", body])
    return cbor.encode([DOMAIN, "exchange", body, [s.sign(message) if s else None for s in signers]])


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, (old.hex(), data.count(old))
    return data.replace(old, new)


def tstr(text: str) -> bytes:
    return cbor.encode(text)


# --------------------------------------------------------------------------- diagnostic notation


def diag(value: Any) -> str:
    """RFC 8949 section 8 diagnostic notation of a decoded value (for readers of the files)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(diag(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{diag(k)}: {diag(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


# --------------------------------------------------------------------------- vector records


def valid(name: str, description: str, obj: Any, seeds: list[str | None], now: int | None = None) -> dict[str, Any]:
    raw = obj.raw
    if isinstance(obj, Exchange):
        signing = boundary.signing_bytes_of_exchange(raw, obj.signatures)
    else:
        signing = b"\x84" + raw[1:-SIG_TRAILER]
    got = boundary.decode(raw, now=now)
    assert got.raw == raw and got.id == obj.id
    record: dict[str, Any] = {
        "name": name,
        "description": description,
        "kind": obj.kind,
        "seeds": seeds,
        "bytes": raw.hex(),
        "signing_bytes": signing.hex(),
        "id": obj.id.hex(),
    }
    if now is not None:
        record["now"] = now
    record["diagnostic"] = diag(cbor.decode(raw, max_size=boundary.MAX_ANY_SIZE))
    return record


def error_of(call: Callable[[], Any]) -> InvalidObject | None:
    try:
        call()
    except InvalidObject as exc:
        return exc
    return None


def invalid(
    name: str,
    description: str,
    data: bytes,
    code: str,
    path: str,
    kind: str | None,
    now: int | None = None,
) -> dict[str, Any]:
    exc = error_of(lambda: boundary.decode(data, kind=kind, now=now))
    if exc is None or (exc.code, exc.path) != (code, path):
        got = "accepted" if exc is None else f"{exc.code} at {exc.path}: {exc.reason}"
        raise SystemExit(f"vector {name}: expected {code} at {path}, got {got}")
    record: dict[str, Any] = {"name": name, "description": description, "decode_kind": kind}
    if now is not None:
        record["now"] = now
    record["bytes"] = data.hex()
    record["error"] = {"code": code, "path": path}
    return record


def seeds_of(*who: Identity | None) -> list[str | None]:
    return [None if w is None else w.seed.hex() for w in who]


# --------------------------------------------------------------------------- files


def embedded_fault_vectors(w: World, kind: str) -> list[dict[str, Any]]:
    """Faults inside embedded objects, for the file of the outermost ``kind`` (PROTOCOL.md 6.10).

    Each faulty object is signed over its faulty bytes and embedded, as bytes, in otherwise valid
    objects that are themselves signed, so the innermost fault is the only thing wrong. The path is
    the embedding field's path followed by what would follow the kind at the top level.
    """
    # The innermost fault: listing-minimal with qty 0 (range at <label>.body.have[0].qty).
    listing_qty0 = sign(ALICE, "listing", edit(body_of(w.chairs.raw), have=[d("garden chair", 0)]))
    offer_qty0 = sign(BOB, "offer", edit(body_of(w.offer.raw), listing=listing_qty0))
    xbody = body_of(w.complete.raw)
    exchange_qty0 = exchange_raw(edit(xbody, offer=offer_qty0), [ALICE, BOB])
    rating_qty0 = sign(BOB, "rating", edit(body_of(w.rating.raw), exchange=exchange_qty0))
    deep = ".body.offer.body.listing.body.have[0].qty"
    bad_sig_listing = w.chairs.raw[:-1] + bytes([w.chairs.raw[-1] ^ 0x01])
    complete_bad_slot1 = cbor.decode(w.complete.raw, max_size=boundary.MAX_ANY_SIZE)
    complete_bad_slot1[3][1] = bytes([complete_bad_slot1[3][1][0] ^ 0x01]) + complete_bad_slot1[3][1][1:]
    complete_bad_slot1_raw = cbor.encode(complete_bad_slot1)
    offer_by_carol = sign(CAROL, "offer", body_of(w.offer.raw))  # taker bob, written by carol: party at .taker

    if kind == "offer":
        base = body_of(w.offer.raw)
        oversized = sign(
            ALICE,
            "listing",
            edit(
                body_of(w.chairs.raw),
                desc="\U0001f600" * 4000,
                title="x" * 120,
                tags=[f"{i:02d}" + "t" * 30 for i in range(16)],
            ),
        )
        assert boundary.MAX_SIZE["listing"] < len(oversized)

        def bad(name: str, description: str, listing: Any, code: str, path: str) -> dict[str, Any]:
            return invalid(name, description, sign(BOB, "offer", edit(base, listing=listing)), code, path, "offer")

        short_author = cbor.encode([DOMAIN, "listing", ALICE.public_key[:31], body_of(w.chairs.raw), bytes(64)])
        return [
            bad(
                "offer-embedded-listing-qty-zero",
                "The embedded listing has qty 0: the listing's own path, with the field holding it as its label.",
                listing_qty0,
                "range",
                "offer.body.listing.body.have[0].qty",
            ),
            bad(
                "offer-embedded-listing-unknown-field",
                "The embedded listing's body has a field the schema does not have.",
                sign(ALICE, "listing", edit(body_of(w.chairs.raw), price=5)),
                "unknown-field",
                "offer.body.listing.body.price",
            ),
            bad(
                "offer-embedded-listing-author-short",
                "The embedded listing's author is 31 bytes: <label>.author, as listing.author at the top level.",
                short_author,
                "length",
                "offer.body.listing.author",
            ),
            bad(
                "offer-embedded-listing-version",
                "The embedded listing's domain is 'swapmeet/2': <label>[0].",
                replace_once(w.chairs.raw, tstr("swapmeet/1"), tstr("swapmeet/2")),
                "version",
                "offer.body.listing[0]",
            ),
            bad(
                "offer-embedded-listing-envelope",
                "The embedded object is an array of 3: envelope at the label itself.",
                cbor.encode([DOMAIN, "listing", ALICE.public_key]),
                "envelope",
                "offer.body.listing",
            ),
            bad(
                "offer-embedded-listing-trailing-byte",
                "The embedded listing is followed by one 0x00 byte: encoding at the label.",
                w.chairs.raw + b"\x00",
                "encoding",
                "offer.body.listing",
            ),
            bad(
                "offer-embedded-listing-oversized",
                "The embedded listing is over the listing limit (16384 bytes), the offer within its own: size "
                "at the label, checked before decoding the embedded bytes.",
                oversized,
                "size",
                "offer.body.listing",
            ),
        ]
    if kind == "exchange":
        plain = edit(xbody, drop=("offer",), listings=[])

        def bad_x(name: str, description: str, body: Any, code: str, path: str) -> dict[str, Any]:
            return invalid(name, description, exchange_raw(body, [ALICE, BOB]), code, path, "exchange")

        title_escape = sign(ALICE, "listing", edit(body_of(w.chairs.raw), title="\x1b[31mGarden chairs"))
        return [
            bad_x(
                "exchange-embedded-offer-listing-qty-zero",
                "Two levels deep: the listing inside the offer inside the exchange has qty 0.",
                edit(xbody, offer=offer_qty0),
                "range",
                "exchange" + deep,
            ),
            bad_x(
                "exchange-embedded-offer-by-third-party",
                "The embedded offer breaks an offer rule (written by carol for taker bob).",
                edit(xbody, offer=offer_by_carol),
                "party",
                "exchange.body.offer.body.taker",
            ),
            bad_x(
                "exchange-embedded-listing-title-escape",
                "An ANSI escape in the title of listings[0].",
                edit(plain, listings=[title_escape]),
                "text",
                "exchange.body.listings[0].body.title",
            ),
            bad_x(
                "exchange-embedded-second-listing-bad-signature",
                "listings[1] (listing-full) with its last signature bit flipped; listings[0] is fine.",
                edit(plain, listings=[w.chairs.raw, w.table.raw[:-1] + bytes([w.table.raw[-1] ^ 0x01])]),
                "signature",
                "exchange.body.listings[1].signature",
            ),
        ]
    if kind == "rating":
        base = body_of(w.rating.raw)

        def bad_r(name: str, description: str, exchange: bytes, code: str, path: str) -> dict[str, Any]:
            return invalid(name, description, sign(BOB, "rating", edit(base, exchange=exchange)), code, path, "rating")

        return [
            bad_r(
                "rating-embedded-exchange-bad-signature",
                "The rated exchange's slot 1 (bob's signature) is broken: <label>.signatures[1].",
                complete_bad_slot1_raw,
                "signature",
                "rating.body.exchange.signatures[1]",
            ),
            bad_r(
                "rating-embedded-exchange-leg-qty-zero",
                "The rated exchange has a leg item with qty 0 (re-signed by both parties).",
                exchange_raw(
                    edit(
                        xbody,
                        drop=("offer",),
                        legs=[{**xbody["legs"][0], "items": [d("garden chair", 0)]}, xbody["legs"][1]],
                    ),
                    [ALICE, BOB],
                ),
                "range",
                "rating.body.exchange.body.legs[0].items[0].qty",
            ),
            bad_r(
                "rating-embedded-three-levels",
                "Three levels deep: rating > exchange > offer > listing with qty 0.",
                exchange_qty0,
                "range",
                "rating.body.exchange" + deep,
            ),
        ]
    if kind == "entry":
        b2 = body_of(w.entry_b2.raw)
        a1 = body_of(w.entry_a1.raw)
        rating_base = body_of(w.rating.raw)

        def bad_e(name: str, description: str, body: Any, code: str, path: str, who: Identity = BOB) -> dict[str, Any]:
            return invalid(name, description, sign(who, "entry", body), code, path, "entry")

        return [
            bad_e(
                "entry-embedded-rating-by-non-party",
                "Carol's entry holds a rating by carol of the alice-bob exchange: the rating's own rule "
                "(its author is not a party) fires inside the payload, at <label>.author.",
                edit(b2, payload=sign(CAROL, "rating", rating_base)),
                "non-party",
                "entry.body.payload.author",
                who=CAROL,
            ),
            bad_e(
                "entry-embedded-rating-self",
                "The payload rating rates its own author.",
                edit(b2, payload=sign(BOB, "rating", edit(rating_base, subject=BOB.public_key))),
                "self-rating",
                "entry.body.payload.body.subject",
            ),
            bad_e(
                "entry-embedded-rating-bad-signature",
                "The payload rating's signature is broken: <label>.signature.",
                edit(b2, payload=w.rating.raw[:-1] + bytes([w.rating.raw[-1] ^ 0x01])),
                "signature",
                "entry.body.payload.signature",
            ),
            bad_e(
                "entry-embedded-exchange-bad-signature",
                "The payload exchange's slot 1 is broken: <label>.signatures[1].",
                edit(a1, payload=complete_bad_slot1_raw),
                "signature",
                "entry.body.payload.signatures[1]",
                who=ALICE,
            ),
            bad_e(
                "entry-embedded-payload-version",
                "The payload's domain is 'swapmeet/2': <label>[0].",
                edit(b2, payload=replace_once(w.receipt_bob.raw, tstr("swapmeet/1"), tstr("swapmeet/2"))),
                "version",
                "entry.body.payload[0]",
            ),
            bad_e(
                "entry-embedded-receipt-oversized",
                "The payload is a receipt over the receipt limit (2048 bytes), within the largest payload limit: "
                "size at the label once the kind is known (not at 'receipt').",
                edit(b2, payload=sign(BOB, "receipt", edit(body_of(w.receipt_bob.raw), pad=bytes(2100)))),
                "size",
                "entry.body.payload",
            ),
            bad_e(
                "entry-embedded-four-levels",
                "Four levels deep: entry > rating > exchange > offer > listing with qty 0.",
                edit(b2, payload=rating_qty0),
                "range",
                "entry.body.payload.body.exchange" + deep,
            ),
        ]
    if kind == "notice":
        decline_base = body_of(build.make_notice(ALICE, w.offer, action="decline", created=T + 2 * HOUR).raw)
        cancel_base = body_of(build.make_notice(BOB, w.maker_signed, action="cancel", created=T + 4 * HOUR).raw)
        mbody = body_of(w.maker_signed.raw)

        def bad_n(name: str, description: str, body: Any, code: str, path: str, who: Identity) -> dict[str, Any]:
            return invalid(name, description, sign(who, "notice", body), code, path, "notice")

        return [
            bad_n(
                "notice-embedded-offer-listing-qty-zero",
                "The declined offer embeds a listing with qty 0.",
                edit(decline_base, offer=offer_qty0),
                "range",
                "notice" + ".body.offer.body.listing.body.have[0].qty",
                ALICE,
            ),
            bad_n(
                "notice-embedded-offer-by-third-party",
                "The declined offer breaks an offer rule (written by carol for taker bob).",
                edit(decline_base, offer=offer_by_carol),
                "party",
                "notice.body.offer.body.taker",
                ALICE,
            ),
            bad_n(
                "notice-embedded-exchange-listing-bad-signature",
                "The cancelled exchange (signed by alice over these bytes) holds a listing with a broken signature.",
                edit(cancel_base, exchange=exchange_raw(edit(mbody, listings=[bad_sig_listing]), [ALICE, None])),
                "signature",
                "notice.body.exchange.body.listings[0].signature",
                BOB,
            ),
            bad_n(
                "notice-embedded-exchange-self-leg",
                "The cancelled exchange has a leg from alice to herself.",
                edit(
                    cancel_base,
                    exchange=exchange_raw(
                        edit(mbody, legs=[{**mbody["legs"][0], "to": 0}, mbody["legs"][1]]), [ALICE, None]
                    ),
                ),
                "self-leg",
                "notice.body.exchange.body.legs[0]",
                BOB,
            ),
        ]
    raise ValueError(kind)


def identity_file() -> dict[str, Any]:
    keys = []
    for name, who in (("alice", ALICE), ("bob", BOB), ("carol", CAROL), ("mallory", MALLORY)):
        keys.append(
            {
                "name": name,
                "seed": who.seed.hex(),
                "public_key": who.public_key.hex(),
                "peer_id_bytes": peer_id_bytes(who.public_key).hex(),
                "peer_id": peer_id(who.public_key),
            }
        )
    return {
        "format": FORMAT,
        "description": "Ed25519 seeds used by every other file, their public keys and libp2p PeerIDs.",
        "keys": keys,
    }


def item_text_file() -> dict[str, Any]:
    ok = [
        "3 x garden chair",
        "2 kg x apples",
        "1 iou x hour of babysitting",
        "  10   X  Oak chair  ",
        "4 hour \u00d7 bike repair",
        "2kg x flour",
        "1 pc x lamp",
        "2 x x-ray film",
        "3 x\tchairs\n",
        "3x chairs",
        " 3 x  chairs ",
        "3 x  garden   chair ",
        "007 x chairs",
        "3 x x chairs",
        "3 x\u00a0chairs",
        "1000000000000 x chairs",
    ]
    bad = [
        "three chairs",
        "3 chairs",
        "x chairs",
        "3 kg chairs",
        "3 x ",
        "-1 x chairs",
        "chairs x 3",
        "2kg x",
        "2 kg x",
        "3x",
        "3\u00d7chairs",
        "3 xx chairs",
        "20 \u20ac x cash",
        "3 1kg x apples",
        "\u0663 x chairs",
        "+3 x chairs",
    ]
    # Parsed without any limit check; the CLI (and, for an object, the trust boundary) refuses them.
    unchecked = [
        "0 x chairs",
        "1000000000001 x chairs",
        "3 x " + "c" * 81,
        "3 " + "u" * 17 + " x chairs",
    ]
    valid_items = []
    for text in ok:
        item = build.parse_item(text)
        parsing.parse_items([text], "item")  # within the limits: the CLI accepts it as well
        valid_items.append({"text": text, "qty": item.qty, "unit": item.unit, "item": item.item, "str": str(item)})
    invalid_items = []
    for text in bad:
        exc = error_of(lambda text=text: build.parse_item(text))
        if exc is None:
            raise SystemExit(f"item text {text!r} unexpectedly parsed")
        invalid_items.append({"text": text, "error": {"code": exc.code, "path": exc.path}})
    unchecked_items = []
    for text in unchecked:
        item = build.parse_item(text)
        exc = error_of(lambda text=text: parsing.parse_items([text], "item"))
        if exc is None:
            raise SystemExit(f"item text {text!r} unexpectedly passed the CLI's checks")
        unchecked_items.append(
            {
                "text": text,
                "qty": item.qty,
                "unit": item.unit,
                "item": item.item,
                "error": {"code": exc.code, "path": exc.path},
            }
        )
    return {
        "format": FORMAT,
        "description": (
            "The human item form 'QTY x ITEM' / 'QTY UNIT x ITEM' (a user-interface convenience, never on the wire): "
            "what build.parse_item(text) returns, and str() of the result. The unit defaults to 'pc'. "
            "Errors are raised with path 'item'. 'unchecked': texts the parser accepts without checking the item "
            "limits (qty 1..10**12, item 1-80 and unit 1-16 code points); the reference CLI then refuses them "
            "with 'error' (its path is the option name, here 'item'), and the trust boundary refuses any object "
            "that holds such an item (PROTOCOL.md 10.8)."
        ),
        "valid": valid_items,
        "invalid": invalid_items,
        "unchecked": unchecked_items,
    }


def listing_file(w: World) -> dict[str, Any]:
    a = seeds_of(ALICE)
    base = body_of(w.chairs.raw)
    good = [
        valid("listing-minimal", "Goods, one item, nothing wanted, no category or tags.", w.chairs, a),
        valid(
            "listing-rev1",
            "Revision 1 of listing-minimal (same series): supersedes it.",
            w.chairs_rev1,
            a,
        ),
        valid(
            "listing-full",
            "Every optional field a goods listing may have; non-ASCII title and a multi-line desc with a tab; "
            "the longest lifetime (366 days).",
            w.table,
            a,
        ),
        valid("listing-rental", "A rental: needs a time window.", w.cargo_bike, seeds_of(BOB)),
        valid("listing-loan", "A loan with a repayment due time; wants an IOU in return.", w.loan, seeds_of(CAROL)),
        valid("listing-service", "A service.", w.repair, seeds_of(BOB)),
        valid("listing-task", "A task: 'have' is the reward, 'want' the work.", w.task, seeds_of(CAROL)),
        valid(
            "listing-items-compared-exactly",
            "Seven 'have' items, no two with the same (item, unit) key: keys are compared exactly, so case "
            "('Garden chair'), a trailing space, the unit ('kg', 'PC' is not 'pc') and the Unicode normalisation "
            "('caf\\u00e9' vs 'cafe\\u0301') all make different items. The same key in 'have' and 'want' is allowed.",
            w.lookalikes,
            seeds_of(CAROL),
        ),
        valid(
            "listing-photos",
            "Two photos, each named by the SHA-256 of its bytes (the bytes travel apart). A listing without "
            "photos has no 'photos' field at all: every other vector here.",
            w.bench,
            a,
        ),
        valid(
            "listing-accepts",
            "Names the one listing (its author and series: any revision) its author would take in return for all "
            "of this one: an explicit want for matching (PROTOCOL.md 10.10). A listing that names none has no "
            "'accepts' field at all.",
            w.ladder_for_bench,
            seeds_of(BOB),
        ),
        valid(
            "listing-fresh-at-skew-limit",
            "Decoded with now = created - 300 (CLOCK_SKEW): still accepted.",
            w.chairs,
            a,
            now=T - 300,
        ),
        valid(
            "listing-fresh-last-second",
            "Decoded with now = expires - 1: still live.",
            w.chairs,
            a,
            now=T + 30 * DAY - 1,
        ),
    ]

    def bad(name: str, description: str, body: Any, code: str, path: str, now: int | None = None) -> dict[str, Any]:
        return invalid(name, description, sign(ALICE, "listing", body), code, path, "listing", now)

    items = base["have"]
    tb = body_of(w.table.raw)
    bike = body_of(w.cargo_bike.raw)
    loan = body_of(w.loan.raw)
    oversized = sign(
        ALICE,
        "listing",
        edit(base, desc="\U0001f600" * 4000, title="x" * 120, tags=[f"{i:02d}" + "t" * 30 for i in range(16)]),
    )
    bad_ones = [
        bad(
            "listing-unknown-field",
            "A field the schema does not have.",
            edit(base, price=5),
            "unknown-field",
            "listing.body.price",
        ),
        bad(
            "listing-missing-field",
            "'tags' is required (may be empty).",
            edit(base, drop=("tags",)),
            "missing-field",
            "listing.body.tags",
        ),
        bad(
            "listing-qty-zero",
            "Quantities are at least 1.",
            edit(base, have=[d("garden chair", 0)]),
            "range",
            "listing.body.have[0].qty",
        ),
        bad(
            "listing-qty-too-big",
            "Quantities are at most 10**12.",
            edit(base, have=[d("garden chair", 10**12 + 1)]),
            "range",
            "listing.body.have[0].qty",
        ),
        bad(
            "listing-qty-negative",
            "A negative integer (major type 1).",
            edit(base, have=[d("garden chair", -1)]),
            "range",
            "listing.body.have[0].qty",
        ),
        bad(
            "listing-qty-float",
            "A float64 quantity: floats are never accepted.",
            edit(base, have=[{"item": "garden chair", "qty": 3.5, "unit": "pc"}]),
            "type",
            "listing.body.have[0].qty",
        ),
        bad(
            "listing-qty-bool",
            "true is not an integer.",
            edit(base, have=[{"item": "garden chair", "qty": True, "unit": "pc"}]),
            "type",
            "listing.body.have[0].qty",
        ),
        bad(
            "listing-qty-text",
            "Quantity as text.",
            edit(base, have=[{"item": "garden chair", "qty": "3", "unit": "pc"}]),
            "type",
            "listing.body.have[0].qty",
        ),
        bad(
            "listing-item-missing-unit",
            "An item without 'unit'.",
            edit(base, have=[{"item": "chair", "qty": 3}]),
            "missing-field",
            "listing.body.have[0].unit",
        ),
        bad(
            "listing-have-empty",
            "A listing offers at least one item.",
            edit(base, have=[]),
            "length",
            "listing.body.have",
        ),
        bad(
            "listing-have-too-many",
            "At most 16 items.",
            edit(base, have=[d(f"thing {i}", 1) for i in range(17)]),
            "length",
            "listing.body.have",
        ),
        bad(
            "listing-duplicate-item",
            "The same (item, unit) twice.",
            edit(base, have=[*items, items[0]]),
            "duplicate",
            "listing.body.have[1]",
        ),
        bad(
            "listing-want-duplicate-item",
            "The same (item, unit) twice in want.",
            edit(base, want=[d("bread", 1), d("bread", 2)]),
            "duplicate",
            "listing.body.want[1]",
        ),
        bad(
            "listing-expires-before-created",
            "expires must be after created.",
            edit(base, expires=T),
            "expiry",
            "listing.body.expires",
        ),
        bad(
            "listing-lifetime-too-long",
            "At most 366 days between created and expires.",
            edit(base, expires=T + 366 * DAY + 1),
            "expiry",
            "listing.body.expires",
        ),
        bad(
            "listing-time-too-big",
            "Times are at most 2**40.",
            edit(base, created=2**40 + 1, expires=2**40 + 2),
            "range",
            "listing.body.created",
        ),
        bad(
            "listing-unknown-type",
            "type is one of goods, service, rental, loan, task.",
            edit(base, type="auction"),
            "format",
            "listing.body.type",
        ),
        bad(
            "listing-rental-without-window",
            "A rental needs a window.",
            edit(bike, drop=("window",)),
            "window",
            "listing.body.window",
        ),
        bad(
            "listing-window-on-goods",
            "Only a rental has a window.",
            edit(base, window=[T, T + DAY]),
            "window",
            "listing.body.window",
        ),
        bad(
            "listing-window-backwards",
            "A window ends after it starts.",
            edit(bike, window=[T + 3 * DAY, T + 3 * DAY]),
            "window",
            "listing.body.window",
        ),
        bad(
            "listing-window-three-elements",
            "A window is [start, end].",
            edit(bike, window=[T, T + DAY, T + 2 * DAY]),
            "length",
            "listing.body.window",
        ),
        bad("listing-due-on-goods", "Only a loan has a due time.", edit(base, due=T + DAY), "due", "listing.body.due"),
        bad(
            "listing-due-before-created",
            "Repayment due after the loan was listed.",
            edit(loan, due=T),
            "due",
            "listing.body.due",
        ),
        bad(
            "listing-tag-uppercase",
            "Tags are [a-z0-9][a-z0-9-]{0,31}.",
            edit(base, tags=["Oak"]),
            "format",
            "listing.body.tags[0]",
        ),
        bad(
            "listing-tag-too-long",
            "Tags are at most 32 characters.",
            edit(base, tags=["a" * 33]),
            "format",
            "listing.body.tags[0]",
        ),
        bad("listing-duplicate-tag", "A tag twice.", edit(base, tags=["oak", "oak"]), "duplicate", "listing.body.tags"),
        bad(
            "listing-tag-format-before-duplicate",
            "Two faults: 'oak' twice (tags[1]) and 'Oak' (tags[2]). Every tag's format is checked first, "
            "then duplicates: the format fault is reported though it comes later in the list.",
            edit(base, tags=["oak", "oak", "Oak"]),
            "format",
            "listing.body.tags[2]",
        ),
        bad(
            "listing-tag-not-text-before-duplicate",
            "Two faults: 'oak' twice and an integer tag after them: format (also for a non-text tag) comes first.",
            edit(base, tags=["oak", "oak", 7]),
            "format",
            "listing.body.tags[2]",
        ),
        bad(
            "listing-item-duplicate-before-later-fault",
            "Two faults: have[1] repeats have[0] and have[2] has qty 0. Item lists are checked element by "
            "element (fields, then the duplicate test), so the duplicate at [1] is reported first.",
            edit(base, have=[d("garden chair", 3), d("garden chair", 3), d("bench", 0)]),
            "duplicate",
            "listing.body.have[1]",
        ),
        bad(
            "listing-item-fault-before-duplicate",
            "Two faults in one element: have[1] repeats have[0] and has qty 0. An element's fields are checked "
            "before it is compared with the earlier ones.",
            edit(base, have=[d("garden chair", 3), d("garden chair", 0)]),
            "range",
            "listing.body.have[1].qty",
        ),
        bad(
            "listing-item-duplicate-other-qty",
            "The duplicate key is (item, unit): the same item and unit with another qty is a duplicate.",
            edit(base, have=[d("garden chair", 3), d("garden chair", 1)]),
            "duplicate",
            "listing.body.have[1]",
        ),
        bad(
            "listing-too-many-tags",
            "At most 16 tags.",
            edit(base, tags=[f"t{i}" for i in range(17)]),
            "length",
            "listing.body.tags",
        ),
        bad(
            "listing-bad-category",
            "Category: up to 4 lowercase segments joined by '/'.",
            edit(base, category="furniture//tables"),
            "format",
            "listing.body.category",
        ),
        bad(
            "listing-category-too-deep",
            "At most 4 segments.",
            edit(base, category="a/b/c/d/e"),
            "format",
            "listing.body.category",
        ),
        bad(
            "listing-loc-too-precise",
            "A geohash of at most 5 characters (coarse on purpose).",
            edit(tb, loc="u33dbf"),
            "format",
            "listing.body.loc",
        ),
        bad(
            "listing-loc-bad-char",
            "'a' is not a geohash character.",
            edit(tb, loc="u33da"),
            "format",
            "listing.body.loc",
        ),
        bad(
            "listing-title-empty",
            "title has 1 to 120 characters.",
            edit(base, title=""),
            "length",
            "listing.body.title",
        ),
        bad(
            "listing-title-too-long",
            "121 characters (counted as Unicode code points).",
            edit(base, title="\u00e9" * 121),
            "length",
            "listing.body.title",
        ),
        bad(
            "listing-title-newline",
            "Single-line text refuses every C0/C1 control, newline included.",
            edit(base, title="Garden\nchairs"),
            "text",
            "listing.body.title",
        ),
        bad(
            "listing-title-escape",
            "An ANSI escape sequence in the title.",
            edit(base, title="\x1b[31mGarden chairs"),
            "text",
            "listing.body.title",
        ),
        bad(
            "listing-title-bidi-override",
            "U+202E RIGHT-TO-LEFT OVERRIDE.",
            edit(base, title="chairs \u202egpj.exe"),
            "text",
            "listing.body.title",
        ),
        bad(
            "listing-desc-carriage-return",
            "Multi-line text allows only TAB and LF among the controls.",
            edit(base, desc="line one\r\nline two"),
            "text",
            "listing.body.desc",
        ),
        bad(
            "listing-item-name-too-long",
            "Item names have 1 to 80 characters.",
            edit(base, have=[d("c" * 81, 1)]),
            "length",
            "listing.body.have[0].item",
        ),
        bad(
            "listing-unit-too-long",
            "Units have 1 to 16 characters.",
            edit(base, have=[d("chair", 1, "u" * 17)]),
            "length",
            "listing.body.have[0].unit",
        ),
        bad(
            "listing-series-short", "series is 16 bytes.", edit(base, series=bytes(15)), "length", "listing.body.series"
        ),
        bad(
            "listing-series-text",
            "series is a byte string.",
            edit(base, series="0" * 16),
            "type",
            "listing.body.series",
        ),
        bad(
            "listing-photos-empty",
            "'photos' present but empty: no photos is written by leaving the field out (one encoding).",
            edit(base, photos=[]),
            "length",
            "listing.body.photos",
        ),
        bad(
            "listing-photos-too-many",
            "At most 4 photos.",
            edit(base, photos=[bytes([i]) * 32 for i in range(5)]),
            "length",
            "listing.body.photos",
        ),
        bad(
            "listing-photo-hash-short",
            "A photo is named by a 32-byte hash.",
            edit(base, photos=[bytes(32), bytes(31)]),
            "length",
            "listing.body.photos[1]",
        ),
        bad(
            "listing-photo-hash-text",
            "A photo hash is a byte string, not hex text.",
            edit(base, photos=["ab" * 32]),
            "type",
            "listing.body.photos[0]",
        ),
        bad(
            "listing-photo-twice",
            "The same photo twice.",
            edit(base, photos=[bytes([7]) * 32, bytes([7]) * 32]),
            "duplicate",
            "listing.body.photos",
        ),
        bad(
            "listing-accepts-empty",
            "'accepts' present but empty: none is written by leaving the field out (one encoding).",
            edit(base, accepts=[]),
            "length",
            "listing.body.accepts",
        ),
        bad(
            "listing-accepts-too-many",
            "At most 32 listings accepted.",
            edit(base, accepts=[[bytes([i]) * 32, bytes(16)] for i in range(33)]),
            "length",
            "listing.body.accepts",
        ),
        bad(
            "listing-accepts-not-a-pair",
            "Each accepted listing is a pair [author, series].",
            edit(base, accepts=[[bytes(32), bytes(16), bytes(16)]]),
            "length",
            "listing.body.accepts[0]",
        ),
        bad(
            "listing-accepts-author-short",
            "The author is a 32-byte public key.",
            edit(base, accepts=[[bytes(32), bytes(16)], [bytes(31), bytes(16)]]),
            "length",
            "listing.body.accepts[1][0]",
        ),
        bad(
            "listing-accepts-series-text",
            "The series is a byte string, not hex text.",
            edit(base, accepts=[[bytes(32), "ab" * 16]]),
            "type",
            "listing.body.accepts[0][1]",
        ),
        bad(
            "listing-accepts-twice",
            "The same listing twice.",
            edit(base, accepts=[[bytes([9]) * 32, bytes(16)], [bytes([9]) * 32, bytes(16)]]),
            "duplicate",
            "listing.body.accepts",
        ),
        bad("listing-rev-too-big", "rev is 0 to 2**32.", edit(base, rev=2**32 + 1), "range", "listing.body.rev"),
        bad("listing-body-array", "The body is a map.", [1, 2, 3], "type", "listing.body"),
        invalid(
            "listing-oversized",
            "A listing over 16384 bytes (a desc of 4000 four-byte characters, 16 tags of 32).",
            oversized,
            "size",
            "listing",
            "listing",
        ),
        bad(
            "listing-future",
            "Decoded with now = created - 301: created more than CLOCK_SKEW in the future.",
            base,
            "future",
            "listing.body.created",
            now=T - 301,
        ),
        bad(
            "listing-expired",
            "Decoded with now = expires: expired.",
            base,
            "expired",
            "listing.body.expires",
            now=T + 30 * DAY,
        ),
    ]
    return {"format": FORMAT, "kind": "listing", "valid": good, "invalid": bad_ones}


def withdrawal_file(w: World) -> dict[str, Any]:
    base = body_of(w.withdrawal.raw)
    good = [valid("withdrawal", "Alice withdraws her oak-table listing (its series).", w.withdrawal, seeds_of(ALICE))]

    def bad(name: str, description: str, body: Any, code: str, path: str, now: int | None = None) -> dict[str, Any]:
        return invalid(name, description, sign(ALICE, "withdrawal", body), code, path, "withdrawal", now)

    forged = sign_message(MALLORY, message_of(ALICE, "withdrawal", base))
    return {
        "format": FORMAT,
        "kind": "withdrawal",
        "valid": good,
        "invalid": [
            bad(
                "withdrawal-series-long",
                "series is 16 bytes.",
                edit(base, series=bytes(17)),
                "length",
                "withdrawal.body.series",
            ),
            bad(
                "withdrawal-missing-created",
                "created is required.",
                edit(base, drop=("created",)),
                "missing-field",
                "withdrawal.body.created",
            ),
            bad(
                "withdrawal-unknown-field",
                "A withdrawal has only series and created.",
                edit(base, rev=0),
                "unknown-field",
                "withdrawal.body.rev",
            ),
            invalid(
                "withdrawal-forged",
                "Signed by Mallory with Alice as author.",
                forged,
                "signature",
                "withdrawal.signature",
                "withdrawal",
            ),
            bad(
                "withdrawal-future",
                "Decoded with now 1 hour before created.",
                base,
                "future",
                "withdrawal.body.created",
                now=T + 5 * DAY - HOUR,
            ),
        ],
    }


def offer_file(w: World) -> dict[str, Any]:
    base = body_of(w.offer.raw)
    good = [
        valid(
            "offer", "Bob offers a loaf and a 2-hour gardening IOU for 2 of Alice's 3 chairs.", w.offer, seeds_of(BOB)
        ),
        valid(
            "offer-counter",
            "Alice's counter-offer: same taker (Bob), asks for a 3-hour IOU.",
            w.counter,
            seeds_of(ALICE),
        ),
    ]

    def bad(
        name: str, description: str, body: Any, code: str, path: str, who: Identity = BOB, now: int | None = None
    ) -> dict[str, Any]:
        return invalid(name, description, sign(who, "offer", body), code, path, "offer", now)

    bad_listing = bytearray(w.chairs.raw)
    bad_listing[-1] ^= 1
    long_listing = build.make_listing(
        ALICE,
        title="Garden chairs",
        have=[it("3 x garden chair")],
        created=T,
        expires=T + 60 * DAY,
        series=SERIES_CHAIRS,
    )
    return {
        "format": FORMAT,
        "kind": "offer",
        "valid": good,
        "invalid": [
            bad(
                "offer-over-quantity",
                "Takes 4 chairs; the listing has 3.",
                edit(base, take=[d("garden chair", 4)]),
                "over-quantity",
                "offer.body.take[0].qty",
            ),
            bad(
                "offer-not-listed",
                "Takes an item the listing does not have.",
                edit(base, take=[d("oak table", 1)]),
                "not-listed",
                "offer.body.take[0]",
            ),
            bad(
                "offer-wrong-unit",
                "Same item name, other unit: a different item.",
                edit(base, take=[d("garden chair", 1, "kg")]),
                "not-listed",
                "offer.body.take[0]",
            ),
            bad("offer-takes-nothing", "take has at least one item.", edit(base, take=[]), "length", "offer.body.take"),
            bad(
                "offer-taker-is-maker",
                "The taker cannot be the listing's author.",
                edit(base, taker=ALICE.public_key),
                "party",
                "offer.body.taker",
            ),
            bad(
                "offer-by-third-party",
                "Written by Carol for taker Bob: only the taker or the maker may write it.",
                base,
                "party",
                "offer.body.taker",
                who=CAROL,
            ),
            bad(
                "offer-by-maker-without-counters",
                "The maker may only write counter-offers.",
                base,
                "party",
                "offer.body.counters",
                who=ALICE,
            ),
            bad(
                "offer-outlives-listing",
                "expires after the listing expires.",
                edit(base, expires=T + 30 * DAY + 1),
                "expiry",
                "offer.body.expires",
            ),
            bad(
                "offer-created-after-listing-expired",
                "created at the listing's expiry.",
                edit(base, created=T + 30 * DAY, expires=T + 30 * DAY + 1),
                "expiry",
                "offer.body.created",
            ),
            bad(
                "offer-predates-listing",
                "created more than CLOCK_SKEW before the listing.",
                edit(base, created=T - 301),
                "expiry",
                "offer.body.created",
            ),
            bad(
                "offer-lifetime-too-long",
                "At most 30 days between created and expires.",
                edit(base, listing=long_listing.raw, expires=T + HOUR + 30 * DAY + 1),
                "expiry",
                "offer.body.expires",
            ),
            bad(
                "offer-expires-before-created",
                "expires must be after created.",
                edit(base, expires=T + HOUR),
                "expiry",
                "offer.body.expires",
            ),
            bad(
                "offer-listing-bad-signature",
                "The embedded listing's signature is broken (last bit flipped).",
                edit(base, listing=bytes(bad_listing)),
                "signature",
                "offer.body.listing.signature",
            ),
            bad(
                "offer-listing-is-a-withdrawal",
                "The embedded object must be a listing.",
                edit(base, listing=w.withdrawal.raw),
                "kind",
                "offer.body.listing[1]",
            ),
            bad(
                "offer-counters-short",
                "counters is a 32-byte id.",
                edit(base, counters=bytes(31)),
                "length",
                "offer.body.counters",
            ),
            bad(
                "offer-note-too-long",
                "note has at most 500 characters.",
                edit(base, note="n" * 501),
                "length",
                "offer.body.note",
            ),
            bad(
                "offer-give-duplicate",
                "The same item twice in give.",
                edit(base, give=[d("sourdough loaf", 1), d("sourdough loaf", 1)]),
                "duplicate",
                "offer.body.give[1]",
            ),
            bad(
                "offer-taker-not-a-key",
                "taker is a 32-byte public key.",
                edit(base, taker=BOB.public_key[:16]),
                "length",
                "offer.body.taker",
            ),
            bad("offer-expired", "Decoded with now = expires.", base, "expired", "offer.body.expires", now=T + 3 * DAY),
            *embedded_fault_vectors(w, "offer"),
        ],
    }


def exchange_file(w: World) -> dict[str, Any]:
    ab = [ALICE, BOB]
    good = [
        valid(
            "exchange-proposed",
            "The two-party exchange settling the offer, no signature yet.",
            w.proposed,
            seeds_of(None, None),
        ),
        valid(
            "exchange-maker-signed", "Signed by the maker (Alice) only: partial.", w.maker_signed, seeds_of(ALICE, None)
        ),
        valid("exchange-complete", "Signed by both parties: complete.", w.complete, seeds_of(ALICE, BOB)),
        valid(
            "exchange-settles-counter",
            "The exchange settling Alice's counter-offer, complete.",
            w.counter_settled,
            seeds_of(ALICE, BOB),
        ),
        valid(
            "exchange-ring",
            "Three parties in a ring, one listing, no offer; one leg carries an IOU.",
            w.ring,
            seeds_of(ALICE, BOB, CAROL),
        ),
        valid(
            "exchange-pending-before-deadline",
            "Partial, decoded with now = deadline - 1.",
            w.maker_signed,
            seeds_of(ALICE, None),
            now=T + DAY - 1,
        ),
        valid(
            "exchange-complete-after-deadline",
            "A complete exchange never lapses (now far past the deadline).",
            w.complete,
            seeds_of(ALICE, BOB),
            now=T + 100 * DAY,
        ),
    ]
    base = body_of(w.complete.raw)  # parties [alice, bob], legs 0->1 chairs, 1->0 loaf + IOU, listing + offer
    plain = edit(base, drop=("offer",), listings=[])  # the same legs, settling nothing

    def bad(
        name: str,
        description: str,
        body: Any,
        code: str,
        path: str,
        signers: list[Identity | None] = ab,
        now: int | None = None,
    ) -> dict[str, Any]:
        return invalid(name, description, exchange_raw(body, signers), code, path, "exchange", now)

    legs = base["legs"]
    wrong_slot = cbor.decode(w.complete.raw, max_size=boundary.MAX_ANY_SIZE)
    wrong_slot[3] = [wrong_slot[3][1], wrong_slot[3][0]]
    flipped = cbor.decode(w.complete.raw, max_size=boundary.MAX_ANY_SIZE)
    flipped[3][1] = bytes([flipped[3][1][0] ^ 1]) + flipped[3][1][1:]
    short_expiry = build.make_listing(
        ALICE,
        title="Garden chairs",
        have=[it("3 x garden chair")],
        created=T,
        expires=T + 2 * HOUR,
        series=SERIES_CHAIRS,
    )
    nine = [Identity(bytes([0x60 + i]) * 32).public_key for i in range(9)]
    return {
        "format": FORMAT,
        "kind": "exchange",
        "valid": good,
        "invalid": [
            bad(
                "exchange-party-gives-nothing",
                "Three parties; Bob only receives.",
                edit(
                    plain,
                    parties=[ALICE.public_key, BOB.public_key, CAROL.public_key],
                    legs=[
                        legs[0],
                        {"from": 0, "to": 2, "items": [d("garden chair", 1)]},
                        {"from": 2, "to": 0, "items": [d("honey", 1, "kg")]},
                    ],
                ),
                "party-gives-nothing",
                "exchange.body.parties[1]",
                signers=[ALICE, BOB, CAROL],
            ),
            bad(
                "exchange-two-parties-one-gives-nothing",
                "Bob gives nothing, so Alice receives nothing: parties "
                "are checked in order, giving then receiving, and party 0 fails first.",
                edit(plain, legs=[legs[0]]),
                "party-receives-nothing",
                "exchange.body.parties[0]",
            ),
            bad(
                "exchange-party-receives-nothing",
                "A third party (Carol) gives but receives nothing.",
                edit(
                    plain,
                    parties=[ALICE.public_key, BOB.public_key, CAROL.public_key],
                    legs=[*legs, {"from": 2, "to": 0, "items": [d("honey", 1, "kg")]}],
                ),
                "party-receives-nothing",
                "exchange.body.parties[2]",
                signers=[ALICE, BOB, CAROL],
            ),
            bad(
                "exchange-self-leg",
                "A leg from a party to itself.",
                edit(plain, legs=[*legs, {"from": 1, "to": 1, "items": [d("bread", 1)]}]),
                "self-leg",
                "exchange.body.legs[2]",
            ),
            bad(
                "exchange-leg-index-out-of-range",
                "'to' names party 2 of 2.",
                edit(plain, legs=[legs[0], legs[1] | {"to": 2}]),
                "range",
                "exchange.body.legs[1].to",
            ),
            bad(
                "exchange-leg-without-items",
                "A leg carries at least one item.",
                edit(plain, legs=[legs[0], legs[1] | {"items": []}]),
                "length",
                "exchange.body.legs[1].items",
            ),
            bad("exchange-no-legs", "At least one leg.", edit(plain, legs=[]), "length", "exchange.body.legs"),
            bad(
                "exchange-one-party",
                "2 to 8 parties.",
                edit(plain, parties=[ALICE.public_key], legs=[]),
                "length",
                "exchange.body.parties",
                signers=[ALICE],
            ),
            bad(
                "exchange-nine-parties",
                "2 to 8 parties.",
                edit(plain, parties=nine),
                "length",
                "exchange.body.parties",
                signers=[None] * 9,
            ),
            bad(
                "exchange-duplicate-party",
                "A party listed twice.",
                edit(plain, parties=[ALICE.public_key, ALICE.public_key]),
                "duplicate",
                "exchange.body.parties",
                signers=[None, None],
            ),
            bad(
                "exchange-deadline-not-after-created",
                "deadline must be after created.",
                edit(plain, deadline=base["created"]),
                "expiry",
                "exchange.body.deadline",
            ),
            bad(
                "exchange-signing-window-too-long",
                "At most 7 days to gather signatures.",
                edit(plain, deadline=base["created"] + 7 * DAY + 1),
                "expiry",
                "exchange.body.deadline",
            ),
            bad(
                "exchange-nonce-short",
                "nonce is 16 bytes.",
                edit(plain, nonce=bytes(8)),
                "length",
                "exchange.body.nonce",
            ),
            bad(
                "exchange-unknown-field",
                "An exchange body has no 'memo'.",
                edit(plain, memo="hi"),
                "unknown-field",
                "exchange.body.memo",
            ),
            invalid(
                "exchange-signature-count",
                "One signature slot per party.",
                cbor.encode([DOMAIN, "exchange", plain, [None]]),
                "length",
                "exchange.signatures",
                "exchange",
            ),
            invalid(
                "exchange-bad-signature",
                "Bob's signature with one bit flipped.",
                cbor.encode(flipped),
                "signature",
                "exchange.signatures[1]",
                "exchange",
            ),
            invalid(
                "exchange-signatures-swapped",
                "Bob's signature in Alice's slot and the reverse.",
                cbor.encode(wrong_slot),
                "signature",
                "exchange.signatures[0]",
                "exchange",
            ),
            invalid(
                "exchange-five-elements",
                "An exchange envelope has 4 elements, no author.",
                cbor.encode([DOMAIN, "exchange", ALICE.public_key, plain, [None, None]]),
                "envelope",
                "exchange",
                "exchange",
            ),
            bad(
                "exchange-listing-author-not-party",
                "Includes Carol's loan listing but Carol is not a party.",
                edit(plain, listings=[w.loan.raw]),
                "party",
                "exchange.body.listings[0]",
            ),
            bad(
                "exchange-listing-expired",
                "The included listing had expired when the exchange was created.",
                edit(plain, listings=[short_expiry.raw]),
                "expiry",
                "exchange.body.listings[0]",
            ),
            bad(
                "exchange-over-quantity",
                "Alice gives 4 chairs against a listing of 3.",
                edit(plain, listings=[w.chairs.raw], legs=[legs[0] | {"items": [d("garden chair", 4)]}, legs[1]]),
                "over-quantity",
                "exchange.body.listings[0]",
            ),
            bad(
                "exchange-duplicate-listing",
                "The same listing twice.",
                edit(plain, listings=[w.chairs.raw, w.chairs.raw]),
                "duplicate",
                "exchange.body.listings",
            ),
            bad(
                "exchange-offer-listing-missing",
                "Settles an offer whose listing is not included.",
                edit(base, listings=[]),
                "offer-listing",
                "exchange.body.offer",
            ),
            bad(
                "exchange-offer-legs-mismatch",
                "Two parties settling an offer must move exactly what it says.",
                edit(base, legs=[legs[0] | {"items": [d("garden chair", 1)]}, legs[1]]),
                "offer-mismatch",
                "exchange.body.legs",
            ),
            bad(
                "exchange-offer-wrong-parties",
                "Two parties settling Bob's offer must be Alice and Bob.",
                edit(base, parties=[ALICE.public_key, CAROL.public_key]),
                "offer-mismatch",
                "exchange.body.parties",
                signers=[ALICE, CAROL],
            ),
            bad(
                "exchange-offer-taker-missing",
                "Three parties, but not the offer's taker.",
                edit(
                    base,
                    parties=[ALICE.public_key, CAROL.public_key, MALLORY.public_key],
                    legs=[
                        *legs,
                        {"from": 2, "to": 0, "items": [d("honey", 1, "kg")]},
                        {"from": 0, "to": 2, "items": [d("bread", 1)]},
                    ],
                ),
                "offer-mismatch",
                "exchange.body.offer",
                signers=[None, None, None],
            ),
            bad(
                "exchange-offer-is-a-listing",
                "The 'offer' field holds a listing.",
                edit(base, offer=w.chairs.raw),
                "kind",
                "exchange.body.offer[1]",
            ),
            invalid(
                "exchange-lapsed",
                "Partial, decoded with now = deadline: lapsed.",
                w.maker_signed.raw,
                "lapsed",
                "exchange.body.deadline",
                "exchange",
                now=T + DAY,
            ),
            *embedded_fault_vectors(w, "exchange"),
        ],
    }


def rating_file(w: World) -> dict[str, Any]:
    base = body_of(w.rating.raw)
    good = [valid("rating", "Bob rates Alice 5 for the complete chairs exchange.", w.rating, seeds_of(BOB))]

    def bad(name: str, description: str, body: Any, code: str, path: str, who: Identity = BOB) -> dict[str, Any]:
        return invalid(name, description, sign(who, "rating", body), code, path, "rating")

    return {
        "format": FORMAT,
        "kind": "rating",
        "valid": good,
        "invalid": [
            bad(
                "rating-by-non-party",
                "Carol was not a party to the exchange.",
                base,
                "non-party",
                "rating.author",
                who=CAROL,
            ),
            bad(
                "rating-subject-non-party",
                "Carol is not a party either.",
                edit(base, subject=CAROL.public_key),
                "non-party",
                "rating.body.subject",
            ),
            bad(
                "rating-self",
                "Bob rates himself.",
                edit(base, subject=BOB.public_key),
                "self-rating",
                "rating.body.subject",
            ),
            bad(
                "rating-incomplete-exchange",
                "The exchange lacks Bob's signature.",
                edit(base, exchange=w.maker_signed.raw),
                "incomplete",
                "rating.body.exchange",
            ),
            bad("rating-score-zero", "Scores are 1 to 5.", edit(base, score=0), "range", "rating.body.score"),
            bad("rating-score-six", "Scores are 1 to 5.", edit(base, score=6), "range", "rating.body.score"),
            bad(
                "rating-before-exchange",
                "created more than CLOCK_SKEW before the exchange.",
                edit(base, created=T + 3 * HOUR - 301),
                "expiry",
                "rating.body.created",
            ),
            bad(
                "rating-comment-control",
                "A BEL character in the comment.",
                edit(base, comment="ok\x07"),
                "text",
                "rating.body.comment",
            ),
            bad(
                "rating-exchange-not-bytes",
                "The exchange is embedded as a byte string.",
                edit(base, exchange=[1, 2]),
                "type",
                "rating.body.exchange",
            ),
            *embedded_fault_vectors(w, "rating"),
        ],
    }


def receipt_file(w: World) -> dict[str, Any]:
    base = body_of(w.receipt_bob.raw)
    good = [
        valid("receipt", "Bob received leg 0 (the chairs).", w.receipt_bob, seeds_of(BOB)),
        valid("receipt-alice", "Alice received leg 1 (the loaf and the IOU).", w.receipt_alice, seeds_of(ALICE)),
    ]

    def bad(name: str, description: str, body: Any, code: str, path: str) -> dict[str, Any]:
        return invalid(name, description, sign(BOB, "receipt", body), code, path, "receipt")

    return {
        "format": FORMAT,
        "kind": "receipt",
        "valid": good,
        "invalid": [
            bad(
                "receipt-legs-unsorted",
                "Leg indices strictly increase.",
                edit(base, legs=[1, 0]),
                "format",
                "receipt.body.legs",
            ),
            bad(
                "receipt-legs-repeated",
                "Leg indices strictly increase.",
                edit(base, legs=[0, 0]),
                "format",
                "receipt.body.legs",
            ),
            bad("receipt-no-legs", "At least one leg.", edit(base, legs=[]), "length", "receipt.body.legs"),
            bad(
                "receipt-leg-index-too-big",
                "Leg indices are 0 to 63.",
                edit(base, legs=[64]),
                "range",
                "receipt.body.legs[0]",
            ),
            bad(
                "receipt-exchange-id-short",
                "exchange is a 32-byte id.",
                edit(base, exchange=bytes(31)),
                "length",
                "receipt.body.exchange",
            ),
        ],
    }


def entry_file(w: World) -> dict[str, Any]:
    a1 = body_of(w.entry_a1.raw)
    a2 = body_of(w.entry_a2.raw)
    good = [
        valid(
            "entry-alice-1",
            "Alice's first entry (prev = 32 zero bytes): the complete exchange.",
            w.entry_a1,
            seeds_of(ALICE),
        ),
        valid(
            "entry-alice-2",
            "Alice's second entry: her receipt; prev = id of entry-alice-1.",
            w.entry_a2,
            seeds_of(ALICE),
        ),
        valid("entry-bob-1", "Bob's first entry: the same complete exchange.", w.entry_b1, seeds_of(BOB)),
        valid("entry-bob-2", "Bob's second entry: his rating of Alice.", w.entry_b2, seeds_of(BOB)),
    ]

    def bad(
        name: str, description: str, body: Any, code: str, path: str, who: Identity = ALICE, now: int | None = None
    ) -> dict[str, Any]:
        return invalid(name, description, sign(who, "entry", body), code, path, "entry", now)

    return {
        "format": FORMAT,
        "kind": "entry",
        "valid": good,
        "invalid": [
            bad("entry-seq-zero", "seq starts at 1.", edit(a1, seq=0), "range", "entry.body.seq"),
            bad("entry-seq-too-big", "seq is at most 2**53.", edit(a2, seq=2**53 + 1), "range", "entry.body.seq"),
            bad(
                "entry-first-with-prev",
                "seq 1 has prev = 32 zero bytes.",
                edit(a1, prev=w.entry_b1.id),
                "link",
                "entry.body.prev",
            ),
            bad(
                "entry-later-without-prev",
                "seq > 1 names its predecessor.",
                edit(a2, prev=bytes(32)),
                "link",
                "entry.body.prev",
            ),
            bad("entry-prev-short", "prev is 32 bytes.", edit(a2, prev=bytes(31)), "length", "entry.body.prev"),
            bad(
                "entry-incomplete-exchange",
                "Only complete exchanges go on a chain.",
                edit(a1, payload=w.maker_signed.raw),
                "incomplete",
                "entry.body.payload",
            ),
            bad(
                "entry-exchange-of-others",
                "Carol records an exchange she is not a party to.",
                a1,
                "non-party",
                "entry.body.payload",
                who=CAROL,
            ),
            bad(
                "entry-rating-by-other",
                "Alice records Bob's rating on her chain.",
                edit(a2, payload=w.rating.raw),
                "non-party",
                "entry.body.payload",
            ),
            bad(
                "entry-payload-listing",
                "A listing is not a payload kind.",
                edit(a1, payload=w.chairs.raw),
                "kind",
                "entry.body.payload[1]",
            ),
            bad(
                "entry-payload-garbage",
                "The payload is not CBOR.",
                edit(a1, payload=b"\xff\xff"),
                "encoding",
                "entry.body.payload",
            ),
            bad(
                "entry-time-before-payload",
                "time more than CLOCK_SKEW before the payload was created.",
                edit(a1, time=T + 3 * HOUR - 301),
                "expiry",
                "entry.body.time",
            ),
            bad(
                "entry-future",
                "Decoded with now = time - 301.",
                a1,
                "future",
                "entry.body.time",
                now=T + 4 * HOUR - 301,
            ),
            *embedded_fault_vectors(w, "entry"),
        ],
    }


def notice_file(w: World) -> dict[str, Any]:
    """Declines and cancels: who may say no to what (PROTOCOL.md 6.9, 10.9 and 12)."""
    ring_carol = build.sign_exchange(
        build.propose_exchange(
            parties=[ALICE.public_key, BOB.public_key, CAROL.public_key],
            legs=[
                Leg(0, 1, (it("1 x garden chair"),)),
                Leg(1, 2, (it("2 hour x bike repair"),)),
                Leg(2, 0, (it("1 kg x honey"), it("1 iou x dog walk"))),
            ],
            listings=[w.chairs],
            created=T + 4 * HOUR,
            deadline=T + 2 * DAY,
            nonce=NONCES[5],
        ),
        CAROL,
    )
    decline = build.make_notice(
        ALICE, w.offer, action="decline", created=T + 2 * HOUR, note="Sorry, the chairs are promised to a neighbour."
    )
    decline_counter = build.make_notice(BOB, w.counter, action="decline", created=T + 2 * HOUR + 1800)
    cancel_offer = build.make_notice(BOB, w.offer, action="cancel", created=T + 90 * 60)
    cancel_counter = build.make_notice(ALICE, w.counter, action="cancel", created=T + 2 * HOUR + 600)
    cancel_exchange = build.make_notice(
        BOB, w.maker_signed, action="cancel", created=T + 4 * HOUR, note="Found chairs closer to home."
    )
    cancel_proposed = build.make_notice(ALICE, w.proposed, action="cancel", created=T + 3 * HOUR + 60)
    cancel_ring = build.make_notice(ALICE, ring_carol, action="cancel", created=T + 5 * HOUR)
    cancel_early = build.make_notice(BOB, w.offer, action="cancel", created=T + HOUR - 300)
    good = [
        valid(
            "notice-decline-offer",
            "Alice, the offer's recipient (the listing's author), declines Bob's offer.",
            decline,
            seeds_of(ALICE),
        ),
        valid(
            "notice-decline-counter",
            "Bob, the recipient of Alice's counter-offer (its taker), declines it. No note.",
            decline_counter,
            seeds_of(BOB),
        ),
        valid("notice-cancel-offer", "Bob, the offer's author, withdraws it.", cancel_offer, seeds_of(BOB)),
        valid(
            "notice-cancel-counter",
            "Alice, the author of the counter-offer, withdraws it.",
            cancel_counter,
            seeds_of(ALICE),
        ),
        valid(
            "notice-cancel-exchange",
            "Bob has not signed the exchange Alice signed (his slot is null): he cancels it.",
            cancel_exchange,
            seeds_of(BOB),
        ),
        valid(
            "notice-cancel-proposed-exchange",
            "Alice cancels a copy of the exchange that nobody has signed.",
            cancel_proposed,
            seeds_of(ALICE),
        ),
        valid(
            "notice-cancel-ring",
            "Three parties; only Carol has signed. Alice, who has not, cancels.",
            cancel_ring,
            seeds_of(ALICE),
        ),
        valid(
            "notice-created-at-skew-limit",
            "created = the offer's created - 300 (CLOCK_SKEW): still after it, as far as clocks can tell.",
            cancel_early,
            seeds_of(BOB),
        ),
        valid(
            "notice-about-expired-offer",
            "Decoded with now long after the offer expired: a notice has no expiry, and freshness applies only to "
            "the notice's own created (the embedded offer is evidence, not a live object).",
            decline,
            seeds_of(ALICE),
            now=T + 60 * DAY,
        ),
        valid(
            "notice-fresh-at-skew-limit",
            "Decoded with now = created - 300 (CLOCK_SKEW): not in the future yet.",
            decline,
            seeds_of(ALICE),
            now=T + 2 * HOUR - 300,
        ),
    ]

    def bad(
        name: str, description: str, body: Any, code: str, path: str, who: Identity = ALICE, now: int | None = None
    ) -> dict[str, Any]:
        return invalid(name, description, sign(who, "notice", body), code, path, "notice", now)

    base = body_of(decline.raw)  # Alice declines Bob's offer
    xbase = body_of(cancel_exchange.raw)  # Bob cancels the exchange Alice signed
    flipped = decline.raw[:-1] + bytes([decline.raw[-1] ^ 0x01])
    bad_offer = w.offer.raw[:-1] + bytes([w.offer.raw[-1] ^ 0x01])
    bad_slot = cbor.decode(w.maker_signed.raw, max_size=boundary.MAX_ANY_SIZE)
    bad_slot[3][0] = bytes([bad_slot[3][0][0] ^ 0x01]) + bad_slot[3][0][1:]
    oversized = sign(ALICE, "notice", edit(base, pad=bytes(boundary.MAX_SIZE["notice"])))
    assert boundary.MAX_SIZE["notice"] < len(oversized) <= boundary.MAX_ANY_SIZE
    return {
        "format": FORMAT,
        "kind": "notice",
        "valid": good,
        "invalid": [
            bad(
                "notice-decline-by-non-recipient",
                "Carol is neither party to Bob's offer: she cannot decline it.",
                base,
                "party",
                "notice.author",
                who=CAROL,
            ),
            bad(
                "notice-decline-own-offer",
                "Bob wrote the offer: its author cancels it, only its recipient (Alice) declines it.",
                base,
                "party",
                "notice.author",
                who=BOB,
            ),
            bad(
                "notice-decline-own-counter",
                "Alice wrote the counter-offer; its recipient is Bob.",
                edit(base, offer=w.counter.raw, created=T + 3 * HOUR),
                "party",
                "notice.author",
            ),
            bad(
                "notice-cancel-offer-by-recipient",
                "Alice received the offer: she declines it, only its author (Bob) cancels it.",
                edit(base, action="cancel"),
                "party",
                "notice.author",
            ),
            bad(
                "notice-cancel-exchange-by-signer",
                "Alice has signed the exchange she names: a signature cannot be taken back.",
                xbase,
                "signed",
                "notice.body.exchange",
            ),
            bad(
                "notice-cancel-complete-exchange",
                "Bob cancels the complete exchange (his slot holds his signature).",
                edit(xbase, exchange=w.complete.raw),
                "signed",
                "notice.body.exchange",
                who=BOB,
            ),
            bad(
                "notice-cancel-exchange-by-non-party",
                "Carol is not a party to the exchange.",
                xbase,
                "non-party",
                "notice.author",
                who=CAROL,
            ),
            bad(
                "notice-decline-exchange",
                "An exchange is signed or cancelled, never declined.",
                edit(xbase, action="decline"),
                "action",
                "notice.body.action",
                who=BOB,
            ),
            bad(
                "notice-unknown-action",
                "action is 'decline' or 'cancel'.",
                edit(base, action="reject"),
                "format",
                "notice.body.action",
            ),
            bad(
                "notice-action-uppercase",
                "Actions are matched exactly.",
                edit(base, action="Decline"),
                "format",
                "notice.body.action",
            ),
            bad(
                "notice-action-not-text",
                "An integer action is not one of the actions either.",
                edit(base, action=1),
                "format",
                "notice.body.action",
            ),
            bad(
                "notice-no-target",
                "Neither offer nor exchange.",
                edit(base, drop=("offer",)),
                "target",
                "notice.body",
            ),
            bad(
                "notice-two-targets",
                "Both an offer and an exchange.",
                edit(base, exchange=w.maker_signed.raw),
                "target",
                "notice.body",
            ),
            bad(
                "notice-two-targets-unknown-action",
                "Two faults: the target rule is checked before the action.",
                edit(base, exchange=w.maker_signed.raw, action="reject"),
                "target",
                "notice.body",
            ),
            bad(
                "notice-offer-is-a-listing",
                "The offer field holds a listing.",
                edit(base, offer=w.chairs.raw),
                "kind",
                "notice.body.offer[1]",
            ),
            bad(
                "notice-exchange-is-an-offer",
                "The exchange field holds an offer.",
                edit(xbase, exchange=w.offer.raw),
                "kind",
                "notice.body.exchange[1]",
                who=BOB,
            ),
            bad(
                "notice-offer-not-bytes",
                "The offer is embedded as a byte string, not by id.",
                edit(base, offer=w.offer.id.hex()),
                "type",
                "notice.body.offer",
            ),
            invalid(
                "notice-bad-signature",
                "notice-decline-offer with the last bit of its signature flipped.",
                flipped,
                "signature",
                "notice.signature",
                "notice",
            ),
            bad(
                "notice-offer-bad-signature",
                "The embedded offer's signature is broken (last bit flipped).",
                edit(base, offer=bad_offer),
                "signature",
                "notice.body.offer.signature",
            ),
            bad(
                "notice-exchange-bad-signature",
                "The embedded exchange's slot 0 (Alice's signature) is broken.",
                edit(xbase, exchange=cbor.encode(bad_slot)),
                "signature",
                "notice.body.exchange.signatures[0]",
                who=BOB,
            ),
            bad(
                "notice-before-offer",
                "created more than CLOCK_SKEW before the offer it answers.",
                edit(base, created=T + HOUR - 301),
                "expiry",
                "notice.body.created",
            ),
            bad(
                "notice-before-exchange",
                "created more than CLOCK_SKEW before the exchange it cancels.",
                edit(xbase, created=T + 3 * HOUR - 301),
                "expiry",
                "notice.body.created",
                who=BOB,
            ),
            bad(
                "notice-created-bool",
                "true is not a time.",
                edit(base, created=True),
                "type",
                "notice.body.created",
            ),
            bad(
                "notice-note-too-long",
                "note has at most 500 characters.",
                edit(base, note="n" * 501),
                "length",
                "notice.body.note",
            ),
            bad(
                "notice-note-escape",
                "An ANSI escape sequence in the note.",
                edit(base, note="\x1b[2Jsold"),
                "text",
                "notice.body.note",
            ),
            bad(
                "notice-missing-action",
                "action is required.",
                edit(base, drop=("action",)),
                "missing-field",
                "notice.body.action",
            ),
            bad(
                "notice-missing-created",
                "created is required.",
                edit(base, drop=("created",)),
                "missing-field",
                "notice.body.created",
            ),
            bad(
                "notice-unknown-field",
                "A field the schema does not have.",
                edit(base, reason="price"),
                "unknown-field",
                "notice.body.reason",
            ),
            bad(
                "notice-future",
                "Decoded with now = created - 301.",
                base,
                "future",
                "notice.body.created",
                now=T + 2 * HOUR - 301,
            ),
            invalid(
                "notice-oversized",
                "Over the notice limit (204800 bytes) but within the largest limit: decoded with any kind "
                "expected, refused once the kind is known.",
                oversized,
                "size",
                "notice",
                None,
            ),
            *embedded_fault_vectors(w, "notice"),
        ],
    }


def encoding_file(w: World) -> dict[str, Any]:
    """Generic CBOR faults, built on listing-minimal; decoded without a kind restriction."""
    base = body_of(w.chairs.raw)
    message = message_of(ALICE, "listing", base)
    raw = w.chairs.raw
    created = tstr("created") + cbor.encode(T)

    def edited(old: bytes, new: bytes, *more: bytes) -> bytes:
        """Hand-edit the signing structure (``old`` -> ``new``, then any further pairs), then sign it."""
        out = replace_once(message, old, new)
        for i in range(0, len(more), 2):
            out = replace_once(out, more[i], more[i + 1])
        return sign_message(ALICE, out)

    def bad(name: str, description: str, data: bytes, code: str = "encoding", path: str = "object") -> dict[str, Any]:
        return invalid(name, description, data, code, path, None)

    lex_body = dict(sorted(base.items()))
    lex_msg = cbor2.dumps([DOMAIN, "listing", ALICE.public_key, lex_body])
    swapped = dict(base)
    keys = list(swapped)
    i, j = keys.index("desc"), keys.index("have")
    keys[i], keys[j] = keys[j], keys[i]
    swapped_msg = cbor2.dumps([DOMAIN, "listing", ALICE.public_key, {k: base[k] for k in keys}])
    head = message.index(tstr("rev"))
    return {
        "format": FORMAT,
        "description": "CBOR-level faults (RFC 8949 section 4.2.1 and the decoder's limits). Built on "
        "listing-minimal; where the fault is inside the signed structure, the signature is made over the faulty "
        "bytes, so the encoding is the only thing wrong.",
        "valid": [],
        "invalid": [
            bad("empty-input", "Zero bytes.", b""),
            bad("trailing-byte", "A valid listing followed by one 0x00 byte.", raw + b"\x00"),
            bad("two-items", "Two valid objects back to back.", raw + raw),
            bad("truncated", "The last byte of a valid listing cut off.", raw[:-1]),
            bad(
                "non-canonical-int-rev",
                "rev: 0 encoded as 0x18 0x00 instead of 0x00.",
                edited(tstr("rev") + b"\x00", tstr("rev") + b"\x18\x00"),
            ),
            bad(
                "non-canonical-int-created",
                "created encoded in 8 bytes (0x1b) instead of 4 (0x1a).",
                edited(created, tstr("created") + b"\x1b" + T.to_bytes(8, "big")),
            ),
            bad(
                "non-canonical-length",
                "The title's length in a 1-byte argument (0x78 0x0d) instead of the head.",
                edited(tstr("Garden chairs"), b"\x78\x0d" + b"Garden chairs"),
            ),
            bad(
                "non-canonical-array-length",
                "The envelope's array head as 0x98 0x05 instead of 0x85.",
                b"\x98\x05" + raw[1:],
            ),
            bad(
                "unsorted-map-keys-lexicographic",
                "Body keys sorted as strings, not by encoded bytes (length first).",
                sign_message(ALICE, lex_msg),
            ),
            bad(
                "unsorted-map-keys-swapped",
                "'have' before 'desc' (equal length: bytewise order).",
                sign_message(ALICE, swapped_msg),
            ),
            bad(
                "duplicate-map-key",
                "The body has 'rev' twice.",
                sign_message(
                    ALICE,
                    replace_once(
                        message,
                        message[head - 1 : head + 5],
                        bytes([message[head - 1] + 1]) + tstr("rev") + b"\x00" + tstr("rev") + b"\x00",
                    ),
                ),
            ),
            bad(
                "indefinite-array",
                "The envelope as an indefinite-length array (0x9f ... 0xff).",
                b"\x9f" + raw[1:] + b"\xff",
            ),
            bad(
                "indefinite-text",
                "The title as an indefinite-length text string of one chunk.",
                edited(tstr("Garden chairs"), b"\x7f" + tstr("Garden chairs") + b"\xff"),
            ),
            bad(
                "indefinite-map",
                "The body as an indefinite-length map.",
                edited(message[head - 1 : head], b"\xbf")[:-SIG_TRAILER] + b"\xff",
            ),
            bad(
                "tag-epoch-time",
                "created wrapped in tag 1 (epoch time).",
                edited(created, tstr("created") + b"\xc1" + cbor.encode(T)),
            ),
            bad("tag-bignum", "qty 3 as a tag-2 bignum.", edited(tstr("qty") + b"\x03", tstr("qty") + b"\xc2\x41\x03")),
            bad(
                "tag-self-describe",
                "The whole object behind the self-described CBOR tag 55799 (0xd9d9f7).",
                b"\xd9\xd9\xf7" + raw,
            ),
            bad(
                "float-half-quantity",
                "qty 3.0 as a half-precision float (0xf9 0x4200), its shortest form: the "
                "decoder lets it through, the schema refuses it (qty must be an integer).",
                edited(tstr("qty") + b"\x03", tstr("qty") + b"\xf9\x42\x00"),
                "type",
                "listing.body.have[0].qty",
            ),
            bad(
                "float-double-quantity",
                "qty 3.0 as a double (0xfb ...): also let through to the schema.",
                edited(tstr("qty") + b"\x03", tstr("qty") + b"\xfb" + (0x4008 << 48).to_bytes(8, "big")),
                "type",
                "listing.body.have[0].qty",
            ),
            bad(
                "float-single-quantity",
                "qty 3.0 as a single-precision float (0xfa 0x40400000): neither the "
                "shortest nor a double, refused by the decoder.",
                edited(tstr("qty") + b"\x03", tstr("qty") + b"\xfa\x40\x40\x00\x00"),
            ),
            *float_vectors(edited, tstr("qty") + b"\x03"),
            bad(
                "undefined-value",
                "rev as 'undefined' (0xf7).",
                edited(tstr("rev") + b"\x00", tstr("rev") + b"\xf7"),
                "type",
                "listing.body.rev",
            ),
            bad(
                "null-value",
                "rev as null.",
                edited(tstr("rev") + b"\x00", tstr("rev") + b"\xf6"),
                "type",
                "listing.body.rev",
            ),
            bad(
                "invalid-utf8",
                "The title's text string holds bytes that are not UTF-8.",
                edited(tstr("Garden chairs"), b"\x6d" + b"Garden chair\xc3"),
            ),
            bad(
                "integer-map-key",
                "A body key that is an integer.",
                edited(message[head - 1 : head], bytes([message[head - 1] + 1]) + b"\x00\x00"),
            ),
            bad(
                "byte-string-map-key",
                "A body key that is a byte string.",
                edited(message[head - 1 : head], bytes([message[head - 1] + 1]) + b"\x41a\x00"),
            ),
            bad(
                "too-deep",
                "9 nested containers (the envelope counts as 1; 8 is the limit).",
                sign(ALICE, "listing", edit(base, tags=[[[[[[["deep"]]]]]]])),
            ),
            invalid(
                "depth-eight-reaches-schema",
                "8 nested containers decode; the schema then refuses the tag.",
                sign(ALICE, "listing", edit(base, tags=[[[[[["deep"]]]]]])),
                "format",
                "listing.body.tags[0]",
                None,
            ),
            invalid(
                "oversized",
                "1025 bytes given to a decoder that expects a withdrawal (limit 1024): refused "
                "before decoding. Without an expected kind the pre-decode limit is the largest, 204800.",
                b"\x00" * (boundary.MAX_SIZE["withdrawal"] + 1),
                "size",
                "withdrawal",
                "withdrawal",
            ),
        ],
    }


def float_vectors(edited: Callable[..., bytes], qty: bytes) -> list[dict[str, Any]]:
    """Which float encodings pass the CBOR layer (PROTOCOL.md 2.2): NaN, infinities, widths, mixed forms.

    ``edited(old, new)`` re-signs listing-minimal with ``old`` replaced by ``new``; ``qty`` is its
    ``"qty": 3`` pair. A float that passes reaches the schema and is refused there (``type`` at the
    field); one that does not is refused by the decoder (``encoding`` at the label).
    """
    key = tstr("qty")
    schema = ("type", "listing.body.have[0].qty")
    cases: list[tuple[str, str, bytes, tuple[str, str]]] = [
        (
            "float-nan-half-quiet",
            "NaN as f9 7e00, the one NaN encoding that passes the decoder.",
            b"\xf9\x7e\x00",
            schema,
        ),
        ("float-nan-half-negative", "NaN with the sign bit set (f9 fe00).", b"\xf9\xfe\x00", ("encoding", "object")),
        ("float-nan-half-payload", "A quiet NaN with a payload (f9 7e01).", b"\xf9\x7e\x01", ("encoding", "object")),
        (
            "float-nan-half-signalling",
            "A signalling NaN (f9 7c01: quiet bit clear).",
            b"\xf9\x7c\x01",
            ("encoding", "object"),
        ),
        ("float-nan-single", "NaN in single precision (fa 7fc00000).", b"\xfa\x7f\xc0\x00\x00", ("encoding", "object")),
        (
            "float-nan-double",
            "NaN in double precision (fb 7ff8000000000000): unlike a finite float, a NaN does not pass as a double.",
            b"\xfb\x7f\xf8" + bytes(6),
            ("encoding", "object"),
        ),
        ("float-infinity-half", "+Infinity as f9 7c00 passes the decoder.", b"\xf9\x7c\x00", schema),
        ("float-negative-infinity-half", "-Infinity as f9 fc00 passes the decoder.", b"\xf9\xfc\x00", schema),
        (
            "float-infinity-double",
            "+Infinity as a double (fb 7ff0000000000000): refused, like a NaN double.",
            b"\xfb\x7f\xf0" + bytes(6),
            ("encoding", "object"),
        ),
        (
            "float-single-shortest",
            "100000.0 as fa 47c35000: single precision is its shortest exact form, so it passes.",
            b"\xfa\x47\xc3\x50\x00",
            schema,
        ),
        (
            "float-negative-zero-half",
            "-0.0 as f9 8000 (its shortest form) passes.",
            b"\xf9\x80\x00",
            schema,
        ),
    ]
    out = [invalid(name, description, edited(qty, key + enc), *err, None) for name, description, enc, err in cases]
    rev = tstr("rev") + b"\x00"
    mixed = [
        (
            "float-mixed-forms",
            "Two floats in one object: qty 3.0 in its shortest form (f9 4200), rev 0.0 as a double (fb 00...). "
            "Each would pass alone, but one object must use one form throughout: refused by the decoder.",
            b"\xf9\x42\x00",
            tstr("rev") + b"\xfb" + bytes(8),
            ("encoding", "object"),
        ),
        (
            "float-two-doubles",
            "Two floats in one object, both as doubles: passes the decoder; the schema refuses the first float "
            "it checks (rev: a listing's rev is checked before its items).",
            b"\xfb\x40\x08" + bytes(6),
            tstr("rev") + b"\xfb" + bytes(8),
            ("type", "listing.body.rev"),
        ),
        (
            "float-double-and-nan",
            "Two floats in one object: qty 3.0 as a double and rev NaN as f9 7e00 (NaN's only form): passes.",
            b"\xfb\x40\x08" + bytes(6),
            tstr("rev") + b"\xf9\x7e\x00",
            ("type", "listing.body.rev"),
        ),
    ]
    for name, description, qty_enc, rev_enc, err in mixed:
        out.append(invalid(name, description, edited(qty, key + qty_enc, rev, rev_enc), *err, None))
    return out


def envelope_file(w: World) -> dict[str, Any]:
    base = body_of(w.chairs.raw)
    raw = w.chairs.raw
    message = message_of(ALICE, "listing", base)

    def bad(name: str, description: str, data: bytes, code: str, path: str, kind: str | None = None) -> dict[str, Any]:
        return invalid(name, description, data, code, path, kind)

    sig = raw[-64:]
    flipped = raw[:-1] + bytes([raw[-1] ^ 0x01])
    big_withdrawal = sign(ALICE, "withdrawal", edit(body_of(w.withdrawal.raw), pad=b"\x00" * 1024))
    # RFC 8032 signatures are malleable in S unless S < L is enforced: S + L must be refused.
    order = 2**252 + 27742317777372353535851937790883648493
    s_plus_l = sig[:32] + (int.from_bytes(sig[32:], "little") + order).to_bytes(32, "little")
    small_order_key = bytes([1]) + bytes(31)  # the identity point: any R = identity, S = 0 "verifies" naively
    small = cbor.encode([DOMAIN, "listing", small_order_key, base, small_order_key + bytes(32)])
    return {
        "format": FORMAT,
        "description": "Envelope, version, kind and signature faults.",
        "valid": [],
        "invalid": [
            bad(
                "not-an-array",
                "A map instead of the envelope array.",
                cbor.encode({"kind": "listing"}),
                "envelope",
                "object",
            ),
            bad(
                "three-elements",
                "Envelopes have 4 (exchange) or 5 elements.",
                cbor.encode([DOMAIN, "listing", base]),
                "envelope",
                "object",
            ),
            bad(
                "wrong-version",
                "Domain 'swapmeet/2': unknown versions are refused.",
                sign_message(ALICE, replace_once(message, tstr(DOMAIN), tstr("swapmeet/2"))),
                "version",
                "object[0]",
            ),
            bad(
                "wrong-domain-case",
                "Domain 'Swapmeet/1': compared byte for byte.",
                sign_message(ALICE, replace_once(message, tstr(DOMAIN), tstr("Swapmeet/1"))),
                "version",
                "object[0]",
            ),
            bad(
                "domain-as-bytes",
                "The domain as a byte string, not text.",
                sign_message(ALICE, replace_once(message, tstr(DOMAIN), cbor.encode(DOMAIN.encode()))),
                "version",
                "object[0]",
            ),
            bad(
                "unknown-kind",
                "Kind 'auction'.",
                sign_message(ALICE, replace_once(message, tstr("listing"), tstr("auction"))),
                "kind",
                "object[1]",
            ),
            bad(
                "unexpected-kind",
                "A withdrawal given to a decoder that expects a listing.",
                w.withdrawal.raw,
                "kind",
                "listing[1]",
                "listing",
            ),
            bad(
                "single-author-four-elements",
                "A listing without its signature element.",
                message,
                "envelope",
                "listing",
            ),
            bad(
                "author-short",
                "author is a 32-byte Ed25519 public key.",
                cbor.encode([DOMAIN, "listing", ALICE.public_key[:31], base, sig]),
                "length",
                "listing.author",
            ),
            bad(
                "signature-short",
                "signature is 64 bytes.",
                raw[:-66] + cbor.encode(sig[:63]),
                "length",
                "listing.signature",
            ),
            bad(
                "signature-null",
                "A single-author object is always signed.",
                raw[:-66] + b"\xf6",
                "type",
                "listing.signature",
            ),
            bad("body-not-a-map", "The body is an array.", sign(ALICE, "listing", [1]), "type", "listing.body"),
            bad("bad-signature", "The last bit of the signature flipped.", flipped, "signature", "listing.signature"),
            bad(
                "body-changed-after-signing",
                "The title changed after signing.",
                replace_once(raw, tstr("Garden chairs"), tstr("Garden chairz")),
                "signature",
                "listing.signature",
            ),
            bad(
                "signed-by-other-key",
                "Signed by Mallory, author Alice.",
                sign_message(MALLORY, message),
                "signature",
                "listing.signature",
            ),
            bad(
                "kind-replay",
                "A valid listing with its kind changed to 'withdrawal': the kind is signed.",
                replace_once(raw, tstr("listing"), tstr("withdrawal")),
                "signature",
                "withdrawal.signature",
            ),
            bad(
                "version-replay",
                "The signature of a 'swapmeet/0' structure on a 'swapmeet/1' envelope.",
                b"\x85"
                + message[1:]
                + cbor.encode(ALICE.sign(replace_once(message, tstr(DOMAIN), tstr("swapmeet/0")))),
                "signature",
                "listing.signature",
            ),
            bad(
                "signature-s-plus-l",
                "S replaced by S + L (the group order): same equation, non-canonical S.",
                raw[:-64] + s_plus_l,
                "signature",
                "listing.signature",
            ),
            bad(
                "small-order-author",
                "author is the identity point, signature R = identity, S = 0: satisfies the "
                "cofactorless equation; refused because the key has small order.",
                small,
                "signature",
                "listing.signature",
            ),
            bad(
                "oversized-for-kind",
                "A 1100-byte withdrawal: under the 204800-byte pre-check, over its kind's 1024.",
                big_withdrawal,
                "size",
                "withdrawal",
            ),
        ],
    }


def proofs_file(w: World) -> dict[str, Any]:
    fork = evidence.fork_proof(w.entry_a2, w.entry_a2_fork)
    over = evidence.overcommit_proof(w.chairs, [w.over1, w.over2])

    def proof_valid(name: str, description: str, data: bytes) -> dict[str, Any]:
        got = evidence.decode_proof(data)
        assert got.raw == data
        return {
            "name": name,
            "description": description,
            "bytes": data.hex(),
            "diagnostic": diag(cbor.decode(data, max_size=len(data))),
        }

    def proof_bad(name: str, description: str, data: bytes, code: str, path: str) -> dict[str, Any]:
        exc = error_of(lambda: evidence.decode_proof(data))
        if exc is None or (exc.code, exc.path) != (code, path):
            raise SystemExit(f"vector {name}: expected {code} at {path}, got {exc and (exc.code, exc.path)}")
        return {"name": name, "description": description, "bytes": data.hex(), "error": {"code": code, "path": path}}

    f1, f2 = fork.first.raw, fork.second.raw
    o_listing, (x1, x2) = over.listing.raw, [x.raw for x in over.exchanges]
    alice_only = build.sign_exchange(
        build.propose_exchange(
            parties=[ALICE.public_key, CAROL.public_key],
            legs=[Leg(0, 1, (it("2 x garden chair"),)), Leg(1, 0, (it("1 kg x honey"),))],
            listings=[w.chairs],
            created=T + 5 * HOUR,
            deadline=T + DAY,
            nonce=NONCES[5],
        ),
        CAROL,
    )
    unsigned_pair = sorted([w.over1, alice_only], key=lambda x: x.id)
    return {
        "format": FORMAT,
        "description": "Evidence: fork proofs and over-commitment proofs, checked with evidence.decode_proof.",
        "valid": [
            proof_valid(
                "fork-proof",
                "Alice's two different entries with seq 2 (ordered by id).",
                cbor.encode([DOMAIN, "fork-proof", f1, f2]),
            ),
            proof_valid(
                "overcommit-proof",
                "Alice's 3-chair listing and two exchanges she signed that give away 2 chairs each (ordered by id).",
                cbor.encode([DOMAIN, "overcommit-proof", o_listing, [x1, x2]]),
            ),
        ],
        "invalid": [
            proof_bad(
                "fork-proof-same-entry",
                "The same entry twice.",
                cbor.encode([DOMAIN, "fork-proof", f1, f1]),
                "not-a-fork",
                "fork-proof",
            ),
            proof_bad(
                "fork-proof-different-seq",
                "Entries with seq 1 and 2.",
                cbor.encode(
                    [DOMAIN, "fork-proof", *sorted([w.entry_a1.raw, f1], key=lambda r: hashlib.sha256(r).digest())]
                ),
                "not-a-fork",
                "fork-proof",
            ),
            proof_bad(
                "fork-proof-different-authors",
                "Alice's and Bob's first entries.",
                cbor.encode(
                    [
                        DOMAIN,
                        "fork-proof",
                        *sorted([w.entry_a1.raw, w.entry_b1.raw], key=lambda r: hashlib.sha256(r).digest()),
                    ]
                ),
                "not-a-fork",
                "fork-proof",
            ),
            proof_bad(
                "fork-proof-unordered",
                "The two entries in descending id order.",
                cbor.encode([DOMAIN, "fork-proof", f2, f1]),
                "encoding",
                "proof",
            ),
            proof_bad(
                "overcommit-proof-within-quantity",
                "One exchange of 2 chairs out of 3.",
                cbor.encode([DOMAIN, "overcommit-proof", o_listing, [x1]]),
                "not-overcommitted",
                "overcommit-proof",
            ),
            proof_bad(
                "overcommit-proof-not-signed-by-author",
                "One of the exchanges lacks Alice's signature.",
                cbor.encode([DOMAIN, "overcommit-proof", o_listing, [x.raw for x in unsigned_pair]]),
                "not-overcommitted",
                f"overcommit-proof.exchanges[{[x.id for x in unsigned_pair].index(alice_only.id)}]",
            ),
            proof_bad(
                "overcommit-proof-unordered",
                "The exchanges in descending id order.",
                cbor.encode([DOMAIN, "overcommit-proof", o_listing, [x2, x1]]),
                "encoding",
                "proof",
            ),
            proof_bad(
                "proof-unknown-kind",
                "Proof kind 'double-spend-proof'.",
                cbor.encode([DOMAIN, "double-spend-proof", f1, f2]),
                "kind",
                "proof[1]",
            ),
            proof_bad(
                "proof-wrong-version",
                "Domain 'swapmeet/2'.",
                cbor.encode(["swapmeet/2", "fork-proof", f1, f2]),
                "envelope",
                "proof",
            ),
        ],
    }


def gossip_file(w: World) -> dict[str, Any]:
    """Gossip message ids (PROTOCOL.md 13.1): topics, data, publisher and seqno -> id."""
    alice, bob = peer_id_bytes(ALICE.public_key), peer_id_bytes(BOB.public_key)
    seq = (T + 1).to_bytes(8, "big")  # py-libp2p's first seqno: a counter started at the Unix time, plus 1
    seq2 = (T + 2).to_bytes(8, "big")
    listings, offers, settle, ledger = (f"/swapmeet/main/{n}/1" for n in ("listings", "offers", "settle", "ledger"))
    listing_batch = batch.encode_batch([w.chairs.raw])
    exchange_batch = batch.encode_batch([w.maker_signed.raw])
    cases: list[tuple[str, str, list[str], bytes, bytes, bytes]] = [
        (
            "gossip-id-worked-example",
            "The worked example of PROTOCOL.md 13.1: one content-only topic, 4 bytes of data (the id does not "
            "depend on what the data means).",
            [listings],
            b"swap",
            alice,
            seq,
        ),
        (
            "gossip-id-worked-example-settle",
            "The settle worked example of PROTOCOL.md 13.1: the same 4 bytes on the settle topic, published by "
            "alice with seqno T + 1.",
            [settle],
            b"swap",
            alice,
            seq,
        ),
        (
            "gossip-id-listing-batch",
            "A batch of one listing (listing-minimal) on the listings topic, published by alice.",
            [listings],
            listing_batch,
            alice,
            seq,
        ),
        (
            "gossip-id-listing-batch-other-publisher",
            "The same batch published by bob with another seqno: content-only, so the same id as "
            "gossip-id-listing-batch (one message, deduplicated).",
            [listings],
            listing_batch,
            bob,
            seq2,
        ),
        (
            "gossip-id-other-topic",
            "The same batch on the offers topic: the topic is hashed, so the id differs.",
            [offers],
            listing_batch,
            alice,
            seq,
        ),
        (
            "gossip-id-other-network",
            "The same batch on network 'test': the network name is part of the topic.",
            ["/swapmeet/test/listings/1"],
            listing_batch,
            alice,
            seq,
        ),
        ("gossip-id-empty-data", "No data at all: only the topic is hashed.", [ledger], b"", alice, seq),
        (
            "gossip-id-settle",
            "A batch of one exchange (exchange-maker-signed) on the settle topic, a per-publication topic: "
            "the publisher's PeerID and the seqno are hashed too.",
            [settle],
            exchange_batch,
            alice,
            seq,
        ),
        (
            "gossip-id-settle-retry",
            "The same bytes re-published by alice (the next seqno): a new message with a new id.",
            [settle],
            exchange_batch,
            alice,
            seq2,
        ),
        (
            "gossip-id-settle-other-publisher",
            "The same bytes and seqno published by bob: another publication, another id.",
            [settle],
            exchange_batch,
            bob,
            seq,
        ),
        (
            "gossip-id-two-topics",
            "One message on two content-only topics: each topic length-prefixed, in the message's order.",
            [listings, offers],
            listing_batch,
            alice,
            seq,
        ),
        (
            "gossip-id-two-topics-swapped",
            "The same two topics in the other order: a different id (the order is not normalised).",
            [offers, listings],
            listing_batch,
            alice,
            seq,
        ),
        (
            "gossip-id-two-topics-one-settle",
            "One message on offers and settle: one per-publication topic is enough for the publication suffix.",
            [offers, settle],
            exchange_batch,
            alice,
            seq,
        ),
    ]
    ids = []
    for name, description, topics, data, publisher, seqno in cases:
        per_publication = any(t.split("/")[3] in gossip.PER_PUBLICATION_TOPICS for t in topics)
        if per_publication:
            mid = gossip.message_id(topics, data, publisher, seqno)
        else:
            mid = gossip.message_id(topics, data)
        ids.append(
            {
                "name": name,
                "description": description,
                "topics": topics,
                "data": data.hex(),
                "publisher": publisher.hex(),
                "seqno": seqno.hex(),
                "per_publication": per_publication,
                "id": mid.hex(),
            }
        )
    return {
        "format": FORMAT,
        "description": (
            "GossipSub message ids (PROTOCOL.md 13.1). Each case is one gossip message: its topic ids in order, "
            "its data, its signed 'from' (the publisher's binary PeerID) and 'seqno'. 'per_publication' is true "
            "when one of its topics is a per-publication topic (name 'settle'); only then do publisher and seqno "
            "enter the id."
        ),
        "per_publication_topics": list(gossip.PER_PUBLICATION_TOPICS),
        "message_ids": ids,
    }


class _Pipe:
    """One end of an in-memory framed stream: what BookSync needs of a FramedStream."""

    def __init__(self, peer_id: str, name: str, log: list[tuple[str, bytes]], send: Any, receive: Any) -> None:
        self.peer_id, self.protocol = peer_id, "/swapmeet/main/book-sync/1.0.0"
        self._name, self._log, self._send, self._receive = name, log, send, receive

    async def send(self, frame: bytes) -> None:
        self._log.append((self._name, frame))
        await self._send.send(frame)

    async def receive(self) -> bytes:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._send.aclose()

    async def __aenter__(self) -> _Pipe:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def run_sync_session(
    initiator: tuple[list[tuple[int, bytes]], list[bytes]], responder: tuple[list[tuple[int, bytes]], list[bytes]]
) -> tuple[list[tuple[str, bytes]], list[bytes], list[bytes]]:
    """One book-sync session run by the reference code (node/booksync.py) over an in-memory stream.

    Each side is ``(items, objects)``: its reconciled set and the signed objects it can serve.
    Returns the frames in the order sent, as ``(sender, frame)``, and what each side was handed
    to ingest (initiator: from ``objs``; responder: from ``put``).
    """
    import trio
    from swapmeet.node.booksync import BookSync

    log: list[tuple[str, bytes]] = []
    got: dict[str, list[bytes]] = {"initiator": [], "responder": []}

    class _Book:
        """The book queries a sync session makes: the reconciled set, signed bytes by id, and what is held."""

        def __init__(self, items: list[tuple[int, bytes]], objects: list[bytes]) -> None:
            self.items = items
            self.by_id = {boundary.object_id(raw): raw for raw in objects}

        def ids_with_times(self, now: int) -> list[tuple[int, bytes]]:
            return list(self.items)

        def raws(self, ids: list[bytes]) -> list[bytes]:
            return [self.by_id[i] for i in ids if i in self.by_id]

        def held(self, ids: list[bytes]) -> set[bytes]:
            return set()  # what was fetched goes to _Ingest, never into this book

    class _Ingest:
        """What a side is handed to ingest, kept instead of stored."""

        def __init__(self, name: str) -> None:
            self.name = name

        async def store_raw(self, raws: list[bytes], peer: str) -> int:
            got[self.name].extend(raws)
            return len(raws)

    def side(name: str, items: list[tuple[int, bytes]], objects: list[bytes]) -> BookSync:
        return BookSync(host, "vectors", _Book(items, objects), _Ingest(name), Activity())  # type: ignore[arg-type]

    class _Host:
        served: Any = None

        async def open_stream(self, peer: str, protocol: str, *, max_frame_size: int) -> _Pipe:
            to_resp, from_init = trio.open_memory_channel[bytes](100)
            to_init, from_resp = trio.open_memory_channel[bytes](100)
            self.served = _Pipe("initiator-peer", "responder", log, to_init, from_init)
            self.nursery.start_soon(responder_side._serve, self.served)
            return _Pipe("responder-peer", "initiator", log, to_resp, from_resp)

    host = _Host()
    initiator_side = side("initiator", *initiator)
    responder_side = side("responder", *responder)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            host.nursery = nursery  # type: ignore[attr-defined]
            await initiator_side.sync_with("responder-peer")

    trio.run(main)
    return log, got["initiator"], got["responder"]


def sync_file(w: World) -> dict[str, Any]:
    """Whole book-sync sessions, frame by frame (PROTOCOL.md 14.4)."""

    def items_of(*objs: Any) -> list[tuple[int, bytes]]:
        return sorted((o.created, o.id) for o in objs)

    # Ids nobody can fetch (only their (created, id) items take part), to make sets large enough to split.
    filler = [(T + 100 + i, hashlib.sha256(b"filler %d" % i).digest()) for i in range(272)]
    common = [w.chairs_rev1, w.table]
    cases = [
        (
            "sync-identical",
            "Both hold the same two objects. The initiator's first message is one IdList; the responder finds "
            "nothing to add and answers the version byte alone; the initiator's own answer then has no ranges, "
            "so it sends no rec, nothing to get or put, and ends.",
            (items_of(*common), [o.raw for o in common]),
            (items_of(*common), [o.raw for o in common]),
        ),
        (
            "sync-each-lacks-one",
            "The initiator lacks the cargo-bike listing, the responder the counter-offer. One round "
            "(IdList, IdDiff), then get / objs, then put, then end.",
            (items_of(*common, w.counter), [o.raw for o in (*common, w.counter)]),
            (items_of(*common, w.cargo_bike), [o.raw for o in (*common, w.cargo_bike)]),
        ),
        (
            "sync-initiator-empty",
            "The initiator holds nothing: its first message is an empty IdList up to infinity (01 00 00 02 00).",
            ([], []),
            (items_of(*common), [o.raw for o in common]),
        ),
        (
            "sync-split",
            "272 ids both hold (not fetchable, only reconciled; 17 per range) plus the responder's cargo-bike "
            "listing: the first message is 16 Fingerprint ranges, the responder splits the one that differs "
            "(18 items) into 16 more, the initiator answers the one of those that differs (the bike alone) with an "
            "IdList of its items there (none), the responder answers with an IdDiff, and the initiator's next "
            "answer has no ranges, so it is not sent; then get / objs and end.",
            (sorted(filler), []),
            (sorted([*filler, (w.cargo_bike.created, w.cargo_bike.id)]), [w.cargo_bike.raw]),
        ),
    ]
    sessions = []
    for name, description, init, resp in cases:
        frames, fetched, pushed = run_sync_session(init, resp)
        sessions.append(
            {
                "name": name,
                "description": description,
                "initiator": {"items": [[t, i.hex()] for t, i in init[0]], "objects": [r.hex() for r in init[1]]},
                "responder": {"items": [[t, i.hex()] for t, i in resp[0]], "objects": [r.hex() for r in resp[1]]},
                "frames": [
                    {"from": who, "frame": f.hex(), "diagnostic": diag(cbor.decode(f, max_size=len(f)))}
                    for who, f in frames
                ],
                "initiator_received": [boundary.object_id(r).hex() for r in fetched],
                "responder_received": [boundary.object_id(r).hex() for r in pushed],
            }
        )
    return {
        "format": FORMAT,
        "description": (
            "Book-sync sessions (PROTOCOL.md 14), run by the reference code over an in-memory stream: each side's "
            "reconciled set ('items': [created, id]) and the signed objects it can serve ('objects'), every frame "
            "in the order sent with its sender, and the ids of the objects each side was handed (initiator: from "
            "objs; responder: from put). Reconciliation parameters are the defaults (frame limit 65536, 16 "
            "buckets, IdList threshold 16)."
        ),
        "sessions": sessions,
    }


def render() -> dict[str, str]:
    """Every vector file: name -> exact text."""
    w = World()
    files = {
        "identity.json": identity_file(),
        "item-text.json": item_text_file(),
        "encoding.json": encoding_file(w),
        "envelope.json": envelope_file(w),
        "listing.json": listing_file(w),
        "withdrawal.json": withdrawal_file(w),
        "offer.json": offer_file(w),
        "exchange.json": exchange_file(w),
        "rating.json": rating_file(w),
        "receipt.json": receipt_file(w),
        "entry.json": entry_file(w),
        "notice.json": notice_file(w),
        "proofs.json": proofs_file(w),
        "gossip.json": gossip_file(w),
        "sync.json": sync_file(w),
    }
    return {name: json.dumps(content, indent=1, ensure_ascii=True) + "\n" for name, content in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale vector files: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
