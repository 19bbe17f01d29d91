"""The web UI over a real hypercorn socket against the API tests' in-memory fake node: security, pages, forms, SSE.

The security tests are one each: no session without the one-time token; a reused token is refused; a
cross-site POST is refused (Origin, Sec-Fetch-Site, missing CSRF token); a foreign Host header is
refused; the CSP header is present and the pages need no inline script; the API's bearer token still
works for the CLI, and neither the API nor the UI is reachable with the other's credential.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from PIL import Image
from swapmeet.node import cookie
from swapmeet.node.http.app import create_app
from swapmeet.node.http.server import serve_api
from swapmeet.node.ui.guard import CSP
from swapmeet.protocol.build import parse_item
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.listing_spec import ListingSpec

from .test_api import BOB, LIMIT_S, FakeNode, listing_of, offer_from
from .ui_helpers import UiClient


@asynccontextmanager
async def ui(node: FakeNode) -> AsyncIterator[UiClient]:
    token = cookie.new_token()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_api, create_app(node, node, token), port=0))
        yield UiClient(port, token)
        nursery.cancel_scope.cancel()


async def run(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    return await trio.to_thread.run_sync(partial(fn, *args, **kwargs))


def jpeg_with_gps(size: tuple[int, int] = (2400, 1800)) -> bytes:
    """A camera-like JPEG: large, with EXIF (make, GPS position)."""
    img = Image.new("RGB", size, (200, 120, 40))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    gps = {1: "N", 2: (52.0, 22.0, 1.0), 3: "E", 4: (4.0, 53.0, 2.0)}
    exif[0x8825] = gps  # GPSInfo
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif.tobytes(), quality=95)
    return out.getvalue()


def assert_every_control_is_labelled(html: str, where: str) -> None:
    """Every visible input, select and textarea has an id a <label for=...> names (or sits inside a label)."""
    labelled = set(re.findall(r'<label for="([^"]+)"', html))
    for tag in re.finditer(r"<(input|select|textarea)\b([^>]*)>", html):
        attrs = tag.group(2)
        if 'type="hidden"' in attrs or 'type="radio"' in attrs:
            continue  # radios sit inside their label
        found = re.search(r'\bid="([^"]+)"', attrs)
        assert found and found.group(1) in labelled, (where, tag.group(0))


# --- security ---


async def test_no_session_without_the_one_time_token(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with ui(FakeNode()) as c:
            for path in ("/ui/market", "/ui/trades", "/ui/events", "/ui/ledger", "/ui/nope"):
                answer = await run(c.get, path)
                assert answer.status == 303 and answer.headers["location"] == "/ui/login", path
            answer = await run(c.post_form, "/ui/mine", {"title": "x"}, csrf=False)
            assert answer.status == 401
            for token in ("", "guess", "x" * 43):
                answer = await run(c.post_form, "/ui/login", {"token": token}, csrf=False)
                assert answer.status == 403 and not answer.cookies
            answer = await run(c.get, "/ui/login")  # the login page itself needs no session
            assert answer.status == 200 and "login.js" in answer.text


async def test_the_login_token_is_single_use_and_the_cookie_is_locked_down(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with ui(FakeNode()) as c:
            token = await run(c.mint)
            first = await run(c.post_form, "/ui/login", {"token": token}, csrf=False)
            assert first.status == 303 and first.headers["location"] == "/ui/market"
            set_cookie = first.cookies[0]
            assert set_cookie.startswith(f"swapmeet_ui_{c.port}=")
            attrs = {a.strip().lower() for a in set_cookie.split(";")[1:]}
            assert {"httponly", "samesite=strict", "path=/ui"} <= attrs
            again = await run(c.post_form, "/ui/login", {"token": token}, csrf=False)
            assert again.status == 403 and not again.cookies and "already used" in again.text
            c.cookie = set_cookie.split(";", 1)[0]
            assert (await run(c.get, "/ui/market")).status == 200


async def test_a_cross_site_post_is_refused(tmp_path: Path) -> None:
    node = FakeNode()
    with trio.fail_after(LIMIT_S):
        async with ui(node) as c:
            await run(c.login)
            listing = await node.publish(_spec("Lamp"))
            path = f"/ui/listings/{listing.id.hex()}/withdraw"
            evil = {"Origin": "http://evil.example"}
            assert (await run(c.post_form, path, {}, headers=evil)).status == 403
            cross = {"Sec-Fetch-Site": "cross-site"}
            assert (await run(c.post_form, path, {}, headers=cross)).status == 403
            assert (await run(c.post_form, path, {}, csrf=False)).status == 403  # no CSRF token
            assert (await run(c.post_form, path, {"csrf": "wrong"})).status == 403
            assert listing.series not in node.withdrawn  # none of those did anything
            done = await run(c.post_form, path, {}, headers={"Sec-Fetch-Site": "same-origin"})
            assert done.status == 303 and listing.series in node.withdrawn
            # htmx sends the token in a header instead
            other = await node.publish(_spec("Desk"))
            headers = {"X-CSRF-Token": c.csrf or "", "Origin": f"http://127.0.0.1:{c.port}"}
            answer = await run(c.request, "POST", f"/ui/listings/{other.id.hex()}/withdraw", body=b"", headers=headers)
            assert answer.status == 303


async def test_a_foreign_host_header_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with ui(FakeNode()) as c:
            await run(c.login)
            for host in ("evil.example", f"evil.example:{c.port}", "127.0.0.1", f"127.0.0.1:{c.port + 1}"):
                answer = await run(c.get, "/ui/market", host=host)
                assert answer.status == 421, host
            assert (await run(c.get, "/ui/market", host=f"localhost:{c.port}")).status == 200
            assert (await run(c.get, "/ui/login", host="rebound.example")).status == 421  # before any session


async def test_the_csp_header_is_present_and_pages_need_no_inline_script(tmp_path: Path) -> None:
    node = FakeNode()
    node.add(listing_of(BOB, "Ladder"))
    with trio.fail_after(LIMIT_S):
        async with ui(node) as c:
            assert (await run(c.get, "/ui/login")).headers["content-security-policy"] == CSP
            await run(c.login)
            assert "'unsafe-inline'" not in CSP and "http" not in CSP and "script-src 'self'" in CSP
            for path in (
                "/ui/market",
                "/ui/mine",
                "/ui/trades",
                "/ui/matches?run=1",
                "/ui/ledger",
                "/ui/network",
                "/ui/audit",
            ):
                answer = await run(c.get, path)
                assert answer.status == 200, (path, answer.text)
                assert answer.headers["content-security-policy"] == CSP
                assert answer.headers["x-content-type-options"] == "nosniff"
                assert answer.headers["referrer-policy"] == "same-origin"
                assert not re.search(r"<script(?![^>]*\bsrc=)", answer.text), path  # no inline script
                assert not re.search(r"\son[a-z]+=", answer.text), path  # no inline event handlers
                assert not re.search(r"\sstyle=", answer.text), path  # no inline styles (CSP refuses them)
                assert not re.search(r'(src|href|action)="(https?:)?//', answer.text), path  # nothing outside
                assert_every_control_is_labelled(answer.text, path)
            static = await run(c.get, "/ui/static/htmx.min.js")
            assert static.status == 200 and static.headers["content-security-policy"] == CSP


async def test_the_api_token_still_works_and_the_guards_never_cross(tmp_path: Path) -> None:
    node = FakeNode()
    with trio.fail_after(LIMIT_S):
        async with ui(node) as c:
            await run(c.login)
            # the API: the bearer token, as before; a UI session cookie is no credential there
            assert (await run(c.api, "GET", "/v1/status")).status == 200
            for path in ("/v1/status", "/openapi.json", "/", "/uix"):
                answer = await run(c.request, "GET", path)  # the session cookie only
                assert answer.status == 401, path
            # the UI: the session cookie; the bearer token is no credential there
            answer = await run(c.api, "GET", "/ui/market")
            assert answer.status == 303 and answer.headers["location"] == "/ui/login"
            answer = await run(c.api, "POST", "/ui/mine", body=b"title=x")
            assert answer.status == 401
            assert (await run(c.api, "POST", "/v1/ui/token", token=None)).status == 401  # minting needs the token
            # and the CLI's own client still works
            from swapmeet.cli.client import ApiClient
            from swapmeet.node.home import Home

            home = Home(tmp_path / "home")
            cookie.write_cookie(home, c.port, c.api_token)
            status = await run(ApiClient.for_home(home, timeout=5).status)
            assert status["net"] == "test"


# --- pages and forms ---


def _spec(title: str, **kw):  # type: ignore[no-untyped-def]
    from swapmeet.protocol.build import parse_item
    from swapmeet.protocol.listing_spec import ListingSpec

    return ListingSpec(title=title, have=[parse_item("1 x thing")], **kw)


async def test_publish_with_a_photo_from_the_form_strips_its_metadata(tmp_path: Path) -> None:
    node = FakeNode()
    with trio.fail_after(LIMIT_S):
        async with ui(node) as c:
            await run(c.login)
            fields = {
                "title": "Cargo bike",
                "type": "goods",
                "have": "1 x cargo bike",
                "want": "5 kg x jam",
                "tags": "bikes cargo",
                "loc": "u33db",
                "expires": "3d",
            }
            answer = await run(c.post_multipart, "/ui/mine", fields, [("photos", "bike.jpg", jpeg_with_gps())])
            assert answer.status == 303, answer.text
            [listing] = await node.listings()
            assert listing.title == "Cargo bike" and len(listing.photos) == 1 and listing.loc == "u33db"
            assert listing.expires - listing.created == 3 * 86_400
            photo = await run(c.get, f"/ui/photos/{listing.photos[0].hex()}")
            assert photo.status == 200 and photo.headers["content-type"] == "image/jpeg"
            img = Image.open(io.BytesIO(photo.body))
            assert max(img.size) <= 1600 and len(photo.body) <= 300 * 1024
            assert not img.getexif() and b"PhoneMaker" not in photo.body and "exif" not in img.info
            market = await run(c.get, "/ui/market?tag=bikes&loc=u33")
            assert "Cargo bike" in market.text and "1 photo" in market.text
            assert "Cargo bike" not in (await run(c.get, "/ui/market?loc=u0")).text


async def test_publish_errors_are_shown_next_to_their_field(tmp_path: Path) -> None:
    node = FakeNode()
    with trio.fail_after(LIMIT_S):
        async with ui(node) as c:
            await run(c.login)
            bad = {"title": "Mower", "type": "rental", "have": "1 x mower"}  # a rental needs a window
            answer = await run(c.post_multipart, "/ui/mine", bad, [])
            assert answer.status == 400
            assert re.search(r'id="e-window"[^>]*>[^<]*rental needs a time window', answer.text), answer.text
            bad = {"title": "Mower", "have": "one mower"}
            answer = await run(c.post_multipart, "/ui/mine", bad, [])
            assert answer.status == 400 and 'id="e-have"' in answer.text and "QTY x ITEM" in answer.text
            assert 'value="Mower"' in answer.text  # what was typed stays
            not_an_image = await run(
                c.post_multipart, "/ui/mine", {"title": "X", "have": "1 x y"}, [("photos", "notes.txt", b"just text")]
            )
            assert not_an_image.status == 400 and 'id="e-photos"' in not_an_image.text
            assert await node.listings() == []


async def test_replace_publishes_the_next_version(tmp_path: Path) -> None:
    node = FakeNode()
    with trio.fail_after(LIMIT_S):
        async with ui(node) as c:
            await run(c.login)
            old = await node.publish(_spec("Lamp"))
            form = await run(c.get, f"/ui/mine/{old.id.hex()}/replace")
            assert form.status == 200 and 'value="Lamp"' in form.text and old.id.hex() in form.text
            fields = {"title": "Lamp (brass)", "have": "1 x lamp", "replaces": old.id.hex()}
            assert (await run(c.post_multipart, "/ui/mine", fields, [])).status == 303
            [new] = await node.listings()
            assert new.title == "Lamp (brass)" and new.series == old.series and new.rev == 1


async def test_offers_and_trades_from_the_pages(tmp_path: Path) -> None:
    node = FakeNode()
    with trio.fail_after(LIMIT_S):
        async with ui(node) as c:
            await run(c.login)
            mine = await node.publish(_spec("Bike"))
            offer = offer_from(node, BOB, mine, give="3 kg x apples", take="1 x thing")
            page = await run(c.get, "/ui/trades")
            assert "Offers to me" in page.text and offer.id.hex() in page.text and "Accept offer" in page.text
            answer = await run(c.post_form, f"/ui/offers/{offer.id.hex()}/accept", {})
            assert answer.status == 303
            [trade] = await node.trades()
            part = await run(c.get, f"/ui/trades/{trade.view.exchange.id.hex()}")
            assert part.status == 200 and "Signatures" in part.text and "not signed yet" in part.text
            bad = await run(c.post_form, f"/ui/offers/{offer.id.hex()}/accept", {})
            assert bad.status == 409  # the node's refusal, as a page


async def test_the_matches_page_finds_the_ring_through_me_and_proposes_it(tmp_path: Path) -> None:
    node = FakeNode()
    me = node.identity.public_key
    # Two others whose keys sort after mine: this node coordinates the ring (PROTOCOL.md 10.10).
    others = []
    while len(others) < 2:
        candidate = Identity.generate()
        if candidate.public_key > me:
            others.append(candidate)
    with trio.fail_after(LIMIT_S):
        async with ui(node) as c:
            await run(c.login)
            page = await run(c.get, "/ui/matches")
            assert page.status == 200 and "Find rings" in page.text and "Rings through me" not in page.text
            assert_every_control_is_labelled(page.text, "/ui/matches")
            await node.publish(ListingSpec(title="Tent", have=[parse_item("1 x tent")], want=[parse_item("1 x kayak")]))
            node.add(listing_of(others[0], "Kayak", "1 x kayak", "2 hour x guitar lessons"))
            page = await run(c.get, "/ui/matches?run=1&max_parties=3")
            assert page.status == 200 and "No ring through you" in page.text  # two of three are not a ring
            node.add(listing_of(others[1], "Lessons", "2 hour x guitar lessons", "1 x tent"))
            page = await run(c.get, "/ui/matches?run=1&max_parties=3")
            assert "Ring 1: 3 people" in page.text and "You coordinate this ring" in page.text
            assert "Kayak" in page.text and "1 x tent" in page.text and "Propose the rings I coordinate" in page.text
            bad = await run(c.get, "/ui/matches?run=1&max_parties=9")
            assert bad.status == 400 and "max_parties" in bad.text
            assert (await run(c.post_form, "/ui/matches/propose", {"max_parties": "3"}, csrf=False)).status == 403
            answer = await run(c.post_form, "/ui/matches/propose", {"max_parties": "3"})
            assert answer.status == 303 and "proposed=1" in answer.headers["location"]
            [trade] = await node.trades()
            assert len(trade.view.exchange.parties) == 3 and len(trade.view.exchange.legs) == 3
            page = await run(c.get, answer.headers["location"])
            assert "1 ring proposed" in page.text


async def test_the_event_stream_tells_of_new_listings(tmp_path: Path) -> None:
    node = FakeNode()
    with trio.fail_after(LIMIT_S):
        async with ui(node) as c:
            await run(c.login)
            got: list[bytes] = []

            def listen() -> None:
                import http.client

                conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
                conn.request("GET", "/ui/events", headers={"Cookie": c.cookie or "", "Host": f"127.0.0.1:{c.port}"})
                resp = conn.getresponse()
                assert resp.status == 200 and resp.getheader("content-type", "").startswith("text/event-stream")
                while not re.search(rb"event: listing\ndata: [0-9a-f]{64}\n", b"".join(got)):
                    got.append(resp.fp.readline())
                conn.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(trio.to_thread.run_sync, listen, abandon_on_cancel=True))
                while node.events.subscribers == 0:
                    await trio.sleep(0.01)
                listing = listing_of(BOB, "Fresh")
                node.add(listing)
            stream = b"".join(got)
            # first a resync: the page re-reads what changed between its rendering and the stream opening
            assert re.findall(rb"event: (\w+)", stream)[0] == b"resync", stream[:60]
            assert f"data: {listing.id.hex()}".encode() in stream


async def test_the_audit_runs_with_progress_and_shows_its_result(tmp_path: Path) -> None:
    node = FakeNode()
    with trio.fail_after(LIMIT_S):
        async with ui(node) as c:
            await run(c.login)
            assert "No audit has run" in (await run(c.get, "/ui/audit")).text
            assert (await run(c.post_form, "/ui/audit", {})).status == 303
            deadline = time.monotonic() + 10
            while "Clean" not in (page := await run(c.get, "/ui/audit/part")).text:
                assert time.monotonic() < deadline, page.text
                await trio.sleep(0.05)
            assert (await run(c.get, "/ui/audit/proof/0")).status == 404


async def test_photo_upload_through_the_api(tmp_path: Path) -> None:
    node = FakeNode()
    with trio.fail_after(LIMIT_S):
        async with ui(node) as c:
            answer = await run(c.api, "POST", "/v1/photos", body=jpeg_with_gps((800, 600)))
            assert answer.status == 201, answer.text
            out = json.loads(answer.body)
            assert len(out["hash"]) == 64 and 0 < out["bytes"] <= 300 * 1024
            refused = await run(c.api, "POST", "/v1/photos", body=b"<html>not an image</html>")
            assert refused.status == 400 and json.loads(refused.body)["path"] == "photo"
            body = json.dumps({"title": "Pic", "have": ["1 x pic"], "photos": [out["hash"]]}).encode()
            assert (await run(c.api, "POST", "/v1/listings", body=body)).status == 201
            unknown = json.dumps({"title": "Pic", "have": ["1 x pic"], "photos": ["ab" * 32]}).encode()
            answer = await run(c.api, "POST", "/v1/listings", body=unknown)
            assert answer.status == 400 and "photos[0]" in answer.text


@pytest.mark.parametrize("size", [(40, 30), (5000, 100)])
def test_reencode_bounds_any_image(size: tuple[int, int]) -> None:
    from swapmeet.node.imaging import MAX_BYTES, MAX_SIDE, reencode

    out = reencode(jpeg_with_gps(size))
    img = Image.open(io.BytesIO(out))
    assert img.format == "JPEG" and max(img.size) <= MAX_SIDE and len(out) <= MAX_BYTES and not img.getexif()


async def test_swapmeet_ui_prints_a_login_url_that_works_once(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from swapmeet.cli.main import cli
    from swapmeet.node.home import Home

    with trio.fail_after(LIMIT_S):
        async with ui(FakeNode()) as c:
            home = Home(tmp_path / "home")
            cookie.write_cookie(home, c.port, c.api_token)
            result = await run(CliRunner().invoke, cli, ["--home", str(home.root), "ui", "--print-url"])
            assert result.exit_code == 0, result.output
            url = result.output.strip()
            assert re.fullmatch(rf"http://127\.0\.0\.1:{c.port}/ui/login#[A-Za-z0-9_-]{{40,}}", url)
            token = url.split("#")[1]
            assert (await run(c.post_form, "/ui/login", {"token": token}, csrf=False)).status == 303
            assert (await run(c.post_form, "/ui/login", {"token": token}, csrf=False)).status == 403
