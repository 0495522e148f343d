#!/usr/bin/env bash
# The one-shot GPU check of the CuPy backend (docs/gpu.md says how to read it).
#
# On a CUDA machine with no network, from the repository root, with the wheels of
# array-api-compat and array-api-strict in .whl/ (see docs/gpu.md to fetch them):
#     bash .ci/gpu-check.sh
# Steps, each with its own time limit, each run even when an earlier one failed:
#   install  the wheels and this checkout, offline (benchmarks/gpu/offline_install.py)
#   info     mlcore info, text and JSON
#   tests    the whole suite with MLCORE_BACKEND=cupy
#   checks   save/load across backends, memory growth, cuBLAS peak, MLP step vs PyTorch CUDA
#            at batch 256 and 4096 with the GEMM fraction of the peak (benchmarks/gpu/gpu_checks.py)
#   speed    the training step against PyTorch CUDA at batch 256, 4096 and 16384: mlcore as a
#            user calls it, the step as a CUDA graph, launches per step, memory over 1000
#            steps, the targets (benchmarks/gpu/cupy_speed.py)
#   bench    mlcore bench --quick on cupy beside numpy and the references (PyTorch CUDA)
#   summary  OUT/summary.md
# Everything lands in $OUT (default ./gpu-check-out): log.txt, info.json, junit.xml,
# checks.json, speed.json, bench.json, bench.png, summary.md. Exit status: 0 when every step
# passed. The limits add up to 7 min 55 s; a run typically takes 4 to 5 minutes.
#
# GPU_CHECK_DRY=1 runs the same steps on the CPU (backend numpy, small sizes, PyTorch CPU):
# the way to test this script on a machine without a GPU. PYTHON picks the interpreter
# (default python3); GPU_CHECK_INSTALL=0 skips the install step (already installed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
PY=${PYTHON:-python3}
DRY=${GPU_CHECK_DRY:-0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
exec > >(tee -a "$OUT/log.txt") 2>&1

if [ "$DRY" = 1 ]; then
    BACKEND=numpy QUICK=--quick T_TESTS=${T_TESTS:-300}
else
    BACKEND=cupy QUICK= T_TESTS=${T_TESTS:-150}
fi
failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, remember failures
    # SIGINT at the limit: pytest then still reports what failed and writes junit.xml.
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    timeout -s INT --kill-after=15 "$limit" "$@"
    rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start))s"
    [ "$rc" = 0 ] || failed+=("$name($rc)")
    return "$rc"
}

echo "gpu-check: backend $BACKEND, python $($PY -c 'import sys; print(sys.version.split()[0])')," \
     "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader
if [ "${GPU_CHECK_INSTALL:-1}" = 1 ]; then
    step install 45 "$PY" benchmarks/gpu/offline_install.py --wheels .whl || {
        echo "gpu-check: install failed, nothing else can run"; exit 2; }
fi

export MLCORE_BACKEND=$BACKEND
step info 20 "$PY" -m mlcore info
"$PY" -m mlcore info --json >"$OUT/info.json" 2>/dev/null

timeout_flag=()
"$PY" -c "import pytest_timeout" 2>/dev/null && timeout_flag=(--timeout=120)
step tests "$T_TESTS" "$PY" -m pytest -q -n "${WORKERS:-8}" --maxfail=25 -rfE \
    -p no:cacheprovider \
    "${timeout_flag[@]}" --junitxml="$OUT/junit.xml"

unset MLCORE_BACKEND  # the checks and the bench name their backends themselves
step checks 75 "$PY" benchmarks/gpu/gpu_checks.py --backend "$BACKEND" $QUICK \
    --out "$OUT/checks.json"
SPEED_DRY=()
[ "$DRY" = 1 ] && SPEED_DRY=(--dry)
step speed 80 "$PY" benchmarks/gpu/cupy_speed.py "${SPEED_DRY[@]}" --out "$OUT/speed.json"
step bench 90 "$PY" -m mlcore bench --quick --backend "$BACKEND" --backend numpy \
    --json "$OUT/bench.json" --plot "$OUT/bench.png"
step summary 15 "$PY" benchmarks/gpu/gpu_checks.py --summary "$OUT"

echo "gpu-check: done in ${SECONDS}s; failed steps: ${failed[*]:-none}"
[ "${#failed[@]}" = 0 ]
