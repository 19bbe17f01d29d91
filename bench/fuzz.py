"""Coverage-guided fuzzing of every decoder that takes remote bytes (atheris / libFuzzer).

One decoder at a time, each in its own subprocess (``--worker``): atheris instruments
swapmeet's modules, seeds libFuzzer with valid encodings (``bench/support/fuzz_targets.py``)
and runs the target on mutated inputs: libFuzzer's byte mutations, and for the targets of
signed CBOR objects half of the time a mutation of the decoded structure with every object
signed again by the seeds' keys (``fuzz_targets.restructure``), which gets past the signature
checks to the schema and the kind rules. A target lets only its decoder's documented refusal
through (``InvalidObject``; ``ExportFileError`` for export files): any other exception is a
crash, an input that runs longer than ``--timeout`` seconds is a hang, and libFuzzer stops
on an RSS above ``--rss-limit-mb`` (an ``oom``). After the run the parent decodes
every input of the final corpus (seeds plus what the fuzzer kept) under ``tracemalloc``:
the largest peak allocation of any single input, flagged if above ``ALLOC_LIMIT_MB``, and
the RSS growth over the run, flagged if above ``RSS_GROWTH_LIMIT_MB`` (both would mean
memory that grows with what a peer sends rather than with the limits).

Per decoder: inputs run, inputs/s, crashes, hangs, ooms, coverage (libFuzzer's ``cov``/``ft``),
peak RSS, RSS growth, peak allocation per input, elapsed; the last line is a JSON object of
all figures. Exit 1 if any decoder crashed, hung, ran out of memory or was flagged.

    python bench/fuzz.py              # the long run: 1,000,000 inputs per decoder
    python bench/fuzz.py --quick      # about 5 s per decoder, 2 at a time (well under 90 s)
    python bench/fuzz.py --targets cbor,proof --runs 20000

``--targets`` also takes the harness self-tests (``selftest_crash``, ``selftest_hang``),
deliberately broken targets that must be reported as a crash and a hang.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LONG_RUNS = 1_000_000
QUICK_SECONDS = 5
ALLOC_LIMIT_MB = 64.0  # per input; the largest message any decoder accepts is 1 MiB
RSS_GROWTH_LIMIT_MB = 256.0  # from the first stats line after the seeds to the end of the run
STRUCTURED_SHARE = 0.5  # of the mutations, for targets of signed CBOR objects
STARTUP_S = 60  # a worker's import, instrumentation and seed corpus, on a loaded machine


def say(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------- the worker (one target)


def worker(args: argparse.Namespace) -> None:
    """Fuzz one target with atheris: libFuzzer parses the rest of argv. Never returns."""
    import atheris  # only the worker needs it

    with atheris.instrument_imports(include=["swapmeet"]):
        from support import fuzz_targets  # imported under instrumentation

    chosen = {**fuzz_targets.TARGETS, **fuzz_targets.SELF_TESTS}[args.worker]
    target = chosen.run

    def one_input(data: bytes) -> None:
        target(data)

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        # Half libFuzzer's byte mutations, half a mutation of the structure signed again (past the signatures).
        rnd = random.Random(seed)
        if rnd.random() < STRUCTURED_SHARE:
            out = fuzz_targets.restructure(rnd, data)
            if out != data and len(out) <= max_size:
                return out
        return atheris.Mutate(data, max_size)

    custom = {"custom_mutator": mutate} if chosen.structured and not args.bytes_only else {}
    atheris.Setup([sys.argv[0], *args.libfuzzer], one_input, **custom)
    atheris.Fuzz()


_REPLAY = threading.Lock()  # tracemalloc is process-wide: one replay at a time


def replay(target: Callable[[bytes], bool], corpus: Path) -> dict[str, Any]:
    """Decode every input of a corpus under tracemalloc (in this process): the largest peak of any one input."""
    peak, peak_input_len, slowest = 0, 0, 0.0
    files = sorted(corpus.iterdir())
    with _REPLAY:
        tracemalloc.start()
        try:
            for path in files:
                data = path.read_bytes()
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                started = time.perf_counter()
                target(data)
                slowest = max(slowest, time.perf_counter() - started)
                used = tracemalloc.get_traced_memory()[1] - base
                if used > peak:
                    peak, peak_input_len = used, len(data)
        finally:
            tracemalloc.stop()
    return {
        "inputs": len(files),
        "peak_alloc_mb": round(peak / 2**20, 2),
        "peak_alloc_input_bytes": peak_input_len,
        "slowest_replay_ms": round(slowest * 1000, 1),
    }


# --------------------------------------------------------------------------- the parent


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STAT = re.compile(r"^stat::(\w+):\s*(\d+)", re.M)
_RATE = re.compile(r"exec/s: (\d+)")
_PULSE = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+).*?rss: (\d+)Mb", re.M)


def parse_libfuzzer(log: str) -> dict[str, Any]:
    """Inputs run, coverage and RSS from a libFuzzer log (its stats lines and final stats)."""
    stats = {k: int(v) for k, v in _STAT.findall(log)}
    pulses = _PULSE.findall(log)
    runs = stats.get("number_of_executed_units")
    if runs is None:
        done = _DONE.search(log)
        runs = int(done.group(1)) if done else (int(pulses[-1][0]) if pulses else 0)
    inited = next((p for p in pulses if p[1] == "INITED"), pulses[0] if pulses else None)
    rss = [int(p[4]) for p in pulses]
    peak_rss = max([stats.get("peak_rss_mb", 0), *rss])
    # libFuzzer's own clock (from the seeds' load to the end), not the worker's import and instrumentation
    done = _DONE.search(log)
    fuzz_s = float(done.group(2)) if done else 0.0
    rate = stats.get("average_exec_per_sec") or (int(_RATE.findall(log)[-1]) if _RATE.findall(log) else 0)
    return {
        "runs": runs,
        "inputs_per_s": rate,
        "fuzz_s": fuzz_s,
        "cov": int(pulses[-1][2]) if pulses else 0,
        "ft": int(pulses[-1][3]) if pulses else 0,
        "peak_rss_mb": peak_rss,
        "rss_growth_mb": peak_rss - int(inited[4]) if inited else 0,
    }


def fuzz_one(
    name: str, target: Callable[[bytes], bool], seeds: list[bytes], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    """Run one target's worker and replay; its figures."""
    corpus, artifacts = tmp / name / "corpus", tmp / name / "artifacts"
    corpus.mkdir(parents=True)
    artifacts.mkdir()
    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i:04d}").write_bytes(seed)
    max_len = max(4096, 2 * max(map(len, seeds)))
    libfuzzer = [
        str(corpus),
        f"-runs={args.runs}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_limit_mb}",
        f"-max_len={max_len}",
        f"-max_total_time={args.seconds}",
        f"-seed={args.seed}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        "-print_pcs=0",
    ]
    command = [sys.executable, str(HERE / "fuzz.py"), "--worker", name, *(["--bytes-only"] * args.bytes_only)]
    command += ["--", *libfuzzer]
    wall = None if not args.seconds else args.seconds + STARTUP_S + 2 * args.timeout
    started = time.monotonic()
    log_path = tmp / name / "libfuzzer.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=HERE)
        try:
            code = proc.wait(timeout=wall)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    elapsed = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    figures = parse_libfuzzer(text)
    found = sorted(artifacts.iterdir())
    kinds = [p.name.split("-", 1)[0] for p in found]
    figures.update(
        decoder=name,
        exit_code=code,
        crashes=kinds.count("crash") + kinds.count("leak"),
        hangs=kinds.count("timeout") + kinds.count("slow"),
        ooms=kinds.count("oom"),
        elapsed_s=round(elapsed, 1),
        startup_s=round(elapsed - figures.pop("fuzz_s"), 1),
        corpus=sum(1 for _ in corpus.iterdir()),
    )
    if code != 0 and not found:
        figures["crashes"] += 1  # died without an artifact (e.g. killed by the wall clock): count it
        figures["error"] = text.strip().splitlines()[-1][:300] if text.strip() else f"exit {code}"
    if found:
        figures["artifacts"] = [{"file": p.name, "head_hex": p.read_bytes()[:64].hex()} for p in found]
        exc = re.search(r"=== Uncaught Python exception: ===\s*\n(.*?)\n(?:Traceback|$)", text, re.S)
        if exc:
            figures["exception"] = exc.group(1).strip()[:300]
    if not found and code == 0:
        try:
            figures.update(replay(target, corpus))
        except Exception as exc:  # the fuzzer's own corpus crashing the target outside libFuzzer: still a crash
            figures["crashes"] += 1
            figures["error"] = f"replay: {type(exc).__name__}: {exc}"[:300]
    figures["unbounded"] = (
        figures.get("peak_alloc_mb", 0.0) > ALLOC_LIMIT_MB or figures["rss_growth_mb"] > RSS_GROWTH_LIMIT_MB
    )
    figures["ok"] = not (figures["crashes"] or figures["hangs"] or figures["ooms"] or figures["unbounded"])
    if args.keep:
        figures["dir"] = str(tmp / name)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"about {QUICK_SECONDS} s per decoder, 2 at a time")
    parser.add_argument("--targets", help="comma-separated decoder names (default: every decoder)")
    parser.add_argument("--runs", type=int, help=f"inputs per decoder (default {LONG_RUNS:,}; --quick: time-bound)")
    parser.add_argument("--seconds", type=int, help="time limit per decoder (default: none; --quick: 5)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it is a hang")
    parser.add_argument("--rss-limit-mb", type=int, default=2048, help="libFuzzer's RSS limit per worker")
    parser.add_argument("--jobs", type=int, help="decoders fuzzed at once (default 1; --quick: 2)")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed")
    parser.add_argument("--keep", action="store_true", help="keep corpora, logs and artifacts (their dir is printed)")
    parser.add_argument("--bytes-only", action="store_true", help="only libFuzzer's byte mutations (no re-signing)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("libfuzzer", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    sys.path.insert(0, str(HERE))
    from support import fuzz_targets  # the parent only needs the seeds

    known = {**fuzz_targets.TARGETS, **fuzz_targets.SELF_TESTS}
    names = args.targets.split(",") if args.targets else list(fuzz_targets.TARGETS)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}; known: {', '.join(known)}")
    if args.runs is None:
        args.runs = 10**9 if args.quick else LONG_RUNS
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else 0
    jobs = args.jobs or (2 if args.quick else 1)
    seeds = {name: known[name].seeds() for name in names}

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="swapmeet-fuzz-"))
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(lambda n: fuzz_one(n, known[n].run, seeds[n], args, tmp), names))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        for stale in fuzz_targets._EXPORT_DIR.glob("swapmeet-fuzz-export-*.bin"):  # the workers' export files
            stale.unlink(missing_ok=True)
    say(f"{'decoder':<18} {'inputs':>10} {'inputs/s':>9} {'crash':>5} {'hang':>4} {'oom':>3} {'cov':>5} "
        f"{'rss MB':>6} {'+rss':>5} {'alloc MB':>8} {'s':>6}")  # fmt: skip
    for r in results:
        say(
            f"{r['decoder']:<18} {r['runs']:>10,} {r['inputs_per_s']:>9,} {r['crashes']:>5} {r['hangs']:>4} "
            f"{r['ooms']:>3} {r['cov']:>5} {r['peak_rss_mb']:>6} {r['rss_growth_mb']:>5} "
            f"{r.get('peak_alloc_mb', float('nan')):>8} {r['elapsed_s']:>6}"
            + ("" if r["ok"] else "  <-- " + (r.get("exception") or r.get("error") or "flagged"))
        )
    figures = {
        "quick": args.quick,
        "structured_mutations": not args.bytes_only,
        "runs_per_decoder": args.runs,
        "seconds_per_decoder": args.seconds,
        "timeout_s": args.timeout,
        "decoders": {r.pop("decoder"): r for r in results},
        "total_inputs": sum(r["runs"] for r in results),
        "crashes": sum(r["crashes"] for r in results),
        "hangs": sum(r["hangs"] for r in results),
        "ooms": sum(r["ooms"] for r in results),
        "unbounded": sum(r["unbounded"] for r in results),
        "wall_s": round(time.monotonic() - started, 1),
        "cores": os.cpu_count(),
    }
    figures["ok"] = all(r["ok"] for r in figures["decoders"].values())
    say(json.dumps(figures, sort_keys=True))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
