#!/usr/bin/env bash
# `make gpu-check`: on a CUDA machine, in one command and under 6 minutes on an H100/H200,
#   1. the GPU tests (pytest -m gpu),
#   2. the op benchmark: ops.dwconv2d (Triton) vs F.conv2d, bf16 and fp32, NCHW and
#      channels_last, k in 3, 7, 13, 31, 1x31, 31x1, fwd and fwd+bwd, TFLOP/s
#      -> benchmarks/ops_cuda.md,
#   3. the model benchmark: inference and a training step of unireplknet_t and
#      inceptionnext_tiny vs timm's convnext_tiny and inception_next_tiny
#      -> benchmarks/models_cuda.md,
# and a summary (device, versions, command, each step's status and time) in
# benchmarks/gpu_check_cuda.md. Each step has a time limit; a failed or timed-out step is
# reported and the others still run; the exit status is non-zero if any step failed.
# Without CUDA it refuses (exit status 2) and writes nothing.
#
# Environment: PY (python, default .venv/bin/python), GPU_CHECK_REPS (op benchmark
# repetitions, default 5), GPU_CHECK_TEST_S / GPU_CHECK_OPS_S / GPU_CHECK_MODELS_S (step time
# limits in seconds, default 100 / 150 / 90: 5 min 40 s at most), GPU_CHECK_TUNE=1 (the op
# step also times every candidate config of the fp32 sliding kernels, so that a GPU run can pick
# ops/dwconv/triton_slide.py's table; raise GPU_CHECK_OPS_S for it).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
PY=${PY:-.venv/bin/python}
REPS=${GPU_CHECK_REPS:-5}
TEST_S=${GPU_CHECK_TEST_S:-100}
OPS_S=${GPU_CHECK_OPS_S:-150}
MODELS_S=${GPU_CHECK_MODELS_S:-90}
TUNE=()
if [[ ${GPU_CHECK_TUNE:-0} == 1 ]]; then TUNE=(--slide-candidates); fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu-check: no CUDA device here (torch.cuda.is_available() is False under $PY)." >&2
    echo "gpu-check: it needs a machine with an NVIDIA GPU; nothing was run or written." >&2
    exit 2
fi

mkdir -p benchmarks
summary=benchmarks/gpu_check_cuda.md
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT
failed=0
rows=()

# step NAME LIMIT_S COMMAND...: run with a time limit, log to $logdir/NAME.log, record a row
step() {
    local name=$1 limit=$2
    shift 2
    echo "== gpu-check: $name (limit ${limit}s): $*"
    local t0=$SECONDS status
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$logdir/$name.log"
    status=${PIPESTATUS[0]}
    local took=$((SECONDS - t0)) verdict=ok
    if ((status == 124 || status == 137)); then
        verdict="timed out after ${limit}s"
    elif ((status != 0)); then
        verdict="failed (exit status $status)"
    fi
    if [[ $verdict != ok ]]; then failed=1; fi
    rows+=("| $name | \`$*\` | $verdict | ${took}s |")
}

start=$SECONDS
step tests "$TEST_S" "$PY" -m pytest -q -m gpu -p no:cacheprovider
step ops "$OPS_S" "$PY" tools/benchmark_ops.py --device cuda --reps "$REPS" "${TUNE[@]}"
step models "$MODELS_S" "$PY" tools/benchmark_models.py --device cuda --runs 5 --warmup 2
total=$((SECONDS - start))

device=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null |
    head -n 1)
versions=$("$PY" -c 'import platform, torch, triton, timm
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}, "
      f"timm {timm.__version__}, python {platform.python_version()}")')
{
    echo "# gpu-check (tools/gpu_check.sh)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M') UTC; host load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- device: ${device:-unknown (nvidia-smi not found)}"
    echo "- $versions"
    echo "- command: \`make gpu-check\` (bash tools/gpu_check.sh); total ${total}s"
    echo
    echo "| step | command | result | time |"
    echo "|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Results: benchmarks/ops_cuda.md, benchmarks/models_cuda.md. Tail of the test log:"
    echo
    echo '```'
    tail -n 15 "$logdir/tests.log"
    echo '```'
} >"$summary"
echo "== gpu-check: wrote $summary (total ${total}s)"
exit "$failed"
