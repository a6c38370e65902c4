#!/usr/bin/env bash
# The GPU check of the fused attention routes, for a device machine (one CUDA GPU, under
# 5 minutes): the route-fidelity tests on CUDA in bfloat16, then benchmarks.long_context up to
# 32768 tokens on a random model of SmolLM2-135M's shape (the bundled weights do not travel).
#
# The device machine has PyTorch, transformers, jaxtyping and einops but not TransformerLens:
# `make gpu-wheels` downloads what is missing into .whl/ (ignored by git); carry .whl, then
#   bash benchmarks/gpu_check.sh          # results under $OUT (or benchmarks/results)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)" \
    | tee -a "$out/gpu.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider -o addopts="" \
    tests/test_attention_routes.py -k "cuda" 2>&1 | tee "$out/gpu_fidelity.txt"
timeout 150 python3 -m benchmarks.long_context --model random-smollm2-135m --device cuda \
    --dtype bfloat16 --n 1024 4096 8192 16384 32768 --repeats 3 --result gpu_long_context \
    2>&1 | tee "$out/gpu_long_context.txt"
cp benchmarks/results/gpu_long_context.json "$out/" 2>/dev/null || true
