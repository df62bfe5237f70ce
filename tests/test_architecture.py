"""The package's import graph flows one way: no module imports one that sits above it.

Every module under ``src/braze_cohorts`` is parsed with :mod:`ast` (nothing is imported), and
each of its imports of the package is classified: at module level, inside a function (a lazy
import, which counts like any other), or under ``if TYPE_CHECKING:`` (type-only: it never runs,
so it creates no dependency at run time). ``docs/architecture.md`` draws the same graph.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import attrs
import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
DOCS = Path(__file__).resolve().parent.parent / "docs"
PACKAGE = "braze_cohorts"

#: The library's modules from the bottom up. A module may import, at run time, only modules of
#: a *lower* tier: never one of its own tier (siblings know nothing of each other: the sync
#: engine and the store meet only through the StateStore Protocol), never one above. Modules of
#: other branches that are not merged yet are placed already (``_endpoints``; the sources'
#: ``_columns``, ``_frames``, ``_files``, ``_query``).
TIERS: tuple[tuple[str, ...], ...] = (
    # foundations: the version, the error tree, the Protocols, the diff machinery
    ("_version", "exceptions", "typing", "_delta"),
    # identifiers and the lowest parts of the client and the sources
    ("_identifiers", "_endpoints", "_columns"),
    # value objects
    ("_models", "_frames"),
    # one request to Braze; notifications; plan/rejects files; file and query readers
    ("_client", "_notify", "_plans", "_files", "_query", "_metrics"),
    # batching over a client; the schedule model; member sources; profiles; the shared budget
    ("_uploader", "_schedule", "_sources", "_profiles", "_budget"),
    # one import end to end, and the state it keeps: beside each other
    ("_sync", "_store"),
    # above the sync engine and the SQLite store (SQLStore reuses its run rows and lock info)
    ("_scheduler", "_many", "_sqlstore", "_spark"),
    # the public surface re-exports everything
    ("",),
)

#: Public modules: the only parts of the package the leaves (the CLI, braze_cohorts.testing)
#: may import.
PUBLIC = frozenset({PACKAGE, f"{PACKAGE}.exceptions", f"{PACKAGE}.typing", f"{PACKAGE}.testing"})


#: The one private module braze_cohorts.testing may use: MemoryStore computes its deltas with the
#: library's own diff (``_delta``), so that both stores share one algorithm and the store contract
#: tests check storage, not two diffs. Anything else fails the test.
KNOWN_TESTING_VIOLATIONS = frozenset({(f"{PACKAGE}.testing._doubles", f"{PACKAGE}._delta")})


def _qualified(name: str) -> str:
    return f"{PACKAGE}.{name}" if name else PACKAGE


TIER_OF: Mapping[str, int] = {
    _qualified(name): tier for tier, names in enumerate(TIERS) for name in names
}


@attrs.frozen
class Import:
    """One import of a module of the package.

    Attributes:
        importer: The module that imports.
        imported: The module imported (``braze_cohorts`` for a name of the public surface).
        line: Where, in the importer.
        type_only: Under ``if TYPE_CHECKING:`` (never runs).
        lazy: Inside a function.
    """

    importer: str
    imported: str
    line: int
    type_only: bool = False
    lazy: bool = False

    def __str__(self) -> str:
        how = " (type-only)" if self.type_only else " (in a function)" if self.lazy else ""
        path = self.importer.replace(".", "/")
        return f"{path}.py:{self.line} imports {self.imported}{how}"


def module_name(path: Path, root: Path = SRC) -> str:
    """The dotted module name of a file under ``root``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(
    nodes: Iterable[ast.AST], *, type_only: bool, lazy: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, type_only, lazy
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, type_only=True, lazy=lazy)
            yield from _walk(node.orelse, type_only=type_only, lazy=lazy)
        else:
            inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _walk(ast.iter_child_nodes(node), type_only=type_only, lazy=inner)


def imports_in(
    source: str, module: str, *, is_package: bool, modules: Iterable[str]
) -> list[Import]:
    """Every import of ``braze_cohorts`` (or one of its modules) in ``source``.

    ``from braze_cohorts import _delta`` imports the module ``braze_cohorts._delta``;
    ``from braze_cohorts import CohortClient`` imports the public surface, ``braze_cohorts``.
    Relative imports are resolved against ``module``.

    Args:
        source: The module's text.
        module: Its dotted name.
        is_package: Whether it is a package's ``__init__``.
        modules: Every module of the package, to tell submodules from names.
    """
    known = set(modules)
    found: list[Import] = []
    for node, type_only, lazy in _walk(ast.parse(source).body, type_only=False, lazy=False):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts if is_package else parts[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in known else base)
        for target in dict.fromkeys(targets):
            if in_package(target, PACKAGE):
                found.append(Import(module, target, node.lineno, type_only, lazy))
    return found


def package_modules(root: Path = SRC) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name."""
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def package_imports(root: Path = SRC) -> list[Import]:
    """Every import of the package by its own modules."""
    modules = package_modules(root)
    found: list[Import] = []
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        found += imports_in(text, name, is_package=path.name == "__init__.py", modules=modules)
    return found


def in_package(module: str, package: str) -> bool:
    """Whether ``module`` is ``package`` or one of its submodules (``_cli`` is not ``_client``)."""
    return module == package or module.startswith(package + ".")


def is_cli(module: str) -> bool:
    """cli.py and the subcommand modules under _cli/."""
    return module == f"{PACKAGE}.cli" or in_package(module, f"{PACKAGE}._cli")


def is_leaf(module: str) -> bool:
    """The CLI and braze_cohorts.testing: nothing of the library may import them."""
    return is_cli(module) or in_package(module, f"{PACKAGE}.testing")


def upward_imports(imports: Iterable[Import], tiers: Mapping[str, int]) -> list[Import]:
    """Run-time imports of a library module from its own tier or a higher one, or of a leaf."""
    bad = []
    for imp in imports:
        if imp.type_only or imp.importer not in tiers or imp.importer == imp.imported:
            continue
        above = imp.imported in tiers and tiers[imp.imported] >= tiers[imp.importer]
        if above or is_leaf(imp.imported):
            bad.append(imp)
    return bad


def closure(start: str, imports: Iterable[Import], *, within: str) -> set[str]:
    """The modules under ``within`` that ``start`` reaches through imports under ``within``."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        edges.setdefault(imp.importer, set()).add(imp.imported)
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if in_package(nxt, within) and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycles(imports: Iterable[Import]) -> list[list[str]]:
    """Run-time import cycles (lazy imports included), each as the list of its modules."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.type_only and imp.importer != imp.imported:
            edges.setdefault(imp.importer, set()).add(imp.imported)
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def import_table(imports: Iterable[Import], modules: Iterable[str]) -> str:
    """The run-time imports of each tiered library module, as ``docs/architecture.md`` lists them.

    One line per module, highest tier first: tier, module, ``→``, what it imports (``*`` marks
    an import inside a function).
    """
    present = set(modules)
    lines = []
    placed = [m for m in TIER_OF if m in present and m != PACKAGE]
    for module in sorted(placed, key=lambda m: (-TIER_OF[m], m)):
        used = sorted(
            {(i.imported, i.lazy) for i in imports if i.importer == module and not i.type_only}
        )
        names = " ".join(m.partition(".")[2] + ("*" if lazy else "") for m, lazy in used)
        lines.append(f"{TIER_OF[module]}  {module.partition('.')[2]:<13}→ {names}".rstrip())
    return "\n".join(lines)


def documented_table(page: Path = DOCS / "architecture.md") -> str:
    """The import table of ``docs/architecture.md`` (between its ``import-table`` markers)."""
    text = page.read_text(encoding="utf-8")
    block = text.split("<!-- import-table: begin -->")[1].split("<!-- import-table: end -->")[0]
    return "\n".join(line.rstrip() for line in block.strip().strip("`").strip().splitlines())


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return package_imports()


def _report(bad: Iterable[object]) -> str:
    return "\n".join(map(str, bad))


class TestImportGraph:
    def test_every_library_module_has_a_tier(self) -> None:
        """A new module must be placed in TIERS (or be a leaf), so its imports get checked."""
        unplaced = [m for m in package_modules() if m not in TIER_OF and not is_leaf(m)]
        assert not unplaced, f"give these modules a tier in tests/test_architecture.py: {unplaced}"

    def test_no_module_imports_one_from_its_tier_or_above(self, imports: list[Import]) -> None:
        """Run-time imports, lazy ones included, point strictly down the tiers, never at a leaf."""
        bad = upward_imports(imports, TIER_OF)
        assert not bad, "imports against the direction of the graph:\n" + _report(bad)

    def test_the_graph_has_no_cycles(self, imports: list[Import]) -> None:
        """No run-time import cycle anywhere, the CLI and testing included."""
        assert cycles(imports) == []

    def test_the_main_chain_runs_identifiers_client_uploader_sync_scheduler(self) -> None:
        """The tiers keep the order the architecture page draws."""
        chain = ["_identifiers", "_client", "_uploader", "_sync", "_scheduler"]
        order = [TIER_OF[_qualified(m)] for m in chain]
        assert order == sorted(set(order))
        assert TIER_OF[_qualified("_store")] == TIER_OF[_qualified("_sync")]
        assert TIER_OF[_qualified("_delta")] < TIER_OF[_qualified("_store")]

    def test_the_architecture_page_lists_the_graph_as_it_is(self, imports: list[Import]) -> None:
        """docs/architecture.md's import table is the code's; on failure, paste the one shown."""
        actual = import_table(imports, package_modules())
        assert documented_table() == actual, f"replace the table with:\n{actual}"

    def test_typing_imports_only_the_standard_library_at_run_time(self) -> None:
        """typing.py is a leaf: everything else depends on it, it depends on nothing."""
        path = SRC / PACKAGE / "typing.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        outside = []
        for node, type_only, _lazy in _walk(tree.body, type_only=False, lazy=False):
            if type_only:
                continue
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ["." if node.level else node.module or ""]
            )
            for name in names:
                top = name.split(".")[0]
                if top != "__future__" and top not in sys.stdlib_module_names:
                    outside.append(f"typing.py:{node.lineno} imports {name}")
        assert not outside, "\n".join(outside)

    def test_the_cli_uses_the_public_surface_only(self, imports: list[Import]) -> None:
        """cli.py and _cli/* import only public modules and each other, type-only imports too."""
        bad = [
            imp
            for imp in imports
            if is_cli(imp.importer) and imp.imported not in PUBLIC and not is_cli(imp.imported)
        ]
        assert not bad, "the CLI reaches past the public API:\n" + _report(bad)

    def test_testing_uses_the_public_surface_only(self, imports: list[Import]) -> None:
        """braze_cohorts.testing (plugin, doubles) never imports a private module of the library."""
        bad = [
            imp
            for imp in imports
            if in_package(imp.importer, f"{PACKAGE}.testing")
            and not in_package(imp.imported, f"{PACKAGE}.testing")
            and imp.imported not in PUBLIC
        ]
        new = [imp for imp in bad if (imp.importer, imp.imported) not in KNOWN_TESTING_VIOLATIONS]
        assert not new, "braze_cohorts.testing reaches into the library:\n" + _report(new)
        gone = KNOWN_TESTING_VIOLATIONS - {(imp.importer, imp.imported) for imp in bad}
        assert not gone, f"fixed: remove from KNOWN_TESTING_VIOLATIONS: {sorted(gone)}"

    def test_the_emulator_imports_nothing_of_the_library(self, imports: list[Import]) -> None:
        """The emulator is an honest, independent Braze: its modules import only each other."""
        within = f"{PACKAGE}.testing"
        emulator = closure(f"{within}._emulator", imports, within=within)
        assert f"{within}._emulator" in emulator
        bad = [
            imp
            for imp in imports
            if imp.importer in emulator and not in_package(imp.imported, within)
        ]
        assert not bad, "the emulator depends on the library it tests:\n" + _report(bad)


class TestTheChecker:
    """The checks above can fail: the scanner and the rules, on made-up modules."""

    MODULES = (f"{PACKAGE}._delta", f"{PACKAGE}._store", f"{PACKAGE}._sync", PACKAGE)

    def test_scanner_classifies_lazy_type_only_and_relative_imports(self) -> None:
        """A function-level import is lazy, one under TYPE_CHECKING type-only; both are found."""
        source = (
            "from typing import TYPE_CHECKING\n"
            "from braze_cohorts import _delta, CohortClient\n"
            "from . import _sync\n"
            "if TYPE_CHECKING:\n"
            "    from braze_cohorts._store import SQLiteStore\n"
            "def f():\n"
            "    import braze_cohorts._store\n"
        )
        found = imports_in(source, f"{PACKAGE}._x", is_package=False, modules=self.MODULES)
        assert sorted((i.imported, i.line, i.type_only, i.lazy) for i in found) == [
            (PACKAGE, 2, False, False),
            (f"{PACKAGE}._delta", 2, False, False),
            (f"{PACKAGE}._store", 5, True, False),
            (f"{PACKAGE}._store", 7, False, True),
            (f"{PACKAGE}._sync", 3, False, False),
        ]

    def test_upward_sideways_and_leaf_imports_are_flagged(self) -> None:
        """Importing from one's own tier, a higher tier or a leaf is reported; type-only is not."""
        tiers = {f"{PACKAGE}._delta": 0, f"{PACKAGE}._store": 1, f"{PACKAGE}._sync": 1}
        down = Import(f"{PACKAGE}._store", f"{PACKAGE}._delta", 1)
        sideways = Import(f"{PACKAGE}._sync", f"{PACKAGE}._store", 2, lazy=True)
        up = Import(f"{PACKAGE}._delta", f"{PACKAGE}._sync", 3)
        typed = Import(f"{PACKAGE}._delta", f"{PACKAGE}._store", 4, type_only=True)
        leaf = Import(f"{PACKAGE}._store", f"{PACKAGE}.testing._emulator", 5)
        assert upward_imports([down, sideways, up, typed, leaf], tiers) == [sideways, up, leaf]

    def test_cycles_are_found(self) -> None:
        """A cycle through a lazy import is a cycle; a type-only edge closes none."""
        a, b, c = (f"{PACKAGE}.{n}" for n in ("a", "b", "c"))
        lazy = [Import(a, b, 1), Import(b, c, 1), Import(c, a, 1, lazy=True)]
        assert cycles(lazy) == [[a, b, c, a]]
        assert cycles([Import(a, b, 1), Import(b, a, 1, type_only=True)]) == []
