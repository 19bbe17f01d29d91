"""Settlement: offers become complete exchanges on every party's chain. A sans-IO state machine.

One :class:`Settlement` per node (per identity) holds every negotiation the
node takes part in. The node feeds it events (commands from the local user,
verified objects from peers, the time) and carries out the decisions it
returns, in order; the machine does no I/O, never reads the clock (events
carry ``now``) and never draws randomness (exchange nonces come in with
:class:`Accept` / :class:`Propose`). It does sign: Ed25519 is deterministic, so
that is computation, and every object it signs goes through the builders and
so through the trust boundary.

Where each piece lives (split the way h11 splits its events, its state and
its connection; modules inside import each other directly, everyone else
imports from this package)::

    vocabulary.py    the words: states, events, decisions, read-only views (no behaviour)
    state.py         the records, the transition tables below, the Records container
    reservations.py  rule R4: what a signature gives and holds; the over-commit check (the
                     one hook for a node that skips it: node/demo_cheater.py)
    context.py       what every handler works on: identity, records, reservations, grace
    commands.py      handlers of the local user's commands (MakeOffer ... Tick)
    messages.py      handlers of verified objects from peers (offer, exchange, notice)
    steps.py         the shared steps: why not sign, consider, sign, complete, cancel,
                     answer lagging copies, tick, resend
    persistence.py   the serialised state below (to_bytes / from_bytes)
    machine.py       Settlement: handle (the dispatch table), resume, views, next_wakeup

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

Where each rule is enforced::

    R1   commands.py (Accept, Propose, Sign); steps.consider (by itself)
    R2   steps.why_not_sign, steps.tick
    R3   steps.why_not_sign
    R4   reservations.py; checked before every signature by steps.why_not_sign
    R5   steps.cancel_exchange; messages.py (cancels received); the boundary (notice rules)
    R6   messages.on_exchange, steps.complete
    R7   machine.py (Persist first), state.Records.changed
    R8   messages.py; steps.answer_lagging, steps.answer_resent_offer
    R9   messages.py
    R10  steps.sign, steps.complete, steps.resend

States and transitions (anything not in the tables is refused with a reason)
===========================================================================

The tables are OFFER_TRANSITIONS and EXCHANGE_TRANSITIONS in :mod:`.state`.

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

Serialised state (to_bytes, :mod:`.persistence`): deterministic CBOR ``{"v": 1, "me": key, "offers":
[...], "exchanges": [...], "settled": [...]}``, records in id order, objects as
their signed bytes (re-verified through the boundary by from_bytes).
Equal states give equal bytes: node and tests compare states by them.

Why a new kind for decline and cancel: they must be signed to be evidence, and
none of the existing kinds says "no". A withdrawal is about a listing series;
a counter-offer with impossible terms would be a lie the book shows as a live
offer. The ``notice`` kind (boundary rule 7) embeds the offer or exchange it is
about, so the boundary itself checks that a decline is by the recipient, a
cancel by the offer's author or by a party that has not signed, and a third
party can check the notice offline, like a rating.
"""

from __future__ import annotations

from .machine import Settlement
from .reservations import GRACE
from .state import EXCHANGE_TRANSITIONS, OFFER_TRANSITIONS
from .vocabulary import (
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
