"""The want graph: items, their owners, and which item each owner would take for which.

Nodes are items (0..n-1). An edge ``a -> b`` means: the owner of ``a`` would give ``a``
and take ``b`` in return. A ring ``(a0, a1, ..., ak-1)`` is a cycle of such edges: the
owner of each ``a[i]`` gives ``a[i]`` (to the owner of ``a[i-1]``) and receives
``a[i+1]`` (wrapping around).

Dummy items (TradeMaximizer's ``%name``) are placeholders an owner uses to say "this, or
that, for whatever the dummy gets": they move nothing and are never counted.

Edges that would let an owner trade with itself are dropped when the graph is built:
an edge to one of the same owner's real items (a self-want), and any edge from a
dummy to the same owner's real item. So every ring that moves an item has two or more
owners. Duplicate edges are merged and the edge lists are sorted, so the same input
gives the same graph whatever order it came in.

Limits bound the work a graph can make the solver do (a peer's listings are hostile
input): at most :data:`MAX_ITEMS` items and :data:`MAX_EDGES` edges; :func:`build`
refuses more with :class:`GraphTooLarge`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_ITEMS = 200_000
MAX_EDGES = 4_000_000


class GraphTooLarge(ValueError):
    """The want graph is over :data:`MAX_ITEMS` items or :data:`MAX_EDGES` edges."""


@dataclass(frozen=True)
class WantGraph:
    """``owner[a]``: the owner (a small int) of item ``a``; ``accepts[a]``: what that owner takes for it (sorted)."""

    owner: tuple[int, ...]
    dummy: tuple[bool, ...]
    accepts: tuple[tuple[int, ...], ...]

    @property
    def n(self) -> int:
        return len(self.owner)

    @property
    def edge_count(self) -> int:
        return sum(len(x) for x in self.accepts)

    def weight(self, a: int) -> int:
        """1 for a real item, 0 for a dummy: what trading ``a`` counts."""
        return 0 if self.dummy[a] else 1


def build(
    owner: Sequence[int],
    accepts: Sequence[Iterable[int]],
    dummy: Sequence[bool] | None = None,
    *,
    max_items: int = MAX_ITEMS,
    max_edges: int = MAX_EDGES,
) -> WantGraph:
    """The want graph of ``n = len(owner)`` items; ``accepts[a]`` lists the items ``a``'s owner would take for ``a``.

    Edges out of range raise :class:`ValueError`; self-trading edges are dropped (module docstring).
    """
    n = len(owner)
    if n > max_items:
        raise GraphTooLarge(f"{n} items, at most {max_items}")
    if len(accepts) != n:
        raise ValueError("accepts needs one list per item")
    flags = tuple(bool(x) for x in dummy) if dummy is not None else (False,) * n
    if len(flags) != n:
        raise ValueError("dummy needs one flag per item")
    edges: list[tuple[int, ...]] = []
    total = 0
    for a in range(n):
        out = set()
        for b in accepts[a]:
            if not 0 <= b < n:
                raise ValueError(f"item {a} accepts {b}, not an item")
            if b == a or (owner[b] == owner[a] and not flags[b]):
                continue
            out.add(b)
        total += len(out)
        if total > max_edges:
            raise GraphTooLarge(f"more than {max_edges} edges")
        edges.append(tuple(sorted(out)))
    return WantGraph(tuple(owner), flags, tuple(edges))


def ring_valid(graph: WantGraph, ring: Sequence[int], max_items: int = 0) -> bool:
    """Whether ``ring`` is a cycle of ``graph``'s edges, no item twice, with two or more owners (and at most
    ``max_items`` items when that is > 0)."""
    k = len(ring)
    if k < 2 or len(set(ring)) != k or (max_items and k > max_items):
        return False
    if len({graph.owner[a] for a in ring}) < 2:
        return False
    accepts = graph.accepts
    return all(ring[(i + 1) % k] in accepts[ring[i]] for i in range(k))


def strongly_connected(graph: WantGraph) -> list[list[int]]:
    """The strongly connected components with two or more items (only they hold rings), each sorted, in order of
    their smallest item. Iterative Tarjan: no recursion limit to hit."""
    n = graph.n
    accepts = graph.accepts
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    stack: list[int] = []
    comps: list[list[int]] = []
    counter = 0
    for root in range(n):
        if index[root] != -1:
            continue
        work = [(root, 0)]
        while work:
            v, i = work[-1]
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack[v] = True
            out = accepts[v]
            pushed = False
            while i < len(out):
                w = out[i]
                i += 1
                if index[w] == -1:
                    work[-1] = (v, i)
                    work.append((w, 0))
                    pushed = True
                    break
                if on_stack[w] and index[w] < low[v]:
                    low[v] = index[w]
            if pushed:
                continue
            work.pop()
            if work and low[v] < low[work[-1][0]]:
                low[work[-1][0]] = low[v]
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))
    comps.sort(key=lambda c: c[0])
    return comps
