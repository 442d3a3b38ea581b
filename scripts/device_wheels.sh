#!/usr/bin/env bash
# The wheels scripts/device_check.sh installs on a GPU machine that cannot reach a package index: what
# compressor needs beyond a CUDA PyTorch image (torch, onnx, onnxruntime, onnxscript, typer, rich, numpy and
# pyyaml are expected there). Run it where the index is reachable; DEVICE_PYTHON is the GPU machine's Python.
#   scripts/device_wheels.sh wheels && WHEELS=wheels scripts/device_check.sh   (on the GPU machine)
set -euo pipefail
DEST="${1:-wheels}"
DEVICE_PYTHON="${DEVICE_PYTHON:-3.12}"
PIP="${PIP:-python3 -m pip}"
mkdir -p "$DEST"
TARGET=(--only-binary=:all: --python-version "$DEVICE_PYTHON" --platform manylinux2014_x86_64
        --platform manylinux_2_17_x86_64 -d "$DEST")
$PIP download -q "${TARGET[@]}" "pydantic>=2.6,<3"                  # with the pydantic-core it pins
$PIP download -q "${TARGET[@]}" --no-deps "torch-pruning==1.6.1"    # not its torch: the image has one
ls "$DEST"
