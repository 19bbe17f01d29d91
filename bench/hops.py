"""Where a gossip message's CPU goes in py-libp2p 0.8.1: a relay under cProfile, hop by hop.

Three processes of ``bench/support/gossip_peer.py`` on 127.0.0.1 in a line:
publisher -> relay -> sink. The publisher publishes ``--messages`` payloads of
``--size`` bytes at ``--rate`` per second; the relay receives each one once
and forwards it to the sink, which is the whole life of a message at one hop.
Measured on the relay:

- CPU per message (user + system from ``/proc``, less the relay's idle CPU measured
  for 4 s just before the traffic), in a first pass without a profiler, for the
  library as another developer would use it (``bare``) and
  with our host fast path (``fast``: ``open_host(fastpath=True)``,
  docs/LIBP2P.md §60-§64, §66, §67), the two passes alternating so both see the same load;
- with ``--profile``, one more pass of each under cProfile: each function's own
  time (``tottime``) is put in one hop (:data:`HOPS`, by the module or function
  it belongs to) and the shares are printed, per message.

The last line is a JSON object of all figures. Run:
``python bench/hops.py [--quick] [--messages 2000] [--rate 200] [--profile]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEER = HERE / "support" / "gossip_peer.py"
PY = sys.executable
_TICK = os.sysconf("SC_CLK_TCK")
IDLE_S = 4.0

#: Hops of a message, in path order; the first rule that matches a profile entry (file path or
#: function name) wins. Entries that match nothing count as "other".
HOPS: list[tuple[str, tuple[str, ...]]] = [
    ("read/write syscalls (TCP)", ("method 'recv'", "method 'send'", "_highlevel_socket", "transport/tcp")),
    ("noise decrypt/encrypt", ("security/noise", "cryptography", "chacha", "secure_session", "io/msgio")),
    ("yamux demux/mux", ("stream_muxer/yamux",)),
    ("protobuf decode/encode", ("ParseFromString", "SerializeToString", "google/protobuf", "_pb2")),
    (
        "signed peer record per RPC (envelope sign/verify, peerstore)",
        ("peer/envelope", "peer_record", "peer/peerstore", "peer/peerdata", "pubsub/utils", "multiaddr", "varint"),
    ),
    ("message signature check/sign (StrictSign)", ("crypto/", "crypto_sign", "nacl", "pubsub/validators")),
    ("message id, seen cache", ("content_msg_id", "protocol/gossip", "timecache", "last_seen", "sha256")),
    ("topic validator (ours)", ("node/host/host.py", "node/gossip.py", "libp2p_validator")),
    ("mcache", ("pubsub/mcache",)),
    ("gossipsub routing, scoring", ("pubsub/gossipsub", "pubsub/score", "pubsub/rpc_queue", "node/host/gossip.py")),
    ("pubsub push/validate/notify", ("pubsub/pubsub", "pubsub/subscription")),
    ("peer id encode/compare (base58)", ("peer/id", "base58", "multihash", "divmod")),
    (
        "stream layers (net_stream, read_exactly, our buffer)",
        ("network/stream", "io/utils", "io/trio", "raw_connection", "fastpath.py", "network/connection"),
    ),
    ("trio scheduler, channels", ("trio/", "outcome", "anyio_service")),
    ("logging", ("logging/",)),
    ("builtins, contextlib (spread over every hop)", ("~", "contextlib", "functools", "collections/")),
]


def hop_of(key: tuple[str, int, str]) -> str:
    filename, _, func = key
    where = f"{filename} {func}"
    for hop, needles in HOPS:
        if any(n in where for n in needles):
            return hop
    return "other"


def cpu_s(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    return 0.0


class Peer:
    """One gossip_peer.py process, its stdout read line by line."""

    def __init__(self, net: str, tmp: Path, name: str, fast: bool, profile: Path | None = None):
        args = [PY]
        if profile is not None:
            args += [__file__, "--profiled-peer", str(profile), "--"]
        args += [str(PEER), "--net", net] + (["--fastpath"] if fast else [])
        self.log = tmp / f"{name}.log"
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=self._out, stderr=subprocess.STDOUT)
        self.addr = ""

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if line.startswith("READY "):
                    self.addr = line.split()[1]
                    return
            if self.popen.poll() is not None:
                raise RuntimeError(f"peer exited: {self.lines()[-5:]}")
            time.sleep(0.05)
        raise RuntimeError("peer did not start")

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def received(self) -> int:
        return sum(1 for line in self.lines() if line.startswith("R "))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        for f in (self.popen.stdin, self._out):
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]


def one_pass(args: argparse.Namespace, tmp: Path, fast: bool, profile: Path | None) -> dict[str, Any]:
    net = f"hops-{os.getpid()}-{int(fast)}-{int(profile is not None)}"
    peers = [Peer(net, tmp, n, fast, profile if n == "relay" else None) for n in ("pub", "relay", "sink")]
    pub, relay, sink = peers
    try:
        for p in peers:
            p.wait_ready()
        pub.send(f"D {relay.addr}")
        sink.send(f"D {relay.addr}")
        time.sleep(2.0)  # meshes (docs/LIBP2P.md §24)
        idle0, i0 = cpu_s(relay.popen.pid), time.monotonic()
        time.sleep(IDLE_S)  # the relay's own pace without traffic (heartbeats, pings), subtracted below
        idle_rate = (cpu_s(relay.popen.pid) - idle0) / (time.monotonic() - i0)
        if profile is not None:
            relay.popen.send_signal(signal.SIGUSR1)  # profile the message traffic only
            time.sleep(0.2)
        cpu0, t0 = cpu_s(relay.popen.pid), time.monotonic()
        for k in range(args.messages):
            due = t0 + k / args.rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            pub.send(f"P {k:016x} {args.size}")
        deadline = time.monotonic() + 30
        while sink.received() < args.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        wall = time.monotonic() - t0
        cpu = cpu_s(relay.popen.pid) - cpu0
        got = sink.received()
        if profile is not None:
            relay.popen.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + 10
            while not profile.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        for p in peers:
            p.stop()
    return {
        "delivered": got,
        "relay_cpu_ms_per_msg": round(max(0.0, cpu - idle_rate * wall) * 1000 / max(1, got), 3),
        "relay_cpu_ms_per_msg_with_idle": round(cpu * 1000 / max(1, got), 3),
        "relay_idle_share_of_core": round(idle_rate, 4),
        "relay_cpu_share_of_core": round(cpu / wall, 3),
    }


def breakdown(profile: Path, messages: int) -> dict[str, float]:
    stats = pstats.Stats(str(profile))
    per_hop: dict[str, float] = {}
    for key, (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        hop = hop_of(key)
        per_hop[hop] = per_hop.get(hop, 0.0) + tottime
    return {k: round(v * 1000 / messages, 4) for k, v in sorted(per_hop.items(), key=lambda kv: -kv[1])}


def profiled_peer(out: Path, argv: list[str]) -> None:
    """Run a peer script with a CPU-time cProfile that SIGUSR1 starts and SIGUSR2 stops and saves.

    CPU time (``time.thread_time``), not wall time: on a shared machine a wall clock would charge
    whatever ran on the core meanwhile to the function that happened to be running.
    """
    import cProfile
    import runpy

    profiler = cProfile.Profile(time.thread_time)

    def stop(*_: Any) -> None:
        profiler.disable()
        profiler.dump_stats(str(out))

    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = argv
    sys.path.insert(0, str(Path(argv[0]).parent.parent))
    runpy.run_path(argv[0], run_name="__main__")


def main() -> int:
    if len(sys.argv) > 3 and sys.argv[1] == "--profiled-peer":
        profiled_peer(Path(sys.argv[2]), sys.argv[4:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--size", type=int, default=452, help="payload bytes (a bench listing's gossip message)")
    parser.add_argument("--rounds", type=int, default=3, help="unprofiled passes of each (medians)")
    parser.add_argument("--profile", action="store_true", help="also one cProfile pass of each")
    parser.add_argument("--keep-profiles", type=Path, help="copy the .prof files into this folder")
    parser.add_argument("--quick", action="store_true", help="600 messages, one unprofiled pass of each")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds = min(args.messages, 600), 1
    out: dict[str, Any] = {"messages": args.messages, "rate": args.rate, "size": args.size}
    with tempfile.TemporaryDirectory(prefix="swapmeet-hops-") as d:
        tmp = Path(d)
        runs: dict[str, list[dict[str, Any]]] = {"bare": [], "fast": []}
        for _ in range(args.rounds):
            for label in runs:
                r = one_pass(args, tmp, label == "fast", None)
                runs[label].append(r)
                print(f"{label}: {r}", flush=True)
        for label, rs in runs.items():
            cpus = sorted(r["relay_cpu_ms_per_msg"] for r in rs)
            out[label] = {"relay_cpu_ms_per_msg_median": cpus[len(cpus) // 2] if cpus else None, "runs": rs}
        if args.profile:
            for label in runs:
                prof = tmp / f"{label}.prof"
                r = one_pass(args, tmp, label == "fast", prof)
                hops = breakdown(prof, max(1, r["delivered"]))
                if args.keep_profiles:
                    args.keep_profiles.mkdir(parents=True, exist_ok=True)
                    (args.keep_profiles / prof.name).write_bytes(prof.read_bytes())
                out[label]["profiled"] = r
                out[label]["profile_ms_per_msg"] = hops
                print(f"\n{label} under cProfile: {r['relay_cpu_ms_per_msg']} ms CPU per message at the relay")
                total = sum(hops.values())
                for hop, v in hops.items():
                    print(f"  {v:8.4f} ms  {100 * v / total:5.1f} %  {hop}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
