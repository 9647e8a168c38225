#!/usr/bin/env bash
# Everything fastconv checks on a GPU, in one run of at most about 8 minutes on an H100/H200:
#   1. python -m fastconv check --backend cuda           (every op and algorithm vs the reference)
#   2. benchmarks/gpu_kernels.py                          (registers, local and shared memory of
#                                                          every kernel specialisation)
#   3. compute-sanitizer racecheck, synccheck, memcheck   (benchmarks/gpu_smoke.py), if installed
#   4. the device test modules: tests/torch_adapter/test_cuda.py first (allocator hand-over),
#      then tests/cuda/test_against_reference.py and test_battery.py (the host-only modules of
#      tests/cuda run in CI already)
#   5. python -m fastconv bench --backend cuda --suite full --vs torch, its JSON and plot in
#      benchmarks/results/cuda-full-<device>.{json,png} (short idle gaps and minimum times, so
#      that the 52 rows fit in the step's limit)
# Each step has its own time limit, so that one hang cannot take the rest: at most 480 s in all
# with the two probes before them and each step's 5 s of grace after a time-out. A summary of
# every step's outcome comes last, and the exit status is 1 if any step failed. Without a GPU
# it says so and exits 0, changing nothing.
#
#     bash benchmarks/gpu.sh            (from the repository root, in the project's environment)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! timeout 20 "$PY" -c \
        "import sys; from fastconv import cuda; sys.exit(0 if cuda.available() else 1)" \
        2>/dev/null; then
    echo "gpu.sh: no CUDA device visible (or CuPy missing); nothing run, nothing changed"
    exit 0
fi

DEVICE=$(timeout 10 "$PY" -c "import cupy; p = cupy.cuda.runtime.getDeviceProperties(0); \
print(p['name'].decode().replace(' ', '-').lower())")
DEVICE=${DEVICE:-unknown-gpu}
SANITIZER=$(command -v compute-sanitizer || true)
for dir in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    if [ -z "$SANITIZER" ] && [ -n "$dir" ] && [ -x "$dir/bin/compute-sanitizer" ]; then
        SANITIZER=$dir/bin/compute-sanitizer
    fi
done
LOGS=$(mktemp -d)
declare -a SUMMARY
FAILED=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, record the outcome
    local name=$1 limit=$2
    shift 2
    echo "=== $name (at most ${limit} s)"
    local start=$SECONDS
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    local rc=${PIPESTATUS[0]} outcome=ok
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        outcome="TIMED OUT"
    elif [ "$rc" -ne 0 ]; then
        outcome="FAILED (exit $rc)"
    fi
    [ "$outcome" = ok ] || FAILED=1
    SUMMARY+=("$(printf '%-22s %-18s %4d s' "$name" "$outcome" $((SECONDS - start)))")
}

# limits (s): 70 + 30 + 3 * 35 + 35 + 70 + 100 = 410, plus 8 * 5 of grace and 30 of probes
step check 70 "$PY" -m fastconv check --backend cuda
step kernels 30 "$PY" benchmarks/gpu_kernels.py
if [ -n "$SANITIZER" ]; then
    for tool in racecheck synccheck memcheck; do
        step "sanitizer-$tool" 35 "$SANITIZER" --tool "$tool" --error-exitcode 1 \
            "$PY" benchmarks/gpu_smoke.py
    done
else
    SUMMARY+=("$(printf '%-22s %-18s' sanitizer 'not installed')")
fi
step device-tests-torch 35 "$PY" -m pytest -q tests/torch_adapter/test_cuda.py
step device-tests-cuda 70 "$PY" -m pytest -q -x tests/cuda/test_against_reference.py \
    tests/cuda/test_battery.py
step bench 100 "$PY" -m fastconv bench --backend cuda --suite full --vs torch \
    --idle-gap 0.02 --min-time 0.25 \
    --json "benchmarks/results/cuda-full-$DEVICE.json" \
    --plot "benchmarks/results/cuda-full-$DEVICE.png"

echo
echo "gpu.sh summary on $DEVICE (logs in $LOGS):"
printf '  %s\n' "${SUMMARY[@]}"
exit $FAILED
