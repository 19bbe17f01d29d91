"""The shared steps of the settlement machine: the moves several handlers make.

Deciding (may this node sign: :func:`why_not_sign`; what to do with a new
exchange naming it: :func:`consider`), signing (:func:`sign_new`,
:func:`sign`), completing (:func:`complete`), cancelling and being cancelled
(:func:`make_notice`, :func:`cancel_exchange`, :func:`cancelled_by`),
answering copies that lag behind (:func:`answer_resent_offer`,
:func:`answer_lagging`), and time (:func:`tick`, :func:`resend`). The
handlers in :mod:`.commands` and :mod:`.messages` check what is particular to
their event and then call these. Each step appends its decisions to ``out``
in the order the node must carry them out.
"""

from __future__ import annotations

from .. import boundary, build
from ..errors import InvalidObject
from ..objects import NOTICE_CANCEL, NOTICE_DECLINE, Exchange, Notice, Offer
from .context import Context, short_id
from .state import PENDING, _ExchangeRecord, _OfferRecord
from .vocabulary import (
    Announce,
    AppendToLedger,
    Completed,
    Decision,
    ExchangeState,
    Lapsed,
    Notify,
    OfferState,
    Refuse,
    Send,
)

_O = OfferState
_X = ExchangeState

MAX_NOTE = boundary.MAX_NOTE  # a notice's note, as the boundary bounds it

# ----------------------------------------------------------------------- deciding


def why_not_sign(ctx: Context, x: Exchange, now: int) -> Refuse | None:
    """Why this node must not sign ``x`` now (R2, R3, R4, an offer no longer open), or None if it may."""
    if now >= x.deadline:
        return Refuse("lapsed", "the signing deadline has passed", x.id)  # R2
    # Checked whether or not we still keep the offer's record (records are forgotten
    # some time after expiry): an expired offer is never settled, once or twice.
    if x.offer is not None and now >= x.offer.expires:
        return Refuse("expired", "the offer has expired", x.id)
    if x.offer is not None and (orec := ctx.records.offers.get(x.offer.id)) is not None:
        if orec.state is _O.ACCEPTED and orec.exchange != x.id:  # R3
            return Refuse("offer-settled", f"the offer is settled by exchange {short_id(orec.exchange or b'')}", x.id)
        if orec.state is not _O.OPEN and orec.state is not _O.ACCEPTED:
            return Refuse("not-open", f"the offer is {orec.state}", x.id)
    over = ctx.reservations.over_commit(x)
    if over is not None:
        return Refuse("over-quantity", over, x.id)  # R4
    return None


def consider(ctx: Context, rec: _ExchangeRecord, now: int, out: list[Decision]) -> None:
    """A new incomplete exchange naming this node: sign it by itself (R1), cancel it, or ask."""
    records = ctx.records
    x = rec.x
    if ctx.me in x.signed_by:  # we signed it before losing the record: our signature stands
        ctx.reservations.reserve_after(rec, lambda: records.move_exchange(rec, "sign"), out)
        return
    o = x.offer
    # Sign by ourselves only an exchange for an offer we made and still hold the record of.
    if o is None or o.author != ctx.me or len(x.parties) != 2 or o.id not in records.offers:
        out.append(Notify("awaiting-signature", f"exchange {short_id(x.id)} waits for this node's signature", x.id))
        return
    refusal = why_not_sign(ctx, x, now)
    if refusal is None:
        sign(ctx, rec, out)
        return
    out.append(refusal)
    cancel_exchange(ctx, rec, now, refusal.reason, out)
    orec = records.offers.get(o.id)
    settled = records.settling(orec) if orec is not None else None
    if settled is not None and settled.state is _X.COMPLETE:
        # R6/R8: the other side signed a second exchange because it missed the first one completing.
        out.extend(Send(p, settled.x) for p in x.signed_by if p != ctx.me)


# ----------------------------------------------------------------------- signing and completing


def sign_new(ctx: Context, x: Exchange, now: int, out: list[Decision]) -> None:
    """Sign ``x``, which this node has no record of (Accept, Propose), unless :func:`why_not_sign` objects."""
    refusal = why_not_sign(ctx, x, now)
    if refusal is not None:
        out.append(refusal)
        return
    rec = ctx.records.put_exchange(x)
    ctx.records.move_exchange(rec, "propose")
    sign(ctx, rec, out)


def sign(ctx: Context, rec: _ExchangeRecord, out: list[Decision]) -> None:
    """Add this node's signature to ``rec`` (reserving, R4) and send the copy on (R10), or complete it."""

    def add_signature() -> None:
        rec.x = build.sign_exchange(rec.x, ctx.identity)
        ctx.records.move_exchange(rec, "complete" if rec.x.complete else "sign")

    ctx.reservations.reserve_after(rec, add_signature, out)
    ctx.records.bind_offer(rec.x, "accept")
    if rec.x.complete:
        complete(ctx, rec, out, send=True)
    else:
        out.extend(Send(p, rec.x) for p in ctx.others(rec.x))  # R10


def complete(ctx: Context, rec: _ExchangeRecord, out: list[Decision], *, send: bool) -> None:
    """``rec`` is complete (R6, whatever its state): hold its reservation, append, announce, and send if ``send``."""
    x = rec.x
    broken = rec.notice is not None and rec.notice.author != ctx.me

    def make_complete() -> None:
        if rec.state is not _X.COMPLETE:
            ctx.records.move_exchange(rec, "complete")
        rec.released = False

    was_holding = ctx.reservations.holding(rec)
    ctx.reservations.reserve_after(rec, make_complete, out)
    if not was_holding and ctx.reservations.holding(rec):
        for listing in x.listings:
            held = ctx.reservations.reserved(listing.id) if listing.author == ctx.me else {}
            if any(held.get(i.key, 0) > i.qty for i in listing.have):
                out.append(Notify("overcommitted", f"{listing.title!r} is now committed beyond its quantity", x.id))
    if broken and rec.notice is not None:
        out.append(Notify("broken-promise", f"signed after cancelling (notice {short_id(rec.notice.id)})", x.id))
    ctx.records.bind_offer(x, "settled")
    out.extend((AppendToLedger(x), Announce(x)))
    if send:
        out.extend(Send(p, x) for p in ctx.others(x))  # R10
    out.append(Completed(x.id))


# ----------------------------------------------------------------------- notices and cancelling


def make_notice(
    ctx: Context, target: Offer | Exchange, action: str, now: int, note: str, ref: bytes, out: list[Decision]
) -> Notice | None:
    """A signed notice, or None with a Refuse decision (about ``ref``) when the user's note is not acceptable."""
    try:
        return build.make_notice(ctx.identity, target, action=action, created=now, note=note)
    except InvalidObject as err:
        out.append(Refuse(err.code, str(err), ref))
        return None


def cancel_note(text: str) -> str:
    """``text`` made acceptable as the note of a cancel this node writes by itself (it never refuses its own).

    The boundary owns the text rule (:func:`.boundary.clean_text` drops what it refuses and cuts to length).
    Before that, this drops every other non-printable character too (``str.isprintable``: format characters
    such as zero-width spaces and marks, separators other than the space, private-use and unassigned code
    points, lone surrogates), keeping tab and newline: the boundary accepts those, but notes have always
    been cleaned of them, and which characters survive stays as it was.
    """
    printable = "".join(c for c in text if c in "\n\t" or c.isprintable())
    return boundary.clean_text(printable, MAX_NOTE, multiline=True)


def cancel_exchange(ctx: Context, rec: _ExchangeRecord, now: int, note: str, out: list[Decision]) -> None:
    """This node, which has not signed ``rec``, promises never to sign it (R5) and tells the other parties."""
    notice = build.make_notice(ctx.identity, rec.x, action=NOTICE_CANCEL, created=now, note=cancel_note(note))
    ctx.records.move_exchange(rec, "cancel")
    rec.notice, rec.released = notice, True
    out.extend(Send(p, notice) for p in ctx.others(rec.x))


def cancelled_by(ctx: Context, rec: _ExchangeRecord, n: Notice, out: list[Decision]) -> None:
    """Another party cancelled ``rec`` with notice ``n`` (R5): it ends here too, releasing what it held."""

    def cancel() -> None:
        ctx.records.move_exchange(rec, "cancel")
        rec.notice, rec.released = n, True

    ctx.reservations.reserve_after(rec, cancel, out)
    out.append(Notify("cancelled", f"exchange {short_id(rec.x.id)} was cancelled by a party", rec.x.id))


# ----------------------------------------------------------------------- answering copies that lag behind (R8)


def answer_resent_offer(ctx: Context, rec: _OfferRecord, out: list[Decision]) -> None:
    """R8: an offer we accepted, sent again by its author, who so has not got our signed exchange."""
    if rec.offer.author == ctx.me or rec.state is not _O.ACCEPTED or rec.exchange is None:
        return
    xrec = ctx.records.settling(rec)
    if xrec is not None and xrec.state in (_X.SIGNED, _X.COMPLETE):
        out.append(Send(rec.offer.author, xrec.x))


def answer_lagging(ctx: Context, rec: _ExchangeRecord, theirs: Exchange, out: list[Decision]) -> None:
    """R8: the sender's copy lacks our signature or the completion: send ours back to its signers."""
    ours = rec.x
    mine = ours.index_of(ctx.me)
    lagging = (ours.signatures[mine] is not None and theirs.signatures[mine] is None) or (
        ours.complete and not theirs.complete
    )
    if lagging:
        out.extend(Send(p, ours) for p in theirs.signed_by if p != ctx.me)


# ----------------------------------------------------------------------- time


def tick(ctx: Context, now: int, out: list[Decision]) -> None:
    """Time is ``now``: offers expire, incomplete exchanges lapse (R2), reservations and old records go."""
    records = ctx.records
    for orec in records.sorted_offers():
        if orec.state is _O.OPEN and now >= orec.offer.expires:
            records.move_offer(orec, "expire")
            out.append(Notify("expired", f"offer {short_id(orec.offer.id)} expired", orec.offer.id))
    for rec in records.sorted_exchanges():
        if rec.state in PENDING and now >= rec.x.deadline:
            records.move_exchange(rec, "deadline")  # R2
            out.append(Lapsed(rec.x.id))
        if rec.state is _X.LAPSED and not rec.released and now >= rec.x.deadline + ctx.grace:

            def release(rec: _ExchangeRecord = rec) -> None:
                rec.released = True
                records.changed = True

            ctx.reservations.reserve_after(rec, release, out)  # R4
    _compact(ctx, now)


def _compact(ctx: Context, now: int) -> None:
    """Forget what can no longer change; keep what complete exchanges reserve until their listings expire."""
    records = ctx.records
    for xid, rec in list(records.exchanges.items()):
        if now < rec.x.deadline + ctx.grace:
            continue
        if rec.state is _X.COMPLETE and rec.appended:
            given = ctx.reservations.given(rec.x)
            horizon = max((li.expires for li in rec.x.listings if li.author == ctx.me), default=0)
            if given and now < horizon:
                records.settled[xid] = (horizon, given)
            del records.exchanges[xid]
            records.changed = True
        elif rec.state in (_X.LAPSED, _X.CANCELLED) and not ctx.reservations.holding(rec):
            del records.exchanges[xid]
            records.changed = True
    for oid, orec in list(records.offers.items()):
        if now >= orec.offer.expires + ctx.grace and (orec.exchange not in records.exchanges):
            del records.offers[oid]
            records.changed = True
    for xid, (horizon, _) in list(records.settled.items()):
        if now >= horizon:
            del records.settled[xid]
            records.changed = True


def resend(ctx: Context, now: int, out: list[Decision]) -> None:
    """R10: send the current state again (after a restart, on a retry timer, when a peer reconnects)."""
    for rec in ctx.records.sorted_offers():
        o = rec.offer
        if now >= o.expires:
            continue
        if rec.state is _O.OPEN and o.author == ctx.me:
            out.append(Send(o.recipient, o))
        elif rec.notice is not None and rec.notice.author == ctx.me:
            to = o.author if rec.notice.action == NOTICE_DECLINE else o.recipient
            out.append(Send(to, rec.notice))
    for xrec in ctx.records.sorted_exchanges():
        x = xrec.x
        if xrec.state is _X.SIGNED and now < x.deadline:
            out.extend(Send(p, x) for p in ctx.others(x))
        elif xrec.state is _X.COMPLETE:
            if not xrec.appended:
                out.extend((AppendToLedger(x), Announce(x)))
            if now < x.deadline + ctx.grace:
                out.extend(Send(p, x) for p in ctx.others(x))
        elif xrec.state is _X.CANCELLED and xrec.notice is not None and now < x.deadline:
            notice = xrec.notice
            out.extend(Send(p, notice) for p in ctx.others(x) if notice.author == ctx.me)
