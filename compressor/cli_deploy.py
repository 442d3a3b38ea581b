"""``compress deploy RUN_DIR``: parsing and printing only (the work is in ``compressor.device``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def deploy(
        run_dir: Annotated[Path, typer.Argument(help="A finished run folder (compress run --out).", show_default=False)],
        backend: Annotated[Optional[list[str]], typer.Option(
            "--backend", "-b", metavar="BACKEND",
            help="Backend to measure on the device (repeatable or comma-separated): onnxruntime-cpu, "
            "onnxruntime-cuda, onnxruntime-tensorrt, openvino-cpu, tensorrt. Default: the recipe's profile.backends "
            "that time files.", show_default=False)] = None,
        name: Annotated[Optional[str], typer.Option(
            "--name", help="Device name, the folder device/<name>/ (default: the device's host name).",
            show_default=False)] = None,
        set_: Annotated[Optional[list[str]], typer.Option(
            "--set", metavar="KEY=VALUE",
            help="Change a gates.*, profile.* or export.tensorrt.* field for this device: key.path=value "
            "(repeatable), e.g. 'gates.max_latency_ms=[{batch: 1, p50_ms: 5}]' or "
            "'export.tensorrt.precisions=[fp16, int8]'.", show_default=False)] = None,
        remote: Annotated[Optional[str], typer.Option(
            "--remote", help="Run it on this ssh host (user@host or a Host of your ssh config) instead of here.",
            show_default=False)] = None,
        remote_compress: Annotated[str, typer.Option(
            "--remote-compress", help="How to run compressor on the remote host.")] = "compress",
        ssh_config: Annotated[Optional[Path], typer.Option(
            "--ssh-config", help="ssh configuration file (ssh -F); default: your ~/.ssh/config.",
            show_default=False)] = None,
        timeout: Annotated[int, typer.Option("--timeout", min=1, help="Seconds the remote deploy may take (each ssh "
                                             "connection gets 10 s to open).")] = 3600,
) -> None:
    """Check a finished run on the device it ships to: build its TensorRT engines there, check parity, time every
    file on the device's backends and evaluate the recipe's latency gates there. Writes device/<name>/ and adds
    the device to report.md; exit 1 if a gate fails on the device."""
    from .cli import _comma_list, _user_errors
    from .device import DeployOptions
    from .device import deploy as deploy_here
    from .device.remote import Remote, deploy_remote

    with _user_errors():
        options = DeployOptions(backends=tuple(_comma_list(backend)), name=name, overrides=tuple(set_ or ()))
        if remote is None:
            _here_only(remote_compress, ssh_config)
            result = deploy_here(run_dir, options)
        else:
            keep = os.environ.get("COMPRESSOR_KEEP_REMOTE", "") not in ("", "0")  # debugging: leave the copy there
            result = deploy_remote(run_dir, options, Remote(host=remote, compress=remote_compress, ssh_config=ssh_config,
                                                            timeout=timeout, keep=keep))
    _print(result, run_dir)
    if not result.passed:
        raise typer.Exit(1)


def _here_only(remote_compress: str, ssh_config: Optional[Path]) -> None:
    from .errors import UsageError

    if remote_compress != "compress" or ssh_config is not None:
        raise UsageError("--remote-compress and --ssh-config go with --remote HOST")


def _print(result, run_dir: Path) -> None:
    from rich.console import Console
    from rich.markup import escape

    from .artifacts import RunLayout
    from .cli import print_gates

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)  # piped / over ssh: no wrapping
    summary = result.summary
    print_gates(console, summary["gates"])
    for name in summary.get("gates_not_here", []):
        console.print(f"  gate {escape(name)}: not evaluated here (backend not measured on {result.name})")
    verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
    if not summary["gates"]:
        verdict = "no gate applies (add one with --set 'gates.max_latency_ms=[...]')"
    console.print(f"deploy on {escape(result.name)}: {verdict}; wrote {result.folder}; report: "
                  f"{RunLayout(Path(run_dir)).report_md}")
