#!/usr/bin/env bash
# Traces `dsv4 run` on the tiny preset under Nsight Systems and checks that the NVTX ranges are
# there: "layer 0" … "layer L-1" once per forward call, "decode step" once per decoded token,
# "prefill", "head", "attention" and "moe" with their exact counts, and the per-op ranges.
#
# Installs nothing. Needs `nsys` on PATH (docs/profiling.md says how to get it); without it it
# prints "SKIPPED: nsys not found" and exits 0. Builds `dsv4` (release) unless DSV4_BIN names a
# binary. KEEP=1 keeps the work directory (report, sqlite, checkpoint) and prints its path.
set -euo pipefail

if ! command -v nsys >/dev/null 2>&1; then
    echo "SKIPPED: nsys not found (put Nsight Systems' bin directory on PATH; see docs/profiling.md)"
    exit 0
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

if [[ -n "${DSV4_BIN:-}" ]]; then
    dsv4="$DSV4_BIN"
else
    (cd "$root" && cargo build --release -q -p dsv4-cli)
    dsv4="${CARGO_TARGET_DIR:-$root/target}/release/dsv4"
fi
[[ -x "$dsv4" ]] || fail "no dsv4 binary at $dsv4"

work="$(mktemp -d "${TMPDIR:-/tmp}/dsv4-nsys.XXXXXX")"
if [[ "${KEEP:-0}" == 1 ]]; then
    echo "work directory: $work"
else
    trap 'rm -rf "$work"' EXIT
fi

echo "nsys: $(command -v nsys) ($(nsys --version 2>/dev/null | head -n 1))"
"$dsv4" init --preset tiny --out "$work/tiny" >"$work/init.out" 2>&1 || {
    cat "$work/init.out" >&2
    fail "dsv4 init failed"
}
layers="$(sed -n 's/.*"num_hidden_layers": *\([0-9]*\).*/\1/p' "$work/tiny/config.json" | head -n 1)"
[[ -n "$layers" ]] || fail "no num_hidden_layers in $work/tiny/config.json"

# The traced run. --json gives the decoded-token count the range counts follow from.
nsys profile -t nvtx,osrt --sample=none --cpuctxsw=none -o "$work/run" \
    "$dsv4" run --weights "$work/tiny" --prompt-ids 0,100,200 --max-new-tokens 8 --json \
    >"$work/profile.out" 2>&1 || {
    cat "$work/profile.out" >&2
    fail "nsys profile failed"
}

# Some installs (e.g. the Debian package unpacked by hand) leave the .qdstrm unimported because
# nsys cannot find QdstrmImporter; run it ourselves from beside nsys.
if [[ ! -f "$work/run.nsys-rep" && -f "$work/run.qdstrm" ]]; then
    base="$(dirname "$(readlink -f "$(command -v nsys)")")"
    importer=""
    for candidate in "$base/../host-linux-x64/QdstrmImporter" \
        "$base/../../../nsight-systems/host-linux-x64/QdstrmImporter" \
        "$base/../../nsight-systems/host-linux-x64/QdstrmImporter"; do
        if [[ -x "$candidate" ]]; then
            importer="$candidate"
            break
        fi
    done
    [[ -n "$importer" ]] || fail "nsys left $work/run.qdstrm unimported and no QdstrmImporter was found near $base"
    "$importer" -i "$work/run.qdstrm" >"$work/import.out" 2>&1 || {
        cat "$work/import.out" >&2
        fail "QdstrmImporter failed (it needs libssh-4)"
    }
fi
[[ -f "$work/run.nsys-rep" ]] || {
    cat "$work/profile.out" >&2
    fail "no report $work/run.nsys-rep"
}

decode="$(sed -n 's/.*"decode_tokens":\([0-9]*\).*/\1/p' "$work/profile.out" | head -n 1)"
[[ -n "$decode" ]] || {
    cat "$work/profile.out" >&2
    fail "no --json output from dsv4 run"
}
forwards=$((decode + 1)) # one prefill chunk (3 prompt tokens) plus one forward per decoded token

# nsys 2022.x calls the report nvtxsum; 2023.x and later nvtx_sum.
report=nvtxsum
if nsys stats --help-reports 2>/dev/null | grep -q 'nvtx_sum'; then
    report=nvtx_sum
fi
nsys stats -q -r "$report" --format csv -o - "$work/run.nsys-rep" >"$work/nvtx.csv" 2>"$work/stats.err" || {
    cat "$work/stats.err" >&2
    fail "nsys stats -r $report failed"
}

# "name,count" per range, whatever the column order; newer versions prefix names with ':'.
awk -F, '
    /Instances/ && /Range/ {
        for (i = 1; i <= NF; i++) { h = $i; gsub(/"/, "", h); if (h == "Instances") c = i; if (h == "Range") r = i }
        next
    }
    c && r && NF >= r {
        name = $r; gsub(/"/, "", name); sub(/^:/, "", name); n = $c; gsub(/"/, "", n)
        print name "," n
    }' "$work/nvtx.csv" >"$work/counts.csv"
[[ -s "$work/counts.csv" ]] || {
    cat "$work/nvtx.csv" >&2
    fail "no NVTX ranges in the report"
}

errors=0
count_of() { awk -F, -v n="$1" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }' "$work/counts.csv"; }
expect() { # name, expected count ("+" = at least one)
    local got
    got="$(count_of "$1")"
    if [[ "$2" == "+" && "$got" -ge 1 ]] || [[ "$got" == "$2" ]]; then
        printf '  ok   %-18s %s\n' "$1" "$got"
    else
        printf '  BAD  %-18s %s (expected %s)\n' "$1" "$got" "$2"
        errors=$((errors + 1))
    fi
}

echo "tiny preset: $layers layers, $decode decoded tokens, $forwards forward calls"
expect "prefill" 1
expect "decode step" "$decode"
for ((i = 0; i < layers; i++)); do
    expect "layer $i" "$forwards"
done
expect "attention" $((layers * forwards))
expect "moe" $((layers * forwards))
expect "head" "$forwards"
for op in sampler "sparse attention" compressor indexer "moe routing" experts; do
    expect "$op" +
done

if ((errors > 0)); then
    echo "--- $report ---" >&2
    cat "$work/nvtx.csv" >&2
    fail "$errors NVTX range(s) missing or miscounted"
fi
echo "PASS: NVTX ranges present with the expected counts ($report)"
