"""The ``compress`` command. Parsing and printing only; the work happens in ``pipeline``.

Exit codes: 0 success, 1 a gate failed, 2 user error (bad recipe, checkpoint, data, output folder: one
line on stderr, no traceback).
"""

from __future__ import annotations

import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_deploy import deploy
from .cli_profile import profile
from .errors import SIGNAL_EXIT, CompressorError, RunInterrupted, Terminated, UsageError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Prune a trained CNN, fine-tune, export to ONNX, profile, and gate the result.")

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE",
                                                         help="Override a recipe field: key.path=value (repeatable).")]


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"compressor {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                   help="Print compressor's version and exit.")] = False) -> None:
    """Prune a trained CNN, fine-tune, export to ONNX, profile, and gate the result."""


@contextmanager
def _user_errors():
    try:
        yield
    except CompressorError as exc:
        from .progress import secondary_rank

        if not secondary_rank():  # under torchrun, rank 0 says it once
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


@app.command()
def run(recipe: Annotated[Optional[Path], typer.Argument(help="Recipe YAML file (not with --resume).",
                                                         show_default=False)] = None,
        out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default: runs/<name>-<timestamp>).")] = None,
        set_: SetOpt = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Reuse a non-empty --out folder.")] = False,
        resume: Annotated[Optional[Path], typer.Option(
            "--resume", help="Go on with an interrupted run in this folder: finished stages are kept, fine-tuning "
            "continues after its last finished epoch.", show_default=False)] = None,
        trust_model_code: Annotated[bool, typer.Option(
            "--trust-model-code", help="With --resume: let the run folder's recipe import and call its own model "
            "factory (model.arch: package.module:factory). Only for run folders you trust.")] = False) -> None:
    """Run a recipe end to end; exit 1 if a gate fails. Ctrl-C or SIGTERM stops it at once (exit 130 / 143)
    with the finished stages kept: `compress run --resume RUN_DIR` goes on."""
    try:
        with _user_errors():
            result = _run_or_resume(recipe, out, set_ or [], overwrite, resume, trust_model_code)
    except RunInterrupted as exc:  # status.json says so
        typer.echo(str(exc), err=True)
        raise typer.Exit(exc.exit_code) from None
    if result is None:  # a torchrun rank other than 0: rank 0 prints and reports
        return
    _print_summary(result.report, result.out_dir)
    if not result.passed:
        raise typer.Exit(1)


def _run_or_resume(recipe: Path | None, out: Path | None, set_: list[str], overwrite: bool, resume: Path | None,
                   trust_model_code: bool):
    from .pipeline import resume_run, run_from_file

    if trust_model_code and resume is None:
        raise UsageError("--trust-model-code goes with --resume RUN_DIR (a recipe you run yourself names its own "
                         "model code)")
    if resume is not None:
        if recipe is not None or out is not None or set_ or overwrite:
            raise UsageError("--resume RUN_DIR takes no RECIPE, --out, --set or --overwrite: the run folder holds "
                             "its resolved recipe; use `compress run --resume RUN_DIR` alone")
        return resume_run(resume, trust_model_code)
    if recipe is None:
        raise UsageError("missing RECIPE: use `compress run RECIPE` (or `compress run --resume RUN_DIR`)")
    return run_from_file(recipe, set_, out, overwrite=overwrite)


@app.command()
def validate(recipe: RecipeArg, set_: SetOpt = None,
             schema_only: Annotated[bool, typer.Option(
                 "--schema-only", help="Only the recipe's schema and the paths it names: instant, imports no torch.")]
             = False) -> None:
    """Check a recipe without running it: schema, model and checkpoint, data, trial prune, ONNX export (in a
    temporary folder). Every problem is listed, one line each; exit 2 if there is any."""
    from .config import all_error_lines, load_recipe
    from .errors import RecipeError

    try:
        loaded = load_recipe(recipe, set_ or [])
    except RecipeError as exc:  # list every problem, one per line
        lines = all_error_lines(exc)
        for line in lines if len(lines) > 1 else [str(exc)]:
            typer.echo(f"error: recipe {recipe}: {line}" if len(lines) > 1 else f"error: {line}", err=True)
        raise typer.Exit(2) from None
    if not schema_only:
        _preflight(recipe, loaded)
        return
    with _user_errors():
        _check_paths(loaded)
    typer.echo(f"ok: {recipe}: {loaded.model.arch}, method {loaded.method.name}, residual {loaded.pruning.residual}")


def _preflight(path: Path, recipe) -> None:
    """``compress validate`` without --schema-only: every problem on stderr and exit 2, or one ok line."""
    from .progress import log, quiet
    from .stages.preflight import preflight

    found = preflight(recipe, say=None if quiet() else log)
    for problem in found.problems:
        typer.echo(problem.line, err=True)
    for note in found.skipped:
        typer.echo(f"skipped: {note}", err=True)
    if not found.ok:
        raise typer.Exit(2)
    typer.echo(f"ok: {path}: {recipe.model.arch}, method {recipe.method.name}, residual {recipe.pruning.residual}; "
               f"{found.summary()}")


@app.command()
def inspect(recipe: RecipeArg, set_: SetOpt = None,
            json_out: Annotated[Optional[Path], typer.Option(
                "--json", help="Also write the inspection to this JSON file.", show_default=False)] = None) -> None:
    """Show what the recipe's pruning would do to the model: the channel groups and how many channels each
    keeps, the groups left whole and why, MACs and params before and after. Reads no data, trains nothing."""
    from .config import load_recipe
    from .stages.inspect import inspect_recipe

    with _user_errors():
        found = inspect_recipe(load_recipe(recipe, set_ or []))
        if json_out is not None:
            _write_json(json_out, found.to_json())
    _print_inspection(found)
    if json_out is not None:
        typer.echo(f"wrote {json_out}", err=True)


def _write_json(path: Path, content: dict) -> None:
    from .errors import OutputDirError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputDirError(f"--json {path}: cannot write it ({exc.strerror or exc})") from None


def _print_inspection(found) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)  # piped / CI: no cut names
    title = (f"{found.recipe}: {found.model} {'x'.join(map(str, found.input_shape))}, method {found.method}, "
             f"residual {found.residual}")
    groups = Table("group", "channels", "kept", "residual", "slices", "producers", "consumers", "rule", title=title)
    for row in found.group_cells():
        groups.add_row(*map(escape, row))
    console.print(groups)
    if found.skipped or found.protected:
        left = Table("group", "", "why it is not pruned", title="not pruned")
        for row in found.not_pruned_cells():
            left.add_row(*map(escape, row))
        console.print(left)
    for line in [*found.head_lines(), *found.summary_lines()]:
        console.print(escape(line))


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
def schema(out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None,
           format_: Annotated[str, typer.Option(
               "--format", metavar="json|markdown", help="json: JSON Schema, for editor completion; markdown: the "
               "field reference for a person (every field, its type, default and meaning; docs/recipe.md).")]
           = "json") -> None:
    """Print the recipe's JSON Schema (for editor completion) or its field reference (--format markdown)."""
    from .config import recipe_json_schema
    from .config.reference import recipe_reference

    with _user_errors():
        if format_ not in ("json", "markdown"):
            raise UsageError(f"--format {format_}: use json or markdown")
    text = json.dumps(recipe_json_schema(), indent=2) if format_ == "json" else recipe_reference().rstrip("\n")
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)


def _comma_list(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _check_paths(recipe) -> None:
    from .errors import CheckpointError, DataError

    if recipe.model.checkpoint is not None and not recipe.model.checkpoint.is_file():
        raise CheckpointError(f"model.checkpoint: file not found: {recipe.model.checkpoint}")
    for split in ("train", "test") if recipe.data is not None else ():
        source = getattr(recipe.data, split)
        path = getattr(source, "path", None)
        if path is not None and not path.exists():
            raise DataError(f"data.{split}.path: not found: {path}")


def _print_table(headers: list[str], rows: list[tuple]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, show_lines=False)
    for header in table.columns:
        header.overflow = "fold"  # wrap long names instead of cutting them with an ellipsis
    for row in rows:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # piped: one line per row where it fits


def _print_summary(report: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from .artifacts import RunLayout

    b, p = report["baseline"], report["pruned"]
    table = Table("", "baseline", "pruned", title=f"{report['recipe']['name']}: {report['method']['name']}")
    task = report.get("task") or {}
    label = "top-1 (%)" if task.get("kind", "classification") == "classification" else task["primary"]
    table.add_row(label, f"{b['accuracy']:.2f}", f"{p['accuracy']:.2f}")
    table.add_row("MACs (M)", f"{b['macs'] / 1e6:.2f}", f"{p['macs'] / 1e6:.2f} (-{report['reduction']['macs_pct']:.1f}%)")
    table.add_row("params (k)", f"{b['params'] / 1e3:.1f}", f"{p['params'] / 1e3:.1f}")
    from rich.markup import escape

    from .artifacts import PRUNED_ONNX, is_headline
    from .report.markdown import NO_ACCURACY_GATE, accuracy_gated

    for ratio in report["latency_ratios"]:  # the headline ones; the full set is in report.md
        if not is_headline(ratio["artifact"], ratio["reference"]):
            continue
        backend = ratio["backend"]
        label = f"latency b{ratio['batch']}" + ("" if backend == "onnxruntime-cpu" else f" {backend}")
        if ratio["artifact"] != PRUNED_ONNX:  # another precision, or the stripe graph against dense-slim
            label = f"{ratio['artifact']} b{ratio['batch']} vs {ratio['reference']}" + (
                "" if backend == "onnxruntime-cpu" else f" ({backend})")
        table.add_row(label, "1.00x", f"{ratio['ratio']:.2f}x ({ratio['speedup']:.2f}x faster)")
    console = Console()
    console.print(table)
    print_gates(console, report["gates"])
    if not accuracy_gated(report["gates"]):
        console.print(f"  [yellow]{NO_ACCURACY_GATE}[/yellow]")
    missed = [g for g in report["gates"] if not g["passed"]]
    if missed:  # what CI needs to see when the job fails
        failed = Table("gate", "limit", "value", "how measured", title="gates missed", title_style="bold red")
        for g in missed:
            failed.add_row(escape(g["name"]), f"{g['limit']:.4g}", "-" if g["value"] is None else f"{g['value']:.4g}",
                           escape(g["detail"]))
        console.print(failed)
    console.print(f"report: {RunLayout(out_dir).report_md}")


app.command()(profile)
app.command()(deploy)


def _spaced_set(argv: list[str]) -> str | None:
    """``--set key value`` (a space instead of ``=``): the hint typer's "unexpected extra argument" does not give."""
    for i, word in enumerate(argv[:-2]):
        key, value = argv[i + 1], argv[i + 2]
        if word == "--set" and "=" not in key and not value.startswith("-") and not value.endswith((".yaml", ".yml")):
            return (f"--set takes key.path=value as one word: use --set {key}={value} (not --set {key} {value}); "
                    "quote it when the value has spaces")
    return None


def print_gates(console, gates: list[dict]) -> None:
    """One line per gate, values with the limit's precision (``compress run`` and ``compress deploy``)."""
    from rich.markup import escape

    for gate in gates:
        mark = "[green]pass[/green]" if gate["passed"] else "[red]FAIL[/red]"
        value = "-" if gate["value"] is None else f"{gate['value']:.4g}"
        console.print(f"  gate {escape(gate['name'])}: {mark} (value {value}, limit {gate['limit']:.4g})")


def main() -> None:
    hint = _spaced_set(sys.argv[1:])
    if hint:
        print(f"error: {hint}", file=sys.stderr)
        sys.exit(2)
    signal.signal(signal.SIGTERM, _raise_terminated)  # stop where it is, as Ctrl-C does, not die mid-write
    try:
        app()
    except (KeyboardInterrupt, Terminated) as exc:
        name, code = SIGNAL_EXIT[type(exc)]
        print(f"interrupted ({name})", file=sys.stderr)
        sys.exit(code)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


if __name__ == "__main__":
    main()
