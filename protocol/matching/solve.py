"""The rings that move the most items: uncapped by assignment, capped at K items a ring by CP-SAT.

The goal, in order: (1) the most real items traded (dummies count nothing); (2) then the
most owners trading (an owner trades when one of its real items is in a ring); (3) then
the most rings, i.e. shorter rings. The same graph gives the same answer: inputs are
canonical (:mod:`.graph`), CP-SAT runs on one worker with a fixed seed and a
*deterministic* time limit, and rings are listed in a canonical order. The same budget
also limits wall-clock time: on a slow or busy machine the wall clock can cut a search
short first, and only then can two runs differ.

**Uncapped** (``max_items=0``): TradeMaximizer's formulation. Every item chooses the item
its owner receives, either another (an edge of the graph) or itself (not traded); every
item is received exactly once. That is a perfect matching of items-as-givers to
items-as-receivers, here a min-cost assignment (OR-tools' ``SimpleLinearSumAssignment``)
in which keeping a real item costs more than all edges together; its cycles are the
rings, and step (1) is exact. Step (2) is then a CP-SAT model on the edges inside the
strongly connected components (items fixed at the optimum, started from the assignment),
run only when those are at most :data:`POLISH_EDGES` edges and for at most
:data:`POLISH_BUDGET_S`; step (3) is not applied
uncapped (an edge formulation does not see rings). ``Solution.tiebreak`` says which ran.

**Capped** (``max_items=K``, K >= 2): a ring has at most K items (dummies included), which
also caps its owners at K. This is the kidney-exchange problem, NP-hard for K >= 3. The
cycle formulation: every ring of at most K items is enumerated inside the strongly
connected components (at most :data:`MAX_CYCLES` of them, and at most :data:`PER_ITEM_CYCLES`
with any one item as their smallest), one boolean each, each item in
at most one chosen ring; CP-SAT maximises (1), started from the best of the shortest-ring-first
greedy packing (:func:`greedy_packing`, the floor), a fewest-conflicts-first packing
(:func:`conflict_packing`) and the uncapped optimum's short rings, and never returns less; then, only when (1) is
proven optimal, with (1) held it maximises (2), then with both held (3), each with its share
of the time budget. ``bound`` is a proven upper bound on
(1): CP-SAT's bound when every ring was enumerated, never above the uncapped optimum; when
the uncapped optimum already uses rings of at most K items, it is the answer to (1) and
CP-SAT only breaks ties. ``gap = (bound - items_traded) / bound``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ortools.graph.python import linear_sum_assignment
from ortools.sat.python import cp_model

from .graph import WantGraph, strongly_connected

MAX_CYCLES = 300_000
PER_ITEM_CYCLES = 2_000  # rings enumerated with one item as their smallest
PER_ITEM_STEPS = 100_000  # steps of the search for those
POLISH_EDGES = 20_000
POLISH_BUDGET_S = 0.25
DEFAULT_BUDGET_S = 20.0
SEED = 1


@dataclass(frozen=True)
class Solution:
    """Chosen rings (each rotated to start at its smallest item; sorted) and what they achieve."""

    rings: tuple[tuple[int, ...], ...]
    items_traded: int
    users_trading: int
    bound: int  # proven upper bound on items_traded
    optimal: bool  # items_traded == bound
    tiebreak: str  # "full", "users" (uncapped: rings not compared), "none" (too large or out of time)
    cycles: int = 0  # capped: rings of at most K items enumerated
    notes: tuple[str, ...] = field(default=())

    @property
    def gap(self) -> float:
        return 0.0 if self.bound == 0 else (self.bound - self.items_traded) / self.bound


def canonical(ring: Sequence[int]) -> tuple[int, ...]:
    """``ring`` rotated to start at its smallest item."""
    i = min(range(len(ring)), key=ring.__getitem__)
    return tuple(ring[i:]) + tuple(ring[:i])


def score(graph: WantGraph, rings: Sequence[Sequence[int]]) -> tuple[int, int]:
    """(real items traded, owners trading) of ``rings``."""
    items = [a for r in rings for a in r if not graph.dummy[a]]
    return len(items), len({graph.owner[a] for a in items})


def solve(graph: WantGraph, max_items: int = 0, *, budget_s: float = DEFAULT_BUDGET_S) -> Solution:
    """The best rings of ``graph`` (module docstring); ``max_items`` 0 means uncapped, else 2 or more."""
    if max_items < 0 or max_items == 1:
        raise ValueError("max_items is 0 (no cap) or at least 2")
    if budget_s <= 0:
        raise ValueError("budget_s must be positive")
    comps = strongly_connected(graph)
    uncapped = _assignment(graph)
    best_items, _ = score(graph, uncapped)
    if max_items == 0:
        return _polish_uncapped(graph, comps, uncapped, best_items, budget_s)
    return _capped(graph, comps, uncapped, best_items, max_items, budget_s)


def rings_of_assignment(receives: Sequence[int]) -> list[tuple[int, ...]]:
    """The cycles (length >= 2) of the permutation ``receives`` (item -> the item its owner receives), canonical."""
    seen = [False] * len(receives)
    rings = []
    for a in range(len(receives)):
        if seen[a] or receives[a] == a:
            seen[a] = True
            continue
        ring = []
        b = a
        while not seen[b]:
            seen[b] = True
            ring.append(b)
            b = receives[b]
        rings.append(canonical(ring))
    return sorted(rings)


def _assignment(graph: WantGraph) -> list[tuple[int, ...]]:
    """The uncapped optimum of (1): min-cost assignment, keeping a real item costs n + 1, an edge 1."""
    n = graph.n
    if n == 0:
        return []
    counts = np.fromiter((len(x) for x in graph.accepts), dtype=np.int64, count=n)
    heads = np.fromiter((b for x in graph.accepts for b in x), dtype=np.int64, count=int(counts.sum()))
    tails = np.repeat(np.arange(n, dtype=np.int64), counts)
    keep_cost = np.array([0 if d else n + 1 for d in graph.dummy], dtype=np.int64)
    solver = linear_sum_assignment.SimpleLinearSumAssignment()
    solver.add_arcs_with_cost(np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), keep_cost)
    if len(heads):
        solver.add_arcs_with_cost(tails, heads, np.ones(len(heads), dtype=np.int64))
    status = solver.solve()
    if status != solver.OPTIMAL:  # every item may keep itself: a perfect assignment always exists
        raise RuntimeError(f"assignment solver status {status}")
    receives = [solver.right_mate(a) for a in range(n)]
    return rings_of_assignment(receives)


def _cp_solver(seconds: float) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = SEED
    solver.parameters.max_deterministic_time = max(seconds, 0.05)
    solver.parameters.max_time_in_seconds = max(seconds, 0.05)
    return solver


def _polish_uncapped(
    graph: WantGraph, comps: list[list[int]], rings: list[tuple[int, ...]], best_items: int, budget_s: float
) -> Solution:
    """Step (2) on the edge formulation, items held at the assignment's optimum, when the components are small."""
    inside = [a for c in comps for a in c]
    comp_of = {a: i for i, c in enumerate(comps) for a in c}
    edges = [(a, b) for a in inside for b in graph.accepts[a] if comp_of.get(b) == comp_of[a]]
    items, users = score(graph, rings)
    if not rings or len(edges) > POLISH_EDGES:
        tiebreak = "full" if not rings else "none"
        return Solution(tuple(rings), items, users, best_items, True, tiebreak)
    model = cp_model.CpModel()
    var = {e: model.NewBoolVar("") for e in edges}
    keep = {a: model.NewBoolVar("") for a in inside}
    outs: dict[int, list[cp_model.IntVar]] = {a: [keep[a]] for a in inside}
    ins: dict[int, list[cp_model.IntVar]] = {a: [keep[a]] for a in inside}
    for (a, b), v in var.items():
        outs[a].append(v)
        ins[b].append(v)
    for a in inside:
        model.AddExactlyOne(outs[a])
        model.AddExactlyOne(ins[a])
    real = [a for a in inside if not graph.dummy[a]]
    model.Add(sum(keep[a] for a in real) <= len(real) - best_items)
    owners: dict[int, list[int]] = {}
    for a in real:
        owners.setdefault(graph.owner[a], []).append(a)
    trading = []
    for items_of in owners.values():
        y = model.NewBoolVar("")
        model.Add(y <= sum(1 - keep[a] for a in items_of))
        trading.append(y)
    model.Maximize(sum(trading))
    chosen = {(r[i], r[(i + 1) % len(r)]) for r in rings for i in range(len(r))}
    for e, v in var.items():
        model.AddHint(v, e in chosen)
    solver = _cp_solver(min(budget_s, POLISH_BUDGET_S))
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Solution(tuple(rings), items, users, best_items, True, "none")
    receives = list(range(graph.n))
    for (a, b), v in var.items():
        if solver.Value(v):
            receives[a] = b
    polished = rings_of_assignment(receives)
    p_items, p_users = score(graph, polished)
    if (p_items, p_users) < (items, users):  # the hint is feasible, so this cannot happen; keep the better anyway
        return Solution(tuple(rings), items, users, best_items, True, "none")
    tiebreak = "users" if status == cp_model.OPTIMAL else "none"
    return Solution(tuple(polished), p_items, p_users, best_items, True, tiebreak)


def enumerate_cycles(
    graph: WantGraph,
    comps: list[list[int]],
    max_items: int,
    limit: int,
    *,
    per_item: int = PER_ITEM_CYCLES,
    per_item_steps: int = PER_ITEM_STEPS,
) -> tuple[list, bool]:
    """Every cycle of at most ``max_items`` items inside ``comps``, canonical (smallest item first), and whether
    the list is complete. Work is bounded three ways: at most ``limit`` cycles in all, and per smallest item at
    most ``per_item`` cycles and ``per_item_steps`` steps of the search (so that a few items with very many
    rings through them cannot use up the whole allowance); any bound reached makes the list incomplete."""
    accepts = graph.accepts
    cycles: list[tuple[int, ...]] = []
    complete = True
    for comp in comps:
        members = set(comp)
        back: dict[int, list[int]] = {a: [] for a in comp}
        for a in comp:
            for b in accepts[a]:
                if b in members:
                    back[b].append(a)
        for s in comp:
            # dist[v]: fewest edges from v back to s, through items > s, within max_items - 1 steps
            dist = {s: 0}
            queue = deque([s])
            while queue:
                v = queue.popleft()
                d = dist[v] + 1
                if d >= max_items:
                    continue
                for u in back[v]:
                    if u > s and u not in dist:
                        dist[u] = d
                        queue.append(u)
            path = [s]
            on_path = {s}
            stack = [iter(accepts[s])]
            found = steps = 0
            while stack:
                steps += 1
                if steps > per_item_steps or found >= per_item:
                    complete = False
                    break
                nxt = next(stack[-1], None)
                if nxt is None:
                    stack.pop()
                    on_path.discard(path.pop())
                    continue
                if nxt == s:
                    if len(path) >= 2:
                        cycles.append(tuple(path))
                        found += 1
                        if len(cycles) >= limit:
                            return cycles, False
                    continue
                d = dist.get(nxt)
                if d is None or nxt in on_path or len(path) + d >= max_items + 1 or nxt < s:
                    continue
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(accepts[nxt]))
    return cycles, complete


def greedy_packing(cycles: Sequence[tuple[int, ...]], weights: Sequence[int]) -> list[int]:
    """Shortest ring first (then the canonical order), each ring taken when it shares no item with those taken:
    the floor the capped solver never goes below (indices into ``cycles``)."""
    used: set[int] = set()
    chosen = []
    for i in sorted(range(len(cycles)), key=lambda i: (len(cycles[i]), cycles[i])):
        if weights[i] and used.isdisjoint(cycles[i]):
            used.update(cycles[i])
            chosen.append(i)
    return chosen


def conflict_packing(cycles: Sequence[tuple[int, ...]], weights: Sequence[int]) -> list[int]:
    """Rings taken in order of how many other rings their items are in, per item (fewest first), each when it
    shares no item with those taken: a better start than :func:`greedy_packing` when rings overlap a lot."""
    rings_of: dict[int, int] = {}
    for c in cycles:
        for a in c:
            rings_of[a] = rings_of.get(a, 0) + 1
    used: set[int] = set()
    chosen = []
    order = sorted(range(len(cycles)), key=lambda i: (sum(rings_of[a] for a in cycles[i]) / len(cycles[i]), cycles[i]))
    for i in order:
        if weights[i] and used.isdisjoint(cycles[i]):
            used.update(cycles[i])
            chosen.append(i)
    return chosen


def _hint(model: cp_model.CpModel, x: list[cp_model.IntVar], chosen: list[int]) -> None:
    """Start the next search from the rings ``chosen`` (indices into ``x``)."""
    model.ClearHints()
    on = set(chosen)
    for i, v in enumerate(x):
        model.AddHint(v, i in on)


def _capped(
    graph: WantGraph,
    comps: list[list[int]],
    uncapped: list[tuple[int, ...]],
    uncapped_items: int,
    max_items: int,
    budget_s: float,
) -> Solution:
    notes: list[str] = []
    cycles, complete = enumerate_cycles(graph, comps, max_items, MAX_CYCLES)
    if not complete:
        notes.append(f"more than {MAX_CYCLES} rings of at most {max_items} items: the rest were not considered")
    cycles = [c for c in cycles if any(not graph.dummy[a] for a in c) and len({graph.owner[a] for a in c}) >= 2]
    if not cycles:
        return Solution((), 0, 0, 0 if complete else uncapped_items, complete, "full", 0, tuple(notes))
    model = cp_model.CpModel()
    x = [model.NewBoolVar("") for _ in cycles]
    member: dict[int, list[int]] = {}
    for i, c in enumerate(cycles):
        for a in c:
            member.setdefault(a, []).append(i)
    for idx in member.values():
        if len(idx) > 1:
            model.AddAtMostOne(x[i] for i in idx)
    weights = [sum(graph.weight(a) for a in c) for c in cycles]
    items_expr = sum(w * v for w, v in zip(weights, x, strict=True))
    index = {c: i for i, c in enumerate(cycles)}
    hint = [index[r] for r in uncapped if r in index]
    # (1) items: when the uncapped optimum has only short rings, it is the answer; else CP-SAT, started from
    # the better of those short rings and the shortest-ring-first greedy packing, and never worse than it
    if len(hint) == len(uncapped):
        found, bound, chosen = uncapped_items, uncapped_items, hint
    else:
        starts = (greedy_packing(cycles, weights), conflict_packing(cycles, weights), hint)
        start = max(starts, key=lambda chosen: sum(weights[i] for i in chosen))
        _hint(model, x, start)
        model.Maximize(items_expr)
        solver = _cp_solver(budget_s * 0.7)
        status = solver.Solve(model)
        found, chosen = sum(weights[i] for i in start), start
        bound = uncapped_items
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE) and round(solver.ObjectiveValue()) >= found:
            found = round(solver.ObjectiveValue())
            chosen = [i for i, v in enumerate(x) if solver.Value(v)]
        else:
            notes.append("CP-SAT found nothing better in the budget: the best greedy packing stands")
        if complete and status == cp_model.OPTIMAL:
            bound = found
        elif complete and status == cp_model.FEASIBLE:
            bound = min(bound, int(solver.BestObjectiveBound() + 1e-6))
        if bound > found:
            rings = sorted(cycles[i] for i in chosen)
            items, users = score(graph, rings)
            notes.append("not proven optimal in the budget: ties were not broken")
            return Solution(tuple(rings), items, users, bound, False, "none", len(cycles), tuple(notes))
    # (2) owners, (3) rings, each with the previous steps held
    _hint(model, x, chosen)
    model.Add(items_expr >= found)
    owners: dict[int, list[int]] = {}
    for i, c in enumerate(cycles):
        for u in {graph.owner[a] for a in c if not graph.dummy[a]}:
            owners.setdefault(u, []).append(i)
    trading = []
    for idx in owners.values():
        y = model.NewBoolVar("")
        model.Add(y <= sum(x[i] for i in idx))
        trading.append(y)
    tiebreak = "full"
    for step, objective in (("owners", sum(trading)), ("rings", sum(x))):
        model.Maximize(objective)
        solver = _cp_solver(budget_s * 0.15)
        status = solver.Solve(model)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            tiebreak = "none"
            notes.append(f"tie-break on {step}: out of time")
            break
        chosen = [i for i, v in enumerate(x) if solver.Value(v)]
        if status != cp_model.OPTIMAL:
            tiebreak = "none"
            notes.append(f"tie-break on {step}: not proven in the budget")
        value = round(solver.ObjectiveValue())
        model.Add(objective >= value)
        _hint(model, x, chosen)
    rings = sorted(cycles[i] for i in chosen)
    items, users = score(graph, rings)
    return Solution(tuple(rings), items, users, bound, items == bound, tiebreak, len(cycles), tuple(notes))
