"""Web UI benchmark: a node with a 10k-listing book, its market page and search in headless Chromium, live delay.

One real node (``swapmeet node run``) whose offer book holds 10,000 signed listings (built before
it starts, as ``bench/swarm.py`` does). Figures:

- ``market`` / ``search``: server time of ``GET /ui/market`` and of a full-text search
  (``/ui/market?q=...``), measured from this process over loopback (request sent to last byte), p50/p95;
- ``browser_market`` / ``browser_search``: in headless Chromium (Debian's), time to first byte
  (``responseStart``) and to a rendered page (``loadEventEnd``), from the Navigation Timing API;
- ``live``: from a listing's arrival at the node (its publish call through the local API, which
  stores it and tells the event feed, the path gossip and sync take from ``BookIngest``) to its
  appearance on an open market page (Server-Sent Event, htmx re-fetches the rows, the DOM changes).

Goals: market page and search under 200 ms of server time; a new listing on an open page within 1 s.

Run: ``python bench/ui.py [--quick]`` (``--quick``: fewer samples, under 60 s on 2 cores; the book
is 10k either way). Needs Chromium (``apt-get install -y chromium``) and Playwright for Python; without
them the browser figures are null and it says why. The last line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.benchkit import loadavg, run_bench, summary
from support.books import build_book, prepare_homes
from support.browser import CHROMIUM_ARGS
from swapmeet.cli.localswarm import LocalSwarm

T0 = time.monotonic()
BOOK = 10_000
GOAL_SERVER_MS = 200
GOAL_LIVE_MS = 1000


def say(text: str) -> None:
    print(text, flush=True)


def login(port: int, token_url: str) -> str:
    """A session cookie for the UI (as the login page's form post gets it)."""
    token = token_url.split("#", 1)[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST",
        "/ui/login",
        body=f"token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Host": f"127.0.0.1:{port}"},
    )
    resp = conn.getresponse()
    resp.read()
    conn.close()
    if resp.status != 303:
        raise RuntimeError(f"login failed: HTTP {resp.status}")
    return resp.getheader("set-cookie", "").split(";", 1)[0]


def server_times(port: int, cookie: str, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        t = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": cookie, "Host": f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        body = resp.read()
        out.append(time.perf_counter() - t)
        conn.close()
        if resp.status != 200 or b"listing" not in body:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}")
    return out


def browser_figures(swarm: LocalSwarm, n: int, live_n: int) -> dict[str, Any]:
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"browser": "Playwright for Python is not installed"}
    if chromium is None:
        return {"browser": "no Chromium (apt-get install -y chromium)"}
    f: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(15_000)
            page.goto(swarm.client(0).ui_token()["url"])
            page.wait_for_url("**/ui/market")
            base = page.url.split("/ui/")[0]
            for name, path in (("browser_market", "/ui/market"), ("browser_search", "/ui/market?q=drill")):
                ttfb, rendered = [], []
                for _ in range(n):
                    page.goto(base + path, wait_until="load")
                    timing = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
                    nav = json.loads(timing)
                    ttfb.append((nav["responseStart"] - nav["requestStart"]) / 1000)
                    rendered.append((nav["loadEventEnd"] - nav["startTime"]) / 1000)
                f[name] = {"ttfb": summary(ttfb), "rendered": summary(rendered)}
            f["live"] = live_delays(swarm, page, base, live_n)
        finally:
            browser.close()
    return f


def live_delays(swarm: LocalSwarm, page: Any, base: str, n: int) -> dict[str, Any]:
    """Publish through the node's API while the market page is open; time until the title is in the DOM."""
    page.goto(base + "/ui/market", wait_until="load")
    page.wait_for_function("() => document.querySelector('[sse-connect]') !== null")
    page.wait_for_timeout(500)  # the EventSource connects after load
    client = swarm.client(0)
    delays = []
    for i in range(n):
        title = f"Live lamp {i} {secrets.token_hex(3)}"
        page.evaluate(
            """title => { window.__seen = null; new MutationObserver((m, obs) => {
                   if (document.body.textContent.includes(title)) { window.__seen = Date.now(); obs.disconnect(); }
               }).observe(document.body, {childList: true, subtree: true}); }""",
            title,
        )
        sent = time.time()
        client.publish({"title": title, "have": ["1 x lamp"], "tags": ["live"]})
        page.wait_for_function("() => window.__seen !== null", timeout=10_000)
        delays.append(page.evaluate("window.__seen") / 1000 - sent)
        page.wait_for_timeout(200)
    return summary(delays)


def run(args: argparse.Namespace, tmp: Path, cleanup: list[Callable[[], Any]]) -> dict[str, Any]:
    samples = 8 if args.quick else 30
    f: dict[str, Any] = {"book": BOOK, "loadavg_start": loadavg(), "quick": args.quick}
    say(f"ui bench: a node with a {BOOK}-listing book; {samples} samples per figure")
    t = time.monotonic()
    build_book(tmp / "book.sqlite", BOOK)
    prepare_homes(tmp / "swarm", 1, tmp / "book.sqlite")
    f["book_build_s"] = round(time.monotonic() - t, 1)
    swarm = LocalSwarm(1, net=f"uibench-{secrets.token_hex(3)}", base_dir=tmp / "swarm")
    cleanup.append(swarm.close)
    swarm.start()
    port = swarm.client(0).cookie.port
    cookie = login(port, swarm.client(0).ui_token()["url"])
    server_times(port, cookie, "/ui/market", 3)  # warm the decode cache, as a browsing user does
    f["market"] = summary(server_times(port, cookie, "/ui/market", samples))
    f["search"] = summary(server_times(port, cookie, "/ui/market?q=drill&kind=goods", samples))
    f.update(browser_figures(swarm, samples, 5 if args.quick else 20))
    f["goals"] = {
        "market_under_200ms": f["market"]["p95_ms"] < GOAL_SERVER_MS,
        "search_under_200ms": f["search"]["p95_ms"] < GOAL_SERVER_MS,
        "live_under_1s": bool(f.get("live")) and f["live"]["p95_ms"] < GOAL_LIVE_MS,
    }
    return f


def report(f: dict[str, Any]) -> None:
    say(f"market page, server: p50 {f['market']['p50_ms']} ms, p95 {f['market']['p95_ms']} ms")
    say(f"search, server:      p50 {f['search']['p50_ms']} ms, p95 {f['search']['p95_ms']} ms")
    if "browser_market" in f:
        for name in ("browser_market", "browser_search"):
            b = f[name]
            say(f"{name}: ttfb p50 {b['ttfb']['p50_ms']} ms, rendered p50 {b['rendered']['p50_ms']} ms")
        say(f"live listing, arrival -> on the page: p50 {f['live']['p50_ms']} ms, p95 {f['live']['p95_ms']} ms")
    else:
        say(f"browser figures skipped: {f.get('browser')}")
    say(f"goals: {f['goals']}; wall {f['wall_s']} s, CPU {f['cpu_s']} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s on 2 cores: fewer samples (still a 10k book)")
    parser.add_argument("--keep", action="store_true", help="keep the home and log (their path is printed)")
    args = parser.parse_args()
    return run_bench(args, run, report, prefix="swapmeet-ui-bench-", started=T0, say=say)


if __name__ == "__main__":
    sys.exit(main())
