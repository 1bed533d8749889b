#!/usr/bin/env bash
# The check to run on a machine with a CUDA GPU: every CUDA test (episodes on the GPU against the
# CPU, batched and alone; CIAO against the CPU in float64; LearnedOptimizer and the integrations
# on CUDA), the cost of CIAO's and LearnedOptimizer's steps next to AdamW's on the GPU
# (benchmarks/step_overhead.py --device cuda --learned), then part 1 of the throughput benchmark
# with the inner tasks on the GPU, measured once (skipped with GPU_CHECK_THROUGHPUT=0).
# Run from anywhere after `bash scripts/setup.sh` (its venv: $LHOPT_VENV, default .venv, with a
# CUDA build of torch). Logs go to $OUT when it is set, else out/gpu_check. The benchmark runs
# even where a test failed (one attempt should tell all it can); the exit status is nonzero if
# any failed. About 6 minutes on an H200: 1-2 for the tests, 1 for the step costs, about 3 for
# the throughput benchmark.
set -uo pipefail
set -x
export PYTHONUNBUFFERED=1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${LHOPT_VENV:-$root/.venv}"
python="$venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
logs="${OUT:-$root/out/gpu_check}"
mkdir -p "$logs"

# Without a GPU the CUDA tests skip and pass: stop here rather than report a pass.
"$python" - <<'EOF' 2>&1 | tee "$logs/preflight.log"
import sys

import torch

print("torch", torch.__version__, "built with CUDA", torch.version.cuda)
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch: nothing to check")
print("device", torch.cuda.get_device_name(0), "count", torch.cuda.device_count())
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true

timeout 200 "$python" -m pytest -q -rs --durations=5 tests/test_batched_episode.py \
    tests/test_ciao.py tests/test_integrations.py tests/test_meta.py \
    -k "cuda or device or move" 2>&1 | tee "$logs/pytest_cuda.log"
tests=${PIPESTATUS[0]}

timeout 150 "$python" benchmarks/step_overhead.py --device cuda --learned --reps 30 \
    --json "$logs/step_overhead_cuda.json" 2>&1 | tee "$logs/step_overhead_cuda.log"
steps=${PIPESTATUS[0]}

bench=0
if [ "${GPU_CHECK_THROUGHPUT:-1}" != 0 ]; then
    timeout 330 "$python" benchmarks/meta_throughput.py --device cuda \
        --families quadratic mnist1d algorithmic --sample 2 --batch 16 \
        2>&1 | tee "$logs/meta_throughput_cuda.log"
    bench=${PIPESTATUS[0]}
fi

set +x
echo "gpu_check: tests exit ${tests}, step costs exit ${steps}, throughput exit ${bench}; logs in ${logs}"
[ "$tests" -eq 0 ] && [ "$steps" -eq 0 ] && [ "$bench" -eq 0 ]
