"""The import graph of the four rooms: one way, no cycle, small modules (read from the source with ``ast``)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("worker", "dao", "loaders", "finetuning")
MAX_LINES = 350


def _modules() -> dict[str, Path]:
    found = {}
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> set[str]:
    """Modules ``name`` imports anywhere in its body (lazy imports inside functions included, imports
    for type checkers only excluded); ``from package import submodule`` counts as the submodule."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in type_only:  # ``if TYPE_CHECKING:`` imports never run
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # ``from pkg import submodule`` depends on the submodule
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return targets


#: module → the modules it imports (project modules and third-party top-level names alike)
GRAPH: dict[str, set[str]] = {name: _imports(name, path) for name, path in MODULES.items()}
EDGES = sorted((source, target) for source, targets in GRAPH.items() for target in targets)


def _room_of(module: str) -> str:
    return module.split(".")[0]


def test_the_project_import_graph_has_no_cycle():
    ours = {name: {t for t in targets if t in MODULES} for name, targets in GRAPH.items()}
    try:
        tuple(graphlib.TopologicalSorter(ours).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(reversed(error.args[1]))}")


@pytest.mark.parametrize("room", ["finetuning", "loaders"])
def test_the_library_rooms_import_no_service_code(room):
    forbidden = ("worker", "dao", "redis", "pymongo", "dramatiq")
    bad = sorted((source, target) for source, target in EDGES
                 if _room_of(source) == room and _room_of(target) in forbidden)
    assert not bad, f"{room} imports service code: {bad}"


def test_dao_imports_no_worker_code():
    bad = sorted((s, t) for s, t in EDGES if _room_of(s) == "dao" and _room_of(t) == "worker")
    assert not bad


def test_no_module_of_the_four_rooms_is_over_350_lines():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_graph_sees_real_edges():  # guards the checks above against an empty graph
    assert "worker.jobs" in GRAPH["worker.actors"]
    assert "finetuning.model_ref" in GRAPH["dao.task_documents"]
    assert "pymongo" in GRAPH["dao.tasks"]
