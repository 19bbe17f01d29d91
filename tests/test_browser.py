"""The web UI in a real browser: two real nodes, two people, headless Chromium (Debian's) driven by Playwright.

Alice publishes a listing with a photo through her UI; Bob, whose market page is open, sees it appear
without reloading (Server-Sent Events), with the photo his node fetched from hers and checked by hash;
Bob offers through his UI; Alice, whose trades page is open, sees the offer appear and accepts it;
both see the trade complete; Bob confirms and rates. Then the ledger (with an audit) and the network
pages. A screenshot of every page goes to ``artifacts/browser/`` (gitignored); with
``SWAPMEET_DOCS_SCREENSHOT=1`` the market page is also written to ``docs/market.png`` for the README.

Playwright's own browser download cannot work here: it is pointed at ``/usr/bin/chromium``
(``tests/system_setup.py`` installs it with apt where it can). When no browser can be found the
test skips with one reason. Every wait is bounded; the nodes and the browser are always stopped.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from swapmeet.cli.localswarm import LocalSwarm

from bench.support.browser import CHROMIUM_ARGS

from .system_setup import find_chromium

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "browser"
LIVE_S = 20_000  # ms: gossip, a photo fetch and an SSE push, on a busy 2-core machine
STEP_S = 15_000


def _browser_or_skip() -> str:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found (install Debian's with `apt-get install -y chromium`; tests/system_setup.py)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[test]')")
    return chromium


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[LocalSwarm]:
    with LocalSwarm(2, net=f"ui-{secrets.token_hex(4)}", base_dir=tmp_path / "swarm", seed=5) as local:
        local.wait_connected(30)
        yield local


def bench_photo(path: Path) -> Path:
    """A picture of a green bench, as a phone would save it (big, with EXIF)."""
    img = Image.new("RGB", (2000, 1500), (170, 205, 235))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 1000, 2000, 1500), fill=(90, 150, 70))
    draw.rectangle((400, 700, 1600, 800), fill=(40, 110, 60))
    draw.rectangle((400, 560, 1600, 640), fill=(40, 110, 60))
    for x in (450, 1500):
        draw.rectangle((x, 800, x + 60, 1100), fill=(60, 60, 60))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    img.save(path, "JPEG", quality=92, exif=exif.tobytes())
    return path


def test_two_people_trade_through_their_web_interfaces(swarm: LocalSwarm, tmp_path: Path) -> None:
    chromium = _browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    photo = bench_photo(tmp_path / "bench.jpg")
    alice_url = swarm.client(0).ui_token()["url"]
    bob_url = swarm.client(1).ui_token()["url"]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            # two people, two browser profiles (each its own cookie jar), a phone-sized and a laptop screen
            alice = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
            bob = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
            for page in (alice, bob):
                page.set_default_timeout(STEP_S)
            shot = _screenshots(tmp_path)

            # logging in: the one-time token goes from the fragment to a cookie and out of the address bar
            alice.goto(alice_url)
            expect(alice).to_have_url(f"{alice_url.split('/ui/')[0]}/ui/market")
            bob.goto(bob_url)
            expect(bob.get_by_role("heading", name="Market")).to_be_visible()
            assert "#" not in bob.url

            # Alice publishes with a photo; Bob's open market page shows it without a reload
            alice.get_by_role("link", name="My listings").click()
            alice.get_by_label("Title (required)").fill("Garden bench")
            alice.get_by_label("Have (required)").fill("1 x garden bench")
            alice.get_by_label("Want").fill("2 kg x honey")
            alice.get_by_label("Desc").fill("Oak slats, green paint, a bit weathered.")
            alice.get_by_label("Tag").fill("garden furniture")
            alice.get_by_label("Loc").fill("u33db")
            alice.get_by_label("Photo").set_input_files(str(photo))
            alice.get_by_role("button", name="Publish").click()
            expect(alice.get_by_role("link", name="Garden bench")).to_be_visible()
            shot(alice, "alice-my-listings")

            row = bob.locator("li.listing", has_text="Garden bench")
            expect(row).to_be_visible(timeout=LIVE_S)
            expect(row).to_contain_text("1 photo")
            thumb = row.locator("img.thumb")
            expect(thumb).to_be_visible(timeout=LIVE_S)
            bob.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle(), timeout=LIVE_S
            )
            # two more of Alice's, through her node's API (as `swapmeet publish` does): they arrive live too
            alice_api = swarm.client(0)
            alice_api.publish(
                {
                    "title": "Sourdough starter",
                    "have": ["1 x sourdough starter"],
                    "want": ["1 x jam jar"],
                    "tags": ["baking"],
                    "loc": "u33dc",
                }
            )
            alice_api.publish(
                {
                    "title": "Bike repair at your door",
                    "type": "service",
                    "have": ["2 hour x bike repair"],
                    "want": ["3 kg x apples"],
                    "tags": ["bikes"],
                }
            )
            expect(bob.locator("li.listing")).to_have_count(3, timeout=LIVE_S)
            shot(bob, "bob-market", docs=True)

            # Alice keeps her trades page open; Bob offers through his listing page
            alice.get_by_role("link", name="Offers and trades").click()
            bob.get_by_role("link", name="Garden bench").click()
            expect(bob.get_by_role("heading", name="Make an offer")).to_be_visible()
            shot(bob, "bob-listing")
            bob.get_by_label("What you give").fill("2 kg x honey")
            bob.get_by_role("button", name="Offer").click()
            expect(bob.get_by_role("heading", name="My offers")).to_be_visible()

            accept = alice.get_by_role("button", name="Accept offer")
            expect(accept).to_be_visible(timeout=LIVE_S)  # arrived live
            shot(alice, "alice-offer-arrived")
            accept.click()
            expect(alice.locator("li.trade.state-complete")).to_be_visible(timeout=LIVE_S)
            shot(alice, "alice-trades")

            # Bob's node countersigned by itself: his page shows the trade complete; he confirms and rates
            bob.get_by_role("link", name="Offers and trades").click()
            done = bob.locator("li.trade.state-complete")
            expect(done).to_be_visible(timeout=LIVE_S)
            done.get_by_role("link").first.click()
            expect(bob.locator(".trade-page .state")).to_have_text("complete")
            expect(bob.locator(".parties li", has_text="not signed")).to_have_count(0)
            bob.get_by_role("button", name="Confirm I received it").click()
            expect(bob.get_by_text("received (confirmed)")).to_be_visible()
            bob.get_by_label("Comment").fill("Bench as described.")
            bob.get_by_role("button", name="Rate").click()
            expect(bob.get_by_text("Rated.")).to_be_visible()
            shot(bob, "bob-trade")

            # the ledger, an audit, the network
            bob.get_by_role("link", name="Ledger and audit").click()
            expect(bob.locator("li.entry")).to_have_count(3)  # the exchange, the receipt, the rating
            shot(bob, "bob-ledger")
            bob.get_by_role("button", name="Run an audit").click()
            expect(bob.get_by_text("Clean")).to_be_visible(timeout=LIVE_S)
            shot(bob, "bob-audit")
            alice.get_by_role("link", name="Network").click()
            expect(alice.get_by_text("Peers connected")).to_be_visible()
            shot(alice, "alice-network")
            alice.get_by_role("link", name="Matches").click()
            alice.get_by_role("button", name="Find rings").click()
            expect(alice.get_by_role("heading", name="Rings through me")).to_be_visible(timeout=LIVE_S)
            shot(alice, "alice-matches")

            # usable on a phone: the market page at 390 px wide, navigated by keyboard
            phone = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
            phone.goto(swarm.client(1).ui_token()["url"])
            expect(phone.get_by_role("link", name="Garden bench")).to_be_visible()
            phone.keyboard.press("Tab")
            assert phone.evaluate("document.activeElement.textContent") == "Skip to content"
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the market page scrolls sideways on a phone ({width} px)"
            shot(phone, "phone-market")
        finally:
            browser.close()


def _screenshots(tmp_path: Path):  # type: ignore[no-untyped-def]
    def shot(page, name: str, docs: bool = False) -> None:  # type: ignore[no-untyped-def]
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if docs and os.environ.get("SWAPMEET_DOCS_SCREENSHOT") == "1":
            page.screenshot(path=str(ROOT / "docs" / "market.png"))
        assert path.stat().st_size > 0

    return shot


def test_browser_helpers_are_sane(tmp_path: Path) -> None:
    """The picture uploaded above is a real JPEG with EXIF (so the test shows the node strips it)."""
    path = bench_photo(tmp_path / "b.jpg")
    img = Image.open(io.BytesIO(path.read_bytes()))
    assert img.format == "JPEG" and img.getexif()
    assert shutil.which("python") or True
