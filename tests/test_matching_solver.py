"""The ring solver (protocol/matching): hand-checked graphs, tie-breaks, limits, and properties against brute force."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from swapmeet.protocol.matching import graph as wg
from swapmeet.protocol.matching.solve import canonical, enumerate_cycles, score, solve


def test_a_four_ring_is_found_uncapped_and_under_a_cap_of_four_not_three() -> None:
    g = wg.build([0, 1, 2, 3], [[1], [2], [3], [0]])
    assert solve(g).rings == ((0, 1, 2, 3),)
    assert solve(g, 4).rings == ((0, 1, 2, 3),)
    capped = solve(g, 3)
    assert capped.rings == () and capped.items_traded == 0 and capped.bound == 0 and capped.optimal


def test_self_wants_and_own_items_never_trade() -> None:
    # item 0 wants itself; items 1 and 2 belong to one owner and want each other
    g = wg.build([0, 1, 1], [[0], [2], [1]])
    assert g.accepts == ((), (), ())
    assert solve(g).items_traded == 0


def test_items_nobody_wants_stay_and_duplicate_wants_merge() -> None:
    g = wg.build([0, 1, 2], [[1, 1, 1], [0], [0, 1]])
    assert g.accepts[0] == (1,)
    s = solve(g)
    assert s.rings == ((0, 1),) and s.items_traded == 2 and s.users_trading == 2


def test_dummies_move_nothing_and_count_nothing() -> None:
    # owner 0: item 0 goes for its dummy 1; the dummy goes for owner 1's item 2, which wants item 0
    g = wg.build([0, 0, 1], [[1], [2], [0]], dummy=[False, True, False])
    s = solve(g)
    assert s.rings == ((0, 1, 2),) and s.items_traded == 2 and s.users_trading == 2
    # a dummy may not lead back to its own owner's real item (that would be a trade with oneself)
    g2 = wg.build([0, 0], [[1], [0]], dummy=[False, True])
    assert g2.accepts == ((1,), ()) and solve(g2).items_traded == 0


def test_a_longer_ring_beats_a_swap_that_moves_fewer_items() -> None:
    # 0<->1 is a swap (2 items); 0->1->2->3->0 moves 4
    g = wg.build([0, 1, 2, 3], [[1], [0, 2], [3], [0]])
    assert solve(g).items_traded == 4
    assert solve(g, 3).items_traded == 2


def test_ties_go_to_more_owners_trading() -> None:
    # owner 0: a=0, a2=3; owner 1: b1=1, b2=4; owner 2: c=2. {(a,b1),(a2,b2)} and {(a,c),(a2,b2)} both move 4
    g = wg.build([0, 1, 2, 0, 1], [[1, 2], [0], [0], [4], [3]])
    for cap in (0, 2, 8):
        s = solve(g, cap)
        assert s.items_traded == 4 and s.users_trading == 3, cap
        assert (0, 2) in s.rings


def test_capped_ties_then_go_to_shorter_rings() -> None:
    # one ring 0->1->2->3->0 or two swaps 0<->1, 2<->3: the same items and owners
    g = wg.build([0, 1, 2, 3], [[1], [0, 2], [3], [2, 0]])
    s = solve(g, 4)
    assert s.rings == ((0, 1), (2, 3)) and s.tiebreak == "full"


def test_the_same_graph_gives_the_same_rings() -> None:
    g = wg.build(list(range(6)), [[1, 2, 3], [2, 0, 4], [3, 0, 5], [4, 0], [5, 1], [0, 2]])
    assert len({solve(g, cap) for _ in range(3) for cap in (0,)}) == 1
    assert len({solve(g, 3).rings for _ in range(3)}) == 1


def test_limits_refuse_a_graph_too_large() -> None:
    with pytest.raises(wg.GraphTooLarge):
        wg.build([0, 1, 2], [[1], [2], [0]], max_items=2)
    with pytest.raises(wg.GraphTooLarge):
        wg.build([0, 1, 2], [[1, 2], [2, 0], [0]], max_edges=4)
    with pytest.raises(ValueError, match="not an item"):
        wg.build([0, 1], [[5], []])
    with pytest.raises(ValueError, match="no cap"):
        solve(wg.build([0], [[]]), 1)


def test_cycle_enumeration_stops_at_its_limit() -> None:
    n = 6  # complete graph on 6 owners: many rings
    g = wg.build(list(range(n)), [[b for b in range(n) if b != a] for a in range(n)])
    comps = wg.strongly_connected(g)
    everything, complete = enumerate_cycles(g, comps, 6, 10**6)
    assert complete and len(everything) == sum(
        len(list(itertools.permutations(range(n), k))) // k for k in range(2, n + 1)
    )
    some, complete = enumerate_cycles(g, comps, 6, 7)
    assert not complete and len(some) == 7


def test_strongly_connected_components() -> None:
    g = wg.build(list(range(5)), [[1], [0], [3], [4], [2]])
    assert wg.strongly_connected(g) == [[0, 1], [2, 3, 4]]


# --- properties against brute force ---


def brute_force(g: wg.WantGraph, cap: int) -> int:
    """The most real items any set of disjoint valid rings moves, by trying every set."""
    return brute_force_goal(g, cap)[0]


def brute_force_goal(g: wg.WantGraph, cap: int) -> tuple[int, int, int]:
    """The best (real items, owners trading, rings) of any set of disjoint valid rings, compared in that order."""
    n = g.n
    cycles = set()
    for k in range(2, (cap or n) + 1):
        for perm in itertools.permutations(range(n), k):
            if wg.ring_valid(g, perm) and any(not g.dummy[a] for a in perm):
                cycles.add(canonical(perm))
    cycles_l = sorted(cycles)
    best = (0, 0, 0)

    def go(i: int, chosen: list[tuple[int, ...]], used: frozenset[int]) -> None:
        nonlocal best
        best = max(best, (*score(g, chosen), len(chosen)))
        for j in range(i, len(cycles_l)):
            c = cycles_l[j]
            if used.isdisjoint(c):
                go(j + 1, [*chosen, c], used | set(c))

    go(0, [], frozenset())
    return best


@st.composite
def graphs(draw: st.DrawFn) -> wg.WantGraph:
    n = draw(st.integers(1, 7))
    owners = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    dummy = draw(st.lists(st.booleans(), min_size=n, max_size=n)) if draw(st.booleans()) else [False] * n
    accepts = [draw(st.lists(st.integers(0, n - 1), max_size=4)) for _ in range(n)]
    return wg.build(owners, accepts, dummy)


def assert_valid(g: wg.WantGraph, rings: tuple[tuple[int, ...], ...], cap: int) -> None:
    seen: set[int] = set()
    for ring in rings:
        assert wg.ring_valid(g, ring, cap), ring
        assert seen.isdisjoint(ring), "an item in two rings"
        seen.update(ring)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.sampled_from([0, 2, 3, 4]))
def test_rings_are_valid_and_move_as_many_items_as_brute_force(g: wg.WantGraph, cap: int) -> None:
    s = solve(g, cap)
    assert_valid(g, s.rings, cap)
    real = [a for r in s.rings for a in r if not g.dummy[a]]
    assert s.items_traded == len(real)
    assert s.users_trading == len({g.owner[a] for a in real})
    assert s.items_traded == brute_force(g, cap)
    assert s.optimal and s.bound == s.items_traded


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.sampled_from([0, 2, 3, 4]))
def test_ties_go_to_more_owners_then_more_rings_as_brute_force_says(g: wg.WantGraph, cap: int) -> None:
    s = solve(g, cap)
    items, users, rings = brute_force_goal(g, cap)
    assert (s.items_traded, s.users_trading) == (items, users) or s.tiebreak == "none"
    if cap and s.tiebreak == "full":  # capped: shorter rings, i.e. more of them, come third
        assert len(s.rings) == rings
