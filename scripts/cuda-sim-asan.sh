#!/usr/bin/env bash
# The kernel twin tests once more on a host build of csrc/ with AddressSanitizer and UBSan (the
# emulation then switches fibers with ucontext, which ASan follows). Its own target directory, so
# the ordinary build is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
asan=$(gcc -print-file-name=libasan.so)
export DSV4_SIM_SANITIZE=1
# Read by the tests: one fiber order and no full-vocabulary sampler rows (ucontext switches make
# the emulation many times slower; the ordinary run covers both).
export DSV4_SIM_SANITIZED=1
export CARGO_TARGET_DIR="${DSV4_ASAN_TARGET:-target/asan}"
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="env LD_PRELOAD=$asan ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1"
cargo test --locked -p dsv4-kernels --test cuda_sim "$@"
