"""The gates a device checks: the recipe's latency limits and latency target on the backends measured there,
and parity of each FP32 graph on each accelerated backend. Accuracy and MACs gates are the run's (the
model is the same file everywhere); they are not repeated."""

from __future__ import annotations

from ..report.gates import GateResult, gate, latency_gate, latency_target_gate
from .folder import FinishedRun

WHERE = "on this device (compress deploy)"


def device_gates(run: FinishedRun, profiled, parity: list[dict], backends: list[str]) -> tuple[list[GateResult], list[str]]:
    """(gates evaluated here, names of the recipe's latency gates whose backend this device did not measure)."""
    rows, elsewhere = [], []
    for limit in run.recipe.gates.max_latency_ms:
        if limit.backend in backends:
            rows.append(latency_gate(limit, profiled))
        else:
            elsewhere.append(f"max_latency_ms[{limit.artifact}, {limit.backend}, batch {limit.batch}]")
    target = run.recipe.latency_target
    if target is not None:
        if target.backend in backends:
            rows.append(latency_target_gate(target, profiled, where=WHERE))
        else:
            elsewhere.append(f"latency_target[{target.backend}, batch {target.batch}]")
    rows += [_parity_gate(row) for row in parity if row["gated"]]
    return rows, elsewhere


def _parity_gate(row: dict) -> GateResult:
    from ..export.onnx import parity_passed

    return gate(f"parity:{row['artifact']}@{row['backend']}", row["limit"], row["max_abs_diff"],
                parity_passed(row["max_abs_diff"], row["limit"]),
                f"max |{row['backend']} - onnxruntime CPU| on {row['images']} seeded random images, limit atol + rtol "
                f"x max|output| ({row['reference_max_abs']:.4g}) from the recipe's export section")
