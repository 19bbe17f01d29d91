"""A test-only entry point: the normal ``swapmeet`` command, plus hooks in the node's settlement.

Run as ``python tests/crashing_node.py --home HOME node run ...`` (``tests.raw_peers.HookedSwarm``
does). It patches the running node's classes and then runs ``swapmeet.cli.main.main``
unchanged. The hooks do nothing until the file ``<home>/test-hooks.json`` exists; it is
re-read whenever it changes (one ``stat`` per settlement step), so a test arms a hook
in a running node just before the step it wants to hit (``tests.raw_peers.arm``).

Hook file keys (all optional):

- ``crash``: ``{"decision": NAME, "kind": KIND?, "when": "before"|"after", "nth": N}`` kill -9
  this process when the N-th matching settlement step since arming is about to be carried
  out (``before``) or has just been carried out (``after``). NAME is a decision class of
  :mod:`swapmeet.protocol.settlement` (``Persist``, ``Send``, ``AppendToLedger``...);
  KIND filters ``Send``/``Announce`` by the object's kind (``offer``, ``exchange``, ``notice``).
  ``after`` a ``Send`` means after the delivery finished (the peer acknowledged it, having
  already acted on it; or it went out by gossip); ``after`` an ``AppendToLedger`` means
  right after the durable append returned, before the node announced it or told its
  settlement machine. Just before dying the hook writes ``<home>/crashed.json`` (fsynced)
  naming the step and the exchange/offer it concerned.
- ``overcommit``: true: the settlement machine never refuses to over-commit a listing
  (rule R4 off): a dishonest maker.
- ``grace``: seconds: how long after a lapsed exchange's deadline its reservation is kept
  (the protocol's GRACE is 300 s; a test of the release cannot wait that long).

Nothing in swapmeet imports this file, and it changes nothing unless its hook file exists.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

HOOK_FILE = "test-hooks.json"
CRASH_MARK = "crashed.json"


def _home_from_argv(argv: list[str]) -> Path:
    for i, arg in enumerate(argv):
        if arg == "--home" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--home="):
            return Path(arg.split("=", 1)[1])
    raise SystemExit("crashing_node: --home HOME is required")


class Hooks:
    """The hook file's current content and the crash counter (thread-safe: appends run in threads)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / HOOK_FILE
        self.spec: dict[str, Any] = {}
        self._stamp: tuple[int, int] | None = None
        self._count = 0
        self._lock = threading.Lock()

    def refresh(self) -> dict[str, Any]:
        with self._lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_ino, st.st_mtime_ns)
            except FileNotFoundError:
                stamp = None
            if stamp != self._stamp:
                self._stamp = stamp
                self._count = 0
                try:
                    self.spec = json.loads(self.path.read_text()) if stamp is not None else {}
                except (OSError, ValueError):
                    self.spec = {}
            return self.spec

    def step(self, decision: Any, when: str, ref: bytes | None = None) -> None:
        """A settlement step is about to run (``before``) or just ran (``after``): crash here?"""
        crash = self.refresh().get("crash")
        if not crash or crash.get("when", "before") != when or type(decision).__name__ != crash.get("decision"):
            return
        kind = crash.get("kind")
        obj = getattr(decision, "obj", None)
        if kind is not None and getattr(obj, "kind", None) != kind:
            return
        with self._lock:
            self._count += 1
            if self._count != int(crash.get("nth", 1)):
                return
        target = ref or _ref_of(decision)
        mark = {
            "decision": type(decision).__name__,
            "kind": getattr(obj, "kind", None),
            "when": when,
            "nth": self._count,
            "id": target.hex() if target else None,
            "pid": os.getpid(),
        }
        fd = os.open(self.home / CRASH_MARK, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(mark).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        sys.stderr.write(f"crashing_node: kill -9 {when} {mark['decision']} {mark['kind'] or ''} #{self._count}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _ref_of(decision: Any) -> bytes | None:
    for attr in ("obj", "exchange"):
        obj = getattr(decision, attr, None)
        if obj is not None and hasattr(obj, "id"):
            return obj.id
    return getattr(decision, "exchange_id", None)


def install(home: Path) -> Hooks:
    """Patch the node's settlement service, its ledger and the settlement machine (see the docstring)."""
    from swapmeet.ledger.store import LedgerStore
    from swapmeet.node import settlement
    from swapmeet.protocol.objects import Exchange
    from swapmeet.protocol.settlement import AppendToLedger, Send
    from swapmeet.protocol.settlement.reservations import Reservations

    hooks = Hooks(home)
    service = settlement.SettlementService

    carry_out = service._carry_out

    async def _carry_out(self: Any, decisions: Any) -> None:
        for d in decisions:
            hooks.step(d, "before")
            await carry_out(self, [d])
            if not isinstance(d, Send | AppendToLedger):  # their "after" is observed where it happens
                hooks.step(d, "after")

    deliver = service._deliver

    async def _deliver(self: Any, to: bytes, obj: Any, key: Any) -> None:
        await deliver(self, to, obj, key)
        hooks.step(Send(to, obj), "after")

    append_own = LedgerStore.append_own

    def _append_own(self: Any, identity: Any, payload: Any, time: int, **kwargs: Any) -> Any:
        entry = append_own(self, identity, payload, time, **kwargs)
        if isinstance(payload, Exchange):
            hooks.step(AppendToLedger(payload), "after")
        return entry

    handle = service.handle
    resume = service.resume

    def _apply_grace(self: Any) -> None:
        grace = hooks.refresh().get("grace")
        if grace is not None:
            self.machine.grace = int(grace)

    async def _handle(self: Any, event: Any) -> Any:
        _apply_grace(self)
        return await handle(self, event)

    async def _resume(self: Any) -> None:
        _apply_grace(self)
        await resume(self)

    over_commit = Reservations.over_commit

    def _over_commit(self: Reservations, exchange: Any) -> str | None:
        if hooks.refresh().get("overcommit"):
            return None  # the cheat
        return over_commit(self, exchange)

    service._carry_out = _carry_out  # type: ignore[method-assign]
    service._deliver = _deliver  # type: ignore[method-assign]
    service.handle = _handle  # type: ignore[method-assign]
    service.resume = _resume  # type: ignore[method-assign]
    LedgerStore.append_own = _append_own  # type: ignore[method-assign]
    Reservations.over_commit = _over_commit  # type: ignore[method-assign]
    return hooks


def main() -> None:
    argv = sys.argv[1:]
    install(_home_from_argv(argv))
    from swapmeet.cli.main import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()
