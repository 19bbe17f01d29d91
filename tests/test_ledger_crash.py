"""Crash safety: an entry that ``append_own`` returned survives ``kill -9`` of the appending process.

A child process appends to its own chain in a loop and prints ``seq id`` after
each ``append_own`` returns (flushing each line): every printed line is an
acknowledged entry. The parent kills it with SIGKILL at random moments (some
early enough to land while it starts up or opens the database), then checks
that the store opens, verifies, and still holds every acknowledged entry with
the same id, and starts the next child on the same database.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from swapmeet.ledger.store import LedgerStore
from swapmeet.protocol.identity import Identity

ROUNDS = 22
SEED = b"\x07" * 32

CHILD = r"""
import sys
from swapmeet.ledger.store import LedgerStore
from swapmeet.protocol import build
from swapmeet.protocol.identity import Identity

a, b = Identity(bytes.fromhex(sys.argv[2])), Identity(b"\x08" * 32)
T = 1_800_000_000
L = build.make_listing(a, title="Bike", have=[build.parse_item("1 x bike")], created=T, expires=T + 86400)
bike, apples = build.parse_item("1 x bike"), build.parse_item("3 kg x apples")
O = build.make_offer(b, L, take=[bike], give=[apples], created=T + 10, expires=T + 3600)
X = build.sign_exchange(build.sign_exchange(build.exchange_for_offer(O, created=T + 20, deadline=T + 600), a), b)
store = LedgerStore.open(sys.argv[1])
out = sys.stdout
while True:
    entry = store.append_own(a, X, T + 30)
    out.write(f"{entry.seq} {entry.id.hex()}\n")
    out.flush()
"""


def _wait_for_output(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """True once the child has printed something (bounded wait)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return bool(ready)


@pytest.mark.slow
def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    author = Identity(SEED).public_key
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    acknowledged: dict[int, str] = {}
    kills_during_appends = 0
    started = time.monotonic()
    for round_ in range(ROUNDS):
        with (tmp_path / f"stderr-{round_}.txt").open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(db), SEED.hex()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
            try:
                if round_ % 4 == 0:
                    # Anywhere from start-up through opening (or creating) the database to appending.
                    time.sleep(rng.uniform(0.0, 0.6))
                else:
                    assert _wait_for_output(proc, 20.0), "the child never acknowledged an append"
                    time.sleep(rng.uniform(0.0, 0.05))
                    kills_during_appends += 1
                proc.send_signal(signal.SIGKILL)
                assert proc.stdout is not None
                output = proc.stdout.read()  # everything it printed before dying, up to EOF
            finally:
                proc.kill()
                proc.wait(timeout=10)
                if proc.stdout is not None:
                    proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, (tmp_path / f"stderr-{round_}.txt").read_text()
        for line in output.decode().splitlines(keepends=True):
            if line.endswith("\n"):  # a line cut short was not an acknowledgement
                seq, id_hex = line.split()
                acknowledged[int(seq)] = id_hex
        if not db.exists():
            assert not acknowledged
            continue
        with LedgerStore.open(db) as store:
            report = store.verify()
            assert report.ok, report.problems
            head = store.head(author)
            held = head[0] if head else 0
            assert held >= max(acknowledged, default=0), "an acknowledged append was lost"
            for seq, id_hex in acknowledged.items():
                raw = store.get(author, seq)
                assert raw is not None, f"acknowledged seq {seq} is missing"
                # The id printed is the id stored: nothing was rebuilt differently after a crash.
                assert hashlib.sha256(raw).hexdigest() == id_hex
    assert kills_during_appends >= ROUNDS // 2
    assert len(acknowledged) > ROUNDS // 2
    assert time.monotonic() - started < 60
    print(f"{ROUNDS} kills, {len(acknowledged)} acknowledged appends, {time.monotonic() - started:.1f} s")
