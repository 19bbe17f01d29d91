"""The node's client commands when no node runs: one line, exit 3, and how to start one.

Real processes (``python -m swapmeet.cli.main``) with no stdin and a bounded
timeout. Also: bad input is reported (exit 2) before any node is contacted, a
stale cookie counts as "not running", and ``id`` still works (with no addrs).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from swapmeet.cli import output, parsing
from swapmeet.node.cookie import write_cookie
from swapmeet.node.home import Home

from tests.cli_helpers import assert_one_line_error, run_cli

CLIENT_COMMANDS = [
    ["node", "status"],
    ["node", "status", "--json"],
    ["node", "stop"],
    ["peers"],
    ["peers", "--json"],
    ["listings"],
    ["listings", "bike", "--kind", "goods", "--json"],
    ["withdraw", "0123456789ab"],
    ["publish", "--title", "Road bike", "--have", "1 x bike", "--want", "3 kg x apples", "--expires", "7d"],
]


def assert_not_running(proc: subprocess.CompletedProcess[str], home: Path) -> None:
    line = assert_one_line_error(proc, 3)
    assert f"no node is running for home {home}" in line
    assert f"start one with: swapmeet --home {home} node run" in line


@pytest.mark.parametrize("args", CLIENT_COMMANDS, ids=" ".join)
def test_client_commands_without_a_node(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "home"
    assert_not_running(run(home, *args), home)
    assert not home.exists()  # asking never creates the home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, timeout=30)
    return int(proc.stdout)


def test_stale_cookies_mean_not_running(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # a live pid (ours) but nothing listens on the port: the connection is refused
    write_cookie(Home(home), free_port(), "token")
    assert_not_running(run(home, "node", "status"), home)
    # a pid that has exited: not even worth a connection attempt
    cookie = {"port": free_port(), "token": "token", "pid": dead_pid()}
    (home / "api.cookie").write_text(json.dumps(cookie))
    assert_not_running(run(home, "listings"), home)
    # a damaged cookie
    (home / "api.cookie").write_text("{not json")
    assert_not_running(run(home, "peers", "--json"), home)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--have", "three bikes"], ["--have", "QTY x ITEM", "'three bikes'"]),
        (["--have", "0 x bike"], ["--have", "from 1 to", "'0 x bike'"]),
        (["--have", "1 x bike", "--want", f"1 x {'a' * 81}"], ["--want", "at most 80 characters"]),
        (["--have", "1 x bike", "--want", "apples"], ["--want", "'apples'"]),
        (["--have", "1 x bike", "--expires", "soon"], ["--expires", "'soon'"]),
        (["--have", "1 x bike", "--kind", "rental", "--window", "tomorrow"], ["--window", "START..END"]),
    ],
)
def test_publish_bad_input_is_exit_2_before_contacting_a_node(
    tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    home = tmp_path / "home"
    line = assert_one_line_error(run(home, "publish", "--title", "Road bike", *args), 2)
    for needle in needles:
        assert needle in line, (needle, line)
    assert "no node is running" not in line


GOOD = {"title": "Road bike", "have": "1 x bike"}


@pytest.mark.parametrize(
    ("catalogue", "needles"),
    [
        ("{not json", ["shop.json: not JSON"]),
        ('{"title": "x"}', ["shop.json: expected a list of listings, got an object"]),
        ("[]", ["shop.json: expected 1 to 256 listings, got 0"]),
        (json.dumps([GOOD] * 257), ["expected 1 to 256 listings, got 257: split the file"]),
        (json.dumps([GOOD, 3]), ["shop.json[1]: expected an object of the publish options, got a number"]),
        (json.dumps([{"title": "x"}]), ["shop.json[0].have: missing"]),
        (json.dumps([{**GOOD, "have": []}]), ["shop.json[0].have: missing"]),
        (json.dumps([{**GOOD, "colour": "red"}]), ["shop.json[0].colour: no such option", "tag"]),
        (json.dumps([{**GOOD, "tag": [{"a": 1}]}]), ["shop.json[0].tag[0]: expected a string, got an object"]),
        (json.dumps([GOOD, {**GOOD, "want": "apples"}]), ["shop.json[1].want:", "'apples'"]),
        (json.dumps([{**GOOD, "expires": "soon"}]), ["shop.json[0].expires:", "'soon'"]),
        (json.dumps([{**GOOD, "photo": "missing.jpg"}]), ["shop.json[0].photo:", "missing.jpg"]),
    ],
    ids=lambda x: x if isinstance(x, str) and len(x) < 30 else None,
)
def test_import_bad_input_is_exit_2_before_contacting_a_node(
    tmp_path: Path, catalogue: str, needles: list[str]
) -> None:
    (tmp_path / "shop.json").write_text(catalogue)
    home = tmp_path / "home"
    line = assert_one_line_error(run(home, "import", str(tmp_path / "shop.json")), 2)
    for needle in needles:
        assert needle in line, (needle, line)
    assert "no node is running" not in line
    line = assert_one_line_error(run(home, "import", str(tmp_path / "none.json")), 2)
    assert "none.json: cannot read it" in line
    (tmp_path / "good.json").write_text(json.dumps([GOOD]))
    assert_not_running(run(home, "import", str(tmp_path / "good.json")), home)  # a good file needs the node


def test_other_bad_input_is_exit_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    line = assert_one_line_error(run(home, "withdraw", "not-hex"), 2)
    assert "ID" in line and "'not-hex'" in line
    line = assert_one_line_error(run(home, "withdraw", "ab"), 2)
    assert "at least 4 hex digits" in line
    line = assert_one_line_error(run(home, "listings", "--author", "bob"), 2)
    assert "PeerID" in line
    proc = run(home, "listings", "--kind", "barter")  # click's own usage error
    assert proc.returncode == 2 and "barter" in proc.stderr
    line = assert_one_line_error(run(home, "node", "run", "--net", "Bad Net!"), 2)
    assert "--net" in line


def test_id_without_a_node_shows_no_addrs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = run(home, "init", "--no-passphrase")
    assert proc.returncode == 0, proc.stderr
    proc = run(home, "id", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["addrs"] == []
    proc = run(home, "id")
    assert proc.returncode == 0 and "no node is running" in proc.stdout


def test_help_lists_the_node_commands(tmp_path: Path) -> None:
    proc = run(tmp_path, "--help")
    assert proc.returncode == 0
    for name in ("node", "peers", "publish", "withdraw", "listings"):
        assert name in proc.stdout
    proc = run(tmp_path, "node", "run", "--help")
    assert proc.returncode == 0 and "4001" in proc.stdout


def test_time_and_output_helpers() -> None:
    assert parsing.parse_duration("7d") == 7 * 86_400
    assert parsing.parse_duration("1d12h") == 36 * 3600
    assert parsing.parse_duration("30m") == 1800
    assert parsing.parse_duration("1700000000") is None
    assert parsing.parse_expires("12h") == {"expires_in_s": 43_200}
    assert parsing.parse_expires("1900000000") == {"expires": 1_900_000_000}
    assert parsing.parse_when("2d", 1000, "--due") == 1000 + 2 * 86_400
    assert parsing.parse_window("1d..3d", 0) == [86_400, 3 * 86_400]
    assert output.relative(1000 + 6 * 86_400 + 5000, now=1000) == "in 6d"
    assert output.relative(1000 + 7 * 86_400 - 2, now=1000) == "in 7d"
    assert output.relative(1000 + 59, now=1000) == "in 59s"
    assert output.relative(1000 - 7200, now=1000) == "2h ago"
    assert output.items_text(
        [{"item": "bike", "qty": 2, "unit": "pc"}, {"item": "apples", "qty": 3, "unit": "kg"}]
    ) == ("2 x bike, 3 kg x apples")
    assert output.short("ab" * 32) == "ab" * 6


def run(home: Path, *args: str):
    return run_cli("--home", str(home), *args)
