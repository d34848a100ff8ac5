"""modfuse's packages import downwards only (DESIGN section 9):

base (errors, registry, utils) -> core -> data -> datasets -> datamodules over data sets ->
encoders -> models (fusion, lego, sequential) -> training -> robust / interpret -> estimators / cli.

Read from the sources' ASTs, so a violation fails here whether or not a test imports the
offending module. Imports under ``if TYPE_CHECKING:`` are annotations only and are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modfuse"

# module prefix -> layer; the longest matching prefix wins, so a module whose role differs
# from its folder's (the Lego workflow helpers, which train through the runner) is placed by its
# role; the command line (modfuse.cli, and `python -m modfuse`) is the top layer
LAYERS = {
    "modfuse.errors": 0,
    "modfuse.registry": 0,
    "modfuse.utils": 0,
    "modfuse.core": 1,
    "modfuse.data": 2,
    "modfuse.datasets": 3,
    # the datamodules over a manifest, the MoleculeNet configurations and the synthetic cohort
    # sit in data/datamodules/ with the others, but build on modfuse.datasets
    "modfuse.data.datamodules.manifest": 3.5,
    "modfuse.data.datamodules.molecules": 3.5,
    "modfuse.data.datamodules.synthetic": 3.5,
    "modfuse.encoders": 4,
    "modfuse.fusion": 5,
    "modfuse.lego": 5,
    "modfuse.sequential": 5,
    "modfuse.training": 6,
    "modfuse.lego.workflow": 6,
    "modfuse.robust": 7,
    "modfuse.interpret": 7,
    "modfuse.estimators": 8,
    "modfuse.cli": 8,
    "modfuse.__main__": 8,
}
NAMES = {0: "base", 1: "core", 2: "data", 3: "datasets", 3.5: "datamodules over data sets", 4: "encoders"}
NAMES |= {5: "models", 6: "training"}
NAMES |= {7: "robust/interpret", 8: "estimators/cli"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _prefix(module: str) -> str | None:
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)


def _layer(module: str) -> float | None:
    best = _prefix(module)
    return None if best is None else LAYERS[best]


def _unit(module: str) -> str:
    """The package (``modfuse.<name>``), or the module's own LAYERS entry where that places it in
    another layer than its package (the Lego entry points, the datamodules over data sets)."""
    package = ".".join(module.split(".")[:2])
    best = _prefix(module)
    return best if best is not None and LAYERS[best] != LAYERS.get(package) else package


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported modfuse module) for every runtime import in ``tree``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("modfuse."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("modfuse."):
                found.append((node.lineno, target))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _edges() -> list[tuple[str, float, str]]:
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for line, target in _imports(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            edges.append((f"{path.relative_to(PACKAGE.parent)}:{line}", _layer(module) or 0, target))
    return edges


def test_every_module_has_a_layer() -> None:
    unplaced = [_module_name(p) for p in PACKAGE.rglob("*.py") if _module_name(p) != "modfuse"]
    unplaced = [m for m in unplaced if _layer(m) is None]
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_packages_import_downwards_only() -> None:
    upward = [
        f"{where} ({NAMES[src]}) imports {target} ({NAMES[dst]})"
        for where, src, target in _edges()
        if (dst := _layer(target)) is not None and dst > src
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        src = _unit(module)
        for _, target in _imports(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            dst = _unit(target)
            if dst != src and src != "modfuse":
                graph.setdefault(src, set()).add(dst)
    cycles = [(a, b) for a, targets in graph.items() for b in targets if a in graph.get(b, set()) and a < b]
    assert not cycles, f"packages importing each other: {cycles}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from modfuse.training.task import FusionTask\n", ["modfuse.training.task"]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from modfuse.robust import x\n", []),
        ("def f():\n    import modfuse.cli\n", ["modfuse.cli"]),
        ("from ..training import task\n", ["modfuse.training"]),
    ],
)
def test_the_checker_sees_every_runtime_import(source: str, expected: list[str]) -> None:
    """The AST walk finds lazy (in-function) and relative imports and skips annotation-only ones."""
    found = [target for _, target in _imports(ast.parse(source), "modfuse.fusion.base", False)]
    assert found == expected
