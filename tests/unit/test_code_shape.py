"""The size limits of DESIGN.md §6: no module of ``compressor/`` over 400 lines, no function over 50 lines or
with more than 8 parameters (``self`` / ``cls`` not counted; beyond that, pass a spec object)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "compressor"
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PARAMETERS = 400, 50, 8


def files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_modules_are_short():
    long = {str(p.relative_to(PACKAGE)): n for p in files() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_are_short_and_take_few_parameters():
    found = []
    for path in files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args
            names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            count = len(names) + bool(args.vararg) + bool(args.kwarg) - (names[:1] in (["self"], ["cls"]))
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES or count > MAX_PARAMETERS:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length} lines, {count} parameters")
    assert not found, "\n".join(found)
