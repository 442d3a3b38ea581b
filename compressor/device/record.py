"""A device's results in the run's report: ``report.json`` gains ``devices.<name>`` (the device's summary,
without its engines' bytes) and ``report.md`` is rendered again from it, with every device's latency beside
the run host's. The run's own verdict (``passed``) is left as it was: each device has its own."""

from __future__ import annotations

from ..artifacts import RunLayout


def record_device(layout: RunLayout, report: dict, summary: dict) -> dict:
    from .._io import write_json, write_text
    from ..report.markdown import render_markdown

    devices = dict(report.get("devices") or {})
    devices[summary["name"]] = summary
    report = {**report, "devices": dict(sorted(devices.items()))}
    write_text(layout.report_md, render_markdown(report))
    write_json(layout.report_json, report)
    return report


def device_environment() -> dict:
    """The machine and versions behind a device's figures (``device/<name>/env.json``)."""
    import platform
    import socket
    import sys

    from ..environment import available_cores, compressor_version, cpu_name, package_versions

    facts = {"host": socket.gethostname(), "cpu": cpu_name(), "cpu_cores_available": available_cores(),
             "platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
             "compressor": compressor_version(), "packages": package_versions(), "command": " ".join(sys.argv)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["cuda"] = torch.version.cuda
    return facts
