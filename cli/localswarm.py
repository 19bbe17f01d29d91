"""A launcher of local swarms of real swapmeet node processes on 127.0.0.1.

Used by the swarm tests, by ``bench/swarm.py`` and by ``swapmeet demo``: each
node is a real ``swapmeet node run`` process with its own home directory, log
file and local API, so what runs here is exactly what a user runs.

    with LocalSwarm(4, net="test") as swarm:
        listing = swarm.client(1).publish({"title": "Road bike", "have": ["1 x road bike"]})
        swarm.wait_until(lambda: all(swarm.holds(i, listing["id"]) for i in swarm.running()), 15, what="delivery")

Topology: node 0 starts first; every later node bootstraps from node 0 plus up
to two random nodes that were already up when it started (like "each node dials
three others"). Nodes start in waves of doubling size (1, 1, 2, 4, ...) because
a node can only name a peer as a bootstrap address once that peer listens on
its (random) port, and because starting all of them at once on a small machine
only makes each slower (startup is mostly imports, ~2-4 s of CPU).

Everything is synchronous (subprocess + the stdlib HTTP client of
:mod:`swapmeet.cli.client`); from trio code call it through
``trio.to_thread.run_sync``. Every wait is bounded, and a wait that fails says
which node is at fault and shows the tail of that node's log.

No process is left behind: :meth:`LocalSwarm.close` (run by the context manager
on any exit, KeyboardInterrupt included, on SIGTERM to this process, and at
interpreter exit as a last resort) sends SIGTERM to every node, waits a bounded
time, then SIGKILLs the stragglers. Nodes stay in the caller's process group on
purpose: a Ctrl-C at a terminal, or a CI runner killing the group, reaches them
too. Only a SIGKILL of this process alone can orphan them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from swapmeet.node.contract import UnknownObject
from swapmeet.node.cookie import read_cookie
from swapmeet.node.home import Home
from swapmeet.node.identity_store import create_identity, load_identity
from swapmeet.protocol.errors import SwapmeetError

from .client import ApiClient

__all__ = ["LocalSwarm", "SwarmError", "SwarmNode", "SwarmTimeout"]

T = TypeVar("T")

LOOPBACK_LISTEN = "/ip4/127.0.0.1/tcp/0"
START_TIMEOUT = 60.0  # one node, from spawn to a /v1/status answer; generous because CI machines are busy
STOP_TIMEOUT = 15.0  # SIGTERM to exit; the node's own shutdown is bounded at a few seconds
CLI_TIMEOUT = 60.0
API_TIMEOUT = 10.0
LOG_TAIL_LINES = 40
BOOTSTRAP_RANDOM = 2  # besides node 0


class SwarmError(SwapmeetError):
    """A node of the local swarm did not start, stop or answer as expected."""


class SwarmTimeout(SwarmError, TimeoutError):
    """A bounded wait of the local swarm ran out."""


@dataclass
class SwarmNode:
    """One node of a :class:`LocalSwarm`: its home, log and (while running) process."""

    index: int
    home: Home
    log_path: Path
    peer_id: str
    #: Indices of the nodes it bootstraps from; resolved to their *current* addresses at each start,
    #: since a restarted node listens on a new port.
    bootstrap_from: list[int] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    #: The libp2p multiaddr (with /p2p/) and API port of the running process, known once it is up.
    addr: str | None = None
    api_port: int | None = None
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalSwarm:
    """``n`` real node processes on loopback for network ``net``; see the module docstring.

    ``base_dir``: where the homes (``node0``, ``node1``...) and logs (``node0.log``...) go;
    default a temporary directory, removed by :meth:`close` unless ``keep_dir``. Homes
    that already hold an identity are reused (their book and peers.json too).
    ``extra_args``: appended to every ``node run`` command line; ``node_args``: appended
    only to the command lines of the given node indices (e.g. ``{3: ["--archive"]}``).
    ``node_module``: for the given node indices, run ``python -m MODULE --home HOME node run
    ...`` instead of the ``swapmeet`` command (the demo's deliberately dishonest node, see
    :mod:`swapmeet.cli.demo.cheater`). ``seed``: makes the random choice of bootstrap peers
    reproducible.

    Size: the one handle the process tests, the benches and the demo hold on a swarm: process
    lifecycle (start, stop, kill, restart, close), bounded waits, and one accessor per fact about
    a node (home, peer id, pid, address, log). Split up, every caller would juggle several objects
    that all need the same process table.
    """

    def __init__(
        self,
        n: int,
        *,
        net: str,
        base_dir: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        seed: int | None = None,
        keep_dir: bool = False,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        env: dict[str, str] | None = None,
        node_args: Mapping[int, Sequence[str]] | None = None,
        node_module: Mapping[int, str] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("a swarm needs at least one node")
        self.n = n
        self.net = net
        self.extra_args = list(extra_args)
        self.node_args = {i: list(args) for i, args in (node_args or {}).items()}
        self.node_module = dict(node_module or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._rng = random.Random(seed)
        self._own_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="swapmeet-swarm-") if base_dir is None else base_dir).absolute()
        self._keep_dir = keep_dir
        self.nodes: list[SwarmNode] = []
        # The user's own node settings (SWAPMEET_API_PORT, SWAPMEET_BOOTSTRAP...) must not reach a
        # test swarm: a fixed API port alone would break it. Everything else is passed through.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SWAPMEET_")}
        self._env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._closed = False
        self._sigterm: tuple[Callable[[int, Any], None], Any] | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalSwarm:
        try:
            self.start()
        except BaseException as exc:
            self.close(failed=not isinstance(exc, KeyboardInterrupt))
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(failed=exc_type is not None and not issubclass(exc_type, KeyboardInterrupt))

    def start(self) -> None:
        """Create the homes, start the nodes in waves, wait until all are up and the swarm is connected."""
        atexit.register(self.close)  # a last resort if the caller never reaches close()
        self._install_sigterm_handler()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._init_homes(range(self.n))
        up: list[int] = []
        while len(up) < self.n:
            # Wave sizes 1, 1, 2, 4...: every node of a wave can name nodes of earlier waves.
            wave = list(range(len(up), min(self.n, len(up) + max(1, len(up)))))
            for i in wave:
                self.nodes[i].bootstrap_from = self._pick_bootstrap(up)
                self.start_node(i, wait=False)
            for i in wave:
                self.wait_up(i)
            up += wave
        self.wait_connected()

    def add_node(self, *, bootstrap: Sequence[int | str] | None = None, wait: bool = True) -> int:
        """Start one more node (a late joiner) and return its index.

        ``bootstrap``: node indices and/or multiaddrs to dial; default node 0 plus up to
        two random running nodes, as at start.
        """
        (i,) = self._init_homes([len(self.nodes)])
        if bootstrap is None:
            self.nodes[i].bootstrap_from = self._pick_bootstrap(self.running())
            self.start_node(i, wait=wait)
        else:
            self.start_node(i, bootstrap=bootstrap, wait=wait)
        return i

    def start_node(self, i: int, *, bootstrap: Sequence[int | str] | None = None, wait: bool = True) -> None:
        """Start node ``i`` (again). ``bootstrap``: indices and/or multiaddrs to dial instead of the
        node's own list; ``()`` for none, so that it can only find peers through its peers.json."""
        node = self.nodes[i]
        if node.running:
            raise SwarmError(f"node {i} is already running (pid {node.process.pid})")  # type: ignore[union-attr]
        targets = node.bootstrap_from if bootstrap is None else bootstrap
        addrs = self._bootstrap_addrs(targets)
        module = self.node_module.get(i)
        prefix = self._cli_prefix(i) if module is None else [sys.executable, "-m", module, "--home", str(node.home)]
        argv = [
            *prefix,
            "node",
            "run",
            "--listen",
            LOOPBACK_LISTEN,
            "--net",
            self.net,
            "--no-mdns",
            *(arg for addr in addrs for arg in ("--bootstrap", addr)),
            *self.extra_args,
            *self.node_args.get(i, ()),
        ]
        self._close_log(node)
        node.log_file = open(node.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        node.starts += 1
        stamp = time.strftime("%H:%M:%S")
        node.log_file.write(f"=== localswarm {stamp}: start #{node.starts} of node {i}: {' '.join(argv)}\n".encode())
        node.log_file.flush()
        node.addr = node.api_port = None
        node.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=node.log_file,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=self.base_dir,
        )
        if wait:
            self.wait_up(i)

    def stop_node(self, i: int, timeout: float | None = None) -> int:
        """SIGTERM node ``i`` and wait for it; returns its exit code.

        A node that does not exit within ``timeout`` is SIGKILLed and :class:`SwarmError`
        raised (with its log tail): a hanging shutdown is a bug worth seeing.
        """
        node = self.nodes[i]
        if node.process is None:
            raise SwarmError(f"node {i} was never started")
        proc = node.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        timeout = self.stop_timeout if timeout is None else timeout
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self._close_log(node)
            raise SwarmError(
                f"node {i} (pid {proc.pid}) did not exit within {timeout:g}s of SIGTERM; killed it\n" + self.log_tail(i)
            ) from None
        self._close_log(node)
        return code

    def kill_node(self, i: int) -> int:
        """SIGKILL node ``i`` (a crash: no cleanup at all) and reap it; returns its exit code."""
        node = self.nodes[i]
        if node.process is None:
            raise SwarmError(f"node {i} was never started")
        if node.process.poll() is None:
            node.process.kill()
        code = node.process.wait(self.stop_timeout)
        self._close_log(node)
        return code

    def restart_node(self, i: int, *, bootstrap: Sequence[int | str] | None = None, wait: bool = True) -> None:
        """Stop node ``i`` cleanly if it runs, then start it again (see :meth:`start_node`)."""
        if self.nodes[i].running:
            self.stop_node(i)
        self.start_node(i, bootstrap=bootstrap, wait=wait)

    def close(self, *, failed: bool = False) -> None:
        """SIGTERM every node, wait (bounded), SIGKILL the stragglers. Idempotent; never raises for a node.

        ``failed``: the swarm is closed because of an error; a temporary base directory is then kept
        (and named on stderr) so that the logs quoted in the error can still be read.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._restore_sigterm_handler()
        try:
            live = [node for node in self.nodes if node.running]
            for node in live:
                with contextlib.suppress(OSError):
                    node.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            deadline = time.monotonic() + self.stop_timeout
            for node in live:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(max(0.0, deadline - time.monotonic()))  # type: ignore[union-attr]
        finally:
            # Also reached on a second Ctrl-C during the wait above: whatever still runs is killed.
            for node in self.nodes:
                if node.process is not None and node.process.poll() is None:
                    with contextlib.suppress(OSError):
                        node.process.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        node.process.wait(5.0)
                self._close_log(node)
            if self._own_dir and (self._keep_dir or failed):
                if failed:
                    print(f"localswarm: kept the homes and logs in {self.base_dir}", file=sys.stderr)
            elif self._own_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    # ------------------------------------------------------------------ waiting

    def wait_up(self, i: int, timeout: float | None = None) -> dict[str, Any]:
        """Wait until node ``i`` wrote its cookie and ``/v1/status`` answers; returns the status."""
        node = self.nodes[i]
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if node.process is None or node.process.poll() is not None:
                code = None if node.process is None else node.process.returncode
                raise SwarmError(f"node {i} exited (code {code}) before it was up\n{self.log_tail(i)}")
            cookie = read_cookie(node.home)
            # The pid check skips a cookie left behind by an earlier, killed process of this home.
            if cookie is not None and cookie.pid == node.process.pid:
                try:
                    status = ApiClient(node.home, cookie, timeout=API_TIMEOUT).status()
                except SwapmeetError as exc:
                    last = exc
                else:
                    node.api_port = cookie.port
                    node.addr = _loopback_addr(status.get("addrs", []))
                    if node.addr is None:
                        raise SwarmError(f"node {i} reports no loopback TCP address: {status.get('addrs')}")
                    return status
            time.sleep(0.1)
        raise SwarmTimeout(f"node {i} was not up within {timeout:g}s (last error: {last})\n{self.log_tail(i)}")

    def wait_all_up(self, timeout: float | None = None) -> None:
        for i in self.running():
            self.wait_up(i, timeout)

    def wait_connected(self, timeout: float = 30.0) -> None:
        """Wait until the running nodes form one connected graph (by their ``/v1/peers``)."""

        def connected() -> bool:
            ids = {self.nodes[i].peer_id: i for i in self.running()}
            edges = {
                i: {ids[p["peer_id"]] for p in self.client(i).peers() if p["peer_id"] in ids} for i in ids.values()
            }
            if not edges:
                return True
            seen, todo = set(), [next(iter(edges))]
            while todo:
                j = todo.pop()
                if j not in seen:
                    seen.add(j)
                    todo.extend(edges[j] | {k for k, near in edges.items() if j in near})
            return len(seen) == len(edges)

        self.wait_until(connected, timeout, what="the swarm to be connected")

    def wait_until(
        self,
        predicate: Callable[[], T],
        timeout: float,
        *,
        what: str = "the condition",
        interval: float = 0.2,
        nodes: Iterable[int] | None = None,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that.

        A :class:`SwapmeetError` from the predicate (a node not answering for a moment)
        counts as "not yet". On timeout, :class:`SwarmTimeout` names ``what``, the last
        value or error, and shows the log tails of ``nodes`` (default: every node).
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                value = predicate()
            except SwapmeetError as exc:
                value, last = None, exc  # type: ignore[assignment]
            else:
                if value:
                    return value
                last = value
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        tails = "\n".join(self.log_tail(i) for i in (range(len(self.nodes)) if nodes is None else nodes))
        raise SwarmTimeout(f"timed out after {timeout:g}s waiting for {what} (last: {last!r:.300})\n{tails}")

    # ------------------------------------------------------------------ talking to nodes

    def client(self, i: int, timeout: float = API_TIMEOUT) -> ApiClient:
        """The API client of node ``i`` (read from its cookie now, so it follows restarts)."""
        return ApiClient.for_home(self.nodes[i].home, timeout=timeout)

    def listing_ids(self, i: int, query: str | None = None) -> set[str]:
        """Ids of the live listings node ``i`` holds (at most 1000)."""
        return {x["id"] for x in self.client(i).listings(query, limit=1000)}

    def holds(self, i: int, object_id: str) -> bool:
        """Whether node ``i`` holds the object (a listing, withdrawal...); expired ones until pruned."""
        try:
            self.client(i).get(object_id)
        except UnknownObject:
            return False
        return True

    def cli(
        self, i: int, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``swapmeet --home <home of node i> ARGS...``; with ``check``, a non-zero exit raises."""
        argv = [*self._cli_prefix(i), *args]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, env=self._env, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise SwarmTimeout(f"`{' '.join(args)}` at node {i} took more than {timeout:g}s") from None
        if check and done.returncode != 0:
            raise SwarmError(
                f"`{' '.join(args)}` at node {i} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
            )
        return done

    def cli_json(self, i: int, *args: str, timeout: float = CLI_TIMEOUT) -> Any:
        """Run a CLI command with ``--json`` appended and decode what it printed."""
        return json.loads(self.cli(i, *args, "--json", timeout=timeout).stdout)

    # ------------------------------------------------------------------ inspection

    def __len__(self) -> int:
        return len(self.nodes)

    def running(self) -> list[int]:
        return [node.index for node in self.nodes if node.running]

    def home(self, i: int) -> Home:
        return self.nodes[i].home

    def peer_id(self, i: int) -> str:
        return self.nodes[i].peer_id

    def pid(self, i: int) -> int | None:
        proc = self.nodes[i].process
        return None if proc is None else proc.pid

    def addr(self, i: int) -> str:
        """Node ``i``'s libp2p multiaddr on loopback, with ``/p2p/<peer id>`` (known once it is up)."""
        addr = self.nodes[i].addr
        if addr is None:
            raise SwarmError(f"node {i} is not up, so its address is unknown")
        return addr

    def log_path(self, i: int) -> Path:
        return self.nodes[i].log_path

    def log_text(self, i: int) -> str:
        """Everything node ``i`` logged, over all its starts."""
        with contextlib.suppress(FileNotFoundError):
            return self.nodes[i].log_path.read_text(errors="replace")
        return ""

    def log_tail(self, i: int, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of node ``i``'s log, headed by who it is (for failure messages)."""
        node = self.nodes[i]
        state = "running" if node.running else f"exited {node.process.returncode}" if node.process else "never started"
        tail = self.log_text(i).splitlines()[-lines:]
        head = f"--- node {i} ({node.peer_id[-8:]}, pid {self.pid(i)}, {state}) log {node.log_path}, last lines:"
        return "\n".join([head, *tail])

    # ------------------------------------------------------------------ internals

    def _install_sigterm_handler(self) -> None:
        """On SIGTERM to this process, close the swarm first, then die of the signal as before.

        Python's default for SIGTERM is to die at once, without ``finally`` blocks or atexit,
        which would leave every node running (e.g. ``timeout 600 pytest``). Only from the main
        thread (the only one that may set handlers); a previous handler is chained, not replaced.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous is None:  # set from outside Python: the best we can restore is the default
            previous = signal.SIG_DFL

        def on_sigterm(signum: int, frame: object) -> None:
            self.close()  # restores `previous`
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                os.kill(os.getpid(), signal.SIGTERM)  # the default action, now that the nodes are gone

        signal.signal(signal.SIGTERM, on_sigterm)
        self._sigterm = (on_sigterm, previous)

    def _restore_sigterm_handler(self) -> None:
        if self._sigterm is None:
            return
        ours, previous = self._sigterm
        self._sigterm = None
        # Only if nobody installed another handler on top of ours meanwhile (it chains to ours).
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is ours:
            signal.signal(signal.SIGTERM, previous)

    def _cli_prefix(self, i: int) -> list[str]:
        return [sys.executable, "-m", "swapmeet.cli.main", "--home", str(self.nodes[i].home)]

    def _init_homes(self, indices: Iterable[int]) -> list[int]:
        """Create the ``SwarmNode`` entries and an unencrypted identity where no key exists.

        What ``swapmeet init --no-passphrase`` does, in this process: a CLI process per node would
        cost its start-up (~0.3 s of CPU each) for nothing that the nodes depend on (the command
        itself has its own process tests).
        """
        created = []
        for i in indices:
            assert i == len(self.nodes), "nodes are added in order"
            home = Home(self.base_dir / f"node{i}")
            self.nodes.append(SwarmNode(index=i, home=home, log_path=self.base_dir / f"node{i}.log", peer_id=""))
            created.append(i)
        for i in created:
            home = self.nodes[i].home
            exists = home.identity_key.exists()
            self.nodes[i].peer_id = (load_identity(home) if exists else create_identity(home, None)).peer_id
        return created

    def _pick_bootstrap(self, up: Sequence[int]) -> list[int]:
        if not up:
            return []
        first = 0 if 0 in up else up[0]
        others = [j for j in up if j != first]
        return [first, *self._rng.sample(others, min(BOOTSTRAP_RANDOM, len(others)))]

    def _bootstrap_addrs(self, targets: Sequence[int | str]) -> list[str]:
        addrs = []
        for target in targets:
            if isinstance(target, str):
                addrs.append(target)
            elif self.nodes[target].running and self.nodes[target].addr is not None:
                addrs.append(self.nodes[target].addr)  # type: ignore[arg-type]
        return addrs

    @staticmethod
    def _close_log(node: SwarmNode) -> None:
        if node.log_file is not None:
            with contextlib.suppress(OSError):
                node.log_file.close()
            node.log_file = None


def _loopback_addr(addrs: Iterable[str]) -> str | None:
    for addr in addrs:
        if addr.startswith("/ip4/127.") and "/tcp/" in addr and "/p2p/" in addr:
            return addr
    return None
