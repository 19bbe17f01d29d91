"""The bare py-libp2p baseline of ``bench/settle.py``: a request/response round trip between two processes.

Two bare hosts, each ``swapmeet.node.host.open_host`` (exactly the node's TCP +
Noise + Yamux configuration, no DHT, no mDNS, no book, no ledger, no API), in
two processes on 127.0.0.1, like two nodes: the server (``--serve``) echoes
every request frame of one stream protocol; the client (this process) sends a
small message (``--size`` bytes, default 1 KiB, about a signed two-party
exchange) and waits for the echo. Measured:

- ``fresh``: one request per new stream (``P2PHost.request``: open a stream,
  negotiate the protocol, send, half-close, read the answer), which is what a
  node pays for a message to a peer it is connected to;
- ``kept``: request/response frames on one stream kept open.

Run: ``python bench/settle_baseline.py [--quick] [--samples N] [--size BYTES]``;
the last line printed is a JSON object (``fresh``/``kept``: p50/p95/mean ms).
``--serve`` is the server half (prints ``READY <multiaddr>``, stops on SIGTERM,
SIGINT or EOF on stdin).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
from support.benchkit import summary
from swapmeet.node import host as p2p

NET = "settle-bench"
PROTOCOL_NAME = "echo"
HERE = Path(__file__).resolve()
READY_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 10.0


def say(text: str = "") -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- server


async def serve(net: str) -> None:
    proto = p2p.protocol_id(net, PROTOCOL_NAME)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with p2p.open_host(os.urandom(32), ["/ip4/127.0.0.1/tcp/0"], net=net, gossip_topics=[]) as host:

            async def echo_stream(stream: p2p.FramedStream) -> None:
                # Answers every frame on the stream: one frame (fresh) or many (kept).
                async for frame in stream:
                    await stream.send(frame)

            host.set_stream_handler(proto, echo_stream)
            say(f"READY {host.listen_addrs()[0]}")
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

                async def stop_on_eof() -> None:
                    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
                    while await stdin.receive_some(4096):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop_on_signal)
                nursery.start_soon(stop_on_eof)


# --------------------------------------------------------------------------- client


async def measure(addr: str, net: str, samples: int, size: int, warmup: int) -> dict[str, Any]:
    proto = p2p.protocol_id(net, PROTOCOL_NAME)
    fresh: list[float] = []
    kept: list[float] = []
    async with p2p.open_host(os.urandom(32), ["/ip4/127.0.0.1/tcp/0"], net=net, gossip_topics=[]) as host:
        peer = await host.connect(addr, timeout=CONNECT_TIMEOUT_S)
        for n in range(warmup + samples):
            message = os.urandom(size)
            t = time.perf_counter()
            answer = await host.request(peer, proto, message, timeout=REQUEST_TIMEOUT_S)
            dt = time.perf_counter() - t
            if answer != message:
                raise RuntimeError("the echo server answered something else")
            if n >= warmup:
                fresh.append(dt)
        with trio.fail_after(REQUEST_TIMEOUT_S * (samples + warmup)):
            async with await host.open_stream(peer, proto) as stream:
                for n in range(warmup + samples):
                    message = os.urandom(size)
                    t = time.perf_counter()
                    await stream.send(message)
                    answer = await stream.receive()
                    dt = time.perf_counter() - t
                    if answer != message:
                        raise RuntimeError("the echo server answered something else")
                    if n >= warmup:
                        kept.append(dt)
                await stream.close_write()
    return {"fresh": summary(fresh, digits=2), "kept": summary(kept, digits=2), "size_bytes": size}


def start_server(net: str) -> tuple[subprocess.Popen[str], str]:
    """The echo server process and its multiaddr (bounded wait for READY)."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE), "--serve", "--net", net],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    assert proc.stdout is not None
    # readline blocks; the server prints READY within seconds or dies (EOF), so a watchdog suffices.
    with _watchdog(proc, deadline):
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the echo server exited (code {proc.poll()}) before it was ready")
            if line.startswith("READY "):
                return proc, line.split()[1]


@contextlib.contextmanager
def _watchdog(proc: subprocess.Popen[str], deadline: float):  # type: ignore[no-untyped-def]
    import threading

    done = threading.Event()

    def watch() -> None:
        if not done.wait(max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(OSError):
                proc.kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def stop_server(proc: subprocess.Popen[str]) -> int:
    """EOF on its stdin (it leaves), then SIGTERM, then SIGKILL, each after a bounded wait; the exit code."""
    for step in ("eof", "term", "kill"):
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError):
            if step == "eof" and proc.stdin is not None:
                proc.stdin.close()
            elif step == "term":
                proc.send_signal(signal.SIGTERM)
            elif step == "kill":
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    return proc.returncode


def run_baseline(samples: int, size: int = 1024, warmup: int = 10, net: str = NET) -> dict[str, Any]:
    """Start the echo server, measure from this process, stop the server; the figures."""
    proc, addr = start_server(net)
    try:
        figures = trio.run(measure, addr, net, samples, size, warmup)
    finally:
        code = stop_server(proc)
    figures["server_exit"] = code
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="run the echo server half")
    parser.add_argument("--net", default=NET)
    parser.add_argument("--quick", action="store_true", help="100 samples instead of 500")
    parser.add_argument("--samples", type=int, default=0)
    parser.add_argument("--size", type=int, default=1024, help="message size in bytes (default 1024)")
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(serve, args.net)
        return 0
    samples = args.samples or (100 if args.quick else 500)
    t = time.monotonic()
    figures = run_baseline(samples, args.size, net=args.net)
    figures["wall_s"] = round(time.monotonic() - t, 1)
    f, k = figures["fresh"], figures["kept"]
    say(
        f"bare request/response, {args.size} B: fresh stream p50 {f['p50_ms']} / p95 {f['p95_ms']} ms;"
        f" kept stream p50 {k['p50_ms']} / p95 {k['p95_ms']} ms ({samples} samples each)"
    )
    say(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
