"""Commands that negotiate and settle trades through the running node's local API.

Offers: ``offer`` (on a listing in the book), ``offers``, ``accept``, ``decline``,
``counter``, ``cancel``. Exchanges ("trades"): ``propose`` (N parties),
``sign``, ``trades``, ``trade``, ``confirm``, ``rate``; ``cancel`` also leaves an
exchange this node has not signed.

Like the other client commands (:mod:`.node_cmds`) they find the node through
``<home>/api.cookie`` and exit 3 when none runs; every one takes ``--json``
(shapes in :mod:`swapmeet.node.jsonview`: offer row, trade, notice, receipt,
rating). Input -- items, durations, ids, peers, scores -- is checked here first,
so a typo exits 2 even when no node runs. Exit codes: 0 done; 1 refused by the
node's settlement rules (the offer is no longer open, the exchange is already
signed...); 2 bad input, an unknown or ambiguous id; 3 no node.

Peers whose author this node holds a fork proof against are marked
``(forked)`` wherever a peer is shown (:func:`.output.peer_cell`).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import click
from swapmeet.protocol.errors import InvalidObject

from .context import App, pass_app
from .output import (
    items_text,
    json_option,
    peer_cell,
    print_fields,
    print_json,
    print_table,
    relative,
    short,
    short_peer,
)
from .parsing import parse_in_s, parse_items

if TYPE_CHECKING:
    from .client import ApiClient

SCORES = range(1, 6)
_LEG = re.compile(r"\s*(?P<giver>[^\s:]+?)\s*->\s*(?P<receiver>[^\s:]+)\s*:\s*(?P<items>.*\S)\s*")
_ITEM_META = "'QTY [UNIT] x ITEM'"


# --- parsing (before any node is contacted) ---


def check_id(text: str, what: str) -> str:
    """An id or unambiguous prefix as typed (checked: hex, 4..64 digits); exit 2 otherwise."""
    from swapmeet.node.contract import parse_id

    parse_id(text, what)
    return text.strip().lower()


def parse_peer(text: str, option: str) -> str:
    """``me``, a PeerID or a 64-hex public key, as the API takes it (``me`` stays ``me`` for the caller)."""
    from swapmeet.node.contract import parse_author

    text = text.strip()
    if text.lower() == "me":
        return "me"
    parse_author(text, option)
    return text


def parse_leg(text: str, option: str = "--leg") -> dict[str, Any]:
    """``"FROM -> TO: QTY x ITEM[, QTY x ITEM...]"`` as ``{"from", "to", "items"}`` (peers as typed, or ``me``).

    Items are separated by commas when every part is an item; otherwise the whole text is one item
    (an item name may contain a comma).
    """
    match = _LEG.fullmatch(text)
    if not match:
        raise InvalidObject(
            option, f"expected 'FROM -> TO: QTY x ITEM' (FROM/TO: me, a PeerID or a hex key), got {text!r}", "format"
        )
    giver = parse_peer(match["giver"], f"{option} {text!r}: FROM")
    receiver = parse_peer(match["receiver"], f"{option} {text!r}: TO")
    if giver == receiver:
        raise InvalidObject(option, f"a leg needs two different peers, got {text!r}", "format")
    parts = [p.strip() for p in match["items"].split(",")]
    try:
        items = parse_items(parts, option)
    except InvalidObject:
        items = parse_items([match["items"]], option)  # a single item, or the error about the whole text
    return {"from": giver, "to": receiver, "items": items}


def check_score(score: int) -> int:
    if score not in SCORES:
        raise InvalidObject("--score", f"must be a whole number from 1 to 5, got {score}", "range")
    return score


# --- output ---


def forked_peers(client: ApiClient) -> frozenset[str]:
    """PeerIDs the node holds a fork proof against (one request)."""
    return frozenset(client.forked())


def state_text(trade: dict[str, Any]) -> str:
    """``pending (awaiting you)``, ``pending (signed)``, ``complete``, ``lapsed (cancelled)``..."""
    state, detail = trade["state"], trade.get("detail", trade["state"])
    if detail == state:
        return state
    return f"{state} ({'awaiting you' if detail == 'awaiting' else detail})"


def legs_text(trade: dict[str, Any], me: str | None = None) -> str:
    forked = trade.get("forked", [])
    return "; ".join(
        f"{peer_cell(leg['from'], forked, me)} -> {peer_cell(leg['to'], forked, me)}: {items_text(leg['items'])}"
        for leg in trade["legs"]
    )


def _me(client: ApiClient) -> str:
    return str(client.status()["peer_id"])


def _trade_summary(verb: str, trade: dict[str, Any]) -> str:
    waiting = [p for p in trade["parties"] if p not in trade["signed_by"]]
    if trade["state"] == "pending":
        who = ", ".join(short_peer(p) for p in waiting)
        then = f"waiting for {who} to sign, deadline {relative(trade['deadline'])}"
    else:
        then = state_text(trade)
    return f"{verb} trade {short(trade['id'])}: {then}"


# --- offers ---


@click.command("offer")
@click.argument("listing_id", metavar="LISTING")
@click.option("--give", multiple=True, required=True, metavar=_ITEM_META, help="What you give, repeatable.")
@click.option(
    "--take",
    multiple=True,
    metavar=_ITEM_META,
    help="What you take out of the listing, repeatable [default: all of it].",
)
@click.option("--expires", metavar="WHEN", help="1d, 12h, 30m, Unix seconds or an ISO date [default: 1d].")
@click.option("--note", default="", help="A message to the listing's author.")
@json_option
@pass_app
def offer(
    app: App,
    listing_id: str,
    give: tuple[str, ...],
    take: tuple[str, ...],
    expires: str | None,
    note: str,
    as_json: bool,
) -> None:
    """Offer something for (part of) a listing; the offer goes to the listing's author.

    Example: swapmeet offer 3f2a9c1b7d0e --give "3 kg x apples" --take "1 x road bike" --expires 12h
    """
    spec: dict[str, Any] = {
        "listing": check_id(listing_id, "LISTING"),
        "give": parse_items(give, "--give"),
        "take": parse_items(take, "--take") if take else None,
        "expires_in_s": parse_in_s(expires, "--expires") if expires is not None else None,
        "note": note,
    }
    made = app.client().make_offer(spec)
    if as_json:
        print_json(made)
        return
    click.echo(f"offer {short(made['id'])} sent to {short_peer(made['to'])} (expires {relative(made['expires'])})")


@click.command("offers")
@click.option("--incoming", "direction", flag_value="incoming", help="Only offers to you.")
@click.option("--outgoing", "direction", flag_value="outgoing", help="Only offers you made.")
@json_option
@pass_app
def offers(app: App, direction: str | None, as_json: bool) -> None:
    """List the offers you made and received (counter-offers too), newest first."""
    client = app.client()
    found = client.offers(direction)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no offers")
        return
    forked = forked_peers(client)
    me = _me(client)
    now = time.time()
    rows = [
        [
            short(o["id"]),
            short(o["listing"]),
            peer_cell(o["from"], forked, me),
            items_text(o["give"]),
            items_text(o["take"]),
            o["state"] + (" (counter)" if o.get("counters") else ""),
            relative(o["expires"], now),
        ]
        for o in found
    ]
    print_table(["ID", "LISTING", "FROM", "GIVE", "TAKE", "STATE", "EXPIRES"], rows)


@click.command("accept")
@click.argument("offer_id", metavar="OFFER")
@click.option("--deadline", metavar="WHEN", help="Time for every signature, e.g. 10m [default: 10m].")
@json_option
@pass_app
def accept(app: App, offer_id: str, deadline: str | None, as_json: bool) -> None:
    """Accept an offer to you: sign the exchange that settles it; it completes when the other side signs."""
    target = check_id(offer_id, "OFFER")
    deadline_in_s = parse_in_s(deadline, "--deadline") if deadline is not None else None
    trade = app.client().accept(target, deadline_in_s=deadline_in_s)
    if as_json:
        print_json(trade)
        return
    click.echo(_trade_summary(f"accepted offer {short(trade.get('offer') or offer_id)};", trade))


@click.command("decline")
@click.argument("offer_id", metavar="OFFER")
@click.option("--note", default="", help="Why, for the offer's author.")
@json_option
@pass_app
def decline(app: App, offer_id: str, note: str, as_json: bool) -> None:
    """Decline an offer to you (a signed notice to its author)."""
    target = check_id(offer_id, "OFFER")
    notice = app.client().decline(target, note)
    if as_json:
        print_json(notice)
        return
    click.echo(f"declined offer {short(notice['about'])}")


@click.command("counter")
@click.argument("offer_id", metavar="OFFER")
@click.option(
    "--give",
    multiple=True,
    required=True,
    metavar=_ITEM_META,
    help="What the taker gives, repeatable (as in the offer).",
)
@click.option(
    "--take",
    multiple=True,
    required=True,
    metavar=_ITEM_META,
    help="What the taker takes from the listing, repeatable.",
)
@click.option("--expires", metavar="WHEN", help="1d, 12h, 30m, Unix seconds or an ISO date [default: 1d].")
@click.option("--note", default="", help="A message to the offer's author.")
@json_option
@pass_app
def counter(
    app: App, offer_id: str, give: tuple[str, ...], take: tuple[str, ...], expires: str | None, note: str, as_json: bool
) -> None:
    """Answer an offer to you with other terms.

    Terms are always from the taker's side, as in the offer: --give is what the taker gives, --take what
    the taker takes out of the listing (whether you are the listing's author or the taker).
    """
    target = check_id(offer_id, "OFFER")
    spec: dict[str, Any] = {
        "give": parse_items(give, "--give"),
        "take": parse_items(take, "--take"),
        "expires_in_s": parse_in_s(expires, "--expires") if expires is not None else None,
        "note": note,
    }
    made = app.client().counter(target, spec)
    if as_json:
        print_json(made)
        return
    click.echo(
        f"counter-offer {short(made['id'])} sent to {short_peer(made['to'])} (answers {short(made['counters'] or '')})"
    )


@click.command("cancel")
@click.argument("target_id", metavar="ID")
@click.option("--note", default="", help="Why, for the other parties.")
@json_option
@pass_app
def cancel(app: App, target_id: str, note: str, as_json: bool) -> None:
    """Withdraw an open offer you made, or leave a trade you have not signed (ID: offer or trade)."""
    from swapmeet.node.contract import UnknownObject

    target = check_id(target_id, "ID")
    client = app.client()
    try:
        client.trade(target)
    except UnknownObject:
        notice = client.cancel_offer(target, note)  # not a trade of ours: an offer, or the node says what is wrong
    else:
        notice = client.cancel_trade(target, note)
    if as_json:
        print_json(notice)
        return
    if notice.get("about_kind") == "exchange":
        click.echo(f"left trade {short(notice['about'])} (it will not complete)")
    else:
        click.echo(f"cancelled offer {short(notice['about'])}")


# --- trades ---


@click.command("propose")
@click.option(
    "--leg",
    "legs",
    multiple=True,
    required=True,
    metavar="'FROM -> TO: QTY x ITEM'",
    help="Who gives what to whom, repeatable; FROM/TO: me, a PeerID or a hex key.",
)
@click.option("--listing", "listings", multiple=True, metavar="ID", help="A listing the trade draws on, repeatable.")
@click.option("--deadline", metavar="WHEN", help="Time for every signature, e.g. 30m [default: 10m].")
@json_option
@pass_app
def propose(app: App, legs: tuple[str, ...], listings: tuple[str, ...], deadline: str | None, as_json: bool) -> None:
    """Propose a trade between 2 to 8 peers (you among them); you sign first, each other party signs.

    Example (a ring): swapmeet propose --leg "me -> 12D3KooWBob...: 1 x bike"
    --leg "12D3KooWBob... -> 12D3KooWCarol...: 2 h x lessons" --leg "12D3KooWCarol... -> me: 3 kg x apples"
    """
    parsed = [parse_leg(text) for text in legs]
    spec: dict[str, Any] = {
        "legs": parsed,
        "listings": [check_id(x, "--listing") for x in listings],
        "deadline_in_s": parse_in_s(deadline, "--deadline") if deadline is not None else None,
    }
    client = app.client()
    if any("me" in (leg["from"], leg["to"]) for leg in parsed):
        me = _me(client)
        for leg in parsed:
            leg["from"], leg["to"] = (me if p == "me" else p for p in (leg["from"], leg["to"]))
    trade = client.propose(spec)
    if as_json:
        print_json(trade)
        return
    click.echo(_trade_summary("proposed", trade))


@click.command("sign")
@click.argument("exchange_id", metavar="TRADE")
@json_option
@pass_app
def sign(app: App, exchange_id: str, as_json: bool) -> None:
    """Consent to (sign) a trade that waits for your signature."""
    target = check_id(exchange_id, "TRADE")
    trade = app.client().sign(target)
    if as_json:
        print_json(trade)
        return
    click.echo(_trade_summary("signed", trade))


@click.command("trades")
@click.option(
    "--state",
    type=click.Choice(["pending", "complete", "lapsed"]),
    default=None,
    help="Only these: pending (signatures missing), complete, lapsed (cancelled or past the deadline).",
)
@json_option
@pass_app
def trades(app: App, state: str | None, as_json: bool) -> None:
    """List the trades (exchanges) you are a party to, newest first."""
    client = app.client()
    found = client.trades(state)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no trades")
        return
    me = _me(client)
    now = time.time()
    rows = [
        [
            short(t["id"]),
            state_text(t),
            ", ".join(peer_cell(p, t.get("forked", []), me) for p in t["parties"]),
            legs_text(t, me),
            relative(t["deadline"], now) if t["state"] == "pending" else "-",
        ]
        for t in found
    ]
    print_table(["ID", "STATE", "PARTIES", "LEGS", "DEADLINE"], rows)


@click.command("trade")
@click.argument("exchange_id", metavar="TRADE")
@json_option
@pass_app
def trade(app: App, exchange_id: str, as_json: bool) -> None:
    """Show one trade: its parties, legs, signatures and what you did after it completed."""
    target = check_id(exchange_id, "TRADE")
    client = app.client()
    t = client.trade(target)
    if as_json:
        print_json(t)
        return
    me = _me(client)
    forked = t.get("forked", [])
    print_fields(
        [
            ("id", t["id"]),
            ("state", state_text(t)),
            ("parties", [peer_cell(p, forked, me) + ("  signed" if p in t["signed_by"] else "") for p in t["parties"]]),
            (
                "legs",
                [
                    f"{leg['index']}: {peer_cell(leg['from'], forked, me)} -> {peer_cell(leg['to'], forked, me)}:"
                    f" {items_text(leg['items'])}"
                    for leg in t["legs"]
                ],
            ),
            ("deadline", relative(t["deadline"]) if t["state"] != "complete" else "-"),
            ("offer", short(t["offer"]) if t.get("offer") else "-"),
            ("listings", [short(x) for x in t.get("listings", [])]),
            ("confirmed", _legs_text(t.get("confirmed_legs", []))),
            ("rated", ", ".join(peer_cell(p, forked, me) for p in t.get("rated", [])) or "-"),
        ]
    )


def _legs_text(legs: list[int]) -> str:
    if not legs:
        return "-"
    return ("leg " if len(legs) == 1 else "legs ") + ", ".join(str(i) for i in legs)


@click.command("confirm")
@click.argument("exchange_id", metavar="TRADE")
@click.option(
    "--leg", "legs", multiple=True, type=click.IntRange(0), help="Leg index, repeatable [default: every leg to you]."
)
@json_option
@pass_app
def confirm(app: App, exchange_id: str, legs: tuple[int, ...], as_json: bool) -> None:
    """Confirm you received what a complete trade gives you (a receipt on your ledger chain)."""
    target = check_id(exchange_id, "TRADE")
    receipt = app.client().confirm(target, list(legs) or None)
    if as_json:
        print_json(receipt)
        return
    done = ", ".join(str(i) for i in receipt["legs"])
    click.echo(f"confirmed leg{'s' if len(receipt['legs']) > 1 else ''} {done} of trade {short(receipt['exchange'])}")


@click.command("rate")
@click.argument("exchange_id", metavar="TRADE")
@click.option("--score", type=int, required=True, help="1 (bad) to 5 (excellent).")
@click.option("--subject", default=None, metavar="PEER", help="Whom you rate (needed with 3+ parties).")
@click.option("--comment", default="", help="A few words.")
@json_option
@pass_app
def rate(app: App, exchange_id: str, score: int, subject: str | None, comment: str, as_json: bool) -> None:
    """Rate a counterparty of a complete trade (a rating on your ledger chain)."""
    target = check_id(exchange_id, "TRADE")
    check_score(score)
    if subject is not None:
        from swapmeet.node.contract import parse_author

        parse_author(subject, "--subject")
    rating = app.client().rate(target, score, subject=subject, comment=comment)
    if as_json:
        print_json(rating)
        return
    click.echo(f"rated {short_peer(rating['subject'])} {rating['score']}/5 for trade {short(rating['exchange'])}")


COMMANDS = [offer, offers, accept, decline, counter, cancel, propose, sign, trades, trade, confirm, rate]
