"""Names on the wire that carry the network name, so separate markets and test swarms never mix.

Pure functions, no libp2p: ``topic("main", "listings")`` is ``/swapmeet/main/listings/1``,
``protocol_id("main", "book-sync")`` is ``/swapmeet/main/book-sync/1.0.0``.
"""

from __future__ import annotations

import re

from ..config import validate_net

# Topic / protocol *names* ("listings", "offer-book-sync") follow the same
# alphabet; a slash or space inside a name would make the id ambiguous.
_NAME_RE = re.compile(r"[a-z0-9-]{1,64}")


def _validate_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid {what} name {name!r}: use 1-64 characters from a-z, 0-9 and '-'")
    return name


def topic(net: str, name: str) -> str:
    """The gossip topic ``/swapmeet/<net>/<name>/1``."""
    return f"/swapmeet/{validate_net(net)}/{_validate_name(name, 'topic')}/1"


def protocol_id(net: str, name: str) -> str:
    """The stream protocol id ``/swapmeet/<net>/<name>/1.0.0``."""
    return f"/swapmeet/{validate_net(net)}/{_validate_name(name, 'protocol')}/1.0.0"
