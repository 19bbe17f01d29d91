"""Settlement: offers become complete exchanges on every party's chain. A sans-IO state machine.

One :class:`Settlement` per node (per identity) holds every negotiation the
node takes part in. The node feeds it events (commands from the local user,
verified objects from peers, the time) and carries out the decisions it
returns, in order; the machine does no I/O, never reads the clock (events
carry ``now``) and never draws randomness (exchange nonces come in with
:class:`Accept` / :class:`Propose`). It does sign: Ed25519 is deterministic, so
that is computation, and every object it signs goes through the builders and
so through the trust boundary. Vocabulary: :mod:`.settlement_types`.

The flow (2 parties are the N = 2 case)::

    taker: MakeOffer ------ offer ------> maker: OfferReceived
    maker: Accept  (builds exchange_for_offer, signs slot 0, reserves)
           <------ exchange (maker signed) ------
    taker: ExchangeReceived -> countersigns by itself (its open offer is its consent)
           -> complete: AppendToLedger, Announce ------ complete exchange ------> maker
    maker: ExchangeReceived (complete) -> AppendToLedger, Announce

plus Decline, Counter (either side answers the offer it received, naming it),
Cancel, a signing deadline (Tick), and N parties: the proposer (Propose) signs
first and sends to all; every other party consents with Sign, and sends its
copy to all; whoever assembles every signature sends the complete exchange to
all. A 3-party ring is the same code as a 2-party barter.

Rules (each one is named in the code where it is enforced)
==========================================================

R1 Consent. This node signs only on a command (Accept, Propose, Sign), or by
   itself when an exchange settles exactly an open, unexpired 2-party offer this
   node wrote: an offer is its author's standing consent. If it cannot honour
   that offer any more (expired, withdrawn, already settled, over quantity), it
   cancels the exchange instead (R5), so the others release at once.
R2 Deadline. Never sign at or after an exchange's deadline (own clock). An
   incomplete exchange lapses at its deadline (Tick) for every party.
R3 One exchange per offer: never sign a second exchange settling the same offer.
R4 No over-commitment. Never sign an exchange that would make this node give,
   from one of its listings, more of an item than listed minus what its held
   reservations on that listing already give. A reservation is held from this
   node's signature: forever once complete (compacted to a small record until
   the listing expires); until the cancel when cancelled; until deadline + GRACE
   when lapsed, because a countersignature made just before the deadline may be
   in flight and clocks differ by up to CLOCK_SKEW.
R5 Cancel is a promise never to sign, and only a party that has not signed can
   make it (the boundary refuses a cancel whose author signed the copy it
   names). A signature cannot be taken back: a party that signed waits for
   completion or the deadline. Because completion needs every signature, a
   cancel ends the exchange for every party at once, and the signed notice is
   the evidence if its author signs anyway. Decline ends an offer (by its
   recipient); cancel also withdraws an offer (by its author), and an offer
   withdrawn before its author signed anything cancels the exchange settling it.
R6 Complete wins. A complete exchange carries every party's verified
   signature, including this node's: it is a fact. Whatever the state (lapsed,
   cancelled, unknown), it becomes COMPLETE, is appended and announced. This is
   the repair for "one side complete": the other side learns it directly, or
   by LearnedComplete from ledger replication.
R7 Persist before send. A decision list that changes the state starts with
   Persist(); the node writes to_bytes() durably before anything after it, so
   whatever was sent is on disk and resume() sends it again after a crash.
R8 Idempotence. A message that adds nothing gives no decisions. A copy of an
   exchange that lacks this node's signature, or its completion, is answered by
   sending this node's copy to the copy's signers (a re-send of the current
   state); so is an offer this node accepted, received again from its author
   (it evidently lacks the exchange: it gets this node's copy). A message
   about something that is over is refused with a reason.
R9 Signatures, not carriers. Objects may be relayed by anyone (gossip), so
   they are judged by their signatures: an exchange must name this node, a
   notice must be by a party (boundary), an offer must be to or by this node.
   An incomplete exchange nobody has signed is refused (a proposal is signed
   by its proposer).
R10 Sends. After signing, this node's copy goes to every other party. The
   party that assembles the complete exchange (by signing last or by merging
   partial copies) sends it to every other party; one that receives it
   complete sends nothing. resume() re-sends: open offers and own notices
   (until the offer expires), signed incomplete exchanges (until the deadline),
   complete ones (until deadline + GRACE; replication after that), own cancels.

States and transitions (anything not in the tables is refused with a reason)
===========================================================================

Offer (this node's view, same for offers it wrote or received)::

    OPEN      --accept-->   ACCEPTED   (an exchange settling it was signed here)
    OPEN      --decline-->  DECLINED   (recipient's notice)
    OPEN      --counter-->  COUNTERED  (recipient's counter-offer names it)
    OPEN      --cancel-->   CANCELLED  (author's notice)
    ACCEPTED  --cancel-->   CANCELLED  (author withdrew before signing: its exchange is cancelled too)
    OPEN      --expire-->   EXPIRED    (Tick at offer.expires)
    any but ACCEPTED --settled--> ACCEPTED (a complete exchange for it is learned, R6)

Exchange (this node is a party)::

    new       --propose-->  AWAITING   (a signed proposal arrives, or Accept/Propose is about to sign)
    new       --complete--> COMPLETE   (learned complete)
    new       --cancel-->   CANCELLED  (the cancel overtook the exchange)
    AWAITING  --sign-->     SIGNED     (Reserve; send to others)
    AWAITING, SIGNED --complete--> COMPLETE (AppendToLedger, Announce, Completed)
    AWAITING, SIGNED, LAPSED --cancel--> CANCELLED (Release at once, if held)
    AWAITING, SIGNED --deadline--> LAPSED (Lapsed; Release at deadline + GRACE)
    LAPSED, CANCELLED --complete--> COMPLETE (R6; Reserve again)

Serialised state (to_bytes): deterministic CBOR ``{"v": 1, "me": key, "offers":
[...], "exchanges": [...], "settled": [...]}``, records in id order, objects as
their signed bytes (re-verified through the boundary by from_bytes).

Why a new kind for decline and cancel: they must be signed to be evidence, and
none of the existing kinds says "no". A withdrawal is about a listing series;
a counter-offer with impossible terms would be a lie the book shows as a live
offer. The ``notice`` kind (boundary rule 7) embeds the offer or exchange it is
about, so the boundary itself checks that a decline is by the recipient, a
cancel by the offer's author or by a party that has not signed, and a third
party can check the notice offline, like a rating.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import boundary, build, cbor
from .errors import InvalidObject
from .identity import Identity
from .objects import (
    KIND_EXCHANGE,
    KIND_NOTICE,
    KIND_OFFER,
    NOTICE_CANCEL,
    NOTICE_DECLINE,
    Exchange,
    Item,
    Notice,
    Offer,
)
from .settlement_types import (
    Accept,
    Announce,
    Appended,
    AppendToLedger,
    Cancel,
    Completed,
    Counter,
    Decision,
    Decline,
    Event,
    ExchangeReceived,
    ExchangeState,
    ExchangeView,
    Lapsed,
    LearnedComplete,
    MakeOffer,
    NoticeReceived,
    Notify,
    OfferReceived,
    OfferState,
    OfferView,
    Persist,
    Propose,
    Refuse,
    Release,
    Reserve,
    Send,
    Sign,
    Tick,
)

GRACE = boundary.CLOCK_SKEW
STATE_VERSION = 1

_O = OfferState
_X = ExchangeState

# (state, input) -> next state. The code moves states only through these tables.
OFFER_TRANSITIONS: dict[tuple[OfferState, str], OfferState] = {
    (_O.OPEN, "accept"): _O.ACCEPTED,
    (_O.OPEN, "decline"): _O.DECLINED,
    (_O.OPEN, "counter"): _O.COUNTERED,
    (_O.OPEN, "cancel"): _O.CANCELLED,
    (_O.ACCEPTED, "cancel"): _O.CANCELLED,
    (_O.OPEN, "expire"): _O.EXPIRED,
    **{(s, "settled"): _O.ACCEPTED for s in OfferState if s is not _O.ACCEPTED},
}

EXCHANGE_TRANSITIONS: dict[tuple[ExchangeState | None, str], ExchangeState] = {
    (None, "propose"): _X.AWAITING,
    (None, "complete"): _X.COMPLETE,
    (None, "cancel"): _X.CANCELLED,
    (_X.AWAITING, "sign"): _X.SIGNED,
    (_X.AWAITING, "complete"): _X.COMPLETE,
    (_X.SIGNED, "complete"): _X.COMPLETE,
    (_X.AWAITING, "cancel"): _X.CANCELLED,
    (_X.SIGNED, "cancel"): _X.CANCELLED,
    (_X.LAPSED, "cancel"): _X.CANCELLED,
    (_X.AWAITING, "deadline"): _X.LAPSED,
    (_X.SIGNED, "deadline"): _X.LAPSED,
    (_X.LAPSED, "complete"): _X.COMPLETE,
    (_X.CANCELLED, "complete"): _X.COMPLETE,
}

_PENDING = (_X.AWAITING, _X.SIGNED)
_HOLDING = (_X.SIGNED, _X.COMPLETE, _X.LAPSED)  # states in which this node's signature may reserve


class _OfferRecord:
    __slots__ = ("answer", "exchange", "notice", "offer", "state")

    def __init__(
        self,
        offer: Offer,
        state: OfferState,
        exchange: bytes | None = None,
        answer: bytes | None = None,
        notice: Notice | None = None,
    ) -> None:
        self.offer = offer
        self.state = state
        self.exchange = exchange  # the exchange settling it
        self.answer = answer  # the counter-offer answering it
        self.notice = notice  # the decline/cancel that ended it (ours to re-send, or theirs as evidence)


class _ExchangeRecord:
    __slots__ = ("appended", "notice", "released", "state", "x")

    def __init__(
        self,
        x: Exchange,
        state: ExchangeState | None,
        appended: bool = False,
        released: bool = False,
        notice: Notice | None = None,
    ) -> None:
        self.x = x  # this node's merged copy
        self.state = state  # None only while a new record is being created
        self.appended = appended  # the node confirmed the append (Appended)
        self.released = released  # this node's reservations for it were given back (or never held)
        self.notice = notice  # the cancel that ended it


# A complete exchange, kept after its record is compacted only for what it reserves: (horizon, given).
_Given = tuple[tuple[bytes, tuple[Item, ...]], ...]


def _hex(b: bytes) -> str:
    return b.hex()[:12]


class Settlement:
    """Every negotiation of one node. ``handle(event)`` and ``resume(now)`` return decisions."""

    def __init__(self, identity: Identity, *, grace: int = GRACE) -> None:
        self._identity = identity
        self.me = identity.public_key
        self.grace = grace
        self._offers: dict[bytes, _OfferRecord] = {}
        self._exchanges: dict[bytes, _ExchangeRecord] = {}
        self._settled: dict[bytes, tuple[int, _Given]] = {}
        self._changed = False

    # ----------------------------------------------------------------------- entry points

    def handle(self, event: Event) -> list[Decision]:
        """Apply one event; the decisions to carry out, in order (Persist first when the state changed)."""
        self._changed = False
        out: list[Decision] = []
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"not a settlement event: {event!r}")
        handler(self, event, out)
        return self._finish(out)

    def resume(self, now: int) -> list[Decision]:
        """After a restart (or on a retry timer, or when a peer reconnects): Tick, then re-send the current state."""
        self._changed = False
        out: list[Decision] = []
        self._tick(now, out)
        for rec in self._sorted_offers():
            o = rec.offer
            if now >= o.expires:
                continue
            if rec.state is _O.OPEN and o.author == self.me:
                out.append(Send(o.recipient, o))
            elif rec.notice is not None and rec.notice.author == self.me:
                to = o.author if rec.notice.action == NOTICE_DECLINE else o.recipient
                out.append(Send(to, rec.notice))
        for xrec in self._sorted_exchanges():
            x = xrec.x
            if xrec.state is _X.SIGNED and now < x.deadline:
                out.extend(Send(p, x) for p in self._others(x))
            elif xrec.state is _X.COMPLETE:
                if not xrec.appended:
                    out.extend((AppendToLedger(x), Announce(x)))
                if now < x.deadline + self.grace:
                    out.extend(Send(p, x) for p in self._others(x))
            elif xrec.state is _X.CANCELLED and xrec.notice is not None and now < x.deadline:
                notice = xrec.notice
                out.extend(Send(p, notice) for p in self._others(x) if notice.author == self.me)
        return self._finish(out)

    def _finish(self, out: list[Decision]) -> list[Decision]:
        if self._changed:
            out.insert(0, Persist())
        self._changed = False
        return out

    # ----------------------------------------------------------------------- views

    def offer(self, offer_id: bytes) -> OfferView | None:
        rec = self._offers.get(offer_id)
        return None if rec is None else OfferView(rec.offer, rec.state, rec.exchange, rec.answer)

    def exchange(self, exchange_id: bytes) -> ExchangeView | None:
        rec = self._exchanges.get(exchange_id)
        return None if rec is None else ExchangeView(rec.x, rec.state, rec.appended, rec.notice)

    def offers(self) -> list[OfferView]:
        return [OfferView(r.offer, r.state, r.exchange, r.answer) for r in self._sorted_offers()]

    def exchanges(self) -> list[ExchangeView]:
        return [ExchangeView(r.x, r.state, r.appended, r.notice) for r in self._sorted_exchanges()]

    def reserved(self, listing_id: bytes, *, excluding: bytes | None = None) -> dict[tuple[str, str], int]:
        """What this node's held reservations give out of listing ``listing_id``, per item key."""
        totals: dict[tuple[str, str], int] = {}
        given_sets = [self._given(r.x) for i, r in self._exchanges.items() if i != excluding and self._holding(r)]
        given_sets += [given for i, (_, given) in self._settled.items() if i != excluding]
        for given in given_sets:
            for lid, items in given:
                if lid == listing_id:
                    for item in items:
                        totals[item.key] = totals.get(item.key, 0) + item.qty
        return totals

    def next_wakeup(self) -> int | None:
        """The earliest time at which a Tick would change something (for the node's timer)."""
        times: list[int] = []
        for rec in self._offers.values():
            times.append(rec.offer.expires if rec.state is _O.OPEN else rec.offer.expires + self.grace)
        for xrec in self._exchanges.values():
            times.append(xrec.x.deadline if xrec.state in _PENDING else xrec.x.deadline + self.grace)
        times.extend(horizon for horizon, _ in self._settled.values())
        return min(times, default=None)

    # ----------------------------------------------------------------------- commands

    def _make_offer(self, e: MakeOffer, out: list[Decision]) -> None:
        if e.listing.author == self.me:
            out.append(Refuse("own", "cannot make an offer on this node's own listing", e.listing.id))
            return
        try:
            offer = build.make_offer(
                self._identity, e.listing, take=e.take, give=e.give, created=e.now, expires=e.expires, note=e.note
            )
        except InvalidObject as err:
            out.append(Refuse(err.code, str(err), e.listing.id))
            return
        self._put_offer(_OfferRecord(offer, _O.OPEN))
        out.extend((Send(offer.recipient, offer), Announce(offer)))

    def _accept(self, e: Accept, out: list[Decision]) -> None:
        o = e.offer
        if o.author == self.me:
            out.append(Refuse("own", "cannot accept this node's own offer", o.id))
            return
        if self.me not in (o.maker, o.taker):
            out.append(Refuse("non-party", "the offer is not to this node", o.id))
            return
        rec = self._offers.get(o.id)
        if rec is None:
            if e.now >= o.expires:
                out.append(Refuse("expired", "the offer has expired", o.id))
                return
            rec = self._put_offer(_OfferRecord(o, _O.OPEN))
        if rec.state is not _O.OPEN:
            out.append(Refuse("not-open", f"the offer is {rec.state}", o.id))
            return
        if e.deadline <= e.now:
            out.append(Refuse("deadline", "the signing deadline must be after now", o.id))
            return
        try:
            x = build.exchange_for_offer(o, created=e.now, deadline=e.deadline, nonce=e.nonce)
        except InvalidObject as err:
            out.append(Refuse(err.code, str(err), o.id))
            return
        self._sign_new(x, e.now, out)

    def _propose(self, e: Propose, out: list[Decision]) -> None:
        x = e.exchange
        if self.me not in x.parties:
            out.append(Refuse("non-party", "this node is not a party to the exchange", x.id))
        elif x.id in self._exchanges or x.id in self._settled:
            out.append(Refuse("known", "this exchange is already under way", x.id))
        elif x.complete:
            out.append(Refuse("complete", "a proposal is not complete yet", x.id))
        else:
            self._sign_new(x, e.now, out)

    def _sign_cmd(self, e: Sign, out: list[Decision]) -> None:
        rec = self._exchanges.get(e.exchange_id)
        if rec is None:
            out.append(Refuse("unknown", "no such exchange", e.exchange_id))
        elif rec.state is not _X.AWAITING:
            out.append(Refuse("not-awaiting", f"the exchange is {rec.state}", e.exchange_id))
        elif (refusal := self._why_not_sign(rec.x, e.now)) is not None:
            out.append(refusal)
        else:
            self._sign(rec, out)

    def _decline(self, e: Decline, out: list[Decision]) -> None:
        rec = self._offers.get(e.offer_id)
        if rec is None:
            out.append(Refuse("unknown", "no such offer", e.offer_id))
        elif rec.offer.recipient != self.me:
            out.append(Refuse("not-recipient", "only an offer's recipient declines it; its author cancels", e.offer_id))
        elif rec.state is not _O.OPEN:
            out.append(Refuse("not-open", f"the offer is {rec.state}", e.offer_id))
        else:
            notice = self._notice(rec.offer, NOTICE_DECLINE, e.now, e.note, e.offer_id, out)
            if notice is None:
                return
            self._move_offer(rec, "decline")
            rec.notice = notice
            out.append(Send(rec.offer.author, notice))

    def _counter(self, e: Counter, out: list[Decision]) -> None:
        rec = self._offers.get(e.offer_id)
        if rec is None:
            out.append(Refuse("unknown", "no such offer", e.offer_id))
            return
        if rec.offer.recipient != self.me:
            out.append(Refuse("not-recipient", "only an offer's recipient counters it", e.offer_id))
            return
        if rec.state is not _O.OPEN:
            out.append(Refuse("not-open", f"the offer is {rec.state}", e.offer_id))
            return
        try:
            new = build.make_offer(
                self._identity,
                rec.offer.listing,
                take=e.take,
                give=e.give,
                created=e.now,
                expires=e.expires,
                counters=rec.offer,
                note=e.note,
            )
        except InvalidObject as err:
            out.append(Refuse(err.code, str(err), e.offer_id))
            return
        self._move_offer(rec, "counter")
        rec.answer = new.id
        self._put_offer(_OfferRecord(new, _O.OPEN))
        out.extend((Send(new.recipient, new), Announce(new)))

    def _cancel(self, e: Cancel, out: list[Decision]) -> None:
        orec = self._offers.get(e.target_id)
        if orec is not None:
            if orec.offer.author != self.me:
                out.append(
                    Refuse("not-author", "only an offer's author cancels it; its recipient declines", e.target_id)
                )
            elif orec.state is not _O.OPEN:
                out.append(Refuse("not-open", f"the offer is {orec.state}", e.target_id))
            else:
                notice = self._notice(orec.offer, NOTICE_CANCEL, e.now, e.note, e.target_id, out)
                if notice is None:
                    return
                self._move_offer(orec, "cancel")
                orec.notice = notice
                out.append(Send(orec.offer.recipient, notice))
            return
        rec = self._exchanges.get(e.target_id)
        if rec is None:
            out.append(Refuse("unknown", "no such offer or exchange", e.target_id))
        elif rec.state is _X.SIGNED:
            # R5: a signature cannot be taken back.
            out.append(
                Refuse(
                    "signed",
                    "this node has signed: it completes if the others sign before the deadline, else lapses",
                    e.target_id,
                )
            )
        elif rec.state is not _X.AWAITING:
            out.append(Refuse(str(rec.state), f"the exchange is already {rec.state}", e.target_id))
        else:
            self._cancel_exchange(rec, e.now, e.note, out)

    def _appended(self, e: Appended, out: list[Decision]) -> None:
        rec = self._exchanges.get(e.exchange_id)
        if rec is None:
            if e.exchange_id not in self._settled:
                out.append(Refuse("unknown", "no such exchange", e.exchange_id))
        elif rec.state is not _X.COMPLETE:
            out.append(Refuse("incomplete", f"the exchange is {rec.state}", e.exchange_id))
        elif not rec.appended:
            rec.appended = True
            self._changed = True

    def _on_tick(self, e: Tick, out: list[Decision]) -> None:
        self._tick(e.now, out)

    # ----------------------------------------------------------------------- messages

    def _offer_received(self, e: OfferReceived, out: list[Decision]) -> None:
        o = e.offer
        if o.id in self._offers:
            self._answer_resent_offer(self._offers[o.id], out)
            return  # R8: a duplicate, or our own offer echoed back
        if o.author == self.me:
            out.append(Refuse("unknown", "an offer by this node that it has no record of", o.id))
            return
        if self.me not in (o.maker, o.taker):
            out.append(Refuse("non-party", "the offer is not to this node", o.id))  # R9
            return
        if e.now >= o.expires:
            out.append(Refuse("expired", "the offer has expired", o.id))
            return
        answered = self._offers.get(o.counters) if o.counters is not None else None
        if answered is not None:
            # A counter keeps the offer's taker and listing (PROTOCOL.md 10.3: the boundary sees only the id).
            if answered.offer.taker != o.taker or answered.offer.listing.id != o.listing.id:
                out.append(Refuse("counter-mismatch", "a counter-offer must keep the taker and listing", o.id))
                return
            if answered.state is _O.OPEN and answered.offer.author == self.me:
                self._move_offer(answered, "counter")
                answered.answer = o.id
        self._put_offer(_OfferRecord(o, _O.OPEN))
        what = "counter-offer" if o.counters is not None else "offer"
        out.append(Notify("offer", f"{what} {_hex(o.id)} on {o.listing.title!r}", o.id))

    def _exchange_received(self, e: ExchangeReceived | LearnedComplete, out: list[Decision]) -> None:
        x, now = e.exchange, e.now
        if self.me not in x.parties:
            out.append(Refuse("non-party", "this node is not a party to the exchange", x.id))  # R9
            return
        if isinstance(e, LearnedComplete) and not x.complete:
            out.append(Refuse("incomplete", "a learned exchange must be complete", x.id))
            return
        rec = self._exchanges.get(x.id)
        if rec is None:
            if x.id in self._settled:
                return  # R8: settled and compacted
            if x.complete:  # R6
                self._complete(self._put_exchange(x), out, send=False)
            elif now >= x.deadline:
                out.append(Refuse("lapsed", "the signing deadline has passed", x.id))  # R2
            elif not x.signed_by:
                out.append(Refuse("unsigned", "nobody has signed it: a proposal is signed by its proposer", x.id))
            else:
                rec = self._put_exchange(x)
                self._move_exchange(rec, "propose")
                self._consider(rec, now, out)
            return
        merged = build.merge_signatures(rec.x, x)
        if rec.state is _X.COMPLETE:
            self._answer_lagging(rec, x, out)
            return
        if merged.complete:  # R6, from any state
            rec.x = merged
            self._changed = True
            self._complete(rec, out, send=not x.complete)
            return
        if rec.state not in _PENDING or now >= rec.x.deadline:
            state = rec.state if rec.state not in _PENDING else _X.LAPSED
            out.append(Refuse(str(state), f"the exchange is {state}", x.id))
            if rec.notice is not None and rec.notice.author == self.me:
                out.extend(Send(p, rec.notice) for p in x.signed_by if p != self.me)  # R8
            return
        if merged.signatures != rec.x.signatures:
            rec.x = merged
            self._changed = True
        self._answer_lagging(rec, x, out)

    def _notice_received(self, e: NoticeReceived, out: list[Decision]) -> None:
        n = e.notice
        if n.author == self.me:
            return  # our own notice, echoed back
        if n.offer is not None:
            self._offer_notice(n, n.offer, e.now, out)
        else:
            assert n.exchange is not None
            self._exchange_notice(n, n.exchange, e.now, out)

    def _offer_notice(self, n: Notice, o: Offer, now: int, out: list[Decision]) -> None:
        if self.me not in (o.maker, o.taker):
            out.append(Refuse("non-party", "the offer is not to or by this node", o.id))
            return
        rec = self._offers.get(o.id)
        if n.action == NOTICE_DECLINE:  # by the recipient (boundary), so this node wrote the offer
            if rec is None:
                out.append(Refuse("unknown", "a decline of an offer this node has no record of", o.id))
            elif rec.state is _O.DECLINED:
                pass
            elif rec.state is not _O.OPEN:
                out.append(Refuse("not-open", f"declined, but the offer is {rec.state}", o.id))
            else:
                self._move_offer(rec, "decline")
                rec.notice = n
                out.append(Notify("declined", f"offer {_hex(o.id)} was declined", o.id))
            return
        # a cancel by the offer's author: it withdraws the offer
        if rec is None:
            if now >= o.expires:
                out.append(Refuse("expired", "the offer has expired", o.id))
                return
            rec = self._put_offer(_OfferRecord(o, _O.CANCELLED, notice=n))  # it overtook the offer
        elif rec.state is _O.CANCELLED:
            return
        elif rec.state is _O.OPEN:
            self._move_offer(rec, "cancel")
            rec.notice = n
        else:
            xrec = self._exchanges.get(rec.exchange) if rec.exchange is not None else None
            if rec.state is not _O.ACCEPTED or xrec is None or xrec.state not in _PENDING:
                out.append(Refuse("not-open", f"cancelled, but the offer is {rec.state}", o.id))
                return
            if o.author in xrec.x.signed_by:
                out.append(Refuse("signed", "void: the offer's author has signed its exchange", o.id))
                return
            # R5: its author withdrew it before signing, so it will never sign the exchange settling it.
            self._move_offer(rec, "cancel")
            rec.notice = n
            self._cancelled_by(xrec, n, out)
        out.append(Notify("cancelled", f"offer {_hex(o.id)} was withdrawn", o.id))

    def _exchange_notice(self, n: Notice, x: Exchange, now: int, out: list[Decision]) -> None:
        if self.me not in x.parties:
            out.append(Refuse("non-party", "this node is not a party to the exchange", x.id))
            return
        rec = self._exchanges.get(x.id)
        if rec is None:
            if x.id in self._settled:
                out.append(Refuse("complete", "the exchange is complete", x.id))
            elif now >= x.deadline:
                out.append(Refuse("lapsed", "the signing deadline has passed", x.id))
            else:
                rec = self._put_exchange(x)
                self._move_exchange(rec, "cancel")  # it overtook the exchange
                rec.notice, rec.released = n, True
                out.append(Notify("cancelled", f"exchange {_hex(x.id)} was cancelled", x.id))
        elif rec.state is _X.CANCELLED:
            pass  # R8 (the first notice stays as the evidence)
        elif rec.state is _X.COMPLETE:
            out.append(Refuse("complete", "void: the exchange is complete", x.id))
        elif n.author in rec.x.signed_by:
            out.append(Refuse("signed", "void: that party has already signed the exchange", x.id))  # R5
        else:
            self._cancelled_by(rec, n, out)

    # ----------------------------------------------------------------------- the steps

    def _why_not_sign(self, x: Exchange, now: int) -> Refuse | None:
        if now >= x.deadline:
            return Refuse("lapsed", "the signing deadline has passed", x.id)  # R2
        # Checked whether or not we still keep the offer's record (records are forgotten
        # some time after expiry): an expired offer is never settled, once or twice.
        if x.offer is not None and now >= x.offer.expires:
            return Refuse("expired", "the offer has expired", x.id)
        if x.offer is not None and (orec := self._offers.get(x.offer.id)) is not None:
            if orec.state is _O.ACCEPTED and orec.exchange != x.id:  # R3
                return Refuse("offer-settled", f"the offer is settled by exchange {_hex(orec.exchange or b'')}", x.id)
            if orec.state is not _O.OPEN and orec.state is not _O.ACCEPTED:
                return Refuse("not-open", f"the offer is {orec.state}", x.id)
        over = self._over_commit(x)
        if over is not None:
            return Refuse("over-quantity", over, x.id)  # R4
        return None

    def _over_commit(self, x: Exchange) -> str | None:
        given = x.given_by(self.me)
        for listing in x.listings:
            if listing.author != self.me:
                continue
            held = self.reserved(listing.id, excluding=x.id)
            for item in listing.have:
                total = held.get(item.key, 0) + given.get(item.key, 0)
                if total > item.qty:
                    return f"{listing.title!r}: {total} x {item.item} would be committed, {item.qty} listed"
        return None

    def _consider(self, rec: _ExchangeRecord, now: int, out: list[Decision]) -> None:
        """A new incomplete exchange naming this node: sign it by itself (R1), cancel it, or ask."""
        x = rec.x
        if self.me in x.signed_by:  # we signed it before losing the record: our signature stands
            self._reserve_after(rec, lambda: self._move_exchange(rec, "sign"), out)
            return
        o = x.offer
        # Sign by ourselves only an exchange for an offer we made and still hold the record of.
        if o is None or o.author != self.me or len(x.parties) != 2 or o.id not in self._offers:
            out.append(Notify("awaiting-signature", f"exchange {_hex(x.id)} waits for this node's signature", x.id))
            return
        refusal = self._why_not_sign(x, now)
        if refusal is None:
            self._sign(rec, out)
            return
        out.append(refusal)
        self._cancel_exchange(rec, now, refusal.reason, out)
        orec = self._offers.get(o.id)
        settled = self._exchanges.get(orec.exchange) if orec is not None and orec.exchange is not None else None
        if settled is not None and settled.state is _X.COMPLETE:
            # R6/R8: the other side signed a second exchange because it missed the first one completing.
            out.extend(Send(p, settled.x) for p in x.signed_by if p != self.me)

    def _sign_new(self, x: Exchange, now: int, out: list[Decision]) -> None:
        refusal = self._why_not_sign(x, now)
        if refusal is not None:
            out.append(refusal)
            return
        rec = self._put_exchange(x)
        self._move_exchange(rec, "propose")
        self._sign(rec, out)

    def _sign(self, rec: _ExchangeRecord, out: list[Decision]) -> None:
        def sign() -> None:
            rec.x = build.sign_exchange(rec.x, self._identity)
            self._move_exchange(rec, "complete" if rec.x.complete else "sign")

        self._reserve_after(rec, sign, out)
        self._bind_offer(rec.x, "accept")
        if rec.x.complete:
            self._complete(rec, out, send=True)
        else:
            out.extend(Send(p, rec.x) for p in self._others(rec.x))  # R10

    def _complete(self, rec: _ExchangeRecord, out: list[Decision], *, send: bool) -> None:
        x = rec.x
        broken = rec.notice is not None and rec.notice.author != self.me

        def complete() -> None:
            if rec.state is not _X.COMPLETE:
                self._move_exchange(rec, "complete")
            rec.released = False

        was_holding = self._holding(rec)
        self._reserve_after(rec, complete, out)
        if not was_holding and self._holding(rec):
            for listing in x.listings:
                held = self.reserved(listing.id) if listing.author == self.me else {}
                if any(held.get(i.key, 0) > i.qty for i in listing.have):
                    out.append(Notify("overcommitted", f"{listing.title!r} is now committed beyond its quantity", x.id))
        if broken and rec.notice is not None:
            out.append(Notify("broken-promise", f"signed after cancelling (notice {_hex(rec.notice.id)})", x.id))
        self._bind_offer(x, "settled")
        out.extend((AppendToLedger(x), Announce(x)))
        if send:
            out.extend(Send(p, x) for p in self._others(x))  # R10
        out.append(Completed(x.id))

    def _notice(self, target: Any, action: str, now: int, note: str, ref: bytes, out: list[Decision]) -> Any:
        """A signed notice, or None with a Refuse decision when the user's note is not acceptable."""
        try:
            return build.make_notice(self._identity, target, action=action, created=now, note=note)
        except InvalidObject as err:
            out.append(Refuse(err.code, str(err), ref))
            return None

    def _cancel_exchange(self, rec: _ExchangeRecord, now: int, note: str, out: list[Decision]) -> None:
        notice = build.make_notice(self._identity, rec.x, action=NOTICE_CANCEL, created=now, note=_note(note))
        self._move_exchange(rec, "cancel")
        rec.notice, rec.released = notice, True
        out.extend(Send(p, notice) for p in self._others(rec.x))

    def _cancelled_by(self, rec: _ExchangeRecord, n: Notice, out: list[Decision]) -> None:
        def cancel() -> None:
            self._move_exchange(rec, "cancel")
            rec.notice, rec.released = n, True

        self._reserve_after(rec, cancel, out)
        out.append(Notify("cancelled", f"exchange {_hex(rec.x.id)} was cancelled by a party", rec.x.id))

    def _answer_resent_offer(self, rec: _OfferRecord, out: list[Decision]) -> None:
        """R8: an offer we accepted, sent again by its author, who so has not got our signed exchange."""
        if rec.offer.author == self.me or rec.state is not _O.ACCEPTED or rec.exchange is None:
            return
        xrec = self._exchanges.get(rec.exchange)
        if xrec is not None and xrec.state in (_X.SIGNED, _X.COMPLETE):
            out.append(Send(rec.offer.author, xrec.x))

    def _answer_lagging(self, rec: _ExchangeRecord, theirs: Exchange, out: list[Decision]) -> None:
        """R8: the sender's copy lacks our signature or the completion: send ours back to its signers."""
        ours = rec.x
        mine = ours.index_of(self.me)
        lagging = (ours.signatures[mine] is not None and theirs.signatures[mine] is None) or (
            ours.complete and not theirs.complete
        )
        if lagging:
            out.extend(Send(p, ours) for p in theirs.signed_by if p != self.me)

    def _tick(self, now: int, out: list[Decision]) -> None:
        for orec in self._sorted_offers():
            if orec.state is _O.OPEN and now >= orec.offer.expires:
                self._move_offer(orec, "expire")
                out.append(Notify("expired", f"offer {_hex(orec.offer.id)} expired", orec.offer.id))
        for rec in self._sorted_exchanges():
            if rec.state in _PENDING and now >= rec.x.deadline:
                self._move_exchange(rec, "deadline")  # R2
                out.append(Lapsed(rec.x.id))
            if rec.state is _X.LAPSED and not rec.released and now >= rec.x.deadline + self.grace:

                def release(rec: _ExchangeRecord = rec) -> None:
                    rec.released = True
                    self._changed = True

                self._reserve_after(rec, release, out)  # R4
        # Forget what can no longer change; keep what complete exchanges reserve until their listings expire.
        for xid, rec in list(self._exchanges.items()):
            if now < rec.x.deadline + self.grace:
                continue
            if rec.state is _X.COMPLETE and rec.appended:
                given = self._given(rec.x)
                horizon = max((li.expires for li in rec.x.listings if li.author == self.me), default=0)
                if given and now < horizon:
                    self._settled[xid] = (horizon, given)
                del self._exchanges[xid]
                self._changed = True
            elif rec.state in (_X.LAPSED, _X.CANCELLED) and not self._holding(rec):
                del self._exchanges[xid]
                self._changed = True
        for oid, orec in list(self._offers.items()):
            if now >= orec.offer.expires + self.grace and (orec.exchange not in self._exchanges):
                del self._offers[oid]
                self._changed = True
        for xid, (horizon, _) in list(self._settled.items()):
            if now >= horizon:
                del self._settled[xid]
                self._changed = True

    # ----------------------------------------------------------------------- helpers

    def _others(self, x: Exchange) -> list[bytes]:
        return [p for p in x.parties if p != self.me]

    def _given(self, x: Exchange) -> _Given:
        """Per listing of this node in ``x``: what this node gives of its items (what a signature reserves)."""
        given = x.given_by(self.me)
        result = []
        for listing in x.listings:
            if listing.author == self.me:
                items = tuple(Item(i.item, given[i.key], i.unit) for i in listing.have if given.get(i.key))
                if items:
                    result.append((listing.id, items))
        return tuple(result)

    def _holding(self, rec: _ExchangeRecord) -> bool:
        """R4: does this node's signature on ``rec`` commit quantities of its listings right now?"""
        return rec.state in _HOLDING and not rec.released and self.me in rec.x.signed_by and bool(self._given(rec.x))

    def _reserve_after(self, rec: _ExchangeRecord, change: Callable[[], None], out: list[Decision]) -> None:
        """Apply ``change`` to ``rec``; emit Reserve/Release if it changed whether ``rec`` holds a reservation."""
        before = self._holding(rec)
        change()
        after = self._holding(rec)
        if before != after:
            kind = Reserve if after else Release
            out.extend(kind(lid, items) for lid, items in self._given(rec.x))

    def _bind_offer(self, x: Exchange, action: str) -> None:
        orec = self._offers.get(x.offer.id) if x.offer is not None else None
        if orec is not None and orec.state is not _O.ACCEPTED and (orec.state, action) in OFFER_TRANSITIONS:
            self._move_offer(orec, action)
            orec.exchange = x.id

    def _move_offer(self, rec: _OfferRecord, action: str) -> None:
        rec.state = OFFER_TRANSITIONS[(rec.state, action)]
        self._changed = True

    def _move_exchange(self, rec: _ExchangeRecord, action: str) -> None:
        rec.state = EXCHANGE_TRANSITIONS[(rec.state, action)]
        self._changed = True

    def _put_offer(self, rec: _OfferRecord) -> _OfferRecord:
        self._offers[rec.offer.id] = rec
        self._changed = True
        return rec

    def _put_exchange(self, x: Exchange) -> _ExchangeRecord:
        """A new record in no state yet: the caller moves it at once through a ``(None, input)`` transition."""
        rec = _ExchangeRecord(x, None)
        self._exchanges[x.id] = rec
        self._changed = True
        return rec

    def _sorted_offers(self) -> list[_OfferRecord]:
        return [self._offers[k] for k in sorted(self._offers)]

    def _sorted_exchanges(self) -> list[_ExchangeRecord]:
        return [self._exchanges[k] for k in sorted(self._exchanges)]

    # ----------------------------------------------------------------------- persistence

    def to_bytes(self) -> bytes:
        """The whole state as deterministic CBOR: equal states give equal bytes."""
        offers = []
        for r in self._sorted_offers():
            o: dict[str, Any] = {"offer": r.offer.raw, "state": str(r.state)}
            if r.exchange is not None:
                o["exchange"] = r.exchange
            if r.answer is not None:
                o["answer"] = r.answer
            if r.notice is not None:
                o["notice"] = r.notice.raw
            offers.append(o)
        exchanges = []
        for x in self._sorted_exchanges():
            d: dict[str, Any] = {"exchange": x.x.raw, "state": str(x.state), "appended": x.appended}
            d["released"] = x.released
            if x.notice is not None:
                d["notice"] = x.notice.raw
            exchanges.append(d)
        settled = [
            [xid, horizon, [[lid, [i.to_cbor() for i in items]] for lid, items in given]]
            for xid, (horizon, given) in sorted(self._settled.items())
        ]
        state = {"v": STATE_VERSION, "me": self.me, "offers": offers, "exchanges": exchanges, "settled": settled}
        return cbor.encode(state)

    @classmethod
    def from_bytes(cls, identity: Identity, data: bytes, *, grace: int = GRACE) -> Settlement:
        """Restore a state written by :meth:`to_bytes`; every object is verified again through the boundary."""
        machine = cls(identity, grace=grace)
        value = cbor.decode(data, path="settlement", max_size=max(len(data), 1))
        try:
            if value["v"] != STATE_VERSION:
                raise InvalidObject("settlement.v", f"unknown state version {value['v']!r}", "version")
            if value["me"] != identity.public_key:
                raise InvalidObject("settlement.me", "this state belongs to another identity", "identity")
            for r in value["offers"]:
                offer = boundary.decode(r["offer"], kind=KIND_OFFER)
                notice = boundary.decode(r["notice"], kind=KIND_NOTICE) if "notice" in r else None
                machine._offers[offer.id] = _OfferRecord(
                    offer, OfferState(r["state"]), r.get("exchange"), r.get("answer"), notice
                )
            for r in value["exchanges"]:
                x = boundary.decode(r["exchange"], kind=KIND_EXCHANGE)
                notice = boundary.decode(r["notice"], kind=KIND_NOTICE) if "notice" in r else None
                state = ExchangeState(r["state"])
                machine._exchanges[x.id] = _ExchangeRecord(
                    x, state, r["appended"] is True, r["released"] is True, notice
                )
            for xid, horizon, given in value["settled"]:
                machine._settled[xid] = (
                    horizon,
                    tuple((lid, tuple(Item(i["item"], i["qty"], i["unit"]) for i in items)) for lid, items in given),
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidObject("settlement", f"damaged settlement state: {exc!r}", "state") from exc
        if machine.to_bytes() != data:
            raise InvalidObject("settlement", "not the canonical encoding of a settlement state", "encoding")
        return machine


def _note(text: str) -> str:
    """A user's note made acceptable to the notice rules: no control characters, at most 500 long."""
    return "".join(c for c in text if c in "\n\t" or (c.isprintable() and c not in _BIDI))[:500]


_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


_HANDLERS: dict[type, Callable[[Settlement, Any, list[Decision]], None]] = {
    MakeOffer: Settlement._make_offer,
    Accept: Settlement._accept,
    Decline: Settlement._decline,
    Counter: Settlement._counter,
    Cancel: Settlement._cancel,
    Propose: Settlement._propose,
    Sign: Settlement._sign_cmd,
    Appended: Settlement._appended,
    Tick: Settlement._on_tick,
    OfferReceived: Settlement._offer_received,
    ExchangeReceived: Settlement._exchange_received,
    LearnedComplete: Settlement._exchange_received,
    NoticeReceived: Settlement._notice_received,
}

__all__ = [
    "EXCHANGE_TRANSITIONS",
    "GRACE",
    "OFFER_TRANSITIONS",
    "Accept",
    "Announce",
    "AppendToLedger",
    "Appended",
    "Cancel",
    "Completed",
    "Counter",
    "Decision",
    "Decline",
    "Event",
    "ExchangeReceived",
    "ExchangeState",
    "ExchangeView",
    "Lapsed",
    "LearnedComplete",
    "MakeOffer",
    "NoticeReceived",
    "Notify",
    "OfferReceived",
    "OfferState",
    "OfferView",
    "Persist",
    "Propose",
    "Refuse",
    "Release",
    "Reserve",
    "Send",
    "Settlement",
    "Sign",
    "Tick",
]
