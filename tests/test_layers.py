"""The house: lower layers never import higher ones, and the packages import one another without a circle.

Every ``import`` statement of every module is read with :mod:`ast` (also the ones inside functions: a lazy import is
still a dependency), so a violation fails here even when no test happens to run the importing code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "spatialmultiomics"
#: the data and method layers: they read, compute and return
LOWER = ("io", "pp", "factorize", "annotate", "spatial", "align")
#: what they must never reach: the pipeline, the result folder, the report, plots, the CLI, cohorts, the demo
HIGHER = ("_pipeline", "_chunked_pipeline", "_results", "_inputs", "_demo", "_engine", "report", "pl", "cli", "cohort")


def _unit(module: str) -> str:
    """The package (or top-level module) a dotted ``spatialmultiomics.*`` name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """Every ``spatialmultiomics`` unit the file imports (package names for ``from spatialmultiomics import x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {_unit(a.name) for a in node.names if a.name.startswith("spatialmultiomics.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "spatialmultiomics":
                found |= {a.name for a in node.names}
            elif node.module.startswith("spatialmultiomics."):
                found.add(_unit(node.module))
    return found


def _unit_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        unit = _unit_of(path)
        graph.setdefault(unit, set()).update(u for u in _imports(path) if u and u != unit)
    return graph


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_never_import_higher_ones(layer: str) -> None:
    bad = []
    for path in sorted((SRC / layer).rglob("*.py")):
        reached = _imports(path) & set(HIGHER)
        if reached:
            bad.append(f"{path.relative_to(SRC)} imports {sorted(reached)}")
    assert not bad, "; ".join(bad)


def test_no_import_circle_between_packages() -> None:
    """No circle among the packages and top-level modules (``io``, ``_pipeline``, ``report``, ``cohort`` ...)."""
    graph = _graph()
    state: dict[str, int] = {}

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for v in sorted(graph.get(u, set()) & set(graph)):
            if state.get(v) == 1:
                cycle = [*path[path.index(v) :], v] if v in path else [u, v]
                pytest.fail(f"import circle: {' -> '.join(cycle)}")
            if v not in state:
                visit(v, [*path, v])
        state[u] = 2

    for u in sorted(graph):
        if u not in state:
            visit(u, [u])


def test_the_checker_sees_lazy_imports(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from spatialmultiomics.report import write_report\n    import spatialmultiomics.pl\n")
    assert _imports(f) == {"report", "pl"}
