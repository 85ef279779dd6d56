"""The package's imports flow one way (README "Layout").

    cli -> benchmark -> export -> training -> inference -> networks, evaluation
        -> core, io -> errors

A module may import its own package and any package of a lower layer; within the lowest data
layer ``io`` may import ``core`` but not the reverse, and ``networks`` and ``evaluation`` do not
import each other. ``flag_fields`` (dataclass fields as absl flags) sits just above ``errors``.
``dltk_mm/__init__.py`` and ``dltk_mm/runtime.py`` (environment defaults set
before TensorFlow loads) are outside the layers. Every import counts: module level, inside
functions and under ``TYPE_CHECKING``. No two modules may import each other, directly or through
others.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE_ROOT = REPO_ROOT / "dltk_mm"

#: Rank of each top-level part of dltk_mm: a module may import parts of a lower rank.
LAYERS: dict[str, float] = {
    "cli": 7,
    "benchmark": 6,
    "export": 5,
    "training": 4,
    "inference": 3,
    "networks": 2,
    "evaluation": 2,
    "core": 1,
    "io": 1,
    "flag_fields": 0.5,
    "errors": 0,
}
#: Same-rank imports that are allowed (importer part, imported part).
ALLOWED_SIDEWAYS = {("io", "core")}
#: Parts anyone may import (and that import nothing else of the package).
OUTSIDE = {"", "runtime"}


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    """``dltk_mm.training.trainer`` for ``dltk_mm/training/trainer.py``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, root: Path = PACKAGE_ROOT) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every ``dltk_mm`` import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = module_name(path, root).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:  # "from dltk_mm.training import trainer" imports a module
                yield node.lineno, f"{name}.{alias.name}"


def part_of(module: str) -> str | None:
    """The layer part of a ``dltk_mm`` module name ('' for the package itself), else None."""
    parts = module.split(".")
    if parts[0] != root_name():
        return None
    return parts[1] if len(parts) > 1 else ""


def root_name() -> str:
    return PACKAGE_ROOT.name


def violations(root: Path = PACKAGE_ROOT) -> list[str]:
    """Every import against the layer order, as ``file:line: a -> b`` texts."""
    found = []
    for path in sorted(root.rglob("*.py")):
        importer = part_of(module_name(path, root))
        seen: set[tuple[int, str | None]] = set()
        for line, name in imported_modules(path, root):
            imported = part_of(name)
            if imported is None or imported == importer or (line, imported) in seen:
                continue
            seen.add((line, imported))
            if imported in OUTSIDE:
                continue
            if importer in OUTSIDE:
                if imported != "runtime":
                    where = f"{path.relative_to(root.parent)}:{line}"
                    found.append(f"{where}: {importer or root_name()} must import only runtime, "
                                 f"imports {name}")
                continue
            if importer not in LAYERS or imported not in LAYERS:
                found.append(f"{path.relative_to(root.parent)}:{line}: unknown layer part in "
                             f"{name} (add it to tests/test_layers.py LAYERS)")
                continue
            lower = LAYERS[imported] < LAYERS[importer]
            if not lower and (importer, imported) not in ALLOWED_SIDEWAYS:
                found.append(f"{path.relative_to(root.parent)}:{line}: {importer} -> {imported}"
                             f" ({name})")
    return found


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """Module -> the dltk_mm modules it imports (names resolved to existing modules)."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for _, imported in imported_modules(path, root):
            while imported and imported not in modules:  # "pkg.mod.attr" -> "pkg.mod"
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported != root_name():
                graph[name].add(imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _package_import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles between modules, ignoring imports of a package's own ``__init__`` re-exports."""
    pruned = {
        name: {t for t in targets if not name.startswith(t + ".")}
        for name, targets in graph.items()
    }
    return cycles(pruned)


def test_every_import_follows_the_layer_order() -> None:
    assert violations() == []


def test_no_import_cycles_between_modules() -> None:
    assert _package_import_cycles(import_graph()) == []


def test_library_never_imports_experiments_or_tests() -> None:
    bad = [f"{p.relative_to(REPO_ROOT)}:{line}: {name}"
           for p in PACKAGE_ROOT.rglob("*.py")
           for line, name in imported_modules(p)
           if name.split(".")[0] in ("experiments", "tests")]
    assert bad == []


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def fake_package(tmp_path: Path) -> Path:
    root = tmp_path / "dltk_mm"
    for part in ("core", "io", "training", "inference", "cli"):
        _write(root, f"{part}/__init__.py", "")
    _write(root, "__init__.py", "from dltk_mm.runtime import x\n")
    _write(root, "runtime.py", "x = 1\n")
    _write(root, "errors.py", "")
    return root


def test_the_checker_finds_an_upward_and_a_core_to_io_import(fake_package: Path) -> None:
    _write(fake_package, "inference/segment.py", "def f():\n    from dltk_mm.training import a\n")
    _write(fake_package, "core/metrics.py", "from ..io import labels\n")
    _write(fake_package, "io/readers.py",
           "from dltk_mm.core import metrics\nimport dltk_mm.errors\n")
    found = violations(fake_package)
    assert len(found) == 2, found
    assert any("inference -> training" in f and "segment.py:2" in f for f in found)
    assert any("core -> io" in f and "dltk_mm.io" in f for f in found)


def test_the_checker_finds_a_cycle_inside_a_package(fake_package: Path) -> None:
    _write(fake_package, "training/a.py", "from dltk_mm.training.b import g\n")
    _write(fake_package, "training/b.py", "from typing import TYPE_CHECKING\n"
                                          "if TYPE_CHECKING:\n    from dltk_mm.training import a\n")
    assert _package_import_cycles(import_graph(fake_package)) == [
        ["dltk_mm.training.a", "dltk_mm.training.b"]
    ]
    assert violations(fake_package) == []
