"""Make sure the tests have the system programs they drive: Debian's Chromium and nftables, installed with apt.

Run by the README's test command (and so by ``.ci/run``) before pytest. The browser tests drive
``/usr/bin/chromium`` from Debian's packages (Playwright's own browser download cannot work on a
network that reaches only the package registries); the NAT lab (``tests/netlab.py``) makes home
routers with ``nft``. Whatever is missing is installed in one apt run. Installing needs root and
apt-get; without them this says so in one line and the tests that need the program skip with that
reason. It never fails the command: whether a test can run is the test's to say.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CHROMIUM = ("chromium", "chromium-browser")
PACKAGES = {"chromium": CHROMIUM, "nftables": ("nft",)}  # Debian package -> the programs it provides
TIMEOUT_S = 900  # apt on a slow mirror; bounded all the same


def find_chromium() -> str | None:
    """The Chromium binary on PATH (Debian: /usr/bin/chromium), or None."""
    return _find(CHROMIUM)


def _find(programs: tuple[str, ...]) -> str | None:
    for name in programs:
        found = shutil.which(name)
        if found:
            return found
    return None


def main() -> int:
    missing = [package for package, programs in PACKAGES.items() if not _find(programs)]
    if not missing:
        return 0
    if not shutil.which("apt-get") or os.geteuid() != 0:
        print(f"system_setup: {', '.join(missing)} missing and no root apt-get to install: the tests that need it skip")
        return 0
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"system_setup: installing Debian's {', '.join(missing)} for the tests (apt-get)...", flush=True)
    try:
        for args in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        ):
            subprocess.run(
                args, check=True, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=TIMEOUT_S
            )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"system_setup: could not install {', '.join(missing)} ({exc}): the tests that need it skip")
        return 0
    print("system_setup: " + ", ".join(f"{p} at {_find(PACKAGES[p])}" for p in missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
