"""One listing shape: the builder, the API's models, the JSON view and ``swapmeet publish`` all follow ListingSpec."""

from __future__ import annotations

import time
from dataclasses import fields

from swapmeet.cli.listing_options import listing_body
from swapmeet.cli.node_cmds import publish
from swapmeet.node import jsonview
from swapmeet.node.http.models import ListingIn, ListingOut
from swapmeet.protocol.build import make_listing, parse_item, sign_listing
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.listing_spec import CONTENT_FIELDS, ITEM_FIELDS, ListingSpec

ALICE = Identity(b"\x01" * 32)


def test_every_layer_has_every_field() -> None:
    spec_fields = [f.name for f in fields(ListingSpec)]
    assert list(ListingIn.model_fields) == spec_fields  # the request: every field, expiry included
    assert [n for n in ListingOut.model_fields if n in CONTENT_FIELDS] == list(CONTENT_FIELDS)
    options = {p.name for p in publish.params}
    assert set(CONTENT_FIELDS) | {"expires"} <= options
    assert ITEM_FIELDS == ("have", "want")


def test_a_spec_signs_renders_and_round_trips_through_the_cli_body() -> None:
    now = int(time.time())
    spec = ListingSpec(
        title="Mower",
        type="rental",
        have=(parse_item("1 x mower"),),
        want=(parse_item("2 kg x apples"),),
        tags=("garden",),
        window=(now + 60, now + 3600),
        loc="u0yj",
        expires_in_s=86_400,
    )
    listing = sign_listing(ALICE, spec, created=now)
    assert listing.expires == now + 86_400
    rendered = jsonview.listing(listing)
    assert ListingOut.model_validate(rendered).model_dump(exclude_unset=False)["window"] == [now + 60, now + 3600]
    assert {n: rendered[n] for n in ("title", "type", "tags", "loc", "due")} == {
        "title": "Mower",
        "type": "rental",
        "tags": ["garden"],
        "loc": "u0yj",
        "due": None,
    }
    # What `swapmeet publish` sends for the same listing is a valid request that means the same thing.
    values = {
        "title": "Mower",
        "type": "rental",
        "have": ("1 x mower",),
        "want": ("2 kg x apples",),
        "desc": "",
        "tags": ("garden",),
        "category": "",
        "window": f"{now + 60}..{now + 3600}",
        "due": None,
        "loc": "u0yj",
        "expires": "1d",
    }
    body = ListingIn.model_validate(listing_body(values, now))
    assert body.expires_in_s == 86_400 and body.window == (now + 60, now + 3600)
    assert [i.model_dump() for i in body.have] == [{"item": "mower", "qty": 1, "unit": "pc"}]
    assert [i.model_dump() for i in body.want] == [{"item": "apples", "qty": 2, "unit": "kg"}]


def test_make_listing_is_the_same_listing_as_sign_listing() -> None:
    now = 1_700_000_000
    series = b"\x07" * 16
    a = make_listing(ALICE, title="Lamp", have=[parse_item("1 x lamp")], created=now, expires=now + 60, series=series)
    b = sign_listing(
        ALICE, ListingSpec(title="Lamp", have=(parse_item("1 x lamp"),)), created=now, expires=now + 60, series=series
    )
    assert a.raw == b.raw
