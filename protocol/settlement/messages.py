"""Handlers of verified objects from peers: an offer, an exchange (or one learned complete), a notice.

Each handler is ``on_<event>(ctx, event, out)``. The objects have passed the
trust boundary, so their signatures hold, but they may come from anyone, by
gossip (R9): each handler first checks that the object is about this node,
then what it adds to this node's records. A message that adds nothing gives
no decisions (R8); one about something that is over is refused with a
reason, or answered with this node's own copy if the sender lags behind.
"""

from __future__ import annotations

from .. import build
from ..objects import NOTICE_DECLINE, Exchange, Notice, Offer
from . import steps
from .context import Context, short_id
from .state import PENDING, _OfferRecord
from .vocabulary import (
    Decision,
    ExchangeReceived,
    ExchangeState,
    LearnedComplete,
    NoticeReceived,
    Notify,
    OfferReceived,
    OfferState,
    Refuse,
    Send,
)

_O = OfferState
_X = ExchangeState

# ----------------------------------------------------------------------- offers


def on_offer(ctx: Context, e: OfferReceived, out: list[Decision]) -> None:
    """An offer or counter-offer to this node: keep it OPEN and tell the user; answer a resent one (R8)."""
    o = e.offer
    records = ctx.records
    if o.id in records.offers:
        steps.answer_resent_offer(ctx, records.offers[o.id], out)
        return  # R8: a duplicate, or our own offer echoed back
    if o.author == ctx.me:
        out.append(Refuse("unknown", "an offer by this node that it has no record of", o.id))
        return
    if ctx.me not in (o.maker, o.taker):
        out.append(Refuse("non-party", "the offer is not to this node", o.id))  # R9
        return
    if e.now >= o.expires:
        out.append(Refuse("expired", "the offer has expired", o.id))
        return
    answered = records.offers.get(o.counters) if o.counters is not None else None
    if answered is not None:
        # A counter keeps the offer's taker and listing (PROTOCOL.md 10.3: the boundary sees only the id).
        if answered.offer.taker != o.taker or answered.offer.listing.id != o.listing.id:
            out.append(Refuse("counter-mismatch", "a counter-offer must keep the taker and listing", o.id))
            return
        if answered.state is _O.OPEN and answered.offer.author == ctx.me:
            records.move_offer(answered, "counter")
            answered.answer = o.id
    records.put_offer(_OfferRecord(o, _O.OPEN))
    what = "counter-offer" if o.counters is not None else "offer"
    out.append(Notify("offer", f"{what} {short_id(o.id)} on {o.listing.title!r}", o.id))


# ----------------------------------------------------------------------- exchanges


def on_exchange(ctx: Context, e: ExchangeReceived | LearnedComplete, out: list[Decision]) -> None:
    """A copy of an exchange naming this node: merge its signatures; complete (R6), consider, or answer (R8)."""
    x, now = e.exchange, e.now
    if ctx.me not in x.parties:
        out.append(Refuse("non-party", "this node is not a party to the exchange", x.id))  # R9
        return
    if isinstance(e, LearnedComplete) and not x.complete:
        out.append(Refuse("incomplete", "a learned exchange must be complete", x.id))
        return
    rec = ctx.records.exchanges.get(x.id)
    if rec is None:
        _new_exchange(ctx, x, now, out)
        return
    merged = build.merge_signatures(rec.x, x)
    if rec.state is _X.COMPLETE:
        steps.answer_lagging(ctx, rec, x, out)
        return
    if merged.complete:  # R6, from any state
        rec.x = merged
        ctx.records.changed = True
        steps.complete(ctx, rec, out, send=not x.complete)
        return
    if rec.state not in PENDING or now >= rec.x.deadline:
        state = rec.state if rec.state not in PENDING else _X.LAPSED
        out.append(Refuse(str(state), f"the exchange is {state}", x.id))
        if rec.notice is not None and rec.notice.author == ctx.me:
            out.extend(Send(p, rec.notice) for p in x.signed_by if p != ctx.me)  # R8
        return
    if merged.signatures != rec.x.signatures:
        rec.x = merged
        ctx.records.changed = True
    steps.answer_lagging(ctx, rec, x, out)


def _new_exchange(ctx: Context, x: Exchange, now: int, out: list[Decision]) -> None:
    """An exchange this node has no record of: complete (R6), refused, or a proposal to consider."""
    if x.id in ctx.records.settled:
        return  # R8: settled and compacted
    if x.complete:  # R6
        steps.complete(ctx, ctx.records.put_exchange(x), out, send=False)
    elif now >= x.deadline:
        out.append(Refuse("lapsed", "the signing deadline has passed", x.id))  # R2
    elif not x.signed_by:
        out.append(Refuse("unsigned", "nobody has signed it: a proposal is signed by its proposer", x.id))
    else:
        rec = ctx.records.put_exchange(x)
        ctx.records.move_exchange(rec, "propose")
        steps.consider(ctx, rec, now, out)


# ----------------------------------------------------------------------- notices


def on_notice(ctx: Context, e: NoticeReceived, out: list[Decision]) -> None:
    """A decline or cancel by another party (the boundary checked who may write it)."""
    n = e.notice
    if n.author == ctx.me:
        return  # our own notice, echoed back
    if n.offer is not None:
        if ctx.me not in (n.offer.maker, n.offer.taker):
            out.append(Refuse("non-party", "the offer is not to or by this node", n.offer.id))
        elif n.action == NOTICE_DECLINE:
            _offer_declined(ctx, n, n.offer, out)
        else:
            _offer_cancelled(ctx, n, n.offer, e.now, out)
    else:
        assert n.exchange is not None
        _exchange_cancelled(ctx, n, n.exchange, e.now, out)


def _offer_declined(ctx: Context, n: Notice, o: Offer, out: list[Decision]) -> None:
    """A decline is by the offer's recipient (boundary), so this node wrote the offer."""
    rec = ctx.records.offers.get(o.id)
    if rec is None:
        out.append(Refuse("unknown", "a decline of an offer this node has no record of", o.id))
    elif rec.state is _O.DECLINED:
        pass
    elif rec.state is not _O.OPEN:
        out.append(Refuse("not-open", f"declined, but the offer is {rec.state}", o.id))
    else:
        ctx.records.move_offer(rec, "decline")
        rec.notice = n
        out.append(Notify("declined", f"offer {short_id(o.id)} was declined", o.id))


def _offer_cancelled(ctx: Context, n: Notice, o: Offer, now: int, out: list[Decision]) -> None:
    """A cancel by the offer's author: it withdraws the offer, and the exchange settling it if unsigned (R5)."""
    records = ctx.records
    rec = records.offers.get(o.id)
    if rec is None:
        if now >= o.expires:
            out.append(Refuse("expired", "the offer has expired", o.id))
            return
        rec = records.put_offer(_OfferRecord(o, _O.CANCELLED, notice=n))  # it overtook the offer
    elif rec.state is _O.CANCELLED:
        return
    elif rec.state is _O.OPEN:
        records.move_offer(rec, "cancel")
        rec.notice = n
    else:
        xrec = records.settling(rec)
        if rec.state is not _O.ACCEPTED or xrec is None or xrec.state not in PENDING:
            out.append(Refuse("not-open", f"cancelled, but the offer is {rec.state}", o.id))
            return
        if o.author in xrec.x.signed_by:
            out.append(Refuse("signed", "void: the offer's author has signed its exchange", o.id))
            return
        # R5: its author withdrew it before signing, so it will never sign the exchange settling it.
        records.move_offer(rec, "cancel")
        rec.notice = n
        steps.cancelled_by(ctx, xrec, n, out)
    out.append(Notify("cancelled", f"offer {short_id(o.id)} was withdrawn", o.id))


def _exchange_cancelled(ctx: Context, n: Notice, x: Exchange, now: int, out: list[Decision]) -> None:
    """A party that has not signed ``x`` cancels it (R5): it ends for every party."""
    if ctx.me not in x.parties:
        out.append(Refuse("non-party", "this node is not a party to the exchange", x.id))
        return
    rec = ctx.records.exchanges.get(x.id)
    if rec is None:
        if x.id in ctx.records.settled:
            out.append(Refuse("complete", "the exchange is complete", x.id))
        elif now >= x.deadline:
            out.append(Refuse("lapsed", "the signing deadline has passed", x.id))
        else:
            rec = ctx.records.put_exchange(x)
            ctx.records.move_exchange(rec, "cancel")  # it overtook the exchange
            rec.notice, rec.released = n, True
            out.append(Notify("cancelled", f"exchange {short_id(x.id)} was cancelled", x.id))
    elif rec.state is _X.CANCELLED:
        pass  # R8 (the first notice stays as the evidence)
    elif rec.state is _X.COMPLETE:
        out.append(Refuse("complete", "void: the exchange is complete", x.id))
    elif n.author in rec.x.signed_by:
        out.append(Refuse("signed", "void: that party has already signed the exchange", x.id))  # R5
    else:
        steps.cancelled_by(ctx, rec, n, out)
