"""``swapmeet demo``: a local market of real nodes plays a story a person can follow.

:class:`Demo` starts a :class:`~swapmeet.cli.localswarm.LocalSwarm` (real ``swapmeet
node run`` processes on 127.0.0.1 with temporary homes), drives every peer through
the ``swapmeet`` command exactly as a user would (``publish``, ``listings``,
``offer``, ``counter``, ``accept``, ``propose``, ``sign``, ``trades``, ``confirm``,
``rate``, ``ledger``, ``audit``, all with ``--json``), and reports each step as an
event: a dict ``{"step": str, "text": str, "t": seconds since the start, ...fields}``
handed to the ``emit`` callback (the CLI prints them as narration or JSON lines).
The cast and the script are in :mod:`swapmeet.cli.demo.story`.

The story:

1. the nodes start and connect; Eve's node is the deliberately dishonest
   :mod:`swapmeet.cli.demo.cheater`, and Dee's (Ada's with 4 nodes) runs with
   ``--archive`` to replicate every chain;
2. the peers publish listings of every kind (goods, rental, loan, service, task)
   and gossip brings them to everyone;
3. Ben finds Ada's road bike, offers apples, Ada counters, Ben accepts: a
   two-party exchange settles (1 complete exchange);
4. Cai finds a ring in the book (Ada -> Ben -> Cai -> Ada, no two of them could
   swap directly) and proposes one three-party exchange; Ada and Ben sign it
   (1 complete exchange, multi-party);
5. the parties confirm what they received and rate each other;
6. Eve sells her one-piece record player to both Ben and Cai (2 complete
   exchanges: an honest node would have refused the second, rule R4);
7. the archive node holds every chain; its audit finds Eve's over-commitment with
   both exchange ids as evidence, and every honest peer's own chain audits clean.

Expected totals, checked at the end (:data:`EXPECTED_EXCHANGES`,
:data:`EXPECTED_MULTI_PARTY`): 4 complete exchanges (the countered trade, the
ring, the two sales of one record player), 1 of them multi-party, 0 findings
about honest peers, at least 1 about the cheater (an ``overcommit`` naming both
of her sales).

Every wait is bounded and polls (``trades --json`` and friends, every
:data:`POLL_S` seconds); a step whose expectation fails raises
:class:`DemoFailed` naming the step. Every node process is stopped on any exit:
normal, failure, Ctrl-C (KeyboardInterrupt) or SIGTERM (see ``LocalSwarm``).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from swapmeet.node.textview import items_text
from swapmeet.protocol.errors import SwapmeetError

from ..localswarm import LocalSwarm, SwarmError
from . import story

__all__ = ["Demo", "DemoEnvironmentError", "DemoFailed", "Emit"]

T = TypeVar("T")
Emit = Callable[[dict[str, Any]], None]

POLL_S = 0.15  # between two polls of a node (each poll is one `swapmeet ... --json` run, ~0.3 s itself)
WAIT_S = 20.0  # one message or settlement between nodes on loopback: milliseconds; the margin is for busy CI
REPLICATION_S = 30.0  # the archive node pulling every chain
CHEATER_MODULE = "swapmeet.cli.demo.cheater"
EXPECTED_EXCHANGES = 4
EXPECTED_MULTI_PARTY = 1


class DemoFailed(SwapmeetError):
    """A step of the story did not go as expected (exit 1). ``details``: e.g. the nodes' log tails."""

    exit_code = 1

    def __init__(self, step: str, reason: str, details: str = "") -> None:
        super().__init__(f"demo step {step!r} failed: {reason}")
        self.step = step
        self.reason = reason
        self.details = details


class DemoEnvironmentError(SwapmeetError):
    """The market could not be set up (the nodes did not start): not the story's fault (exit 3)."""

    exit_code = 3

    def __init__(self, reason: str, details: str = "") -> None:
        super().__init__(reason)
        self.details = details


@dataclass(eq=False)  # hashable, by identity: one object per peer
class Peer:
    name: str
    index: int
    peer_id: str = ""
    role: str = ""
    pid: int | None = None

    @property
    def short(self) -> str:
        return f"{self.peer_id[:4]}..{self.peer_id[-6:]}"


@dataclass
class _State:
    """What the story learned so far (the ids it checks and reports)."""

    listings: dict[str, dict[str, Any]] = field(default_factory=dict)  # plan key -> listing JSON
    counter_trade: str | None = None
    ring_trade: str | None = None
    double_sale: list[str] = field(default_factory=list)
    complete: dict[str, dict[str, Any]] = field(default_factory=dict)  # exchange id -> trade JSON
    chains: dict[str, int] = field(default_factory=dict)  # name -> own chain length
    own_audits: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> audit JSON of its chain
    market_audit: dict[str, Any] | None = None
    audit_findings: int = 0
    cheater_findings: list[dict[str, Any]] = field(default_factory=list)


def _first_line(text: str) -> tuple[str, str]:
    first, _, rest = text.partition("\n")
    return first, rest


def _quote(args: Sequence[str]) -> str:
    return "swapmeet " + " ".join(shlex.quote(a) for a in args)


class Demo:
    """One run of the story on ``nodes`` fresh nodes; :meth:`run` returns the summary event."""

    def __init__(
        self,
        nodes: int = 5,
        *,
        emit: Emit,
        net: str | None = None,
        base_dir: str | Path | None = None,
        keep_dir: bool = False,
    ) -> None:
        names = story.cast(nodes)  # ValueError for a wrong count: the caller checks the range first
        self.n = nodes
        self.emit = emit
        self.net = net or f"demo-{secrets.token_hex(4)}"
        self.base_dir = base_dir
        self.keep_dir = keep_dir
        self.peers = {name: Peer(name, i) for i, name in enumerate(names)}
        self.auditor = self.peers[story.auditor(names)]
        self.cheater = self.peers[story.CHEATER]
        for peer in self.peers.values():
            peer.role = _role(peer.name, self.auditor.name)
        self.state = _State()
        self.timings: dict[str, float] = {}
        self.swarm: LocalSwarm | None = None
        self._t0 = time.monotonic()
        self._step_name = "start"

    # ------------------------------------------------------------------ running

    def run(self) -> dict[str, Any]:
        """Play the story; return the summary (also emitted, as the last event).

        Raises :class:`DemoFailed` (after emitting a summary with ``"ok": false``),
        :class:`DemoEnvironmentError`, or KeyboardInterrupt; the nodes are stopped in every case.
        """
        self._t0 = time.monotonic()
        swarm = LocalSwarm(
            self.n,
            net=self.net,
            base_dir=self.base_dir,
            keep_dir=self.keep_dir,
            seed=7,
            node_args={self.auditor.index: ["--archive"]},
            node_module={self.cheater.index: CHEATER_MODULE},
        )
        self.swarm = swarm
        self._say(
            "start",
            f"Starting a market of {self.n} swapmeet nodes on this machine (127.0.0.1, temporary homes): "
            + ", ".join(self.peers),
            nodes=self.n,
            net=self.net,
            dir=str(swarm.base_dir),
        )
        try:
            with self._step("start"):
                try:
                    swarm.start()
                except SwarmError as err:
                    first, rest = _first_line(str(err))
                    raise DemoEnvironmentError(f"the demo's nodes did not start: {first}", rest) from err
                self._introduce()
            self._publish()
            self._bike_trade()
            self._ring()
            self._confirm_and_rate()
            self._double_sale()
            self._replicate()
            self._audit()
            summary = self._summary()
            self._check(summary)
        except DemoFailed as err:
            swarm.close(failed=True)  # keeps the homes and logs, and says where
            summary = self._summary()
            summary.update(ok=False, failed={"step": err.step, "reason": err.reason})
            self.emit(summary)
            raise
        except KeyboardInterrupt:
            swarm.close()
            raise
        except BaseException:
            swarm.close(failed=True)
            raise
        swarm.close()
        kept = self.keep_dir or self.base_dir is not None
        self._say("stop", f"Stopped all {self.n} nodes" + (f"; their homes are in {swarm.base_dir}." if kept else "."))
        summary["t"] = self._now()  # stamped again: stopping the nodes came after the count
        summary["elapsed_s"] = round(time.monotonic() - self._t0, 1)
        self.emit(summary)
        return summary

    # ------------------------------------------------------------------ the story

    def _introduce(self) -> None:
        swarm = self._swarm()
        for peer in self.peers.values():
            peer.peer_id = swarm.peer_id(peer.index)
            peer.pid = swarm.pid(peer.index)
        self._say(
            "swarm",
            f"{self.n} nodes are up and connected after {self._now():.1f} s: "
            + ", ".join(f"{p.name} ({p.short})" for p in self.peers.values())
            + f". {self.auditor.name}'s node keeps an archive of every chain it hears of.",
            peers={p.name: p.peer_id for p in self.peers.values()},
            roles={p.name: p.role for p in self.peers.values()},
            pids={p.name: p.pid for p in self.peers.values()},
        )

    def _publish(self) -> None:
        plans = story.listing_plans(list(self.peers))
        with self._step("publish"):
            published = self._parallel([lambda plan=plan: self._cli(plan.who, *plan.args()) for plan in plans])
            for plan, listing in zip(plans, published, strict=True):
                self.state.listings[plan.key] = listing
                extra = ""
                if listing.get("window"):
                    start, end = listing["window"]
                    extra = f", for {round((end - start) / 86_400)} days from {_when(start)}"
                elif listing.get("due"):
                    extra = f", due back {_when(listing['due'])}"
                wants = items_text(listing["want"]) or "nothing in particular"
                self._say(
                    "publish",
                    f"{plan.who} publishes a {listing['type']} listing {listing['title']!r}: "
                    f"has {items_text(listing['have'])}{extra}; wants {wants}.",
                    who=plan.who,
                    listing=listing["id"],
                    kind=listing["type"],
                    title=listing["title"],
                    have=listing["have"],
                    want=listing["want"],
                    cmd=_quote(plan.args()),
                )
        with self._step("discover"):
            ids = {x["id"] for x in self.state.listings.values()}
            started = time.monotonic()
            swarm = self._swarm()
            self._wait(
                lambda: all(ids <= swarm.listing_ids(i) for i in swarm.running()),
                f"all {len(ids)} listings to reach every node",
            )
            self._say(
                "discover",
                f"Gossip brought all {len(ids)} listings to every peer ({time.monotonic() - started:.1f} s after the"
                " last one was published): each node has the whole offer book.",
                listings=len(ids),
            )

    def _bike_trade(self) -> None:
        ada, ben = self.peers[story.ADA], self.peers[story.BEN]
        bike = self.state.listings["bike"]
        with self._step("search"):
            found = self._cli(ben, "listings", "bike")
            if bike["id"] not in {x["id"] for x in found}:
                raise DemoFailed("search", f"`listings bike` at Ben does not find Ada's road bike {bike['id'][:12]}")
            self._say(
                "search",
                f"Ben searches the book for 'bike' and finds Ada's {bike['title']!r}; she wants"
                f" {items_text(bike['want'])} for it.",
                who=ben.name,
                query="bike",
                found=[x["id"] for x in found],
            )
        with self._step("offer"):
            args = ["offer", bike["id"], "--give", story.BIKE_OFFER_GIVE]
            offer = self._cli(ben, *args)
            self._say(
                "offer",
                f"Ben offers {story.BIKE_OFFER_GIVE} for the bike (a signed offer, sent straight to Ada).",
                who=ben.name,
                offer=offer["id"],
                cmd=_quote(args),
            )
            self._wait_offer(ada, offer["id"])
        with self._step("counter"):
            args = ["counter", offer["id"], "--give", story.BIKE_COUNTER_GIVE, "--take", story.BIKE_COUNTER_TAKE]
            counter = self._cli(ada, *args)
            self._say(
                "counter",
                f"Ada counters: {story.BIKE_COUNTER_GIVE} for the {story.BIKE_COUNTER_TAKE[4:]}.",
                who=ada.name,
                offer=counter["id"],
                answers=offer["id"],
                cmd=_quote(args),
            )
            self._wait_offer(ben, counter["id"])
        with self._step("accept"):
            started = time.monotonic()
            trade = self._cli(ben, "accept", counter["id"])
            xid = trade["id"]
            self._say(
                "accept",
                "Ben accepts the counter-offer: his node signs the exchange, and Ada's node countersigns by itself"
                " (her counter-offer was her consent).",
                who=ben.name,
                exchange=xid,
                cmd=_quote(["accept", counter["id"]]),
            )
            self._wait_complete(xid, [ada, ben])
            self.state.counter_trade = xid
            self._say(
                "settled",
                f"Exchange {xid[:12]} is complete ({time.monotonic() - started:.1f} s): both signatures, and an entry"
                " on Ada's and on Ben's chain.",
                exchange=xid,
                parties=[ada.name, ben.name],
            )

    def _ring(self) -> None:
        ada, ben, cai = (self.peers[x] for x in story.TRADERS)
        with self._step("ring"):
            # the solver of `swapmeet match` (protocol/matching) finds it in Cai's book
            found = self._cli(cai, "match", "--max-parties", "3")
            names = {p.peer_id: p.name for p in self.peers.values()}
            ring = story.ring_of(found, {ada.name, ben.name, cai.name}, names)
            if ring is None:
                rings = [[names.get(leg["from"], leg["from"]) for leg in r["legs"]] for r in found["rings"]]
                raise DemoFailed("ring", f"no ring of Ada, Ben and Cai in Cai's match (found {rings})")
            book = self._cli(cai, "listings", "--limit", "1000")
            pairs = [(a, b) for a in (ada, ben, cai) for b in (ada, ben, cai) if a.index < b.index]
            direct = [f"{a.name}+{b.name}" for a, b in pairs if story.swaps_directly(book, a.peer_id, b.peer_id)]
            if direct:
                raise DemoFailed("ring", f"the ring's parties could swap directly: {direct}")
            legs = ring["legs"]
            legs_text = "; ".join(
                f"{names[leg['from']]} gives {names[leg['to']]} {items_text(leg['items'])}" for leg in legs
            )
            self._say(
                "ring",
                "Cai wants a ladder. Ben has one but wants a tent; Ada has a tent but wants guitar lessons, which Cai"
                f" gives. No two of them can swap, but `swapmeet match` finds that the three can: {legs_text}.",
                who=cai.name,
                cmd=_quote(["match", "--max-parties", "3"]),
                legs=[
                    {
                        "from": names[leg["from"]],
                        "to": names[leg["to"]],
                        "items": leg["items"],
                        "listing": leg["listing"],
                    }
                    for leg in legs
                ],
            )
        with self._step("propose"):
            args = ["propose"]
            for leg in legs:
                giver = "me" if leg["from"] == cai.peer_id else leg["from"]
                receiver = "me" if leg["to"] == cai.peer_id else leg["to"]
                args += ["--leg", f"{giver} -> {receiver}: {items_text(leg['items'])}"]
            for leg in legs:
                args += ["--listing", leg["listing"]]
            args += ["--deadline", "10m"]
            started = time.monotonic()
            trade = self._cli(cai, *args)
            xid = trade["id"]
            self._say(
                "propose",
                f"Cai proposes one exchange among the three ({xid[:12]}) and signs it first; it goes to Ada and Ben.",
                who=cai.name,
                exchange=xid,
                cmd=_quote(args),
            )
        with self._step("sign"):
            for peer in (ada, ben):
                self._wait_trade(peer, xid, ("awaiting",))
                self._cli(peer, "sign", xid)
                self._say(
                    "sign",
                    f"{peer.name} looks at the proposal in `swapmeet trades` and signs it.",
                    who=peer.name,
                    exchange=xid,
                    cmd=_quote(["sign", xid]),
                )
            self._wait_complete(xid, [ada, ben, cai])
            self.state.ring_trade = xid
            self._say(
                "settled",
                f"The 3-party exchange {xid[:12]} is complete ({time.monotonic() - started:.1f} s from the proposal):"
                " three signatures, one entry on each of the three chains.",
                exchange=xid,
                parties=[ada.name, ben.name, cai.name],
            )

    def _confirm_and_rate(self) -> None:
        ada, ben, cai = (self.peers[x] for x in story.TRADERS)
        bike_x, ring_x = self.state.counter_trade, self.state.ring_trade
        assert bike_x is not None and ring_x is not None
        ring_subjects = {ada: cai, ben: ada, cai: ben}  # who gave each of them something in the ring
        with self._step("confirm"):
            self._parallel(
                [
                    lambda: (self._cli(ada, "confirm", bike_x), self._cli(ada, "confirm", ring_x)),
                    lambda: (self._cli(ben, "confirm", bike_x), self._cli(ben, "confirm", ring_x)),
                    lambda: self._cli(cai, "confirm", ring_x),
                ]
            )
            self._say(
                "confirm",
                "Each of them confirms what they received: a signed receipt on their own chain.",
                exchanges=[bike_x, ring_x],
            )
        with self._step("rate"):
            ratings = [
                (ben, bike_x, ada, 5, "Lovely bike, as described"),
                (ada, bike_x, ben, 5, "Crisp apples"),
                *((p, ring_x, s, 5, "Smooth ring trade") for p, s in ring_subjects.items()),
            ]
            by_rater: dict[str, list[tuple[Peer, str, Peer, int, str]]] = {}
            for r in ratings:
                by_rater.setdefault(r[0].name, []).append(r)

            def rate_all(items: list[tuple[Peer, str, Peer, int, str]]) -> None:
                for rater, xid, subject, score, comment in items:
                    args = ["rate", xid, "--score", str(score), "--comment", comment]
                    if xid == ring_x:
                        args += ["--subject", subject.peer_id]
                    self._cli(rater, *args)

            self._parallel([lambda items=items: rate_all(items) for items in by_rater.values()])
            self._say(
                "rate",
                "They rate each other, 5/5 all round: for the bike "
                + " and ".join(f"{r.name} rates {s.name}" for r, x, s, _, _ in ratings if x == bike_x)
                + "; for the ring "
                + ", ".join(f"{r.name} rates {s.name}" for r, x, s, _, _ in ratings if x == ring_x)
                + ". A rating is valid only for a complete exchange its author took part in.",
                ratings=[
                    {"rater": r.name, "subject": s.name, "exchange": x, "score": sc} for r, x, s, sc, _ in ratings
                ],
            )

    def _double_sale(self) -> None:
        eve = self.cheater
        player = self.state.listings["record-player"]
        takers = [(self.peers[name], give) for name, give in story.DOUBLE_SALE_OFFERS]
        with self._step("cheat-offers"):
            self._say(
                "cheat",
                "Now Eve cheats. Her node is doctored (swapmeet.cli.demo.cheater): it skips the rule that stops an"
                f" honest node from promising more than a listing has. Her {player['title']!r} is a single piece.",
                who=eve.name,
                listing=player["id"],
            )
            offers = self._parallel(
                [lambda p=p, give=give: self._cli(p, "offer", player["id"], "--give", give) for p, give in takers]
            )
            for (peer, give), offer in zip(takers, offers, strict=True):
                self._say(
                    "offer",
                    f"{peer.name} offers {give} for Eve's record player.",
                    who=peer.name,
                    offer=offer["id"],
                )
            for offer in offers:
                self._wait_offer(eve, offer["id"])
        with self._step("double-sale"):
            started = time.monotonic()
            for (peer, _), offer in zip(takers, offers, strict=True):
                try:
                    trade = self._cli(eve, "accept", offer["id"])
                except SwarmError as err:
                    raise DemoFailed(
                        "double-sale", f"Eve's node refused to sell the record player to {peer.name}: {err}"
                    ) from err
                self.state.double_sale.append(trade["id"])
                self._say(
                    "accept",
                    f"Eve accepts {peer.name}'s offer (exchange {trade['id'][:12]})"
                    + (": an honest node would have refused this one." if len(self.state.double_sale) > 1 else "."),
                    who=eve.name,
                    exchange=trade["id"],
                    taker=peer.name,
                )
            for (peer, _), xid in zip(takers, self.state.double_sale, strict=True):
                self._wait_complete(xid, [eve, peer])
            first, second = self.state.double_sale
            self._say(
                "double-sale",
                f"Both sales are complete ({time.monotonic() - started:.1f} s): Eve has sold her one record player"
                f" twice, to Ben ({first[:12]}) and to Cai ({second[:12]}). Ben and Cai each see a normal trade.",
                exchanges=[first, second],
            )

    def _replicate(self) -> None:
        auditor = self.auditor
        with self._step("replicate"):
            # Every complete exchange any node knows, and every peer's own chain length (the story's
            # actions are over: nothing more is appended).
            trades = self._parallel([lambda p=p: self._cli(p, "trades") for p in self.peers.values()])
            for listed in trades:
                for trade in listed:
                    if trade.get("state") == "complete":
                        self.state.complete.setdefault(trade["id"], trade)
            shows = self._parallel([lambda p=p: self._cli(p, "ledger", "show") for p in self.peers.values()])
            for peer, show in zip(self.peers.values(), shows, strict=True):
                own = [c for c in show.get("chains", []) if c.get("author") == peer.peer_id]
                self.state.chains[peer.name] = own[0]["length"] if own else 0
            wanted = {self.peers[name].peer_id: n for name, n in self.state.chains.items() if n > 0}
            started = time.monotonic()

            def replicated() -> dict[str, Any] | None:
                show = self._cli(auditor, "ledger", "show")
                held = {c["author"]: c["length"] for c in show.get("chains", [])}
                return show if all(held.get(a, 0) >= n for a, n in wanted.items()) else None

            show = self._wait(replicated, f"{auditor.name}'s archive node to hold every chain", timeout=REPLICATION_S)
            totals = show.get("totals", {})
            self._say(
                "replicate",
                f"{auditor.name}'s archive node holds all {len(wanted)} chains ({totals.get('entries')} entries),"
                f" replicated from the swarm ({time.monotonic() - started:.1f} s of waiting).",
                who=auditor.name,
                chains={name: n for name, n in self.state.chains.items() if n > 0},
            )

    def _audit(self) -> None:
        auditor, eve = self.auditor, self.cheater
        with self._step("audit"):
            report = self._audit_json(auditor, [])
            self.state.market_audit = report
            mine = [f for f in report["findings"] if _implicates(f, eve.peer_id)]
            others = [f for f in report["findings"] if not _implicates(f, eve.peer_id)]
            self.state.cheater_findings = mine
            self.state.audit_findings = len(others)
            over = [f for f in mine if f.get("kind") == "overcommit"]
            if not over:
                raise DemoFailed(
                    "audit", f"{auditor.name}'s audit has no overcommit finding about Eve: {report['findings']}"
                )
            finding = over[0]
            if set(finding.get("exchanges", [])) != set(self.state.double_sale):
                raise DemoFailed(
                    "audit",
                    f"the overcommit finding names exchanges {finding.get('exchanges')},"
                    f" not Eve's two sales {self.state.double_sale}",
                )
            if others:
                raise DemoFailed("audit", f"findings about honest peers: {others}")
            proof = finding.get("proof") or ""
            self._say(
                "audit",
                f"{auditor.name} audits the whole market ({report['chains']} chains, {report['entries']} entries,"
                f" {report['exchanges']} exchanges): {len(report['findings'])} finding. Overcommit: Eve listed"
                f" {finding['listed']} x {finding['item']} and signed exchanges giving {finding['given']}:"
                f" {finding['exchanges'][0][:12]} and {finding['exchanges'][1][:12]}. The proof ({len(proof) // 2}"
                " bytes) is signed evidence that anyone can check offline.",
                who=auditor.name,
                findings=[_evidence(f) for f in report["findings"]],
                totals={k: report[k] for k in ("chains", "entries", "exchanges", "parties")},
            )
        with self._step("own-audits"):
            holders = [p for p in self.peers.values() if self.state.chains.get(p.name, 0) > 0]
            swarm = self._swarm()

            def own_audit(peer: Peer) -> dict[str, Any]:
                path = swarm.base_dir / f"{peer.name.lower()}-chain.smx"
                self._cli_text(peer, "ledger", "export", str(path), "--author", peer.peer_id, "--force")
                return self._audit_json(peer, [str(path)])

            reports = self._parallel([lambda p=p: own_audit(p) for p in holders])
            words = []
            for peer, report in zip(holders, reports, strict=True):
                self.state.own_audits[peer.name] = report
                kinds = sorted({f["kind"] for f in report["findings"]})
                verdict = "clean" if not kinds else f"{len(report['findings'])} finding ({', '.join(kinds)})"
                words.append(f"{peer.name} {verdict}")
                if peer is not eve:
                    self.state.audit_findings += len(report["findings"])
            if any(self.state.own_audits[p.name]["findings"] for p in holders if p is not eve):
                raise DemoFailed("own-audits", f"an honest peer's own chain has findings: {'; '.join(words)}")
            self._say(
                "own-audits",
                "Each peer's own chain, exported and audited on its own: " + "; ".join(words) + ".",
                audits={
                    p.name: {"entries": r["entries"], "findings": len(r["findings"])}
                    for p, r in zip(holders, reports, strict=True)
                },
            )

    # ------------------------------------------------------------------ the summary

    def _summary(self) -> dict[str, Any]:
        s = self.state
        multi = [x for x, t in s.complete.items() if len(t.get("parties", [])) > 2]
        return {
            "step": "summary",
            "t": self._now(),
            "ok": True,
            "nodes": self.n,
            "exchanges_complete": len(s.complete),
            "multi_party": len(multi),
            "audit_findings": s.audit_findings,
            "cheater_findings": len(s.cheater_findings),
            "cheater": self.cheater.name,
            "cheater_evidence": [_evidence(f) for f in s.cheater_findings],
            "exchanges": {"countered": s.counter_trade, "ring": s.ring_trade, "double_sale": list(s.double_sale)},
            "peers": [
                {
                    "name": p.name,
                    "peer_id": p.peer_id,
                    "role": p.role,
                    "trades": sum(1 for t in s.complete.values() if p.peer_id in t.get("parties", [])),
                    "chain": s.chains.get(p.name, 0),
                    "findings": len(s.own_audits[p.name]["findings"]) if p.name in s.own_audits else None,
                }
                for p in self.peers.values()
            ],
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
            "failed": None,  # {"step", "reason"} when a step's expectation failed
            "elapsed_s": None,  # set once every node is stopped
        }

    def _check(self, summary: dict[str, Any]) -> None:
        if summary["exchanges_complete"] != EXPECTED_EXCHANGES:
            raise DemoFailed(
                "summary", f"{summary['exchanges_complete']} complete exchanges, expected {EXPECTED_EXCHANGES}"
            )
        if summary["multi_party"] != EXPECTED_MULTI_PARTY:
            raise DemoFailed("summary", f"{summary['multi_party']} multi-party exchanges, expected 1")
        if summary["audit_findings"] != 0 or summary["cheater_findings"] < 1:
            raise DemoFailed("summary", "the audit did not single out the cheater")

    # ------------------------------------------------------------------ helpers

    def _swarm(self) -> LocalSwarm:
        assert self.swarm is not None
        return self.swarm

    def _now(self) -> float:
        return round(time.monotonic() - self._t0, 2)

    def _say(self, step: str, text: str, **fields: Any) -> None:
        self.emit({"step": step, "text": text, "t": self._now(), **fields})

    @contextlib.contextmanager
    def _step(self, name: str) -> Iterator[None]:
        """Time a step; turn a node's refusal or a wait that ran out into :class:`DemoFailed` naming it."""
        self._step_name = name
        started = time.monotonic()
        try:
            yield
        except (DemoFailed, DemoEnvironmentError):
            raise
        except SwapmeetError as err:  # SwarmError: a command exited non-zero; SwarmTimeout: a wait ran out
            first, rest = _first_line(str(err))
            raise DemoFailed(name, first, rest) from err
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - started

    def _cli(self, who: Peer | str, *args: str) -> Any:
        """``swapmeet --home <who's home> ARGS --json``, decoded; a failure raises SwarmError in one line."""
        peer = self.peers[who] if isinstance(who, str) else who
        done = self._swarm().cli(peer.index, *args, "--json", check=False)
        if done.returncode != 0:
            raise SwarmError(
                f"`{_quote(args)}` at {peer.name} exited {done.returncode}: {_condense(done.stderr or done.stdout)}"
            )
        try:
            return json.loads(done.stdout)
        except ValueError:
            raise SwarmError(f"`{_quote(args)}` at {peer.name} printed no JSON: {done.stdout[:200]!r}") from None

    def _cli_text(self, who: Peer, *args: str) -> str:
        done = self._swarm().cli(who.index, *args, check=False)
        if done.returncode != 0:
            raise SwarmError(
                f"`{_quote(args)}` at {who.name} exited {done.returncode}: {_condense(done.stderr or done.stdout)}"
            )
        return done.stdout

    def _audit_json(self, who: Peer, files: list[str]) -> dict[str, Any]:
        """``audit [FILES] --json`` (exit 0 clean, 1 findings; anything else is a failure)."""
        done = self._swarm().cli(who.index, "audit", *files, "--json", "--workers", "1", check=False)
        if done.returncode not in (0, 1):
            raise SwarmError(f"`audit` at {who.name} exited {done.returncode}: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def _wait(self, predicate: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
        return self._swarm().wait_until(predicate, timeout, what=what, interval=POLL_S)

    # Polls read the node's local API: the very rows `swapmeet offers --json` and `swapmeet trades --json`
    # print (swapmeet.node.jsonview), without starting a process ten times a second.

    def _wait_offer(self, peer: Peer, offer_id: str) -> dict[str, Any]:
        def arrived() -> dict[str, Any] | None:
            incoming = self._swarm().client(peer.index).offers("incoming")
            return next((o for o in incoming if o.get("id") == offer_id), None)

        return self._wait(arrived, f"offer {offer_id[:12]} to reach {peer.name}")

    def _trade_at(self, peer: Peer, xid: str) -> dict[str, Any] | None:
        return next((t for t in self._swarm().client(peer.index).trades() if t.get("id") == xid), None)

    def _wait_trade(self, peer: Peer, xid: str, details: Sequence[str]) -> dict[str, Any]:
        """Until ``peer`` holds exchange ``xid`` in one of ``details`` (the fine state: awaiting, signed...)."""

        def there() -> dict[str, Any] | None:
            trade = self._trade_at(peer, xid)
            return trade if trade is not None and trade.get("detail") in details else None

        return self._wait(there, f"exchange {xid[:12]} to be {'/'.join(details)} at {peer.name}")

    def _wait_complete(self, xid: str, parties: Sequence[Peer]) -> None:
        """Until every party holds ``xid`` complete and appended to its chain."""

        def done(peer: Peer) -> dict[str, Any] | None:
            trade = self._trade_at(peer, xid)
            ok = trade is not None and trade.get("state") == "complete" and trade.get("appended") is True
            return trade if ok else None

        for peer in parties:
            trade = self._wait(lambda peer=peer: done(peer), f"exchange {xid[:12]} to be complete at {peer.name}")
            self.state.complete.setdefault(xid, trade)

    def _parallel(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """Run independent commands (at different nodes) side by side; results in order."""
        if len(calls) <= 1:
            return [call() for call in calls]
        pool = ThreadPoolExecutor(max_workers=min(4, len(calls)), thread_name_prefix="demo")
        try:
            futures = [pool.submit(call) for call in calls]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _role(name: str, auditor: str) -> str:
    roles = {
        story.ADA: "trader: road bike, tent rental",
        story.BEN: "trader: ladder loan",
        story.CAI: "trader: guitar lessons",
        story.DEE: "task: moving help",
        story.EVE: "cheater (doctored node)",
    }
    role = roles.get(name, "bystander")
    return f"{role}; archive + auditor" if name == auditor else role


def _when(ts: int) -> str:
    days = round((ts - time.time()) / 86_400)
    return "today" if days <= 0 else "tomorrow" if days == 1 else f"in {days} days"


def _condense(text: str) -> str:
    """One line out of a command's error output: its ``swapmeet: error:`` or click ``Error:`` line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("swapmeet: error: ", "swapmeet: internal error: ", "Error: ")):
            return line.removeprefix("swapmeet: error: ").removeprefix("swapmeet: ")
    return lines[-1] if lines else "(no output)"


def _implicates(finding: dict[str, Any], peer_id: str) -> bool:
    """Whether a finding is about ``peer_id`` (its author, forker, rater or missing party)."""
    return peer_id in {finding.get(k) for k in ("author", "party", "rater")}


def _evidence(finding: dict[str, Any]) -> dict[str, Any]:
    """A finding for the narration and the summary: every field, the proof as its size (the hex is long)."""
    out = {k: v for k, v in finding.items() if k != "proof"}
    out["proof_bytes"] = len(finding["proof"]) // 2 if finding.get("proof") else 0
    return out
