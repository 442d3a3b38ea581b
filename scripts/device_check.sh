#!/usr/bin/env bash
# GPU check (about 5-8 minutes on one CUDA GPU with a CUDA build of PyTorch and onnxruntime CPU; no TensorRT needed):
#   1. the `gpu`-marked tests (TensorRT engine tests skip without TensorRT, with the reason),
#   2. the quickstart on CUDA, profiled on onnxruntime-cpu, torch-cuda and torch-cuda-graph,
#   3. a one-GPU DDP fine-tune (torchrun, nccl),
#   4. compress deploy of the quickstart run on this machine.
# Writes summary.txt (one line per step: exit code, seconds, the numbers) and each step's log into $OUT (default
# ./device-check). What it ran and measured belongs in docker/README.md's tested-versions table.
#
#   scripts/device_check.sh                       # where compressor's dependencies are installed
#   WHEELS=wheels scripts/device_check.sh         # offline machine: install the missing ones from a folder of
#                                                 # wheels first (scripts/device_wheels.sh makes it, elsewhere)
# Exit code: the number of failed steps (0 = all passed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-device-check}"
PY="${PYTHON:-python3}"
RUNS="$(mktemp -d -t compressor-device-check.XXXXXX)"
mkdir -p "$OUT"
: > "$OUT/summary.txt"
failed=0

say() { echo "$*" | tee -a "$OUT/summary.txt"; }
step() {  # step NAME COMMAND...: run it, log to $OUT/NAME.log, one summary line
  local name=$1 start rc
  shift
  start=$(date +%s)
  PYTHONUNBUFFERED=1 CI=true "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  say "$name: exit $rc in $(( $(date +%s) - start )) s"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl || say "installing wheels from $WHEELS failed"
fi
"$PY" -m pip install -q --no-deps --no-build-isolation -e . || say "installing compressor failed"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  "$PY" - <<'EOF'
import importlib.metadata as m
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for name in ("onnxruntime", "onnxruntime-gpu", "onnx", "tensorrt", "torch-pruning", "openvino"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "-")
EOF
} > "$OUT/env.txt" 2>&1
say "$(tr '\n' ';' < "$OUT/env.txt")"

SMALL=(--set 'pruning.latency_target=null' --set 'pruning={macs_reduction_pct: 50, round_to: 8}')
step gpu-tests "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs tests
step quickstart-cuda "$PY" -m compressor run recipes/quickstart.yaml --out "$RUNS/quickstart" "${SMALL[@]}" \
  --set 'profile.backends=[onnxruntime-cpu, torch-cuda, torch-cuda-graph]' --set device=cuda
step ddp-1gpu "$PY" -m torch.distributed.run --nproc-per-node 1 --master-addr 127.0.0.1 --master-port 29531 \
  -m compressor run recipes/quickstart.yaml --out "$RUNS/ddp" "${SMALL[@]}" --set device=cuda \
  --set finetune.epochs=2 --set profile.enabled=false
step deploy "$PY" -m compressor deploy "$RUNS/quickstart" --name gpu-host --backend onnxruntime-cpu

"$PY" - "$RUNS" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
from pathlib import Path
for run in ("quickstart", "ddp"):
    path = Path(sys.argv[1]) / run / "report.json"
    if not path.is_file():
        print(f"{run}: no report"); continue
    r = json.loads(path.read_text())
    print(f"{run}: top-1 {r['baseline']['accuracy']:.2f} -> {r['pruned']['accuracy']:.2f}, MACs -{r['reduction']['macs_pct']:.1f}%, "
          f"fine-tune {r['timings'].get('finetune', 0):.1f} s, passed {r['passed']}")
    for x in r["latency_ratios"]:
        if x["reference"] == x["artifact"].replace("pruned_", "baseline_"):
            print(f"  {x['artifact']} {x['backend']} batch {x['batch']}: {x['speedup']:.2f}x")
    for s in r["latency"]:
        print(f"  {s['artifact']} {s['backend']} batch {s['batch']}: p50 {s['p50_ms']:.3f} ms")
EOF
cp "$RUNS/quickstart/report.json" "$OUT/quickstart-report.json" 2>/dev/null
rm -rf "$RUNS"
say "failed steps: $failed"
exit "$failed"
