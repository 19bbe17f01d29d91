"""Benchmark of the protocol layer: signing and the decode-and-verify trust boundary.

Prints objects/s for sign+encode and for decode+validate+verify, per kind, and
compares the latter with a bare PyNaCl verify loop over exactly the same
signatures (the same messages, keys and signatures), measured in the same run.
Both loops run in alternating rounds and the best round of each counts, which
keeps a noisy shared machine from favouring either side.

    ratio = bare verify time / boundary decode time

1.0 would mean parsing, canonical checks and rules cost nothing on top of the
signature checks; the goal is >= 0.8. The last line is a JSON object of all
figures. Run: ``python bench/protocol.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import nacl.signing
from swapmeet.protocol import boundary, build, cbor
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.objects import Exchange, LedgerEntry, Offer

T = 1_800_000_000


def make_corpus(n: int) -> dict[str, list[bytes]]:
    """``n`` realistic objects of each kind, by 50 different authors."""
    authors = [Identity(os.urandom(32)) for _ in range(50)]
    corpus: dict[str, list[bytes]] = {"listing": [], "offer": [], "entry": []}
    for i in range(n):
        maker, taker = authors[i % 50], authors[(i * 7 + 1) % 50]
        if maker == taker:
            taker = authors[(i + 1) % 50]
        listing = build.make_listing(
            maker,
            title=f"Road bike #{i}, 54 cm frame",
            desc="Well kept, new tyres last spring. Pick up in the evening.",
            have=[build.parse_item("1 x road bike"), build.parse_item("2 x bike light")],
            want=[build.parse_item("10 kg x apples"), build.parse_item("3 h x garden work")],
            tags=["bikes", "sports"],
            category="sports/bikes",
            loc="u0yjj",
            created=T + i,
            expires=T + i + 30 * 86_400,
        )
        offer = build.make_offer(
            taker,
            listing,
            take=[build.parse_item("1 x road bike")],
            give=[build.parse_item("10 kg x apples")],
            created=T + i + 10,
            expires=T + i + 86_400,
        )
        exchange = build.exchange_for_offer(offer, created=T + i + 20, deadline=T + i + 3600)
        exchange = build.sign_exchange(build.sign_exchange(exchange, maker), taker)
        entry = build.make_entry(maker, seq=1, prev=bytes(32), time=T + i + 30, payload=exchange)
        corpus["listing"].append(listing.raw)
        corpus["offer"].append(offer.raw)
        corpus["entry"].append(entry.raw)
    return corpus


def signatures_of(obj: object) -> list[tuple[bytes, bytes, bytes]]:
    """(public key, message, signature) of every distinct signature the boundary checks for ``obj``."""
    out: list[tuple[bytes, bytes, bytes]] = []
    if isinstance(obj, Exchange):
        message = boundary.signing_bytes_of_exchange(obj.raw, obj.signatures)
        out += [(p, message, s) for p, s in zip(obj.parties, obj.signatures, strict=True) if s is not None]
        if obj.offer is not None:
            out += signatures_of(obj.offer)
        out += [sig for listing in obj.listings for sig in signatures_of(listing)]
    else:
        out.append((obj.author, b"\x84" + obj.raw[1:-66], obj.raw[-64:]))
        if isinstance(obj, Offer):
            out += signatures_of(obj.listing)
        if isinstance(obj, LedgerEntry):
            out += signatures_of(obj.payload)
    return list(dict.fromkeys(out))  # distinct, in order


def best_of(rounds: int, fn: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_kind(raws: list[bytes], rounds: int) -> dict[str, float]:
    signatures = [sig for raw in raws for sig in signatures_of(boundary.decode(raw))]

    def decode_all() -> None:
        for raw in raws:
            boundary.decode(raw)

    def bare_verify() -> None:
        for key, message, signature in signatures:
            nacl.signing.VerifyKey(key).verify(message, signature)

    decode_time = verify_time = float("inf")
    for _ in range(rounds):  # alternate so both see the same machine conditions
        decode_time = min(decode_time, best_of(1, decode_all))
        verify_time = min(verify_time, best_of(1, bare_verify))
    return {
        "objects": len(raws),
        "signatures_per_object": round(len(signatures) / len(raws), 2),
        "decode_per_s": round(len(raws) / decode_time),
        "bare_verify_objects_per_s": round(len(raws) / verify_time),
        "ratio": round(verify_time / decode_time, 3),
    }


def bench_sign(n: int, rounds: int) -> float:
    identity = Identity(os.urandom(32))
    listing = build.make_listing(
        identity, title="Desk for a day", have=[build.parse_item("1 d x desk")], created=T, expires=T + 86_400
    )
    body = cbor.decode(listing.raw, max_size=1 << 16)[3]

    def sign_all() -> None:
        for i in range(n):
            body["rev"] = i
            build.sign(identity, "listing", body)

    return n / best_of(rounds, sign_all)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    args = parser.parse_args()
    n, rounds = (300, 3) if args.quick else (2000, 5)

    corpus = make_corpus(n)
    results: dict[str, object] = {"n": n, "rounds": rounds}
    results["sign_encode_per_s"] = round(bench_sign(n, rounds))
    print(f"sign+encode (listing): {results['sign_encode_per_s']:>8} objects/s")
    ratios = []
    for kind, raws in corpus.items():
        figures = bench_kind(raws, rounds)
        results[kind] = figures
        ratios.append(figures["ratio"])
        print(
            f"decode+validate+verify {kind:<8} {figures['decode_per_s']:>7} objects/s"
            f"   bare verify of the same {figures['signatures_per_object']} sig/object: "
            f"{figures['bare_verify_objects_per_s']:>7} objects/s   ratio {figures['ratio']:.3f}"
        )
    results["ratio"] = min(ratios)
    results["goal_ratio"] = 0.8
    print(f"worst ratio {results['ratio']:.3f} (goal >= 0.8)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
