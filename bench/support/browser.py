"""How the browser test and the UI benchmark start Debian's Chromium: headless, quiet, no sandbox (root)."""

from __future__ import annotations

CHROMIUM_ARGS = [
    "--no-sandbox",  # these machines run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
