"""The cast and the script of ``swapmeet demo``: data and pure functions, no I/O.

:mod:`swapmeet.cli.demo.play` plays this script on a local swarm of real nodes.
Everything here can be tested without a node.

The cast (for ``--nodes N``; at least :data:`MIN_NODES`):

===========  ==================================================================
Ada          has a road bike (goods) and a camping tent to rent (rental)
Ben          lends a ladder (a loan, due back in 14 days)
Cai          gives guitar lessons (a service)
Dee          (N >= 5) wants help moving boxes (a task); runs an *archive* node
             that replicates every chain it hears of, and audits the market
Eve          the villain: sells a one-piece record player to two takers; her
             node is :mod:`swapmeet.cli.demo.cheater`
Fay, Gus...  (N >= 6) bystanders who publish a listing each
===========  ==================================================================

With four nodes there is no Dee: Ada runs the archive node and audits.

The ring: Ada has what Ben wants (a tent), Ben has what Cai wants (a ladder),
Cai has what Ada wants (guitar lessons), and no two of them could swap
directly. ``swapmeet match`` finds it (the solver of :mod:`swapmeet.protocol.matching`);
:func:`ring_of` picks it out of its answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swapmeet.protocol.matching.book import item_key
from swapmeet.protocol.objects import Item

MIN_NODES = 4
MAX_NODES = 12

ADA, BEN, CAI, DEE, EVE = "Ada", "Ben", "Cai", "Dee", "Eve"
BYSTANDERS = ("Fay", "Gus", "Hal", "Ivy", "Jon", "Kit", "Lou")
TRADERS = (ADA, BEN, CAI)
CHEATER = EVE


@dataclass(frozen=True)
class ListingPlan:
    """One listing to publish: the ``swapmeet publish`` options (items in ``QTY [UNIT] x ITEM`` form)."""

    key: str  # how the script refers to it
    who: str
    title: str
    kind: str
    have: tuple[str, ...]
    want: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()  # more options, e.g. ("--window", "1d..3d")
    tags: tuple[str, ...] = ()

    def args(self) -> list[str]:
        argv = ["publish", "--title", self.title, "--kind", self.kind]
        for item in self.have:
            argv += ["--have", item]
        for item in self.want:
            argv += ["--want", item]
        for tag in self.tags:
            argv += ["--tag", tag]
        return [*argv, *self.extra]


def cast(n: int) -> list[str]:
    """The names of the peers of an ``n``-node demo, in node order (node 0 first)."""
    if not MIN_NODES <= n <= MAX_NODES:
        raise ValueError(f"the demo needs {MIN_NODES} to {MAX_NODES} nodes, got {n}")
    names = [ADA, BEN, CAI]
    if n >= 5:
        names.append(DEE)
    names.append(EVE)
    names += BYSTANDERS[: n - len(names)]
    return names


def auditor(names: Sequence[str]) -> str:
    """Who runs the archive node and audits the market: Dee, or Ada when there is no Dee."""
    return DEE if DEE in names else ADA


def listing_plans(names: Sequence[str]) -> list[ListingPlan]:
    """Every listing of the story, in publishing order."""
    plans = [
        ListingPlan("bike", ADA, "Road bike", "goods", ("1 x road bike",), ("10 kg x apples",), tags=("bikes",)),
        ListingPlan(
            "tent",
            ADA,
            "Camping tent for a weekend",
            "rental",
            ("1 x tent",),
            ("2 hour x guitar lessons",),
            ("--window", "1d..3d"),
            tags=("camping",),
        ),
        ListingPlan(
            "ladder", BEN, "Ladder to borrow", "loan", ("1 x ladder",), ("1 x tent",), ("--due", "14d"), ("tools",)
        ),
        ListingPlan(
            "lessons", CAI, "Guitar lessons", "service", ("2 hour x guitar lessons",), ("1 x ladder",), tags=("music",)
        ),
        ListingPlan(
            "record-player",
            EVE,
            "Vintage record player",
            "goods",
            ("1 x record player",),
            ("3 kg x apples",),
            tags=("music",),
        ),
    ]
    if DEE in names:
        plans.append(
            ListingPlan(
                "moving", DEE, "Help moving boxes", "task", ("1 x pizza",), ("3 hour x moving help",), tags=("moving",)
            )
        )
    goods = [
        ("Box of paperbacks", "20 x paperback"),
        ("Sourdough starter", "1 x sourdough starter"),
        ("Seedlings", "12 x tomato seedling"),
        ("Board games", "3 x board game"),
        ("Jam", "4 x jar of jam"),
        ("Firewood", "50 kg x firewood"),
        ("Sewing machine", "1 x sewing machine"),
    ]
    for name, (title, have) in zip([x for x in names if x in BYSTANDERS], goods, strict=False):
        plans.append(ListingPlan(f"bystander-{name}", name, title, "goods", (have,), ("1 x jar of honey",)))
    return plans


# --- the script of the two-party trade with a counter-offer, and of the double sale ---

BIKE_OFFER_GIVE = "6 kg x apples"  # Ben's first offer for the bike
BIKE_COUNTER_GIVE = "8 kg x apples"  # Ada's counter: a little more
BIKE_COUNTER_TAKE = "1 x road bike"
DOUBLE_SALE_OFFERS = ((BEN, "3 kg x apples"), (CAI, "1 hour x guitar lessons"))


# --- the ring, as `swapmeet match --json` reports it ---


def ring_of(found: Mapping[str, Any], members: set[str], names: Mapping[str, str]) -> dict[str, Any] | None:
    """The ring among exactly ``members`` (names) in a ``swapmeet match --json`` answer, or None.

    ``names`` maps PeerIDs to names. The rings come from the solver (:mod:`swapmeet.protocol.matching`).
    """
    for ring in found["rings"]:
        if {names.get(leg["from"]) for leg in ring["legs"]} == members:
            return dict(ring)
    return None


def _key(item: Mapping[str, Any]) -> tuple[str, str]:
    """An item's matching key (PROTOCOL.md 10.10), for an item as ``listings --json`` gives it."""
    return item_key(Item(str(item["item"]), int(item["qty"]), str(item.get("unit", "pc"))))


def swaps_directly(listings: Iterable[Mapping[str, Any]], a: str, b: str) -> bool:
    """Whether ``a`` has something ``b`` wants and ``b`` has something ``a`` wants (a plain 2-party swap)."""
    items = list(listings)

    def wants_of(who: str) -> set[tuple[str, str]]:
        return {_key(w) for x in items if x["author"] == who for w in x["want"]}

    def haves_of(who: str) -> set[tuple[str, str]]:
        return {_key(h) for x in items if x["author"] == who for h in x["have"]}

    return bool(haves_of(a) & wants_of(b)) and bool(haves_of(b) & wants_of(a))
