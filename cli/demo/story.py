"""The cast and the script of ``swapmeet demo``, and the ring search: data and pure functions, no I/O.

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
directly. :func:`find_ring` finds it in the offer book by following wants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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


# --- the ring search ---


def _key(item: Mapping[str, Any]) -> tuple[str, str]:
    return (str(item["item"]).strip().casefold(), str(item.get("unit", "pc")))


@dataclass(frozen=True)
class RingLeg:
    giver: str  # PeerID
    receiver: str  # PeerID
    item: dict[str, Any]  # {"item", "qty", "unit"}
    listing: str  # id of the giver's listing the item comes out of

    def text(self) -> str:
        """The item in ``QTY [UNIT] x ITEM`` form."""
        unit = self.item.get("unit", "pc")
        return (
            f"{self.item['qty']} x {self.item['item']}"
            if unit == "pc"
            else f"{self.item['qty']} {unit} x {self.item['item']}"
        )


@dataclass(frozen=True)
class Ring:
    legs: tuple[RingLeg, ...]
    parties: tuple[str, ...] = field(default=())

    @property
    def listings(self) -> list[str]:
        return [leg.listing for leg in self.legs]


def find_ring(listings: Iterable[Mapping[str, Any]], me: str, *, max_parties: int = 4) -> Ring | None:
    """A barter ring through ``me`` (a PeerID) among ``listings`` (``listings --json`` objects), or None.

    A ring is a cycle of listings by distinct authors in which each listing has
    an item that the next listing's author wants (matched by item name and
    unit); every author gives that item (at most the quantity wanted) to the
    next. Only rings of 3 or more parties count: a 2-cycle is a plain swap.
    The shortest ring is returned (ties broken by listing id, so the result
    is deterministic).
    """
    by_author: dict[str, list[Mapping[str, Any]]] = {}
    for x in sorted(listings, key=lambda x: str(x["id"])):
        by_author.setdefault(str(x["author"]), []).append(x)
    if me not in by_author:
        return None

    def gives(giver_listing: Mapping[str, Any], receiver: str) -> list[tuple[dict[str, Any], Mapping[str, Any]]]:
        """Items of ``giver_listing`` that some listing of ``receiver`` wants, with that listing."""
        found = []
        for wanting in by_author.get(receiver, []):
            for w in wanting["want"]:
                for h in giver_listing["have"]:
                    if _key(h) == _key(w):
                        found.append(({"item": h["item"], "qty": min(h["qty"], w["qty"]), "unit": h["unit"]}, wanting))
        return found

    best: list[RingLeg] | None = None
    # Depth-first over paths me -> A -> B ... -> me; path[k] = (author, listing that author gives from)
    for start in by_author[me]:
        stack: list[tuple[list[str], list[RingLeg], Mapping[str, Any]]] = [([me], [], start)]
        while stack:
            path, legs, current = stack.pop()
            giver = path[-1]
            for receiver in sorted(by_author):
                if receiver == giver:
                    continue
                for item, wanting in gives(current, receiver):
                    leg = RingLeg(giver, receiver, item, str(current["id"]))
                    if receiver == me:
                        if len(path) >= 3 and (best is None or len(legs) + 1 < len(best)):
                            best = [*legs, leg]
                        continue
                    if receiver in path or len(path) >= max_parties:
                        continue
                    stack.append(([*path, receiver], [*legs, leg], wanting))
    if best is None:
        return None
    return Ring(tuple(best), tuple(leg.giver for leg in best))


def swaps_directly(listings: Iterable[Mapping[str, Any]], a: str, b: str) -> bool:
    """Whether ``a`` has something ``b`` wants and ``b`` has something ``a`` wants (a plain 2-party swap)."""
    items = list(listings)

    def wants_of(who: str) -> set[tuple[str, str]]:
        return {_key(w) for x in items if x["author"] == who for w in x["want"]}

    def haves_of(who: str) -> set[tuple[str, str]]:
        return {_key(h) for x in items if x["author"] == who for h in x["have"]}

    return bool(haves_of(a) & wants_of(b)) and bool(haves_of(b) & wants_of(a))
