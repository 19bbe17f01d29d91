"""Make sure the browser tests have a browser: Debian's Chromium, installed with apt where it is missing.

Run by the README's test command (and so by ``.ci/run``) before pytest. Playwright's own browser
download cannot work on a network that reaches only the package registries, so the tests drive
``/usr/bin/chromium`` from Debian's packages instead. Installing needs root and apt-get; without them
this says so in one line and the browser tests skip with that reason. It never fails the command:
whether the browser tests can run is the tests' to say.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CHROMIUM = ("chromium", "chromium-browser")
TIMEOUT_S = 900  # apt on a slow mirror; bounded all the same


def find_chromium() -> str | None:
    """The Chromium binary on PATH (Debian: /usr/bin/chromium), or None."""
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    return None


def main() -> int:
    if find_chromium():
        return 0
    if not shutil.which("apt-get") or os.geteuid() != 0:
        print("browser_setup: no Chromium and no root apt-get to install it: the browser tests will skip")
        return 0
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("browser_setup: installing Debian's chromium for the browser tests (apt-get)...", flush=True)
    try:
        for args in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
        ):
            subprocess.run(
                args, check=True, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=TIMEOUT_S
            )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"browser_setup: could not install chromium ({exc}): the browser tests will skip")
        return 0
    print(f"browser_setup: chromium at {find_chromium()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
