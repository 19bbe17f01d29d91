"""Deterministic identities and objects shared by the protocol tests."""

from __future__ import annotations

from swapmeet.protocol import build
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.objects import Exchange, Leg, Listing, Offer

T = 1_800_000_000
ALICE = Identity(b"\x01" * 32)
BOB = Identity(b"\x02" * 32)
CAROL = Identity(b"\x03" * 32)
MALLORY = Identity(b"\x04" * 32)
SERIES = b"\x11" * 16
NONCE = b"\x22" * 16


def item(text: str):
    return build.parse_item(text)


def listing(author: Identity = ALICE, **kw) -> Listing:
    args = {
        "title": "Road bike",
        "have": [item("2 x bike")],
        "want": [item("3 kg x apples")],
        "created": T,
        "expires": T + 86_400,
        "series": SERIES,
        "tags": ["bikes"],
        "category": "sports/bikes",
    }
    args.update(kw)
    return build.make_listing(author, **args)


def offer(taker: Identity = BOB, on: Listing | None = None, **kw) -> Offer:
    args = {"take": [item("1 x bike")], "give": [item("3 kg x apples")], "created": T + 10, "expires": T + 3600}
    args.update(kw)
    return build.make_offer(taker, on or listing(), **args)


def complete_exchange(o: Offer | None = None) -> Exchange:
    o = o or offer()
    x = build.exchange_for_offer(o, created=T + 20, deadline=T + 600, nonce=NONCE)
    return build.sign_exchange(build.sign_exchange(x, ALICE), BOB)


def ring() -> Exchange:
    """A 3-party ring: Alice gives a bike to Bob, Bob a cake to Carol, Carol a lesson to Alice."""
    x = build.propose_exchange(
        parties=[ALICE.public_key, BOB.public_key, CAROL.public_key],
        legs=[Leg(0, 1, (item("1 x bike"),)), Leg(1, 2, (item("1 x cake"),)), Leg(2, 0, (item("1 x lesson"),))],
        created=T,
        deadline=T + 600,
        nonce=NONCE,
    )
    for who in (ALICE, BOB, CAROL):
        x = build.sign_exchange(x, who)
    return x
