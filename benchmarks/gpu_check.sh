#!/usr/bin/env bash
# GPU readiness in one go: training in fp32/bf16/fp16 with evaluation, exact resume, eval and predict, two ranks on
# one GPU through NCCL's device map (cuda:gloo), real NCCL on two GPUs, fused SDPA kernels on a full ca2st_b16, and
# `ca2st bench` on cast_b16. One PASS/FAIL/SKIP line per check; exit status 1 when one fails.
#   bash benchmarks/gpu_check.sh          # on the GPU when there is one (under 8 minutes on one GPU)
#   bash benchmarks/gpu_check.sh --cpu    # the same checks on the CPU, GPU-only ones skipped (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
exec env HF_HUB_OFFLINE=1 "$PYTHON" benchmarks/gpu_check.py "$@"
