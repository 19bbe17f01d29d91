"""The ``swapmeet`` command as a user runs it (issue 6): real processes against real nodes.

Every command is run as ``python -m swapmeet.cli.main --home HOME ...`` with no
standard input and none of the developer's ``SWAPMEET_*`` settings
(:func:`tests.cli_helpers.run_cli`), against a swarm of two real ``swapmeet node
run`` processes on 127.0.0.1 (:class:`swapmeet.cli.localswarm.LocalSwarm`),
shared by the whole module because a node start costs seconds of CPU. Each test
checks the output a person reads (or the ``--json`` fields a script reads) and
the exit code: every command's happy path, and its bad inputs: an unknown id, an
ambiguous id prefix, a malformed quantity, no node running, a wrong passphrase.

Two listings whose ids share their first four hex digits (the shortest prefix a
user may type) are made deterministically: before the swarm starts, node 0's
own key signs listings until two ids share a 4-digit prefix (a birthday search,
a few hundred signatures), and they go into node 0's offer book, as if it had
published them in an earlier run. Everything else goes through the CLI.

Every wait is bounded (``LocalSwarm.wait_until``), and a wait for something
*not* to happen (listings of another network) comes after a positive control
that the same path delivers. The swarm and the extra node are stopped by
context managers whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from swapmeet.cli.localswarm import LOOPBACK_LISTEN, LocalSwarm
from swapmeet.node import identity_store
from swapmeet.node.book import OfferBook
from swapmeet.node.home import Home
from swapmeet.protocol.build import make_listing
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.objects import Item, Listing

from tests.cli_helpers import CLI, assert_one_line_error, clean_env, run_cli
from tests.test_cli_identity import write_fast_encrypted_key

pytestmark = pytest.mark.slow

DELIVERY_S = 20.0  # gossip takes milliseconds; the margin is for a loaded 2-core machine
START_S = 60.0
SHORT = re.compile(r"[0-9a-f]{12}")
LISTING_FIELDS = {
    "kind", "id", "author", "title", "type", "have", "want", "desc", "tags", "category",
    "created", "expires", "series", "rev", "window", "due", "loc",
}  # fmt: skip


@dataclass
class World:
    swarm: LocalSwarm
    twins: tuple[Listing, Listing]  # node 0's listings whose ids share their first 4 hex digits

    def home(self, i: int) -> Path:
        return self.swarm.home(i).root


def colliding_listings(identity: Identity, now: int) -> tuple[Listing, Listing]:
    """Two listings signed by ``identity`` whose ids share the first 4 hex digits (bounded search)."""
    seen: dict[str, Listing] = {}
    for n in range(20_000):  # 2**16 buckets: a pair is expected after ~320 listings
        listing = make_listing(
            identity,
            title=f"Jar of jam no. {n}",
            have=[Item(item="jam", qty=1, unit="pc")],
            want=[Item(item="honey", qty=1, unit="pc")],
            tags=["jam"],
            created=now - 60,
            expires=now + 7 * 86_400,
        )
        other = seen.setdefault(listing.id.hex()[:4], listing)
        if other is not listing:
            return other, listing
    raise AssertionError("no two of 20000 listing ids share a 4-digit prefix")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("cliproc")
    home0 = Home(base / "node0")  # LocalSwarm reuses a home that holds a key, with its book
    identity = identity_store.create_identity(home0, None)
    twins = colliding_listings(identity, int(time.time()))
    with OfferBook.in_home(home0) as book:
        assert all(r.stored for r in book.add_many(twins))
    # A fresh network name per run: concurrent test runs on this machine never mix.
    with LocalSwarm(2, net=f"cliproc-{secrets.token_hex(4)}", base_dir=base, seed=3) as swarm:
        yield World(swarm, twins)


# --------------------------------------------------------------------------- helpers


def sm(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``swapmeet --home HOME ARGS...`` as a user runs it."""
    return run_cli("--home", str(home), *args, env=clean_env(**env))


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """The command succeeded, said nothing on stderr; its stdout."""
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr == "", proc.stderr
    return proc.stdout


def js(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(proc))


def not_running(proc: subprocess.CompletedProcess[str], home: Path) -> None:
    assert_one_line_error(
        proc, 3, f"no node is running for home {home}", f"start one with: swapmeet --home {home} node run"
    )


def short_peer(peer_id: str) -> str:
    return f"{peer_id[:4]}..{peer_id[-6:]}"


def listed(world: World, i: int, *query: str) -> list[dict[str, Any]]:
    """What ``swapmeet listings QUERY --json`` says at node ``i``."""
    return js(sm(world.home(i), "listings", *query, "--limit", "1000", "--json"))


def wait_listed(world: World, i: int, listing_id: str, present: bool = True) -> None:
    world.swarm.wait_until(
        lambda: any(x["id"] == listing_id for x in listed(world, i)) == present,
        DELIVERY_S,
        what=f"listing {listing_id[:12]} {'at' if present else 'gone from'} node {i}",
    )


def publish(world: World, i: int, title: str, *args: str) -> dict[str, Any]:
    return js(sm(world.home(i), "publish", "--title", title, "--have", "1 x thing", *args, "--json"))


# --------------------------------------------------------------------------- identity and node


def test_id_shows_the_peer_id_the_public_key_in_hex_and_live_addrs(world: World) -> None:
    swarm = world.swarm
    info = js(sm(world.home(0), "id", "--json"))
    assert set(info) == {"peer_id", "public_key", "addrs"}
    key = identity_store.load_identity(swarm.home(0)).public_key
    assert (info["peer_id"], info["public_key"]) == (swarm.peer_id(0), key.hex())
    assert swarm.addr(0) in info["addrs"]
    lines = ok(sm(world.home(0), "id")).splitlines()
    assert lines[0].split() == ["peer", "id", swarm.peer_id(0)]
    assert lines[1].split() == ["public", "key", key.hex()]
    assert any(line.split()[-1] == swarm.addr(0) for line in lines)


def test_node_status_and_peers(world: World) -> None:
    swarm = world.swarm
    status = js(sm(world.home(0), "node", "status", "--json"))
    assert {"peer_id", "net", "addrs", "peers", "book", "trades", "uptime_s", "version"} <= set(status)
    assert set(status["trades"]) == {"offers_to_answer", "awaiting_you", "pending", "complete", "lapsed"}
    assert (status["peer_id"], status["net"]) == (swarm.peer_id(0), swarm.net)
    assert status["peers"] >= 1 and status["book"]["listings"] >= 2
    text = ok(sm(world.home(0), "node", "status"))
    assert re.search(rf"^net +{swarm.net}$", text, re.M) and re.search(r"^uptime +\d", text, re.M)
    assert re.search(r"^trades +\d+ offers to answer, \d+ awaiting your signature", text, re.M)

    peers = js(sm(world.home(1), "peers", "--json"))
    assert swarm.peer_id(0) in [p["peer_id"] for p in peers]
    assert all(set(p) >= {"peer_id", "addrs"} for p in peers)
    lines = ok(sm(world.home(1), "peers")).splitlines()
    assert lines[0].split() == ["PEER", "ID", "CONNECTION", "ADDRS"]
    assert any(line.startswith(swarm.peer_id(0) + " ") for line in lines[1:])


def test_bootstrap_peers_are_logged_one_line_each(world: World) -> None:
    # node 1 bootstrapped from node 0 (LocalSwarm's topology): one line names the peer it dialled
    log = world.swarm.log_text(1)
    assert f"connected to bootstrap peer {world.swarm.addr(0)}" in log


def test_a_second_node_for_a_home_is_refused(world: World) -> None:
    proc = sm(world.home(0), "node", "run", "--listen", LOOPBACK_LISTEN, "--no-mdns")
    assert_one_line_error(proc, 1, "a node is already running for home", "node stop")


# --------------------------------------------------------------------------- listings


def test_publish_find_and_withdraw(world: World) -> None:
    title = f"Road bike {secrets.token_hex(3)}"
    out = ok(
        sm(world.home(1), "publish", "--title", title, "--have", "1 x road bike", "--want", "10 kg x apples",
           "--tag", "bikes", "--category", "sports/cycling")
    )  # fmt: skip
    match = re.fullmatch(rf"published ({SHORT.pattern})  {title}  \(goods, expires in 7d\)\n", out)
    assert match, out
    short = match[1]

    # it reaches node 0 by gossip; the user finds it there by words, category, author, wanted item
    found = world.swarm.wait_until(
        lambda: [x for x in listed(world, 0, "road", "bike") if x["id"].startswith(short)],
        DELIVERY_S,
        what="the listing at node 0",
    )
    (listing,) = found
    assert set(listing) >= LISTING_FIELDS
    assert listing["author"] == world.swarm.peer_id(1) and listing["title"] == title
    assert listing["have"] == [{"item": "road bike", "qty": 1, "unit": "pc"}]
    assert listing["want"] == [{"item": "apples", "qty": 10, "unit": "kg"}]
    for query in (["--category", "sports"], ["--author", world.swarm.peer_id(1)], ["--wants", "Apples"]):
        assert listing["id"] in [x["id"] for x in listed(world, 0, *query)], query
    assert listing["id"] not in [x["id"] for x in listed(world, 0, "--kind", "service")]

    lines = ok(sm(world.home(0), "listings", "road", "bike")).splitlines()
    assert lines[0].split() == ["ID", "KIND", "TITLE", "HAVE", "WANT", "AUTHOR", "EXPIRES"]
    row = next(line for line in lines if line.startswith(short + "  "))
    for cell in ("goods", title, "1 x road bike", "10 kg x apples", short_peer(world.swarm.peer_id(1)), "in 7d"):
        assert cell in row, (cell, row)

    # withdraw by the short id: the answer says which listing it was
    out = ok(sm(world.home(1), "withdraw", short))
    assert re.fullmatch(rf"withdrew {short}  {title}  \(withdrawal {SHORT.pattern}, announced to peers\)\n", out), out
    wait_listed(world, 0, listing["id"], present=False)
    assert ok(sm(world.home(0), "listings", title)) == "no listings found\n"
    # gone: the same id is now unknown (exit 2), and the message says where to look
    assert_one_line_error(sm(world.home(1), "withdraw", short), 2, "no object", "swapmeet listings")


def test_publish_json_and_the_kinds_of_listing(world: World) -> None:
    before = int(time.time())
    rental = publish(world, 0, "Camping tent", "--kind", "rental", "--window", "1d..3d", "--expires", "12h",
                     "--loc", "u33db", "--want", "3 x jam")  # fmt: skip
    assert set(rental) >= LISTING_FIELDS and rental["kind"] == "listing" and rental["type"] == "rental"
    assert before + 12 * 3600 - 5 <= rental["expires"] <= int(time.time()) + 12 * 3600 + 5
    start, end = rental["window"]
    assert end - start == 2 * 86_400 and rental["loc"] == "u33db" and rental["due"] is None
    loan = publish(world, 0, "Lend a ladder", "--kind", "loan", "--due", "14d")
    assert loan["type"] == "loan" and loan["due"] > loan["created"] + 13 * 86_400
    ok(sm(world.home(0), "withdraw", rental["id"], "--json"))
    withdrawal = js(sm(world.home(0), "withdraw", loan["id"][:12], "--json"))
    assert set(withdrawal) >= {"kind", "id", "author", "series", "created"}
    assert withdrawal["kind"] == "withdrawal" and withdrawal["series"] == loan["series"]


def test_unknown_id(world: World) -> None:
    for unknown in ("ffffffffffff", "f" * 64):
        line = assert_one_line_error(sm(world.home(0), "withdraw", unknown), 2, "no object")
        assert "swapmeet listings" in line  # ... and what to do about it


def test_ambiguous_id_prefix(world: World) -> None:
    first, second = (x.id.hex() for x in world.twins)
    prefix = first[:4]
    assert second.startswith(prefix)
    home = world.home(0)
    assert {first, second} <= {x["id"] for x in listed(world, 0, "jam")}
    assert_one_line_error(sm(home, "withdraw", prefix), 2, f"{prefix} matches several objects", "type more of the id")
    # the short ids from the table tell them apart
    out = ok(sm(home, "withdraw", first[:12]))
    assert out.startswith(f"withdrew {first[:12]}  Jar of jam no. ")
    # with one of them gone, the 4-digit prefix is unambiguous again
    out = ok(sm(home, "withdraw", prefix))
    assert out.startswith(f"withdrew {second[:12]}  Jar of jam no. ")


def test_someone_elses_listing_is_refused(world: World) -> None:
    listing = publish(world, 0, f"Garden work {secrets.token_hex(3)}")
    wait_listed(world, 1, listing["id"])
    assert_one_line_error(sm(world.home(1), "withdraw", listing["id"][:12]), 1, "is not yours")
    ok(sm(world.home(0), "withdraw", listing["id"][:12]))


@pytest.mark.parametrize(
    ("option", "text", "needle"),
    [
        ("--have", "0 x bike", "from 1 to 1000000000000"),
        ("--have", "10000000000000 x bike", "from 1 to 1000000000000"),
        ("--have", "1.5 x bike", "QTY x ITEM"),
        ("--have", "-2 x bike", "QTY x ITEM"),
        ("--have", "two x bikes", "QTY x ITEM"),
        ("--want", "x apples", "QTY x ITEM"),
        ("--want", "3 kg apples", "QTY x ITEM"),
    ],
)
def test_malformed_quantity(world: World, option: str, text: str, needle: str) -> None:
    args = ["--have", "1 x bike"] if option == "--want" else []
    proc = sm(world.home(0), "publish", "--title", "Bike", *args, option, text)
    assert_one_line_error(proc, 2, option, repr(text), needle)


def test_bad_input_the_node_reports(world: World) -> None:
    home = world.home(0)
    assert_one_line_error(sm(home, "publish", "--title", "Bike", "--have", "1 x bike", "--tag", "Bikes"), 2, "tags[0]")
    assert_one_line_error(sm(home, "publish", "--title", "Tent", "--have", "1 x tent", "--kind", "rental"), 2, "window")
    assert_one_line_error(sm(home, "withdraw", "not-hex"), 2, "'not-hex'")
    assert_one_line_error(sm(home, "withdraw", "abc"), 2, "at least 4 hex digits")
    assert_one_line_error(sm(home, "listings", "--author", "bob"), 2, "PeerID")
    usage = sm(home, "listings", "--kind", "barter")  # click's own usage error: still exit 2, no traceback
    assert usage.returncode == 2 and "barter" in usage.stderr and "Traceback" not in usage.stderr


def test_debug_shows_the_traceback(world: World) -> None:
    proc = run_cli("--debug", "--home", str(world.home(0)), "withdraw", "ffffffffffff")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "UnknownObject" in proc.stderr


# --------------------------------------------------------------------------- configuration, ledger, audit


def test_config_show_path_and_completion(world: World) -> None:
    home = world.home(0)
    shown = js(sm(home, "config", "show", "--json", SWAPMEET_NET="elsewhere"))
    assert set(shown) == {"listen", "bootstrap", "net", "api_port", "mdns", "dht", "relay_service", "archive", "follow"}
    assert shown["net"] == {"value": "elsewhere", "source": "env SWAPMEET_NET"}
    assert shown["mdns"] == {"value": True, "source": "default"}
    lines = ok(sm(home, "config", "show")).splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "SOURCE"] and len(lines) == 10
    assert "Usage: swapmeet config show" in ok(sm(home, "config", "show", "--help"))
    assert ok(sm(home, "config", "path")) == f"{home / 'config.toml'}\n"
    for shell in ("bash", "zsh", "fish"):
        assert "_SWAPMEET_COMPLETE" in ok(sm(home, "completion", shell))
    assert_one_line_error(sm(home, "config", "show", SWAPMEET_MDNS="maybe"), 2, "SWAPMEET_MDNS", "'maybe'")


def test_ledger_and_audit_of_a_running_nodes_home(world: World, tmp_path: Path) -> None:
    home = world.home(0)
    summary = js(sm(home, "ledger", "show", "--json"))
    assert set(summary) == {"chains", "totals"}
    ok(sm(home, "ledger", "show"))
    assert js(sm(home, "ledger", "verify", "--json"))["ok"] is True
    report = js(sm(home, "audit", "--json"))
    assert set(report) >= {"chains", "entries", "exchanges", "parties", "findings"} and report["findings"] == []
    export = tmp_path / "ledger.smx"
    exported = js(sm(home, "ledger", "export", str(export), "--json"))
    assert exported == {"file": str(export), "entries": summary["totals"]["entries"], "author": None}
    assert_one_line_error(sm(home, "ledger", "export", str(export)), 1, "exists", "--force")
    imported = js(sm(tmp_path / "copy", "ledger", "import", str(export), "--json"))
    assert imported["refused"] == 0 and imported["accepted"] == exported["entries"]
    assert ok(sm(tmp_path / "copy", "audit", str(export))).rstrip().endswith(": clean")
    assert_one_line_error(sm(home, "ledger", "show", "12D3KooWXYZ"), 2, "no chain held")
    assert_one_line_error(sm(home, "audit", str(tmp_path / "nope.smx")), 2, "no such file")


# --------------------------------------------------------------------------- passphrase, networks, no node


@contextlib.contextmanager
def node_process(home: Path, log: Path, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``swapmeet --home HOME node run ARGS...`` in the background; always stopped (SIGTERM, then SIGKILL)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*CLI, "--home", str(home), "node", "run", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(**env),
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def test_encrypted_key_other_network_and_no_node(world: World, tmp_path: Path) -> None:
    """A third node: an encrypted key (wrong, missing, right passphrase), on another network
    bootstrapped from node 0 (connected, but no listings cross), then stopped: 'not running'."""
    swarm = world.swarm
    home, log = tmp_path / "other", tmp_path / "other.log"
    write_fast_encrypted_key(home, "right horse")
    other_net = f"{swarm.net}-other"
    run_args = ["--listen", LOOPBACK_LISTEN, "--net", other_net, "--no-mdns", "--bootstrap", swarm.addr(0)]

    # wrong or missing passphrase: refused in one line before the node starts
    proc = sm(home, "node", "run", *run_args, SWAPMEET_PASSPHRASE="wrong horse")
    assert_one_line_error(proc, 2, "wrong passphrase", str(home / "identity.key"))
    assert_one_line_error(sm(home, "node", "run", *run_args), 2, "SWAPMEET_PASSPHRASE", "no terminal")
    assert_one_line_error(sm(home, "id", SWAPMEET_PASSPHRASE="wrong horse"), 2, "wrong passphrase")
    assert not (home / "api.cookie").exists()

    with node_process(home, log, *run_args, SWAPMEET_PASSPHRASE="right horse") as proc:

        def up() -> dict[str, Any] | None:
            assert proc.poll() is None, log.read_text()
            status = sm(home, "node", "status", "--json")
            return json.loads(status.stdout) if status.returncode == 0 else None

        status = swarm.wait_until(up, START_S, what="the third node to be up", nodes=[])
        assert status["net"] == other_net
        swarm.wait_until(
            lambda: f"connected to bootstrap peer {swarm.addr(0)}" in log.read_text(),
            DELIVERY_S,
            what="the third node's bootstrap line",
            nodes=[],
        )
        secret = js(sm(home, "publish", "--title", "Other-net bike", "--have", "1 x bike", "--json"))
        # positive control: a listing published at node 0 after that reaches node 1 ...
        marker = publish(world, 0, f"Same-net marker {secrets.token_hex(3)}")
        wait_listed(world, 1, marker["id"])
        # ... but nothing crosses between the networks, in either direction
        assert secret["id"] not in {x["id"] for x in listed(world, 0)}
        assert secret["id"] not in {x["id"] for x in listed(world, 1)}
        theirs = {x["id"] for x in js(sm(home, "listings", "--json"))}
        assert theirs == {secret["id"]}

        stopped = js(sm(home, "node", "stop", "--json"))
        assert stopped == {"stopping": True, "stopped": True, "pid": proc.pid}
        assert proc.wait(15) == 0

    # no node runs for that home any more: every client command says so, and how to start one
    for args in (
        ["node", "status"],
        ["node", "stop"],
        ["peers", "--json"],
        ["listings", "bike"],
        ["publish", "--title", "Bike", "--have", "1 x bike"],
        ["withdraw", secret["id"][:12]],
    ):
        not_running(sm(home, *args), home)
    ok(sm(world.home(0), "withdraw", marker["id"][:12]))
