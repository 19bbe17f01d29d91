"""What every bench script shares: percentiles, latency summaries, strict-JSON figures, the run harness.

Imported as ``support.benchkit`` (each script runs as ``python bench/NAME.py``, so the
bench directory is first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Run = Callable[[argparse.Namespace, Path, list[Callable[[], Any]]], dict[str, Any]]


def pct(values: Sequence[float], q: float) -> float:
    """Percentile by linear interpolation (q in 0..100); nan for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(seconds: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """``{"n", "p50_ms", "p95_ms", "mean_ms"}`` of durations in seconds."""
    return {
        "n": len(seconds),
        "p50_ms": round(pct(seconds, 50) * 1000, digits),
        "p95_ms": round(pct(seconds, 95) * 1000, digits),
        "mean_ms": round(statistics.fmean(seconds) * 1000, digits) if seconds else float("nan"),
    }


def loadavg() -> float:
    with contextlib.suppress(OSError):
        return float(Path("/proc/loadavg").read_text().split()[0])
    return float("nan")


def finite(value: Any) -> Any:
    """NaN / infinity (a figure that could not be measured) as null, so the last line is strict JSON."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def run_bench(
    args: argparse.Namespace,
    run: Run,
    report: Callable[[dict[str, Any]], None],
    *,
    prefix: str,
    started: float,
    say: Callable[[str], None],
) -> int:
    """Run ``run(args, tmp, cleanup)`` in a temporary directory, then print the report and the JSON line.

    SIGTERM is Ctrl-C (exit 130); the ``cleanup`` jobs ``run`` registered always run, newest
    first, and the directory is removed unless ``args.keep``. ``wall_s`` counts from
    ``started``; ``cpu_s`` is the CPU of this process and every process it started (all
    reaped by now): on an otherwise idle machine the wall time cannot be below cpu_s / cores.
    """

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    cleanup: list[Callable[[], Any]] = []
    try:
        figures = run(args, tmp, cleanup)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        for job in reversed(cleanup):
            try:
                job()
            except BaseException as exc:
                say(f"cleanup: {exc!r}")
        if args.keep:
            say(f"homes and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    figures["wall_s"] = round(time.monotonic() - started, 1)
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    figures["cpu_s"] = round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 1)
    report(figures)
    say(json.dumps(finite(figures), sort_keys=True, allow_nan=False))
    return 0
