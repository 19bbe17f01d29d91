"""The want graph of an offer book: explicit ``accepts``, the implicit have/want rule, limits, ring legs."""

from __future__ import annotations

import pytest
from swapmeet.protocol import boundary
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.matching import book as mb
from swapmeet.protocol.matching import graph as wg
from swapmeet.protocol.matching.solve import solve
from swapmeet.protocol.objects import Item, Listing

from .protocol_fixtures import ALICE, BOB, CAROL, MALLORY, item, listing

DAN = Identity(b"\x05" * 32)


def lst(
    who: Identity, have: str | list[str], want: list[str] = (), accepts: tuple[bytes, ...] = (), n: int = 0
) -> Listing:
    haves = [have] if isinstance(have, str) else have
    return listing(
        who,
        title=f"{haves[0]} #{n}",
        have=[item(h) for h in haves],
        want=[item(w) for w in want],
        accepts=tuple((x.author, x.series) for x in accepts),
        series=bytes([n]) * 16,
    )


def edges(bg: mb.BookGraph) -> set[tuple[str, str]]:
    return {(bg.listings[a].title, bg.listings[b].title) for a in range(bg.graph.n) for b in bg.graph.accepts[a]}


def test_item_key_normalises_case_space_width_and_unit_spellings() -> None:
    assert mb.item_key(Item("  Garden   Chair ", 1, "PCS")) == ("garden chair", "pc")
    assert mb.item_key(Item("ＣＡＦＥ", 1, "piece")) == ("cafe", "pc")  # full-width letters (NFKC)
    assert mb.item_key(Item("café", 1, "pc")) == mb.item_key(Item("cafe\u0301", 1, "pc"))
    assert mb.item_key(Item("apples", 2, "Kilo")) == ("apples", "kg")
    assert mb.item_key(Item("lessons", 2, "hrs")) == ("lessons", "hour")
    # no conversion, no stemming, an IOU is not the thing
    assert mb.item_key(Item("apples", 1, "g")) != mb.item_key(Item("apples", 1, "kg"))
    assert mb.item_key(Item("chair", 1, "pc")) != mb.item_key(Item("chairs", 1, "pc"))
    assert mb.item_key(Item("hour of gardening", 1, "iou")) != mb.item_key(Item("hour of gardening", 1, "hour"))


def test_implicit_want_covers_the_whole_have_with_enough_quantity() -> None:
    tent = lst(ALICE, "1 x Tent", n=1)
    wants_tent = lst(BOB, "1 x ladder", ("2 x tent",), n=2)
    wants_less = lst(CAROL, "1 x rope", ("1 x tent",), n=3)
    two_things = lst(DAN, ["1 x tent", "1 x stove"], n=4)
    bg = mb.want_graph([tent, wants_tent, wants_less, two_things])
    got = edges(bg)
    assert ("1 x ladder #2", "1 x Tent #1") in got  # wants 2, gets 1: covered
    assert ("1 x rope #3", "1 x Tent #1") in got  # wants 1, gets 1
    assert ("1 x ladder #2", "1 x tent #4") not in got  # the stove was not asked for
    wants_two = lst(CAROL, "1 x rope", ("1 x tent",), n=5)
    big = lst(DAN, "3 x tent", n=6)
    assert ("1 x rope #5", "3 x tent #6") not in edges(mb.want_graph([wants_two, big]))  # more than asked
    assert bg.implicit == len(got) and bg.explicit == 0


def test_explicit_accepts_needs_no_want_and_ignores_unknown_listings() -> None:
    bike = lst(BOB, "1 x bike", n=1)
    gone = lst(CAROL, "1 x sofa", n=9)  # not in the book
    ladder = lst(ALICE, "1 x ladder", accepts=(bike, gone), n=2)
    bg = mb.want_graph([bike, ladder])
    assert edges(bg) == {("1 x ladder #2", "1 x bike #1")} and bg.explicit == 1


def test_own_listings_never_match_each_other() -> None:
    a = lst(ALICE, "1 x tent", ("1 x bike",), n=1)
    b = lst(ALICE, "1 x bike", ("1 x tent",), n=2)
    c = lst(ALICE, "1 x rope", accepts=(a,), n=3)
    assert edges(mb.want_graph([a, b, c])) == set()


def test_a_four_party_ring_closes_through_a_revision_and_its_legs() -> None:
    # accepts names (author, series): the ring's first listing is revised to accept the last one,
    # and the second listing's acceptance of it still holds
    a = lst(ALICE, "1 x tent", n=1)
    b = lst(BOB, "1 x ladder", accepts=(a,), n=2)
    c = lst(CAROL, "2 hour x guitar lessons", accepts=(b,), n=3)
    d = lst(MALLORY, "1 x kayak", accepts=(c,), n=4)
    assert solve(mb.want_graph([a, b, c, d]).graph).items_traded == 0
    a2 = listing(
        ALICE, title="1 x tent #1", have=[item("1 x tent")], accepts=((d.author, d.series),), series=a.series, rev=1
    )
    bg = mb.want_graph([d, c, b, a2, a2])  # order and duplicates do not matter
    s = solve(bg.graph, 8)
    assert s.items_traded == 4 and len(s.rings) == 1
    legs = mb.ring_legs(bg, s.rings[0])
    gives = {(leg.giver, leg.receiver, leg.listing.title) for leg in legs}
    # each author gives its listing to the author who accepted it
    assert gives == {
        (ALICE.public_key, BOB.public_key, "1 x tent #1"),
        (BOB.public_key, CAROL.public_key, "1 x ladder #2"),
        (CAROL.public_key, MALLORY.public_key, "2 hour x guitar lessons #3"),
        (MALLORY.public_key, ALICE.public_key, "1 x kayak #4"),
    }
    assert mb.coordinator(legs) == min(x.public_key for x in (ALICE, BOB, CAROL, MALLORY))
    assert solve(bg.graph, 3).items_traded == 0


def test_implicit_edges_out_of_one_listing_are_capped() -> None:
    wanting = lst(ALICE, "1 x coin", ("1 x stamp",), n=0)
    stamps = [lst(BOB, "1 x stamp", n=i) for i in range(1, mb.MAX_IMPLICIT + 10)]
    bg = mb.want_graph([wanting, *stamps])
    assert bg.implicit == mb.MAX_IMPLICIT
    with pytest.raises(wg.GraphTooLarge):
        mb.want_graph([wanting, *stamps], max_edges=10)


def test_accepts_on_the_wire() -> None:
    a = lst(ALICE, "1 x tent", n=1)
    b = lst(BOB, "1 x ladder", accepts=(a,), n=2)
    assert boundary.decode(b.raw, kind="listing").accepts == ((ALICE.public_key, a.series),)
    assert lst(BOB, "1 x ladder", n=3).raw.find(b"accepts") == -1  # none: the field is left out
    with pytest.raises(InvalidObject) as err:
        lst(BOB, "1 x ladder", accepts=(a, a), n=4)
    assert err.value.code == "duplicate" and err.value.path == "listing.body.accepts"
