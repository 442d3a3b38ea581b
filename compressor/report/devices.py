"""The "Devices" section of ``report.md`` (every ``compress deploy`` beside the run host) and a device's own
``device/<name>/report.md``."""

from __future__ import annotations

RUN_HOST = "run host"


def devices_section(r: dict) -> str:
    from .markdown import table

    devices = r.get("devices") or {}
    if not devices:
        return ""
    lines = [f"- **{name}** ({_machine(d)}): {_verdict(d)}; backends {', '.join(d['backends'])}; `{d['folder']}/`"
             + (f"; not evaluated here: {', '.join(d['gates_not_here'])}" if d.get("gates_not_here") else "")
             for name, d in devices.items()]
    text = "## Devices\n\nMeasured on each target with `compress deploy` (engines built there).\n\n" + "\n".join(lines)
    latency = _side_by_side(r, devices)
    if latency:
        text += "\n\nMedian latency (p50 ms) of the same files, run host beside each device:\n\n" + latency
    speedups = _speedups(r, devices)
    if speedups:
        text += "\n\nSpeedup against the baseline, side by side in one process on each machine:\n\n" + speedups
    from .markdown import gate_value

    gates = [[name, g["name"], f"{g['limit']:.4g}", gate_value(g), "pass" if g["passed"] else "**FAIL**"]
             for name, d in devices.items() for g in d["gates"]]
    if gates:
        text += "\n\n" + table(["device", "gate", "limit", "value", "result"], gates)
    return text


def render_device(d: dict) -> str:
    """One device's report.md: its verdict, gates, latency and parity."""
    from .markdown import gates_section, table

    text = (f"# compress deploy on {d['name']} ({_verdict(d)})\n\n{_machine(d)}; backends: {', '.join(d['backends'])}; "
            f"{d['created']}.")
    if d["gates"]:
        text += "\n\n" + gates_section(d)
    text += "\n\n## Latency\n\n" + table(["artifact", "backend", "batch", "threads", "p50 ms", "p90 ms", "images/s"],
                                         [[s["artifact"], s["backend"], s["batch"], s["threads"], s["p50_ms"],
                                           s["p90_ms"], s["throughput"]] for s in d["latency"]])
    if d["parity"]:
        text += "\n\n## Parity against onnxruntime CPU\n\n" + table(
            ["artifact", "backend", "max abs diff", "limit"],
            [[p["artifact"], p["backend"], p["max_abs_diff"], p["limit"]] for p in d["parity"]])
    return text


def _machine(d: dict) -> str:
    host = d.get("host") or {}
    return ", ".join(str(v) for v in (host.get("gpu"), host.get("cpu"), host.get("machine")) if v) or "unknown machine"


def _verdict(d: dict) -> str:
    failed = sum(not g["passed"] for g in d["gates"])
    if not d["gates"]:
        return "no gate applies"
    return f"PASSED ({len(d['gates'])} gates)" if not failed else f"FAILED ({failed} of {len(d['gates'])} gates)"


def _side_by_side(r: dict, devices: dict) -> str:
    from .markdown import table

    columns = {RUN_HOST: r.get("latency") or [], **{name: d["latency"] for name, d in devices.items()}}
    p50 = {(col, s["artifact"], s["backend"], s["batch"]): s["p50_ms"] for col, rows in columns.items() for s in rows}
    keys = sorted({k[1:] for k in p50}, key=lambda k: (k[1], k[0], k[2]))
    if not keys:
        return ""
    rows = [[a, b, n, *(p50.get((col, a, b, n)) for col in columns)] for a, b, n in keys]
    return table(["artifact", "backend", "batch", *columns], rows)


def _speedups(r: dict, devices: dict) -> str:
    from .markdown import table

    columns = {RUN_HOST: r.get("latency_ratios") or [], **{n: d["latency_ratios"] for n, d in devices.items()}}
    own = {(col, x["artifact"], x["reference"], x["backend"], x["batch"]): x["speedup"]
           for col, rows in columns.items() for x in rows if x["reference"] == x["artifact"].replace("pruned_", "baseline_")}
    keys = sorted({k[1:] for k in own}, key=lambda k: (k[2], k[0], k[3]))
    return table(["artifact", "reference", "backend", "batch", *columns],
                 [[*k, *(own.get((col, *k)) for col in columns)] for k in keys]) if keys else ""
