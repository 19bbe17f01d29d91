"""TradeMaximizer want lists: the reader (a problem a fault, the rest read), the report, ``match --wants``."""

from __future__ import annotations

import json
from pathlib import Path

from swapmeet.protocol.matching import wantlist
from swapmeet.protocol.matching.solve import solve

from .cli_helpers import assert_one_line_error, run_cli

RING = """\
#! ALLOW-DUMMIES REQUIRE-COLONS
# the ring: Ada's ladder for Ben's tent, Ben's tent for Cai's lessons, Cai's lessons for the ladder
(ada) LADDER : TENT
(ben) TENT : LESSONS
(cai) LESSONS : LADDER
(dan) BOOK : LADDER TENT
"""


def solved(text: str, cap: int = 0) -> tuple[wantlist.WantList, list[list[wantlist.Step]], int]:
    wl = wantlist.parse(text)
    s = solve(wl.graph(), cap)
    return wl, wantlist.loops(wl, s.rings), s.items_traded


def test_a_three_way_ring_and_an_item_nobody_wants() -> None:
    wl, loops, items = solved(RING)
    assert wl.problems == []
    assert items == 3
    assert [(s.user, s.gives, s.receives) for s in loops[0]] == [
        ("ADA", "LADDER", "TENT"),
        ("BEN", "TENT", "LESSONS"),
        ("CAI", "LESSONS", "LADDER"),
    ]
    text = "\n".join(wantlist.report(wl, [r for r in solve(wl.graph()).rings], 0.0, 3))
    assert "TRADE LOOPS (3 total trades):" in text
    assert "(ADA) LADDER  receives (BEN) TENT" in text
    assert "(DAN) BOOK" in text and "does not trade" in text
    assert "Num trades  = 3 of 4 items (75.0%)" in text


def test_dummies_are_scoped_to_their_user_and_never_count() -> None:
    text = """\
#! ALLOW-DUMMIES
(ada) LADDER : %ANY
(ada) %ANY : TENT BIKE
(ben) %ANY : LADDER
(ben) TENT : %ANY
(cai) BIKE : TENT
"""
    wl, loops, items = solved(text)
    assert wl.problems == []
    # ladder -> ada's %ANY -> bike -> tent -> ben's %ANY -> ladder: three real items, not five
    assert items == 3
    assert sorted((s.user, s.gives, s.receives) for loop in loops for s in loop) == [
        ("ADA", "LADDER", "BIKE"),
        ("BEN", "TENT", "LADDER"),
        ("CAI", "BIKE", "TENT"),
    ]


def test_dummies_need_the_option_and_a_user() -> None:
    wl = wantlist.parse("(ada) %X : TENT\n%Y : TENT\n(ben) TENT : %X\n")
    assert [str(p) for p in wl.problems] == [
        "line 1: dummy item %X without ALLOW-DUMMIES, skipped",
        "line 2: dummy item %Y without a (username), skipped",
        "line 3: unknown item %X",
    ]


def test_each_fault_is_one_line_with_its_number_and_the_rest_is_read() -> None:
    text = """\
#! REQUIRE-COLONS NO-SUCH-OPTION ITERATIONS=x SEED=7
!BEGIN-OFFICIAL-NAMES
LADDER a ladder
TENT a tent
LESSONS guitar lessons
LADDER again
!END-OFFICIAL-NAMES
!SOMETHING
(ada) LADDER : TENT TENT ZEBRA # comment
(ada) LADDER : TENT TENT ZEBRA
(ben) TENT LESSONS
(ben) TENT : LESSONS LADDER ; LADDER
(cai) LESSONS : LADDER LESSONS
(cai) LESSONS : TENT
(dan) SOFA : LADDER
(eve TENT : LADDER
(ada) a b : c
#! ALLOW-DUMMIES
"""
    wl = wantlist.parse(text)
    assert [str(p) for p in wl.problems] == [
        "line 1: unknown option NO-SUCH-OPTION, ignored",
        r"line 1: option ITERATIONS needs a value matching [1-9]\d*, ignored",
        "line 6: official name LADDER given twice",
        "line 8: unknown directive !SOMETHING, ignored",
        "line 9: a comment (#) can only start a line",
        "line 10: TENT is repeated in the want list of LADDER",
        "line 10: unknown item ZEBRA",
        "line 11: missing colon, and REQUIRE-COLONS is set",
        "line 12: LADDER is repeated in the want list of TENT",
        "line 13: LESSONS is in its own want list, dropped",
        "line 14: LESSONS already has a want list (line 13), this one skipped",
        "line 15: SOFA is not an official name, its want list skipped",
        "line 16: missing ')' after the username",
        "line 17: exactly one item goes before the colon",
        "line 18: options (#!) go before the official names and want lists, ignored",
    ]
    assert wl.options == ["REQUIRE-COLONS", "SEED=7"] and wl.inert == ["SEED"]
    assert [x.name for x in wl.items] == ["LADDER", "TENT", "LESSONS"]
    assert solve(wl.graph()).items_traded == 3


def test_own_items_case_and_priorities() -> None:
    wl = wantlist.parse("(ada) A : B\n(ada) B : A\n(ben) c : a\n")
    assert [str(p) for p in wl.problems] == [
        "line 1: B belongs to the same user (ADA), dropped",
        "line 2: A belongs to the same user (ADA), dropped",
    ]
    cs = wantlist.parse("#! CASE-SENSITIVE\n(ada) a : B\n(ben) B : A\n")
    assert [str(p) for p in cs.problems] == ["line 3: unknown item A"]
    ex = wantlist.parse("#! EXPLICIT-PRIORITIES\n(ada) A : B=3 C=0\n(ben) B : A=1\n(cai) C : A\n")
    assert [str(p) for p in ex.problems] == ["line 2: C=0: not NAME=N with N >= 1, dropped"]
    assert solve(ex.graph()).items_traded == 2
    noex = wantlist.parse("(ada) A : B=3\n(ben) B : A\n")
    assert [str(p) for p in noex.problems] == ["line 1: B=3: NAME=N needs EXPLICIT-PRIORITIES, dropped"]


def test_usernames_with_spaces_and_required_usernames() -> None:
    wl = wantlist.parse("#! REQUIRE-USERNAMES\n(Ada L) LADDER : TENT\n(Ben) TENT : LADDER\nBIKE : TENT\n")
    assert [str(p) for p in wl.problems] == ["line 4: missing (username), and REQUIRE-USERNAMES is set"]
    assert [x.user for x in wl.items] == ["ADA L", "BEN"]


def test_the_cap_counts_items_in_a_loop(tmp_path: Path) -> None:
    wants = tmp_path / "wants.txt"
    wants.write_text(RING, encoding="utf-8")
    capped = json.loads(run_cli("match", "--wants", str(wants), "--max-parties", "2", "--json").stdout.splitlines()[-1])
    assert capped["items_traded"] == 0 and capped["rings"] == [] and capped["optimal"]
    free = json.loads(run_cli("match", "--wants", str(wants), "--max-parties", "0", "--json").stdout.splitlines()[-1])
    assert free["items_traded"] == 3 and free["users_trading"] == 3
    assert free["rings"] == [
        [
            {"user": "ADA", "gives": "LADDER", "receives": "TENT"},
            {"user": "BEN", "gives": "TENT", "receives": "LESSONS"},
            {"user": "CAI", "gives": "LESSONS", "receives": "LADDER"},
        ]
    ]
    assert free["elapsed_s"] >= 0 and free["problems"] == []


def test_cli_text_and_problems_on_stderr(tmp_path: Path) -> None:
    wants = tmp_path / "wants.txt"
    wants.write_text(RING + "(eve) X : Y : Z\n", encoding="utf-8")
    proc = run_cli("match", "--wants", str(wants))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "swapmeet: line 7: more than one colon\n"
    assert "TRADE LOOPS (3 total trades):" in proc.stdout and "ITEM SUMMARY" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_cli_live_mode_needs_a_node_and_the_settlement_cap(tmp_path: Path) -> None:
    home = str(tmp_path / "nohome")
    assert_one_line_error(run_cli("--home", home, "match"), 3, "no node is running")
    proc = run_cli("--home", home, "match", "--max-parties", "9")
    assert proc.returncode == 2 and "at most 8 parties" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("--home", home, "match", "--wants", str(tmp_path / "x"), "--propose")
    assert proc.returncode == 2 and "--propose" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_bad_files_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("match", "--wants", str(tmp_path / "missing.txt")), 2, "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"(ada) A : \xff\xfe\n")
    assert_one_line_error(run_cli("match", "--wants", str(binary)), 2, "not UTF-8")
    proc = run_cli("match", "--wants", str(binary), "--max-parties", "1")
    assert proc.returncode == 2 and "--max-parties" in proc.stderr and "Traceback" not in proc.stderr
