#!/usr/bin/env bash
# The one check run on a lent GPU machine (docs/gpu.md). Nothing is built there: it takes the
# `dsv4` binary built here with `--features cuda` (first argument; see docs/gpu.md for the
# build and the bundle) and writes its report to $OUT/report.txt (stdout without OUT). Within
# about 8 minutes:
#   1. the GPU, driver and memory (nvidia-smi);
#   2. `dsv4 selftest --device cuda`: every kernel against its CPU twin, then the committed
#      parity fixtures end to end against transformers' logits and the CPU backend;
#   3. compute-sanitizer memcheck on a short selftest (two kernel files);
#   4. a `small` checkpoint generated there, benchmarked on the GPU (prefill, decode, the
#      device's copy bandwidth and decode's ratio to it) and on the CPU with the same binary;
#   5. `dsv4 score --device cuda` against `--device cpu` on a fixture, byte for byte compared.
set -uo pipefail
dsv4=${1:?usage: scripts/gpu-check.sh path/to/dsv4}
cd "$(dirname "$0")/.."
report=/dev/stdout
[ -n "${OUT:-}" ] && report="$OUT/report.txt"
fixtures=tests/parity/fixtures
step() { echo; echo "== $*"; date -u +%T; }
{
    step machine
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    nproc
    step "selftest --device cuda (kernel twins, then the fixtures end to end)"
    timeout 240 "$dsv4" selftest --device cuda --fixtures "$fixtures/hca16" --fixtures "$fixtures/hca128" 2>&1
    echo "exit $?"
    step "compute-sanitizer memcheck on selftest --only norm --only attend"
    if command -v compute-sanitizer >/dev/null; then
        timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 \
            "$dsv4" selftest --device cuda --only norm --only attend 2>&1 | tail -15
        echo "exit ${PIPESTATUS[0]}"
    else
        echo "compute-sanitizer not found"
    fi
    step "init small + bench --device cuda and --device cpu"
    dir=$(mktemp -d)
    timeout 120 "$dsv4" init --preset small --seed 1 --out "$dir/small" 2>&1 | tail -1
    timeout 150 "$dsv4" bench --weights "$dir/small" --device cuda --prompt-len 256 --gen 16 2>&1
    echo "exit $?"
    timeout 90 "$dsv4" bench --weights "$dir/small" --device cpu --prompt-len 64 --gen 4 2>&1
    echo "exit $?"
    step "score --device cuda against --device cpu (hca16, chunks of 7)"
    ids=$(sed -n 's/.*"ids": \[\([0-9, ]*\)\].*/\1/p' "$fixtures/hca16/reference.json" | head -1 | tr -d ' ')
    "$dsv4" score --weights "$fixtures/hca16" --ids "$ids" --chunk 7 --device cuda --out "$dir/gpu.npy" 2>&1 | tail -1
    "$dsv4" score --weights "$fixtures/hca16" --ids "$ids" --chunk 7 --device cpu --out "$dir/cpu.npy" 2>&1 | tail -1
    cmp "$dir/gpu.npy" "$dir/cpu.npy" && echo "identical bytes" || echo "the logits differ (selftest gives the size)"
    step done
} > "$report" 2>&1
