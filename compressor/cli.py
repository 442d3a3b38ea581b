"""The ``compress`` command. Parsing and printing only; the work happens in ``pipeline``.

Exit codes: 0 success, 1 a gate failed, 2 user error (bad recipe, checkpoint, data, output folder: one
line on stderr, no traceback).
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import CompressorError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Prune a trained CNN, fine-tune, export to ONNX, profile, and gate the result.")

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a recipe field: key.path=value (repeatable).")]


@contextmanager
def _user_errors():
    try:
        yield
    except CompressorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


@app.command()
def run(recipe: RecipeArg,
        out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default: runs/<name>-<timestamp>).")] = None,
        set_: SetOpt = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Reuse a non-empty --out folder.")] = False) -> None:
    """Run a recipe end to end; exit 1 if a gate fails."""
    from .pipeline import run_from_file

    with _user_errors():
        result = run_from_file(recipe, set_ or [], out, overwrite=overwrite)
    _print_summary(result.report, result.out_dir)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def validate(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Check a recipe (schema, referenced files) without running it."""
    from .errors import RecipeError
    from .recipe import all_error_lines, load_recipe

    try:
        loaded = load_recipe(recipe, set_ or [])
    except RecipeError as exc:  # list every problem, one per line
        lines = all_error_lines(exc)
        for line in lines if len(lines) > 1 else [str(exc)]:
            typer.echo(f"error: recipe {recipe}: {line}" if len(lines) > 1 else f"error: {line}", err=True)
        raise typer.Exit(2) from None
    with _user_errors():
        _check_paths(loaded)
    typer.echo(f"ok: {recipe}: {loaded.model.arch}, method {loaded.method.name}, residual {loaded.pruning.residual}")


@app.command()
def methods() -> None:
    """List the pruning methods."""
    from .methods import list_methods

    rows = [(cls.name, cls.summary) for cls in list_methods()]
    _print_table(["method", "what it scores"], rows)


@app.command()
def models() -> None:
    """List the model zoo."""
    from .models import get_model_spec, list_models

    specs = [get_model_spec(name) for name in list_models()]
    rows = [(s.name, "x".join(map(str, s.input_shape)), str(s.num_classes), s.description, s.checkpoint_layout)
            for s in specs]
    _print_table(["model", "input", "classes", "description", "loads checkpoints of"], rows)


@app.command()
def schema(out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None) -> None:
    """Print the recipe's JSON Schema (for editor completion)."""
    from .recipe import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)


def _check_paths(recipe) -> None:
    from .errors import CheckpointError, DataError

    if recipe.model.checkpoint is not None and not recipe.model.checkpoint.is_file():
        raise CheckpointError(f"model.checkpoint: file not found: {recipe.model.checkpoint}")
    for split in ("train", "test"):
        source = getattr(recipe.data, split)
        path = getattr(source, "path", None)
        if path is not None and not path.exists():
            raise DataError(f"data.{split}.path: not found: {path}")


def _print_table(headers: list[str], rows: list[tuple]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, show_lines=False)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _print_summary(report: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    b, p = report["baseline"], report["pruned"]
    table = Table("", "baseline", "pruned", title=f"{report['recipe']['name']}: {report['method']['name']}")
    table.add_row("top-1 (%)", f"{b['accuracy']:.2f}", f"{p['accuracy']:.2f}")
    table.add_row("MACs (M)", f"{b['macs'] / 1e6:.2f}", f"{p['macs'] / 1e6:.2f} (-{report['reduction']['macs_pct']:.1f}%)")
    table.add_row("params (k)", f"{b['params'] / 1e3:.1f}", f"{p['params'] / 1e3:.1f}")
    for ratio in report["latency_ratios"]:
        label = f"latency b{ratio['batch']}"
        if ratio["artifact"] != "pruned_onnx":  # e.g. the stripe graph against dense-slim
            label = f"{ratio['artifact']} b{ratio['batch']} vs {ratio.get('reference', 'baseline_onnx')}"
        table.add_row(label, "1.00x", f"{ratio['ratio']:.2f}x ({ratio['speedup']:.2f}x faster)")
    console = Console()
    console.print(table)
    for gate in report["gates"]:
        mark = "[green]pass[/green]" if gate["passed"] else "[red]FAIL[/red]"
        console.print(f"  gate {gate['name']}: {mark} (value {gate['value']}, limit {gate['limit']})")
    console.print(f"report: {out_dir / 'report.md'}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
