"""Pre-built offer books for the benches: ``n`` valid signed listings in a book file, and homes holding a copy.

Shared by ``bench/swarm.py`` and ``bench/ui.py`` (a 10k book). Imported as ``support.books``.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from swapmeet.node.home import Home
from swapmeet.node.identity_store import create_identity


def build_book(path: Path, n: int, authors: int = 8) -> None:
    """An offer-book file holding ``n`` valid signed listings by a few random authors."""
    from swapmeet.node.book import OfferBook
    from swapmeet.protocol import build
    from swapmeet.protocol.identity import Identity

    now = int(time.time())
    ids = [Identity.generate() for _ in range(authors)]
    rng = random.Random(7)
    things = ["road bike", "drill", "sofa", "lawn mower", "guitar", "tent", "ladder", "desk", "kayak", "camera"]
    have = [build.parse_item(f"1 x {x}") for x in things]
    want = [build.parse_item("10 kg x apples"), build.parse_item("3 h x garden work"), build.parse_item("2 x jar")]
    book = OfferBook(path)
    try:
        chunk = []
        for i in range(n):
            created = now - rng.randrange(60, 86_400)  # spread over the last day, as a real book would be
            chunk.append(
                build.make_listing(
                    ids[i % authors],
                    title=f"{things[i % 10].capitalize()} #{i}, good condition",
                    desc="Pick up in the evening; can deliver nearby for a small extra.",
                    have=[have[i % 10]],
                    want=[want[i % 3]],
                    tags=["seed", things[i % 10].replace(" ", "-")],
                    category="bench/seed",
                    created=created,
                    expires=created + 14 * 86_400,
                )
            )
            if len(chunk) == 1000:
                book.add_many(chunk, now)
                chunk = []
        if chunk:
            book.add_many(chunk, now)
        if book.stats().listings != n:
            raise RuntimeError(f"the template book holds {book.stats()} instead of {n} listings")
    finally:
        book.close()


def prepare_homes(base: Path, n: int, book: Path) -> None:
    """Homes ``node0..`` with an identity and a copy of the book; LocalSwarm reuses homes that have a key."""
    for i in range(n):
        home = Home(base / f"node{i}")
        create_identity(home, None)
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{book}{suffix}")
            if src.exists():
                shutil.copyfile(src, f"{home.book_db}{suffix}")
