"""Ledger replication, sans-IO: which chains to pull, which ranges to ask for, what to do with the answers.

The node moves the bytes (frames of :mod:`swapmeet.protocol.replication`) and
calls :class:`~swapmeet.ledger.store.LedgerStore`; everything it decides comes
from here. No sockets, no threads, no clock.

Which chains (:class:`Policy`): our counterparties' and the authors we follow,
or (``archive``) every chain we hear of. Never our own: only ``append_own``
writes it. Counterparties come first, then followed authors, then the rest.

Pull (:class:`Puller`, one per ledger-sync session, requester side)::

    puller = Puller(policy, store.heads(), forked=store.forked_authors())
    while not isinstance(frame := puller.next_frame(), End):
        send(frame)
        raws = puller.on_reply(receive())        # InvalidObject: the peer broke the protocol
        if raws:
            for author, seq in puller.on_ingested(store.ingest(raws)):
                publish(fork_alert(<store.fork_proofs(author) at seq>))
    send(End())

It asks the heads of the chains we replicate, then ranges, one request at a
time: highest priority first, never beyond the head the peer reported, at most
``MAX_RANGE`` entries per request, at most ``budget`` requests per session
(the next session continues). A reply that ends short of the peer's head is
continued from where our chain now ends. A reply must hold only the asked
author's entries, consecutive from ``after + 1``: anything else ends the
session. Entries the store refuses as invalid, or that leave a gap, stop that
author for this session and are listed in ``faults``.

Forks: when the peer's chain and ours differ (equal head seq but another id,
or the store refusing its next entry as a bad link at seq s), we ask for the
single entry at the seq where they must differ (seq s - 1); ingesting it
stores a fork entry, and the caller gossips the store's proof
(:func:`wire.fork_alert`). Authors already known forked are not probed
again: one proof is enough.

Gossip: :func:`plan_announce` decides for verified announced entries
(``wire.verify_announce``): ingest, fetch the missing range, or ignore.
:func:`followup` reads the ingest's result: forks to alert, probes to ask. A
fetch or a probe runs as a session without heads
(``Puller(..., ask_heads=False)`` then :meth:`Puller.want` /
:meth:`Puller.probe`). :func:`plan_fork_alert` checks a fork alert offline.

Responder side: :func:`answer_heads` and :func:`answer_range`.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from swapmeet.protocol import replication as wire
from swapmeet.protocol.boundary import ZERO_ID
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.evidence import ForkProof
from swapmeet.protocol.identity import peer_id
from swapmeet.protocol.objects import LedgerEntry
from swapmeet.protocol.replication import MAX_HEADS, MAX_RANGE, End, Entries, GetHeads, GetRange, Head, Heads

from .store import IngestResult

MAX_SESSION_REQUESTS = 1024
OurHeads = Mapping[bytes, tuple[int, bytes]]  # author -> (head seq, head id), as LedgerStore.heads()


@dataclass(frozen=True, slots=True)
class Policy:
    """Which chains this node replicates, and in what order of priority."""

    counterparties: frozenset[bytes] = frozenset()
    followed: frozenset[bytes] = frozenset()
    archive: bool = False
    own: bytes | None = None

    def replicates(self, author: bytes) -> bool:
        if author == self.own:
            return False
        return self.archive or author in self.counterparties or author in self.followed

    def rank(self, author: bytes) -> int:
        """0 counterparties, 1 followed authors, 2 anyone else (archive)."""
        return 0 if author in self.counterparties else 1 if author in self.followed else 2

    def heads_requests(self) -> list[GetHeads]:
        """What to ask a peer first: every chain (archive), or ours in chunks, highest priority first."""
        if self.archive:
            return [GetHeads(None, b"")]
        mine = (a for a in self.counterparties | self.followed if a != self.own)
        authors = sorted(mine, key=lambda a: (self.rank(a), a))
        return [GetHeads(tuple(sorted(authors[i : i + MAX_HEADS]))) for i in range(0, len(authors), MAX_HEADS)]


def _range(author: bytes, after: int, upto: int) -> GetRange:
    """Entries after ``after`` up to seq ``upto``, at most one request's worth."""
    return GetRange(author, after, min(upto - after, MAX_RANGE))


def _probe(author: bytes, seq: int) -> GetRange:
    """The single entry at ``seq``: ingesting the peer's copy of it proves the fork there."""
    return GetRange(author, seq - 1, 1)


# --------------------------------------------------------------------------- after an ingest


@dataclass(frozen=True, slots=True)
class Followup:
    """What an ingest calls for.

    ``forks``: new forks, (author, seq), to alert; ``probes``: (author, seq)
    entries to fetch from the same source to prove a fork (:meth:`Puller.probe`);
    ``faults``: what the source sent that the store refused.
    """

    forks: tuple[tuple[bytes, int], ...] = ()
    probes: tuple[tuple[bytes, int], ...] = ()
    faults: tuple[str, ...] = ()


def followup(result: IngestResult, *, forked: AbstractSet[bytes] = frozenset()) -> Followup:
    """Read an :class:`IngestResult`: new forks to alert; for a bad link at seq s, probe seq s - 1.

    A bad link means the source holds another entry at s - 1 than we do (its
    entry s names it); fetching that one stores the fork. Authors in
    ``forked`` (or forked in this result) are proven already and not probed.
    Only an author's first refusal counts: the rest of its entries then
    leave a gap as a matter of course.
    """
    forks = tuple(dict.fromkeys(result.forks))
    proven = set(forked) | {author for author, _ in forks}
    probes: list[tuple[bytes, int]] = []
    faults: list[str] = []
    stuck: set[bytes | None] = set()
    for refusal in result.refusals:
        if refusal.author in stuck and refusal.author is not None:
            continue
        stuck.add(refusal.author)
        if refusal.code == "link" and refusal.author is not None and refusal.seq is not None:
            if refusal.author not in proven and refusal.seq >= 2:
                probes.append((refusal.author, refusal.seq - 1))
        elif refusal.code in ("invalid", "gap"):
            faults.append(str(refusal))
    return Followup(forks, tuple(probes), tuple(faults))


# --------------------------------------------------------------------------- pull sessions


@dataclass(slots=True)
class _Task:
    request: GetRange
    target: int  # the seq we want to reach: the peer's head, or the seq probed
    probe: bool = False


class Puller:
    """The requester's side of one ledger-sync session (see the module docstring for the loop).

    ``ours`` is our heads (at least of the authors involved). With
    ``ask_heads=False`` the session asks no heads, only what :meth:`want` and
    :meth:`probe` add (e.g. after an announce). ``faults`` lists what went
    wrong with the peer short of breaking the protocol (entries the store
    refused, a range it did not have); ``forks`` every fork found.
    """

    def __init__(
        self,
        policy: Policy,
        ours: OurHeads,
        *,
        forked: AbstractSet[bytes] = frozenset(),
        budget: int = MAX_SESSION_REQUESTS,
        ask_heads: bool = True,
    ) -> None:
        self.policy = policy
        self.ours = ours
        self.budget = budget
        self.faults: list[str] = []
        self.forks: list[tuple[bytes, int]] = []
        self._seqs = {author: seq for author, (seq, _) in ours.items()}
        self._proven = set(forked)
        self._heads_queue: deque[GetHeads] = deque(policy.heads_requests() if ask_heads else ())
        self._queue: list[tuple[tuple[int, int, int, bytes, int], _Task]] = []
        self._targets: dict[bytes, int] = {}  # author -> the highest seq a queued range goes up to
        self._order = itertools.count()  # tie-breaker: first queued, first asked
        self._waiting: GetHeads | _Task | None = None
        self._got = 0

    # ------------------------------------------------------------------ requests

    def want(self, author: bytes, upto: int) -> None:
        """Fetch ``author``'s chain from our head up to seq ``upto`` (if we replicate it)."""
        ours = self._seqs.get(author, 0)
        if self.policy.replicates(author) and upto > max(ours, self._targets.get(author, 0)):
            self._targets[author] = upto
            self._push(_Task(_range(author, ours, upto), target=upto))

    def probe(self, author: bytes, seq: int) -> None:
        """Fetch the peer's entry at ``seq``, where its chain and ours differ (unless the author is proven forked)."""
        if self.policy.replicates(author) and author not in self._proven and seq >= 1:
            self._push(_Task(_probe(author, seq), target=seq, probe=True))

    def next_frame(self) -> GetHeads | GetRange | End:
        """The next request to send, or End: all heads first, then ranges by priority."""
        if self._waiting is not None:
            raise RuntimeError("the previous request has not been answered yet")
        if self.budget <= 0:
            return End()
        if self._heads_queue:
            self._waiting = self._heads_queue.popleft()
            self.budget -= 1
            return self._waiting
        if self._queue:
            _, task = heapq.heappop(self._queue)
            self._waiting = task
            self.budget -= 1
            return task.request
        return End()

    def _push(self, task: _Task) -> None:
        """Queue a range: probes first, then by the author's rank, then the shortest, then by author."""
        author = task.request.author
        remaining = task.target - task.request.after
        key = (0 if task.probe else 1, self.policy.rank(author), remaining, author, next(self._order))
        heapq.heappush(self._queue, (key, task))

    # ------------------------------------------------------------------ replies

    def on_reply(self, frame: wire.Frame) -> list[bytes]:
        """Take the reply to the last request; the entries to ingest (then call :meth:`on_ingested`)."""
        waiting = self._waiting
        if isinstance(waiting, GetHeads) and isinstance(frame, Heads):
            self._waiting = None
            self._on_heads(waiting, frame)
            return []
        if isinstance(waiting, _Task) and isinstance(frame, Entries):
            return self._on_entries(waiting, frame)
        expected = "heads" if isinstance(waiting, GetHeads) else "entries" if waiting else "no reply"
        raise InvalidObject(wire.SYNC, f"expected {expected}, got {type(frame).__name__}", "protocol")

    def _on_heads(self, request: GetHeads, reply: Heads) -> None:
        asked = set(request.authors) if request.authors is not None else None
        for i, head in enumerate(reply.heads):
            unasked = head.author not in asked if asked is not None else head.author <= request.after
            if unasked:
                raise InvalidObject(f"{wire.SYNC}.heads[{i}]", "a head that was not asked for", "protocol")
        if request.authors is None and len(reply.heads) == MAX_HEADS:
            self._heads_queue.appendleft(GetHeads(None, reply.heads[-1].author))
        for author, seq, id_ in reply.heads:
            if seq == self.ours.get(author, (0, ZERO_ID))[0] and id_ != self.ours[author][1]:
                self.probe(author, seq)  # same length, different head: a fork at that seq
            else:
                self.want(author, seq)

    def _on_entries(self, task: _Task, reply: Entries) -> list[bytes]:
        request = task.request
        if len(reply.raws) > request.limit:
            raise InvalidObject(f"{wire.SYNC}.entries", f"more than the {request.limit} asked for", "protocol")
        for i, raw in enumerate(reply.raws):
            where = f"{wire.SYNC}.entries[{i}]"
            author, seq = wire.entry_position(raw, where)
            if author != request.author or seq != request.after + 1 + i:
                raise InvalidObject(where, f"not seq {request.after + 1 + i} of the author asked for", "protocol")
        if not reply.raws:
            self._waiting = None
            self.faults.append(f"{peer_id(request.author)}: the peer has no entries after seq {request.after}")
            return []
        self._got = len(reply.raws)
        return list(reply.raws)

    def on_ingested(self, result: IngestResult) -> list[tuple[bytes, int]]:
        """After ``store.ingest`` of what :meth:`on_reply` returned: the new forks to alert, as (author, seq)."""
        task = self._waiting
        if not isinstance(task, _Task) or not self._got:
            raise RuntimeError("no entries are waiting to be ingested")
        self._waiting = None
        author, after = task.request.author, task.request.after
        got, self._got = self._got, 0
        step = followup(result, forked=self._proven)
        self.forks.extend(step.forks)
        self._proven.update(a for a, _ in step.forks)
        self.faults.extend(step.faults)
        for probe_author, seq in step.probes:
            self.probe(probe_author, seq)
        if task.probe or result.refused or step.forks:
            return list(step.forks)  # this author is settled (or stuck) for this session
        # Everything was stored or held already: our chain now reaches at least after + got.
        reached = max(self._seqs.get(author, 0), result.heads.get(author, 0), after + got)
        self._seqs[author] = reached
        if reached < task.target:
            self._push(_Task(_range(author, reached, task.target), target=task.target))
        return list(step.forks)


# --------------------------------------------------------------------------- gossip


@dataclass(frozen=True, slots=True)
class AnnouncePlan:
    """What announced entries call for.

    ``ingest``: raws for ``store.ingest`` (then :func:`followup`); ``fetch``:
    (author, seq) chains to pull from our head up to seq (:meth:`Puller.want`),
    from the entry's author (its PeerID is the author key) or the peer that
    forwarded it; ``ignored``: how many entries need nothing (more).
    """

    ingest: tuple[bytes, ...] = ()
    fetch: tuple[tuple[bytes, int], ...] = ()
    ignored: int = 0


def plan_announce(policy: Policy, ours: OurHeads, entries: Iterable[LedgerEntry]) -> AnnouncePlan:
    """Decide for verified announced entries (``wire.verify_announce``).

    ``ours`` needs the heads of at least the entries' authors. An entry is
    ignored if we don't replicate its author or it is our head; ingested if it
    extends our chain (or an entry before it in the message does), or if it
    is older than our head (we hold that seq: the store tells a copy, the
    common case, from a fork, which must not go unnoticed); otherwise there is
    a gap and the chain is to be fetched up to it (the entry comes with it).
    """
    ingest: list[bytes] = []
    fetch: dict[bytes, int] = {}
    ignored = 0
    heads: dict[bytes, int] = {}
    for entry in sorted({e.id: e for e in entries}.values(), key=lambda e: (e.author, e.seq)):
        author = entry.author
        seq, id_ = ours.get(author, (0, ZERO_ID))
        head = heads.setdefault(author, seq)
        if not policy.replicates(author) or (entry.seq, entry.id) == (seq, id_):
            ignored += 1
        elif author in fetch or entry.seq > head + 1:
            fetch[author] = max(fetch.get(author, 0), entry.seq)
        else:
            ingest.append(entry.raw)
            heads[author] = max(head, entry.seq)
    return AnnouncePlan(tuple(ingest), tuple(fetch.items()), ignored)


@dataclass(frozen=True, slots=True)
class ForkAlertPlan:
    """What a verified fork alert calls for.

    ``new``: the author was not known forked: mark it and forward the alert
    (a known one is forwarded or not at will: gossip dedupes identical
    messages). ``ingest``: the proof's two entries, when we replicate the
    author, so that the store records the fork too (it can when it holds the
    chain up to the seq before the fork).
    """

    proof: ForkProof
    new: bool
    ingest: tuple[bytes, ...]


def plan_fork_alert(policy: Policy, alert: wire.ForkAlert, forked: AbstractSet[bytes] = frozenset()) -> ForkAlertPlan:
    """Check an alert offline (InvalidObject if it proves nothing) and say what it calls for."""
    proof = wire.verify_fork_alert(alert)
    ingest = (proof.first.raw, proof.second.raw) if policy.replicates(proof.author) else ()
    return ForkAlertPlan(proof, proof.author not in forked, ingest)


# --------------------------------------------------------------------------- responder


def answer_heads(request: GetHeads, heads: OurHeads) -> Heads:
    """The reply to ``get-heads`` from what we hold (``LedgerStore.heads()``)."""
    if request.authors is not None:
        chosen: Sequence[bytes] = [a for a in request.authors if a in heads]
    else:
        chosen = heapq.nsmallest(MAX_HEADS, (a for a in heads if a > request.after))
    return Heads(tuple(Head(a, *heads[a]) for a in chosen))


def answer_range(request: GetRange, entries_after: Callable[[bytes, int, int], list[bytes]]) -> Entries:
    """The reply to ``get-range``; ``entries_after`` is ``LedgerStore.entries_after``."""
    return wire.fit_entries(entries_after(request.author, request.after, request.limit))
