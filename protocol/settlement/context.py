"""What every handler and shared step works on: who this node is, its records, its reservations, the grace.

The handlers (:mod:`.commands`, :mod:`.messages`) and the shared steps
(:mod:`.steps`) are plain functions ``f(ctx, ..., out)``: they read and change
the records in ``ctx`` and append the decisions for the node to ``out``. The
machine (:class:`.machine.Settlement`) owns one Context and is otherwise only
the front door, so a newcomer can read any handler without the rest of the
machine in mind.
"""

from __future__ import annotations

from ..identity import Identity
from ..objects import Exchange
from .reservations import Reservations
from .state import Records


class Context:
    """The state of one machine and what it needs to act: identity, records, reservations (R4), grace."""

    __slots__ = ("grace", "identity", "me", "records", "reservations")

    def __init__(self, identity: Identity, grace: int) -> None:
        # The machine signs: Ed25519 is deterministic, so that is computation, not I/O or randomness.
        self.identity = identity
        self.me = identity.public_key
        self.grace = grace  # R4 and R10: how long after its deadline an exchange still holds and is re-sent
        self.records = Records()
        self.reservations = Reservations(self.me, self.records)

    def others(self, x: Exchange) -> list[bytes]:
        """The parties of ``x`` other than this node, in the exchange's order (whom R10 sends to)."""
        return [p for p in x.parties if p != self.me]


def short_id(b: bytes) -> str:
    """An id shortened for the text of a Notify or Refuse (people read it; codes and refs carry the full id)."""
    return b.hex()[:12]
