"""TradeMaximizer's official want-list format, read into a want graph; and its report of the loops found.

The format (TradeMaximizer 1.3, Chris Okasaki), one statement a line, blank lines skipped:

- ``#! OPTION OPTION=VALUE ...``: options, before the official names and the first want list;
- ``# ...``: a comment (a ``#`` anywhere else in a want list is refused);
- ``!BEGIN-OFFICIAL-NAMES`` ... ``!END-OFFICIAL-NAMES``: one official item name a line (the first
  word; the rest is a description); when given, every item must be one of them;
- ``(user) ITEM : WANT WANT ; WANT ...``: ``user``'s ``ITEM`` is given for any of the wants. The
  colon is optional unless ``REQUIRE-COLONS``; the user is optional unless ``REQUIRE-USERNAMES``
  (an item without one is its own owner). ``;`` separates priority groups, ``%NAME`` is a dummy
  item, scoped to its user (needs ``ALLOW-DUMMIES``). Without ``CASE-SENSITIVE``, names are upper-cased.

Options honoured: ``CASE-SENSITIVE``, ``REQUIRE-COLONS``, ``REQUIRE-USERNAMES``, ``ALLOW-DUMMIES``,
``HIDE-LOOPS``, ``HIDE-SUMMARY``, ``HIDE-NONTRADES``, ``HIDE-ERRORS``, ``HIDE-REPEATS``, ``HIDE-STATS``,
``SORT-BY-ITEM``, ``SHOW-ELAPSED-TIME``, ``EXPLICIT-PRIORITIES`` (``NAME=N`` wants are read). Accepted
without effect, because the objective here is fixed (most items, then most users, then shorter
rings): the priority schemes, ``SMALL-STEP``, ``BIG-STEP``, ``NONTRADE-COST``, ``ITERATIONS``,
``SEED``, ``SHRINK``, ``SHRINK-VERBOSE``, ``METRIC``, ``SHOW-MISSING``, ``SHOW-WANTS``; they are listed
once in :attr:`WantList.inert`.

Where TradeMaximizer stops at the first fault, this reader reports each fault as one
:class:`Problem` (line number, message) and goes on: a bad option is ignored, a malformed line is
skipped, a bad want is dropped from its list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import graph as wg

HONOURED = frozenset(
    {
        "CASE-SENSITIVE",
        "REQUIRE-COLONS",
        "REQUIRE-USERNAMES",
        "ALLOW-DUMMIES",
        "HIDE-LOOPS",
        "HIDE-SUMMARY",
        "HIDE-NONTRADES",
        "HIDE-ERRORS",
        "HIDE-REPEATS",
        "HIDE-STATS",
        "SORT-BY-ITEM",
        "SHOW-ELAPSED-TIME",
        "EXPLICIT-PRIORITIES",
    }
)
INERT = frozenset(
    {"LINEAR-PRIORITIES", "TRIANGLE-PRIORITIES", "SQUARE-PRIORITIES", "SHRINK-VERBOSE", "SHOW-MISSING", "SHOW-WANTS"}
)
# options with a value: the value's pattern
VALUED = {
    "SMALL-STEP": r"\d+",
    "BIG-STEP": r"\d+",
    "NONTRADE-COST": r"[1-9]\d*",
    "ITERATIONS": r"[1-9]\d*",
    "SEED": r"[1-9]\d*",
    "SHRINK": r"\d",
    "METRIC": r"[A-Z-]+",
}
MAX_LINE = 100_000  # code points in one line


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Item:
    name: str  # as shown: upper-cased unless CASE-SENSITIVE; a dummy's name is its %NAME
    user: str | None
    dummy: bool
    line: int

    def show(self, sort_by_item: bool = False) -> str:
        """``(USER) ITEM`` (or ``ITEM (USER)`` with SORT-BY-ITEM), as TradeMaximizer prints it."""
        if self.user is None or self.dummy:
            return self.name
        return f"{self.name} ({self.user})" if sort_by_item else f"({self.user}) {self.name}"


@dataclass
class WantList:
    items: list[Item] = field(default_factory=list)
    accepts: list[list[int]] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    inert: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def has(self, option: str) -> bool:
        return option in self.options

    def graph(self, **limits: int) -> wg.WantGraph:
        """The want graph: items in the order read; owners numbered per user (an item without a user owns itself)."""
        owners: dict[str | None, int] = {}
        owner = []
        for i, item in enumerate(self.items):
            key = item.user if item.user is not None else f"\0{i}"
            owner.append(owners.setdefault(key, len(owners)))
        return wg.build(owner, self.accepts, [x.dummy for x in self.items], **limits)


def _options(text: str, line: int, out: WantList) -> None:
    for option in text.upper().split():
        name, _, value = option.partition("=")
        if option in HONOURED or option in INERT:
            known = option
        elif name in VALUED and "=" in option:
            if not re.fullmatch(VALUED[name], value):
                out.problems.append(Problem(line, f"option {name} needs a value matching {VALUED[name]}, ignored"))
                continue
            known = option
        else:
            out.problems.append(Problem(line, f"unknown option {option}, ignored"))
            continue
        if known not in out.options:
            out.options.append(known)
        if known not in HONOURED and name not in out.inert:
            out.inert.append(name)


def _split_user(line: str, n: int, out: WantList) -> tuple[str | None, str] | None:
    """(user, rest) of a want-list line, or None (a problem recorded) when its parentheses are malformed."""
    if not line.startswith("("):
        if "(" in line or ")" in line:
            out.problems.append(Problem(n, "a (username) can only open a want list"))
            return None
        if out.has("REQUIRE-USERNAMES"):
            out.problems.append(Problem(n, "missing (username), and REQUIRE-USERNAMES is set"))
            return None
        return None, line
    close = line.find(")")
    if close == -1:
        out.problems.append(Problem(n, "missing ')' after the username"))
        return None
    if line.count("(") > 1 or line.count(")") > 1:
        out.problems.append(Problem(n, "more than one username on the line"))
        return None
    user = line[1:close].strip()
    rest = line[close + 1 :].strip()
    if not user:
        out.problems.append(Problem(n, "empty username ()"))
        return None
    if not rest:
        out.problems.append(Problem(n, "a username with no item after it"))
        return None
    return user, rest


def _want_line(line: str, n: int, out: WantList) -> tuple[str | None, str, list[str]] | None:
    """(user, item, wants) of one want-list line, or None when it is malformed (a problem recorded)."""
    if "#" in line:
        out.problems.append(Problem(n, "a comment (#) can only start a line"))
        return None
    split = _split_user(line, n, out)
    if split is None:
        return None
    user, rest = split
    if rest.count(":") > 1:
        out.problems.append(Problem(n, "more than one colon"))
        return None
    if ":" in rest:
        head, _, tail = rest.partition(":")
        if len(head.split()) != 1:
            out.problems.append(Problem(n, "exactly one item goes before the colon"))
            return None
        tokens = [head.strip(), *tail.replace(";", " ; ").split()]
    else:
        if out.has("REQUIRE-COLONS"):
            out.problems.append(Problem(n, "missing colon, and REQUIRE-COLONS is set"))
            return None
        tokens = rest.replace(";", " ; ").split()
    if tokens[0] == ";":
        out.problems.append(Problem(n, "a semicolon before the item"))
        return None
    if not out.has("CASE-SENSITIVE"):
        user = user.upper() if user is not None else None
        tokens = [t.upper() for t in tokens]
    return user, tokens[0], tokens[1:]


def parse(text: str) -> WantList:
    """Read a want-list file's text (module docstring). Never raises on bad input: see ``problems``."""
    out = WantList()
    official: set[str] | None = None
    reading_names = False
    names_line = 0
    lines: list[tuple[int, str | None, str, list[str]]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if len(line) > MAX_LINE:
            out.problems.append(Problem(n, f"line longer than {MAX_LINE} characters, skipped"))
            continue
        if line.startswith("#!"):
            if lines or official is not None:
                out.problems.append(Problem(n, "options (#!) go before the official names and want lists, ignored"))
            else:
                _options(line[2:], n, out)
            continue
        if line.startswith("#"):
            continue
        upper = line.upper()
        if upper == "!BEGIN-OFFICIAL-NAMES":
            if official is not None:
                out.problems.append(Problem(n, "official names begin a second time, ignored"))
            elif lines:
                out.problems.append(Problem(n, "official names go before the first want list, ignored"))
            else:
                official, reading_names, names_line = set(), True, n
            continue
        if upper == "!END-OFFICIAL-NAMES":
            if not reading_names:
                out.problems.append(Problem(n, "!END-OFFICIAL-NAMES without !BEGIN-OFFICIAL-NAMES"))
            reading_names = False
            continue
        if line.startswith("!"):
            out.problems.append(Problem(n, f"unknown directive {line.split()[0]}, ignored"))
            continue
        if reading_names:
            assert official is not None
            name = re.split(r"[:\s]", line, maxsplit=1)[0]
            if not name or name.startswith("%") or "#" in name:
                out.problems.append(Problem(n, f"not an official name: {name or line[:20]!r}"))
                continue
            name = name if out.has("CASE-SENSITIVE") else name.upper()
            if name in official:
                out.problems.append(Problem(n, f"official name {name} given twice"))
            official.add(name)
            continue
        parsed = _want_line(line, n, out)
        if parsed is not None:
            lines.append((n, *parsed))
    if reading_names:
        out.problems.append(Problem(names_line, "!BEGIN-OFFICIAL-NAMES never ended: the names run to the end"))
    _build(lines, official, out)
    out.problems.sort(key=lambda p: p.line)
    return out


def _key(name: str, user: str | None) -> str:
    return f"{name}\0{user}" if name.startswith("%") else name


def _build(lines: Sequence[tuple[int, str | None, str, list[str]]], official: set[str] | None, out: WantList) -> None:
    index: dict[str, int] = {}
    kept: list[tuple[int, list[str]]] = []
    for n, user, name, wants in lines:
        dummy = name.startswith("%")
        if dummy and user is None:
            out.problems.append(Problem(n, f"dummy item {name} without a (username), skipped"))
            continue
        if dummy and not out.has("ALLOW-DUMMIES"):
            out.problems.append(Problem(n, f"dummy item {name} without ALLOW-DUMMIES, skipped"))
            continue
        if not dummy and official is not None and name not in official:
            out.problems.append(Problem(n, f"{name} is not an official name, its want list skipped"))
            continue
        key = _key(name, user)
        if key in index:
            first = out.items[index[key]].line
            out.problems.append(Problem(n, f"{name} already has a want list (line {first}), this one skipped"))
            continue
        index[key] = len(out.items)
        out.items.append(Item(name, user, dummy, n))
        kept.append((n, wants))
    unknown: dict[str, int] = {}
    for a, (n, wants) in enumerate(kept):
        me = out.items[a]
        seen: set[int] = set()
        accepts: list[int] = []
        for token in wants:
            if token == ";":
                continue
            want = token
            if "=" in token:
                if not out.has("EXPLICIT-PRIORITIES"):
                    out.problems.append(Problem(n, f"{token}: NAME=N needs EXPLICIT-PRIORITIES, dropped"))
                    continue
                want, _, rank = token.partition("=")
                if not want or not rank.isdigit() or int(rank) < 1:
                    out.problems.append(Problem(n, f"{token}: not NAME=N with N >= 1, dropped"))
                    continue
            b = index.get(_key(want, me.user))
            if b is None:
                if official is None or want not in official:
                    unknown[want] = unknown.get(want, 0) + 1
                    if unknown[want] == 1:
                        out.problems.append(Problem(n, f"unknown item {want}"))
                continue
            other = out.items[b]
            if b == a:
                out.problems.append(Problem(n, f"{want} is in its own want list, dropped"))
            elif b in seen:
                if not out.has("HIDE-REPEATS"):
                    out.problems.append(Problem(n, f"{want} is repeated in the want list of {me.name}"))
            elif not other.dummy and me.user is not None and other.user == me.user:
                out.problems.append(Problem(n, f"{want} belongs to the same user ({me.user}), dropped"))
            else:
                seen.add(b)
                accepts.append(b)
        out.accepts.append(accepts)


# --- the report ---


@dataclass(frozen=True)
class Step:
    user: str | None
    gives: str
    receives: str
    sends_to: str  # shown as (USER) ITEM: the item whose owner receives ``gives``
    item: Item
    received: Item
    sent_to: Item


def loops(wl: WantList, rings: Sequence[Sequence[int]]) -> list[list[Step]]:
    """The rings with dummies taken out: per real item, its user gives it and receives the next real item."""
    out = []
    for ring in rings:
        real = [wl.items[a] for a in ring if not wl.items[a].dummy]
        if len(real) < 2:
            continue
        k = len(real)
        out.append(
            [
                Step(x.user, x.name, real[(i + 1) % k].name, real[i - 1].name, x, real[(i + 1) % k], real[i - 1])
                for i, x in enumerate(real)
            ]
        )
    return out


def report(wl: WantList, rings: Sequence[Sequence[int]], elapsed_s: float, users_trading: int) -> list[str]:
    """TradeMaximizer's text: TRADE LOOPS, ITEM SUMMARY, then the counts (options can hide parts)."""
    sort_by_item = wl.has("SORT-BY-ITEM")
    found = loops(wl, rings)
    trades = sum(len(x) for x in found)
    shown = [x.show(sort_by_item) for x in wl.items if not x.dummy]
    width = max((len(s) for s in shown), default=0)
    lines: list[str] = []
    if not wl.has("HIDE-LOOPS"):
        lines += [f"TRADE LOOPS ({trades} total trades):", ""]
        for loop in found:
            lines += [f"{s.item.show(sort_by_item):<{width}} receives {s.received.show(sort_by_item)}" for s in loop]
            lines.append("")
    if not wl.has("HIDE-SUMMARY"):
        summary = [
            f"{s.item.show(sort_by_item):<{width}} receives {s.received.show(sort_by_item):<{width}}"
            f" and sends to {s.sent_to.show(sort_by_item)}"
            for loop in found
            for s in loop
        ]
        if not wl.has("HIDE-NONTRADES"):
            traded = {id(s.item) for loop in found for s in loop}
            summary += [
                f"{x.show(sort_by_item):<{width}}             does not trade"
                for x in wl.items
                if not x.dummy and id(x) not in traded
            ]
        lines += [f"ITEM SUMMARY ({trades} total trades):", "", *sorted(summary), ""]
    real = sum(1 for x in wl.items if not x.dummy)
    users = len({x.user if x.user is not None else f"\0{i}" for i, x in enumerate(wl.items) if not x.dummy})
    lines.append(f"Num trades  = {trades} of {real} items" + (f" ({trades / real:.1%})" if real else ""))
    if not wl.has("HIDE-STATS"):
        lines.append(
            f"Num users   = {users_trading} of {users} users" + (f" ({users_trading / users:.1%})" if users else "")
        )
        lines.append(
            f"Num groups  = {len(found)}" + (f" (sizes {' '.join(str(len(x)) for x in found)})" if found else "")
        )
    if wl.has("SHOW-ELAPSED-TIME"):
        lines.append(f"Elapsed time = {elapsed_s * 1000:.0f}ms")
    return lines
