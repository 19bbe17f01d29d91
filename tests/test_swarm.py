"""Swarm tests: several real ``swapmeet node run`` processes on 127.0.0.1, driven through the CLI and the API.

One swarm of four nodes (:class:`swapmeet.cli.localswarm.LocalSwarm`) is shared by the whole
module, because starting a node costs 2-4 s of CPU; a test that needs a node to join late, to
die or to stop adds one of its own and leaves the four base nodes running. Each test publishes
its own listings (unique titles), so what one test leaves in the book does not disturb another.

Every wait is bounded; a wait that runs out shows the tail of every node's log. Waits for
something *not* to happen come after a positive control that shows the same path delivers, and
after evidence (a node's own log line) that the thing in question reached the node.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from swapmeet.cli.localswarm import LocalSwarm
from swapmeet.node.host import GossipSettings, open_host, topic
from swapmeet.protocol import batch, boundary
from swapmeet.protocol.build import make_listing, parse_item
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.ratelimit import AuthorRateLimiter

from tests.cli_helpers import assert_one_line_error

pytestmark = pytest.mark.slow

BASE_NODES = 4
DELIVERY_S = 20.0  # gossip takes milliseconds; the margin is for a loaded 2-core CI machine
SYNC_S = 30.0  # a joining node: connect, reconcile, fetch
# GossipSub also re-offers recent messages (IHAVE/IWANT from its message cache, gossip_history
# heartbeats long) to a peer that just connected. A catch-up test must not be passed by that: what
# the node missed is first made older than the cache's memory (plus a margin for heartbeats that a
# busy machine delays), so that only sync can bring it, and the test checks the sync logs for it.
_GOSSIP = GossipSettings()
GOSSIP_MEMORY_S = (_GOSSIP.gossip_history + 2) * _GOSSIP.heartbeat_interval
# sync.py's one line per session, as the initiator logs it (the responder logs nothing).
SYNC_LINE = re.compile(r"synced with (\S+): .* fetched \d+ \((\d+) new\), pushed (\d+)")


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarm]:
    # A fresh network name per run: swarms of concurrent test runs on this machine never mix.
    net = f"swarm-{secrets.token_hex(4)}"
    # Homes and logs under pytest's tmp dir, which keeps the last runs: the logs outlive a failure.
    with LocalSwarm(BASE_NODES, net=net, base_dir=tmp_path_factory.mktemp("swarm"), seed=1) as local:
        yield local


def unique(label: str) -> str:
    return f"{label} {secrets.token_hex(3)}"


def publish(swarm: LocalSwarm, i: int, title: str, *, have: str = "1 x thing", **spec: object) -> dict[str, Any]:
    return swarm.client(i).publish({"title": title, "have": [have], **spec})


def wait_everywhere(swarm: LocalSwarm, ids: set[str], *, timeout: float = DELIVERY_S, what: str = "") -> None:
    """Wait until every running node lists all of ``ids``."""
    swarm.wait_until(
        lambda: all(ids <= swarm.listing_ids(i) for i in swarm.running()),
        timeout,
        what=what or f"{len(ids)} listing(s) to reach all {len(swarm.running())} running nodes",
    )


def wait_nowhere(swarm: LocalSwarm, ids: set[str], *, timeout: float = DELIVERY_S, what: str = "") -> None:
    """Wait until no running node lists any of ``ids``."""
    swarm.wait_until(
        lambda: not any(ids & swarm.listing_ids(i) for i in swarm.running()),
        timeout,
        what=what or f"{len(ids)} listing(s) to disappear from every running node",
    )


def outlast_gossip_memory(since: float) -> None:
    """Sleep until gossip can no longer deliver what was published at monotonic time ``since``."""
    time.sleep(max(0.0, since + GOSSIP_MEMORY_S - time.monotonic()))


def run_log(swarm: LocalSwarm, i: int) -> str:
    """Node ``i``'s log since its latest start."""
    return "=== localswarm" + swarm.log_text(i).rsplit("=== localswarm", 1)[1]


def log_marks(swarm: LocalSwarm) -> dict[int, int]:
    """Where every node's log ends now, to read only what comes after."""
    return {i: len(swarm.log_text(i)) for i in range(len(swarm))}


def synced_to(swarm: LocalSwarm, i: int, marks: dict[int, int]) -> int:
    """How many objects catch-up sync brought to node ``i`` since ``marks``: new objects it fetched in
    sessions it initiated, plus objects its peers pushed to it in sessions they initiated."""
    me = swarm.peer_id(i)[-8:]
    total = 0
    for j in range(len(swarm)):
        for peer, new, pushed in SYNC_LINE.findall(swarm.log_text(j)[marks.get(j, 0) :]):
            if j == i:
                total += int(new)
            elif peer == me:
                total += int(pushed)
    return total


def port_of(multiaddr: str) -> int:
    return int(re.search(r"/tcp/(\d+)", multiaddr).group(1))  # type: ignore[union-attr]


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            return False
    except OSError:
        return True


def children_of(pid: int) -> set[int]:
    """Child processes of ``pid`` (Linux /proc; empty elsewhere)."""
    found: set[int] = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            found |= {int(c) for c in children.read_text().split()}
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------------- gossip


def test_listing_published_at_one_node_reaches_all_others(swarm: LocalSwarm) -> None:
    title = unique("Road bike")
    published = swarm.cli_json(1, "publish", "--title", title, "--have", "1 x road bike", "--want", "20 kg x apples")
    wait_everywhere(swarm, {published["id"]})
    # The CLI's view at a node that only heard of it through the swarm.
    (seen,) = [x for x in swarm.cli_json(3, "listings", title) if x["id"] == published["id"]]
    assert seen["author"] == swarm.peer_id(1)
    assert seen["title"] == title
    assert seen["have"] == [{"item": "road bike", "qty": 1, "unit": "pc"}]
    assert seen["want"] == [{"item": "apples", "qty": 20, "unit": "kg"}]
    assert seen["expires"] == published["expires"]


def test_a_burst_beyond_the_rate_budget_is_paced_not_lost(swarm: LocalSwarm) -> None:
    # 60 listings at once: more than the per-author burst. Other nodes reject a message with an object
    # over an author's budget, so the publisher must pace itself (below that budget, so that bunching
    # on the way does not push it over), and none may wait for a resync (60 s) to arrive.
    burst = AuthorRateLimiter().burst
    count = int(burst) + 10
    ids = {publish(swarm, 0, unique(f"Jar {n}"))["id"] for n in range(count)}
    wait_everywhere(swarm, ids, timeout=DELIVERY_S, what=f"a burst of {count} listings")
    assert "over its rate limit" not in "".join(swarm.log_text(i) for i in swarm.running())


def test_a_catalogue_import_reaches_every_node_in_one_gossip_message(swarm: LocalSwarm, tmp_path: Path) -> None:
    # A shop's catalogue: signed and stored in one request, and sent in one message (py-libp2p's cost is
    # per message). Every receiver logs one line per message it stored: "gossip from <author>: N new".
    titles = [unique(f"Shelf {n}") for n in range(12)]
    records = [{"title": t, "have": "1 x shelf", "want": ["2 kg x honey"], "tag": ["furniture"]} for t in titles]
    catalogue = tmp_path / "shop.json"
    catalogue.write_text(json.dumps(records))
    marks = log_marks(swarm)
    published = swarm.cli_json(1, "import", str(catalogue))
    assert [x["title"] for x in published] == titles
    assert all(x["tags"] == ["furniture"] and x["author"] == swarm.peer_id(1) for x in published)
    wait_everywhere(swarm, {x["id"] for x in published}, what="an imported catalogue")
    one_message = f"gossip from {swarm.peer_id(1)[-8:]}: {len(titles)} new object(s)"
    for i in swarm.running():
        if i != 1:
            assert one_message in swarm.log_text(i)[marks[i] :], swarm.log_tail(i)


def test_objects_other_authors_signed_are_relayed_each_author_in_its_own_paced_messages(swarm: LocalSwarm) -> None:
    # A program that keeps its own keys publishes through node 1 (POST /v1/objects): the node verifies the
    # objects as it would gossip, stores them and sends each author's in its own message, paced below the
    # author's budget (PROTOCOL.md §13).
    authors = [Identity(secrets.token_bytes(32)) for _ in range(3)]
    now = int(time.time())
    signed = [
        make_listing(who, created=now, expires=now + 3600, title=unique(f"Bowl {n}"), have=[parse_item("1 x bowl")])
        for who in authors
        for n in range(5)
    ]
    marks = log_marks(swarm)
    relayed = swarm.client(1).relay([x.raw for x in signed])
    assert [(x["id"], x["new"]) for x in relayed] == [(x.id.hex(), True) for x in signed]
    wait_everywhere(swarm, {x.id.hex() for x in signed}, what="relayed listings")
    for i in swarm.running():
        if i == 1:
            continue
        text = swarm.log_text(i)[marks[i] :]
        # one message per author, whoever forwarded it: "gossip from <forwarder>: 5 new object(s)" three times
        assert len(re.findall(r"gossip from \S+: 5 new object\(s\)", text)) == 3, swarm.log_tail(i)
        assert "over its rate limit" not in text
    assert [x["new"] for x in swarm.client(2).relay([signed[0].raw])] == [False]  # held: not gossiped again
    # The refusal of a backlog past MAX_WAITING is tested without the swarm (tests/test_gossip_store.py): here
    # its 216 paced objects would trickle into every node's book for a minute, under the tests that follow.


def test_a_catalogue_with_one_bad_listing_publishes_nothing(swarm: LocalSwarm, tmp_path: Path) -> None:
    before = swarm.listing_ids(2)
    records = [{"title": unique("Lamp"), "have": "1 x lamp"}, {"title": unique("Chair"), "have": "one chair"}]
    catalogue = tmp_path / "bad.json"
    catalogue.write_text(json.dumps(records))
    line = assert_one_line_error(swarm.cli(2, "import", str(catalogue), check=False), 2, f"{catalogue}[1].have")
    assert "QTY x ITEM" in line
    records[1]["have"] = "1 x chair"
    records.append({"title": unique("Desk"), "hav": "1 x desk"})
    catalogue.write_text(json.dumps(records))
    assert_one_line_error(swarm.cli(2, "import", str(catalogue), check=False), 2, f"{catalogue}[2].hav: no such option")
    records[2] = {"title": unique("Desk"), "have": "1 x desk", "tag": ["Not A Tag"]}  # the node refuses this one
    catalogue.write_text(json.dumps(records))
    line = assert_one_line_error(swarm.cli(2, "import", str(catalogue), check=False), 2, f"{catalogue}[2].")
    assert "tags[0]: must be a lowercase tag" in line and "listings[" not in line
    assert swarm.listing_ids(2) == before


def test_withdrawal_propagates(swarm: LocalSwarm) -> None:
    listing = publish(swarm, 2, unique("Desk for a day"), type="goods")
    wait_everywhere(swarm, {listing["id"]})
    withdrawal = swarm.cli_json(2, "withdraw", listing["id"][:12])
    assert withdrawal["series"] == listing["series"]
    wait_nowhere(swarm, {listing["id"]})
    # The tombstone itself is held everywhere, so a late copy of the listing cannot come back.
    swarm.wait_until(lambda: all(swarm.holds(i, withdrawal["id"]) for i in swarm.running()), DELIVERY_S)


def test_expiry_propagates(swarm: LocalSwarm) -> None:
    lifetime = 5
    title = unique("Soup tonight")
    published = swarm.cli_json(0, "publish", "--title", title, "--have", "1 x soup", "--expires", f"{lifetime}s")
    assert published["expires"] - published["created"] == lifetime
    # Bounded by the lifetime itself: an expired listing is hidden, so it must arrive before.
    wait_everywhere(swarm, {published["id"]}, timeout=lifetime, what="the short-lived listing to reach all")
    wait_nowhere(swarm, {published["id"]}, timeout=lifetime + 10, what="the expired listing to vanish everywhere")
    assert time.time() >= published["expires"]


# ---------------------------------------------------------------------- catch-up sync


def test_a_late_joiner_and_a_restarted_node_get_what_they_missed_by_sync(swarm: LocalSwarm) -> None:
    """Two nodes that missed traffic, sharing one wait for gossip to forget it: a newcomer that dials one
    node only (any one peer that has the book is enough), and node 3, stopped and restarted with no
    --bootstrap on a new port that nobody else knows (only its peers.json can help)."""
    node = 3
    before = publish(swarm, 1, unique("Ladder"))
    wait_everywhere(swarm, {before["id"]})
    # peers.json is written as peers connect; it must name peers that are still up.
    saved = swarm.home(node).peers_file.read_text()
    assert any(swarm.peer_id(i) in saved for i in swarm.running() if i != node)
    assert swarm.stop_node(node) == 0

    # Traffic that both miss: listings from three authors, one withdrawn, one expired before either is up,
    # and a withdrawal of one that node 3 holds.
    live = {publish(swarm, i % node, unique(f"Lot {i}"))["id"] for i in range(12)}
    gone = publish(swarm, 1, unique("Withdrawn lot"))
    short_lived = publish(swarm, 2, unique("Short-lived lot"), expires_in_s=2)
    wait_everywhere(swarm, live | {gone["id"], short_lived["id"]})
    withdrawal = swarm.client(1).withdraw(gone["id"])
    swarm.client(1).withdraw(before["id"])
    last_publish = time.monotonic()
    wait_nowhere(swarm, {gone["id"], before["id"]})
    outlast_gossip_memory(last_publish)

    # Everything above happened before the newcomer existed or while node 3 was down: only catch-up sync
    # can bring it. Both start at once (they do not know each other).
    marks = log_marks(swarm)
    late = swarm.add_node(bootstrap=[2], wait=False)
    swarm.start_node(node, bootstrap=(), wait=False)
    try:
        swarm.wait_up(late)
        swarm.wait_up(node)
        swarm.wait_until(
            lambda: swarm.listing_ids(late) == swarm.listing_ids(0) and live <= swarm.listing_ids(late),
            SYNC_S,
            what="the late joiner's book to equal node 0's",
        )
        assert swarm.holds(late, withdrawal["id"])  # tombstones travel too
        assert not swarm.holds(late, gone["id"])
        assert not swarm.holds(late, short_lived["id"])  # expired before it joined: never sent
        assert synced_to(swarm, late, marks) >= len(live) + 1  # the lots and the tombstone came by sync

        swarm.wait_until(
            lambda: swarm.client(node).status()["peers"] >= 1, SYNC_S, what="node 3 to redial a saved peer"
        )
        swarm.wait_until(
            lambda: swarm.listing_ids(node) == swarm.listing_ids(0),
            SYNC_S,
            what="the restarted node's book to equal node 0's",
        )
        assert live <= swarm.listing_ids(node)
        assert before["id"] not in swarm.listing_ids(node)
        this_run = run_log(swarm, node)
        assert "--bootstrap" not in this_run.splitlines()[0]
        assert "connected to bootstrap peer" in this_run  # the saved peers are dialled as bootstrap peers
        assert synced_to(swarm, node, marks) >= len(live) + 1  # the listings and the withdrawals came by sync
    finally:
        if swarm.nodes[late].running:
            swarm.stop_node(late)


# ---------------------------------------------------------------------- the trust boundary


async def test_invalid_objects_from_a_raw_peer_are_neither_stored_nor_forwarded(swarm: LocalSwarm) -> None:
    target = 1  # the node the raw peer talks to; the other nodes are "behind" it
    raw_identity = Identity(os.urandom(32))  # a fresh author, unknown to the swarm
    now = int(time.time())
    items = [parse_item("1 x widget")]

    def listing(title: str, created: int, expires: int) -> bytes:
        return make_listing(raw_identity, title=title, have=items, created=created, expires=expires).raw

    good = listing(unique("Raw peer control"), now, now + 3600)
    broken = bytearray(listing(unique("Raw peer forged"), now, now + 3600))
    broken[-1] ^= 0x01  # the last byte is in the signature
    expired = listing(unique("Raw peer stale"), now - 7200, now - 3600)
    garbage = b"GARBAGE" + bytes(range(256))
    bad_ids = {boundary.object_id(bytes(broken)).hex(), boundary.object_id(expired).hex()}
    me = raw_identity.peer_id[-8:]  # how the nodes' logs name the raw peer

    listings_topic = topic(swarm.net, "listings")
    async with open_host(raw_identity.seed, ["/ip4/127.0.0.1/tcp/0"], net=swarm.net) as host:
        # Accept-all: our own validator must not stop what we mean to send.
        await host.subscribe(listings_topic, lambda from_peer, data: True)
        await host.connect(swarm.addr(target))
        await host.wait_for_mesh(listings_topic, [swarm.peer_id(target)], timeout=15.0)

        # Positive control first: the path raw peer -> target -> everyone delivers a valid listing.
        # (After the invalid messages our score at the target is negative and it prunes us from its
        # mesh, so a later valid message might legitimately not be delivered.)
        await host.publish(listings_topic, batch.encode_batch([good]))
        good_id = boundary.object_id(good).hex()
        await trio.to_thread.run_sync(partial(wait_everywhere, swarm, {good_id}, what="the raw peer's valid listing"))

        refused_before = swarm.client(target).status()["activity"]["refused"]
        for data in (batch.encode_batch([bytes(broken)]), batch.encode_batch([expired]), garbage):
            await host.publish(listings_topic, data)

        # Evidence that all three reached the target and were judged there (refusals are logged
        # once per peer per minute, and all of them counted)...
        def rejected_at_target() -> bool:
            refused = swarm.client(target).status()["activity"]["refused"] - refused_before
            return refused >= 3 and f"rejected a listings message from {me}" in swarm.log_text(target)

        await trio.to_thread.run_sync(
            partial(swarm.wait_until, rejected_at_target, DELIVERY_S, what="3 rejections at the target")
        )
        # ...and a grace period in which a forwarded copy would have arrived (gossip takes milliseconds).
        await trio.sleep(1.0)

    for i in swarm.running():
        assert not any(swarm.holds(i, oid) for oid in bad_ids), f"node {i} stored an invalid object"
        if i != target:
            # A node behind the target never even saw them: nothing from the raw peer was rejected there.
            assert f"rejected a listings message from {me}" not in swarm.log_text(i), (
                f"node {i} received an invalid message: the target forwarded it"
            )
    assert "Traceback" not in swarm.log_text(target)


# ---------------------------------------------------------------------- shutdown


def test_sigterm_leaves_no_process_and_no_open_port(swarm: LocalSwarm) -> None:
    i = swarm.add_node()
    swarm.wait_until(lambda: swarm.client(i).status()["peers"] >= 1, SYNC_S, what="the new node to have peers")
    pid = swarm.pid(i)
    assert pid is not None
    api_port, p2p_port = swarm.nodes[i].api_port, port_of(swarm.addr(i))
    assert api_port is not None
    assert not refuses_connections(api_port) and not refuses_connections(p2p_port)
    children = children_of(pid)

    assert swarm.stop_node(i) == 0  # SIGTERM; the exit code of a clean shutdown

    assert not alive(pid)
    assert not any(alive(c) for c in children)
    assert refuses_connections(api_port), "the API port still accepts connections"
    assert refuses_connections(p2p_port), "the libp2p port still accepts connections"
    assert not swarm.home(i).api_cookie.exists()
    log = swarm.log_text(i)
    assert "received SIGTERM" in log and log.rstrip().endswith("node stopped")
    assert "Traceback" not in log and "did not close" not in log


def test_node_stop_via_the_cli(swarm: LocalSwarm) -> None:
    i = swarm.add_node()
    proc = swarm.nodes[i].process
    assert proc is not None
    done = swarm.cli(i, "node", "stop")
    assert "node stopped" in done.stdout
    assert proc.wait(10) == 0
    status = swarm.cli(i, "node", "status", check=False)
    assert status.returncode == 3, status.stderr  # "no node is running for home ..."
    assert "no node is running" in status.stderr
