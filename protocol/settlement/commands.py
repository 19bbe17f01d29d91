"""Handlers of the local user's commands: MakeOffer, Accept, Propose, Sign, Decline, Counter, Cancel, Appended, Tick.

Each handler is ``on_<event>(ctx, event, out)``: it checks what is particular
to its command, refuses with a reason (a :class:`.vocabulary.Refuse` with a
stable code) or acts, mostly through the shared steps of :mod:`.steps`. A
command is the user's consent (R1): only these handlers sign on their own
initiative (Accept, Propose, Sign); the messages of :mod:`.messages` sign only
through :func:`.steps.consider`.
"""

from __future__ import annotations

from .. import build
from ..errors import InvalidObject
from ..objects import NOTICE_CANCEL, NOTICE_DECLINE
from . import steps
from .context import Context
from .state import _ExchangeRecord, _OfferRecord
from .vocabulary import (
    Accept,
    Announce,
    Appended,
    Cancel,
    Counter,
    Decision,
    Decline,
    ExchangeState,
    MakeOffer,
    OfferState,
    Propose,
    Refuse,
    Send,
    Sign,
    Tick,
)

_O = OfferState
_X = ExchangeState


def open_offer_to_me(ctx: Context, offer_id: bytes, out: list[Decision], *, not_recipient: str) -> _OfferRecord | None:
    """The record of offer ``offer_id`` if this node has it, is its recipient, and it is OPEN; else None and a Refuse.

    The one guard of the answers to an offer (Accept, Decline, Counter): only the recipient answers, and only
    once. ``not_recipient`` is the reason given to the offer's author, who has other commands (cancel).
    """
    rec = ctx.records.offers.get(offer_id)
    if rec is None:
        out.append(Refuse("unknown", "no such offer", offer_id))
    elif rec.offer.recipient != ctx.me:
        out.append(Refuse("not-recipient", not_recipient, offer_id))
    elif rec.state is not _O.OPEN:
        out.append(Refuse("not-open", f"the offer is {rec.state}", offer_id))
    else:
        return rec
    return None


def on_make_offer(ctx: Context, e: MakeOffer, out: list[Decision]) -> None:
    """Sign a new offer on a peer's listing; send it to the listing's maker and announce it."""
    if e.listing.author == ctx.me:
        out.append(Refuse("own", "cannot make an offer on this node's own listing", e.listing.id))
        return
    try:
        offer = build.make_offer(
            ctx.identity, e.listing, take=e.take, give=e.give, created=e.now, expires=e.expires, note=e.note
        )
    except InvalidObject as err:
        out.append(Refuse(err.code, str(err), e.listing.id))
        return
    ctx.records.put_offer(_OfferRecord(offer, _O.OPEN))
    out.extend((Send(offer.recipient, offer), Announce(offer)))


def on_accept(ctx: Context, e: Accept, out: list[Decision]) -> None:
    """Accept an open offer to this node: build the exchange settling it and sign it first (R1, R3)."""
    o = e.offer
    if o.author == ctx.me:
        out.append(Refuse("own", "cannot accept this node's own offer", o.id))
        return
    if ctx.me not in (o.maker, o.taker):
        out.append(Refuse("non-party", "the offer is not to this node", o.id))
        return
    # The offer comes with the command, so it may be new here: keep it (it is to this node, the boundary
    # made sure its author is its maker or taker) unless it has expired, then guard as for any answer.
    if o.id not in ctx.records.offers:
        if e.now >= o.expires:
            out.append(Refuse("expired", "the offer has expired", o.id))
            return
        ctx.records.put_offer(_OfferRecord(o, _O.OPEN))
    if open_offer_to_me(ctx, o.id, out, not_recipient="the offer is not to this node") is None:
        return
    if e.deadline <= e.now:
        out.append(Refuse("deadline", "the signing deadline must be after now", o.id))
        return
    try:
        x = build.exchange_for_offer(o, created=e.now, deadline=e.deadline, nonce=e.nonce)
    except InvalidObject as err:
        out.append(Refuse(err.code, str(err), o.id))
        return
    steps.sign_new(ctx, x, e.now, out)


def on_propose(ctx: Context, e: Propose, out: list[Decision]) -> None:
    """Coordinate a new exchange (N parties): sign it first and send it to the others."""
    x = e.exchange
    if ctx.me not in x.parties:
        out.append(Refuse("non-party", "this node is not a party to the exchange", x.id))
    elif x.id in ctx.records.exchanges or x.id in ctx.records.settled:
        out.append(Refuse("known", "this exchange is already under way", x.id))
    elif x.complete:
        out.append(Refuse("complete", "a proposal is not complete yet", x.id))
    else:
        steps.sign_new(ctx, x, e.now, out)


def on_sign(ctx: Context, e: Sign, out: list[Decision]) -> None:
    """Consent to an exchange awaiting this node's signature (R1), unless :func:`.steps.why_not_sign` objects."""
    rec = ctx.records.exchanges.get(e.exchange_id)
    if rec is None:
        out.append(Refuse("unknown", "no such exchange", e.exchange_id))
    elif rec.state is not _X.AWAITING:
        out.append(Refuse("not-awaiting", f"the exchange is {rec.state}", e.exchange_id))
    elif (refusal := steps.why_not_sign(ctx, rec.x, e.now)) is not None:
        out.append(refusal)
    else:
        steps.sign(ctx, rec, out)


def on_decline(ctx: Context, e: Decline, out: list[Decision]) -> None:
    """Refuse an open offer to this node with a signed notice to its author."""
    not_recipient = "only an offer's recipient declines it; its author cancels"
    rec = open_offer_to_me(ctx, e.offer_id, out, not_recipient=not_recipient)
    if rec is None:
        return
    notice = steps.make_notice(ctx, rec.offer, NOTICE_DECLINE, e.now, e.note, e.offer_id, out)
    if notice is None:
        return
    ctx.records.move_offer(rec, "decline")
    rec.notice = notice
    out.append(Send(rec.offer.author, notice))


def on_counter(ctx: Context, e: Counter, out: list[Decision]) -> None:
    """Answer an open offer to this node with a counter-offer naming it."""
    rec = open_offer_to_me(ctx, e.offer_id, out, not_recipient="only an offer's recipient counters it")
    if rec is None:
        return
    try:
        new = build.make_offer(
            ctx.identity,
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
    ctx.records.move_offer(rec, "counter")
    rec.answer = new.id
    ctx.records.put_offer(_OfferRecord(new, _O.OPEN))
    out.extend((Send(new.recipient, new), Announce(new)))


def on_cancel(ctx: Context, e: Cancel, out: list[Decision]) -> None:
    """Withdraw an offer this node wrote, or leave an exchange it has not signed (the id says which)."""
    orec = ctx.records.offers.get(e.target_id)
    if orec is not None:
        _cancel_offer(ctx, orec, e, out)
        return
    rec = ctx.records.exchanges.get(e.target_id)
    if rec is None:
        out.append(Refuse("unknown", "no such offer or exchange", e.target_id))
    else:
        _leave_exchange(ctx, rec, e, out)


def _cancel_offer(ctx: Context, orec: _OfferRecord, e: Cancel, out: list[Decision]) -> None:
    """Withdraw an open offer this node wrote (R5), with a signed notice to its recipient."""
    if orec.offer.author != ctx.me:
        out.append(Refuse("not-author", "only an offer's author cancels it; its recipient declines", e.target_id))
    elif orec.state is not _O.OPEN:
        out.append(Refuse("not-open", f"the offer is {orec.state}", e.target_id))
    else:
        notice = steps.make_notice(ctx, orec.offer, NOTICE_CANCEL, e.now, e.note, e.target_id, out)
        if notice is None:
            return
        ctx.records.move_offer(orec, "cancel")
        orec.notice = notice
        out.append(Send(orec.offer.recipient, notice))


def _leave_exchange(ctx: Context, rec: _ExchangeRecord, e: Cancel, out: list[Decision]) -> None:
    """Leave an exchange this node has not signed (R5): a cancel to every other party."""
    if rec.state is _X.SIGNED:
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
        steps.cancel_exchange(ctx, rec, e.now, e.note, out)


def on_appended(ctx: Context, e: Appended, out: list[Decision]) -> None:
    """The node appended a complete exchange to its chain: resume() stops asking for it."""
    rec = ctx.records.exchanges.get(e.exchange_id)
    if rec is None:
        if e.exchange_id not in ctx.records.settled:
            out.append(Refuse("unknown", "no such exchange", e.exchange_id))
    elif rec.state is not _X.COMPLETE:
        out.append(Refuse("incomplete", f"the exchange is {rec.state}", e.exchange_id))
    elif not rec.appended:
        rec.appended = True
        ctx.records.changed = True


def on_tick(ctx: Context, e: Tick, out: list[Decision]) -> None:
    """Time has passed (see :func:`.steps.tick`)."""
    steps.tick(ctx, e.now, out)
