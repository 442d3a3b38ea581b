"""``report.md``: the same facts as report.json, for a person (a CI job summary or a PR comment)."""

from __future__ import annotations

from .devices import devices_section


def render_markdown(report: dict) -> str:
    parts = [_header(report), _results(report), gates_section(report), _latency(report), _deploy(report), devices_section(report),
             _stripe(report), _pruning(report), _finetune(report), _artifacts(report), _timings(report)]
    return "\n\n".join(p for p in parts if p) + "\n"


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 else f"{value:.2f}"
    return str(value).replace("|", "\\|")  # a bare | (as in max |a - b|) would end the cell


def gate_value(g: dict) -> str:
    """A gate's value with the limit's precision: 1.4249 against a limit of 1.425 must not read 1.42."""
    return "-" if g["value"] is None else f"{g['value']:.4g}"


def _header(r: dict) -> str:
    verdict = "PASSED" if r["passed"] else "FAILED"
    opts = ", ".join(f"{k}={v}" for k, v in r["method"]["options"].items() if k != "name")
    return (f"# compressor report: {r['recipe']['name']} ({verdict})\n\n"
            f"Model `{r['model']['arch']}` {tuple(r['model']['input_shape'])}, method `{r['method']['name']}`"
            + (f" ({opts})" if opts else "") + f", residual policy `{r['pruning']['residual']}`, seed {r['recipe']['seed']}.")


def _results(r: dict) -> str:
    b, p, red = r["baseline"], r["pruned"], r["reduction"]
    label, short = metric_label(r)
    rows = [
        [label, b["accuracy"], p["accuracy"], _delta(p["accuracy"], b["accuracy"])],
        [f"{short} before fine-tuning", "", p["accuracy_before_finetune"],
         _delta(p["accuracy_before_finetune"], b["accuracy"])],
        [f"validation {short}", b["val_accuracy"], p["val_accuracy"], _delta(p["val_accuracy"], b["val_accuracy"])],
        *_extra_metrics(r),
        ["MACs (M)", b["macs"] / 1e6, p["macs"] / 1e6, f"-{red['macs_pct']:.2f}%"],
        ["params (k)", b["params"] / 1e3, p["params"] / 1e3, f"-{red['params_pct']:.2f}%"],
    ]
    name = "Accuracy" if short.startswith("top-1") else short
    note = (f"{name} on the `{b['split']}` split ({b['images']} images). {r['counting']}; counted on "
            f"{red['counted_on']} (params of an ONNX graph are those of the BatchNorm-folded graph).")
    if b["val_accuracy"] is None and p["val_accuracy"] is None:  # Recipe.validates
        rows = [row for row in rows if not str(row[0]).startswith("validation")]
        note += " The validation split was not evaluated: nothing trained (it only picks fine-tuning's best epoch)."
    return "## Results\n\n" + table(["", "baseline", "pruned", "change"], rows) + "\n\n" + note


def metric_label(r: dict) -> tuple[str, str]:
    """(the Results row's label, a short name) of the primary metric: top-1 for a classifier, else task.primary."""
    task = r.get("task") or {}
    if task.get("kind", "classification") == "classification":
        return "top-1 accuracy (%)", "top-1 (%)"
    return task["label"], task["primary"]


def _extra_metrics(r: dict) -> list[list]:
    """A custom task's other metric values, one row each."""
    b, p = r["baseline"].get("metrics") or {}, r["pruned"].get("metrics") or {}
    primary = (r.get("task") or {}).get("primary")
    return [[f"{name} (task.metric)", b.get(name), p.get(name), _delta(p.get(name), b.get(name))]
            for name in b if name not in (primary, "images")]


def _delta(new, old) -> str:
    if new is None or old is None:
        return "-"
    return f"{new - old:+.2f}"


NO_ACCURACY_GATE = ("No accuracy gate: the recipe sets `gates.max_accuracy_drop: null`, so the top-1 (a custom "
                    "task: its primary metric) above is reported, not checked")


def accuracy_gated(gates: list[dict]) -> bool:
    return any(g["name"] == "max_accuracy_drop" for g in gates)


def gates_section(r: dict) -> str:
    """``## Gates``: the table of ``r["gates"]`` (a run's report, or one device's summary)."""
    note = f"\n\n{NO_ACCURACY_GATE}." if "baseline" in r and not accuracy_gated(r["gates"]) else ""
    if not r["gates"]:
        return "## Gates\n\nNo gates configured." + note
    rows = [[g["name"], f"{g['limit']:.4g}", gate_value(g), "pass" if g["passed"] else "**FAIL**", g["detail"]]
            for g in r["gates"]]  # 4 significant digits: a parity limit such as 0.01134 is not 0.01
    return "## Gates\n\n" + table(["gate", "limit", "value", "result", "how measured"], rows) + note



def _latency(r: dict) -> str:
    if not r["latency"]:
        return "## Latency\n\nNot profiled."
    rows = [[s["artifact"], s["backend"], s["batch"], s["threads"], s["p50_ms"], s["p90_ms"], s["p99_ms"],
             s["throughput"]] for s in r["latency"]]
    text = "## Latency\n\n" + table(["artifact", "backend", "batch", "threads", "p50 ms", "p90 ms", "p99 ms",
                                     "images/s"], rows)
    if r["latency_ratios"]:
        ratio_rows = [[x["artifact"], x["reference"], x["backend"],
                       x["batch"], x["ratio"], x["speedup"], f"{x['spread']:.1%}"] for x in r["latency_ratios"]]
        text += ("\n\nMeasured side by side in one process, interleaved rounds; ratio = median over rounds of "
                 "(artifact p50 / reference p50).\n\n"
                 + table(["artifact", "reference", "backend", "batch", "latency ratio", "speedup",
                          "spread of round ratios"],
                         ratio_rows))
    if r.get("efficiency"):
        text += ("\n\nEfficiency = measured speedup / MACs-reduction factor (baseline MACs / pruned MACs, exported "
                 "graphs): 1.0 when latency fell as much as MACs did.\n\n"
                 + table(["artifact", "backend", "batch", "speedup", "MACs factor", "efficiency"],
                         [[e["artifact"], e["backend"], e["batch"], e["speedup"], e["macs_factor"], e["efficiency"]]
                          for e in r["efficiency"]]))
    if "latency_macs_plot" in r["artifacts"]:
        text += f"\n\n![latency against MACs]({r['artifacts']['latency_macs_plot']})"
    if "latency_plot" in r["artifacts"]:
        text += f"\n\n![latency and throughput against batch]({r['artifacts']['latency_plot']})"
    first = r["latency"][0]
    per_backend: dict[str, dict] = {}  # the versions of each backend's first row
    for s in r["latency"]:
        per_backend.setdefault(s["backend"], s.get("versions", {}))
    versions = "; ".join(f"{backend}: {_versions(facts)}" for backend, facts in per_backend.items())
    return text + (f"\n\nWarm-up {first['warmup']}, {first['iterations']} timed runs x {first['repeats']} rounds. "
                   f"{versions}")


def _versions(facts: dict) -> str:
    """``onnxruntime 1.32.0, ...``; a nested dict (OpenVINO's compile config) as ``KEY=value`` pairs."""
    return ", ".join(f"{k} {' '.join(f'{a}={b}' for a, b in v.items()) if isinstance(v, dict) else v}"
                     for k, v in facts.items())


def _deploy(r: dict) -> str:
    d = r.get("deploy") or {}
    if not d.get("variants") and not d.get("engines"):
        return ""
    rows = [[name, v["path"], f"{v['accuracy']:.2f}", v["images"], f"{v['max_abs_diff_vs_fp32']:.2e}"]
            for name, v in d["variants"].items()]
    text = "## Precision variants\n\n" + table(["artifact", "file", "top-1 % (onnxruntime CPU)", "images",
                                                "max diff vs FP32"], rows) if rows else ""
    if d.get("engines"):
        rows = [[name, e["path"], e["tensorrt"], e["onnx_variant"], f"{e['max_abs_diff_vs_onnxruntime']:.2e}",
                 f"{e['size_bytes'] / 1e6:.1f} MB"] for name, e in d["engines"].items()]
        text += ("\n\n" if text else "") + "## TensorRT engines\n\n" + table(
            ["engine", "file", "TensorRT", "built from", "max diff vs onnxruntime", "size"], rows)
    return text


def _stripe(r: dict) -> str:
    s = r.get("stripe")
    if not s:
        return ""
    rows = [[c["name"].removesuffix(".weight"), f"{c['sparsity']:.1%}", c["stripes"], c["dense_ms"], c["stripe_ms"],
             c["form"], c["reason"]] for c in s["layers"]]
    return (f"## Stripe graph\n\n`{s['path']}`: {s['stripe_layers']} of {len(s['layers'])} KxK convolutions as "
            f"stripes, {s['macs'] / 1e6:.2f} M MACs on the graph, parity {s['max_abs_diff']:.2e}. Per-layer choice "
            f"measured at batch {s['choice_batch']} (onnxruntime CPU):\n\n"
            + table(["layer", "stripe sparsity", "stripes", "dense ms", "stripe ms", "form", "why"], rows))


def _pruning(r: dict) -> str:
    p = r["pruning"]
    target = p["target_macs_reduction_pct"]
    stripes = (p.get("method_details") or {}).get("macs_reduction_pct_stripe_graph")
    searched = f" (searched for a {target}% MACs target in {p['search_trials']} trials)" if target and not stripes else ""
    lines = [f"- global ratio {p['global_ratio']:.4f}{searched}",
             *([f"- stripes removed for a {target}% MACs target counted on the stripe graph: {stripes}% of the "
                "network's MACs"] if stripes is not None else []),
             f"- {p['groups_pruned']} channel groups pruned: {p['channels_before']} -> {p['channels_after']} channels",
             f"- protected groups: {len(p['groups_skipped'])}"
             + (" (" + ", ".join(f"{k}: {v}" for k, v in list(p["groups_skipped"].items())[:6])
                + (", ..." if len(p["groups_skipped"]) > 6 else "") + ")" if p["groups_skipped"] else ""),
             *([f"- left whole because removing their channels breaks the model: {len(p['protected'])} groups ("
                + "; ".join(f"{k}: {v}" for k, v in list(p["protected"].items())[:6])
                + ("; ..." if len(p["protected"]) > 6 else "") + ")"] if p.get("protected") else [])]
    if p.get("latency_target"):
        lines.append(_latency_target(p["latency_target"]))
    if p.get("allocation") == "method":
        lines.append("- channel counts allocated by the method" + (
            " (" + ", ".join(f"{k} {v}" for k, v in p["method_details"].items() if not isinstance(v, dict)) + ")"
            if p.get("method_details") else ""))
    if p.get("schedule") == "layerwise":
        lines.append("- schedule: layerwise (one group at a time, fine-tuning after each)")
    comp = p.get("compensation", {})
    if comp.get("kind", "none") != "none":
        lines.append(f"- compensation: {comp['kind']} into {len(comp['layers'])} layers on {comp.get('images', 0)} "
                     "calibration images" + (f" (left as they are: {', '.join(comp['skipped'])})" if comp["skipped"] else ""))
    if p["bn_recalibration_images"]:
        lines.append(f"- BatchNorm statistics re-estimated on {p['bn_recalibration_images']} calibration images")
    return "## Pruning\n\n" + "\n".join(lines) + "\n\n" + _widths(r)


def _latency_target(t: dict) -> str:
    asked = t["asked"]
    what = f"{asked['speedup']:g}x" if asked.get("speedup") else f"{asked['ms']:g} ms"
    rounds = t.get("rounds", [])
    steps = "; ".join(f"{x['predicted_speedup']:.2f}x predicted, {x['measured_speedup']:.2f}x measured" for x in rounds)
    return (f"- latency target {what} on {asked['backend']}, batch {asked['batch']} ({asked['allocation']} allocation): "
            f"{t.get('measured_speedup', 0):.3f}x measured by the search over {len(rounds)} whole-graph rounds ({steps})")


def _widths(r: dict) -> str:
    rows = [[w["layer"], w["type"], f"{w['in_before']} -> {w['in_after']}", f"{w['out_before']} -> {w['out_after']}"]
            for w in r.get("widths", [])]
    if not rows:
        return f"Per-layer widths: `{r['artifacts'].get('widths')}`."
    return ("<details><summary>Per-layer widths (channels in and out, before -> after)</summary>\n\n"
            + table(["layer", "type", "in", "out"], rows) + "\n\n</details>")


def _finetune(r: dict) -> str:
    f = r["finetune"]
    if not f["log"]:
        return "## Fine-tuning\n\nNone (finetune.epochs = 0)."
    _, short = metric_label(r)
    headers = ["epoch", "lr", "train loss", "train top-1 %", f"val {short}", "seconds"]
    rows = [[e["epoch"], e["lr"], e["train_loss"], e["train_accuracy"], e["val_accuracy"], e["seconds"]] for e in f["log"]]
    if all(e["train_accuracy"] is None for e in f["log"]):  # a custom task: no top-1 on training batches
        headers, rows = headers[:3] + headers[4:], [row[:3] + row[4:] for row in rows]
    return (f"## Fine-tuning\n\nBest epoch (by validation {short}, never test): {f['best_epoch']}.\n\n"
            + table(headers, rows))


def _artifacts(r: dict) -> str:
    detail = r.get("parity_detail") or {}
    rows = [[name, f"`{path}`" + (f" ({detail[name]['exporter']} exporter)" if name in detail else "")]
            for name, path in r["artifacts"].items()]
    parity = ", ".join(f"{k}: {v:.2e}" for k, v in r["parity"].items() if k not in detail)
    text = "## Artifacts\n\n" + table(["artifact", "path (relative to the run folder)"], rows)
    if detail:
        text += ("\n\nParity of the FP32 ONNX files: max |PyTorch - onnxruntime| on the logits (several outputs: "
                 "the worst; each output has its own gate above) against atol + rtol x max |logits| "
                 "(`export.parity_tolerance`, `export.parity_rtol`).\n\n"
                 + table(["artifact", "exporter", "max diff", "max abs logit", "atol", "rtol", "limit"],
                         [[k, d["exporter"], f"{d['max_abs_diff']:.2e}", f"{d['reference_max_abs']:.4g}",
                           f"{d['atol']:.2g}", f"{d['rtol']:.2g}", f"{d['limit']:.2e}"] for k, d in detail.items()]))
    what = "variants vs FP32 ONNX, engines vs onnxruntime" if detail else "max |PyTorch - onnxruntime| on logits"
    return text + (f"\n\nParity ({what}): {parity}." if parity else "")


def _timings(r: dict) -> str:
    rows = [[k, v] for k, v in r["timings"].items()]
    return "## Timings\n\n" + table(["stage", "seconds"], rows)
