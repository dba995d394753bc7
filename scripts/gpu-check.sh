#!/usr/bin/env bash
# The check run on a lent GPU machine (see docs/gpu.md). It builds nothing there: it takes the
# `dsv4` binary built here with `--features cuda` (first argument) and writes its report to
# $OUT/report.txt (or stdout without OUT). What it checks today: the CUDA device layer finds the
# driver and the GPU through cudarc's run-time loading and says, in one line, that the backend's
# kernels are not built yet; the CPU path of the same binary still runs there.
set -uo pipefail
dsv4=${1:?usage: scripts/gpu-check.sh path/to/dsv4}
report=${OUT:-/dev/stdout}
[ -n "${OUT:-}" ] && report="$OUT/report.txt"
{
    echo "== machine"
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    nproc
    echo "== dsv4 run --device cuda (demo model)"
    "$dsv4" run --device cuda --prompt "Hello" 2>&1
    echo "exit $?"
    echo "== dsv4 init + bench --device cuda"
    dir=$(mktemp -d)
    "$dsv4" init --preset tiny --seed 1 --out "$dir/tiny" 2>&1 | tail -1
    "$dsv4" bench --weights "$dir/tiny" --device cuda 2>&1
    echo "exit $?"
    echo "== the CPU path of the same binary"
    "$dsv4" bench --weights "$dir/tiny" --prompt-len 64 --gen 4 --device cpu --json 2>&1
    echo "exit $?"
} > "$report" 2>&1
