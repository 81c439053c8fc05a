#!/usr/bin/env bash
# One run on a CUDA machine that has torch and triton: install vqtok without touching its
# packages, then check the kernels and time them. Results go to ${OUT:-gpu-out}/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q --no-deps --no-build-isolation -e .
out="${OUT:-gpu-out}"
mkdir -p "$out"
timeout 290 python benchmarks/gpu_check.py --out "$out"
