"""The house rules, checked on the source: imports run one way, libp2p stays in the host, protocol does no I/O.

Read from the files with :mod:`ast` (nothing is imported or run), so a rule broken
anywhere -- at module level, inside a function, under ``TYPE_CHECKING`` -- fails
here with the file and line:

- imports only go ``cli -> node -> ledger -> protocol``;
- only the host package (``node/host/``) imports py-libp2p (or its ``multiaddr``);
- ``protocol/`` imports no I/O, clock or concurrency module and opens no file;
- no import cycle between modules (imports that run: ``TYPE_CHECKING`` ones are left out);
- no function longer than 120 lines; no class with more than 25 methods unless its
  docstring says why in a paragraph starting ``Size:``;
- every sub-package is listed in pyproject.toml (or a plain ``pip install .`` would leave it out).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "node", "ledger", "protocol")  # folder = swapmeet.<folder>
# What each package may import (its own modules included).
ALLOWED = {
    "cli": {"cli", "node", "ledger", "protocol"},
    "node": {"node", "ledger", "protocol"},
    "ledger": {"ledger", "protocol"},
    "protocol": {"protocol"},
}
LIBP2P = ("libp2p", "multiaddr")
HOST_PACKAGE = "swapmeet.node.host"
# protocol/ is sans-IO: no sockets, files, databases, clocks, threads or event loops.
NO_IO = (
    "socket",
    "ssl",
    "select",
    "selectors",
    "sqlite3",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "subprocess",
    "signal",
    "threading",
    "multiprocessing",
    "asyncio",
    "trio",
    "anyio",
    "http",
    "urllib",
    "logging",
    "time",
    "datetime",
)
OS_ALLOWED = {"urandom"}  # the builders draw nonces and series ids; nothing else of os
MAX_FUNCTION_LINES = 120
MAX_METHODS = 25


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. swapmeet.node.runtime
    target: str  # imported module, e.g. swapmeet.node.host (or a third-party top-level name)
    path: Path
    line: int
    type_checking: bool


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "swapmeet." + ".".join(parts)


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, guarded: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        inside = guarded or (isinstance(child, ast.If) and _is_type_checking(child))
        yield child, inside
        yield from _walk(child, inside)


def imports_of(path: Path) -> list[Import]:
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rsplit(".", 1)[0]
    found = []
    for node, guarded in _walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(source, alias.name, path, node.lineno, guarded) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import mod` imports the submodule when there is one
            names = [f"{target}.{a.name}" for a in node.names]
            submodules = [n for n in names if _exists(n)]
            found += [Import(source, t, path, node.lineno, guarded) for t in (submodules or [target])]
    return found


def _exists(module: str) -> bool:
    if not module.startswith("swapmeet."):
        return False
    rel = Path(*module.split(".")[1:])
    return (ROOT / rel.with_suffix(".py")).exists() or (ROOT / rel / "__init__.py").exists()


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "swapmeet" and parts[1] in PACKAGES else None


ALL_IMPORTS = [i for p in source_files() for i in imports_of(p)]


def where(i: Import) -> str:
    return f"{i.path.relative_to(ROOT)}:{i.line} imports {i.target}"


def test_the_rules_see_every_package() -> None:
    seen = {layer(i.source) for i in ALL_IMPORTS}
    assert seen == set(PACKAGES)
    assert any(i.target.startswith("libp2p") for i in ALL_IMPORTS)  # the host is found, so the rule bites


def test_imports_run_one_way() -> None:
    wrong = [
        where(i)
        for i in ALL_IMPORTS
        if (target := layer(i.target)) is not None and target not in ALLOWED[layer(i.source)]  # type: ignore[index]
    ]
    assert not wrong, "imports must run cli -> node -> ledger -> protocol:\n" + "\n".join(wrong)


def test_only_the_host_imports_libp2p() -> None:
    wrong = [
        where(i)
        for i in ALL_IMPORTS
        if i.target.split(".")[0] in LIBP2P and not (i.source + ".").startswith(HOST_PACKAGE + ".")
    ]
    assert not wrong, f"only {HOST_PACKAGE} may import py-libp2p:\n" + "\n".join(wrong)


def test_protocol_does_no_io() -> None:
    wrong = [where(i) for i in ALL_IMPORTS if layer(i.source) == "protocol" and i.target.split(".")[0] in NO_IO]
    for path in (ROOT / "protocol").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} calls open()")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and node.attr not in OS_ALLOWED
            ):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} uses os.{node.attr}")
    assert not wrong, "protocol/ is sans-IO:\n" + "\n".join(wrong)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    edges: dict[str, set[str]] = {}
    for i in ALL_IMPORTS:
        if not i.type_checking and layer(i.target) is not None and i.target != i.source:
            edges.setdefault(i.source, set()).add(i.target)
    # A package's __init__ re-exporting its own submodules is not a cycle of the design.
    for source, targets in edges.items():
        edges[source] = {t for t in targets if not t.startswith(source + ".")}
    cycles = _cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_functions_and_classes_stay_small() -> None:
    wrong = []
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            rel = path.relative_to(ROOT)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    wrong.append(f"{rel}:{node.lineno} {node.name}() is {length} lines")
            elif isinstance(node, ast.ClassDef):
                methods = sum(isinstance(b, ast.FunctionDef | ast.AsyncFunctionDef) for b in node.body)
                reason = "\nSize:" in (ast.get_docstring(node, clean=True) or "")
                if methods > MAX_METHODS and not reason:
                    wrong.append(f"{rel}:{node.lineno} class {node.name} has {methods} methods and no 'Size:' reason")
    assert not wrong, "\n".join(wrong)


def test_the_rule_checker_catches_a_wrong_way_import(tmp_path: Path) -> None:
    """The checks above are only worth something if they can fail: a protocol module importing node does."""
    fake = ROOT / "protocol" / "_architecture_probe.py"
    assert not fake.exists()
    fake.write_text("from swapmeet.node import contract\nimport time\n")
    try:
        probe = imports_of(fake)
        assert [layer(i.target) for i in probe] == ["node", None]
        assert layer(probe[0].target) not in ALLOWED["protocol"]
        assert probe[1].target in NO_IO
    finally:
        fake.unlink()
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_every_package_is_installed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    present = {module_name(p.parent / "__init__.py") for p in source_files() if p.name == "__init__.py"}
    assert present == listed, f"pyproject.toml packages: add {present - listed}, drop {listed - present}"


def test_every_benchmark_takes_quick() -> None:
    """Every bench/*.py is a benchmark: it takes --quick (what they share lives in bench/support/)."""
    scripts = sorted(p for p in (ROOT / "bench").glob("*.py") if p.name != "__init__.py")
    assert scripts
    missing = [p.name for p in scripts if '"--quick"' not in p.read_text()]
    assert not missing, f"bench scripts without --quick: {missing} (helpers belong in bench/support/)"
