"""``swapmeet demo``: the story's pieces without nodes, then the whole demo as a user runs it.

The full run starts real node processes (``swapmeet demo --nodes 4 --json`` as a subprocess, bounded
by a timeout) and checks its last line, the summary. The numbers it must report, and why:

* ``nodes`` = 4 (Ada, Ben, Cai and the cheater Eve; Ada runs the archive node and audits);
* ``exchanges_complete`` = 4: the two-party trade settled after a counter-offer, the 3-party ring,
  and the cheater's two sales of one record player;
* ``multi_party`` = 1: the ring;
* ``audit_findings`` = 0: nothing is found about an honest peer, neither by the audit of the whole
  market at the archive node nor by each honest peer's audit of its own chain;
* ``cheater_findings`` >= 1, among them an ``overcommit`` whose evidence names exactly Eve's two sales.

The interruption tests send SIGINT (Ctrl-C) or SIGTERM to a running demo and then check that no
process of its swarm is left (no process has the swarm's temporary directory on its command line)
and that the directory is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import pytest
from swapmeet.cli.demo import cheater as demo_cheater
from swapmeet.cli.demo.story import (
    ADA,
    BEN,
    CAI,
    DEE,
    EVE,
    auditor,
    cast,
    listing_plans,
    ring_of,
    swaps_directly,
)
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.matching.book import ring_legs, want_graph
from swapmeet.protocol.matching.solve import solve
from swapmeet.protocol.settlement import Accept, OfferReceived, Refuse, Send, Settlement
from swapmeet.protocol.settlement.reservations import Reservations

from tests.cli_helpers import CLI, clean_env, run_cli
from tests.protocol_fixtures import ALICE, BOB, CAROL, NONCE, T, item, listing, offer

DEMO_TIMEOUT_S = 150.0  # the demo itself takes 30-45 s on a 2-core machine; the margin is for a busy CI runner
STOP_S = 30.0  # from the signal to the demo's exit: SIGTERM to every node, bounded waits


# ---------------------------------------------------------------------- the script, without nodes


def test_the_cast_has_the_cheater_and_an_auditor_for_every_size() -> None:
    assert cast(4) == [ADA, BEN, CAI, EVE] and auditor(cast(4)) == ADA
    assert cast(5) == [ADA, BEN, CAI, DEE, EVE] and auditor(cast(5)) == DEE
    assert cast(7)[5:] == ["Fay", "Gus"]
    for n in (3, 13):
        with pytest.raises(ValueError):
            cast(n)


def test_the_listings_cover_every_kind() -> None:
    kinds = {plan.kind for plan in listing_plans(cast(5))}
    assert kinds == {"goods", "service", "rental", "loan", "task"}
    assert len(listing_plans(cast(7))) == len(listing_plans(cast(5))) + 2  # one per bystander


def _book(*rows: tuple[str, str, str, str]) -> list[dict[str, Any]]:
    """Listings as ``listings --json`` gives them: (id, author, have, want) with items in text form."""

    def items(text: str) -> list[dict[str, Any]]:
        return [item(text).to_cbor()] if text else []

    return [{"id": i, "author": a, "have": items(h), "want": items(w)} for i, a, h, w in rows]


def test_the_solver_finds_the_story_ring_and_nothing_else() -> None:
    """The demo's listings (every plan, signed as goods by one identity per name) hold exactly one ring,
    Ada -> Ben -> Cai, and `swapmeet match`'s solver finds it."""
    names = cast(7)
    who = {name: Identity(bytes([i + 1]) * 32) for i, name in enumerate(names)}
    signed = [
        listing(
            who[p.who],
            title=p.title,
            have=[item(h) for h in p.have],
            want=[item(w) for w in p.want],
            series=bytes([n]) * 16,
        )
        for n, p in enumerate(listing_plans(names))
    ]
    book = want_graph(signed)
    for cap in (0, 3, 8):
        s = solve(book.graph, cap)
        assert len(s.rings) == 1 and s.items_traded == 3, cap
    legs = ring_legs(book, solve(book.graph, 3).rings[0])
    by_name = {x.public_key: name for name, x in who.items()}
    assert {(by_name[leg.giver], by_name[leg.receiver], leg.listing.title) for leg in legs} == {
        (ADA, BEN, "Camping tent for a weekend"),
        (BEN, CAI, "Ladder to borrow"),
        (CAI, ADA, "Guitar lessons"),
    }


def leg(giver: str, receiver: str) -> dict[str, Any]:
    return {"from": giver, "to": receiver, "items": [], "listing": "00"}


def test_ring_of_picks_the_ring_of_the_members_from_a_match_answer() -> None:
    found = {
        "rings": [
            {"legs": [leg("p1", "p2"), leg("p2", "p1")]},
            {"legs": [leg("p1", "p2"), leg("p2", "p3"), leg("p3", "p1")]},
        ]
    }
    names = {"p1": ADA, "p2": BEN, "p3": CAI}
    assert ring_of(found, {ADA, BEN, CAI}, names) == found["rings"][1]
    assert ring_of(found, {ADA, EVE}, names) is None


def test_swaps_directly_uses_the_matching_key() -> None:
    swap = _book(("01", "ada", "1 x Tent", "1 x ladder"), ("02", "ben", "1 pcs x ladder", "1 x tent"))
    assert swaps_directly(swap, "ada", "ben")
    book = _book(
        ("01", "ada", "1 x tent", "2 hour x guitar lessons"),
        ("02", "ben", "1 x ladder", "1 x tent"),
        ("03", "cai", "2 hour x guitar lessons", "1 x ladder"),
    )
    assert not any(swaps_directly(book, a, b) for a, b in [("ada", "ben"), ("ben", "cai"), ("ada", "cai")])


def test_the_cheater_signs_what_an_honest_node_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control first (rule R4 refuses a second sale of a one-piece listing), then the villain's patch."""

    def sell_twice() -> list[Any]:
        one = listing(have=[item("1 x bike")])
        maker = Settlement(ALICE)
        offers = [offer(BOB, one), offer(CAROL, one, created=T + 11)]
        for o in offers:
            maker.handle(OfferReceived(o, T + 20))
        first = maker.handle(Accept(offers[0], now=T + 30, nonce=NONCE, deadline=T + 600))
        assert not [d for d in first if isinstance(d, Refuse)]
        return maker.handle(Accept(offers[1], now=T + 31, nonce=b"\x23" * 16, deadline=T + 600))

    honest = sell_twice()
    assert [d.code for d in honest if isinstance(d, Refuse)] == ["over-quantity"]
    monkeypatch.setattr(Reservations, "over_commit", Reservations.over_commit)  # restored after the test
    demo_cheater.disable_over_commit_check()
    dishonest = sell_twice()
    assert not [d for d in dishonest if isinstance(d, Refuse)]
    assert [d.to for d in dishonest if isinstance(d, Send)] == [CAROL.public_key]


def test_the_cheater_entry_point_only_runs_a_node() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "swapmeet.cli.demo.cheater", "--home", "/nonexistent", "ledger", "show"],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "node run" in done.stderr


def test_demo_refuses_too_few_nodes() -> None:
    done = run_cli("demo", "--nodes", "3")
    assert done.returncode == 2 and "--nodes" in done.stderr


# ---------------------------------------------------------------------- the whole demo, with nodes


class Demo:
    """``swapmeet demo ARGS --json`` running as a subprocess, its JSON lines read as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "demo", *args, "--json"],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a signal from the test reaches the demo alone, as `kill PID` does
        )
        self.events: list[dict[str, Any]] = []
        self._lines: Queue[str | None] = Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, step: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except Empty:
                raise AssertionError(f"no {step!r} line within {timeout:g}s; got {self.events}") from None
            if line is None:
                raise AssertionError(f"the demo exited before {step!r}: {self.events}\n{self.stderr()}")
            event = json.loads(line)
            self.events.append(event)
            if event["step"] == step:
                return event

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        while True:
            try:
                line = self._lines.get_nowait()
            except Empty:
                break
            if line is not None:
                self.events.append(json.loads(line))
        return code

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@contextlib.contextmanager
def running_demo(*args: str) -> Iterator[Demo]:
    demo = Demo(*args)
    try:
        yield demo
    finally:
        demo.kill()  # only if a failed assertion left it running


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (Linux /proc)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if text in cmdline and state != "Z":
                found.append(int(proc.name))
    return found


needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")


@pytest.mark.slow
def test_demo_plays_the_whole_story() -> None:
    started = time.monotonic()
    with running_demo("--nodes", "4") as demo:
        code = demo.finish(DEMO_TIMEOUT_S)
        elapsed = time.monotonic() - started
        stderr = demo.stderr()
        assert code == 0, (code, stderr[-4000:], demo.events[-3:])
    events = demo.events
    summary = events[-1]
    assert summary["step"] == "summary" and summary["ok"] is True, summary
    assert summary["failed"] is None and summary["elapsed_s"] > 0
    assert summary["nodes"] == 4
    assert summary["exchanges_complete"] == 4
    assert summary["multi_party"] == 1
    assert summary["audit_findings"] == 0
    assert summary["cheater_findings"] >= 1
    sales = summary["exchanges"]["double_sale"]
    over = [e for e in summary["cheater_evidence"] if e["kind"] == "overcommit"]
    assert len(sales) == 2 and over and sorted(over[0]["exchanges"]) == sorted(sales)
    assert over[0]["listed"] == 1 and over[0]["given"] == 2 and over[0]["proof_bytes"] > 0
    # every line is a narration step with text, in time order, and the story visits each act
    steps = [e["step"] for e in events]
    for step in ("swarm", "publish", "discover", "offer", "counter", "accept", "settled", "ring", "propose", "sign"):
        assert step in steps, step
    for step in ("confirm", "rate", "cheat", "double-sale", "replicate", "audit", "own-audits", "stop"):
        assert step in steps, step
    assert all(e["text"] for e in events[:-1])
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    own = {p["name"]: p["findings"] for p in summary["peers"]}
    assert own == {ADA: 0, BEN: 0, CAI: 0, EVE: 1}
    # every node process is gone, and the temporary homes with them
    base = events[0]["dir"]
    assert processes_mentioning(base) == [] and not Path(base).exists()
    assert elapsed < DEMO_TIMEOUT_S


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("to", ["demo", "group"])
def test_ctrl_c_stops_every_node(to: str) -> None:
    """SIGINT to the demo process alone (``kill -INT PID``: only its own cleanup can stop the nodes), or
    to its whole process group, as Ctrl-C at a terminal does (the nodes and commands get it too)."""
    with running_demo("--nodes", "4") as demo:
        base = demo.wait_for("start", 60)["dir"]
        swarm = demo.wait_for("swarm", 90)
        pids = list(swarm["pids"].values())
        assert len(pids) == 4 and len(processes_mentioning(base)) >= 4
        if to == "demo":
            demo.proc.send_signal(signal.SIGINT)
        else:
            os.killpg(demo.proc.pid, signal.SIGINT)
        code = demo.finish(STOP_S)
        stderr = demo.stderr()
        assert code == 130, (code, stderr)
        assert "interrupted" in stderr
    assert demo.events[-1]["step"] == "interrupted"
    assert processes_mentioning(base) == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not Path(base).exists()


@pytest.mark.slow
@needs_proc
def test_sigterm_stops_every_node() -> None:
    with running_demo("--nodes", "4") as demo:
        base = demo.wait_for("start", 60)["dir"]
        demo.wait_for("publish", 90)  # in the middle of the story
        demo.proc.send_signal(signal.SIGTERM)
        code = demo.finish(STOP_S)
        assert code == -signal.SIGTERM, (code, demo.stderr())
    assert processes_mentioning(base) == []
    assert not Path(base).exists()
