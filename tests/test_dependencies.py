"""Pinned trust-path dependencies (issue 12): what is installed is what was tested.

``constraints.txt`` pins the exact versions of libp2p, pynacl, cbor2, trio, base58 and their
whole dependency tree; pyproject.toml bounds the direct ones to the tested minor version; the
README's two install commands and ``.ci/run`` install with ``-c constraints.txt``. These tests
fail on a drifted install (a version other than the pinned one, or outside pyproject's bounds), on
a new transitive dependency nobody pinned, and on an install command that forgets the constraints.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
TRUST_PATH = ("libp2p", "pynacl", "cbor2", "trio", "base58")


def pins() -> dict[str, str]:
    """``constraints.txt`` as {canonical name: exact version}; every line must be ``name==version``."""
    out: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert m, f"constraints.txt: not an exact pin: {line!r}"
        name = canonicalize_name(m.group(1))
        assert name not in out, f"constraints.txt pins {name} twice"
        out[name] = m.group(2)
    return out


OPTIONAL_MARK = "# Optional extras"  # constraints.txt: pins after this line belong to extras such as [bench]


def optional_pins() -> set[str]:
    """Names pinned for optional extras: checked against what is installed only where they are installed."""
    text = (ROOT / "constraints.txt").read_text()
    _, mark, rest = text.partition(OPTIONAL_MARK)
    assert mark, f"constraints.txt has no {OPTIONAL_MARK!r} line"
    return {canonicalize_name(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9._-]+)==", rest, re.MULTILINE)}


def drift(pinned: dict[str, str], installed: Callable[[str], str | None]) -> list[str]:
    """Every pinned package whose installed version differs (or that is missing), one line each."""
    found = []
    for name, version in sorted(pinned.items()):
        have = installed(name)
        if have is None or Version(have) != Version(version):
            found.append(f"{name}: pinned {version}, installed {have or 'nothing'}")
    return found


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def dependency_tree(roots: tuple[str, ...]) -> dict[str, str]:
    """The installed distributions ``roots`` need, transitively (markers evaluated here, no extras)."""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        dist = md.distribution(name)
        seen[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_installed_trust_path_is_exactly_the_pinned_one() -> None:
    optional = optional_pins()
    expected = {k: v for k, v in pins().items() if k not in optional or installed_version(k) is not None}
    assert drift(expected, installed_version) == []
    assert not optional & set(dependency_tree(TRUST_PATH))  # the trust path never rests on an optional pin


def test_a_drifted_install_is_caught() -> None:
    pinned = {"cbor2": "6.3.0", "pynacl": "1.6.2"}
    assert drift(pinned, {"cbor2": "6.3.0", "pynacl": "1.6.2"}.get) == []
    assert drift(pinned, {"cbor2": "6.4.0", "pynacl": "1.6.2"}.get) == ["cbor2: pinned 6.3.0, installed 6.4.0"]
    assert drift(pinned, {"cbor2": "6.3.0"}.get) == ["pynacl: pinned 1.6.2, installed nothing"]


def test_the_pins_cover_the_whole_dependency_tree_of_the_trust_path() -> None:
    tree = dependency_tree(TRUST_PATH)
    assert set(TRUST_PATH) <= set(tree)
    assert sorted(set(tree) - set(pins())) == []


@pytest.mark.parametrize("name", TRUST_PATH)
def test_pyproject_bounds_each_trust_path_dependency_and_the_pin_is_inside(name: str) -> None:
    reqs = {canonicalize_name(r.name): r for r in map(Requirement, project()["dependencies"])}
    spec = reqs[name].specifier
    # Bounded above: an exact pin, or an upper bound (a new minor version is a new library to test).
    assert any(s.operator in ("==", "<", "<=", "~=") for s in spec), f"{name}{spec} has no upper bound"
    assert Version(pins()[name]) in spec, f"the pinned {name} {pins()[name]} is outside {name}{spec}"
    assert Version(md.version(name)) in spec


def test_every_installed_dependency_satisfies_pyproject() -> None:
    extras = project()["optional-dependencies"]["test"]
    wrong = [
        f"{r.name}{r.specifier}: installed {installed_version(r.name)}"
        for r in map(Requirement, [*project()["dependencies"], *extras])
        if installed_version(r.name) is None or Version(installed_version(r.name) or "0") not in r.specifier
    ]
    assert wrong == []


def test_the_readme_and_ci_install_with_the_constraints() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 2, commands
    assert all(" -c constraints.txt " in c for c in commands), commands
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    # .ci/run runs exactly the README's test command (after set -e and cd to the repository)
    assert ci[-1] == commands[1] and "pytest" in commands[1]
