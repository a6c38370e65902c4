#!/usr/bin/env bash
# The GPU check of the fused attention routes, for a device machine (one CUDA GPU, under
# 5 minutes): the route-fidelity tests on CUDA in bfloat16, then benchmarks.long_context at
# 2048, 8192 and 32768 tokens on a random model of SmolLM2-135M's shape (the bundled weights
# do not travel; time and memory do not depend on the weights).
#
# The device machine has PyTorch, transformers, jaxtyping and einops but not TransformerLens:
# `make gpu-wheels` downloads what is missing into .whl/ (ignored by git); carry .whl, then
#   bash benchmarks/gpu_check.sh          # results under $OUT (or benchmarks/results)
# Each step has its own time limit and a failing step does not stop the next one; the exit
# status says whether every step passed. The benchmark runs the fused routes before eager at
# each length and writes its JSON after every row, so a limit reached in eager's 32768-token
# row (the [9, n, n] score matrix is 18 GiB per layer in bfloat16) keeps every other row.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "from importlib.metadata import version as v; import torch, transformer_lens;
print({p: v(p) for p in ('torch', 'transformers', 'transformer-lens')}, torch.cuda.is_available())" \
    2>&1 | tee -a "$out/gpu.txt" || status=1
timeout 150 python3 -m pytest -q -s -p no:cacheprovider -o addopts="" -rA \
    tests/test_attention_routes.py -k "cuda" 2>&1 | tee "$out/gpu_fidelity.txt" || status=1
timeout 270 python3 -m benchmarks.long_context --model random-smollm2-135m --device cuda \
    --dtype bfloat16 --n 2048 8192 32768 --routes sdpa flex_attention eager --repeats 3 \
    --result gpu_long_context 2>&1 | tee "$out/gpu_long_context.txt" || status=1
cp benchmarks/results/gpu_long_context.json "$out/" 2>/dev/null || status=1
echo "gpu_check exit status $status" | tee -a "$out/gpu.txt"
exit "$status"
