#!/usr/bin/env bash
# Validates backend="cupy" on a machine with an NVIDIA GPU, offline, in one command that fits a
# 10-minute window: installs the wheels carried in $PSN_WHEELS (what the machine's Python lacks),
# runs `pytest -m cuda`, compute-sanitizer (memcheck, racecheck, synccheck) on a small case of
# every kernel, the driver's view of every kernel, the power-of-two check and the benchmark
# sweep of the speed goals, then evaluates the goals.
#
# Usage: scripts/validate_gpu.sh [OUT]   (OUT defaults to $OUT, else ./gpu-validation)
#
# OUT receives at most 8 files, rewritten as the steps finish (a run cut short still returns what
# it has): summary.txt (each step's status and time, then the speed goals), results.csv (every
# benchmark row of this run), four plots, and validation.tar.gz (every log, the JUnit XML, the
# benchmark folders with their plots and markdown tables, the power-of-two JSON).
# docs/benchmarks.md ("Validating on a GPU") says how to build the wheel folder and run this.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=$(mkdir -p "${1:-${OUT:-$ROOT/gpu-validation}}" && cd "${1:-${OUT:-$ROOT/gpu-validation}}" && pwd)
WHEELS=${PSN_WHEELS:-$ROOT/.whl}
BUDGET=${PSN_VALIDATE_BUDGET:-540}  # seconds for everything (a device call allows 600)
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/psn-validate.XXXXXX)
LOGS=$WORK/logs
mkdir -p "$LOGS"
export SPIKINGJELLY_PSN_CACHE=$WORK/kernel-cache PYTHONUNBUFFERED=1 MPLBACKEND=Agg
SUMMARY=$WORK/summary.txt
echo "spikingjelly-psn GPU validation, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" >"$SUMMARY"

remaining() { echo $((BUDGET - SECONDS)); }

# Copies what exists so far to OUT (at most 8 files).
pack() {
    cp "$SUMMARY" "$OUT_DIR/summary.txt"
    [ -f "$WORK/results.csv" ] && cp "$WORK/results.csv" "$OUT_DIR/results.csv"
    for plot in fp32/bandwidth_fraction_fp32 fp16/bandwidth_fraction_fp16 fp16/ratio_vs_lif_fp16 \
        fp32/time_vs_n_fp32; do
        [ -f "$WORK/bench-$plot.png" ] && cp "$WORK/bench-$plot.png" "$OUT_DIR/"
    done
    tar -czf "$OUT_DIR/validation.tar.gz.part" -C "$WORK" --exclude kernel-cache --exclude site . \
        && mv "$OUT_DIR/validation.tar.gz.part" "$OUT_DIR/validation.tar.gz"
}

# step NAME LIMIT COMMAND...: runs COMMAND under `timeout` (LIMIT seconds, or what is left of the
# budget), output to logs/NAME.log, one line in the summary. Steps started with & set NO_PACK.
step() {
    local name=$1 limit=$2 left
    shift 2
    left=$(($(remaining) - 15))
    if [ "$left" -lt 20 ]; then
        echo "SKIPPED  $name (time budget spent)" >>"$SUMMARY"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$SECONDS state=PASS rc
    timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && state=FAIL
    [ $rc -eq 124 ] && state=TIMEOUT
    printf '%-8s %s (%ds, exit %d)\n' "$state" "$name" $((SECONDS - t0)) "$rc" >>"$SUMMARY"
    [ -n "${NO_PACK:-}" ] || pack
}

# ---- environment and wheels
{
    nvidia-smi || true
    "$PY" -c "import sys, torch, cupy; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name()); print('cupy', cupy.__version__)"
} >"$LOGS/environment.log" 2>&1
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    step install 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$WORK/site" "$WHEELS"/*.whl
fi
export PYTHONPATH=$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}
step imports 60 "$PY" -c "import spikingjelly, spikingjelly_psn, cupy; assert spikingjelly_psn.__file__.startswith('$ROOT'), spikingjelly_psn.__file__; print(spikingjelly.__file__, spikingjelly_psn.__file__)"

# ---- correctness: pytest and the three sanitizers side by side (each its own process)
CHECKS=(-m spikingjelly_psn.ops.cupy.gpu_checks)
step prefill 150 "$PY" "${CHECKS[@]}" prefill --workers "$(nproc)"
XDIST=()
"$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 4)
NO_PACK=1 step pytest-cuda 240 "$PY" -m pytest -m cuda -q -rA -p no:cacheprovider "${XDIST[@]}" \
    --junitxml="$WORK/pytest-cuda.xml" &
if command -v compute-sanitizer >/dev/null; then
    # Only this project's kernels are instrumented (kns=psn_); PyTorch's caching allocator off, so
    # that every tensor is its own allocation and memcheck sees any access past its end; API
    # errors not reported (probes inside PyTorch and CuPy; a failed launch of ours raises anyway).
    for tool in memcheck racecheck synccheck; do
        NO_PACK=1 PYTORCH_NO_CUDA_MEMORY_CACHING=1 step "sanitizer-$tool" 240 compute-sanitizer \
            --tool "$tool" --kernel-name kns=psn_ --error-exitcode 99 --print-limit 50 \
            --report-api-errors no "$PY" "${CHECKS[@]}" kernels &
    done
else
    echo "SKIPPED  compute-sanitizer (not on PATH)" >>"$SUMMARY"
fi
wait
pack

# ---- speed (one benchmark process per dtype: a sweep cut short keeps what it finished)
step pow2 90 "$PY" "${CHECKS[@]}" pow2 --out "$WORK/pow2.json"
BENCH=("$PY" -m spikingjelly_psn.bench --backends cupy --mode both --rounds 10 --warmup 2
    --no-progress --N 4194304)
NEURONS=psn,masked,sliding,mfpsn,sj-psn,sj-masked,sj-sliding,lif
GOALS=("$PY" "${CHECKS[@]}" goals --merge "$WORK/results.csv" --pow2 "$WORK/pow2.json")
for dtype in fp32 fp16; do
    step "bench-$dtype" 200 "${BENCH[@]}" --dtypes "$dtype" --neurons "$NEURONS" \
        --T 4,8,16,32,64 --out "$WORK/bench-$dtype"
    "${GOALS[@]}" "$WORK"/bench-*/results.csv >/dev/null 2>&1
    pack
done
step bench-k8 90 "${BENCH[@]}" --dtypes fp32,fp16 --neurons sliding,sj-sliding --k 8 --T 64 \
    --out "$WORK/bench-k8"
step attributes 120 "$PY" "${CHECKS[@]}" attributes --workers "$(nproc)"

# ---- goals
"${GOALS[@]}" "$WORK"/bench-*/results.csv >"$LOGS/goals.log" 2>&1
{
    echo
    echo "Speed goals (this run's benchmark):"
    cat "$LOGS/goals.log"
    echo
    echo "Steps failed or cut short: $(grep -cE '^(FAIL|TIMEOUT)' "$SUMMARY"); logs in validation.tar.gz; $((SECONDS)) s in all"
} >>"$SUMMARY"
pack
cat "$SUMMARY"
! grep -qE '^(FAIL|TIMEOUT)' "$SUMMARY"
