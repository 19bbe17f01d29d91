"""Each rule of the trust boundary, fed the input that breaks it.

Bodies are signed with a valid signature where the rule under test is not the
signature itself, so the test proves the *rule* rejects the object.
"""

from __future__ import annotations

import pytest
from swapmeet.protocol import boundary, build, cbor
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.objects import DOMAIN, Leg

from tests.protocol_fixtures import ALICE, BOB, CAROL, MALLORY, NONCE, SERIES, T, complete_exchange, item, listing
from tests.protocol_fixtures import offer as make_offer


def listing_body(**changes):
    body = {
        "rev": 0,
        "desc": "",
        "have": [{"qty": 1, "item": "bike", "unit": "pc"}],
        "tags": [],
        "type": "goods",
        "want": [],
        "title": "Bike",
        "series": SERIES,
        "created": T,
        "expires": T + 3600,
        "category": "",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def rejects(data: bytes, code: str, path_part: str = "", **kw) -> InvalidObject:
    with pytest.raises(InvalidObject) as info:
        boundary.decode(data, **kw)
    assert info.value.code == code, f"expected {code}, got {info.value.code}: {info.value}"
    assert path_part in info.value.path, f"{path_part!r} not in {info.value.path!r}"
    return info.value


def test_valid_listing_round_trips():
    obj = listing()
    again = boundary.decode(obj.raw)
    assert again == obj
    assert obj.id == boundary.object_id(obj.raw)
    assert obj.author == ALICE.public_key


# --------------------------------------------------------------------------- encoding and envelope


def test_signature_over_other_author_is_rejected():
    good = listing()
    forged = good.raw.replace(ALICE.public_key, MALLORY.public_key)
    rejects(forged, "signature", "signature")


def test_flipped_body_byte_breaks_signature():
    good = bytearray(listing().raw)
    at = good.index(b"Road bike")
    good[at] ^= 0x20  # "road bike": still valid text, different body
    rejects(bytes(good), "signature", "listing.signature")


def test_wrong_version_is_refused():
    data = cbor.encode(["swapmeet/2", "listing", ALICE.public_key, listing_body(), b"\0" * 64])
    rejects(data, "version", "[0]")


def test_unknown_kind_is_refused():
    rejects(build.sign(ALICE, "poem", {"text": "hi"}), "kind", "[1]")


def test_expected_kind_is_enforced():
    rejects(listing().raw, "kind", "[1]", kind="offer")


def test_trailing_bytes_are_refused():
    err = rejects(listing().raw + b"\x00", "encoding")
    assert "trailing" in err.reason


def test_non_shortest_integer_is_refused():
    raw = listing().raw
    # created = T is encoded as 0x1a + 4 bytes; re-encode it as 0x1b + 8 bytes.
    head = b"\x1a" + T.to_bytes(4, "big")
    assert raw.count(head) == 1
    rejects(raw.replace(head, b"\x1b" + T.to_bytes(8, "big")), "encoding")


def test_unsorted_map_keys_are_refused():
    body = listing_body()
    shuffled = dict(reversed(list(body.items())))
    message = cbor2_plain([DOMAIN, "listing", ALICE.public_key, shuffled])
    data = b"\x85" + message[1:] + cbor.encode(ALICE.sign(message))
    rejects(data, "encoding")


def cbor2_plain(value):
    import cbor2

    return cbor2.dumps(value)  # insertion order, not canonical


def test_duplicate_keys_are_refused():
    # {"a": 1, "a": 2} can only be written by hand.
    rejects(b"\xa2\x61a\x01\x61a\x02", "encoding")


def test_indefinite_length_is_refused():
    rejects(b"\x9f\x01\xff", "encoding")


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        (b"\xc1\x1a\x51\x4b\x67\xb0", 1),  # an epoch date (cbor2 decodes it natively)
        (b"\xc2\x41\x01", 2),  # a bignum
        (b"\xd8\x1c\x81\x01", 28),  # a shareable value (cbor2 calls an initializer, not a decoder)
        (b"\xd8\x1d\x00", 29),  # a shared reference
        (b"\xd9\xd9\xf7\x01", 55799),  # self-described CBOR
        (b"\xd9\x04\xd2\x80", 1234),  # a tag cbor2 does not know
    ],
)
def test_tags_are_refused_for_the_right_reason(raw: bytes, tag: int) -> None:
    # With cbor2 6.3 the refusal callback was called with arguments it did not take: tags
    # were still refused, but by a caught TypeError. The reason must be our rule's own.
    err = rejects(raw, "encoding")
    assert f"CBOR tag {tag} is not allowed" in err.reason, err.reason
    assert "argument" not in err.reason, err.reason


def test_bignum_quantity_is_refused():
    bignum = b"\xc2\x49\x01" + bytes(8)  # tag 2, 2**64
    rejects(bignum, "encoding")


def test_too_deep_nesting_is_refused():
    rejects(b"\x81" * 50 + b"\x01", "encoding")


def test_oversize_is_refused_before_parsing():
    rejects(b"\x5a" + (10**6).to_bytes(4, "big") + bytes(10**6), "size")


def test_float_quantity_is_refused():
    body = listing_body(have=[{"qty": 1.0, "item": "bike", "unit": "pc"}])
    rejects(build.sign(ALICE, "listing", body), "type", "have[0].qty")


def test_bool_is_not_an_integer():
    rejects(build.sign(ALICE, "listing", listing_body(rev=True)), "type", "rev")


def test_unknown_field_is_refused():
    rejects(build.sign(ALICE, "listing", listing_body(colour="red")), "unknown-field", "colour")


def test_missing_field_is_refused():
    rejects(build.sign(ALICE, "listing", listing_body(title=...)), "missing-field", "title")


# --------------------------------------------------------------------------- listing rules


def test_expiry_must_follow_creation():
    rejects(build.sign(ALICE, "listing", listing_body(expires=T)), "expiry", "expires")


def test_listing_lifetime_is_bounded():
    rejects(build.sign(ALICE, "listing", listing_body(expires=T + 400 * 86_400)), "expiry", "expires")


def test_negative_quantity_is_refused():
    body = listing_body(have=[{"qty": -1, "item": "bike", "unit": "pc"}])
    rejects(build.sign(ALICE, "listing", body), "range", "have[0].qty")


def test_duplicate_item_lines_are_refused():
    line = {"qty": 1, "item": "bike", "unit": "pc"}
    rejects(build.sign(ALICE, "listing", listing_body(have=[line, line])), "duplicate", "have[1]")


def test_terminal_escape_in_title_is_refused():
    rejects(build.sign(ALICE, "listing", listing_body(title="bike\x1b[2J")), "text", "title")


def test_bidi_override_in_title_is_refused():
    rejects(build.sign(ALICE, "listing", listing_body(title="bike\u202egnp.exe")), "text", "title")


def test_rental_needs_a_window():
    rejects(build.sign(ALICE, "listing", listing_body(type="rental")), "window", "window")
    rental = listing(type="rental", window=(T + 100, T + 200))
    assert rental.window == (T + 100, T + 200)


def test_window_only_for_rentals():
    rejects(build.sign(ALICE, "listing", listing_body(window=[T, T + 10])), "window", "window")


def test_location_is_coarse():
    rejects(build.sign(ALICE, "listing", listing_body(loc="u0yjjd6")), "format", "loc")
    assert listing(loc="u0yjj").loc == "u0yjj"


def test_freshness_rejects_future_and_expired():
    obj = listing()
    boundary.decode(obj.raw, now=T + 100)
    rejects(obj.raw, "future", "created", now=T - boundary.CLOCK_SKEW - 1)
    boundary.decode(obj.raw, now=T - boundary.CLOCK_SKEW)  # within the skew tolerance
    rejects(obj.raw, "expired", "expires", now=T + 86_400)


# --------------------------------------------------------------------------- offers


def test_offer_takes_only_what_the_listing_has():
    with pytest.raises(InvalidObject) as info:
        make_offer(take=[item("3 x bike")])
    assert info.value.code == "over-quantity"
    assert info.value.path == "offer.body.take[0].qty"
    with pytest.raises(InvalidObject) as info:
        make_offer(take=[item("1 x car")])
    assert info.value.code == "not-listed"


def test_offer_by_a_stranger_for_someone_else_is_refused():
    with pytest.raises(InvalidObject) as info:
        build.make_offer(
            MALLORY, listing(), take=[item("1 x bike")], give=[], taker=BOB.public_key, created=T + 10, expires=T + 60
        )
    assert info.value.code == "party"


def test_maker_cannot_take_its_own_listing():
    with pytest.raises(InvalidObject) as info:
        build.make_offer(ALICE, listing(), take=[item("1 x bike")], give=[], created=T + 10, expires=T + 60)
    assert info.value.code == "party"


def test_maker_offer_must_be_a_counter():
    with pytest.raises(InvalidObject) as info:
        build.make_offer(
            ALICE, listing(), take=[item("1 x bike")], give=[], taker=BOB.public_key, created=T + 10, expires=T + 60
        )
    assert info.value.code == "party"
    first = make_offer()
    counter = build.make_offer(
        ALICE,
        listing(),
        take=[item("1 x bike")],
        give=[item("5 kg x apples")],
        counters=first,
        created=T + 20,
        expires=T + 60,
    )
    assert counter.taker == BOB.public_key and counter.recipient == BOB.public_key


def test_offer_cannot_outlive_the_listing():
    with pytest.raises(InvalidObject) as info:
        make_offer(expires=T + 86_401)
    assert info.value.code == "expiry"


def test_tampered_embedded_listing_is_refused():
    good = make_offer()
    inner = bytearray(good.listing.raw)
    inner[-1] ^= 1
    body = {
        "give": [],
        "take": [{"qty": 1, "item": "bike", "unit": "pc"}],
        "taker": BOB.public_key,
        "created": T + 10,
        "expires": T + 60,
        "listing": bytes(inner),
    }
    rejects(build.sign(BOB, "offer", body), "signature", "offer.body.listing.signature")


# --------------------------------------------------------------------------- exchanges


def test_complete_exchange_keeps_its_id_while_signing():
    o = make_offer()
    x = build.exchange_for_offer(o, created=T + 20, deadline=T + 600, nonce=NONCE)
    once = build.sign_exchange(x, ALICE)
    twice = build.sign_exchange(once, BOB)
    assert not x.complete and not once.complete and twice.complete
    assert x.id == once.id == twice.id
    assert build.merge_signatures(build.sign_exchange(x, BOB), once).complete


def exchange_bytes(body, sigs):
    return cbor.encode([DOMAIN, "exchange", body, sigs])


def test_forged_countersignature_is_refused():
    x = complete_exchange()
    forged = x.raw[:-64] + MALLORY.sign(b"anything")
    rejects(forged, "signature", "exchange.signatures[1]")


def test_party_that_gives_nothing_is_refused():
    # Carol receives a lamp and gives nothing back.
    legs = [Leg(0, 1, (item("1 x bike"),)), Leg(1, 0, (item("1 x cake"),)), Leg(0, 2, (item("1 x lamp"),))]
    with pytest.raises(InvalidObject) as info:
        build.propose_exchange(
            parties=[ALICE.public_key, BOB.public_key, CAROL.public_key], legs=legs, created=T, deadline=T + 60
        )
    assert info.value.code == "party-gives-nothing"
    assert info.value.path == "exchange.body.parties[2]"
    with pytest.raises(InvalidObject) as info:
        build.propose_exchange(
            parties=[ALICE.public_key, BOB.public_key],
            legs=[Leg(0, 1, (item("1 x bike"),))],
            created=T,
            deadline=T + 60,
        )
    assert info.value.code == "party-receives-nothing"


def test_party_cannot_give_to_itself():
    with pytest.raises(InvalidObject) as info:
        build.propose_exchange(
            parties=[ALICE.public_key, BOB.public_key],
            legs=[Leg(0, 0, (item("1 x bike"),)), Leg(1, 0, (item("1 x cake"),))],
            created=T,
            deadline=T + 60,
        )
    assert info.value.code == "self-leg"


def test_exchange_cannot_exceed_a_listed_quantity():
    two_bikes = listing()
    with pytest.raises(InvalidObject) as info:
        build.propose_exchange(
            parties=[ALICE.public_key, BOB.public_key],
            legs=[Leg(0, 1, (item("3 x bike"),)), Leg(1, 0, (item("1 x cake"),))],
            listings=[two_bikes],
            created=T + 5,
            deadline=T + 60,
        )
    assert info.value.code == "over-quantity"


def test_exchange_must_match_the_offer_it_settles():
    o = make_offer()
    with pytest.raises(InvalidObject) as info:
        build.propose_exchange(
            parties=[ALICE.public_key, BOB.public_key],
            legs=[Leg(0, 1, (item("1 x bike"),)), Leg(1, 0, (item("1 kg x apples"),))],  # offer said 3 kg
            listings=[o.listing],
            offer=o,
            created=T + 20,
            deadline=T + 60,
        )
    assert info.value.code == "offer-mismatch"


def test_exchange_signing_window_is_bounded():
    with pytest.raises(InvalidObject) as info:
        build.propose_exchange(
            parties=[ALICE.public_key, BOB.public_key],
            legs=[Leg(0, 1, (item("1 x bike"),)), Leg(1, 0, (item("1 x cake"),))],
            created=T,
            deadline=T + 8 * 86_400,
        )
    assert info.value.code == "expiry"


def test_duplicate_party_is_refused():
    with pytest.raises(InvalidObject) as info:
        build.propose_exchange(
            parties=[ALICE.public_key, ALICE.public_key],
            legs=[Leg(0, 1, (item("1 x bike"),)), Leg(1, 0, (item("1 x cake"),))],
            created=T,
            deadline=T + 60,
        )
    assert info.value.code == "duplicate"


def test_too_many_parties_is_refused():
    keys = [bytes([i]) * 32 for i in range(1, 10)]
    legs = [Leg(i, (i + 1) % 9, (item("1 x thing"),)) for i in range(9)]
    with pytest.raises(InvalidObject) as info:
        build.propose_exchange(parties=keys, legs=legs, created=T, deadline=T + 60)
    assert info.value.code == "length"


def test_lapsed_exchange_is_not_fresh():
    x = build.exchange_for_offer(make_offer(), created=T + 20, deadline=T + 600, nonce=NONCE)
    rejects(x.raw, "lapsed", "deadline", now=T + 601)


# --------------------------------------------------------------------------- ratings, receipts, entries


def test_rating_by_a_non_party_is_refused():
    x = complete_exchange()
    with pytest.raises(InvalidObject) as info:
        build.make_rating(CAROL, x, subject=ALICE.public_key, score=1, created=T + 100)
    assert info.value.code == "non-party"


def test_rating_needs_a_complete_exchange():
    half = build.sign_exchange(build.exchange_for_offer(make_offer(), created=T + 20, deadline=T + 600), ALICE)
    with pytest.raises(InvalidObject) as info:
        build.make_rating(BOB, half, subject=ALICE.public_key, score=5, created=T + 100)
    assert info.value.code == "incomplete"


def test_rating_score_range_and_self_rating():
    x = complete_exchange()
    with pytest.raises(InvalidObject) as info:
        build.make_rating(BOB, x, subject=ALICE.public_key, score=6, created=T + 100)
    assert info.value.code == "range"
    with pytest.raises(InvalidObject) as info:
        build.make_rating(BOB, x, subject=BOB.public_key, score=5, created=T + 100)
    assert info.value.code == "self-rating"


def test_entry_records_only_complete_exchanges_of_its_author():
    x = complete_exchange()
    assert build.make_entry(ALICE, seq=1, prev=bytes(32), time=T + 30, payload=x).payload == x
    with pytest.raises(InvalidObject) as info:
        build.make_entry(CAROL, seq=1, prev=bytes(32), time=T + 30, payload=x)
    assert info.value.code == "non-party"
    half = build.sign_exchange(build.exchange_for_offer(make_offer(), created=T + 20, deadline=T + 600), ALICE)
    with pytest.raises(InvalidObject) as info:
        build.make_entry(ALICE, seq=1, prev=bytes(32), time=T + 30, payload=half)
    assert info.value.code == "incomplete"


def test_entry_link_rules():
    x = complete_exchange()
    with pytest.raises(InvalidObject) as info:
        build.make_entry(ALICE, seq=2, prev=bytes(32), time=T + 30, payload=x)
    assert info.value.code == "link"
    with pytest.raises(InvalidObject) as info:
        build.make_entry(ALICE, seq=1, prev=b"\1" * 32, time=T + 30, payload=x)
    assert info.value.code == "link"


def test_receipt_on_someone_elses_chain_is_refused():
    x = complete_exchange()
    receipt = build.make_receipt(BOB, x, legs=[0], created=T + 40)
    with pytest.raises(InvalidObject) as info:
        build.make_entry(ALICE, seq=1, prev=bytes(32), time=T + 50, payload=receipt)
    assert info.value.code == "non-party"


def test_parse_item_forms():
    assert build.parse_item("3 x chairs").key == ("chairs", "pc")
    assert build.parse_item("2 kg x apples").qty == 2
    assert build.parse_item("1 iou x hour of babysitting").unit == "iou"
    with pytest.raises(InvalidObject) as info:
        build.parse_item("three chairs", "have")
    assert info.value.path == "have"


# --------------------------------------------------------------------------- the decode cache


def test_decode_cache_reuses_only_successes_of_an_accepted_kind():
    x = complete_exchange()
    cache = boundary.DecodeCache(limit=4)
    entry = build.make_entry(ALICE, seq=1, prev=bytes(32), time=T + 30, payload=x)
    first = boundary.decode(entry.raw, kind="entry", cache=cache).payload
    again = build.make_entry(BOB, seq=1, prev=bytes(32), time=T + 31, payload=x)
    assert boundary.decode(again.raw, kind="entry", cache=cache).payload is first  # reused, not re-verified
    rating = build.make_rating(BOB, x, subject=ALICE.public_key, score=5, created=T + 40)
    assert boundary.decode(rating.raw, cache=cache).exchange is first
    # Cached as an exchange, the same bytes are still refused where a listing is expected.
    body = {
        "give": [{"qty": 1, "item": "cake", "unit": "pc"}],
        "take": [{"qty": 1, "item": "bike", "unit": "pc"}],
        "taker": BOB.public_key,
        "created": T + 10,
        "expires": T + 60,
        "listing": x.raw,
    }
    with pytest.raises(InvalidObject) as info:
        boundary.decode(build.sign(BOB, "offer", body), cache=cache)
    assert info.value.code == "kind"
    # A failure is never remembered as anything: forged bytes fail every time.
    forged = bytearray(x.raw)
    forged[-1] ^= 1
    bad_entry_body = {"seq": 1, "prev": bytes(32), "time": T + 30, "payload": bytes(forged)}
    for _ in range(2):
        with pytest.raises(InvalidObject) as info:
            boundary.decode(build.sign(ALICE, "entry", bad_entry_body), cache=cache)
        assert info.value.code == "signature"
