"""Helpers for the settlement process tests and the dishonest-peer tests (not a test module).

- :class:`HookedSwarm`: a :class:`LocalSwarm` whose ``node run`` processes are
  ``tests/crashing_node.py`` (the normal node plus test-only hooks read from a
  file in the node's home: crash at a precise settlement step, or cheat);
  CLI commands still run the real ``swapmeet`` entry point.
- hooks: :func:`arm`, :func:`disarm`, :func:`crash_mark`, :func:`wait_crashed`.
- reading a node the way a user does: :func:`trades`, :func:`offers`,
  :func:`chain_payloads`, :func:`audit`; and cheap polling through the API.
- offline dishonesty: :func:`clone_identity`, :func:`signed_exchange`,
  :func:`append_offline` (two homes, one key, two different entries at one
  seq: a fork), :func:`forge_signature` (an exchange whose signature slot
  holds garbage, as raw bytes, since the builders would refuse to make it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from swapmeet.cli.localswarm import LocalSwarm, SwarmError
from swapmeet.ledger.store import LedgerStore
from swapmeet.node.home import Home
from swapmeet.node.identity_store import load_identity
from swapmeet.protocol import build, cbor
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.objects import DOMAIN, KIND_EXCHANGE, Exchange, Payload

HERE = Path(__file__).resolve().parent
CRASHING_NODE = HERE / "crashing_node.py"
HOOK_FILE = "test-hooks.json"  # in the node's home: what the hooks of crashing_node.py should do
CRASH_MARK = "crashed.json"  # in the node's home: written (fsynced) by the hook just before it kills the node


# --------------------------------------------------------------------------- the swarm


class HookedSwarm(LocalSwarm):
    """A LocalSwarm whose nodes run ``tests/crashing_node.py`` (``hooked``: which ones; default all).

    Without a hook file in its home such a node is exactly ``swapmeet node run``: the
    entry point only wraps the settlement service's decision executor and reads the file.
    """

    def __init__(
        self,
        n: int,
        *,
        hooked: Iterable[int] | None = None,
        per_node_args: dict[int, Sequence[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        self._hooked = None if hooked is None else set(hooked)
        self._per_node_args = {i: list(a) for i, a in (per_node_args or {}).items()}
        self._launching: int | None = None
        super().__init__(n, **kwargs)

    def start_node(self, i: int, **kwargs: Any) -> None:
        """As LocalSwarm's, plus ``per_node_args[i]`` on the command line (e.g. ``--archive``)."""
        self._launching = i
        common = self.extra_args
        self.extra_args = [*common, *self._per_node_args.get(i, ())]
        try:
            super().start_node(i, **kwargs)
        finally:
            self.extra_args = common
            self._launching = None

    def _cli_prefix(self, i: int) -> list[str]:
        if self._launching == i and (self._hooked is None or i in self._hooked):
            return [sys.executable, str(CRASHING_NODE), "--home", str(self.nodes[i].home)]
        return super()._cli_prefix(i)

    def crashed(self, i: int) -> bool:
        """Node ``i`` died (any exit) and was reaped."""
        proc = self.nodes[i].process
        return proc is not None and proc.poll() is not None


# --------------------------------------------------------------------------- hooks


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def arm(home: Home, **spec: Any) -> None:
    """Tell the hooked node of ``home`` what to do (read at once, before its next settlement step).

    Crash: ``crash={"decision": "Send", "kind": "exchange", "when": "before", "nth": 1}``: kill -9
    itself when the nth decision of that type (and, for Send/Announce, object kind) since arming is
    about to be carried out (``before``) or was just carried out (``after``).
    Cheat: ``overcommit=True``: the settlement machine never refuses to over-commit (rule R4 off).
    Short grace: ``grace=3``: reservations of lapsed exchanges are released 3 s after the deadline.
    """
    with contextlib.suppress(FileNotFoundError):
        (home.root / CRASH_MARK).unlink()
    _write_json(home.root / HOOK_FILE, spec)


def disarm(home: Home) -> None:
    with contextlib.suppress(FileNotFoundError):
        (home.root / HOOK_FILE).unlink()


def crash_mark(home: Home) -> dict[str, Any] | None:
    """What the hook wrote just before it killed the node: the decision and the exchange/offer id."""
    try:
        return json.loads((home.root / CRASH_MARK).read_text())
    except (FileNotFoundError, ValueError):
        return None


def wait_crashed(swarm: HookedSwarm, i: int, timeout: float) -> dict[str, Any]:
    """Wait until node ``i`` killed itself at its hook; returns the crash mark."""

    def dead() -> bool:
        return swarm.crashed(i)

    swarm.wait_until(dead, timeout, what=f"node {i} to crash at its hook", nodes=[i])
    mark = crash_mark(swarm.home(i))
    if mark is None:
        raise SwarmError(
            f"node {i} exited (code {swarm.nodes[i].process.returncode}) without a crash mark\n"  # type: ignore[union-attr]
            + swarm.log_tail(i)
        )
    swarm.kill_node(i)  # reap it and close its log
    return mark


# --------------------------------------------------------------------------- reading a node


def api(swarm: LocalSwarm, i: int, method: str, path: str, **kwargs: Any) -> Any:
    """One request to node ``i``'s local API (cheaper than a CLI process: for polling)."""
    return swarm.client(i).request(method, path, **kwargs)


def trades(swarm: LocalSwarm, i: int) -> list[dict[str, Any]]:
    """``swapmeet trades --json`` at node ``i``."""
    return swarm.cli_json(i, "trades")


def offers(swarm: LocalSwarm, i: int, *flags: str) -> list[dict[str, Any]]:
    return swarm.cli_json(i, "offers", *flags)


def chain_payloads(swarm: LocalSwarm, i: int, author: str) -> list[str]:
    """Payload ids of ``author``'s chain as node ``i`` holds it (``ledger show AUTHOR --json``); [] if none."""
    done = swarm.cli(i, "ledger", "show", author, "--json", check=False)
    if done.returncode != 0:
        if "no chain" in done.stderr or "no ledger" in done.stderr:
            return []
        raise SwarmError(f"ledger show at node {i} exited {done.returncode}: {done.stderr.strip()}")
    return [e["payload_id"] for e in json.loads(done.stdout)["entries"]]


def db_payloads(home: Home, author_key: bytes) -> set[bytes]:
    """Payload ids on ``author_key``'s chain in ``home``'s ledger, read straight from the database.

    For polling only (a read-only SQLite reader costs the node nothing); checks use the CLI.
    """
    if not home.ledger_db.exists():
        return set()
    with contextlib.closing(LedgerStore.open(home.ledger_db, readonly=True)) as store:
        return {row[0] for row in store._rows("SELECT payload_id FROM entries WHERE author = ?", (author_key,))}


def audit(swarm: LocalSwarm, i: int) -> tuple[int, dict[str, Any]]:
    """``swapmeet audit --json`` at node ``i``: (exit code, report). Exit 1 means findings."""
    done = swarm.cli(i, "audit", "--json", "--workers", "1", check=False)
    if done.returncode not in (0, 1):
        raise SwarmError(f"audit at node {i} exited {done.returncode}: {done.stderr.strip()}")
    return done.returncode, json.loads(done.stdout)


def run_quiet(swarm: LocalSwarm, i: int, *args: str) -> subprocess.CompletedProcess[str]:
    """A CLI command whose failure is part of the test (never raises for a non-zero exit)."""
    return swarm.cli(i, *args, check=False)


# --------------------------------------------------------------------------- offline dishonesty


def identity_of(home: Home) -> Identity:
    return load_identity(home)


def clone_identity(src: Home, dst: Home) -> None:
    """A second home holding the same (unencrypted) identity key: the same PeerID in two places."""
    dst.ensure()
    shutil.copy2(src.identity_key, dst.identity_key)


def signed_exchange(
    a: Identity, b: Identity, *, now: int, what: str = "1 x token", back: str = "1 x favour"
) -> Exchange:
    """A complete two-party exchange ``a`` <-> ``b`` for an offer on a listing of ``a``, signed by both."""
    listing = build.make_listing(
        a, title=f"offline {os.urandom(3).hex()}", have=[build.parse_item(what)], created=now - 60, expires=now + 86_400
    )
    offer = build.make_offer(
        b, listing, take=[build.parse_item(what)], give=[build.parse_item(back)], created=now - 50, expires=now + 3600
    )
    x = build.exchange_for_offer(offer, created=now - 40, deadline=now + 600)
    return build.sign_exchange(build.sign_exchange(x, a), b)


def append_offline(home: Home, identity: Identity, payloads: Sequence[Payload], *, now: int) -> list[bytes]:
    """Append ``payloads`` to ``identity``'s chain in ``home``'s ledger (no node running); the entry ids."""
    home.ensure()
    with contextlib.closing(LedgerStore.open(home.ledger_db)) as store:
        return [store.append_own(identity, p, now).id for p in payloads]


def forge_signature(x: Exchange, index: int, garbage: bytes | None = None) -> bytes:
    """The bytes of ``x`` with signature slot ``index`` replaced by ``garbage`` (default: 64 random bytes).

    Canonical CBOR, well-formed, the right shape: only the signature is wrong, so it is the trust
    boundary's signature check (not the decoder) that has to refuse it.
    """
    value = cbor.decode(x.raw, max_size=max(len(x.raw), 1))
    assert value[0] == DOMAIN and value[1] == KIND_EXCHANGE
    signatures = list(value[3])
    signatures[index] = os.urandom(64) if garbage is None else garbage
    return cbor.encode([DOMAIN, KIND_EXCHANGE, value[2], signatures])


def revive(swarm: LocalSwarm, i: int, timeout: float = 30.0) -> None:
    """Start node ``i`` again (it crashed or was stopped), dialling every running node, and wait
    until it is connected to all of them (a restarted node listens on a new port; its
    peers.json still holds the others' addresses, and stale ones must not get in the way)."""
    others = [j for j in swarm.running() if j != i]
    swarm.start_node(i, bootstrap=others)
    wanted = {swarm.peer_id(j) for j in others}

    def connected() -> bool:
        return wanted <= {p["peer_id"] for p in swarm.client(i).peers()}

    swarm.wait_until(connected, timeout, what=f"restarted node {i} to reconnect to nodes {others}")
