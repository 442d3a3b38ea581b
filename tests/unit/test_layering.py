"""The import layering of DESIGN.md §2, enforced on the source (AST; nothing is imported).

Arrows point one way: cli -> pipeline -> stages -> (export, profiling, training, surgery) -> methods ->
config. Every module of ``compressor/`` sits in one layer and imports only from its own layer or the ones
below, function-level and ``TYPE_CHECKING`` imports included (a lazy import still couples the modules);
module-level imports have no cycle at all. A new package or top-level module must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "compressor"

LAYERS: list[set[str]] = [  # bottom first; names are units: a top-level module or a subpackage of compressor
    {"compressor", "errors", "_io", "artifacts", "codec", "progress", "environment", "outputs"},
    {"config", "recipe"},
    {"models", "data"},
    {"methods"},
    {"training", "surgery", "export", "profiling"},
    {"stages"},
    {"report"},
    {"ledger", "pipeline", "device"},
    {"cli", "cli_deploy", "cli_profile", "__main__"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "compressor"


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported compressor module or object, line, executed on import) for every import in the file; imports
    under ``if TYPE_CHECKING:`` count for the layering but never run, so they cannot make a cycle."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    eager = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        eager |= {id(n) for n in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found += [(t, node.lineno, id(node) in eager) for t in targets if t == "compressor" or t.startswith("compressor.")]
    return found


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(target: str, known: dict[str, Path]) -> str | None:
    """The module a dotted import target names (``from .x import name`` may name a module or an object)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def edges(module_level_only: bool = False) -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    for name, path in known.items():
        for target, _, top in imports(path):
            resolved = resolve(target, known)
            ancestor = name.startswith(f"{resolved}.")  # already initialising when its submodule runs
            if resolved and resolved != name and not ancestor and (top or not module_level_only):
                graph[name].add(resolved)
    return graph


def test_every_module_has_a_layer():
    missing = sorted({unit(m) for m in modules()} - set(RANK))
    assert not missing, f"give these a layer in LAYERS: {missing}"


def test_imports_point_down_the_layers():
    known = modules()
    wrong = []
    for name, path in known.items():
        for target, line, _ in imports(path):
            resolved = resolve(target, known)
            if resolved and RANK[unit(resolved)] > RANK[unit(name)]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} {name} imports {resolved}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_methods_import_nothing_from_surgery():
    known = modules()
    hits = [f"{n} -> {t}" for n, p in known.items() if unit(n) == "methods" for t, _, _ in imports(p)
            if unit(resolve(t, known) or "") == "surgery"]
    assert not hits


def test_no_import_cycle_at_module_level():
    graph = edges(module_level_only=True)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("module-level import cycle: " + " -> ".join(cycle))
