"""A NAT lab of Linux network namespaces for process tests and ``bench/reach.py`` (not a test module).

One :class:`Lab` is a small internet made inside the test, with addresses from
198.18.0.0/15 only (the benchmarking range: no packet ever leaves the machine):

- the *public* namespace holds a bridge, ``198.18.0.1/24`` on it; public nodes run there
  (each on its own port) and dial every public address directly;
- each *home* (:meth:`Lab.add_home`) is a namespace ``198.18.<k>.2/24`` whose default
  route is a *router* namespace: ``198.18.<k>.1`` on the home side, ``198.18.0.<10+k>`` on
  the public bridge, forwarding on, and nftables masquerade out of its public side. A
  home connects out and is seen as its router's address; nothing on the public side can
  dial into a home (no route: "Network is unreachable"), and the router drops what reaches
  its own public address unasked (no RST), as home routers do;
- ``nat="symmetric"`` masquerades with ``random,fully-random`` ports (an endpoint-dependent
  mapping, the kind hole punching cannot cross); the default keeps the source port
  where it can (an endpoint-independent mapping in practice);
- no WAN delay here: this kernel has no ``tc netem``; ``tests/wanlink.py`` (a userspace WAN) gives
  links their delay and loss, and its :class:`~tests.wanlink.NatWanLab` is this lab over it.

:meth:`Lab.pause` (SIGSTOP/SIGCONT) stalls a node; :meth:`Lab.blackhole` drops every packet
to and from a public node's port (its own outgoing connections still work).

Nodes are real ``swapmeet node run`` processes started with ``ip netns exec``; the CLI
for a node runs in the node's namespace too (its local API listens on that namespace's
127.0.0.1). Namespace names carry a random tag, so runs never collide, and
:meth:`Lab.close` (the context manager's exit, on any failure) stops every process,
SIGKILLs stragglers and deletes every namespace (their veths go with them). Every wait
is bounded.

:func:`lab_unavailable` says in one sentence why no lab can be built here (not root, no
``ip``/``nft``/``tc``, namespaces refused), or ``None``; tests skip with that reason. A SIGTERM
to the test process (``timeout``) and interpreter exit also tear the lab down.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from swapmeet.node.home import Home
from swapmeet.node.identity_store import create_identity

T = TypeVar("T")

PUBLIC_IP = "198.18.0.1"
CMD_TIMEOUT = 20.0  # one ip/nft/tc command
CLI_TIMEOUT = 60.0  # one swapmeet CLI command
START_TIMEOUT = 60.0  # spawn to a `node status` answer, on a busy 2-core machine
STOP_TIMEOUT = 15.0
LOG_TAIL_LINES = 40


class LabError(RuntimeError):
    """A lab command failed, or a bounded wait ran out."""


def run_command(
    argv: Sequence[str], *, check: bool = True, timeout: float = CMD_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run one setup command (ip, nft, tc) with no stdin and a timeout; a failure is a LabError naming it."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return done


_UNAVAILABLE: list[str | None] = []


def lab_unavailable() -> str | None:
    """Why network-namespace labs cannot run here (one sentence), or None if they can. Cached."""
    if _UNAVAILABLE:
        return _UNAVAILABLE[0]
    reason: str | None = None
    if os.geteuid() != 0:
        reason = "the NAT lab needs root (network namespaces)"
    else:
        missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
        if missing:
            reason = f"the NAT lab needs {', '.join(missing)} (apt-get install -y iproute2 nftables)"
    if reason is None:
        probe = f"smprobe-{secrets.token_hex(3)}"
        try:
            made = run_command(["ip", "netns", "add", probe], check=False)
            if made.returncode != 0:
                reason = f"cannot create a network namespace: {made.stderr.strip()}"
            else:
                nft = run_command(["ip", "netns", "exec", probe, "nft", "add", "table", "ip", "nat"], check=False)
                if nft.returncode != 0:
                    reason = f"nftables does not work in a namespace: {nft.stderr.strip()}"
        finally:
            run_command(["ip", "netns", "del", probe], check=False)
    _UNAVAILABLE.append(reason)
    return reason


@dataclass
class LabNode:
    """One ``swapmeet node run`` process in a namespace of the lab."""

    name: str
    ns: str
    ip: str
    home: Path
    log_path: Path
    peer_id: str
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    addr: str | None = None  # its multiaddr on the lab network, with /p2p/, once up

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LabHome:
    """A home network behind its own NAT router."""

    index: int
    ns: str
    router: str
    ip: str  # the home host's address
    wan_ip: str  # the router's public address: what the internet sees
    wan_dev: str = "wan"  # the router's public interface


class Lab:
    """A public internet namespace, homes behind NAT routers, and node processes; see the module docstring.

    ``base_dir``: homes and logs (default a temporary directory, kept and named on stderr when the
    lab closes after a failure). ``net``: the default network name of nodes started here.
    """

    def __init__(self, *, net: str, base_dir: str | os.PathLike[str] | None = None) -> None:
        reason = lab_unavailable()
        if reason is not None:
            raise LabError(reason)
        self.tag = secrets.token_hex(3)
        self.net = net
        self._own_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="swapmeet-lab-") if base_dir is None else base_dir).absolute()
        self.public = f"sm{self.tag}-pub"
        self.public_ip = PUBLIC_IP  # where public nodes listen (a subclass may move the internet)
        self.namespaces: list[str] = []
        self.homes: list[LabHome] = []
        self.nodes: dict[str, LabNode] = {}
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SWAPMEET_")}
        self._env = {**inherited, "PYTHONUNBUFFERED": "1"}
        self._closed = False
        self._tails_shown = False  # a timed-out wait put every node's log tail in its error

    # ----------------------------------------------------------------- topology

    def __enter__(self) -> Lab:
        atexit.register(self.close)  # a last resort if the caller never reaches close()
        self._install_sigterm_handler()
        try:
            self._make_public()
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(failed=exc_type is not None and not issubclass(exc_type, KeyboardInterrupt))

    def _netns(self, name: str) -> str:
        run_command(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run_command(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def _make_public(self) -> None:
        ns = self._netns(self.public)
        run_command(["ip", "-n", ns, "link", "add", "inet", "type", "bridge"])
        run_command(["ip", "-n", ns, "addr", "add", f"{PUBLIC_IP}/24", "dev", "inet"])
        run_command(["ip", "-n", ns, "link", "set", "inet", "up"])

    def add_home(self, *, nat: str = "eim") -> LabHome:
        """A home namespace behind a new NAT router on the public bridge (``nat``: "eim" or "symmetric")."""
        if nat not in ("eim", "symmetric"):
            raise ValueError(f"nat is 'eim' or 'symmetric', not {nat!r}")
        k = len(self.homes) + 1
        home = self._netns(f"sm{self.tag}-h{k}")
        router, wan_ip, wan_dev = self._make_router(k)
        lan_gw, home_ip = f"198.18.{k}.1", f"198.18.{k}.2"
        run_command(["ip", "-n", router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", home])
        run_command(["ip", "-n", router, "addr", "add", f"{lan_gw}/24", "dev", "lan"])
        run_command(["ip", "-n", router, "link", "set", "lan", "up"])
        run_command(["ip", "-n", home, "addr", "add", f"{home_ip}/24", "dev", "eth0"])
        run_command(["ip", "-n", home, "link", "set", "eth0", "up"])
        run_command(["ip", "-n", home, "route", "add", "default", "via", lan_gw])
        run_command(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        nft = ["ip", "netns", "exec", router, "nft"]
        run_command([*nft, "add", "table", "ip", "nat"])
        run_command([*nft, "add chain ip nat post { type nat hook postrouting priority 100 ; }"])
        flags = ["random,fully-random"] if nat == "symmetric" else []
        run_command([*nft, "add", "rule", "ip", "nat", "post", "oifname", wan_dev, "masquerade", *flags])
        # Like a home router, drop what arrives unasked from the internet (no RST): a hole-punch
        # SYN that comes before the router's own side went out is lost, not refused, and the
        # simultaneous open completes when the other side's SYN finds the mapping.
        run_command([*nft, "add", "table", "ip", "filter"])
        run_command([*nft, "add chain ip filter input { type filter hook input priority 0 ; policy accept ; }"])
        run_command([*nft, "add", "rule", "ip", "filter", "input", "iifname", wan_dev, "ct", "state", "new", "drop"])
        lab_home = LabHome(index=k, ns=home, router=router, ip=home_ip, wan_ip=wan_ip, wan_dev=wan_dev)
        self.homes.append(lab_home)
        return lab_home

    def _make_router(self, k: int) -> tuple[str, str, str]:
        """Home k's router namespace on the internet: (namespace, public address, public interface).

        Here a veth port on the public bridge; a subclass may
        put the router elsewhere (``tests/wanlink.py``'s :class:`NatWanLab`: a site of its WAN).
        """
        router = self._netns(f"sm{self.tag}-r{k}")
        wan_ip = f"198.18.0.{10 + k}"
        port = f"wan{k}"  # the router's public link, as seen in the public namespace's bridge
        run_command(
            ["ip", "-n", router, "link", "add", "wan", "type", "veth", "peer", "name", port, "netns", self.public]
        )
        run_command(["ip", "-n", self.public, "link", "set", port, "master", "inet", "up"])
        run_command(["ip", "-n", router, "addr", "add", f"{wan_ip}/24", "dev", "wan"])
        run_command(["ip", "-n", router, "link", "set", "wan", "up"])
        return router, wan_ip, "wan"

    def blackhole(self, node: LabNode, on: bool = True) -> None:
        """Drop (``on``) or pass again every packet to and from a public node's port: it stays up but goes silent."""
        if node.addr is None or node.ns != self.public:
            raise LabError(f"{node.name} is not a running public node")
        port = node.addr.split("/tcp/", 1)[1].split("/", 1)[0]
        nft = ["ip", "netns", "exec", self.public, "nft"]
        table = f"hole{port}"
        if not on:
            run_command([*nft, "delete", "table", "ip", table], check=False)
            return
        run_command([*nft, "add", "table", "ip", table])
        for hook, match in (("input", "dport"), ("output", "sport")):
            run_command(
                [*nft, f"add chain ip {table} {hook} {{ type filter hook {hook} priority 0 ; policy accept ; }}"]
            )
            run_command([*nft, "add", "rule", "ip", table, hook, "tcp", match, port, "drop"])

    def pause(self, node: LabNode, paused: bool = True) -> None:
        """SIGSTOP a node (``paused``) or SIGCONT it: its connections stay open and answer nothing."""
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def cut_link(self, home: LabHome, up: bool = False) -> None:
        """Take a home's router off the internet (or back on, ``up=True``)."""
        run_command(["ip", "-n", home.router, "link", "set", home.wan_dev, "up" if up else "down"])

    # ----------------------------------------------------------------- nodes

    def _cli_prefix(self, node: LabNode) -> list[str]:
        return ["ip", "netns", "exec", node.ns, sys.executable, "-m", "swapmeet.cli.main", "--home", str(node.home)]

    def node(
        self,
        name: str,
        where: LabHome | None = None,
        *,
        bootstrap: Sequence[str] = (),
        args: Sequence[str] = (),
        net: str | None = None,
        wait: bool = True,
    ) -> LabNode:
        """Create (``init``) and start node ``name`` in ``where`` (None: the public namespace)."""
        if name in self.nodes:
            raise LabError(f"there is already a node called {name!r}")
        home_dir = self.base_dir / name
        ns, ip = (self.public, self.public_ip) if where is None else (where.ns, where.ip)
        node = LabNode(name=name, ns=ns, ip=ip, home=home_dir, log_path=self.base_dir / f"{name}.log", peer_id="")
        # What `swapmeet init --no-passphrase` does, in this process (as LocalSwarm does: a CLI process
        # per node costs its start-up for nothing the test depends on).
        node.peer_id = create_identity(Home(home_dir), None).peer_id
        node.args = [
            "--listen",
            f"/ip4/{ip}/tcp/0",
            "--net",
            net or self.net,
            "--no-mdns",
            *(a for b in bootstrap for a in ("--bootstrap", b)),
            *args,
        ]
        self.nodes[name] = node
        self.start(node, wait=wait)
        return node

    def dht_server(self, name: str = "dht") -> LabNode:
        """Start a plain DHT server (``tests/dht_server.py``: a peer of no market) in the public namespace."""
        addr_file = self.base_dir / f"{name}.addr"
        node = LabNode(
            name=name,
            ns=self.public,
            ip=self.public_ip,
            home=self.base_dir / name,
            log_path=self.base_dir / f"{name}.log",
            peer_id="",
        )
        self.nodes[name] = node
        script = str(Path(__file__).resolve().parent / "dht_server.py")
        argv = [
            "ip",
            "netns",
            "exec",
            self.public,
            sys.executable,
            script,
            str(addr_file),
            f"/ip4/{self.public_ip}/tcp/0",
        ]
        node.log_file = open(node.log_path, "ab")  # noqa: SIM115 - open for the process's lifetime
        node.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=node.log_file, stderr=subprocess.STDOUT, env=self._env
        )

        def written() -> str | None:
            if not node.running:
                raise LabError(f"{name} exited before it was up\n{self.log_tail(node)}")
            return addr_file.read_text() if addr_file.exists() else None

        node.addr = self.wait_until(written, START_TIMEOUT, what=f"{name} to listen", interval=0.2)
        node.peer_id = node.addr.rsplit("/p2p/", 1)[1]
        return node

    def start(self, node: LabNode, *, wait: bool = True) -> None:
        """Start (or restart) a stopped node with its arguments."""
        if node.running:
            raise LabError(f"{node.name} is already running")
        argv = [*self._cli_prefix(node), "node", "run", *node.args]
        self._close_log(node)
        node.log_file = open(node.log_path, "ab")  # noqa: SIM115 - open for the process's lifetime
        node.log_file.write(f"=== netlab {time.strftime('%H:%M:%S')}: {' '.join(argv)}\n".encode())
        node.log_file.flush()
        node.addr = None
        node.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=node.log_file, stderr=subprocess.STDOUT, env=self._env
        )
        if wait:
            self.wait_up(node)

    def wait_up(self, node: LabNode, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """Wait until ``node status`` answers; remember the node's lab address."""

        def up() -> dict[str, Any] | None:
            if not node.running:
                raise LabError(f"{node.name} exited before it was up\n{self.log_tail(node)}")
            done = self.cli(node, "node", "status", "--json", check=False, timeout=15.0)
            return json.loads(done.stdout) if done.returncode == 0 else None

        status = self.wait_until(up, timeout, what=f"{node.name} to answer `node status`", interval=0.3)
        prefix = f"/ip4/{node.ip}/tcp/"
        node.addr = next((a for a in status.get("addrs", []) if a.startswith(prefix)), None)
        if node.addr is None:
            raise LabError(f"{node.name} listens on no {node.ip} address: {status.get('addrs')}")
        return status

    def stop(self, node: LabNode, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM a node and wait (SIGKILL after ``timeout``); its exit code."""
        proc = node.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5.0)
        self._close_log(node)
        return code

    def kill(self, node: LabNode) -> None:
        """SIGKILL a node (gone without a goodbye, like a laptop lid closing)."""
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait(5.0)
        self._close_log(node)

    # ----------------------------------------------------------------- talking to nodes

    def cli(
        self, node: LabNode, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """``swapmeet --home HOME ARGS`` inside the node's namespace; with ``check``, non-zero exit raises."""
        argv = [*self._cli_prefix(node), *args]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, env=self._env, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"`{' '.join(args)}` at {node.name} took more than {timeout:g}s") from None
        if check and done.returncode != 0:
            raise LabError(
                f"`{' '.join(args)}` at {node.name} exited {done.returncode}:"
                f" {done.stderr.strip() or done.stdout.strip()}"
            )
        return done

    def cli_json(self, node: LabNode, *args: str, timeout: float = CLI_TIMEOUT) -> Any:
        """A CLI command with ``--json`` appended, decoded."""
        return json.loads(self.cli(node, *args, "--json", timeout=timeout).stdout)

    def peers(self, node: LabNode) -> list[dict[str, Any]]:
        """``peers --json`` at ``node``."""
        result: list[dict[str, Any]] = self.cli_json(node, "peers")
        return result

    def peer_ids(self, node: LabNode) -> set[str]:
        return {p["peer_id"] for p in self.peers(node)}

    def wait_until(self, predicate: Callable[[], T | None], timeout: float, *, what: str, interval: float = 0.5) -> T:
        """Poll ``predicate`` until truthy (LabError from it counts as "not yet"); on timeout show every log tail."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                value = predicate()
            except (LabError, json.JSONDecodeError) as exc:
                if isinstance(exc, LabError) and "exited before it was up" in str(exc):
                    raise
                value, last = None, exc
            else:
                if value:
                    return value
                last = value
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        tails = "\n".join(self.log_tail(n) for n in self.nodes.values())
        self._tails_shown = True
        raise LabError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r:.300})\n{tails}")

    def log_text(self, node: LabNode) -> str:
        with contextlib.suppress(FileNotFoundError):
            return node.log_path.read_text(errors="replace")
        return ""

    def log_tail(self, node: LabNode, lines: int = LOG_TAIL_LINES) -> str:
        tail = self.log_text(node).splitlines()[-lines:]
        state = "running" if node.running else "stopped"
        return "\n".join([f"--- {node.name} ({node.peer_id[-8:]}, {state}, {node.ns}) {node.log_path}:", *tail])

    # ----------------------------------------------------------------- teardown

    def close(self, *, failed: bool = False) -> None:
        """Stop every node (SIGTERM, bounded wait, SIGKILL), delete every namespace. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._restore_sigterm_handler()
        try:
            live = [n for n in self.nodes.values() if n.running]
            for n in live:
                with contextlib.suppress(OSError):
                    n.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]  # a paused node, too
                    n.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            deadline = time.monotonic() + STOP_TIMEOUT
            for n in live:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    n.process.wait(max(0.0, deadline - time.monotonic()))  # type: ignore[union-attr]
        finally:
            for n in self.nodes.values():
                if n.process is not None and n.process.poll() is None:
                    with contextlib.suppress(OSError):
                        n.process.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        n.process.wait(5.0)
                self._close_log(n)
            for ns in reversed(self.namespaces):
                # Anything still inside (only processes this lab started) goes with it.
                pids = run_command(["ip", "netns", "pids", ns], check=False).stdout.split()
                for pid in pids:
                    with contextlib.suppress(OSError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                run_command(["ip", "netns", "del", ns], check=False)
            self.namespaces.clear()
            if failed and not self._tails_shown:
                # A failed assertion names no log: the tails, for where the test's output is all there is (CI).
                tails = [self.log_tail(n) for n in self.nodes.values()]
                print("\n".join(["netlab: the last lines of every node's log", *tails]), file=sys.stderr)
            if self._own_dir:
                if failed:
                    print(f"netlab: kept the homes and logs in {self.base_dir}", file=sys.stderr)
                else:
                    shutil.rmtree(self.base_dir, ignore_errors=True)

    def _install_sigterm_handler(self) -> None:
        """On SIGTERM (``timeout pytest ...``), tear the lab down first, then die of the signal as before."""
        self._sigterm: tuple[Any, Any] | None = None
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous is None:
            previous = signal.SIG_DFL

        def on_sigterm(signum: int, frame: object) -> None:
            self.close(failed=True)  # restores `previous`
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)
        self._sigterm = (on_sigterm, previous)

    def _restore_sigterm_handler(self) -> None:
        held = getattr(self, "_sigterm", None)
        self._sigterm = None
        if held is None:
            return
        ours, previous = held
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is ours:
            signal.signal(signal.SIGTERM, previous)

    @staticmethod
    def _close_log(node: LabNode) -> None:
        if node.log_file is not None:
            with contextlib.suppress(OSError):
                node.log_file.close()
            node.log_file = None
