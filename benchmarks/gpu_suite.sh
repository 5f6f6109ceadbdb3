#!/usr/bin/env bash
# Issue 16's device suite, for one CUDA GPU, in under 8 minutes:
#   1. the CUDA tests (pytest -m gpu: batches cut on the GPU equal collate_graphs, a fit on
#      the device path matches the host path, a bf16 fit learns; the estimators' CUDA path),
#      at most 3 minutes;
#   2. `skcgcnn predict` end to end (parse, graphs, forward, write) on 5,000 CIFs
#      (sample-500's, linked 10 times under other names) with --device $DEVICE and with
#      --device cpu: wall time with start-up, the rows compared (1e-5), at most 100 s;
#   3. benchmarks/bench_gpu.py on the 36,737 MP crystals: train and predict crystals/s for
#      fp32 / bf16, without and with torch.compile, the host-collated path for comparison,
#      and bf16 in batches of 512; the epoch on 22,042 training crystals and the projected
#      1000-epoch time (target: <= 1 s an epoch, <= 20 min for 1000), in the time the
#      tests left of 7 min 40 s (at least 4.5 minutes), no variant started in its last 80 s.
#
# Usage: bash benchmarks/gpu_suite.sh [VENV]
#   VENV   a virtual environment whose python has a CUDA build of torch and the project's
#          dependencies (default: $VENV, else .venv).  Nothing is installed and no network
#          is used: the project is imported from this checkout (PYTHONPATH).
# Environment:
#   OUT     results folder (default: results/gpu): env.txt, tests.log, predict.log,
#           predict_$DEVICE.csv, predict_cpu.csv, bench.log, bench_gpu.json
#   DATA    the shared data folder holding mp-formation-energy-36737/ and cgcnn-reference/
#           (default: shared/data in this checkout, else ../shared/data)
#   GRAPHS  a graph file with targets (skcgcnn featurize) to use instead of parsing DATA
#   LIMIT, EPOCHS (5), BATCH_SIZE (128), VARIANTS: passed to bench_gpu.py
#   DEVICE  cuda (default), or cpu for a dry run of the script on a machine without a GPU
#   SKCGCNN_CACHE  where parsed structures and graphs are kept between runs
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${1:-${VENV:-.venv}}
PY="$VENV/bin/python"
OUT=${OUT:-results/gpu}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-5}
BATCH_SIZE=${BATCH_SIZE:-128}
VARIANTS=${VARIANTS:-fp32,bf16,fp32+host,bf16@512,fp32+compile,bf16+compile}
if [[ -z "${DATA:-}" ]]; then
    if [[ -d shared/data ]]; then DATA=$ROOT/shared/data; else DATA=$ROOT/../shared/data; fi
fi
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export SKCGCNN_SHARED_DATA="$DATA"
export OMP_WAIT_POLICY=PASSIVE
export NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"  # as `make test`
began=$SECONDS

if [[ ! -x "$PY" ]]; then
    echo "no python at $PY: pass a virtual environment with a CUDA build of torch" \
         "(bash benchmarks/gpu_suite.sh /path/to/venv)" >&2
    exit 2
fi
{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "venv: $VENV"
    echo "data: $DATA"
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0]); print("torch",
torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available());
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        2>/dev/null || echo "nvidia-smi: not available"
} | tee "$OUT/env.txt"
if [[ "$DEVICE" == cuda ]] \
        && ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "torch in $VENV sees no CUDA device (a CPU build, or no GPU);" \
         "DEVICE=cpu for a dry run" >&2
    exit 2
fi
if [[ ! -d "$DATA/mp-formation-energy-36737" && -z "${GRAPHS:-}" ]]; then
    echo "no data at $DATA/mp-formation-energy-36737: set DATA (or GRAPHS)" >&2
    exit 2
fi

echo "== 1. CUDA tests (pytest -m gpu)"
timeout -k 10 180 "$PY" -m pytest -q -p no:cacheprovider -rs -m gpu tests/ 2>&1 \
    | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}
echo "tests: exit $tests_rc after $((SECONDS - began)) s"

echo "== 2. skcgcnn predict end to end, --device $DEVICE and --device cpu"
predict_rc=0
if [[ -d "$DATA/mp-formation-energy-36737/sample-500" ]]; then
    cifs=$(mktemp -d)
    for k in $(seq 0 9); do
        for f in "$DATA"/mp-formation-energy-36737/sample-500/*.cif; do
            ln -s "$f" "$cifs/$(basename "$f" .cif)-$k.cif"
        done
    done
    model="$DATA/cgcnn-reference/pre-trained/formation-energy-per-atom.pth.tar"
    {
        for dev in "$DEVICE" cpu; do
            t0=$(date +%s%N)
            timeout -k 5 45 "$PY" -m skcgcnn predict "$model" "$cifs" --device "$dev" \
                --chunk-size 2000 -q -o "$OUT/predict_$dev.csv" || predict_rc=1
            ms=$((($(date +%s%N) - t0) / 1000000))
            rows=$(wc -l < "$OUT/predict_$dev.csv" 2>/dev/null || echo 0)
            echo "predict --device $dev: $rows rows in $ms ms wall (start-up included)," \
                 "$((rows * 1000 / (ms > 0 ? ms : 1))) crystals/s"
        done
        "$PY" - "$OUT/predict_$DEVICE.csv" "$OUT/predict_cpu.csv" <<'PYEOF' || predict_rc=1
import sys
import numpy as np
a, b = (np.loadtxt(f, delimiter=",", usecols=2) for f in sys.argv[1:])
print(f"rows {len(a)} and {len(b)}, largest difference {np.abs(a - b).max():.2e}")
sys.exit(not (len(a) == len(b) == 5000 and np.allclose(a, b, rtol=0, atol=1e-5)))
PYEOF
        [[ $predict_rc -eq 0 ]]
    } 2>&1 | tee "$OUT/predict.log"
    predict_rc=${PIPESTATUS[0]}
    rm -rf "$cifs"
else
    echo "no sample-500 under $DATA: predict step skipped"
fi
echo "predict: exit $predict_rc after $((SECONDS - began)) s"

echo "== 3. throughput (bench_gpu.py)"
source_args=(--data "$DATA/mp-formation-energy-36737")
[[ -n "${GRAPHS:-}" ]] && source_args=(--graphs "$GRAPHS")
limit_args=()
[[ -n "${LIMIT:-}" ]] && limit_args=(--limit "$LIMIT")
# what is left of 460 s (7 min 40 s); no variant starts in the last 80 s of it
left=$((460 - (SECONDS - began)))
echo "bench: $left s at most"
timeout -k 10 "$left" "$PY" benchmarks/bench_gpu.py --device "$DEVICE" "${source_args[@]}" \
    "${limit_args[@]}" --epochs "$EPOCHS" --batch-size "$BATCH_SIZE" \
    --variants "$VARIANTS" --budget $((left - 80)) --json "$OUT/bench_gpu.json" 2>&1 \
    | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}
echo "bench: exit $bench_rc; the suite took $((SECONDS - began)) s; results in $OUT"
[[ $tests_rc -eq 0 && $bench_rc -eq 0 && $predict_rc -eq 0 ]]
