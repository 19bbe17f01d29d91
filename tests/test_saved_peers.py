"""peers.json: a restarted node redials its peers; a peer's fresh address replaces its old one."""

from __future__ import annotations

import json
from pathlib import Path

from swapmeet.node.home import Home
from swapmeet.node.runtime import Node, NodeConfig
from swapmeet.protocol.identity import Identity


def _addr(port: int, who: Identity) -> str:
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{who.peer_id}"


def test_a_peers_new_address_replaces_its_old_one(tmp_path: Path) -> None:
    me, ada, ben = Identity.generate(), Identity.generate(), Identity.generate()
    node = Node(Home(tmp_path / "home").ensure(), me, NodeConfig())
    node.saved_peers.write([_addr(4001, ada), _addr(4002, ben)])
    # Ada restarted on another port: only her new address is kept; Ben's stays.
    node.saved_peers.write([_addr(5001, ada)])
    assert json.loads(node.home.peers_file.read_text()) == [_addr(5001, ada), _addr(4002, ben)]
    assert node.saved_peers.load() == [_addr(5001, ada), _addr(4002, ben)]


def test_our_own_address_and_junk_are_never_redialled(tmp_path: Path) -> None:
    me, ada = Identity.generate(), Identity.generate()
    node = Node(Home(tmp_path / "home").ensure(), me, NodeConfig())
    node.home.peers_file.write_text(json.dumps([_addr(4000, me), 42, "/ip4/1.2.3.4/tcp/1", _addr(4001, ada)]))
    assert node.saved_peers.load() == [_addr(4001, ada)]
