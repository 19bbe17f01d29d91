"""Property tests of the trust boundary (hypothesis).

1. Every valid object survives encode/decode unchanged.
2. Any single-bit change to the bytes of a signed object is rejected.
3. No input makes the decoder raise anything but InvalidObject.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from swapmeet.protocol import boundary, build, cbor
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.objects import Item

from tests.protocol_fixtures import ALICE, BOB, T, complete_exchange, listing, offer, ring

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Printable text without control or bidi-override characters, as the schema allows.
safe_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs"), blacklist_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    ),
    min_size=1,
    max_size=40,
)
items = st.lists(
    st.builds(Item, item=safe_text, qty=st.integers(1, 10**12), unit=st.sampled_from(["pc", "kg", "h", "iou"])),
    min_size=1,
    max_size=5,
    unique_by=lambda i: i.key,
)
tags = st.lists(st.from_regex(r"[a-z0-9][a-z0-9-]{0,10}", fullmatch=True), max_size=5, unique=True)


@SETTINGS
@given(
    title=safe_text,
    have=items,
    want=items | st.just([]),
    desc=st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=200),
    tags=tags,
    created=st.integers(0, 2**39),
    lifetime=st.integers(1, 366 * 86_400),
    listing_type=st.sampled_from(["goods", "service", "task"]),
    rev=st.integers(0, 2**32),
)
def test_valid_listings_round_trip(title, have, want, desc, tags, created, lifetime, listing_type, rev):
    obj = build.make_listing(
        ALICE,
        title=title,
        have=have,
        want=want,
        desc=desc,
        tags=tags,
        type=listing_type,
        created=created,
        expires=created + lifetime,
        rev=rev,
    )
    again = boundary.decode(obj.raw)
    assert again == obj
    assert cbor.encode(cbor.decode(obj.raw, max_size=1 << 20)) == obj.raw
    assert (again.title, again.have, again.want, again.tags) == (title, tuple(have), tuple(want), tuple(tags))


@SETTINGS
@given(take=st.integers(1, 2), give_qty=st.integers(1, 1000), note=safe_text)
def test_valid_offers_and_exchanges_round_trip(take, give_qty, note):
    o = offer(take=[build.parse_item(f"{take} x bike")], give=[Item("apples", give_qty, "kg")], note=note)
    assert boundary.decode(o.raw) == o
    x = build.sign_exchange(
        build.sign_exchange(build.exchange_for_offer(o, created=T + 20, deadline=T + 99), BOB), ALICE
    )
    assert x.complete and boundary.decode(x.raw) == x


def signed_samples() -> dict[str, bytes]:
    x = complete_exchange()
    entry = build.make_entry(ALICE, seq=1, prev=bytes(32), time=T + 30, payload=x)
    rating = build.make_rating(BOB, x, subject=ALICE.public_key, score=4, created=T + 40, comment="ok")
    return {
        "listing": listing().raw,
        "withdrawal": build.make_withdrawal(ALICE, listing(), created=T + 5).raw,
        "offer": offer().raw,
        "exchange": x.raw,
        "ring": ring().raw,
        "entry": entry.raw,
        "rating": rating.raw,
        "receipt": build.make_receipt(BOB, x, legs=[0], created=T + 50).raw,
    }


SAMPLES = signed_samples()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_single_bit_flip_is_rejected(name):
    """Exhaustive for the small kinds; the large ones are covered by hypothesis below."""
    data = SAMPLES[name]
    if len(data) > 800:
        pytest.skip("covered by the sampled test")
    for bit in range(len(data) * 8):
        mutated = bytearray(data)
        mutated[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(InvalidObject):
            boundary.decode(bytes(mutated))


@SETTINGS
@given(name=st.sampled_from(sorted(SAMPLES)), data=st.data())
def test_sampled_single_bit_flips_are_rejected(name, data):
    raw = SAMPLES[name]
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    mutated = bytearray(raw)
    mutated[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidObject):
        boundary.decode(bytes(mutated))


def _only_invalid_object(data: bytes) -> None:
    with contextlib.suppress(InvalidObject):
        boundary.decode(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_invalid_object(data):
    _only_invalid_object(data)


@SETTINGS
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    cut=st.integers(0, 10_000),
    insert=st.binary(min_size=0, max_size=8),
    delete=st.integers(0, 8),
)
def test_spliced_objects_only_raise_invalid_object(name, cut, insert, delete):
    raw = SAMPLES[name]
    at = cut % (len(raw) + 1)
    _only_invalid_object(raw[:at] + insert + raw[at + delete :])


# Structured garbage: well-formed CBOR of the right overall shape with arbitrary contents.
cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64) + 1, 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@SETTINGS
@given(
    kind=st.sampled_from(["listing", "withdrawal", "offer", "entry", "rating", "receipt", "exchange"]),
    body=st.dictionaries(
        st.sampled_from(["title", "have", "qty", "seq", "prev", "payload", "legs", "parties", "created"]),
        cbor_values,
        max_size=6,
    ),
    extra=cbor_values,
)
def test_structured_garbage_only_raises_invalid_object(kind, body, extra):
    if kind == "exchange":
        data = cbor.encode(["swapmeet/1", kind, body, extra])
    else:
        data = build.sign(ALICE, kind, body)  # a valid signature over a garbage body
    _only_invalid_object(data)


# Characters the text rule refuses and their neighbours, mixed into any text (lone surrogates included).
HOSTILE = list("\x00\t\n\r\x1b\x7f\x85\x9f\u00a0\u200b\u202a\u202e\u202f\u2066\u2069\u206a\ud800")


def passes_text_rule(text: str, max_len: int, multiline: bool) -> bool:
    try:
        boundary._text(text, "t", 0, max_len, multiline=multiline)
    except InvalidObject:
        return False
    return True


@SETTINGS
@given(
    text=st.text(alphabet=st.one_of(st.characters(exclude_categories=()), st.sampled_from(HOSTILE)), max_size=80),
    max_len=st.integers(0, 100),
    multiline=st.booleans(),
)
def test_clean_text_removes_exactly_what_the_text_rule_refuses(text, max_len, multiline):
    cleaned = boundary.clean_text(text, max_len, multiline=multiline)
    assert passes_text_rule(cleaned, max_len, multiline)
    # Exactly: a character goes if and only if the rule refuses it alone; then the text is cut.
    kept = "".join(c for c in text if passes_text_rule(c, 1, multiline))
    assert cleaned == kept[:max_len]
    if passes_text_rule(text, len(text), multiline):
        assert cleaned == text[:max_len]
