"""The package's shape, checked from its source: no import cycles, no private name
used across modules, the pure core on the standard library alone, the emulator apart
from the product, and every layer importing only the layers below it.

Imports inside functions count (they hide cycles as well as any); imports under
``if TYPE_CHECKING:`` count for the layers but not for cycles (they never run).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("localstore", "localstore_emulator")

# lowest first: a module may import its own layer (without cycles) and the ones below
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaf", ("localstore.errors", "localstore.version")),
    ("core", ("localstore.core",)),
    ("store and api", ("localstore.store", "localstore.api")),
    ("operations", ("localstore.sync", "localstore.ops", "localstore.files", "localstore.browse")),
    ("command line", ("localstore.cli",)),
    ("entry points", ("localstore", "localstore.__main__", "localstore.facade", "localstore.models")),
]
CORE_MAY_IMPORT = ("localstore.errors",)


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: list[tuple[str, int, bool]] = field(default_factory=list)  # (target, line, runs)
    private_uses: list[tuple[str, int]] = field(default_factory=list)


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, runs: bool = True) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for inner in child.body:
                yield inner, False
                yield from _walk(inner, False)
            for inner in child.orelse:
                yield inner, runs
                yield from _walk(inner, runs)
        else:
            yield child, runs
            yield from _walk(child, runs)


def _load() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name, is_package = _module_name(path)
            modules[name] = Module(name, path, is_package)
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
        here = module.name if module.is_package else module.name.rpartition(".")[0]
        aliases: dict[str, str] = {}  # local name -> a module of ours
        for node, runs in _walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    module.imports.append((alias.name, node.lineno, runs))
                    if alias.asname:
                        aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    target = f"{source}.{alias.name}"
                    if target in modules:  # `from package import module`
                        module.imports.append((target, node.lineno, runs))
                        aliases[alias.asname or alias.name] = target
                    else:
                        module.imports.append((source, node.lineno, runs))
                        if alias.name.startswith("_") and not alias.name.startswith("__") and source in modules:
                            module.private_uses.append((f"{source}.{alias.name}", node.lineno))
        for node in ast.walk(tree):  # `module._name` through an imported module
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                module.private_uses.append((f"{aliases[node.value.id]}.{node.attr}", node.lineno))
    return modules


MODULES = _load()


def _ours(target: str) -> str | None:
    """The module of ours that an import names (the longest known prefix)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def _layer(name: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    return None if best is None else best[1]


def _edges(runtime_only: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for module in MODULES.values():
        for target, _, runs in module.imports:
            ours = _ours(target)
            if ours and ours != module.name and (runs or not runtime_only):
                graph[module.name].add(ours)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package_of(name: str) -> str:
    module = MODULES[name]
    return name if module.is_package else name.rpartition(".")[0]


def test_the_walk_sees_the_package() -> None:
    assert "localstore.core.merge" in MODULES and "localstore_emulator" in MODULES
    cli_imports = {t for t, _, _ in MODULES["localstore.cli.app"].imports}
    assert "localstore.errors" in cli_imports


def test_no_import_cycles() -> None:
    cycles = _cycles(_edges(runtime_only=True))
    assert not cycles, "import cycles (each a set of modules importing one another):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_crosses_modules() -> None:
    """``from m import _x`` or ``m._x`` from another module: a private name is the
    module's own; what others need gets a public name. A package's ``__init__`` may
    re-export its own private modules' names (httpx's layout), nothing more."""
    bad = []
    for module in MODULES.values():
        for used, line in module.private_uses:
            owner = used.rpartition(".")[0]
            if owner != module.name:
                bad.append(f"{module.path.relative_to(ROOT)}:{line} uses {used}")
    assert not bad, "\n".join(bad)


def test_private_modules_are_imported_only_inside_their_package() -> None:
    bad = []
    for module in MODULES.values():
        for target, line, _ in module.imports:
            ours = _ours(target)
            if ours is None:
                continue
            leaf = ours.rpartition(".")[2]
            if leaf.startswith("_") and not leaf.startswith("__"):
                package = ours.rpartition(".")[0]
                if not (module.name == package or module.name.startswith(package + ".")):
                    bad.append(f"{module.path.relative_to(ROOT)}:{line} imports {ours}")
    assert not bad, "\n".join(bad)


def test_the_core_uses_the_standard_library_alone() -> None:
    bad = []
    for module in MODULES.values():
        if not (module.name == "localstore.core" or module.name.startswith("localstore.core.")):
            continue
        for target, line, _ in module.imports:
            top = target.split(".")[0]
            if top == "__future__" or (top in sys.stdlib_module_names and top != "localstore"):
                continue
            if target.startswith("localstore.core") or target in CORE_MAY_IMPORT:
                continue
            bad.append(f"{module.path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_the_emulator_imports_nothing_of_the_product() -> None:
    bad = [
        f"{module.path.relative_to(ROOT)}:{line} imports {target}"
        for module in MODULES.values()
        if module.name.startswith("localstore_emulator")
        for target, line, _ in module.imports
        if target == "localstore" or target.startswith("localstore.")
    ]
    assert not bad, "\n".join(bad)


def test_layers_import_only_downwards() -> None:
    """errors → core → store, api → sync, ops, files, browse → cli → the facade; the
    store never imports the API client; the product reaches the emulator only from the
    command line (``localstore emulator`` / ``demo``)."""
    bad = []
    for module in MODULES.values():
        if module.name.startswith("localstore_emulator"):
            continue
        mine = _layer(module.name)
        assert mine is not None, f"{module.name} is in no layer: add it to LAYERS"
        for target, line, _ in module.imports:
            ours = _ours(target)
            where = f"{module.path.relative_to(ROOT)}:{line} imports {target}"
            if ours is None:
                continue
            if ours.startswith("localstore_emulator"):
                if _layer(module.name) != _layer("localstore.cli"):
                    bad.append(where + " (only the command line may start the emulator)")
                continue
            theirs = _layer(ours)
            assert theirs is not None, f"{ours} is in no layer"
            if theirs > mine:
                bad.append(f"{where} ({LAYERS[mine][0]} may not import {LAYERS[theirs][0]})")
            if module.name.startswith("localstore.store") and ours.startswith("localstore.api"):
                bad.append(where + " (the store never talks to the API)")
    assert not bad, "\n".join(bad)


def test_the_layer_rule_catches_an_upward_import() -> None:
    assert _layer("localstore.core.merge") < _layer("localstore.store.db") < _layer("localstore.cli.app")
    assert _layer("localstore.api._client") == _layer("localstore.store")


def test_no_package_attribute_shadows_a_submodule() -> None:
    """A package whose ``__init__`` binds a name that is also one of its submodules
    (``files.watch`` the function and ``files/watch.py``) loses the function the first
    time the submodule is imported: Python sets the submodule as the attribute."""
    bad = []
    for module in MODULES.values():
        if not module.is_package:
            continue
        tree = ast.parse(module.path.read_text(encoding="utf-8"))
        for node in tree.body:
            names: list[str] = []
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.ImportFrom):
                names = [
                    a.asname or a.name
                    for a in node.names
                    if f"{node.module}.{a.name}" not in MODULES  # binds a module: fine
                ]
            bad += [f"{module.name}.{n}" for n in names if f"{module.name}.{n}" in MODULES]
    assert not bad, "names bound in a package's __init__ that are also its submodules: " + ", ".join(bad)


# SQL that writes the record state: the working copies and the change log
_WRITES_RECORD_STATE = re.compile(
    r"\b(INSERT(\s+OR\s+[A-Z]+)?\s+INTO|UPDATE(\s+OR\s+[A-Z]+)?|DELETE\s+FROM|REPLACE\s+INTO)\s+(main\.)?(working|changes)\b"
)


def test_only_the_ledger_writes_working_copies_and_the_change_log() -> None:
    """State has one owner: `localstore/store/ledger/` is the only code whose SQL writes
    `working` or `changes` (everything else calls its named transitions)."""
    writers = sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "localstore").rglob("*.py")
        if _WRITES_RECORD_STATE.search(path.read_text(encoding="utf-8"))
    )
    assert "localstore/store/ledger/edits.py" in writers  # the pattern does find writes
    assert [w for w in writers if not w.startswith("localstore/store/ledger/")] == []
